#include "cluster/replication/replicator.h"

#include <algorithm>

#include "cluster/agent/agent_codec.h"
#include "cluster/replication/replica_status.h"
#include "cluster/replication/throttle.h"
#include "core/engine.h"
#include "core/store/wal_record.h"

#include "cluster/replication/replicator_peers.h"

namespace vecgpu::cluster {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

uint64_t Replicator::DigestAt(const Shard& s, uint64_t seq) {
  // Kept records ascend by seq, usually one apart (a record refused before it was logged
  // leaves a hole in the numbers).
  auto it = std::lower_bound(s.ring.begin(), s.ring.end(), seq,
                             [](const Shard::Kept& k, uint64_t v) { return k.seq < v; });
  return it != s.ring.end() && it->seq == seq ? it->digest : 0;
}

// The engine's log, each appended record handed on to the replicator too (under the
// storage's write order, so a shard's records arrive in their order).
class Replicator::TapLog final : public MutationLog {
 public:
  TapLog(Replicator& r, MutationLog* inner) : r_(r), inner_(inner) {}
  StatusOr<Ticket> Append(const store::WalRecord& record) override {
    Ticket t;
    if (inner_) {
      ASSIGN_OR_RETURN(t, inner_->Append(record));
    } else {
      t.seq = ++seq_;
    }
    r_.Logged(record);
    return t;
  }
  Status WaitDurable(const Ticket& t) override {
    return inner_ ? inner_->WaitDurable(t) : Status::Ok();
  }
  uint64_t LastSeq() const override { return inner_ ? inner_->LastSeq() : seq_.load(); }

 private:
  Replicator& r_;
  MutationLog* inner_;
  std::atomic<uint64_t> seq_{0};
};

Replicator::Replicator(EtcdClient& etcd, Engine& engine, ReplicatorOptions options)
    : etcd_(etcd),
      engine_(engine),
      options_(std::move(options)),
      peers_(std::make_unique<Peers>()) {
  // Here, not in the list: throttle_ is declared (so initialised) before options_.
  throttle_ = std::make_unique<Throttle>(options_.copy_bytes_per_second);
  peers_->tls = options_.tls;
}

Replicator::~Replicator() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  copy_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  maps_.reset();
  members_.reset();
  {
    std::lock_guard lock(peers_->mu);
    peers_->closed = true;
    for (const auto& [context, owner] : peers_->in_flight) context->TryCancel();
  }
  for (std::thread& t : copiers_) t.join();
  {
    std::unique_lock lock(peers_->mu);
    peers_->idle.wait(lock, [&] { return peers_->in_flight.empty(); });
    peers_->retired.clear();
  }
  // Writes still waiting: this agent stops serving them.
  std::vector<std::function<void(Status)>> left;
  {
    std::lock_guard lock(mu_);
    for (auto& [key, s] : shards_) {
      for (Waiter& w : s.waiters) left.push_back(std::move(w.done));
      s.waiters.clear();
    }
  }
  for (auto& done : left) done(Unavailable("the agent is shutting down"));
}

MutationLog* Replicator::Wrap(MutationLog* inner) {
  tap_ = std::make_unique<TapLog>(*this, inner);
  return tap_.get();
}

void Replicator::Start() {
  members_ = std::make_unique<MemberDirectory>(
      etcd_, options_.agents_prefix,
      [this](const MemberDirectory::Members&) {
        {
          std::lock_guard lock(mu_);
          dirty_ = true;
        }
        cv_.notify_all();
      },
      kAgentApiVersion, options_.log);
  maps_ = std::make_unique<PrefixMirror>(
      etcd_, options_.maps_prefix, [this](const PrefixMirror::Entries& e) { MapsChanged(e); });
  thread_ = std::thread([this] { Loop(); });
  for (int i = 0; i < std::max(1, options_.max_copies); ++i) {
    copiers_.emplace_back([this] { CopyLoop(); });
  }
}

