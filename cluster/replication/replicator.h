#pragma once

// Replication on an agent (issue [2/5], item 5: one primary per shard, epochs, an in-sync
// set, as in PacificA and Kafka's ISR). Every record this agent's engine logs about a shard's
// collection is kept in that shard's ring (the last `ring_bytes` of records, by storage_seq).
// Where the shard map names this agent the shard's primary, a sender thread forwards the
// records, in order, to every other replica (the agent API's Replicate), one request in
// flight per replica, and learns each replica's position from its answer. A write to the
// shard is acknowledged (AwaitReplicated) once every replica of the map's in-sync set, and
// every replica reported caught up and waiting to be put back, holds every record logged
// before it completed here; a silent in-sync replica holds it up until the placer has taken
// it out of the in-sync set in etcd, never less. Replicas apply records at most once each
// (by their place in the collection's order) and refuse a primary of an older epoch.
//
// The primary reports each replica's state in etcd (replica_status.h): "lagging" after
// `lag_timeout` behind, "in-sync" once it holds every record. The rings are filled from the
// data directory's log at start, so a restarted primary still has the records its log holds.
// A replica whose position is past the primary's, or whose record there is
// not the primary's (a former primary's unacknowledged writes), or whose gap no kept record
// covers, gets a whole copy instead (Install: the primary's copy captured, the replica's
// replaced and made durable), then the records after it; only once the placer has taken it
// out of the in-sync set, so that a replica that could be promoted never gives up its copy.
//
// Issue [3/5]: a replica new to a shard (re-replication, a move) is built the same way: from
// the primary's kept records when they reach back to the collection's creation, else from a
// whole copy. Whole copies are sent in chunks by `max_copies` threads, and they and the
// records sent to replicas out of the in-sync set share a byte rate (Throttle). A primary
// asked to hand its shard over (the map's `handover`) admits no more writes, and reports the
// new primary "handed-over" once it holds every write admitted here. The primary reports its
// own copy's size too (state "primary"), which the placer balances by. A copy of a shard the
// maps give only to other agents (moved away, or re-replicated while this agent was away) is
// dropped after `orphan_grace`.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cluster/agent/agent_server.h"
#include "cluster/etcd/prefix_mirror.h"
#include "cluster/membership/member_directory.h"
#include "cluster/placement/shard_map.h"
#include "cluster/security/tls.h"
#include "core/mutation_log.h"
#include "core/util/status.h"

namespace vecgpu {
class Engine;
}

namespace vecgpu::cluster {

struct ReplicatorOptions {
  std::string agent_id;
  std::string maps_prefix = "/vecgpu/collections/";
  std::string agents_prefix = "/vecgpu/agents/";
  std::string status_prefix = "/vecgpu/replication/";
  // Records kept, over all collections, for replicas that fall behind (the oldest records
  // of the largest ring dropped first).
  size_t ring_bytes = size_t{256} << 20;
  // Largest request to a replica.
  size_t batch_bytes = size_t{4} << 20;
  // A replica behind the primary for this long is reported lagging.
  std::chrono::milliseconds lag_timeout{2000};
  std::function<void(const std::string&)> log;
  // Makes a tenant's collections durable now (a snapshot of the data directory), after a
  // copy was installed here. Empty: no data directory.
  std::function<Status(const std::string& tenant)> make_durable;
  // Whole copies sent at once; their bytes per second, with the records sent to replicas
  // not in sync yet (0: no cap); the size of one Install request.
  int max_copies = 2;
  int64_t copy_bytes_per_second = int64_t{100} << 20;
  size_t copy_chunk_bytes = size_t{4} << 20;
  // A write waits this long for a handover to finish before it is refused.
  std::chrono::milliseconds handover_wait{3000};
  // A copy of a shard the maps give only to other agents is dropped after this long.
  std::chrono::milliseconds orphan_grace{5000};
  // Mutual TLS to the other agents (cluster/security/tls.h). Default: null, plaintext.
  std::shared_ptr<const TlsCredentials> tls;
};

// A replica's answer, or why there is none.
struct ReplicateOutcome {
  Status status;
  ReplicaPosition at;
  bool installed = false;  // the answer to an Install: the copy is the primary's own
};

class Replicator final : public ReplicaSink {
 public:
  // `etcd` and `engine` must outlive it. Call Start once the engine serves.
  Replicator(EtcdClient& etcd, Engine& engine, ReplicatorOptions options);
  ~Replicator();
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  // The log the engine is to write to: `inner`'s records, each handed on here too.
  MutationLog* Wrap(MutationLog* inner);
  // A record of the log as it was before this start (the data directory's log, read once
  // before serving): kept as if logged now, so a replica behind by records logged before a
  // restart can still catch up from them.
  void Preload(const store::WalRecord& record);
  void Start();

