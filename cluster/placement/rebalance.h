#pragma once

// Where replicas should move (issue [3/5], item 2): off draining agents, and from the agents
// holding the most data to those holding the least, until the spread is within a tolerance.
// A pure function of the maps, the agents and the shards' sizes, so that the placer and
// `vecgpu cluster rebalance --dry-run` compute the same plan, and tests can check it.
//
// A move adds the new replica first, lets it catch up, and only then drops the old one: a
// shard never has fewer than R copies because of a move. Shards with a change in progress (a
// move, a handover, a replica being built, fewer than R in sync) are left alone.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cluster/placement/shard_map.h"

namespace vecgpu::cluster {

struct ShardRef {
  std::string tenant, name;
  int shard = 0;
  auto operator<=>(const ShardRef&) const = default;
};

struct AgentRoom {
  std::string id;
  bool draining = false;  // everything moves off it, nothing new goes to it
  // Memory it has free (0: not known, no limit): a replica larger than what is left after
  // the plan's earlier moves does not go there.
  int64_t free_bytes = 0;
};

struct Move {
  ShardRef shard;
  std::string from;  // the replica leaving
  std::string to;    // the replica taking its place
  int64_t bytes = 0;
  std::string why;   // "drain" or "balance"
};

struct RebalanceInput {
  std::vector<CollectionMap> maps;
  std::vector<AgentRoom> agents;      // the live ones that can hold replicas
  std::map<ShardRef, int64_t> bytes;  // a shard's size (unknown: kUnitBytes)
  double tolerance = 0.2;             // (max - min) / mean allowed; 0: no balancing moves
  size_t max_moves = 0;               // 0: as many as it takes
};

struct RebalancePlan {
  std::vector<Move> moves;
  // Bytes per agent (non-draining live ones), now and once the moves are done.
  std::map<std::string, int64_t> before, after;
  double spread_before = 0, spread_after = 0;  // (max - min) / mean
};

// The least a shard counts for: an empty collection still costs an agent something.
inline constexpr int64_t kUnitBytes = int64_t{1} << 20;

// A shard is settled when nothing is in progress on it: every replica in sync, no move, no
// handover.
bool Settled(const ShardState& shard);

RebalancePlan PlanRebalance(const RebalanceInput& input);

// Where a new replica of `shard` goes: the rendezvous order of `candidates` for it, skipping
// `exclude`; "" when none is left.
std::string PickTarget(const ShardRef& shard, const std::vector<std::string>& candidates,
                       const std::set<std::string>& exclude);

// (max - min) / mean of `loads` (0 when empty or all zero).
double Spread(const std::map<std::string, int64_t>& loads);

// Draining agents (`vecgpu cluster drain AGENT`): a key `<prefix><agent id, escaped>` each,
// whose value is the agent's id.
inline constexpr const char* kDrainPrefix = "/vecgpu/drain/";
std::string DrainKey(const std::string& agent, const std::string& prefix = kDrainPrefix);
// The draining agents' ids, read from etcd now (none when etcd cannot be read).
std::set<std::string> Draining(EtcdClient& etcd, const std::string& prefix = kDrainPrefix);

}  // namespace vecgpu::cluster
