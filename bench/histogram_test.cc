#include "bench/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace vecgpu::bench {
namespace {

// The exact percentile of a sorted list, with the same rank rule as Histogram.
int64_t Exact(const std::vector<int64_t>& sorted, double p) {
  int64_t rank = static_cast<int64_t>(std::ceil(p / 100.0 * sorted.size()));
  rank = std::clamp<int64_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

TEST(HistogramTest, PercentilesMatchASortedList) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(13.0, 1.5);  // ~0.4 ms median, long tail
  Histogram h;
  std::vector<int64_t> values;
  for (int i = 0; i < 100'000; ++i) {
    int64_t v = static_cast<int64_t>(dist(rng));
    values.push_back(v);
    h.Record(v);
  }
  std::sort(values.begin(), values.end());
  for (double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99}) {
    const double exact = Exact(values, p);
    EXPECT_NEAR(h.Percentile(p), exact, exact / Histogram::kSubBuckets + 1) << "p" << p;
  }
  EXPECT_EQ(h.Percentile(100), values.back());
  EXPECT_EQ(h.max(), values.back());
  EXPECT_EQ(h.min(), values.front());
  EXPECT_EQ(h.count(), 100'000);
}

TEST(HistogramTest, SmallValuesAreExactAndMergeAddsUp) {
  Histogram a, b;
  for (int v = 1; v <= 100; ++v) (v % 2 ? a : b).Record(v);
  a.Merge(b);
  EXPECT_EQ(a.count(), 100);
  EXPECT_EQ(a.Percentile(50), 50);
  EXPECT_EQ(a.Percentile(99), 99);
  EXPECT_DOUBLE_EQ(a.mean(), 50.5);
  Histogram empty;
  EXPECT_EQ(empty.Percentile(50), 0);
}

TEST(HistogramTest, HugeValuesAreClampedNotLost) {
  Histogram h;
  h.Record(int64_t{1} << 50);
  h.Record(5);
  EXPECT_EQ(h.count(), 2);
  EXPECT_EQ(h.max(), int64_t{1} << 50);
  EXPECT_EQ(h.Percentile(100), int64_t{1} << 50);
}

}  // namespace
}  // namespace vecgpu::bench