  // A write to (tenant, collection) from a client (a gateway passes the epoch it routed by;
  // 0: none): OK unless the collection is a shard this agent holds and is not the primary
  // of (FAILED_PRECONDITION naming the primary), or the epoch is not the map's (ABORTED for
  // an older one, UNAVAILABLE for one this agent has not seen yet).
  Status AdmitWrite(const std::string& tenant, const std::string& collection, int64_t epoch);
  // Calls `done` once every record of the collection logged so far is held by every replica
  // that must hold it (at once when the collection is not a replicated shard); an error when
  // `deadline` passes first or this agent stops being its primary.
  void AwaitReplicated(const std::string& tenant, const std::string& collection,
                       std::chrono::steady_clock::time_point deadline,
                       std::function<void(Status)> done);
  // A write AdmitWrite let in that failed before it was logged (AwaitReplicated ends the
  // others): a handover no longer waits for it.
  void Release(const std::string& tenant, const std::string& collection);

  // Whether every shard copy this agent holds is in its in-sync set, or is its primary, or
  // has no live primary to catch up from (readiness after a restart).
  bool CaughtUp() const;

  // On a replica: a primary's records (encoded WAL payloads), applied in order; returns the
  // position after. ABORTED for an epoch older than one seen for the shard.
  StatusOr<ReplicaPosition> Apply(const std::string& tenant, const std::string& collection,
                                  const std::string& primary, int64_t epoch,
                                  const std::vector<std::string>& records) override;
  // On a replica: replaces the copy with the primary's (an encoded snapshot).
  StatusOr<ReplicaPosition> Install(const std::string& tenant, const std::string& collection,
                                    const std::string& primary, int64_t epoch, uint64_t offset,
                                    uint64_t total, std::string_view chunk) override;
  // Backup and restore of a shard's copy (replicator_backup.cc): this agent's copy, captured;
  // a backed-up copy installed on the shard's primary while it holds none, every other
  // replica then replaced by a whole copy of it.
  StatusOr<ExportedCopy> Export(const std::string& tenant, const std::string& collection) override;
  StatusOr<ReplicaPosition> Restore(const std::string& tenant, const std::string& collection,
                                    const std::string& primary, int64_t epoch,
                                    std::string_view snapshot) override;

 private:
  class TapLog;
  struct Follower {
    bool known = false;     // position learnt (a probe or an answer)
    bool diverged = false;  // holds records this primary does not: its copy is replaced
    uint64_t acked = 0;     // its position
    bool in_flight = false;
    std::chrono::steady_clock::time_point retry_at{};
    std::chrono::steady_clock::time_point behind_since{};  // when it last fell behind
    std::string reported;                                  // the state last written to etcd
    uint64_t reported_acked = 0;
    std::chrono::steady_clock::time_point reported_at{};
  };
  struct Waiter {
    uint64_t seq = 0;
    std::chrono::steady_clock::time_point deadline;
    std::function<void(Status)> done;
  };
  struct Shard {
    std::string map_key;       // the collection map's etcd key
    std::string tenant, name;  // the collection (map) this is a shard of
    int index = 0;
    ShardState state;  // as the map says
    struct Kept {
      uint64_t seq = 0;  // storage_seq
      std::string payload;
      uint64_t digest = 0;  // store::RecordDigest
    };
    std::deque<Kept> ring;
    size_t ring_bytes = 0;
    uint64_t last = 0;      // the last record logged here
    int64_t max_epoch = 0;  // the highest epoch a primary used towards this copy
    std::map<std::string, Follower> followers;  // primary: the other replicas
    int64_t followers_epoch = 0;       // the epoch they were learnt in (a new one starts afresh)
    std::set<std::string> candidates;  // caught up, waiting to be put in sync
    std::vector<Waiter> waiters;
    std::shared_ptr<std::mutex> apply_mu = std::make_shared<std::mutex>();
    // What this primary last said of its own copy.
    uint64_t self_last = 0;
    int64_t self_bytes = -1;
    int64_t self_epoch = 0;
    std::chrono::steady_clock::time_point self_at{};
    // The epoch a backup was restored into this primary's copy in (0: none): in it, a replica
    // that holds anything is replaced by a whole copy (whatever it holds is not the backup).
    int64_t restored_epoch = 0;
  };
  using ShardKey = std::pair<std::string, std::string>;  // (tenant, collection on agents)

