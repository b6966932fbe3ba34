#pragma once

#include <array>
#include <cstdint>

namespace vecgpu::bench {

// A log-linear latency histogram (HdrHistogram's idea): values are grouped by power of two
// and each power of two is split into kSubBuckets linear buckets, so any percentile is within
// 1/kSubBuckets (0.8%) of the exact value, for values from 1 ns to about 18 minutes, in fixed
// memory. Count, min, max and mean are exact. Not thread-safe: one per thread, then Merge.
class Histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr int kSubBuckets = 1 << kSubBits;  // 128
  static constexpr int kMaxExponent = 40;            // values up to 2^40 ns

  void Record(int64_t value_ns);
  void Merge(const Histogram& other);

  int64_t count() const { return count_; }
  int64_t min() const { return count_ ? min_ : 0; }
  int64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / count_ : 0; }
  // The value below which `p` percent (0..100) of the recorded values lie: the midpoint of
  // the bucket holding that rank, clamped to [min, max]. 0 when empty.
  int64_t Percentile(double p) const;

 private:
  static int Index(int64_t v);
  static int64_t BucketLow(int index);
  static int64_t BucketHigh(int index);  // exclusive

  static constexpr int kBuckets = (kMaxExponent - kSubBits + 2) * kSubBuckets;
  std::array<int64_t, kBuckets> counts_{};
  int64_t count_ = 0;
  int64_t sum_ = 0;
  int64_t min_ = INT64_MAX;
  int64_t max_ = 0;
};

}  // namespace vecgpu::bench
