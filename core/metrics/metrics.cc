#include "core/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace vecgpu {
namespace {

void AtomicAdd(std::atomic<double>& a, double v) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
  }
}

// A sample value as Prometheus writes it.
std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// Label values escape backslash, double quote and newline.
std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// HELP text escapes backslash and newline.
std::string EscapeHelp(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="x",b="y"} plus an optional extra label (le), or "" when there are none.
std::string Labels(const std::vector<std::string>& names, const LabelValues& values,
                   const std::string& extra_name = "", const std::string& extra_value = "") {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    out += (out.empty() ? "" : ",") + names[i] + "=\"" + Escape(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    out += (out.empty() ? "" : ",") + extra_name + "=\"" + extra_value + "\"";
  }
  return out.empty() ? "" : "{" + out + "}";
}

void Header(std::string& out, const std::string& name, const std::string& help,
            const char* type) {
  out += "# HELP " + name + " " + EscapeHelp(help) + "\n";
  out += "# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Counter::Inc(double v) { AtomicAdd(value_, v); }

Histogram::Histogram(const std::vector<double>& bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i] = 0;
}

void Histogram::Observe(double v) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
}

uint64_t Histogram::CumulativeCount(size_t i) const {
  uint64_t total = 0;
  for (size_t j = 0; j <= i && j <= bounds_.size(); ++j) {
    total += counts_[j].load(std::memory_order_relaxed);
  }
  return total;
}

CounterFamily& MetricsRegistry::AddCounter(std::string name, std::string help,
                                           std::vector<std::string> labels) {
  MutexLock lock(mu_);
  counters_.push_back(std::make_unique<CounterFamily>(
      std::move(name), std::move(help), std::move(labels),
      [] { return std::make_unique<Counter>(); }, kMaxSeries));
  order_.push_back({counters_.back().get(), nullptr, nullptr});
  return *counters_.back();
}

HistogramFamily& MetricsRegistry::AddHistogram(std::string name, std::string help,
                                               std::vector<std::string> labels,
                                               std::vector<double> bounds) {
  MutexLock lock(mu_);
  histograms_.push_back(std::make_unique<HistogramFamily>(
      std::move(name), std::move(help), std::move(labels),
      [bounds] { return std::make_unique<Histogram>(bounds); }, kMaxSeries));
  order_.push_back({nullptr, histograms_.back().get(), nullptr});
  return *histograms_.back();
}

void MetricsRegistry::AddGauge(std::string name, std::string help, std::vector<std::string> labels,
                               GaugeCallback read) {
  MutexLock lock(mu_);
  gauges_.push_back(std::make_unique<Gauge>(
      Gauge{std::move(name), std::move(help), std::move(labels), std::move(read)}));
  order_.push_back({nullptr, nullptr, gauges_.back().get()});
}

std::string MetricsRegistry::Render() const {
  std::vector<Entry> order;
  {
    MutexLock lock(mu_);
    order = order_;
  }
  std::string out;
  for (const Entry& e : order) {
    if (e.counter) {
      const CounterFamily& f = *e.counter;
      Header(out, f.name(), f.help(), "counter");
      f.ForEach([&](const LabelValues& v, const Counter& c) {
        out += f.name() + Labels(f.labels(), v) + " " + Number(c.value()) + "\n";
      });
    } else if (e.histogram) {
      const HistogramFamily& f = *e.histogram;
      Header(out, f.name(), f.help(), "histogram");
      f.ForEach([&](const LabelValues& v, const Histogram& h) {
        const auto& b = h.bounds();
        for (size_t i = 0; i < b.size(); ++i) {
          out += f.name() + "_bucket" + Labels(f.labels(), v, "le", Number(b[i])) + " " +
                 Number(static_cast<double>(h.CumulativeCount(i))) + "\n";
        }
        const double count = static_cast<double>(h.CumulativeCount(b.size()));
        out += f.name() + "_bucket" + Labels(f.labels(), v, "le", "+Inf") + " " + Number(count) +
               "\n";
        out += f.name() + "_sum" + Labels(f.labels(), v) + " " + Number(h.sum()) + "\n";
        out += f.name() + "_count" + Labels(f.labels(), v) + " " + Number(count) + "\n";
      });
    } else {
      const Gauge& g = *e.gauge;
      Header(out, g.name, g.help, "gauge");
      for (const GaugeSample& s : g.read()) {
        out += g.name + Labels(g.labels, s.labels) + " " + Number(s.value) + "\n";
      }
    }
  }
  return out;
}

std::vector<double> MetricsRegistry::LatencyBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30};
}

std::vector<double> MetricsRegistry::PowersOfTwo(int max_exp) {
  std::vector<double> b;
  for (int i = 0; i <= max_exp; ++i) b.push_back(static_cast<double>(int64_t{1} << i));
  return b;
}

}  // namespace vecgpu
