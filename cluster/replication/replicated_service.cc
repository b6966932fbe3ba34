#include "cluster/replication/replicated_service.h"

namespace vecgpu::cluster {
namespace {

// Runs `start` once the write is admitted, and answers once it is replicated.
template <typename Reply, typename Start>
void Replicated(Replicator& replicator, const CallContext& call, const std::string& collection,
                Start start, Completion<Reply> done) {
  if (Status st = replicator.AdmitWrite(call.tenant, collection, call.shard_epoch); !st.ok()) {
    return done(st);
  }
  start(Completion<Reply>([&replicator, tenant = call.tenant, collection, deadline = call.deadline,
                           done = std::move(done)](StatusOr<Reply> r) mutable {
    if (!r.ok()) {
      replicator.Release(tenant, collection);
      return done(std::move(r));
    }
    replicator.AwaitReplicated(tenant, collection, deadline,
                               [done = std::move(done), reply = std::move(*r)](Status st) mutable {
                                 if (!st.ok()) return done(st);
                                 done(std::move(reply));
                               });
  }));
}

}  // namespace

void ReplicatedCollectionService::Create(const CallContext& call, CreateCollectionRequest request,
                                         Completion<CollectionInfo> done) {
  if (call.shard_epoch == 0) return local_.Create(call, std::move(request), std::move(done));
  const std::string collection = request.name;
  Replicated<CollectionInfo>(
      replicator_, call, collection,
      [&](Completion<CollectionInfo> d) { local_.Create(call, std::move(request), std::move(d)); },
      std::move(done));
}

void ReplicatedCollectionService::Write(const CallContext& call, WriteRequest request,
                                        Completion<WriteReply> done) {
  const std::string collection = request.collection;
  Replicated<WriteReply>(
      replicator_, call, collection,
      [&](Completion<WriteReply> d) { local_.Write(call, std::move(request), std::move(d)); },
      std::move(done));
}

void ReplicatedCollectionService::Maintain(const CallContext& call, MaintainRequest request,
                                           Completion<MaintainReply> done) {
  const std::string collection = request.collection;
  Replicated<MaintainReply>(
      replicator_, call, collection,
      [&](Completion<MaintainReply> d) { local_.Maintain(call, std::move(request), std::move(d)); },
      std::move(done));
}

}  // namespace vecgpu::cluster