void Replicator::Logged(const store::WalRecord& record) {
  if (record.type == store::RecordType::kFailed) return;
  if (record.type == store::RecordType::kDrop) {
    // Dropped: its records are nobody's any more (a collection made again under the name
    // starts at record 1; until its create is logged, nothing of the old one may reach a
    // replica of the new one).
    std::lock_guard lock(mu_);
    auto it = shards_.find({record.tenant, record.collection});
    if (it != shards_.end()) {
      ring_bytes_ -= it->second.ring_bytes;
      it->second.ring_bytes = 0;
      it->second.ring.clear();
      it->second.last = 0;
    }
    return;
  }
  if (!record.has_storage) return;
  std::string payload = store::EncodeRecord(record);
  const uint64_t digest = store::RecordDigest(record);
  std::lock_guard lock(mu_);
  // Every collection's records are kept (within the budget), not only known shards': a map
  // seen a moment after its first writes, or a copy promoted later, still has them.
  Shard& s = shards_[{record.tenant, record.collection}];
  // A storage_seq seen before: the earlier record never became durable and was refused, or
  // the collection was dropped and made again.
  while (!s.ring.empty() && s.ring.back().seq >= record.storage_seq) {
    s.ring_bytes -= s.ring.back().payload.size();
    ring_bytes_ -= s.ring.back().payload.size();
    s.ring.pop_back();
  }
  s.ring_bytes += payload.size();
  ring_bytes_ += payload.size();
  s.ring.push_back({record.storage_seq, std::move(payload), digest});
  s.last = record.storage_seq;
  // Over the budget: the oldest records of the largest ring go first.
  while (ring_bytes_ > options_.ring_bytes) {
    Shard* largest = nullptr;
    for (auto& [key, other] : shards_) {
      if (other.ring.size() > 1 && (!largest || other.ring_bytes > largest->ring_bytes)) {
        largest = &other;
      }
    }
    if (!largest) break;
    largest->ring_bytes -= largest->ring.front().payload.size();
    ring_bytes_ -= largest->ring.front().payload.size();
    largest->ring.pop_front();
  }
  dirty_ = true;
  cv_.notify_all();
}

void Replicator::Preload(const store::WalRecord& record) { Logged(record); }

void Replicator::MapsChanged(const PrefixMirror::Entries& entries) {
  std::map<ShardKey, std::pair<std::string, std::pair<CollectionMap, int>>> mine;
  std::set<ShardKey> others;  // shards the maps give to other agents only
  for (const auto& [suffix, kv] : entries) {
    auto m = DecodeCollectionMap(kv.value);
    if (!m.ok()) continue;
    const int n = static_cast<int>(m->shards.size());
    for (int i = 0; i < n; ++i) {
      const auto& r = m->shards[i].replicas;
      if (std::find(r.begin(), r.end(), options_.agent_id) == r.end()) {
        others.insert({m->tenant, ShardCollectionName(m->name, i, n)});
        continue;
      }
      mine[{m->tenant, ShardCollectionName(m->name, i, n)}] = {kv.key, {*m, i}};
    }
  }
  // Positions of copies made before this agent started (read before mu_: the engine may
  // hold its catalog while it logs, and logging takes mu_).
  std::map<ShardKey, uint64_t> positions;
  for (const auto& [key, v] : mine) {
    if (auto at = engine_.LogPosition(key.first, key.second); at.ok()) positions[key] = *at;
  }
  std::vector<std::function<void(Status)>> gone;
  {
    std::lock_guard lock(mu_);
    for (auto& [key, s] : shards_) {
      if (mine.count(key) || s.map_key.empty()) continue;
      // No longer a shard this agent holds (dropped, or moved): its records stay in the ring.
      for (Waiter& w : s.waiters) gone.push_back(std::move(w.done));
      s.waiters.clear();
      s.map_key.clear();
      s.state = ShardState{};
      s.followers.clear();
      s.candidates.clear();
    }
    const auto now = SteadyClock::now();
    for (auto it = orphans_.begin(); it != orphans_.end();) {
      it = others.count(it->first) ? std::next(it) : orphans_.erase(it);
    }
    for (const ShardKey& key : others) orphans_.emplace(key, now);
    for (auto& [key, v] : mine) {
      Shard& s = shards_[key];
      s.map_key = v.first;
      s.tenant = v.second.first.tenant;
      s.name = v.second.first.name;
      s.index = v.second.second;
      s.state = v.second.first.shards[s.index];
      s.max_epoch = std::max(s.max_epoch, s.state.epoch);
      if (auto at = positions.find(key); at != positions.end())
        s.last = std::max(s.last, at->second);
    }
    dirty_ = true;
  }
  cv_.notify_all();
  for (auto& done : gone) done(Unavailable("the collection's shard map is gone"));
}

