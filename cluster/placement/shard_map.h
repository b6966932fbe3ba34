#pragma once

// The shard map (issue [2/5], items 4 and 5): for each collection, its S shards and, per
// shard, its replicas, its primary, its in-sync set and an epoch (the PacificA / Kafka ISR
// model). Stored in etcd as the authority, one key per collection,
// `<prefix><tenant>/<collection>` (names percent-encoded), as JSON.
//
// Every change is fenced: ShardMapStore::Update replaces a map only if it is still at the
// mod revision the caller read, and only while the caller's placer leadership (PlacerElection)
// still holds, in one etcd transaction; so two placers can never both win, and a deposed
// placer that still believes it leads changes nothing.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd/etcd_client.h"
#include "cluster/placement/rendezvous.h"
#include "core/util/status.h"

namespace vecgpu::cluster {

struct ShardState {
  std::vector<std::string> replicas;  // agent ids holding a copy, primary first
  std::string primary;                // takes the shard's writes and orders them
  std::vector<std::string> in_sync;   // replicas that have every acknowledged write
  int64_t epoch = 1;                  // +1 at each change of primary; replicas refuse older
  // A move in progress (issue [3/5]): the replica to drop once the one added in its place is
  // in sync ("" none); and the in-sync replica the primary is handing the shard over to
  // ("" none): the primary stops admitting writes, and once that replica holds every write it
  // admitted, the placer makes it the primary in epoch+1.
  std::string leaving;
  std::string handover;

  bool operator==(const ShardState&) const = default;
};

struct CollectionMap {
  std::string tenant;
  std::string name;
  int replication = 1;  // R: replicas per shard wanted
  bool inner_product = false;  // the metric: larger distances are better (merging results)
  std::vector<ShardState> shards;

  bool operator==(const CollectionMap&) const = default;
};

// A name in an etcd key: [A-Za-z0-9_.-] kept, every other byte as %XX, so '/' never splits it.
std::string EscapeKeyPart(const std::string& name);

// The name shard `shard` of a collection `name` with `shards` shards has on its agents: the
// collection's own name when it has one shard, "<name>#<shard>" otherwise.
std::string ShardCollectionName(const std::string& name, int shard, int shards);

std::string EncodeCollectionMap(const CollectionMap& map);
// Refuses (INVALID_ARGUMENT naming the problem) what is not a consistent map: no shards, a
// primary that is not a replica, an in-sync replica that is not a replica, epoch < 1.
StatusOr<CollectionMap> DecodeCollectionMap(std::string_view json);

// A collection's first placement: each shard's R replicas by rendezvous hashing of
// "<tenant>/<name>/<shard>" over `agents` (weighted by free capacity), all in sync, epoch 1;
// its primary (listed first) the replica that leads the fewest shards so far, counting
// `primaries` (shards each agent already leads). FAILED_PRECONDITION when fewer than
// `replication` agents can hold it.
StatusOr<CollectionMap> FirstPlacement(const std::string& tenant, const std::string& name,
                                       int shards, int replication,
                                       const std::vector<Candidate>& agents,
                                       const std::map<std::string, int>& primaries = {});

// Who leads placement: one gateway at a time, through an etcd key held on a lease. The
// leadership's *fence* is that key's create revision: it is compared in every transaction
// the leader makes, so a leader whose key is gone (lease expired, etcd's view) can no longer
// change anything, whatever it believes.
class PlacerElection {
 public:
  // Campaigns in the background from now on. `etcd` must outlive this.
  PlacerElection(EtcdClient& etcd, std::string id, std::string key = "/vecgpu/placer",
                 int64_t ttl_seconds = 10);
  ~PlacerElection();  // resigns (revokes its lease) if it leads
  PlacerElection(const PlacerElection&) = delete;
  PlacerElection& operator=(const PlacerElection&) = delete;

  // The fence of the leadership this one holds (its key's create revision), 0 when it does
  // not believe it leads.
  int64_t fence() const { return fence_.load(); }
  const std::string& key() const { return key_; }
  bool WaitForLeadership(std::chrono::milliseconds timeout) const;

 private:
  void Loop();

  EtcdClient& etcd_;
  const std::string id_;
  const std::string key_;
  const int64_t ttl_seconds_;
  std::atomic<int64_t> fence_{0};
  std::atomic<int64_t> lease_{0};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

// The maps in etcd.
class ShardMapStore {
 public:
  explicit ShardMapStore(EtcdClient& etcd, std::string prefix = "/vecgpu/collections/");

  struct Read {
    CollectionMap map;
    int64_t mod_revision = 0;  // what an Update must compare
  };
  // NOT_FOUND when the collection has no map.
  StatusOr<Read> Get(const std::string& tenant, const std::string& name);
  // Every map (of `tenant` only, when given), read from etcd now.
  std::vector<Read> List(int64_t* revision = nullptr, int64_t* malformed = nullptr,
                         const std::string& tenant = "");

  // Writes a new collection's map; ALREADY_EXISTS when it has one. `leader` (PlacerElection's
  // fence; 0: none) must still hold.
  StatusOr<int64_t> Create(const CollectionMap& map, const std::string& placer_key,
                           int64_t leader);
  // Replaces the map if it is still at `read_revision` and the leadership still holds;
  // ABORTED ("changed meanwhile" or "no longer the placer") otherwise, nothing changed.
  StatusOr<int64_t> Update(const CollectionMap& map, int64_t read_revision,
                           const std::string& placer_key, int64_t leader);
  Status Delete(const std::string& tenant, const std::string& name, int64_t read_revision,
                const std::string& placer_key, int64_t leader);

  std::string KeyOf(const std::string& tenant, const std::string& name) const;

 private:
  StatusOr<int64_t> Fenced(const std::vector<Compare>& extra, const TxnOp& op,
                           const std::string& placer_key, int64_t leader,
                           const std::string& what);

  EtcdClient& etcd_;
  const std::string prefix_;
};

}  // namespace vecgpu::cluster
