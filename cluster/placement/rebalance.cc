#include "cluster/placement/rebalance.h"

#include <algorithm>
#include <cmath>

#include "cluster/placement/rendezvous.h"

namespace vecgpu::cluster {
namespace {

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

bool Settled(const CollectionMap& map, const ShardState& shard) {
  (void)map;
  if (!shard.leaving.empty() || !shard.handover.empty()) return false;
  if (shard.in_sync.size() != shard.replicas.size()) return false;
  for (const std::string& r : shard.replicas) {
    if (!Contains(shard.in_sync, r)) return false;
  }
  return true;
}

std::string PickTarget(const ShardRef& shard, const std::vector<std::string>& candidates,
                       const std::set<std::string>& exclude) {
  std::vector<Candidate> c;
  for (const std::string& id : candidates) c.push_back({id, 1.0});
  const std::string key = shard.tenant + "/" + shard.name + "/" + std::to_string(shard.shard);
  for (const std::string& id : Rendezvous(key, c, static_cast<int>(c.size()))) {
    if (!exclude.count(id)) return id;
  }
  return "";
}

double Spread(const std::map<std::string, int64_t>& loads) {
  if (loads.empty()) return 0;
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  double total = 0;
  for (const auto& [id, l] : loads) {
    lo = std::min(lo, l);
    hi = std::max(hi, l);
    total += static_cast<double>(l);
  }
  const double mean = total / static_cast<double>(loads.size());
  return mean > 0 ? static_cast<double>(hi - lo) / mean : 0;
}

RebalancePlan PlanRebalance(const RebalanceInput& in) {
  RebalancePlan plan;
  std::set<std::string> draining;
  std::vector<std::string> eligible;
  for (const AgentRoom& a : in.agents) {
    if (a.draining) {
      draining.insert(a.id);
    } else {
      eligible.push_back(a.id);
      plan.before[a.id] = 0;
    }
  }
  std::sort(eligible.begin(), eligible.end());
  auto size_of = [&](const ShardRef& ref) {
    auto it = in.bytes.find(ref);
    return std::max(kUnitBytes, it == in.bytes.end() ? kUnitBytes : it->second);
  };
  // Each shard's holders once the moves in progress are done, and which shards may move.
  struct Entry {
    ShardRef ref;
    std::set<std::string> holders;
    int64_t bytes = 0;
    bool movable = false;
  };
  std::vector<Entry> shards;
  for (const CollectionMap& m : in.maps) {
    for (int i = 0; i < static_cast<int>(m.shards.size()); ++i) {
      const ShardState& s = m.shards[i];
      Entry e{{m.tenant, m.name, i}, {}, 0, Settled(m, s)};
      e.bytes = size_of(e.ref);
      for (const std::string& r : s.replicas) {
        if (r != s.leaving) e.holders.insert(r);
      }
      for (const std::string& r : e.holders) {
        if (plan.before.count(r)) plan.before[r] += e.bytes;
      }
      shards.push_back(std::move(e));
    }
  }
  std::map<std::string, int64_t> loads = plan.before;
  auto full = [&] { return in.max_moves > 0 && plan.moves.size() >= in.max_moves; };
  std::set<size_t> moved;
  auto move = [&](size_t i, const std::string& from, const std::string& to, const char* why) {
    Entry& e = shards[i];
    plan.moves.push_back({e.ref, from, to, e.bytes, why});
    e.holders.erase(from);
    e.holders.insert(to);
    if (loads.count(from)) loads[from] -= e.bytes;
    loads[to] += e.bytes;
    moved.insert(i);
  };
  // Off draining agents first: to the rendezvous choice among the others.
  for (size_t i = 0; i < shards.size() && !full(); ++i) {
    if (!shards[i].movable) continue;
    for (const std::string& r : std::set<std::string>(shards[i].holders)) {
      if (!draining.count(r)) continue;
      const std::string to = PickTarget(shards[i].ref, eligible, shards[i].holders);
      if (!to.empty()) move(i, r, to, "drain");
      break;  // one move per shard at a time
    }
  }
  // Then from the heaviest agent to the lightest, while the spread is beyond the tolerance
  // and a move narrows it.
  if (in.tolerance > 0 && eligible.size() >= 2) {
    while (!full()) {
      auto [lo, hi] = std::minmax_element(loads.begin(), loads.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second < b.second : a.first < b.first;
      });
      const int64_t gap = hi->second - lo->second;
      double total = 0;
      for (const auto& [id, l] : loads) total += static_cast<double>(l);
      const double mean = total / static_cast<double>(loads.size());
      if (static_cast<double>(gap) <= in.tolerance * mean) break;
      // The shard of the heaviest that the lightest lacks whose size is closest to half the
      // gap (moving it narrows the gap most), if moving it narrows the gap at all.
      size_t best = shards.size();
      double best_distance = 0;
      for (size_t i = 0; i < shards.size(); ++i) {
        const Entry& e = shards[i];
        if (!e.movable || moved.count(i) || !e.holders.count(hi->first) ||
            e.holders.count(lo->first) || e.bytes >= gap) {
          continue;
        }
        const double distance = std::fabs(static_cast<double>(gap) / 2 - static_cast<double>(e.bytes));
        if (best == shards.size() || distance < best_distance) {
          best = i;
          best_distance = distance;
        }
      }
      if (best == shards.size()) break;
      move(best, hi->first, lo->first, "balance");
    }
  }
  plan.after = loads;
  plan.spread_before = Spread(plan.before);
  plan.spread_after = Spread(plan.after);
  return plan;
}

std::string DrainKey(const std::string& agent, const std::string& prefix) {
  return prefix + EscapeKeyPart(agent);
}

std::set<std::string> Draining(EtcdClient& etcd, const std::string& prefix) {
  std::set<std::string> out;
  auto kvs = etcd.GetPrefix(prefix);
  if (!kvs.ok()) return out;
  for (const KeyValue& kv : kvs->kvs) out.insert(kv.value);
  return out;
}

}  // namespace vecgpu::cluster