Status Replicator::AdmitWrite(const std::string& tenant, const std::string& collection,
                              int64_t epoch) {
  std::unique_lock lock(mu_);
  auto known = [&] {
    auto it = shards_.find({tenant, collection});
    return it != shards_.end() && !it->second.map_key.empty() && it->second.state.epoch >= epoch;
  };
  // Routed by a map this agent's mirror has not caught up with yet (a collection created a
  // moment ago, a promotion): it waits for it, briefly.
  if (epoch > 0 && !known())
    cv_.wait_for(lock, milliseconds(2000), [&] { return known() || stopping_; });
  auto it = shards_.find({tenant, collection});
  if (it == shards_.end() || it->second.map_key.empty()) {
    if (epoch == 0) return Status::Ok();  // not a shard: a plain collection
    return Unavailable("agent '" + options_.agent_id + "' has not seen epoch " +
                       std::to_string(epoch) + " of index '" + collection + "' yet");
  }
  // A primary handing the shard over admits nothing new: the write waits (briefly) for the
  // new primary, and is then refused as routed to the wrong agent, which the gateway retries.
  if (!it->second.state.handover.empty() && it->second.state.primary == options_.agent_id) {
    const ShardKey key{tenant, collection};
    cv_.wait_for(lock, options_.handover_wait, [&] {
      auto at = shards_.find(key);
      return stopping_ || at == shards_.end() || at->second.state.handover.empty() ||
             at->second.state.primary != options_.agent_id;
    });
    it = shards_.find(key);
    if (it == shards_.end() || it->second.map_key.empty()) {
      return Unavailable("agent '" + options_.agent_id + "' no longer holds index '" + collection +
                         "'");
    }
  }
  const Shard& s = it->second;
  const std::string where = "shard " + std::to_string(s.index) + " of index '" + s.name + "'";
  if (!s.state.handover.empty() && s.state.primary == options_.agent_id) {
    return Unavailable(where + " is being handed over from '" + options_.agent_id + "' to '" +
                       s.state.handover + "': retry");
  }
  if (epoch != 0 && epoch < s.state.epoch) {
    return Aborted("epoch " + std::to_string(epoch) + " of " + where + " is over: it is in epoch " +
                   std::to_string(s.state.epoch) + " (primary '" + s.state.primary + "')");
  }
  if (epoch > s.state.epoch) {
    return Unavailable("agent '" + options_.agent_id + "' has not seen epoch " +
                       std::to_string(epoch) + " of " + where + " yet");
  }
  if (s.state.primary != options_.agent_id) {
    return FailedPrecondition("agent '" + options_.agent_id + "' is not the primary of " + where +
                              ": '" + s.state.primary + "' is (epoch " +
                              std::to_string(s.state.epoch) + ")");
  }
  ++admitted_[{tenant, collection}];
  return Status::Ok();
}

void Replicator::Release(const std::string& tenant, const std::string& collection) {
  {
    std::lock_guard lock(mu_);
    auto it = admitted_.find({tenant, collection});
    if (it == admitted_.end()) return;
    if (--it->second <= 0) admitted_.erase(it);
    dirty_ = true;
  }
  cv_.notify_all();
}

bool Replicator::CaughtUp() const {
  const auto members = members_ ? members_->members() : MemberDirectory::Members{};
  std::lock_guard lock(mu_);
  for (const auto& [key, s] : shards_) {
    if (s.map_key.empty() || s.state.primary == options_.agent_id) continue;
    const auto& isr = s.state.in_sync;
    if (std::find(isr.begin(), isr.end(), options_.agent_id) != isr.end()) continue;
    if (!members.count(s.state.primary)) continue;  // nobody to catch up from
    return false;
  }
  return true;
}