  void Logged(const store::WalRecord& record);
  void MapsChanged(const PrefixMirror::Entries& entries);
  void Loop();
  // Sends what each follower of `s` needs; REQUIRES mu_.
  void Pump(const ShardKey& key, Shard& s, std::chrono::steady_clock::time_point now);
  // Finishes the waiters of `s` that are done; REQUIRES mu_ (completions are collected).
  void Settle(Shard& s, std::chrono::steady_clock::time_point now,
              std::vector<std::pair<std::function<void(Status)>, Status>>& finished);
  bool Holds(const Shard& s, uint64_t seq) const;
  void Report(const ShardKey& key, Shard& s, const std::string& replica, Follower& f,
              const std::string& state, std::chrono::steady_clock::time_point now);
  void Answered(const ShardKey& key, const std::string& replica, int64_t epoch,
                ReplicateOutcome outcome);
  // The digest of the record at `seq` kept for `s` (0: not kept). REQUIRES mu_.
  static uint64_t DigestAt(const Shard& s, uint64_t seq);
  // Checks a primary's right to send to this copy (its epoch); the copy's apply lock.
  StatusOr<std::shared_ptr<std::mutex>> Admit(const std::string& tenant,
                                              const std::string& collection,
                                              const std::string& primary, int64_t epoch);
  ReplicaPosition PositionOf(const std::string& tenant, const std::string& collection);
  // After a whole copy at `position` was installed here: the records kept about the
  // collection up to `position` are not its history (the install logs it as a create, record
  // 1, and a former copy's may be kept), so they are forgotten, and a replica behind
  // `position` gets a whole copy rather than records it cannot apply.
  void Installed(const ShardKey& key, uint64_t position);
  // Copies of shards to send (captured and sent by the loop, outside mu_).
  struct InstallJob {
    ShardKey key;
    std::string replica;
    std::string address;
    int64_t epoch = 0;
  };
  void SendInstall(const InstallJob& job);
  void CopyLoop();
  // Whether `job` is still worth sending (this agent its primary in its epoch).
  bool StillPrimary(const InstallJob& job);
  void ReportSelf(const std::pair<std::string, std::string>& key, Shard& s,
                  std::chrono::steady_clock::time_point now);
  // Sizes of the copies this agent leads, and orphan copies dropped; outside mu_.
  void Housekeep(std::chrono::steady_clock::time_point now);
  std::deque<InstallJob> installs_;  // guarded by mu_
  std::condition_variable copy_cv_;
  std::vector<std::thread> copiers_;
  // A copy arriving in chunks, by shard.
  struct Incoming {
    std::string primary;
    int64_t epoch = 0;
    uint64_t total = 0;
    std::string data;
    std::chrono::steady_clock::time_point touched{};
  };
  std::map<std::pair<std::string, std::string>, Incoming> incoming_;  // guarded by mu_
  std::map<std::pair<std::string, std::string>, int> admitted_;      // guarded by mu_
  std::map<std::pair<std::string, std::string>, int64_t> sizes_;     // guarded by mu_
  // Copies of shards the maps give to other agents only, since when.
  std::map<std::pair<std::string, std::string>, std::chrono::steady_clock::time_point>
      orphans_;  // guarded by mu_
  std::chrono::steady_clock::time_point housekept_{};
  std::unique_ptr<class Throttle> throttle_;

  EtcdClient& etcd_;
  Engine& engine_;
  const ReplicatorOptions options_;
  std::unique_ptr<TapLog> tap_;
  struct Peers;
  std::unique_ptr<Peers> peers_;  // agent API clients to the other agents

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Every collection logged here, and every shard copy the maps give this agent (map_key
  // set: a known shard).
  std::map<ShardKey, Shard> shards_;
  size_t ring_bytes_ = 0;                    // over all rings
  std::vector<std::function<void()>> puts_;  // status writes, made outside mu_
  bool stopping_ = false;
  bool dirty_ = false;
  std::unique_ptr<MemberDirectory> members_;
  std::unique_ptr<PrefixMirror> maps_;
  std::thread thread_;
};

}  // namespace vecgpu::cluster
