#pragma once

// The service contract over a cluster of agents (issue [2/5], item 2): what `vecgpu gateway`
// will serve its FAISSx and gRPC front ends with, in place of the in-process engine. The
// front ends cannot tell the difference: every call is routed to the agent the collection's
// shard map names (RemoteCollectionService, the agent API), and calls that are not about one
// collection fan out to the agents that hold the caller's collections.
//
// Built so far: one shard per collection with its replicas as placed, writes and reads routed
// to the shard's primary. First placement is by weighted rendezvous hashing over the live
// agents (weight: free memory); the map in etcd is the authority from then on (created with a
// create-if-absent transaction, so two gateways creating one collection agree on one map). An
// IDMap view lives with its base (it shares the base's storage). A collection whose agent is
// not live answers UNAVAILABLE naming the agent: never a partial answer. Replication (the
// primary forwarding to the in-sync set), sharding by id and failover come next.

#include <atomic>
#include <functional>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/agent/remote_service.h"
#include "cluster/etcd/prefix_mirror.h"
#include "cluster/membership/member_directory.h"
#include "cluster/placement/shard_map.h"
#include "core/service/collection_service.h"

namespace vecgpu::cluster {

struct ClusterServiceOptions {
  std::string agents_prefix = "/vecgpu/agents/";
  std::string maps_prefix = "/vecgpu/collections/";
  int replicas = 1;  // replicas of each new collection's shard
  // A line for each shard that loses its last live serving agent, and for each that gets one
  // back (empty: none).
  std::function<void(const std::string&)> log;
};

class ClusterCollectionService final : public CollectionService {
 public:
  // `etcd` must outlive the service.
  ClusterCollectionService(EtcdClient& etcd, ClusterServiceOptions options = {});
  ~ClusterCollectionService() override;

  // Searches sent to agents, and the requests they carried: k-NN searches of one collection
  // (same k and parameters) that arrive while one is in flight to its agent go together as
  // one search when it returns (continuous batching, as the agents' schedulers do).
  int64_t searches_sent() const { return searches_sent_.load(); }
  int64_t search_requests() const { return search_requests_.load(); }

  // The shards no live agent serves now ("tenant/collection#shard: agent X is down"), and
  // those with fewer in-sync replicas than wanted; from the mirrors, never waits.
  std::vector<std::string> UnservedShards() const;
  int64_t UnderReplicatedShards() const;

  // Until the agents and the maps were listed once (or `timeout` passes).
  bool WaitReady(std::chrono::milliseconds timeout) const;
  const MemberDirectory& members() const { return *members_; }

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
  struct Route {
    std::shared_ptr<RemoteCollectionService> agent;
    ShardMapStore::Read map;
  };
  // The agent serving `name`'s shard (its primary), from the cached maps (etcd when the cache
  // has not seen it yet). NOT_FOUND for a collection without a map; UNAVAILABLE when its
  // agent is not live.
  StatusOr<Route> RouteOf(const std::string& tenant, const std::string& name);
  // The agent API client of a live agent (one per agent, kept).
  StatusOr<std::shared_ptr<RemoteCollectionService>> AgentById(const std::string& id);
  // The live agents holding a map of `tenant` (every live agent with `tenant` empty), or
  // UNAVAILABLE naming one that holds the tenant's collections and is not live.
  StatusOr<std::vector<std::shared_ptr<RemoteCollectionService>>> AgentsOf(
      const std::string& tenant);
  void DecodeMaps(const PrefixMirror::Entries& entries);
  // Logs the shards that became unserved or served again since the last check.
  void CheckShards();
  std::mutex check_mu_;
  std::set<std::string> unserved_;  // as last logged (guarded by check_mu_)
  std::atomic<bool> checking_{false};  // set once both mirrors exist, cleared when stopping

  // Gateway-side batching of k-NN searches.
  struct PendingSearch {
    CallContext call;
    SearchRequest request;
    Completion<SearchReply> done;
  };
  struct Lane {
    std::vector<PendingSearch> queued;
  };
  void SendBatch(const std::string& lane, std::vector<PendingSearch> batch);
  std::mutex lanes_mu_;
  std::map<std::string, Lane> lanes_;  // a lane exists while a search of it is in flight
  std::atomic<int64_t> searches_sent_{0};
  std::atomic<int64_t> search_requests_{0};
  std::atomic<bool> stopping_{false};  // batches still waiting are answered, not sent

  EtcdClient& etcd_;
  const ClusterServiceOptions options_;
  ShardMapStore store_;
  std::unique_ptr<MemberDirectory> members_;
  mutable std::mutex mu_;
  std::map<std::string, ShardMapStore::Read> maps_;  // by etcd key (guarded by mu_)
  std::map<std::string, std::shared_ptr<RemoteCollectionService>> agents_;  // by address
  std::unique_ptr<PrefixMirror> maps_mirror_;  // last: its thread calls DecodeMaps
};

}  // namespace vecgpu::cluster