void Replicator::AwaitReplicated(const std::string& tenant, const std::string& collection,
                                 SteadyClock::time_point deadline,
                                 std::function<void(Status)> done) {
  Release(tenant, collection);
  {
    std::lock_guard lock(mu_);
    auto it = shards_.find({tenant, collection});
    if (it != shards_.end() && it->second.state.primary == options_.agent_id &&
        it->second.state.replicas.size() > 1) {
      Shard& s = it->second;
      if (!Holds(s, s.last)) {
        s.waiters.push_back({s.last, deadline, std::move(done)});
        dirty_ = true;
        cv_.notify_all();
        return;
      }
    }
  }
  done(Status::Ok());
}

bool Replicator::Holds(const Shard& s, uint64_t seq) const {
  auto holds = [&](const std::string& r) {
    if (r == options_.agent_id) return true;
    auto f = s.followers.find(r);
    return f != s.followers.end() && f->second.known && f->second.acked >= seq;
  };
  for (const std::string& r : s.state.in_sync) {
    if (!holds(r)) return false;
  }
  for (const std::string& r : s.candidates) {
    if (!holds(r)) return false;
  }
  return true;
}

StatusOr<std::shared_ptr<std::mutex>> Replicator::Admit(const std::string& tenant,
                                                        const std::string& collection,
                                                        const std::string& primary, int64_t epoch) {
  std::lock_guard lock(mu_);
  auto it = shards_.find({tenant, collection});
  if (it == shards_.end() || it->second.map_key.empty()) {
    return Unavailable("agent '" + options_.agent_id + "' has no shard map naming it a " +
                       "replica of index '" + collection + "' (yet)");
  }
  Shard& s = it->second;
  if (epoch < s.max_epoch) {
    return Aborted("replicate from '" + primary + "' in epoch " + std::to_string(epoch) +
                   " refused: shard " + std::to_string(s.index) + " of index '" + s.name +
                   "' is in epoch " + std::to_string(s.max_epoch));
  }
  if (s.state.primary == options_.agent_id && epoch <= s.state.epoch) {
    return Aborted("replicate from '" + primary + "' in epoch " + std::to_string(epoch) +
                   " refused: agent '" + options_.agent_id + "' is the primary of shard " +
                   std::to_string(s.index) + " of index '" + s.name + "' in epoch " +
                   std::to_string(s.state.epoch));
  }
  s.max_epoch = epoch;
  return s.apply_mu;
}

ReplicaPosition Replicator::PositionOf(const std::string& tenant, const std::string& collection) {
  ReplicaPosition at;
  auto position = engine_.LogPosition(tenant, collection);
  if (!position.ok()) return at;  // no copy: position 0
  at.position = *position;
  std::lock_guard lock(mu_);
  if (auto it = shards_.find({tenant, collection}); it != shards_.end()) {
    at.digest = DigestAt(it->second, at.position);
  }
  return at;
}

StatusOr<ReplicaPosition> Replicator::Apply(const std::string& tenant,
                                            const std::string& collection,
                                            const std::string& primary, int64_t epoch,
                                            const std::vector<std::string>& records) {
  ASSIGN_OR_RETURN(auto apply_mu, Admit(tenant, collection, primary, epoch));
  std::lock_guard order(*apply_mu);
  for (const std::string& payload : records) {
    ASSIGN_OR_RETURN(store::WalRecord r, store::DecodeRecord(payload));
    if (r.tenant != tenant || r.collection != collection) {
      return InvalidArgument("replicate: a record about index '" + r.collection +
                             "' in a request about '" + collection + "'");
    }
    auto done = engine_.ApplyReplicated(r);
    if (!done.ok()) {
      if (done.status().code() == StatusCode::kFailedPrecondition) break;  // a gap: say where
      return done.status();
    }
  }
  return PositionOf(tenant, collection);
}

