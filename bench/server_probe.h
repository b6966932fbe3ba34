#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bench/faissx_client.h"
#include "core/util/status.h"

namespace vecgpu::bench {

// What vecgpu-serve-check (bench/serve_check.cc) asks a running `vecgpu serve`: FAISSx actions
// the load generator does not need, its /metrics page, and its child processes. Free
// functions over one FaissxClient (not thread-safe, as the client).

// Where get_index_info says an index is served from.
struct ServedFrom {
  std::string device;     // "gpu:0", "gpu:0,1", "cpu"
  std::string gpu_copy;   // "current", "none", or why there is no current copy
  std::string placement;  // the placement's reason, as the server words it
  int64_t ntotal = 0;

  bool operator==(const ServedFrom&) const = default;
};

StatusOr<ServedFrom> GetServedFrom(FaissxClient& client, const std::string& index);
Status Ping(FaissxClient& client);
// create_index with vecgpu's placement hint `device` ("", "cpu", "gpu", "gpu:N").
Status CreateIndexOn(FaissxClient& client, const std::string& index, int dim,
                     const std::string& index_type, const std::string& device);
Status RemoveIds(FaissxClient& client, const std::string& index, const std::vector<int64_t>& ids);

// Row `row` of the data set the checks load: `dim` floats in [0, 1), the same for every caller,
// so a search thread can make the query for any row it knows was stored.
std::vector<float> Row(int64_t row, int dim);
// Rows [first, first + n) one after another (n x dim).
std::vector<float> Rows(int64_t first, int64_t n, int dim);

// The body of GET http://127.0.0.1:port/path (HTTP/1.0, no TLS), within timeout_ms.
StatusOr<std::string> HttpGet(int port, const std::string& path, int timeout_ms);
// The value of `series` (its name and labels as /metrics writes them, such as
// `vecgpu_gpu_healthy{gpu="0"}`) in a Prometheus text page; nullopt when absent.
std::optional<double> MetricValue(const std::string& page, const std::string& series);

// Processes whose parent is `parent` and one of whose arguments is `word` (from /proc).
std::vector<int> ChildProcesses(int parent, const std::string& word);

}  // namespace vecgpu::bench
