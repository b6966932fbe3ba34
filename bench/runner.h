#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench/dataset.h"
#include "bench/load.h"
#include "bench/target.h"

namespace vecgpu::bench {

// Where the systems under test are. An empty endpoint leaves that target out.
struct RunOptions {
  std::string vecgpu_endpoint;
  std::string faissx_endpoint;
  // vecgpu's Vald v1 gRPC API ("host:port"), the target "grpc"; measured only in scenarios
  // whose `targets` name it, and only where make_grpc_target is set (builds with gRPC).
  std::string grpc_endpoint;
  std::function<std::unique_ptr<Target>(const std::string& endpoint, int timeout_ms)>
      make_grpc_target;
  bool in_process = true;
  // The echo target (MakeEchoTarget): the transport's floor, in every search scenario whose
  // `targets` name it (or that names none).
  bool echo = true;
  std::string data_dir = "bench/data";  // ground-truth cache
  double time_scale = 1.0;              // multiplies every duration (e.g. 0.2 for a smoke run)
  int k = 10;
};

// Runs named scenarios from a scenarios file (bench/scenarios.json) and collects every figure
// as JSON: one entry per (scenario, target, encoding, sweep point). Prints a line per entry.
class Runner {
 public:
  Runner(nlohmann::json scenarios, RunOptions options);

  // Expands suite names into scenario names; InvalidArgument names an unknown one.
  StatusOr<std::vector<std::string>> Expand(const std::vector<std::string>& names) const;
  Status Run(const std::string& scenario);
  // The run's report: machine, commit, options, results and ratios.
  nlohmann::json Report() const;

 private:
  StatusOr<Dataset*> GetDataset(const std::string& key);
  std::vector<std::unique_ptr<Target>> MakeTargets(const nlohmann::json& scenario,
                                                   Encoding enc) const;

  nlohmann::json scenarios_;
  RunOptions options_;
  std::map<std::string, std::unique_ptr<Dataset>> datasets_;
  nlohmann::json results_ = nlohmann::json::array();
};

// vecgpu/FAISS and vecgpu/FAISSx throughput and p50 ratios for matching entries, and gRPC's
// over vecgpu's (ZeroMQ) at the same point, per ZeroMQ encoding.
nlohmann::json Ratios(const nlohmann::json& results);

// For a vecgpu entry of `results` with an in-process FAISS entry and an echo entry (same
// encoding) at the same point: what its latency is made of, in ms, for p50 and p99:
//   {"scenario", "encoding", "clients", "batch", ["offered_rps", "nprobe", "efSearch"],
//    "vecgpu_ms": {"p50", "p99"}, "faiss_ms": {...}, "echo_ms": {...},
//    "server_overhead_ms": {...}}   (server overhead = vecgpu - faiss - echo)
// Percentiles do not add up exactly, so a p99 overhead is indicative (and may be negative).
// nullopt for any other entry.
std::optional<nlohmann::json> ServerOverhead(const nlohmann::json& vecgpu_entry,
                                             const nlohmann::json& results);
// ServerOverhead of every vecgpu entry that has one.
nlohmann::json ServerOverheads(const nlohmann::json& results);

}  // namespace vecgpu::bench
