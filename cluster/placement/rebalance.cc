#include "cluster/placement/rebalance.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "cluster/placement/rendezvous.h"

namespace vecgpu::cluster {
namespace {

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

bool Settled(const ShardState& shard) {
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
  std::map<std::string, int64_t> room;  // free bytes left, where known
  for (const AgentRoom& a : in.agents) {
    if (a.free_bytes > 0) room[a.id] = a.free_bytes;
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
      Entry e{{m.tenant, m.name, i}, {}, 0, Settled(s)};
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
  auto fits = [&](const std::string& to, int64_t bytes) {
    auto r = room.find(to);
    return r == room.end() || r->second > bytes;
  };
  auto move = [&](size_t i, const std::string& from, const std::string& to, const char* why) {
    Entry& e = shards[i];
    if (auto r = room.find(to); r != room.end()) r->second -= e.bytes;
    if (auto r = room.find(from); r != room.end()) r->second += e.bytes;
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
      std::vector<std::string> open;
      for (const std::string& id : eligible) {
        if (fits(id, shards[i].bytes)) open.push_back(id);
      }
      const std::string to = PickTarget(shards[i].ref, open, shards[i].holders);
      if (!to.empty()) move(i, r, to, "drain");
      break;  // one move per shard at a time
    }
  }
  // Then, while the spread is beyond the tolerance: between the heaviest and the lightest
  // agent first, then the next pairs by gap, the move that narrows the pair's gap most (the
  // shard whose size is closest to half the gap), else the swap that does (a larger shard
  // of the heavier for a smaller one of the lighter). Every such step lowers the sum of the
  // squared loads, and a shard moves once per plan, so this ends.
  // A step between `heavy` and `light`, if one narrows their gap; false when none does.
  auto step = [&](const std::string& heavy, const std::string& light) {
    const int64_t gap = loads[heavy] - loads[light];
    if (gap <= 0) return false;
    auto can = [&](size_t i, const std::string& from, const std::string& to) {
      const Entry& e = shards[i];
      return e.movable && !moved.count(i) && e.holders.count(from) && !e.holders.count(to);
    };
    size_t best = shards.size();
    double best_distance = 0;
    for (size_t i = 0; i < shards.size(); ++i) {
      if (!can(i, heavy, light) || shards[i].bytes >= gap || !fits(light, shards[i].bytes)) {
        continue;
      }
      const double distance =
          std::fabs(static_cast<double>(gap) / 2 - static_cast<double>(shards[i].bytes));
      if (best == shards.size() || distance < best_distance) {
        best = i;
        best_distance = distance;
      }
    }
    if (best != shards.size()) {
      move(best, heavy, light, "balance");
      return true;
    }
    size_t give = shards.size(), take = shards.size();
    int64_t best_gap = gap;
    for (size_t i = 0; i < shards.size(); ++i) {
      if (!can(i, heavy, light)) continue;
      for (size_t j = 0; j < shards.size(); ++j) {
        if (!can(j, light, heavy) || shards[j].bytes >= shards[i].bytes ||
            !fits(light, shards[i].bytes - shards[j].bytes)) {
          continue;
        }
        const int64_t d = shards[i].bytes - shards[j].bytes;
        const int64_t after = std::llabs(gap - 2 * d);
        if (after < best_gap) {
          best_gap = after;
          give = i;
          take = j;
        }
      }
    }
    if (give == shards.size() || (in.max_moves > 0 && plan.moves.size() + 2 > in.max_moves)) {
      return false;
    }
    move(give, heavy, light, "balance");
    move(take, light, heavy, "balance");
    return true;
  };
  if (in.tolerance > 0 && eligible.size() >= 2) {
    while (!full()) {
      std::vector<std::pair<int64_t, std::string>> order;  // lightest first
      double total = 0;
      for (const auto& [id, l] : loads) {
        order.push_back({l, id});
        total += static_cast<double>(l);
      }
      std::sort(order.begin(), order.end());
      const double mean = total / static_cast<double>(order.size());
      if (static_cast<double>(order.back().first - order.front().first) <= in.tolerance * mean) {
        break;
      }
      // Pairs by gap, widest first.
      std::vector<std::tuple<int64_t, std::string, std::string>> pairs;
      for (size_t a = 0; a < order.size(); ++a) {
        for (size_t b = a + 1; b < order.size(); ++b) {
          pairs.push_back({order[b].first - order[a].first, order[b].second, order[a].second});
        }
      }
      std::stable_sort(pairs.begin(), pairs.end(),
                       [](const auto& x, const auto& y) { return std::get<0>(x) > std::get<0>(y); });
      bool stepped = false;
      for (const auto& [gap, heavy, light] : pairs) {
        if (gap <= 0) break;
        if ((stepped = step(heavy, light))) break;
      }
      if (!stepped) break;
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
