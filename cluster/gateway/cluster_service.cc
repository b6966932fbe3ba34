#include "cluster/gateway/cluster_service.h"

#include <algorithm>
#include <optional>
#include <set>

#include "cluster/gateway/shard_merge.h"
#include "cluster/replication/replica_status.h"
#include "core/index_spec.h"

namespace vecgpu::cluster {
namespace {

Status NoSuchIndex(const std::string& name) { return NotFound("index '" + name + "' not found"); }

std::string ShardName(const CollectionMap& map, int shard) {
  return map.shards.size() == 1 ? "index '" + map.name + "'"
                                : "shard " + std::to_string(shard) + " of index '" + map.name + "'";
}

// Shards and replicas a collection may have at most.
constexpr int kMaxShards = 64;

// Searches of one lane in flight at once: two, so the agents work on one while the other's
// answer and the next request cross the network (and two replicas can each take one).
constexpr int kLaneInFlight = 2;

// Query rows the gateway merges into one search at most.
constexpr int64_t kMaxBatchRows = 4096;

// Calls every agent, merges what they answer into one result, and completes once: with the
// first error if any agent failed (never a partial answer), else with the merge.
template <typename T, typename R>
void FanOut(const std::vector<std::shared_ptr<RemoteCollectionService>>& agents,
            const std::function<void(RemoteCollectionService&, Completion<R>)>& call,
            std::function<void(T&, R&)> merge, Completion<T> done) {
  if (agents.empty()) return done(T{});
  struct State {
    std::mutex mu;
    size_t left;
    Status error;
    T acc{};
    std::function<void(T&, R&)> merge;
    Completion<T> done;
  };
  auto st = std::make_shared<State>();
  st->left = agents.size();
  st->merge = std::move(merge);
  st->done = std::move(done);
  for (const auto& agent : agents) {
    call(*agent, [st](StatusOr<R> r) {
      bool last;
      {
        std::lock_guard lock(st->mu);
        if (!r.ok()) {
          if (st->error.ok()) st->error = r.status();
        } else if (st->error.ok()) {
          st->merge(st->acc, *r);
        }
        last = --st->left == 0;
      }
      if (!last) return;
      if (!st->error.ok()) return st->done(st->error);
      st->done(std::move(st->acc));
    });
  }
}

void AddUse(TenantUsageReport& into, const TenantUsageReport& from) {
  into.tenant = from.tenant;
  into.use.collections += from.use.collections;
  into.use.vectors += from.use.vectors;
  into.use.bytes += from.use.bytes;
  into.use.inflight += from.use.inflight;
  into.quota = from.quota;  // the same auth file everywhere
}

}  // namespace

ClusterCollectionService::ClusterCollectionService(EtcdClient& etcd, ClusterServiceOptions options)
    : etcd_(etcd), options_(std::move(options)), store_(etcd, options_.maps_prefix) {
  members_ = std::make_unique<MemberDirectory>(etcd, options_.agents_prefix,
                                               [this](const auto&) { CheckShards(); });
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
  if (!agent) agent = std::make_shared<RemoteCollectionService>(it->second.address);
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
  std::vector<std::string> down;
  {
    std::lock_guard lock(inflight_mu_);
    for (const std::string& r : s.in_sync) {
      if (!members.count(r)) {
        down.push_back(r);
        continue;
      }
      if (exclude.count(r)) continue;
      const int64_t n = inflight_[r];
      // The primary first among equals: it has every write the moment it is acknowledged.
      if (best.empty() || n < least || (n == least && r == s.primary)) {
        best = r;
        least = n;
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

template <typename R>
void ClusterCollectionService::EachShard(
    const CollectionMap& map, std::vector<int> shards,
    std::function<void(const Target&, Completion<R>)> call,
    std::function<void(std::vector<std::pair<int, StatusOr<R>>>)> done) {
  if (shards.empty()) {
    for (int i = 0; i < static_cast<int>(map.shards.size()); ++i) shards.push_back(i);
  }
  struct State {
    std::mutex mu;
    size_t left;
    std::vector<std::pair<int, StatusOr<R>>> results;
    std::function<void(std::vector<std::pair<int, StatusOr<R>>>)> done;
  };
  auto st = std::make_shared<State>();
  st->left = shards.size();
  st->done = std::move(done);
  auto finish = [st](int shard, StatusOr<R> r) {
    bool last;
    {
      std::lock_guard lock(st->mu);
      st->results.emplace_back(shard, std::move(r));
      last = --st->left == 0;
    }
    if (last) {
      std::sort(st->results.begin(), st->results.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      st->done(std::move(st->results));
    }
  };
  auto m = std::make_shared<CollectionMap>(map);
  for (int shard : shards) {
    auto first = ReaderOf(*m, shard);
    if (!first.ok()) {
      finish(shard, first.status());
      continue;
    }
    auto counted = [this](const std::string& id, int delta) {
      std::lock_guard lock(inflight_mu_);
      inflight_[id] += delta;
    };
    counted(first->id, 1);
    call(*first, [this, m, shard, call, finish, counted, id = first->id](StatusOr<R> r) {
      counted(id, -1);
      // Unreachable (not an answer): once more on another in-sync replica.
      if (r.ok() || r.status().code() != StatusCode::kUnavailable || stopping_.load()) {
        return finish(shard, std::move(r));
      }
      auto second = ReaderOf(*m, shard, {id});
      if (!second.ok()) return finish(shard, std::move(r));
      counted(second->id, 1);
      call(*second, [finish, shard, counted, id2 = second->id](StatusOr<R> r2) {
        counted(id2, -1);
        finish(shard, std::move(r2));
      });
    });
  }
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
    for (const auto& [id, info] : members_->members()) {
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
        t.agent->Describe(call, t.collection, std::move(d));
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

void ClusterCollectionService::SearchShards(const CallContext& call, const CollectionMap& map,
                                            SearchRequest request, Completion<SearchReply> done) {
  const int64_t nq = request.queries.rows;
  const int k = request.k;
  const bool partial = request.allow_partial || options_.allow_partial;
  const auto kind = request.kind;
  const bool larger = map.inner_product;
  auto shared = std::make_shared<SearchRequest>(std::move(request));
  const int n = static_cast<int>(map.shards.size());
  EachShard<SearchReply>(
      map, {},
      [call, shared](const Target& t, Completion<SearchReply> d) {
        SearchRequest r = *shared;
        r.collection = t.collection;
        t.agent->Search(call, std::move(r), std::move(d));
      },
      [done = std::move(done), nq, k, partial, kind, larger, n](auto results) {
        std::vector<SearchReply> parts;
        std::vector<std::string> missing;
        for (auto& [shard, r] : results) {
          if (r.ok()) {
            parts.push_back(std::move(*r));
            continue;
          }
          // An answer about the request (not about reaching the shard) is the answer.
          if (!partial || r.status().code() != StatusCode::kUnavailable) return done(r.status());
          missing.push_back(r.status().message());
        }
        if (n == 1 && missing.empty()) return done(std::move(parts.front()));
        SearchReply out;
        if (kind == SearchRequest::Kind::kRange) {
          std::vector<vecgpu::RangeResult> ranges;
          for (auto& p : parts) ranges.push_back(std::move(p.range));
          out.range = MergeRange(std::move(ranges), nq, larger);
        } else {
          out = MergeKnn(std::move(parts), nq, k, larger);
        }
        out.missing_shards = std::move(missing);
        done(std::move(out));
      });
}

void ClusterCollectionService::Search(const CallContext& call, SearchRequest request,
                                      Completion<SearchReply> done) {
  if (request.kind != SearchRequest::Kind::kKnn) {
    auto read = MapOf(call.tenant, request.collection);
    if (!read.ok()) return done(read.status());
    search_requests_.fetch_add(1);
    searches_sent_.fetch_add(1);
    return SearchShards(call, read->map, std::move(request), std::move(done));
  }
  // One lane per (tenant, collection, k, parameters, keys): while a search of the lane is in
  // flight, the next ones wait to go together.
  const SearchParams& p = request.params;
  const std::string lane = call.tenant + '\0' + request.collection + '\0' +
                           std::to_string(request.k) + '/' + std::to_string(p.nprobe.value_or(-1)) +
                           '/' + std::to_string(p.ef_search.value_or(-1)) + '/' +
                           (request.with_keys ? "k" : "") + (request.allow_partial ? "p" : "") +
                           '/' + std::to_string(request.queries.cols);
  {
    std::lock_guard lock(lanes_mu_);
    Lane& l = lanes_[lane];
    if (l.in_flight >= kLaneInFlight) {
      l.queued.push_back({call, std::move(request), std::move(done)});
      return;
    }
    ++l.in_flight;
  }
  std::vector<PendingSearch> batch;
  batch.push_back({call, std::move(request), std::move(done)});
  SendBatch(lane, std::move(batch));
}

void ClusterCollectionService::SendBatch(const std::string& lane,
                                         std::vector<PendingSearch> batch) {
  // Taken back or expired while waiting (or the gateway is stopping): answered now, not sent.
  std::erase_if(batch, [this](PendingSearch& p) {
    if (stopping_.load()) {
      p.done(Unavailable("the gateway is shutting down"));
      return true;
    }
    if (p.call.Cancelled()) {
      p.done(Cancelled("the call was cancelled by its caller"));
      return true;
    }
    if (Clock::now() >= p.call.deadline) {
      p.done(DeadlineExceeded("the request's deadline passed while it waited to be sent"));
      return true;
    }
    return false;
  });
  auto next = [this, lane] {
    std::vector<PendingSearch> more;
    {
      std::lock_guard lock(lanes_mu_);
      auto it = lanes_.find(lane);
      auto& queued = it->second.queued;
      // Up to kMaxBatchRows query rows in one search; the rest go in the next.
      size_t take = 0;
      int64_t rows = 0;
      while (take < queued.size() && (take == 0 || rows < kMaxBatchRows)) {
        rows += queued[take++].request.queries.rows;
      }
      more.assign(std::make_move_iterator(queued.begin()),
                  std::make_move_iterator(queued.begin() + static_cast<std::ptrdiff_t>(take)));
      queued.erase(queued.begin(), queued.begin() + static_cast<std::ptrdiff_t>(take));
      // Nothing waits: this search's place in flight is free (the lane closes with the last).
      if (more.empty() && --it->second.in_flight == 0) lanes_.erase(it);
    }
    if (!more.empty()) SendBatch(lane, std::move(more));
  };
  if (batch.empty()) return next();
  const PendingSearch& first = batch.front();
  auto read = MapOf(first.call.tenant, first.request.collection);
  if (!read.ok()) {
    for (auto& p : batch) p.done(read.status());
    return next();
  }
  // One request of every query, with the latest deadline of the batch (each answer is
  // checked against its own).
  SearchRequest merged;
  merged.collection = first.request.collection;
  merged.k = first.request.k;
  merged.params = first.request.params;
  merged.with_keys = first.request.with_keys;
  merged.allow_partial = first.request.allow_partial;
  merged.queries.cols = first.request.queries.cols;
  CallContext call = first.call;
  call.cancelled = nullptr;  // one caller's cancel must not take the others' back
  std::vector<int64_t> rows;
  for (const PendingSearch& p : batch) {
    merged.queries.rows += p.request.queries.rows;
    merged.queries.data.insert(merged.queries.data.end(), p.request.queries.data.begin(),
                               p.request.queries.data.end());
    rows.push_back(p.request.queries.rows);
    call.deadline = std::max(call.deadline, p.call.deadline);
  }
  search_requests_.fetch_add(static_cast<int64_t>(batch.size()));
  searches_sent_.fetch_add(1);
  auto shared = std::make_shared<std::vector<PendingSearch>>(std::move(batch));
  SearchShards(
      call, read->map, std::move(merged),
      [shared, rows = std::move(rows), next](StatusOr<SearchReply> r) {
        int64_t total = 0;
        for (int64_t n : rows) total += n;
        if (r.ok() &&
            (r->knn.nq != total || static_cast<int64_t>(r->knn.labels.size()) != total * r->knn.k ||
             (!r->keys.empty() && r->keys.size() != r->knn.labels.size()))) {
          r = Internal("agent answered a search of " + std::to_string(total) + " queries with " +
                       std::to_string(r->knn.nq));
        }
        int64_t row = 0;
        for (size_t i = 0; i < shared->size(); ++i) {
          PendingSearch& p = (*shared)[i];
          if (!r.ok()) {
            p.done(r.status());
            continue;
          }
          if (Clock::now() > p.call.deadline) {
            p.done(DeadlineExceeded("the request's deadline passed before its results were in"));
            row += rows[i];
            continue;
          }
          const int k = r->knn.k;
          SearchReply one;
          one.knn.nq = rows[i];
          one.knn.k = k;
          const auto from = row * k, to = (row + rows[i]) * k;
          one.knn.distances.assign(r->knn.distances.begin() + from, r->knn.distances.begin() + to);
          one.knn.labels.assign(r->knn.labels.begin() + from, r->knn.labels.begin() + to);
          if (!r->keys.empty()) one.keys.assign(r->keys.begin() + from, r->keys.begin() + to);
          one.missing_shards = r->missing_shards;
          row += rows[i];
          p.done(std::move(one));
        }
        next();
      });
}

namespace {

// An agent's refusal that says the write was routed by a map it does not share: nothing was
// applied, and a fresh map may route it right.
bool Misrouted(const Status& st) {
  return st.code() == StatusCode::kAborted || st.code() == StatusCode::kFailedPrecondition ||
         (st.code() == StatusCode::kUnavailable &&
          st.message().find("has not seen epoch") != std::string::npos);
}

}  // namespace

template <typename R, typename Request>
void ClusterCollectionService::ToPrimaries(
    const CallContext& call, const CollectionMap& map, std::vector<std::pair<int, Request>> parts,
    std::function<void(RemoteCollectionService&, const CallContext&, Request, Completion<R>)> send,
    std::function<void(std::vector<R>)> combine, std::function<void(Status)> fail) {
  // Every part's primary first: a part that cannot be sent fails the call before any is sent.
  std::vector<Target> targets;
  for (const auto& [shard, request] : parts) {
    auto t = PrimaryOf(map, shard);
    if (!t.ok()) return fail(t.status());
    targets.push_back(std::move(*t));
  }
  struct State {
    std::mutex mu;
    size_t left;
    Status error;
    std::vector<R> replies;
  };
  auto st = std::make_shared<State>();
  st->left = parts.size();
  auto finish = [st, combine, fail](StatusOr<R> r) {
    bool last;
    {
      std::lock_guard lock(st->mu);
      if (!r.ok()) {
        if (st->error.ok()) st->error = r.status();
      } else {
        st->replies.push_back(std::move(*r));
      }
      last = --st->left == 0;
    }
    if (!last) return;
    if (!st->error.ok()) return fail(st->error);
    combine(std::move(st->replies));
  };
  const int n = static_cast<int>(map.shards.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    const int shard = parts[i].first;  // not a structured binding: lambdas capture it
    Request& request = parts[i].second;
    CallContext c = call;
    c.shard_epoch = map.shards[shard].epoch;
    // Routed by a stale map (a promotion this gateway has not seen): once more, by etcd's.
    auto retry = [this, c, shard, request, send, finish, tenant = call.tenant, name = map.name,
                  n](StatusOr<R> r) mutable {
      if (r.ok() || !Misrouted(r.status())) return finish(std::move(r));
      auto fresh = store_.Get(tenant, name);
      if (!fresh.ok() || static_cast<int>(fresh->map.shards.size()) != n ||
          fresh->map.shards[shard].epoch == c.shard_epoch) {
        return finish(std::move(r));
      }
      auto t = PrimaryOf(fresh->map, shard);
      if (!t.ok()) return finish(t.status());
      c.shard_epoch = fresh->map.shards[shard].epoch;
      send(*t->agent, c, std::move(request), std::move(finish));
    };
    send(*targets[i].agent, c, request, std::move(retry));
  }
}

void ClusterCollectionService::Write(const CallContext& call, WriteRequest request,
                                     Completion<WriteReply> done) {
  auto read = MapOf(call.tenant, request.collection);
  if (!read.ok()) return done(read.status());
  const int n = static_cast<int>(read->map.shards.size());
  auto split = SplitWrite(request, n);
  if (!split.ok()) return done(split.status());
  std::vector<std::pair<int, WriteRequest>> parts;
  for (ShardWrite& w : *split) {
    w.request.collection = ShardCollectionName(request.collection, w.shard, n);
    parts.emplace_back(w.shard, std::move(w.request));
  }
  auto shared = std::make_shared<Completion<WriteReply>>(std::move(done));
  ToPrimaries<WriteReply, WriteRequest>(
      call, read->map, std::move(parts),
      [](RemoteCollectionService& a, const CallContext& c, WriteRequest r,
         Completion<WriteReply> d) { a.Write(c, std::move(r), std::move(d)); },
      [shared, op = request.op](std::vector<WriteReply> replies) {
        (*shared)(CombineWrites(op, std::move(replies)));
      },
      [shared](Status st) { (*shared)(st); });
}

void ClusterCollectionService::Maintain(const CallContext& call, MaintainRequest request,
                                        Completion<MaintainReply> done) {
  auto read = MapOf(call.tenant, request.collection);
  if (!read.ok()) return done(read.status());
  const int n = static_cast<int>(read->map.shards.size());
  if (request.op == MaintainRequest::Op::kMerge && n > 1) {
    return done(Unimplemented("merge_indices: index '" + request.collection +
                              "' is sharded; merging into a sharded index is not supported"));
  }
  // Training, reclustering and settings apply to every shard (each trains on the same
  // vectors, on its primary; the trained artefacts reach the replicas through the log).
  std::vector<std::pair<int, MaintainRequest>> parts;
  for (int i = 0; i < n; ++i) {
    MaintainRequest r = request;
    r.collection = ShardCollectionName(request.collection, i, n);
    parts.emplace_back(i, std::move(r));
  }
  auto shared = std::make_shared<Completion<MaintainReply>>(std::move(done));
  ToPrimaries<MaintainReply, MaintainRequest>(
      call, read->map, std::move(parts),
      [](RemoteCollectionService& a, const CallContext& c, MaintainRequest r,
         Completion<MaintainReply> d) { a.Maintain(c, std::move(r), std::move(d)); },
      [shared, name = request.collection](std::vector<MaintainReply> replies) {
        MaintainReply out = std::move(replies.front());
        for (size_t i = 1; i < replies.size(); ++i) {
          out.info.backend.ntotal += replies[i].info.backend.ntotal;
          out.recluster.ntotal += replies[i].recluster.ntotal;
          out.ntotal += replies[i].ntotal;
        }
        if (!out.info.name.empty()) out.info.name = name;
        (*shared)(std::move(out));
      },
      [shared](Status st) { (*shared)(st); });
}

void ClusterCollectionService::Read(const CallContext& call, ReadRequest request,
                                    Completion<ReadReply> done) {
  auto read = MapOf(call.tenant, request.collection);
  if (!read.ok()) return done(read.status());
  const CollectionMap& map = read->map;
  const int n = static_cast<int>(map.shards.size());
  using Op = ReadRequest::Op;
  auto one = [call](const Target& t, ReadRequest r, Completion<ReadReply> d) {
    r.collection = t.collection;
    t.agent->Read(call, std::move(r), std::move(d));
  };
  auto shared = std::make_shared<ReadRequest>(std::move(request));
  auto all = [&](std::vector<int> shards,
                 std::function<StatusOr<ReadReply>(std::vector<ReadReply>)> combine) {
    EachShard<ReadReply>(
        map, std::move(shards),
        [shared, one](const Target& t, Completion<ReadReply> d) { one(t, *shared, std::move(d)); },
        [combine, done = std::move(done)](auto results) {
          std::vector<ReadReply> replies;
          for (auto& [shard, r] : results) {
            if (!r.ok()) return done(r.status());
            replies.push_back(std::move(*r));
          }
          done(combine(std::move(replies)));
        });
  };
  const Op op = shared->op;
  if (n == 1 || op == Op::kLayout || op == Op::kTransforms || op == Op::kApplyTransform ||
      (op == Op::kParameter && shared->parameter != "ntotal")) {
    return all(
        {0}, [](std::vector<ReadReply> r) -> StatusOr<ReadReply> { return std::move(r.front()); });
  }
  switch (op) {
    case Op::kReconstruct:
    case Op::kKeysOf: {
      auto split = std::make_shared<std::vector<ShardRead>>(SplitReadById(*shared, n));
      auto original = std::make_shared<ReadRequest>(*shared);
      std::vector<int> shards;
      for (const ShardRead& s : *split) shards.push_back(s.shard);
      EachShard<ReadReply>(
          map, shards,
          [split, one](const Target& t, Completion<ReadReply> d) {
            for (const ShardRead& s : *split) {
              if (s.shard == t.shard) return one(t, s.request, std::move(d));
            }
            d(Internal("no part of the read for " + t.collection));
          },
          [split, original, done = std::move(done)](auto results) {
            std::vector<ReadReply> replies;
            for (auto& [shard, r] : results) {
              if (!r.ok()) return done(r.status());
              replies.push_back(std::move(*r));
            }
            done(CombineReadById(*original, *split, std::move(replies)));
          });
      return;
    }
    case Op::kGetKeyed:
    case Op::kKeyTimestamp:
      return all({ShardOfRead(*shared, n)}, [](std::vector<ReadReply> r) -> StatusOr<ReadReply> {
        return std::move(r.front());
      });
    case Op::kCountKeyed:
      return all(
          {}, [](std::vector<ReadReply> r) -> StatusOr<ReadReply> { return CombineCountKeyed(r); });
    case Op::kListKeyed:
      return all({}, [count = shared->count](std::vector<ReadReply> r) {
        return MergeListKeyed(std::move(r), count);
      });
    case Op::kParameter:  // ntotal
      return all({}, [](std::vector<ReadReply> r) -> StatusOr<ReadReply> {
        ReadReply out = r.front();
        for (size_t i = 1; i < r.size(); ++i) out.value += r[i].value;
        return out;
      });
    case Op::kRange:
      return done(Unimplemented("reconstruct_n: index '" + shared->collection +
                                "' is sharded by id: positions are per shard; read by id"));
    default:
      return done(Unimplemented("this read of a sharded index is not supported"));
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

void ClusterCollectionService::PlacerLoop() {
  std::unique_lock lock(placer_mu_);
  while (!placer_cv_.wait_for(lock, options_.placer_period, [&] { return placer_stop_; })) {
    if (election_->fence() == 0) continue;
    lock.unlock();
    Place(members_->members());
    lock.lock();
  }
}

void ClusterCollectionService::Place(const std::map<std::string, AgentInfo>& live) {
  const int64_t fence = election_->fence();
  if (fence == 0 || !checking_.load()) return;
  auto statuses = etcd_.GetPrefix(options_.status_prefix);
  if (!statuses.ok()) return;
  std::map<std::string, ReplicaStatus> reported;
  for (const KeyValue& kv : statuses->kvs) {
    if (auto st = DecodeReplicaStatus(kv.value); st.ok()) reported[kv.key] = std::move(*st);
  }
  std::map<std::string, ShardMapStore::Read> maps;
  {
    std::lock_guard lock(mu_);
    maps = maps_;
  }
  for (const auto& [key, read] : maps) {
    CollectionMap m = read.map;
    std::vector<std::string> why;
    for (int i = 0; i < static_cast<int>(m.shards.size()); ++i) {
      ShardState& s = m.shards[i];
      const std::string shard = ShardName(m, i) + " (tenant '" + m.tenant + "')";
      // What the shard's primary in this epoch says of replica r (null: nothing yet).
      auto status_of = [&](const std::string& r) -> const ReplicaStatus* {
        auto it = reported.find(ReplicaStatusKey(options_.status_prefix, m.tenant, m.name, i, r));
        if (it == reported.end() || it->second.primary != s.primary ||
            it->second.epoch != s.epoch) {
          return nullptr;
        }
        return &it->second;
      };
      if (!live.count(s.primary)) {
        // Promotion: a live in-sync replica holds every acknowledged write.
        std::string next;
        for (const std::string& r : s.in_sync) {
          if (r != s.primary && live.count(r)) {
            next = r;
            break;
          }
        }
        if (next.empty()) continue;  // no live in-sync replica: unserved until one returns
        why.push_back(shard + ": primary '" + s.primary + "' is not live; '" + next +
                      "' promoted in epoch " + std::to_string(s.epoch + 1));
        std::erase_if(s.in_sync, [&](const std::string& r) { return !live.count(r); });
        s.primary = next;
        s.epoch += 1;
        continue;
      }
      std::vector<std::string> keep;
      for (const std::string& r : s.in_sync) {
        const ReplicaStatus* st = status_of(r);
        if (r == s.primary) {
          keep.push_back(r);
        } else if (!live.count(r)) {
          why.push_back(shard + ": replica '" + r + "' is not live: out of the in-sync set");
        } else if (st && st->state == "lagging") {
          why.push_back(shard + ": replica '" + r + "' is lagging (record " +
                        std::to_string(st->acked) + " of " + std::to_string(st->last) +
                        "): out of the in-sync set");
        } else {
          keep.push_back(r);
        }
      }
      for (const std::string& r : s.replicas) {
        const ReplicaStatus* st = status_of(r);
        if (std::find(keep.begin(), keep.end(), r) == keep.end() && live.count(r) && st &&
            st->state == "in-sync") {
          why.push_back(shard + ": replica '" + r + "' caught up (record " +
                        std::to_string(st->acked) + "): back in the in-sync set");
          keep.push_back(r);
        }
      }
      s.in_sync = std::move(keep);
    }
    if (why.empty()) continue;
    auto updated = store_.Update(m, read.mod_revision, election_->key(), fence);
    if (!updated.ok()) continue;  // changed meanwhile, or no longer the placer: next round
    {
      std::lock_guard lock(mu_);
      maps_[key] = {m, *updated};
    }
    if (options_.log) {
      for (const std::string& line : why) options_.log("placer: " + line);
    }
  }
}

}  // namespace vecgpu::cluster
