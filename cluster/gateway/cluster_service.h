#pragma once

// The service contract over a cluster of agents (issue [2/5], items 2, 5-7): what `vecgpu
// gateway` serves its FAISSx and gRPC front ends with, in place of the in-process engine. The
// front ends cannot tell the difference.
//
// A collection has S shards (rows by ShardOfId, keyed objects by ShardOfKey) and R replicas of
// each, as its shard map in etcd says (first placement by weighted rendezvous hashing over the
// live agents; the map is the authority from then on). Writes go to each shard's primary
// with the map's epoch (the agent refuses a write routed by another epoch), which
// acknowledges once its in-sync replicas hold it. Searches and reads go, per shard, to the
// live in-sync replica with the least work in flight from this gateway, and once more to
// another one if it cannot be reached; k-NN results are merged by distance (ties to the
// smaller id). A shard no live in-sync replica serves fails the call UNAVAILABLE naming it,
// unless the search allows partial results (then the reply names the missing shards).
//
// The gateway holding the placer role (an etcd election) repairs the maps: it promotes a live
// in-sync replica of a shard whose primary is gone (a new epoch), takes dead and lagging
// replicas out of the in-sync set and puts back those their primary reports caught up, each
// by a transaction fenced on the map's revision and on its leadership.
//
// It also heals and balances (issue [3/5]): a shard below R live in-sync replicas for
// `rereplicate_after` gets a new replica on another live agent (rendezvous order), built by
// the primary's catch-up, and the dead agent's entry is dropped once R are in sync again;
// replicas move off draining agents (`vecgpu cluster drain`) and from the fullest agents to
// the emptiest (PlanRebalance) by "add, catch up, then drop", the primary handed over first
// when it is the one leaving; at most `max_copies` replicas are built at once per agent.

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/agent/remote_service.h"
#include "cluster/etcd/prefix_mirror.h"
#include "cluster/membership/member_directory.h"
#include "cluster/placement/shard_map.h"
#include "cluster/replication/replica_status.h"
#include "cluster/security/tls.h"
#include "core/service/collection_service.h"

