#pragma once

// The service contract served by a remote agent (proto/vecgpu/agent/v1/agent.proto): what a
// gateway calls in place of LocalCollectionService. Asynchronous (gRPC's callback client):
// a call completes on a gRPC thread when the agent answers; nothing waits. The caller's
// deadline travels with the call; its cancellation flag, once set, cancels the RPC (watched
// every 20 ms), and the agent sets the flag of the work it runs. Errors are the agent's own
// statuses; transport failures are UNAVAILABLE (or DEADLINE_EXCEEDED) naming the agent.

#include <memory>
#include <string>

#include "cluster/security/tls.h"
#include "core/service/collection_service.h"

namespace grpc {
class Channel;
}

namespace vecgpu::cluster {

class RemoteCollectionService final : public CollectionService {
 public:
  // `address`: the agent's host:port (its --advertise). With `tls`, mutual TLS: the agent's
  // certificate must name the address's host (null: plaintext).
  explicit RemoteCollectionService(const std::string& address,
                                   std::shared_ptr<const TlsCredentials> tls = nullptr);
  ~RemoteCollectionService() override;

  void Create(const CallContext& call, CreateCollectionRequest request,
              Completion<CollectionInfo> done) override;
  void Drop(const CallContext& call, std::string collection, Completion<Empty> done) override;
  void List(const CallContext& call, Completion<std::vector<CollectionInfo>> done) override;
  void Describe(const CallContext& call, std::string collection,
                Completion<CollectionInfo> done) override;
  void Search(const CallContext& call, SearchRequest request,
              Completion<SearchReply> done) override;
  void Write(const CallContext& call, WriteRequest request, Completion<WriteReply> done) override;
  void Read(const CallContext& call, ReadRequest request, Completion<ReadReply> done) override;
  void Maintain(const CallContext& call, MaintainRequest request,
                Completion<MaintainReply> done) override;
  void Cluster(const CallContext& call, ClusterRequest request,
               Completion<ClusteringResult> done) override;
  void Snapshot(const CallContext& call, Completion<SnapshotReport> done) override;
  void Usage(const CallContext& call, Completion<UsageReply> done) override;

  const std::string& address() const { return address_; }

 private:
  struct Impl;
  const std::string address_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vecgpu::cluster
