#include "cluster/gateway/cluster_service.h"

#include <algorithm>
#include <set>

namespace vecgpu::cluster {
namespace {

Status NoSuchIndex(const std::string& name) { return NotFound("index '" + name + "' not found"); }

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
}

ClusterCollectionService::~ClusterCollectionService() {
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
      const std::string& primary = read.map.shards[i].primary;
      if (!members.count(primary)) {
        out.push_back(read.map.tenant + "/" + read.map.name + "#" + std::to_string(i) +
                      ": agent " + primary + " is down");
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
  std::lock_guard lock(check_mu_);
  for (const std::string& s : fresh) {
    if (!unserved_.count(s)) options_.log("shard unserved: " + s);
  }
  for (const std::string& s : unserved_) {
    if (!fresh.count(s)) options_.log("shard served again: " + s.substr(0, s.find(':')));
  }
  unserved_ = std::move(fresh);
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

StatusOr<ClusterCollectionService::Route> ClusterCollectionService::RouteOf(
    const std::string& tenant, const std::string& name) {
  const std::string key = store_.KeyOf(tenant, name);
  std::optional<ShardMapStore::Read> map;
  {
    std::lock_guard lock(mu_);
    if (auto it = maps_.find(key); it != maps_.end()) map = it->second;
  }
  if (!map) {  // created by another gateway a moment ago, or not at all
    auto read = store_.Get(tenant, name);
    if (!read.ok()) {
      return read.status().code() == StatusCode::kNotFound ? NoSuchIndex(name) : read.status();
    }
    map = std::move(*read);
  }
  ASSIGN_OR_RETURN(auto agent, AgentById(map->map.shards.at(0).primary));
  return Route{std::move(agent), std::move(*map)};
}

StatusOr<std::vector<std::shared_ptr<RemoteCollectionService>>>
ClusterCollectionService::AgentsOf(const std::string& tenant) {
  std::set<std::string> ids;
  if (tenant.empty()) {
    for (const auto& [id, info] : members_->members()) ids.insert(id);
  } else {
    // From etcd now, not the mirror: a list right after a create must see it.
    int64_t revision = 0;
    for (const auto& read : store_.List(&revision, nullptr, tenant)) {
      ids.insert(read.map.shards.at(0).primary);
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
  CollectionMap map;
  if (!base.empty()) {
    // A view shares its base's storage: it lives where its base does.
    auto route = RouteOf(tenant, base);
    if (!route.ok()) return done(route.status());
    map = route->map.map;
    map.name = request.name;
  } else {
    std::vector<Candidate> agents;
    for (const auto& [id, info] : members_->members()) {
      agents.push_back({id, std::max(0.1, info.free_memory_bytes / double(1 << 30))});
    }
    auto placed = FirstPlacement(tenant, request.name, 1, options_.replicas, agents);
    if (!placed.ok()) return done(Unavailable(placed.status().message()));
    map = std::move(*placed);
  }
  // The map first (create-if-absent: two gateways agree on one), then the collection on its
  // agent. A map left without its collection (a crash in between) is completed by the next
  // create of the name.
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
  auto agent = AgentById(map.shards.at(0).primary);
  if (!agent.ok()) return done(agent.status());
  (*agent)->Create(call, std::move(request),
                   [this, done = std::move(done), created_at, tenant,
                    name = map.name](StatusOr<CollectionInfo> r) {
                     if (!r.ok() && created_at != 0 &&
                         r.status().code() != StatusCode::kAlreadyExists) {
                       // Refused: the map this call wrote goes with it.
                       if (store_.Delete(tenant, name, created_at, "", 0).ok()) {
                         std::lock_guard lock(mu_);
                         maps_.erase(store_.KeyOf(tenant, name));
                       }
                     }
                     done(std::move(r));
                   });
}

void ClusterCollectionService::Drop(const CallContext& call, std::string collection,
                                    Completion<Empty> done) {
  auto route = RouteOf(call.tenant, collection);
  if (!route.ok()) return done(route.status());
  const std::string tenant = call.tenant;
  const int64_t revision = route->map.mod_revision;
  route->agent->Drop(call, collection,
                     [this, done = std::move(done), tenant, collection,
                      revision](StatusOr<Empty> r) {
                       if (r.ok() || r.status().code() == StatusCode::kNotFound) {
                         // The map goes once its collection has (or never was).
                         Status st = store_.Delete(tenant, collection, revision, "", 0);
                         if (st.ok()) {
                           std::lock_guard lock(mu_);
                           maps_.erase(store_.KeyOf(tenant, collection));
                         }
                         if (!r.ok() && st.ok()) return done(NoSuchIndex(collection));
                       }
                       done(std::move(r));
                     });
}

void ClusterCollectionService::List(const CallContext& call,
                                    Completion<std::vector<CollectionInfo>> done) {
  auto agents = AgentsOf(call.tenant);
  if (!agents.ok()) return done(agents.status());
  FanOut<std::vector<CollectionInfo>, std::vector<CollectionInfo>>(
      *agents,
      [call](RemoteCollectionService& a, Completion<std::vector<CollectionInfo>> d) {
        a.List(call, std::move(d));
      },
      [](std::vector<CollectionInfo>& all, std::vector<CollectionInfo>& some) {
        for (auto& i : some) all.push_back(std::move(i));
        std::sort(all.begin(), all.end(),
                  [](const CollectionInfo& a, const CollectionInfo& b) { return a.name < b.name; });
      },
      std::move(done));
}

void ClusterCollectionService::Describe(const CallContext& call, std::string collection,
                                        Completion<CollectionInfo> done) {
  auto route = RouteOf(call.tenant, collection);
  if (!route.ok()) return done(route.status());
  route->agent->Describe(call, std::move(collection), std::move(done));
}

void ClusterCollectionService::Search(const CallContext& call, SearchRequest request,
                                      Completion<SearchReply> done) {
  if (request.kind != SearchRequest::Kind::kKnn) {
    auto route = RouteOf(call.tenant, request.collection);
    if (!route.ok()) return done(route.status());
    search_requests_.fetch_add(1);
    searches_sent_.fetch_add(1);
    return route->agent->Search(call, std::move(request), std::move(done));
  }
  // One lane per (tenant, collection, k, parameters, keys): while a search of the lane is in
  // flight, the next ones wait to go together.
  const SearchParams& p = request.params;
  const std::string lane = call.tenant + '\0' + request.collection + '\0' +
                           std::to_string(request.k) + '/' + std::to_string(p.nprobe.value_or(-1)) +
                           '/' + std::to_string(p.ef_search.value_or(-1)) + '/' +
                           (request.with_keys ? "k" : "") + '/' +
                           std::to_string(request.queries.cols);
  {
    std::lock_guard lock(lanes_mu_);
    auto it = lanes_.find(lane);
    if (it != lanes_.end()) {
      it->second.queued.push_back({call, std::move(request), std::move(done)});
      return;
    }
    lanes_[lane];  // in flight from now
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
      if (more.empty()) lanes_.erase(it);  // nothing waits: the lane closes
    }
    if (!more.empty()) SendBatch(lane, std::move(more));
  };
  if (batch.empty()) return next();
  const PendingSearch& first = batch.front();
  auto route = RouteOf(first.call.tenant, first.request.collection);
  if (!route.ok()) {
    for (auto& p : batch) p.done(route.status());
    return next();
  }
  // One request of every query, with the latest deadline of the batch (each answer is
  // checked against its own).
  SearchRequest merged;
  merged.collection = first.request.collection;
  merged.k = first.request.k;
  merged.params = first.request.params;
  merged.with_keys = first.request.with_keys;
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
  route->agent->Search(
      call, std::move(merged),
      [shared, rows = std::move(rows), next](StatusOr<SearchReply> r) {
        int64_t total = 0;
        for (int64_t n : rows) total += n;
        if (r.ok() && (r->knn.nq != total ||
                       static_cast<int64_t>(r->knn.labels.size()) != total * r->knn.k ||
                       (!r->keys.empty() && r->keys.size() != r->knn.labels.size()))) {
          r = Internal("agent answered a search of " + std::to_string(total) +
                       " queries with " + std::to_string(r->knn.nq));
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
          row += rows[i];
          p.done(std::move(one));
        }
        next();
      });
}

void ClusterCollectionService::Write(const CallContext& call, WriteRequest request,
                                     Completion<WriteReply> done) {
  auto route = RouteOf(call.tenant, request.collection);
  if (!route.ok()) return done(route.status());
  route->agent->Write(call, std::move(request), std::move(done));
}

void ClusterCollectionService::Read(const CallContext& call, ReadRequest request,
                                    Completion<ReadReply> done) {
  auto route = RouteOf(call.tenant, request.collection);
  if (!route.ok()) return done(route.status());
  route->agent->Read(call, std::move(request), std::move(done));
}

void ClusterCollectionService::Maintain(const CallContext& call, MaintainRequest request,
                                        Completion<MaintainReply> done) {
  auto route = RouteOf(call.tenant, request.collection);
  if (!route.ok()) return done(route.status());
  route->agent->Maintain(call, std::move(request), std::move(done));
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
