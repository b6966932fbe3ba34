// The Engine's mutation log: every mutation is recorded before it applies, and replaying the
// records (through their bytes) into a fresh engine rebuilds the same indexes, ids and answers.
#include <gtest/gtest.h>

#include <random>

#include "core/engine.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "cpu_fallback/engine_state.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::CreateEveryKind;
using vecgpu::testing::EveryKindOnce;
using vecgpu::testing::ExpectSame;
using vecgpu::testing::RandomOps;
using vecgpu::testing::Rows;

constexpr int kDim = 8;

// Keeps every record as the log would store it (encoded, then decoded back).
class RecordingLog final : public MutationLog {
 public:
  StatusOr<Ticket> Append(const store::WalRecord& r) override {
    if (!fail.ok() && r.type == fail_type) return fail;
    auto back = store::DecodeRecord(store::EncodeRecord(r));
    if (!back.ok()) return back.status();
    records.push_back(*back);
    return Ticket{records.size(), 0};
  }
  Status WaitDurable(const Ticket&) override { return Status::Ok(); }
  uint64_t LastSeq() const override { return records.size(); }
  std::vector<store::WalRecord> records;
  Status fail;
  store::RecordType fail_type = store::RecordType::kAdd;
};

struct Fixture {
  Fixture() {
    cpu::ConfigureCpuThreads();
    cpu::UseOneThreadHere();
    EXPECT_TRUE(limits.Validate().ok());
  }
  Limits limits;
  cpu::CpuBackendFactory factory;
};

TEST(EngineReplayTest, ReplayingTheLogRebuildsEveryIndex) {
  Fixture f;
  RecordingLog log;
  Engine a(f.limits, f.factory);
  a.set_log(&log);
  const std::string t = "t";
  CreateEveryKind(a, t);
  RandomOps(a, t, 600, 5);
  EveryKindOnce(a, t);
  ASSERT_GT(log.records.size(), 400u);

  Engine b(f.limits, f.factory);
  for (const store::WalRecord& r : log.records) (void)b.Apply(r);
  ExpectSame(a, b, t);
  EXPECT_FALSE(b.Describe(t, "gone").ok());  // dropped in both
}

TEST(EngineReplayTest, AMutationTheLogRefusesChangesNothing) {
  Fixture f;
  RecordingLog log;
  Engine e(f.limits, f.factory);
  e.set_log(&log);
  ASSERT_TRUE(e.Create("t", {"c", "L2", kDim, ""}).ok());
  const FloatMatrix x = Clustered(10, kDim);
  ASSERT_TRUE(e.Add("t", "c", x, {}).ok());
  log.fail = Unavailable("write-ahead log: No space left on device; the write is refused");
  for (store::RecordType type : {store::RecordType::kAdd, store::RecordType::kRemove,
                                 store::RecordType::kReset, store::RecordType::kDrop}) {
    log.fail_type = type;
    Status st;
    switch (type) {
      case store::RecordType::kAdd:
        st = e.Add("t", "c", x, {}).status();
        break;
      case store::RecordType::kRemove: {
        const int64_t ids[] = {0, 1};
        st = e.Remove("t", "c", ids).status();
        break;
      }
      case store::RecordType::kReset:
        st = e.Reset("t", "c");
        break;
      default:
        st = e.Drop("t", "c");
        break;
    }
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << store::RecordTypeName(type);
    EXPECT_NE(st.message().find("No space left"), std::string::npos);
    ASSERT_TRUE(e.Describe("t", "c").ok());
    EXPECT_EQ(e.Describe("t", "c")->backend.ntotal, 10) << store::RecordTypeName(type);
  }
  // Queued adds (merged on a worker) are logged one by one the same way.
  log.fail_type = store::RecordType::kAdd;
  Status queued;
  ASSERT_TRUE(e.SubmitAdd("t", "c", x, {}, WorkClass::kShort, Clock::time_point::max(),
                          [&](StatusOr<AddResult> r) { queued = r.status(); })
                  .ok());
  EXPECT_EQ(queued.code(), StatusCode::kUnavailable);
  EXPECT_EQ(e.Describe("t", "c")->backend.ntotal, 10);
  log.fail = Status::Ok();
  ASSERT_TRUE(e.SubmitAdd("t", "c", x, {}, WorkClass::kShort, Clock::time_point::max(),
                          [&](StatusOr<AddResult> r) { queued = r.status(); })
                  .ok());
  EXPECT_TRUE(queued.ok());
  EXPECT_EQ(log.records.size(), 3u);  // the create, the first add and the last queued add
  EXPECT_EQ(log.records.back().type, store::RecordType::kAdd);
}

}  // namespace
}  // namespace vecgpu
