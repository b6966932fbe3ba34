#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bench/dataset.h"
#include "bench/faissx_client.h"
#include "core/util/status.h"

namespace vecgpu::bench {

// The index a scenario runs on, in FAISSx's index_type words (so the FAISSx server, vecgpu and
// in-process FAISS all build the same thing).
struct IndexConfig {
  std::string name;        // "flat", "ivf", "hnsw"
  std::string index_type;  // "L2", "IVF", "IVF256", "HNSW32"
  std::string factory;     // the FAISS factory string for in-process FAISS, e.g. "IVF100,Flat"
  int nprobe = 0;          // IVF: set on the index after training (0: leave)
  int ef_search = 0;       // HNSW: set on the index (0: leave)
  int64_t train_size = 0;  // vectors to train on (0: no training)
};

// One client's connection to a target. Not thread-safe: one per load thread.
class Connection {
 public:
  virtual ~Connection() = default;
  // q: nq x d; labels (optional) gets nq x k.
  virtual Status Search(const float* q, int64_t nq, int k, std::vector<int64_t>* labels) = 0;
  // x: n x d, added to the prepared index.
  virtual Status Add(const float* x, int64_t n) = 0;
};

// A system under test: vecgpu or the FAISSx server over the wire, or FAISS in this process.
class Target {
 public:
  virtual ~Target() = default;
  virtual std::string name() const = 0;
  // Builds the index: create, train on the first train_size base vectors, add `base_rows`
  // rows of the base (all when < 0).
  virtual Status Prepare(const IndexConfig& config, const Dataset& data, int64_t base_rows) = 0;
  virtual StatusOr<std::unique_ptr<Connection>> Connect() = 0;
  // Changes a search setting of the prepared index ("nprobe", "efSearch").
  virtual Status SetParameter(const std::string& name, int value) = 0;
  // Drops the index.
  virtual Status Cleanup() = 0;
};

// One FAISSx client (its own REQ socket on `ctx`, which must outlive it) searching and adding
// to the index `index_id` (dimension d) at `endpoint`: what the remote and echo targets hand
// each load thread.
std::unique_ptr<Connection> MakeFaissxConnection(zmq::context_t& ctx, const std::string& endpoint,
                                                 int timeout_ms, std::string index_id, int d,
                                                 Encoding enc);
// A FAISSx-protocol server at `endpoint` (vecgpu or FAISSx).
std::unique_ptr<Target> MakeRemoteTarget(std::string name, std::string endpoint, Encoding enc,
                                         int timeout_ms);
// FAISS in this process, the same library vecgpu links: the ceiling vecgpu's overhead is
// measured against. Each connection searches with one OpenMP thread, as vecgpu's workers do.
std::unique_ptr<Target> MakeInProcessTarget();
// The transport's floor ("echo"): a bare ZeroMQ ROUTER started in this process (its own
// thread, a free loopback port) that answers every request, without decoding it, with the
// bytes of a real search reply (the server's codec, bench's encoding) for nq = the request's
// batch and k = `k`; the request's batch is told by its size, a search request of each of
// `batches` being encoded once in Prepare. Connections are the same FAISSx clients the remote
// targets use, so vecgpu's latency less this one's is what vecgpu adds to the transport.
std::unique_ptr<Target> MakeEchoTarget(Encoding enc, int timeout_ms, std::vector<int> batches,
                                       int k);
// vecgpu's Vald v1 gRPC API at `endpoint` ("host:port" or "grpc://host:port"), through the
// generated stubs (bench/grpc_target.cc). Defined only in builds with VECGPU_WITH_GRPC, where
// vecgpu-bench links it (VECGPU_BENCH_HAVE_GRPC).
std::unique_ptr<Target> MakeGrpcTarget(std::string name, std::string endpoint, int timeout_ms);

}  // namespace vecgpu::bench
