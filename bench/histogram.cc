#include "bench/histogram.h"

#include <algorithm>
#include <bit>

namespace vecgpu::bench {

// Values below kSubBuckets get one bucket each; above, bucket = (exponent group, top bits).
int Histogram::Index(int64_t v) {
  if (v < 0) v = 0;
  const int64_t max_value = (int64_t{1} << (kMaxExponent + 1)) - 1;
  if (v > max_value) v = max_value;
  if (v < kSubBuckets) return static_cast<int>(v);
  const int exp = 63 - std::countl_zero(static_cast<uint64_t>(v));  // v in [2^exp, 2^(exp+1))
  const int shift = exp - kSubBits;
  const int sub = static_cast<int>((v >> shift) & (kSubBuckets - 1));
  return (shift + 1) * kSubBuckets + sub;
}

int64_t Histogram::BucketLow(int index) {
  if (index < kSubBuckets) return index;
  const int shift = index / kSubBuckets - 1;
  const int sub = index % kSubBuckets;
  return (int64_t{kSubBuckets} + sub) << shift;
}

int64_t Histogram::BucketHigh(int index) {
  if (index < kSubBuckets) return index + 1;
  const int shift = index / kSubBuckets - 1;
  return BucketLow(index) + (int64_t{1} << shift);
}

void Histogram::Record(int64_t value_ns) {
  counts_[Index(value_ns)]++;
  count_++;
  sum_ += value_ns;
  min_ = std::min(min_, value_ns);
  max_ = std::max(max_, value_ns);
}

void Histogram::Merge(const Histogram& other) {
  for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

int64_t Histogram::Percentile(double p) const {
  if (count_ == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  // The rank (1-based) of the value wanted: the smallest value with at least p% at or below.
  int64_t rank = static_cast<int64_t>(p / 100.0 * static_cast<double>(count_) + 0.999999);
  rank = std::clamp<int64_t>(rank, 1, count_);
  if (rank == count_) return max_;  // the largest value is known exactly
  if (rank == 1) return min_;
  int64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const int64_t mid = (BucketLow(i) + BucketHigh(i) - 1) / 2;
      return std::clamp(mid, min(), max_);
    }
  }
  return max_;
}

}  // namespace vecgpu::bench
