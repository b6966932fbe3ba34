#pragma once

// A byte rate shared by several senders (a token bucket): whole copies and the records a new
// replica catches up with go no faster than `bytes_per_second` together, so that building a
// replica leaves the network and the disks to serving (issue [3/5], item 1).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>

namespace vecgpu::cluster {

class Throttle {
 public:
  // 0: no cap. Up to a quarter of a second's bytes may go at once.
  explicit Throttle(int64_t bytes_per_second) : rate_(bytes_per_second) {}

  // Takes `bytes`, waiting first as long as the rate needs.
  void Acquire(int64_t bytes) {
    const auto wait = Take(bytes, /*force=*/true);
    if (wait.count() > 0) std::this_thread::sleep_for(wait);
  }
  // Takes `bytes` when the bucket is not in debt (true); false (nothing taken) otherwise.
  bool TryAcquire(int64_t bytes) { return Take(bytes, /*force=*/false).count() == 0; }

  int64_t rate() const { return rate_; }

 private:
  std::chrono::nanoseconds Take(int64_t bytes, bool force) {
    if (rate_ <= 0) return {};
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    const double burst = static_cast<double>(rate_) / 4;
    if (last_ != std::chrono::steady_clock::time_point{}) {
      const double s = std::chrono::duration<double>(now - last_).count();
      tokens_ = std::min(burst, tokens_ + s * static_cast<double>(rate_));
    } else {
      tokens_ = burst;
    }
    last_ = now;
    if (!force && tokens_ < 0) return std::chrono::nanoseconds(1);
    tokens_ -= static_cast<double>(bytes);
    if (tokens_ >= 0) return {};
    return std::chrono::nanoseconds(static_cast<int64_t>(-tokens_ / static_cast<double>(rate_) * 1e9));
  }

  const int64_t rate_;
  std::mutex mu_;
  double tokens_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace vecgpu::cluster