void Replicator::Loop() {
  std::vector<std::shared_ptr<void>> retired;
  while (true) {
    const auto members = members_->members();
    std::vector<std::pair<std::function<void(Status)>, Status>> finished;
    std::vector<std::function<void()>> puts;
    Housekeep(SteadyClock::now());
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, milliseconds(50), [&] { return stopping_ || dirty_; });
      if (stopping_) break;
      dirty_ = false;
      const auto now = SteadyClock::now();
      for (auto& [key, s] : shards_) {
        if (s.state.primary == options_.agent_id) {
          // Followers: the map's other replicas, learnt afresh in each epoch (a replica may
          // have been primary in between).
          if (s.followers_epoch != s.state.epoch) {
            s.followers.clear();
            s.candidates.clear();
            s.followers_epoch = s.state.epoch;
          }
          for (auto it = s.followers.begin(); it != s.followers.end();) {
            const auto& r = s.state.replicas;
            it = std::find(r.begin(), r.end(), it->first) == r.end() ? s.followers.erase(it)
                                                                     : std::next(it);
          }
          for (const std::string& r : s.state.replicas) {
            if (r != options_.agent_id) s.followers[r];
          }
          for (auto& [id, f] : s.followers) {
            auto m = members.find(id);
            if (m == members.end() || f.in_flight || now < f.retry_at) continue;
            apb::ReplicateRequest request;
            request.set_api_version(kAgentApiVersion);
            request.set_tenant(key.first);
            request.set_collection(key.second);
            request.set_primary(options_.agent_id);
            request.set_epoch(s.state.epoch);
            const bool uncovered =
                f.known && f.acked < s.last &&
                (s.ring.empty() || s.ring.front().seq > f.acked + 1 || s.ring.back().seq < s.last);
            if (f.known && (f.diverged || uncovered)) {
              // Holds records this primary does not, or misses records no longer kept: a
              // whole copy replaces its own (captured and sent outside mu_), once the placer
              // has taken it out of the in-sync set: a replica that could be promoted never
              // gives up its copy.
              Report(key, s, id, f, "lagging", now);
              const auto& isr = s.state.in_sync;
              if (std::find(isr.begin(), isr.end(), id) != isr.end()) continue;
              f.in_flight = true;
              installs_.push_back({key, id, m->second.address, s.state.epoch});
              copy_cv_.notify_one();
              continue;
            }
            if (f.known && f.acked < s.last) {
              size_t bytes = 0;
              for (const auto& kept : s.ring) {
                if (kept.seq <= f.acked) continue;
                if (bytes > 0 && bytes + kept.payload.size() > options_.batch_bytes) break;
                bytes += kept.payload.size();
                request.add_records(kept.payload);
              }
              // A replica being built (out of the in-sync set) catches up at the copies' rate.
              const auto& isr = s.state.in_sync;
              if (std::find(isr.begin(), isr.end(), id) == isr.end() &&
                  !throttle_->TryAcquire(static_cast<int64_t>(bytes))) {
                f.retry_at = now + milliseconds(20);
                dirty_ = true;
                continue;
              }
            } else if (f.known) {
              continue;  // holds everything
            }
            f.in_flight = true;
            auto call = std::make_shared<Peers::Call>();
            call->request = std::move(request);
            call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
            if (!peers_->Started(&call->context, call)) {
              f.in_flight = false;
              continue;
            }
            const int64_t epoch = s.state.epoch;
            const ShardKey k = key;
            const std::string replica = id;
            peers_->StubOf(m->second.address)
                .async()
                ->Replicate(&call->context, &call->request, &call->reply,
                            [this, call, k, replica, epoch](grpc::Status st) {
                              Answered(k, replica, epoch, OutcomeOf(st, call->reply));
                              peers_->Finished(&call->context);
                            });
          }
          // States: in sync once it holds everything; lagging once behind for too long.
          for (auto& [id, f] : s.followers) {
            const bool holds = f.known && !f.diverged && f.acked >= s.last;
            if (holds) {
              f.behind_since = {};
            } else if (f.behind_since == SteadyClock::time_point{}) {
              f.behind_since = now;
            }
            const auto& isr = s.state.in_sync;
            const bool in_sync = std::find(isr.begin(), isr.end(), id) != isr.end();
            if (in_sync) s.candidates.erase(id);
            // Handing over to this replica: done once it holds every write admitted here.
            auto admitted = admitted_.find(key);
            const bool handed_over = holds && s.state.handover == id &&
                                     (admitted == admitted_.end() || admitted->second == 0) &&
                                     s.waiters.empty();
            if (holds) {
              if (!in_sync) s.candidates.insert(id);
              Report(key, s, id, f, handed_over ? "handed-over" : "in-sync", now);
            } else if (now - f.behind_since > options_.lag_timeout) {
              s.candidates.erase(id);
              Report(key, s, id, f, "lagging", now);
            } else if (f.reported.empty()) {
              Report(key, s, id, f, "catching-up", now);
            } else if (f.acked != f.reported_acked && now - f.reported_at > milliseconds(1000)) {
              Report(key, s, id, f, f.reported, now);  // the lag, for `cluster status`
            }
          }
          ReportSelf(key, s, now);
          Settle(s, now, finished);
        } else {
          // A primary no longer: its waiting writes are settled by what the followers it knew
          // held (a handover's new primary holds them all), then the followers are forgotten.
          Settle(s, now, finished);
          s.followers.clear();
          s.candidates.clear();
        }
      }
      puts.swap(puts_);
    }
    {
      std::lock_guard plock(peers_->mu);
      retired.swap(peers_->retired);
    }
    retired.clear();
    for (auto& put : puts) put();
    for (auto& [done, st] : finished) done(st);
  }
}

