#include "core/device/hot_load.h"

#include <gtest/gtest.h>

namespace vecgpu {
namespace {

using std::chrono::milliseconds;
using Time = std::chrono::steady_clock::time_point;

// Samples at made-up times: t0 + ms.
struct Feed {
  HotLoad load;
  HotCopyPolicy policy;
  Time t0 = Time() + std::chrono::hours(1);
  double busy = 0;  // the copies' search time so far

  HotAction At(int64_t ms, int64_t queued, int copies, int max_copies = 2) {
    return load.Observe({t0 + milliseconds(ms), queued, busy}, copies, max_copies, policy);
  }
};

TEST(HotLoad, ACopyIsAddedOnlyAfterTheQueueStaysDeep) {
  Feed f;  // 8 per copy for 2 s
  EXPECT_EQ(f.At(0, 8, 1), HotAction::kNone);
  EXPECT_EQ(f.At(1000, 20, 1), HotAction::kNone);
  EXPECT_EQ(f.At(1999, 8, 1), HotAction::kNone);
  EXPECT_EQ(f.At(2000, 8, 1), HotAction::kAddCopy);
  EXPECT_DOUBLE_EQ(f.load.deep_for().count(), 2.0);
}

// Continuous batching drains the queue into each batch: a saturated index can show a shallow
// queue at every sample. Copies busy 90% of their time over 2 s get company too.
TEST(HotLoad, CopiesBusyNearlyAllTheTimeGetACopyEvenWithAShallowQueue) {
  Feed f;
  EXPECT_EQ(f.At(0, 1, 1), HotAction::kNone);
  f.busy = 1.0;
  EXPECT_EQ(f.At(1000, 0, 1), HotAction::kNone);  // the window is not over yet
  f.busy = 1.7;                                     // 85% over 2 s: not saturated
  EXPECT_EQ(f.At(2000, 2, 1), HotAction::kNone);
  EXPECT_EQ(f.load.saturated(), 0);
  f.busy = 3.6;  // 95% of the next 2 s
  EXPECT_EQ(f.At(4000, 1, 1), HotAction::kAddCopy);
  EXPECT_NEAR(f.load.saturated(), 0.95, 1e-9);
  // Two copies busy 95% of one copy's time are half busy: no third.
  f.load.Restart({f.t0 + milliseconds(4000), 0, f.busy});
  f.busy += 3.8;
  EXPECT_EQ(f.At(8000, 1, 2, 3), HotAction::kNone);
  // And none beyond the cap, however busy.
  f.busy += 100;
  EXPECT_EQ(f.At(10000, 1, 2, 2), HotAction::kNone);
}

TEST(HotLoad, OneShallowSampleStartsTheWaitAgain) {
  Feed f;
  EXPECT_EQ(f.At(0, 10, 1), HotAction::kNone);
  EXPECT_EQ(f.At(1500, 7, 1), HotAction::kNone);  // below 8: not deep
  EXPECT_EQ(f.load.deep_for().count(), 0);
  EXPECT_EQ(f.At(2500, 10, 1), HotAction::kNone);  // deep again since 2.5 s
  EXPECT_EQ(f.At(4400, 10, 1), HotAction::kNone);
  EXPECT_EQ(f.At(4500, 10, 1), HotAction::kAddCopy);
}

TEST(HotLoad, DepthCountsPerCopyAndTheCapHolds) {
  Feed f;
  // Two copies: 8 waiting is 4 each, not deep.
  EXPECT_EQ(f.At(0, 8, 2, 3), HotAction::kNone);
  EXPECT_EQ(f.At(3000, 8, 2, 3), HotAction::kNone);
  EXPECT_EQ(f.At(3100, 16, 2, 3), HotAction::kNone);
  EXPECT_EQ(f.At(5100, 16, 2, 3), HotAction::kAddCopy);
  // At the cap nothing is added, however deep.
  Feed capped;
  EXPECT_EQ(capped.At(0, 100, 2, 2), HotAction::kNone);
  EXPECT_EQ(capped.At(10000, 100, 2, 2), HotAction::kNone);
}

TEST(HotLoad, RestartMakesARefusedAddWaitAnotherWindow) {
  Feed f;
  EXPECT_EQ(f.At(0, 9, 1), HotAction::kNone);
  EXPECT_EQ(f.At(2000, 9, 1), HotAction::kAddCopy);
  f.load.Restart({f.t0 + milliseconds(2000), 9, f.busy});  // no GPU had room
  EXPECT_EQ(f.At(2100, 9, 1), HotAction::kNone);
  EXPECT_EQ(f.At(3999, 9, 1), HotAction::kNone);
  EXPECT_EQ(f.At(4100, 9, 1), HotAction::kAddCopy);
}

TEST(HotLoad, AnExtraCopyGoesWhenOneFewerWouldBeBusyLessThanHalfTheTime) {
  Feed f;  // windows of 30 s
  EXPECT_EQ(f.At(0, 0, 2), HotAction::kNone);
  f.busy = 14;  // 14 s of search in 30 s: one copy would be busy 47% of the time
  EXPECT_EQ(f.At(29999, 0, 2), HotAction::kNone);  // the window is not over
  EXPECT_EQ(f.At(30000, 0, 2), HotAction::kDropCopy);
}

TEST(HotLoad, ACopyTheLoadStillNeedsStays) {
  Feed f;
  EXPECT_EQ(f.At(0, 0, 2), HotAction::kNone);
  // The two copies keep up (empty queue) but search 40 s of 60: one alone would be busy
  // 67% of the time, above half: both stay, window after window.
  f.busy = 20;
  EXPECT_EQ(f.At(30000, 0, 2), HotAction::kNone);
  f.busy = 40;
  EXPECT_EQ(f.At(60000, 0, 2), HotAction::kNone);
  // Three copies, 25 s of search in 30 s: two would be busy 42%: the third goes.
  Feed three;
  EXPECT_EQ(three.At(0, 0, 3, 3), HotAction::kNone);
  three.busy = 25;
  EXPECT_EQ(three.At(30000, 0, 3, 3), HotAction::kDropCopy);
}

TEST(HotLoad, TheFirstCopyIsNeverDroppedAndADeepQueueKeepsItsCopies) {
  Feed one;
  EXPECT_EQ(one.At(0, 0, 1), HotAction::kNone);
  EXPECT_EQ(one.At(60000, 0, 1), HotAction::kNone);  // idle, but it is the only copy
  Feed deep;
  EXPECT_EQ(deep.At(0, 40, 2), HotAction::kNone);
  EXPECT_EQ(deep.At(30000, 40, 2), HotAction::kNone);  // (little busy time, but work waits)
}

}  // namespace
}  // namespace vecgpu
