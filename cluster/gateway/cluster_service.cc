#include "cluster/gateway/cluster_service.h"

#include <algorithm>
#include <optional>
#include <set>

#include "cluster/agent/agent_codec.h"
#include "cluster/gateway/gateway_internal.h"
#include "cluster/gateway/shard_merge.h"
#include "cluster/placement/rebalance.h"
#include "cluster/replication/replica_status.h"
#include "core/index_spec.h"

namespace vecgpu::cluster {

ClusterCollectionService::ClusterCollectionService(EtcdClient& etcd, ClusterServiceOptions options)
    : etcd_(etcd), options_(std::move(options)), store_(etcd, options_.maps_prefix) {
  members_ = std::make_unique<MemberDirectory>(
      etcd, options_.agents_prefix, [this](const auto&) { CheckShards(); }, kAgentApiVersion,
      options_.log);
  maps_mirror_ = std::make_unique<PrefixMirror>(
      etcd, options_.maps_prefix, [this](const PrefixMirror::Entries& e) { DecodeMaps(e); });
  checking_.store(true);
  if (options_.placer) {
    election_ = std::make_unique<PlacerElection>(etcd, options_.id);
    placer_ = std::thread([this] { PlacerLoop(); });
  }
}

ClusterCollectionService::~ClusterCollectionService() {
  if (placer_.joinable()) {
    {
      std::lock_guard lock(placer_mu_);
      placer_stop_ = true;
    }
    placer_cv_.notify_all();
    placer_.join();
  }
  election_.reset();  // resigns: another gateway takes the role at once
  checking_.store(false);
  stopping_.store(true);
  // The agents' clients first: they cancel and wait for the calls in flight, whose callbacks
  // may send a waiting batch (answered, not sent, from now on).
  std::map<std::string, std::shared_ptr<RemoteCollectionService>> agents;
  {
    std::lock_guard lock(mu_);
    agents.swap(agents_);
  }
  agents.clear();
  maps_mirror_.reset();  // its thread, before the members it decodes into
  members_.reset();
}

bool ClusterCollectionService::WaitReady(std::chrono::milliseconds timeout) const {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (members_->lists() > 0 && maps_mirror_->lists() > 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void ClusterCollectionService::DecodeMaps(const PrefixMirror::Entries& entries) {
  std::map<std::string, ShardMapStore::Read> fresh;
  for (const auto& [suffix, kv] : entries) {
    auto m = DecodeCollectionMap(kv.value);
    if (m.ok()) fresh[kv.key] = {std::move(*m), kv.mod_revision};
  }
  {
    std::lock_guard lock(mu_);
    maps_ = std::move(fresh);
  }
  CheckShards();
}

std::vector<std::string> ClusterCollectionService::UnservedShards() const {
  const auto members = members_->members();
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  for (const auto& [key, read] : maps_) {
    for (size_t i = 0; i < read.map.shards.size(); ++i) {
      const ShardState& s = read.map.shards[i];
      bool served = false;
      std::string down;
      for (const std::string& r : s.in_sync) {
        if (members.count(r)) {
          served = true;
          break;
        }
        down += (down.empty() ? "" : ", ") + r;
      }
      if (!served) {
        out.push_back(read.map.tenant + "/" + read.map.name + "#" + std::to_string(i) +
                      ": no live in-sync replica (agent " + down + " is down)");
      }
    }
  }
  return out;
}

int64_t ClusterCollectionService::UnderReplicatedShards() const {
  const auto members = members_->members();
  int64_t n = 0;
  std::lock_guard lock(mu_);
  for (const auto& [key, read] : maps_) {
    for (const ShardState& s : read.map.shards) {
      int64_t live = 0;
      for (const std::string& r : s.in_sync) live += members.count(r) > 0;
      n += live < read.map.replication;
    }
  }
  return n;
}

ClusterCollectionService::Healing ClusterCollectionService::HealingNow() const {
  const auto members = members_->members();
  Healing h;
  std::lock_guard lock(mu_);
  for (const auto& [key, read] : maps_) {
    for (const ShardState& s : read.map.shards) {
      for (const std::string& r : s.replicas) {
        h.building += members.count(r) > 0 &&
                      std::find(s.in_sync.begin(), s.in_sync.end(), r) == s.in_sync.end();
      }
      h.moving += !s.leaving.empty();
      h.handovers += !s.handover.empty();
    }
  }
  return h;
}

void ClusterCollectionService::CheckShards() {
  if (!options_.log || !checking_.load()) return;
  auto now = UnservedShards();
  std::set<std::string> fresh(now.begin(), now.end());
  // Shards with fewer live in-sync replicas than their collection wants, by name, and how many.
  std::map<std::string, std::string> under;
  {
    const auto members = members_->members();
    std::lock_guard lock(mu_);
    for (const auto& [key, read] : maps_) {
      for (size_t i = 0; i < read.map.shards.size(); ++i) {
        int live = 0;
        for (const std::string& r : read.map.shards[i].in_sync) live += members.count(r) > 0;
        if (live < read.map.replication) {
          under[read.map.tenant + "/" + read.map.name + "#" + std::to_string(i)] =
              std::to_string(live) + " of " + std::to_string(read.map.replication) +
              " replicas live and in sync";
        }
      }
    }
  }
  std::lock_guard lock(check_mu_);
  for (const std::string& s : fresh) {
    if (!unserved_.count(s)) options_.log("shard unserved: " + s);
  }
  for (const std::string& s : unserved_) {
    if (!fresh.count(s)) options_.log("shard served again: " + s.substr(0, s.find(':')));
  }
  unserved_ = std::move(fresh);
  for (const auto& [s, why] : under) {
    auto it = under_.find(s);
    if (it == under_.end() || it->second != why) {
      options_.log("shard under-replicated: " + s + ": " + why);
    }
  }
  for (const auto& [s, why] : under_) {
    if (!under.count(s)) options_.log("shard fully replicated again: " + s);
  }
  under_ = std::move(under);
}

StatusOr<std::shared_ptr<RemoteCollectionService>> ClusterCollectionService::AgentById(
    const std::string& id) {
  const auto members = members_->members();
  auto it = members.find(id);
  if (it == members.end()) {
    return Unavailable("agent '" + id + "' is not live (not registered in etcd)");
  }
  std::lock_guard lock(mu_);
  auto& agent = agents_[it->second.address];
  if (!agent) agent = std::make_shared<RemoteCollectionService>(it->second.address, options_.tls);
  return agent;
}

StatusOr<ShardMapStore::Read> ClusterCollectionService::MapOf(const std::string& tenant,
                                                              const std::string& name) {
  {
    std::lock_guard lock(mu_);
    if (auto it = maps_.find(store_.KeyOf(tenant, name)); it != maps_.end()) return it->second;
  }
  // Created by another gateway a moment ago, or not at all.
  auto read = store_.Get(tenant, name);
  if (!read.ok()) {
    return read.status().code() == StatusCode::kNotFound ? NoSuchIndex(name) : read.status();
  }
  return read;
}

StatusOr<ClusterCollectionService::Target> ClusterCollectionService::PrimaryOf(
    const CollectionMap& map, int shard) {
  const ShardState& s = map.shards.at(shard);
  auto agent = AgentById(s.primary);
  if (!agent.ok()) {
    return Unavailable(ShardName(map, shard) + ": its primary, agent '" + s.primary +
                       "', is not live (an in-sync replica takes over once its lease expires)");
  }
  return Target{s.primary, *agent,
                ShardCollectionName(map.name, shard, static_cast<int>(map.shards.size())), shard};
}

StatusOr<ClusterCollectionService::Target> ClusterCollectionService::ReaderOf(
    const CollectionMap& map, int shard, const std::set<std::string>& exclude) {
  const ShardState& s = map.shards.at(shard);
  const auto members = members_->members();
  std::string best;
  int64_t least = 0;
  bool best_suspect = false;
  std::vector<std::string> down;
  {
    std::lock_guard lock(inflight_mu_);
    const auto now = std::chrono::steady_clock::now();
    for (const std::string& r : s.in_sync) {
      if (!members.count(r)) {
        down.push_back(r);
        continue;
      }
      if (exclude.count(r)) continue;
      const int64_t n = inflight_[r];
      // A replica that did not answer lately goes last; the primary first among equals: it
      // has every write the moment it is acknowledged.
      auto sus = suspect_.find(r);
      const bool suspect = sus != suspect_.end() && sus->second > now;
      if (best.empty() || (best_suspect && !suspect) ||
          (suspect == best_suspect && (n < least || (n == least && r == s.primary)))) {
        best = r;
        least = n;
        best_suspect = suspect;
      }
    }
  }
  if (best.empty()) {
    std::string why;
    for (const std::string& d : down) why += (why.empty() ? "" : ", ") + ("'" + d + "'");
    return Unavailable(ShardName(map, shard) + ": no in-sync replica can serve it" +
                       (why.empty() ? std::string(" (the one tried failed)")
                                    : " (agents " + why + " are not live)"));
  }
  ASSIGN_OR_RETURN(auto agent, AgentById(best));
  return Target{best, std::move(agent),
                ShardCollectionName(map.name, shard, static_cast<int>(map.shards.size())), shard};
}

StatusOr<std::vector<std::shared_ptr<RemoteCollectionService>>> ClusterCollectionService::AgentsOf(
    const std::string& tenant) {
  std::set<std::string> ids;
  if (tenant.empty()) {
    for (const auto& [id, info] : members_->members()) ids.insert(id);
  } else {
    // From etcd now, not the mirror: a list right after a create must see it.
    int64_t revision = 0;
    const auto members = members_->members();
    for (const auto& read : store_.List(&revision, nullptr, tenant)) {
      for (size_t i = 0; i < read.map.shards.size(); ++i) {
        bool served = false;
        for (const std::string& r : read.map.shards[i].replicas) {
          if (members.count(r)) ids.insert(r);
          served = served || members.count(r) > 0;
        }
        if (!served) {
          return Unavailable(ShardName(read.map, static_cast<int>(i)) +
                             ": none of its agents is live");
        }
      }
    }
    if (revision == 0) return Unavailable("etcd: the shard maps cannot be read now");
  }
  std::vector<std::shared_ptr<RemoteCollectionService>> out;
  for (const std::string& id : ids) {
    ASSIGN_OR_RETURN(auto agent, AgentById(id));
    out.push_back(std::move(agent));
  }
  return out;
}

void ClusterCollectionService::Create(const CallContext& call, CreateCollectionRequest request,
                                      Completion<CollectionInfo> done) {
  const std::string tenant = call.tenant;
  const std::string base = ViewBaseOf(request.index_type);
  if (request.name.find('#') != std::string::npos) {
    return done(InvalidArgument("index_id: '#' is reserved in a cluster (it names shards)"));
  }
  const int shards = request.shards > 0 ? request.shards : 1;
  const int replicas = request.replicas > 0 ? request.replicas : options_.replicas;
  if (shards > kMaxShards) {
    return done(InvalidArgument("shards: " + std::to_string(shards) + " is above the limit of " +
                                std::to_string(kMaxShards)));
  }
  if (replicas > kMaxShards) {
    return done(InvalidArgument("replicas: " + std::to_string(replicas) +
                                " is above the limit of " + std::to_string(kMaxShards)));
  }
  CollectionMap map;
  if (!base.empty()) {
    // A view shares its base's storage: it lives where its base does.
    auto read = MapOf(tenant, base);
    if (!read.ok()) return done(read.status());
    // A view's records share its base's order: its copies would have to be made in that
    // order on every replica, which the gateway's own creates cannot promise.
    if (read->map.shards.size() > 1 || read->map.replication > 1) {
      return done(Unimplemented("index '" + base + "' is " +
                                (read->map.shards.size() > 1 ? "sharded" : "replicated") +
                                ": views over it are not supported in a cluster"));
    }
    map = read->map;
    map.name = request.name;
  } else {
    auto spec = ParseIndexType(request.index_type, request.dim, request.metric);
    if (!spec.ok()) return done(spec.status());
    std::vector<Candidate> agents;
    const std::set<std::string> draining = Draining(etcd_, options_.drain_prefix);
    for (const auto& [id, info] : members_->members()) {
      if (draining.count(id)) continue;  // being emptied for maintenance
      agents.push_back({id, std::max(0.1, info.free_memory_bytes / double(1 << 30))});
    }
    std::map<std::string, int> leads;  // shards each agent leads now
    {
      std::lock_guard lock(mu_);
      for (const auto& [key, read] : maps_) {
        for (const ShardState& s : read.map.shards) ++leads[s.primary];
      }
    }
    auto placed = FirstPlacement(tenant, request.name, shards, replicas, agents, leads);
    if (!placed.ok()) return done(Unavailable(placed.status().message()));
    map = std::move(*placed);
    map.inner_product = spec->metric == Metric::kInnerProduct;
  }
  // The map first (create-if-absent: two gateways agree on one), then the collection on each
  // replica of each shard. A map left without its collections (a crash in between) is
  // completed by the next create of the name.
  int64_t created_at = 0;
  auto created = store_.Create(map, "", 0);
  if (created.ok()) {
    created_at = *created;
    std::lock_guard lock(mu_);  // this gateway routes by it at once, before the watch says so
    maps_[store_.KeyOf(tenant, map.name)] = {map, created_at};
  } else if (created.status().code() == StatusCode::kAlreadyExists) {
    auto existing = store_.Get(tenant, request.name);
    if (!existing.ok()) return done(existing.status());
    map = existing->map;
  } else {
    return done(created.status());
  }
  // Each shard's primary creates its copy; its replicas make theirs from the primary's create
  // record, in the shard's order (the primary answers once they have).
  struct Copy {
    int shard;
    std::shared_ptr<RemoteCollectionService> agent;
  };
  std::vector<Copy> copies;
  const int n = static_cast<int>(map.shards.size());
  for (int i = 0; i < n; ++i) {
    auto primary = PrimaryOf(map, i);
    if (!primary.ok()) return done(primary.status());
    copies.push_back({i, primary->agent});
  }
  struct State {
    std::mutex mu;
    size_t left;
    Status error;
    std::optional<CollectionInfo> info;
  };
  auto st = std::make_shared<State>();
  st->left = copies.size();
  auto finish = [this, st, done = std::move(done), created_at, tenant, map] {
    if (!st->error.ok()) {
      if (created_at != 0 && st->error.code() != StatusCode::kAlreadyExists) {
        // Refused: the map this call wrote goes with it (copies made are dropped).
        CallContext c;
        c.tenant = tenant;
        c.deadline = Clock::now() + std::chrono::seconds(10);
        for (int i = 0; i < static_cast<int>(map.shards.size()); ++i) {
          for (const std::string& r : map.shards[i].replicas) {
            if (auto a = AgentById(r); a.ok()) {
              (*a)->Drop(c, ShardCollectionName(map.name, i, static_cast<int>(map.shards.size())),
                         [](StatusOr<Empty>) {});
            }
          }
        }
        if (store_.Delete(tenant, map.name, created_at, "", 0).ok()) {
          std::lock_guard lock(mu_);
          maps_.erase(store_.KeyOf(tenant, map.name));
        }
      }
      return done(st->error);
    }
    CollectionInfo info = *st->info;
    info.name = map.name;
    done(std::move(info));
  };
  for (const Copy& c : copies) {
    CreateCollectionRequest r = request;
    r.name = ShardCollectionName(map.name, c.shard, n);
    CallContext routed = call;
    routed.shard_epoch = map.shards[c.shard].epoch;
    c.agent->Create(routed, std::move(r),
                    [st, finish, shard = c.shard](StatusOr<CollectionInfo> r) {
                      bool last;
                      {
                        std::lock_guard lock(st->mu);
                        if (!r.ok()) {
                          if (st->error.ok()) st->error = r.status();
                        } else if (!st->info || shard == 0) {
                          st->info = std::move(*r);
                        }
                        last = --st->left == 0;
                      }
                      if (last) finish();
                    });
  }
}

void ClusterCollectionService::Drop(const CallContext& call, std::string collection,
                                    Completion<Empty> done) {
  auto read = MapOf(call.tenant, collection);
  if (!read.ok()) return done(read.status());
  const CollectionMap map = read->map;
  const int n = static_cast<int>(map.shards.size());
  // Every live copy; a copy on an agent that is not live stays there (rebuilt or removed by
  // [3/5]'s repair), the map goes.
  std::vector<std::pair<std::string, std::shared_ptr<RemoteCollectionService>>> copies;
  for (int i = 0; i < n; ++i) {
    for (const std::string& r : map.shards[i].replicas) {
      if (auto a = AgentById(r); a.ok())
        copies.emplace_back(ShardCollectionName(map.name, i, n), *a);
    }
  }
  if (copies.empty()) {
    return done(Unavailable("index '" + collection + "': none of its agents is live"));
  }
  struct State {
    std::mutex mu;
    size_t left;
    Status error;
    bool found = false;
  };
  auto st = std::make_shared<State>();
  st->left = copies.size();
  const std::string tenant = call.tenant;
  const int64_t revision = read->mod_revision;
  auto finish = [this, st, done = std::move(done), tenant, collection, revision] {
    if (!st->error.ok()) return done(st->error);
    Status gone = store_.Delete(tenant, collection, revision, "", 0);
    if (gone.ok()) {
      std::lock_guard lock(mu_);
      maps_.erase(store_.KeyOf(tenant, collection));
      (void)etcd_.Delete(ReplicaStatusPrefix(options_.status_prefix, tenant, collection), true);
    }
    if (!st->found) return done(NoSuchIndex(collection));
    done(Empty{});
  };
  for (auto& [name, agent] : copies) {
    agent->Drop(call, name, [st, finish](StatusOr<Empty> r) {
      bool last;
      {
        std::lock_guard lock(st->mu);
        if (r.ok()) {
          st->found = true;
        } else if (r.status().code() != StatusCode::kNotFound && st->error.ok()) {
          st->error = r.status();
        }
        last = --st->left == 0;
      }
      if (last) finish();
    });
  }
}

void ClusterCollectionService::Describe(const CallContext& call, std::string collection,
                                        Completion<CollectionInfo> done) {
  auto read = MapOf(call.tenant, collection);
  if (!read.ok()) return done(read.status());
  EachShard<CollectionInfo>(
      read->map, {},
      [call](const Target& t, Completion<CollectionInfo> d) {
        t.agent->Describe(t.For(call), t.collection, std::move(d));
      },
      [done = std::move(done), collection](auto results) {
        CollectionInfo info;
        for (size_t i = 0; i < results.size(); ++i) {
          auto& [shard, r] = results[i];
          if (!r.ok()) return done(r.status());
          if (i == 0) {
            info = std::move(*r);
          } else {
            info.backend.ntotal += r->backend.ntotal;
          }
        }
        info.name = collection;
        done(std::move(info));
      });
}

void ClusterCollectionService::List(const CallContext& call,
                                    Completion<std::vector<CollectionInfo>> done) {
  // From etcd now, not the mirror: a list right after a create must see it.
  int64_t revision = 0;
  auto maps = store_.List(&revision, nullptr, call.tenant);
  if (revision == 0) return done(Unavailable("etcd: the shard maps cannot be read now"));
  if (maps.empty()) return done(std::vector<CollectionInfo>{});
  struct State {
    std::mutex mu;
    size_t left;
    Status error;
    std::vector<CollectionInfo> infos;
  };
  auto st = std::make_shared<State>();
  st->left = maps.size();
  auto shared_done = std::make_shared<Completion<std::vector<CollectionInfo>>>(std::move(done));
  for (const auto& read : maps) {
    Describe(call, read.map.name, [st, shared_done](StatusOr<CollectionInfo> r) {
      bool last;
      {
        std::lock_guard lock(st->mu);
        // A map whose collection is not on its agents (a create that failed half way) is not
        // listed; any other failure fails the list (never a partial one).
        if (r.ok()) {
          st->infos.push_back(std::move(*r));
        } else if (r.status().code() != StatusCode::kNotFound && st->error.ok()) {
          st->error = r.status();
        }
        last = --st->left == 0;
      }
      if (!last) return;
      if (!st->error.ok()) return (*shared_done)(st->error);
      std::sort(st->infos.begin(), st->infos.end(),
                [](const CollectionInfo& a, const CollectionInfo& b) { return a.name < b.name; });
      (*shared_done)(std::move(st->infos));
    });
  }
}

void ClusterCollectionService::Cluster(const CallContext& call, ClusterRequest request,
                                       Completion<ClusteringResult> done) {
  // k-means touches no collection: the idlest live agent runs it.
  const auto members = members_->members();
  const AgentInfo* idlest = nullptr;
  for (const auto& [id, info] : members) {
    if (!idlest || info.load < idlest->load) idlest = &info;
  }
  if (!idlest) return done(Unavailable("no live agent to run the clustering"));
  auto agent = AgentById(idlest->id);
  if (!agent.ok()) return done(agent.status());
  (*agent)->Cluster(call, std::move(request), std::move(done));
}

void ClusterCollectionService::Snapshot(const CallContext& call, Completion<SnapshotReport> done) {
  auto agents = AgentsOf(call.admin ? "" : call.tenant);
  if (!agents.ok()) return done(agents.status());
  FanOut<SnapshotReport, SnapshotReport>(
      *agents,
      [call](RemoteCollectionService& a, Completion<SnapshotReport> d) {
        a.Snapshot(call, std::move(d));
      },
      [](SnapshotReport& all, SnapshotReport& one) {
        all.written += one.written;
        all.unchanged += one.unchanged;
        all.bytes += one.bytes;
        all.removed += one.removed;
        all.busy += one.busy;
        all.out_of_scope += one.out_of_scope;
        all.seconds = std::max(all.seconds, one.seconds);
        all.max_pause_seconds = std::max(all.max_pause_seconds, one.max_pause_seconds);
        all.cut = std::max(all.cut, one.cut);
      },
      std::move(done));
}

void ClusterCollectionService::Usage(const CallContext& call, Completion<UsageReply> done) {
  auto agents = AgentsOf("");
  if (!agents.ok()) return done(agents.status());
  FanOut<UsageReply, UsageReply>(
      *agents,
      [call](RemoteCollectionService& a, Completion<UsageReply> d) { a.Usage(call, std::move(d)); },
      [](UsageReply& all, UsageReply& one) {
        AddUse(all.caller, one.caller);
        for (const TenantUsageReport& t : one.tenants) {
          auto it = std::find_if(all.tenants.begin(), all.tenants.end(),
                                 [&](const TenantUsageReport& u) { return u.tenant == t.tenant; });
          if (it == all.tenants.end()) {
            all.tenants.push_back(t);
          } else {
            AddUse(*it, t);
          }
        }
      },
      std::move(done));
}

}  // namespace vecgpu::cluster
