#pragma once

// The agent API server (proto/vecgpu/agent/v1/agent.proto): the service contract of this
// node, served to gateways on the agent's own port, on gRPC's callback API (a call holds no
// thread while the scheduler works on it: the contract's completion finishes it).

#include <chrono>
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

// What applies a primary's records on this agent (cluster/replication/replicator.h).
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
};

class AgentServer {
 public:
  // `service` (and `replicator`, which takes other agents' Replicate calls; null: refused)
  // must outlive the server. With `tls`, the port takes only mutual TLS: every caller
  // presents a certificate the cluster's CA signed (null: plaintext).
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
