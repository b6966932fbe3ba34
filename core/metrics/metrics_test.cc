#include "core/metrics/metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace vecgpu {
namespace {

TEST(MetricsTest, RendersPrometheusTextFormat) {
  MetricsRegistry r;
  auto& requests = r.AddCounter("t_requests_total", "Requests\nserved", {"action", "tenant"});
  requests.With({"search", "a\"b\\c"}).Inc();
  requests.With({"search", "a\"b\\c"}).Inc(2);
  auto& seconds = r.AddHistogram("t_seconds", "Latency", {}, {0.1, 1});
  seconds.With({}).Observe(0.05);
  seconds.With({}).Observe(0.5);
  seconds.With({}).Observe(7);
  r.AddGauge("t_depth", "Depth", {"lane"}, [] {
    return std::vector<GaugeSample>{{{"query"}, 3}, {{"write"}, 0.5}};
  });
  EXPECT_EQ(r.Render(),
            "# HELP t_requests_total Requests\\nserved\n"
            "# TYPE t_requests_total counter\n"
            "t_requests_total{action=\"search\",tenant=\"a\\\"b\\\\c\"} 3\n"
            "# HELP t_seconds Latency\n"
            "# TYPE t_seconds histogram\n"
            "t_seconds_bucket{le=\"0.10000000000000001\"} 1\n"
            "t_seconds_bucket{le=\"1\"} 2\n"
            "t_seconds_bucket{le=\"+Inf\"} 3\n"
            "t_seconds_sum 7.5499999999999998\n"
            "t_seconds_count 3\n"
            "# HELP t_depth Depth\n"
            "# TYPE t_depth gauge\n"
            "t_depth{lane=\"query\"} 3\n"
            "t_depth{lane=\"write\"} 0.5\n");
}

TEST(MetricsTest, LabelCardinalityIsCapped) {
  MetricsRegistry r;
  auto& c = r.AddCounter("t_total", "T", {"tenant"});
  for (size_t i = 0; i < MetricsRegistry::kMaxSeries + 50; ++i) c.With({std::to_string(i)}).Inc();
  EXPECT_EQ(c.With({"_other"}).value(), 50);
  size_t series = 0;
  c.ForEach([&](const LabelValues&, const Counter&) { ++series; });
  EXPECT_EQ(series, MetricsRegistry::kMaxSeries + 1);
}

TEST(MetricsTest, ConcurrentObservationsAreAllCounted) {
  MetricsRegistry r;
  auto& c = r.AddCounter("t_total", "T", {});
  auto& h = r.AddHistogram("t_h", "H", {}, {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.With({}).Inc();
        h.With({}).Observe(0.5);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.With({}).value(), 40000);
  EXPECT_EQ(h.With({}).CumulativeCount(1), 40000u);
  EXPECT_DOUBLE_EQ(h.With({}).sum(), 20000);
}

}  // namespace
}  // namespace vecgpu