namespace vecgpu::cluster {

struct ClusterServiceOptions {
  std::string agents_prefix = "/vecgpu/agents/";
  std::string maps_prefix = "/vecgpu/collections/";
  int replicas = 1;            // replicas of each new collection's shard (unless its create says)
  bool allow_partial = false;  // every search may answer from the shards that can
  std::string id = "gateway";  // in the placer election
  bool placer = true;          // campaign for the placer role
  std::chrono::milliseconds placer_period{300};
  std::string status_prefix = "/vecgpu/replication/";
  std::string drain_prefix = "/vecgpu/drain/";
  // Healing and balancing (issue [3/5]).
  std::chrono::milliseconds rereplicate_after{60'000};
  int max_copies = 2;               // replicas being built at once per agent (source or target)
  double rebalance_tolerance = 0.2;  // (max - min) / mean of the agents' bytes; 0: drains only
  std::chrono::milliseconds rebalance_period{2000};
  std::chrono::milliseconds handover_timeout{10'000};
  // A search's or read's first try on one replica when another could answer; a replica that
  // timed out or could not be reached is asked last for `suspect_for`.
  std::chrono::milliseconds read_try{2000};
  std::chrono::milliseconds suspect_for{5000};
  // A line for each shard that loses its last live serving agent, and for each that gets one
  // back (empty: none).
  std::function<void(const std::string&)> log;
  // Mutual TLS to the agents (cluster/security/tls.h). Default: null, plaintext.
  std::shared_ptr<const TlsCredentials> tls;
};

class ClusterCollectionService final : public CollectionService {
 public:
  // `etcd` must outlive the service.
  ClusterCollectionService(EtcdClient& etcd, ClusterServiceOptions options = {});
  ~ClusterCollectionService() override;

  // Searches sent to agents, and the requests they carried: k-NN searches of one collection
  // (same k and parameters) that arrive while two are in flight to its agents go together as
  // one search when one returns (continuous batching, as the agents' schedulers do).
  int64_t searches_sent() const { return searches_sent_.load(); }
  int64_t search_requests() const { return search_requests_.load(); }

  // The shards no live agent serves now ("tenant/collection#shard: agent X is down"), and
  // those with fewer in-sync replicas than wanted; from the mirrors, never waits.
  std::vector<std::string> UnservedShards() const;
  int64_t UnderReplicatedShards() const;
  // Work of the placer in progress, from the mirrors: replicas being built (live, not in
  // sync yet), shards with a move under way, shards whose primary is being handed over.
  struct Healing {
    int64_t building = 0, moving = 0, handovers = 0;
  };
  Healing HealingNow() const;

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
  // `name`'s map, from the cached maps (etcd when the cache has not seen it yet). NOT_FOUND for
  // a collection without a map.
  StatusOr<ShardMapStore::Read> MapOf(const std::string& tenant, const std::string& name);
  // A shard's copy to read from: the live in-sync replica with the least in flight, not in
  // `exclude`; UNAVAILABLE naming the shard when there is none.
  struct Target {
    std::string id;
    std::shared_ptr<RemoteCollectionService> agent;
    std::string collection;  // the shard's collection on the agents
    int shard = 0;
    // A read's first try, when another replica could answer: its own deadline (a replica cut
    // off by a partition holds a call without answering), after which the other one is asked.
    std::chrono::steady_clock::time_point try_deadline = std::chrono::steady_clock::time_point::max();
    // `call` with this try's deadline.
    CallContext For(const CallContext& call) const {
      CallContext c = call;
      c.deadline = std::min(c.deadline, try_deadline);
      return c;
    }
  };
  StatusOr<Target> ReaderOf(const CollectionMap& map, int shard,
                            const std::set<std::string>& exclude = {});
  StatusOr<Target> PrimaryOf(const CollectionMap& map, int shard);
  // Runs `call` on a reader of each shard in `shards` (every shard when empty), retrying once
  // on another replica when one cannot be reached, stays silent past its try's deadline
  // (Target::try_deadline) or has no copy (a map that moved it), and completes with each
  // shard's result.
  template <typename R>
  void EachShard(const CollectionMap& map, std::vector<int> shards,
                 std::function<void(const Target&, Completion<R>)> call,
                 std::function<void(std::vector<std::pair<int, StatusOr<R>>>)> done);
  // Sends each (shard, request) part to its shard's primary with the map's epoch (once more
  // by etcd's map when the agent says the map was stale), then `combine`s the replies, or
  // `fail`s with the first error.
  template <typename R, typename Request>
  void ToPrimaries(
      const CallContext& call, const CollectionMap& map, std::vector<std::pair<int, Request>> parts,
      std::function<void(RemoteCollectionService&, const CallContext&, Request, Completion<R>)>
          send,
      std::function<void(std::vector<R>)> combine, std::function<void(Status)> fail);
  // The search of a (merged) request over every shard, merged.
  void SearchShards(const CallContext& call, const CollectionMap& map, SearchRequest request,
                    Completion<SearchReply> done);
  // The placer: repairs the maps while this gateway leads.
  void PlacerLoop();
  void Place(const std::map<std::string, AgentInfo>& live);
  // Starts the moves of the rebalancing plan that the copy limits allow.
  void Rebalance(const std::map<std::string, AgentInfo>& live, const std::set<std::string>& draining,
                 const std::map<std::string, ReplicaStatus>& reported,
                 std::map<std::string, int>& copies);
  // The placer's memory (its thread only): since when each shard ("<map key>#<shard>") has
  // been below R, since when its handover runs, and when it last planned a rebalance.
  std::map<std::string, std::chrono::steady_clock::time_point> degraded_since_;
  std::map<std::string, std::chrono::steady_clock::time_point> handover_since_;
  std::chrono::steady_clock::time_point rebalanced_at_{};
  std::unique_ptr<PlacerElection> election_;
  std::thread placer_;
  std::mutex placer_mu_;
  std::condition_variable placer_cv_;
  bool placer_stop_ = false;  // guarded by placer_mu_
  std::mutex inflight_mu_;
  std::map<std::string, int64_t> inflight_;  // calls in flight per agent id
  // Replicas that did not answer a read lately, until when (guarded by inflight_mu_).
  std::map<std::string, std::chrono::steady_clock::time_point> suspect_;
  // The agent API client of a live agent (one per agent, kept).
  StatusOr<std::shared_ptr<RemoteCollectionService>> AgentById(const std::string& id);
  // The agents holding a map of `tenant` (every live agent with `tenant` empty): for each
  // shard of the tenant's collections, its primary, or UNAVAILABLE naming one that is not live.
  StatusOr<std::vector<std::shared_ptr<RemoteCollectionService>>> AgentsOf(
      const std::string& tenant);
  void DecodeMaps(const PrefixMirror::Entries& entries);
  // Logs the shards that became unserved or served again since the last check.
  void CheckShards();
  std::mutex check_mu_;
  std::set<std::string> unserved_;            // as last logged (guarded by check_mu_)
  std::map<std::string, std::string> under_;  // under-replicated, as last logged (check_mu_)
  std::atomic<bool> checking_{false};         // set once both mirrors exist, cleared when stopping

  // Gateway-side batching of k-NN searches.
  struct PendingSearch {
    CallContext call;
    SearchRequest request;
    Completion<SearchReply> done;
  };
  struct Lane {
    int in_flight = 0;  // searches of the lane sent and not answered yet
    std::vector<PendingSearch> queued;
  };
  void SendBatch(const std::string& lane, std::vector<PendingSearch> batch);
  std::mutex lanes_mu_;
  std::map<std::string, Lane> lanes_;  // a lane exists while searches of it are in flight
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
