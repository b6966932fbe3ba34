#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/util/mutex.h"

namespace vecgpu {

// A monotonically increasing value. Thread-safe, lock-free.
class Counter {
 public:
  void Inc(double v = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into fixed buckets (upper bounds, ascending), with their sum.
// Thread-safe, lock-free.
class Histogram {
 public:
  explicit Histogram(const std::vector<double>& bounds);
  void Observe(double v);
  // Cumulative count of observations <= bounds()[i]; index bounds().size() is +Inf.
  uint64_t CumulativeCount(size_t i) const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, the last one +Inf
  std::atomic<double> sum_{0};
};

using LabelValues = std::vector<std::string>;

// A named family of counters or histograms, one per combination of label values. Children
// live as long as the family (references stay valid). A family holds at most `max_series`
// children; further label combinations share one child whose values are all "_other", so a
// client choosing label values (tenant names) cannot grow the registry without bound.
// Thread-safe.
template <typename T>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> labels,
         std::function<std::unique_ptr<T>()> make, size_t max_series)
      : name_(std::move(name)),
        help_(std::move(help)),
        labels_(std::move(labels)),
        make_(std::move(make)),
        max_series_(max_series) {}

  // REQUIRES: values.size() == label count.
  T& With(const LabelValues& values) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = children_.find(values);
    if (it != children_.end()) return *it->second;
    if (children_.size() >= max_series_) {
      auto& other = children_[LabelValues(labels_.size(), "_other")];
      if (!other) other = make_();
      return *other;
    }
    auto& child = children_[values];
    child = make_();
    return *child;
  }

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& labels() const { return labels_; }
  // Calls fn(values, child) for every child, in label order.
  template <typename F>
  void ForEach(F&& fn) const EXCLUDES(mu_) {
    MutexLock lock(mu_);
    for (const auto& [values, child] : children_) fn(values, *child);
  }

 private:
  const std::string name_, help_;
  const std::vector<std::string> labels_;
  const std::function<std::unique_ptr<T>()> make_;
  const size_t max_series_;
  mutable Mutex mu_;
  std::map<LabelValues, std::unique_ptr<T>> children_ GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using HistogramFamily = Family<Histogram>;

// Values read when the registry is rendered (queue depths, collections per tenant, ...).
struct GaugeSample {
  LabelValues labels;
  double value = 0;
};
using GaugeCallback = std::function<std::vector<GaugeSample>()>;

// Every metric of the process, rendered in the Prometheus text exposition format 0.0.4.
// Families are registered at start-up; observing is thread-safe and never blocks on Render.
class MetricsRegistry {
 public:
  // Default for Family max_series.
  static constexpr size_t kMaxSeries = 2000;

  CounterFamily& AddCounter(std::string name, std::string help, std::vector<std::string> labels);
  HistogramFamily& AddHistogram(std::string name, std::string help,
                                std::vector<std::string> labels, std::vector<double> bounds);
  void AddGauge(std::string name, std::string help, std::vector<std::string> labels,
                GaugeCallback read);

  // The whole registry as Prometheus text (HELP and TYPE lines, `_bucket`/`_sum`/`_count`
  // for histograms, `le="+Inf"`), families in registration order.
  std::string Render() const;

  // Bucket bounds: latencies in seconds from 50 us to 30 s, and powers of two 1 .. 2^max_exp.
  static std::vector<double> LatencyBuckets();
  static std::vector<double> PowersOfTwo(int max_exp);

 private:
  struct Gauge {
    std::string name, help;
    std::vector<std::string> labels;
    GaugeCallback read;
  };
  struct Entry {
    CounterFamily* counter = nullptr;
    HistogramFamily* histogram = nullptr;
    const Gauge* gauge = nullptr;
  };
  mutable Mutex mu_;
  std::vector<std::unique_ptr<CounterFamily>> counters_ GUARDED_BY(mu_);
  std::vector<std::unique_ptr<HistogramFamily>> histograms_ GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Gauge>> gauges_ GUARDED_BY(mu_);
  std::vector<Entry> order_ GUARDED_BY(mu_);
};

}  // namespace vecgpu