void Replicator::Settle(Shard& s, SteadyClock::time_point now,
                        std::vector<std::pair<std::function<void(Status)>, Status>>& finished) {
  const bool primary = s.state.primary == options_.agent_id;
  for (auto it = s.waiters.begin(); it != s.waiters.end();) {
    Status st;
    auto successor = s.followers.find(s.state.primary);
    if (!primary && successor != s.followers.end() && successor->second.known &&
        !successor->second.diverged && successor->second.acked >= it->seq) {
      st = Status::Ok();  // the new primary holds it: it stays, in the new epoch too
    } else if (!primary) {
      st = Unavailable("agent '" + options_.agent_id + "' stopped being the primary of shard " +
                       std::to_string(s.index) + " of index '" + s.name +
                       "' before every in-sync replica had the write: it is not acknowledged");
    } else if (Holds(s, it->seq)) {
      st = Status::Ok();
    } else if (now >= it->deadline) {
      std::string missing;
      for (const std::string& r : s.state.in_sync) {
        if (r == options_.agent_id) continue;
        auto f = s.followers.find(r);
        if (f == s.followers.end() || !f->second.known || f->second.acked < it->seq) {
          missing += (missing.empty() ? "" : ", ") + r;
        }
      }
      st = DeadlineExceeded("the write is logged on the primary, but in-sync replicas (" + missing +
                            ") did not confirm it before the deadline");
    } else {
      ++it;
      continue;
    }
    finished.emplace_back(std::move(it->done), std::move(st));
    it = s.waiters.erase(it);
  }
}

void Replicator::Report(const ShardKey& key, Shard& s, const std::string& replica, Follower& f,
                        const std::string& state, SteadyClock::time_point now) {
  if (f.reported == state && f.reported_acked == f.acked) return;
  if (f.reported == state && now - f.reported_at < milliseconds(1000)) return;
  if (options_.log && f.reported != state) {
    options_.log("replica '" + replica + "' of shard " + std::to_string(s.index) + " of index '" +
                 s.name + "' (tenant '" + s.tenant + "'): " + state + " at record " +
                 std::to_string(f.acked) + " of " + std::to_string(s.last));
  }
  f.reported = state;
  f.reported_acked = f.acked;
  f.reported_at = now;
  int64_t bytes = -1;
  if (auto size = sizes_.find(key); size != sizes_.end()) bytes = size->second;
  ReplicaStatus st{options_.agent_id, s.state.epoch, state, f.acked, s.last, bytes};
  const std::string k =
      ReplicaStatusKey(options_.status_prefix, s.tenant, s.name, s.index, replica);
  puts_.push_back([this, k, v = EncodeReplicaStatus(st)] { (void)etcd_.Put(k, v); });
}

