// The placer (the gateway holding the placer election): promotes a live in-sync replica of a
// shard whose primary is gone, keeps in-sync sets true, builds new replicas for shards below
// R, moves replicas off draining agents and towards an even spread, each change fenced in
// etcd (issue [2/5], items 4-5; issue [3/5], items 1-2).
#include <algorithm>
#include <optional>
#include <set>

#include "cluster/gateway/cluster_service.h"
#include "cluster/gateway/gateway_internal.h"
#include "cluster/gateway/shard_merge.h"
#include "cluster/placement/rebalance.h"
#include "cluster/replication/replica_status.h"
#include "core/index_spec.h"

namespace vecgpu::cluster {
namespace {

using SteadyClock = std::chrono::steady_clock;

bool Has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string Mib(int64_t bytes) { return std::to_string((bytes + (1 << 19)) >> 20) + " MiB"; }

}  // namespace

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
  const std::set<std::string> draining = Draining(etcd_, options_.drain_prefix);
  std::map<std::string, ShardMapStore::Read> maps;
  {
    std::lock_guard lock(mu_);
    maps = maps_;
  }
  const auto now = SteadyClock::now();
  // Replicas being built (live, not in sync yet): each costs its primary (the source) and
  // itself a copy slot.
  std::map<std::string, int> copies;
  for (const auto& [key, read] : maps) {
    for (const ShardState& s : read.map.shards) {
      for (const std::string& r : s.replicas) {
        if (live.count(r) && !Has(s.in_sync, r)) {
          ++copies[r];
          ++copies[s.primary];
        }
      }
    }
  }
  auto room = [&](const std::string& id) { return copies[id] < options_.max_copies; };
  std::vector<std::string> targets;  // where new replicas may go
  for (const auto& [id, info] : live) {
    if (!draining.count(id)) targets.push_back(id);
  }
  std::set<std::string> shards_seen;
  for (const auto& [key, read] : maps) {
    CollectionMap m = read.map;
    std::vector<std::string> why;
    for (int i = 0; i < static_cast<int>(m.shards.size()); ++i) {
      ShardState& s = m.shards[i];
      const std::string shard = ShardName(m, i) + " (tenant '" + m.tenant + "')";
      const std::string id = key + "#" + std::to_string(i);
      shards_seen.insert(id);
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
        s.handover.clear();
        handover_since_.erase(id);
        continue;
      }
      // A handover (a move of the primary): done once the primary says the new one holds
      // every write it admitted; given up when that one is gone or it takes too long.
      if (!s.handover.empty()) {
        const ReplicaStatus* st = status_of(s.handover);
        auto since = handover_since_.emplace(id, now).first->second;
        if (st && st->state == "handed-over" && live.count(s.handover)) {
          why.push_back(shard + ": primary handed over from '" + s.primary + "' to '" +
                        s.handover + "' in epoch " + std::to_string(s.epoch + 1));
          s.primary = s.handover;
          s.epoch += 1;
          s.handover.clear();
          handover_since_.erase(id);
          continue;
        }
        if (!live.count(s.handover) || !Has(s.in_sync, s.handover) ||
            now - since > options_.handover_timeout) {
          why.push_back(shard + ": handover from '" + s.primary + "' to '" + s.handover +
                        "' given up");
          s.handover.clear();
          handover_since_.erase(id);
        }
      } else {
        handover_since_.erase(id);
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
        if (!Has(keep, r) && live.count(r) && st &&
            (st->state == "in-sync" || st->state == "handed-over")) {
          why.push_back(shard + ": replica '" + r + "' caught up (record " +
                        std::to_string(st->acked) + "): back in the in-sync set");
          keep.push_back(r);
        }
      }
      s.in_sync = std::move(keep);
      if (!s.handover.empty() && !Has(s.in_sync, s.handover)) {
        why.push_back(shard + ": handover to '" + s.handover + "' given up: it is not in sync");
        s.handover.clear();
      }
      auto good = [&](bool count_leaving) {
        int n = 0;
        for (const std::string& r : s.in_sync) {
          if (live.count(r) && (count_leaving || r != s.leaving)) ++n;
        }
        return n;
      };
      // A move: once R others are in sync, the leaving replica goes (the primary hands the
      // shard over first when it is the one leaving).
      if (!s.leaving.empty() && good(false) >= m.replication) {
        if (s.leaving == s.primary) {
          if (s.handover.empty()) {
            for (const std::string& r : s.in_sync) {
              if (r != s.primary && live.count(r)) {
                s.handover = r;
                handover_since_[id] = now;
                why.push_back(shard + ": primary '" + s.primary + "' is moving off: handing " +
                              "the shard over to '" + r + "'");
                break;
              }
            }
          }
        } else {
          why.push_back(shard + ": replica '" + s.leaving + "' moved off (" +
                        std::to_string(good(false)) + " in sync without it): dropped");
          std::erase(s.replicas, s.leaving);
          std::erase(s.in_sync, s.leaving);
          s.leaving.clear();
        }
      }
      // Entries of agents that are gone, once R live replicas are in sync without them.
      if (good(true) >= m.replication) {
        for (const std::string& r : std::vector<std::string>(s.replicas)) {
          if (live.count(r) || r == s.primary) continue;
          why.push_back(shard + ": replica '" + r + "' (agent not live) dropped: " +
                        std::to_string(good(true)) + " live replicas in sync without it");
          std::erase(s.replicas, r);
          std::erase(s.in_sync, r);
          if (s.leaving == r) s.leaving.clear();
        }
      }
      // Re-replication: below R for long enough, a new replica on another live agent.
      if (good(true) < m.replication) {
        const auto since = degraded_since_.emplace(id, now).first->second;
        int building = 0;
        for (const std::string& r : s.replicas) {
          if (live.count(r) && !Has(s.in_sync, r)) ++building;
        }
        if (now - since >= options_.rereplicate_after &&
            good(true) + building < m.replication && room(s.primary)) {
          std::set<std::string> exclude(s.replicas.begin(), s.replicas.end());
          // Agents with a copy slot and the memory for the shard (as its primaries said).
          const int64_t bytes =
              ReportedShardBytes(reported, options_.status_prefix, m.tenant, m.name, i);
          std::vector<std::string> open;
          for (const std::string& t : targets) {
            const int64_t free = live.at(t).free_memory_bytes;
            if (room(t) && (bytes <= 0 || free <= 0 || free > bytes)) open.push_back(t);
          }
          const std::string to = PickTarget({m.tenant, m.name, i}, open, exclude);
          if (!to.empty()) {
            why.push_back(shard + ": " + std::to_string(good(true)) + " of " +
                          std::to_string(m.replication) + " replicas in sync for " +
                          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                             now - since)
                                             .count()) +
                          " s: re-replicating to '" + to + "' (copied from '" + s.primary + "')");
            s.replicas.push_back(to);
            ++copies[to];
            ++copies[s.primary];
          }
        }
      } else {
        degraded_since_.erase(id);
      }
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
  std::erase_if(degraded_since_, [&](const auto& kv) { return !shards_seen.count(kv.first); });
  std::erase_if(handover_since_, [&](const auto& kv) { return !shards_seen.count(kv.first); });
  if ((options_.rebalance_tolerance > 0 || !draining.empty()) &&
      now - rebalanced_at_ >= options_.rebalance_period) {
    rebalanced_at_ = now;
    Rebalance(live, draining, reported, copies);
  }
}

