#pragma once

// The agent API server (proto/vecgpu/agent/v1/agent.proto): the service contract of this
// node, served to gateways on the agent's own port, on gRPC's callback API (a call holds no
// thread while the scheduler works on it: the contract's completion finishes it).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/security/tls.h"
#include "core/service/collection_service.h"

namespace grpc {
class Server;
}

namespace vecgpu::cluster {

// Where a replica's copy of a shard is: its position (the last record it holds) and a digest
// of that record (0: not known).
struct ReplicaPosition {
  uint64_t position = 0;
  uint64_t digest = 0;
};

// The largest copy one Export reply or Restore request carries: a gRPC message stops at
// 2 GiB (its length is a signed 32-bit number), less room for the request's other fields.
inline constexpr size_t kMaxCopyMessageBytes = size_t{0x7fffffff} - (size_t{1} << 20);

// A copy of a collection exported from this agent: its snapshot encoding and its position.
struct ExportedCopy {
  std::string snapshot;
  uint64_t position = 0;
};

// What applies a primary's records on this agent, and backs up and restores its copies
// (cluster/replication/replicator.h).
class ReplicaSink {
 public:
  virtual ~ReplicaSink() = default;
  // Applies `records` (WAL payloads, in order).
  virtual StatusOr<ReplicaPosition> Apply(const std::string& tenant,
                                          const std::string& collection,
                                          const std::string& primary, int64_t epoch,
                                          const std::vector<std::string>& records) = 0;
  // Takes the `chunk` at `offset` of a copy of `total` bytes (an encoded
  // store::StorageSnapshot); replaces the copy with it once it has all of it.
  virtual StatusOr<ReplicaPosition> Install(const std::string& tenant,
                                            const std::string& collection,
                                            const std::string& primary, int64_t epoch,
                                            uint64_t offset, uint64_t total,
                                            std::string_view chunk) = 0;
  // This agent's copy of (tenant, collection), captured now and encoded as a snapshot file
  // (core/store/FORMAT.md). NOT_FOUND without a copy; RESOURCE_EXHAUSTED over
  // kMaxCopyMessageBytes.
  virtual StatusOr<ExportedCopy> Export(const std::string& tenant,
                                        const std::string& collection) = 0;
  // Installs a backed-up copy (an encoded snapshot named `collection`) as the shard's, on its
  // primary in `epoch` only, and only while this agent holds no copy of it
  // (FAILED_PRECONDITION otherwise); made durable before it answers. The shard's other
  // replicas then get it from this primary as a whole copy.
  virtual StatusOr<ReplicaPosition> Restore(const std::string& tenant,
                                            const std::string& collection,
                                            const std::string& primary, int64_t epoch,
                                            std::string_view snapshot) = 0;
};

class AgentServer {
 public:
  // `service` (and `replicator`, which takes other agents' Replicate calls and a backup's
  // Export and Restore calls; null: refused) must outlive the server. With `tls`, the port
  // takes only mutual TLS: every caller presents a certificate the cluster's CA signed
  // (null: plaintext).
  AgentServer(CollectionService& service, std::string bind_address, int port,
              ReplicaSink* replicator = nullptr,
              std::shared_ptr<const TlsCredentials> tls = nullptr);
  ~AgentServer();

  // UNAVAILABLE when the port cannot be bound.
  Status Start();
  void Stop(std::chrono::milliseconds grace);
  int port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<grpc::Server> server_;
  std::string bind_address_;
  int port_;
  std::shared_ptr<const TlsCredentials> tls_;
};

}  // namespace vecgpu::cluster
