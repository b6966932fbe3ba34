#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "bench/histogram.h"
#include "bench/target.h"

namespace vecgpu::bench {

enum class LoadMode {
  kClosed,  // each client sends its next request when the last reply arrives
  kOpen,    // requests start on a fixed schedule, whatever the replies do
};

enum class Operation { kSearch, kAdd, kMixed };

struct LoadSpec {
  LoadMode mode = LoadMode::kClosed;
  Operation op = Operation::kSearch;
  int clients = 1;  // closed: concurrent clients; open: connections in the pool
  int batch = 1;    // queries (or vectors to add) per request
  int k = 10;
  double rate_rps = 0;        // open loop: requests per second offered
  double write_fraction = 0;  // mixed: share of requests that add
  double warmup_s = 1;        // requests starting in the warm-up are not recorded
  double duration_s = 5;      // measured time after the warm-up
  int64_t max_requests = 0;   // stop after this many measured requests (0: no bound)
};

struct LoadResult {
  Histogram latency;     // ns, measured requests that succeeded
  int64_t requests = 0;  // measured requests, successful or not
  int64_t errors = 0;
  std::map<std::string, int64_t> errors_by_kind;
  double elapsed_s = 0;     // measured wall time
  int64_t late_starts = 0;  // open loop: requests started after their slot
  double throughput_rps() const { return elapsed_s > 0 ? (requests - errors) / elapsed_s : 0; }
};

// Where the next request's vectors come from: (request number) -> pointer to batch x d
// floats. Must be thread-safe (it is called from every client thread).
using VectorSource = std::function<const float*(int64_t request)>;

// Runs `spec` against `target` (already prepared). Open loop measures each request from the
// time it was scheduled to start, not from when a free connection sent it, so a slow server
// cannot hide its queueing (no coordinated omission).
LoadResult RunLoad(Target& target, const LoadSpec& spec, const VectorSource& queries,
                   const VectorSource& adds);

// The open-loop schedule: request i starts at start + i / rate.
inline double ScheduledOffsetSeconds(int64_t i, double rate_rps) { return i / rate_rps; }

}  // namespace vecgpu::bench