void ClusterCollectionService::Rebalance(const std::map<std::string, AgentInfo>& live,
                                         const std::set<std::string>& draining,
                                         const std::map<std::string, ReplicaStatus>& reported,
                                         std::map<std::string, int>& copies) {
  const int64_t fence = election_->fence();
  std::map<std::string, ShardMapStore::Read> maps;
  {
    std::lock_guard lock(mu_);
    maps = maps_;
  }
  RebalanceInput in;
  for (const auto& [id, info] : live) {
    in.agents.push_back({id, draining.count(id) > 0, info.free_memory_bytes});
  }
  in.tolerance = options_.rebalance_tolerance;
  std::map<ShardRef, std::string> key_of;
  for (const auto& [key, read] : maps) {
    const CollectionMap& m = read.map;
    in.maps.push_back(m);
    for (int i = 0; i < static_cast<int>(m.shards.size()); ++i) {
      key_of[{m.tenant, m.name, i}] = key;
      // What its primaries said of its size.
      const int64_t bytes = ReportedShardBytes(reported, options_.status_prefix, m.tenant, m.name, i);
      if (bytes >= 0) in.bytes[{m.tenant, m.name, i}] = bytes;
    }
  }
  const RebalancePlan plan = PlanRebalance(in);
  // The moves the copy limits allow now, grouped by map: the others wait for a later plan.
  std::map<std::string, std::vector<const Move*>> started;
  for (const Move& mv : plan.moves) {
    const CollectionMap* m = nullptr;
    for (const CollectionMap& c : in.maps) {
      if (c.tenant == mv.shard.tenant && c.name == mv.shard.name) m = &c;
    }
    if (!m) continue;
    const std::string& primary = m->shards[mv.shard.shard].primary;
    if (copies[primary] >= options_.max_copies || copies[mv.to] >= options_.max_copies) continue;
    ++copies[primary];
    ++copies[mv.to];
    started[key_of[mv.shard]].push_back(&mv);
  }
  for (const auto& [key, moves] : started) {
    const ShardMapStore::Read& read = maps[key];
    CollectionMap m = read.map;
    std::vector<std::string> why;
    for (const Move* mv : moves) {
      ShardState& s = m.shards[mv->shard.shard];
      if (Has(s.replicas, mv->to) || !Has(s.replicas, mv->from)) continue;
      s.replicas.push_back(mv->to);
      s.leaving = mv->from;
      why.push_back(ShardName(m, mv->shard.shard) + " (tenant '" + m.tenant + "'): moving from '" +
                    mv->from + "' to '" + mv->to + "' (" + mv->why + ", " + Mib(mv->bytes) +
                    "; spread " + std::to_string(plan.spread_before).substr(0, 4) + " -> " +
                    std::to_string(plan.spread_after).substr(0, 4) + ")");
    }
    if (why.empty()) continue;
    auto updated = store_.Update(m, read.mod_revision, election_->key(), fence);
    if (!updated.ok()) continue;
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
