#pragma once

#include <functional>
#include <string>

#include "core/engine.h"
#include "core/service/collection_service.h"

namespace vecgpu {

struct LocalServiceOptions {
  // Adds (and keyed writes) of at least this many vectors run on the long workers.
  int long_add_rows = 1000;
  // Takes a snapshot (store::Store::Snapshot): `tenant`'s collections, or "" every tenant's.
  // Empty without a data directory.
  std::function<StatusOr<SnapshotReport>(const std::string& tenant)> snapshot;
  // Quotas to report in Usage (null: none). Must outlive the service.
  const Quotas* quotas = nullptr;
  // Whether writes may be accepted now (empty: always). A cluster agent that lost its etcd
  // lease fences itself here: creates, drops, writes and maintenance are refused with its
  // status (checked when called and again when the work runs); reads and searches go on.
  std::function<Status()> admit_writes;
};

// The service contract served in process by an Engine: every call that touches an index runs
// on the engine's scheduler (on the queue of the collection it names, in order with the other
// work there; searches batched, adds merged; creates, clustering and snapshots on a queue of
// their own, fairly among the tenant's work), on a short or a long worker, within the call's
// deadline. Only cached reads (list, layout, usage) complete on the calling thread. The
// caller's thread never runs FAISS and never waits for a storage. Thread-safe.
class LocalCollectionService final : public CollectionService {
 public:
  // `engine` must outlive the service.
  LocalCollectionService(Engine& engine, LocalServiceOptions options);

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

 private:
  // Runs `fn` on the queue of `collection` (null: a queue of its own) on a worker of class
  // `cls`, within the call's deadline and cancellation, and completes `done` with its result.
  template <typename T>
  void Queue(const CallContext& call, const std::string* collection, WorkClass cls,
             std::function<StatusOr<T>()> fn, Completion<T> done);
  TenantUsageReport UsageOf(const std::string& tenant) const;
  Status AdmitWrite() const;

  Engine& engine_;
  const LocalServiceOptions options_;
};

}  // namespace vecgpu
