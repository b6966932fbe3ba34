#pragma once

// What the gateway's sources (cluster/gateway/*.cc) share and nothing else includes: naming,
// limits, and the templates that reach shards (fan-out to agents, each shard's reader, each
// part to its shard's primary).

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cluster/gateway/cluster_service.h"

namespace vecgpu::cluster {

inline Status NoSuchIndex(const std::string& name) {
  return NotFound("index '" + name + "' not found");
}

inline std::string ShardName(const CollectionMap& map, int shard) {
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

inline void AddUse(TenantUsageReport& into, const TenantUsageReport& from) {
  into.tenant = from.tenant;
  into.use.collections += from.use.collections;
  into.use.vectors += from.use.vectors;
  into.use.bytes += from.use.bytes;
  into.use.inflight += from.use.inflight;
  into.quota = from.quota;  // the same auth file everywhere
}

// An agent's refusal that says the write was routed by a map it does not share: nothing was
// applied, and a fresh map may route it right.
inline bool Misrouted(const Status& st) {
  return st.code() == StatusCode::kAborted || st.code() == StatusCode::kFailedPrecondition ||
         (st.code() == StatusCode::kUnavailable &&
          st.message().find("has not seen epoch") != std::string::npos);
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
    // Another replica could answer: this try gets a deadline of its own.
    if (ReaderOf(*m, shard, {first->id}).ok()) {
      first->try_deadline = std::chrono::steady_clock::now() + options_.read_try;
    }
    auto counted = [this](const std::string& id, int delta) {
      std::lock_guard lock(inflight_mu_);
      inflight_[id] += delta;
    };
    counted(first->id, 1);
    call(*first, [this, m, shard, call, finish, counted, id = first->id,
                  try_deadline = first->try_deadline](StatusOr<R> r) {
      counted(id, -1);
      // Unreachable, or silent past this try's deadline (not an answer): once more on another
      // in-sync replica, and this one is asked last for a while.
      const bool silent = !r.ok() && r.status().code() == StatusCode::kDeadlineExceeded &&
                          std::chrono::steady_clock::now() >= try_deadline;
      // No copy there: this gateway's map is behind one that moved the replica away (etcd's
      // watch lags while a member is lost); another in-sync replica may hold it.
      const bool moved = !r.ok() && r.status().code() == StatusCode::kNotFound;
      if (r.ok() || (r.status().code() != StatusCode::kUnavailable && !silent && !moved) ||
          stopping_.load()) {
        return finish(shard, std::move(r));
      }
      if (!moved) {
        std::lock_guard lock(inflight_mu_);
        suspect_[id] = std::chrono::steady_clock::now() + options_.suspect_for;
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

}  // namespace vecgpu::cluster