void Replicator::Answered(const ShardKey& key, const std::string& replica, int64_t epoch,
                          ReplicateOutcome outcome) {
  {
    std::lock_guard lock(mu_);
    auto it = shards_.find(key);
    if (it == shards_.end()) return;
    auto f = it->second.followers.find(replica);
    if (f == it->second.followers.end()) return;
    Follower& fo = f->second;
    const Shard& s = it->second;
    fo.in_flight = false;
    if (epoch != s.state.epoch) {
      // An answer to an older epoch's request: what it says of positions may be stale.
    } else if (outcome.status.ok()) {
      const ReplicaPosition& at = outcome.at;
      if (outcome.installed) {
        fo.diverged = false;  // the primary's own copy
      } else if (!fo.known) {
        // First word from this replica (a probe): is its copy a prefix of this primary's?
        // Past this primary's position, or another record at its position (a former
        // primary's unacknowledged writes), or one it cannot show: replaced by a copy.
        const uint64_t mine = DigestAt(s, at.position);
        // (A record the replica no longer keeps, its position coming from a snapshot or a
        // copy, is taken on trust: what a former primary logged on its own is in its log.)
        // After a restore in this epoch, whatever a replica holds is not the backup.
        fo.diverged = at.position > s.last || (mine != 0 && at.digest != 0 && mine != at.digest) ||
                      (s.restored_epoch == s.state.epoch && at.position != 0);
        if (fo.diverged && options_.log) {
          options_.log("replica '" + replica + "' of shard " + std::to_string(s.index) +
                       " of index '" + s.name + "' holds records this primary does not (at " +
                       std::to_string(at.position) + ", primary at " + std::to_string(s.last) +
                       "): its copy is replaced");
        }
      }
      fo.known = true;
      fo.acked = at.position;
    } else {
      const bool refused = outcome.status.code() == StatusCode::kAborted;
      fo.retry_at = SteadyClock::now() + milliseconds(refused || outcome.installed ? 1000 : 200);
      if (options_.log && (refused || outcome.installed)) {
        options_.log("replica '" + replica + "' of index '" + s.name +
                     "': " + outcome.status.message());
      }
    }
    dirty_ = true;
  }
  cv_.notify_all();
}

void Replicator::ReportSelf(const ShardKey& key, Shard& s, SteadyClock::time_point now) {
  int64_t bytes = -1;
  if (auto size = sizes_.find(key); size != sizes_.end()) bytes = size->second;
  if (bytes < 0) return;  // not measured yet (within a second)
  const bool changed = s.self_epoch != s.state.epoch || s.self_last != s.last ||
                       s.self_bytes != bytes;
  if (!changed || (s.self_epoch == s.state.epoch && now - s.self_at < milliseconds(2000))) return;
  s.self_epoch = s.state.epoch;
  s.self_last = s.last;
  s.self_bytes = bytes;
  s.self_at = now;
  ReplicaStatus st{options_.agent_id, s.state.epoch, "primary", s.last, s.last, bytes};
  const std::string k =
      ReplicaStatusKey(options_.status_prefix, s.tenant, s.name, s.index, options_.agent_id);
  puts_.push_back([this, k, v = EncodeReplicaStatus(st)] { (void)etcd_.Put(k, v); });
}

void Replicator::Housekeep(SteadyClock::time_point now) {
  if (now - housekept_ < milliseconds(1000)) return;
  housekept_ = now;
  std::vector<ShardKey> led, orphans;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, s] : shards_) {
      if (!s.map_key.empty() && s.state.primary == options_.agent_id) led.push_back(key);
    }
    for (const auto& [key, since] : orphans_) {
      if (now - since >= options_.orphan_grace) orphans.push_back(key);
    }
  }
  // The engine is asked outside mu_ (it may hold its catalog while it logs, which takes mu_).
  std::map<ShardKey, int64_t> sizes;
  for (const ShardKey& key : led) {
    if (auto info = engine_.Describe(key.first, key.second); info.ok()) {
      sizes[key] = info->backend.memory_bytes;
    }
  }
  std::vector<ShardKey> drop;
  {
    std::lock_guard lock(mu_);
    sizes_ = std::move(sizes);
    for (const ShardKey& key : orphans) {
      auto it = orphans_.find(key);
      auto s = shards_.find(key);
      if (it == orphans_.end() || (s != shards_.end() && !s->second.map_key.empty())) continue;
      orphans_.erase(it);  // looked at once: a copy made later is the maps' business again
      drop.push_back(key);
    }
  }
  for (const ShardKey& key : drop) {
    if (!engine_.Describe(key.first, key.second).ok()) continue;  // no copy here
    Status st = engine_.Drop(key.first, key.second);
    if (options_.log) {
      options_.log("dropped this agent's copy of index '" + key.second + "' (tenant '" +
                   key.first + "'): the shard map gives the shard to other agents" +
                   (st.ok() ? std::string() : ": " + st.message()));
    }
  }
}

}  // namespace vecgpu::cluster
