#pragma once

// The service contract of an agent that holds replicated shards: the local one, with every
// write and every maintenance call (which log records) admitted only on the shard's primary
// in the epoch the gateway routed by, and acknowledged only once the shard's in-sync
// replicas hold it (Replicator). Everything else passes through.

#include "cluster/replication/replicator.h"
#include "core/service/collection_service.h"

namespace vecgpu::cluster {

class ReplicatedCollectionService final : public CollectionService {
 public:
  // Both must outlive it.
  ReplicatedCollectionService(CollectionService& local, Replicator& replicator)
      : local_(local), replicator_(replicator) {}

  // A gateway's create of a shard (shard_epoch set) is the primary's, and acknowledged once
  // its replicas have the copy (they make it from the create record).
  void Create(const CallContext& call, CreateCollectionRequest request,
              Completion<CollectionInfo> done) override;
  void Drop(const CallContext& call, std::string collection, Completion<Empty> done) override {
    local_.Drop(call, std::move(collection), std::move(done));
  }
  void List(const CallContext& call, Completion<std::vector<CollectionInfo>> done) override {
    local_.List(call, std::move(done));
  }
  void Describe(const CallContext& call, std::string collection,
                Completion<CollectionInfo> done) override {
    local_.Describe(call, std::move(collection), std::move(done));
  }
  void Search(const CallContext& call, SearchRequest request,
              Completion<SearchReply> done) override {
    local_.Search(call, std::move(request), std::move(done));
  }
  void Write(const CallContext& call, WriteRequest request, Completion<WriteReply> done) override;
  void Read(const CallContext& call, ReadRequest request, Completion<ReadReply> done) override {
    local_.Read(call, std::move(request), std::move(done));
  }
  void Maintain(const CallContext& call, MaintainRequest request,
                Completion<MaintainReply> done) override;
  void Cluster(const CallContext& call, ClusterRequest request,
               Completion<ClusteringResult> done) override {
    local_.Cluster(call, std::move(request), std::move(done));
  }
  void Snapshot(const CallContext& call, Completion<SnapshotReport> done) override {
    local_.Snapshot(call, std::move(done));
  }
  void Usage(const CallContext& call, Completion<UsageReply> done) override {
    local_.Usage(call, std::move(done));
  }

 private:
  CollectionService& local_;
  Replicator& replicator_;
};

}  // namespace vecgpu::cluster
