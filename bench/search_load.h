#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench/histogram.h"
#include "core/util/mutex.h"

namespace zmq {
class context_t;
}  // namespace zmq

namespace vecgpu::bench {

// Searches a running server for stored rows (server_probe.h's Row) from several FAISSx
// clients, one thread each, until Stop(), while a check does something to the server (a
// rebuild, a killed GPU process). Every answer is checked: the row searched must come first
// (exact flat indexes only). Thread-safe.
class SearchLoad {
 public:
  // Counts so far; a check takes them before and after a phase.
  struct Counts {
    int64_t answered = 0;  // right answers
    int64_t failed = 0;    // errors (timeouts included)
    int64_t wrong = 0;     // answers without the row searched first
  };

  // Starts `threads` clients searching rows [0, rows) of `index` (dim `dim`) with k = 10.
  SearchLoad(zmq::context_t& ctx, std::string endpoint, std::string index, int dim, int64_t rows,
             int threads, int timeout_ms);
  ~SearchLoad();
  SearchLoad(const SearchLoad&) = delete;
  SearchLoad& operator=(const SearchLoad&) = delete;

  Counts counts() const;
  // Stops and joins the threads; idempotent.
  void Stop();
  // After Stop(): counts, errors by kind, the first error and wrong answer, latency.
  nlohmann::json Report() const;

 private:
  void Run(int thread);

  zmq::context_t& ctx_;
  const std::string endpoint_;
  const std::string index_;
  const int dim_;
  const int64_t rows_;
  const int timeout_ms_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> answered_{0}, failed_{0}, wrong_{0};
  std::vector<std::thread> threads_;

  mutable Mutex mu_;
  std::map<std::string, int64_t> errors_ GUARDED_BY(mu_);  // by kind ("TIMEOUT", ...)
  std::string first_error_ GUARDED_BY(mu_);
  std::string first_wrong_ GUARDED_BY(mu_);
  Histogram latency_ GUARDED_BY(mu_);  // merged from the threads as they end
};

}  // namespace vecgpu::bench
