#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace vecgpu {

// When a placed index gets one more GPU copy, and when it gives one back (DeviceOptions).
//
// The rule, with hysteresis so a copy is neither added nor dropped on a blip:
// - Add: the index's queue has held at least `add_depth` requests per copy at every sample
//   for `add_after`, or its copies were searching at least `add_busy` of their time over the
//   last `add_after`. Either means every copy is busy and work waits: the copies are
//   saturated, so another one on an idle GPU adds throughput. (Busy time is needed beside
//   depth: continuous batching takes everything waiting into each batch, so a saturated
//   index's queue can look shallow at every sample.)
// - Drop: over a whole window of `drop_after`, the copies' search time would have kept one
//   copy fewer busy less than `drop_busy` of the time. Measured as busy time, not queue
//   depth: once the copies keep up the queue is empty, whatever the load.
// Between the two (a load of more than half of copies - 1 but less than the copies'
// capacity) nothing changes.
struct HotCopyPolicy {
  // Requests waiting per copy that count as a deep queue. Default: 8.
  int add_depth = 8;
  // How long the queue must stay deep before a copy is added. Default: 2 s.
  std::chrono::milliseconds add_after{2000};
  // Share of the copies' time spent searching that counts as saturated. Default: 0.9.
  double add_busy = 0.9;
  // Share of one fewer copies' time the load must stay under for an extra copy to go.
  // 0 < drop_busy < 1. Default: 0.5.
  double drop_busy = 0.5;
  // The window over which that share is measured. Default: 30 s.
  std::chrono::milliseconds drop_after{30000};
  // Most copies of one index, the first included (1: no extra copies; 0: one per GPU in
  // use). Default: 0.
  int max_copies = 0;
};

// One sample of an index's load, taken by the engine after each search batch.
struct LoadSample {
  std::chrono::steady_clock::time_point at;
  int64_t queued = 0;       // requests waiting in the index's queue now
  double busy_seconds = 0;  // the copies' search time so far, all copies together (grows)
};

enum class HotAction { kNone, kAddCopy, kDropCopy };

// The add/drop decision over a stream of samples (HotCopyPolicy). Pure: time comes with the
// samples, nothing is measured or locked here. The owner serialises calls.
class HotLoad {
 public:
  // What to do after sample `s`, with `copies` device copies now (built or building) and at
  // most `max_copies` possible. After acting on kAddCopy or kDropCopy, or failing to, call
  // Restart: a refused add is asked again only after another add_after of deep queue.
  HotAction Observe(const LoadSample& s, int copies, int max_copies, const HotCopyPolicy& p);
  // Starts both windows again at `s` (after the number of copies changed).
  void Restart(const LoadSample& s);
  // How long the queue has been deep, as of the last sample (0: it is not).
  std::chrono::duration<double> deep_for() const { return deep_for_; }
  // The copies' busy share over the last add window that asked for a copy (0: depth did).
  double saturated() const { return saturated_; }

 private:
  std::optional<std::chrono::steady_clock::time_point> deep_since_;
  std::chrono::duration<double> deep_for_{0};
  std::optional<LoadSample> window_;      // where the drop window started
  std::optional<LoadSample> add_window_;  // where the busy window of the add rule started
  double saturated_ = 0;
};

}  // namespace vecgpu
