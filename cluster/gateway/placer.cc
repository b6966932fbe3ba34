// The placer (the gateway holding the placer election): promotes a live in-sync replica of a
// shard whose primary is gone, and keeps in-sync sets true, each change fenced in etcd.
#include <algorithm>
#include <optional>
#include <set>

#include "cluster/gateway/cluster_service.h"
#include "cluster/gateway/gateway_internal.h"
#include "cluster/gateway/shard_merge.h"
#include "cluster/replication/replica_status.h"
#include "core/index_spec.h"

namespace vecgpu::cluster {

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
