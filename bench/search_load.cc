#include "bench/search_load.h"

#include <chrono>
#include <random>
#include <zmq.hpp>

#include "bench/faissx_client.h"
#include "bench/server_probe.h"

namespace vecgpu::bench {

SearchLoad::SearchLoad(zmq::context_t& ctx, std::string endpoint, std::string index, int dim,
                       int64_t rows, int threads, int timeout_ms)
    : ctx_(ctx),
      endpoint_(std::move(endpoint)),
      index_(std::move(index)),
      dim_(dim),
      rows_(rows),
      timeout_ms_(timeout_ms) {
  for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t] { Run(t); });
}

SearchLoad::~SearchLoad() { Stop(); }

SearchLoad::Counts SearchLoad::counts() const {
  return Counts{answered_.load(), failed_.load(), wrong_.load()};
}

void SearchLoad::Stop() {
  stop_ = true;
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void SearchLoad::Run(int thread) {
  FaissxClient client(ctx_, endpoint_, timeout_ms_);
  std::mt19937_64 rng(1000 + thread);
  std::uniform_int_distribution<int64_t> pick(0, rows_ - 1);
  Histogram latency;
  std::vector<int64_t> labels;
  while (!stop_) {
    const int64_t row = pick(rng);
    const std::vector<float> q = Row(row, dim_);
    const auto t0 = std::chrono::steady_clock::now();
    Status st = client.Search(index_, q.data(), 1, dim_, 10, Encoding::kBinary, {}, &labels);
    latency.Record(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    if (!st.ok()) {
      ++failed_;
      MutexLock lock(mu_);
      ++errors_[ErrorKind(st)];
      if (first_error_.empty()) first_error_ = st.message();
    } else if (labels.empty() || labels[0] != row) {
      ++wrong_;
      MutexLock lock(mu_);
      if (first_wrong_.empty()) {
        first_wrong_ = "row " + std::to_string(row) + " answered with " +
                       (labels.empty() ? std::string("nothing") : std::to_string(labels[0]));
      }
    } else {
      ++answered_;
    }
  }
  MutexLock lock(mu_);
  latency_.Merge(latency);
}

nlohmann::json SearchLoad::Report() const {
  MutexLock lock(mu_);
  nlohmann::json r;
  r["threads"] = threads_.size();
  r["answered"] = answered_.load();
  r["failed"] = failed_.load();
  r["wrong"] = wrong_.load();
  r["errors"] = errors_;
  r["first_error"] = first_error_.empty() ? nlohmann::json() : nlohmann::json(first_error_);
  r["first_wrong"] = first_wrong_.empty() ? nlohmann::json() : nlohmann::json(first_wrong_);
  r["latency_ms_p50"] = latency_.Percentile(50) / 1e6;
  r["latency_ms_p99"] = latency_.Percentile(99) / 1e6;
  r["latency_ms_max"] = latency_.max() / 1e6;
  return r;
}

}  // namespace vecgpu::bench
