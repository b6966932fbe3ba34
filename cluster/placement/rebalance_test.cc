// The rebalancing plan: drains empty an agent without ever leaving a shard below R, balancing
// brings a new agent its share, unsettled shards are left alone, and the plan is deterministic.
#include "cluster/placement/rebalance.h"

#include <gtest/gtest.h>

#include <set>

namespace vecgpu::cluster {
namespace {

// `n` collections of one shard, R replicas each, on `agents` round robin; all in sync.
std::vector<CollectionMap> Maps(int n, int r, const std::vector<std::string>& agents) {
  std::vector<CollectionMap> maps;
  for (int c = 0; c < n; ++c) {
    CollectionMap m;
    m.tenant = "t";
    m.name = "c" + std::to_string(c);
    m.replication = r;
    ShardState s;
    for (int k = 0; k < r; ++k) s.replicas.push_back(agents[(c + k) % agents.size()]);
    s.primary = s.replicas.front();
    s.in_sync = s.replicas;
    m.shards.push_back(s);
    maps.push_back(m);
  }
  return maps;
}

std::vector<AgentRoom> Rooms(const std::vector<std::string>& ids, const std::string& draining = "") {
  std::vector<AgentRoom> out;
  for (const auto& id : ids) out.push_back({id, id == draining});
  return out;
}

TEST(RebalanceTest, ANewAgentGetsItsShareAndNoMoveDoublesAReplica) {
  RebalanceInput in;
  in.maps = Maps(6, 1, {"a", "b"});
  in.agents = Rooms({"a", "b", "c"});
  auto plan = PlanRebalance(in);
  EXPECT_EQ(plan.before.at("c"), 0);
  EXPECT_GT(plan.spread_before, 1.0);
  ASSERT_EQ(plan.moves.size(), 2u);
  for (const Move& m : plan.moves) {
    EXPECT_EQ(m.to, "c");
    EXPECT_EQ(m.why, "balance");
  }
  EXPECT_EQ(plan.after.at("a"), 2 * kUnitBytes);
  EXPECT_EQ(plan.after.at("b"), 2 * kUnitBytes);
  EXPECT_EQ(plan.after.at("c"), 2 * kUnitBytes);
  EXPECT_DOUBLE_EQ(plan.spread_after, 0);
}

TEST(RebalanceTest, ReplicatedShardsMoveToAnAgentThatLacksThem) {
  RebalanceInput in;
  in.maps = Maps(6, 2, {"a", "b"});  // both agents hold all 12 replicas
  in.agents = Rooms({"a", "b", "c"});
  auto plan = PlanRebalance(in);
  EXPECT_EQ(plan.after.at("a"), 4 * kUnitBytes);
  EXPECT_EQ(plan.after.at("b"), 4 * kUnitBytes);
  EXPECT_EQ(plan.after.at("c"), 4 * kUnitBytes);
  std::set<std::string> moved;
  for (const Move& m : plan.moves) {
    EXPECT_EQ(m.to, "c");
    EXPECT_TRUE(moved.insert(m.shard.name).second) << "a shard moves once per plan";
  }
}

TEST(RebalanceTest, SizesCountAndTheToleranceStopsSmallMoves) {
  RebalanceInput in;
  in.maps = Maps(4, 1, {"a", "b"});
  in.agents = Rooms({"a", "b"});
  in.bytes[{"t", "c0", 0}] = 100 * kUnitBytes;  // a holds c0 and c2, b holds c1 and c3
  in.bytes[{"t", "c1", 0}] = 10 * kUnitBytes;
  in.bytes[{"t", "c2", 0}] = 10 * kUnitBytes;
  in.bytes[{"t", "c3", 0}] = 10 * kUnitBytes;
  auto plan = PlanRebalance(in);
  // 110 vs 20: moving c2 (10) narrows the gap; c0 (100) is larger than the gap itself.
  ASSERT_EQ(plan.moves.size(), 1u);
  EXPECT_EQ(plan.moves[0].shard.name, "c2");
  EXPECT_EQ(plan.after.at("a"), 100 * kUnitBytes);
  in.tolerance = 0;
  EXPECT_TRUE(PlanRebalance(in).moves.empty()) << "tolerance 0: balancing is off";
  in.tolerance = 5;
  EXPECT_TRUE(PlanRebalance(in).moves.empty()) << "within the tolerance";
}

TEST(RebalanceTest, ASwapEvensOutWhatNoSingleMoveCan) {
  // a holds c0 (30) and c2 (20): 50; b holds c1 (25) and c3 (15): 40. Every shard of a is
  // larger than the gap (10), so no single move narrows it; swapping c0 for c1 gives 45/45.
  RebalanceInput in;
  in.maps = Maps(4, 1, {"a", "b"});
  in.bytes[{"t", "c0", 0}] = 30 * kUnitBytes;
  in.bytes[{"t", "c2", 0}] = 20 * kUnitBytes;
  in.bytes[{"t", "c1", 0}] = 25 * kUnitBytes;
  in.bytes[{"t", "c3", 0}] = 15 * kUnitBytes;
  in.agents = Rooms({"a", "b"});
  in.tolerance = 0.1;
  auto plan = PlanRebalance(in);
  ASSERT_EQ(plan.moves.size(), 2u);
  EXPECT_EQ(plan.moves[0].shard.name, "c0");
  EXPECT_EQ(plan.moves[0].to, "b");
  EXPECT_EQ(plan.moves[1].shard.name, "c1");
  EXPECT_EQ(plan.moves[1].to, "a");
  EXPECT_EQ(plan.after.at("a"), 45 * kUnitBytes);
  EXPECT_EQ(plan.after.at("b"), 45 * kUnitBytes);
  // Where no swap narrows it either, nothing moves.
  in.bytes[{"t", "c1", 0}] = 5 * kUnitBytes;  // a: 50, b: 20; c0 (30) >= gap, c2 (20) <= gap
  in.bytes[{"t", "c2", 0}] = 31 * kUnitBytes;  // a: 61, b: 20: gap 41; c0 (30) moves
  EXPECT_FALSE(PlanRebalance(in).moves.empty());
}

TEST(RebalanceTest, SixCollectionsOfGrowingSizesOnThreeAgentsComeOutEven) {
  // Sizes 2, 3, 4, 5, 6, 7 (27 in all: 9 each is possible: 2 + 7, 3 + 6, 4 + 5). Two agents
  // hold them, a third joins: single moves stop short, a swap finishes the job.
  RebalanceInput in;
  in.maps = Maps(6, 1, {"a", "b"});  // a: c0, c2, c4 (2 + 4 + 6), b: c1, c3, c5 (3 + 5 + 7)
  for (int c = 0; c < 6; ++c) in.bytes[{"t", "c" + std::to_string(c), 0}] = (c + 2) * kUnitBytes;
  in.agents = Rooms({"a", "b", "c"});
  in.tolerance = 0.2;
  auto plan = PlanRebalance(in);
  EXPECT_LE(plan.spread_after, 0.2 + 1e-9) << plan.after.at("a") << " " << plan.after.at("b")
                                            << " " << plan.after.at("c");
  std::set<std::string> moved;
  for (const Move& m : plan.moves) EXPECT_TRUE(moved.insert(m.shard.name).second);
}

TEST(RebalanceTest, SizesFiveToFifteenOnThreeAgentsComeOutEven) {
  // bench/cluster_rebalance.py --vary: sizes 5, 7, 9, 11, 13, 15 (60: 20 each is possible).
  RebalanceInput in;
  in.maps = Maps(6, 1, {"a", "b"});  // a: 5 + 9 + 13 = 27, b: 7 + 11 + 15 = 33
  for (int c = 0; c < 6; ++c) in.bytes[{"t", "c" + std::to_string(c), 0}] = (5 + 2 * c) * kUnitBytes;
  in.agents = Rooms({"a", "b", "c"});
  in.tolerance = 0.2;
  auto plan = PlanRebalance(in);
  EXPECT_LE(plan.spread_after, 0.2 + 1e-9) << plan.after.at("a") / kUnitBytes << " "
                                            << plan.after.at("b") / kUnitBytes << " "
                                            << plan.after.at("c") / kUnitBytes;
}

TEST(RebalanceTest, DrainMovesEverythingOffAndKeepsReplicasDistinct) {
  RebalanceInput in;
  in.maps = Maps(6, 2, {"a", "b", "c"});
  in.agents = Rooms({"a", "b", "c"}, "b");
  in.tolerance = 0;
  auto plan = PlanRebalance(in);
  EXPECT_FALSE(plan.before.count("b"));
  int off_b = 0;
  for (const Move& m : plan.moves) {
    EXPECT_EQ(m.from, "b");
    EXPECT_EQ(m.why, "drain");
    EXPECT_NE(m.to, "b");
    for (const CollectionMap& map : in.maps) {
      if (map.name == m.shard.name) {
        const auto& r = map.shards[0].replicas;
        EXPECT_EQ(std::count(r.begin(), r.end(), m.to), 0) << "never two copies on one agent";
      }
    }
    ++off_b;
  }
  EXPECT_EQ(off_b, 4);  // b held 4 of the 12 replicas
}

TEST(RebalanceTest, AReplicaGoesOnlyWhereItFits) {
  RebalanceInput in;
  in.maps = Maps(6, 1, {"a", "b"});
  in.agents = Rooms({"a", "b", "c"});
  in.agents[2].free_bytes = kUnitBytes + kUnitBytes / 2;  // room for one 1 MiB shard
  auto plan = PlanRebalance(in);
  int to_c = 0;
  for (const Move& m : plan.moves) to_c += m.to == "c";
  EXPECT_EQ(to_c, 1);
  // A drain moves nothing where nothing fits.
  in.agents = Rooms({"a", "b"}, "b");
  in.agents[0].free_bytes = kUnitBytes / 2;
  in.tolerance = 0;
  EXPECT_TRUE(PlanRebalance(in).moves.empty());
}

TEST(RebalanceTest, ShardsWithChangesInProgressStay) {
  RebalanceInput in;
  in.maps = Maps(2, 2, {"a", "b"});
  in.maps[0].shards[0].in_sync = {"a"};  // b being caught up
  in.maps[1].shards[0].leaving = "b";     // a move in progress
  in.agents = Rooms({"a", "b", "c"}, "b");
  EXPECT_TRUE(PlanRebalance(in).moves.empty());
  EXPECT_FALSE(Settled(in.maps[0].shards[0]));
}

TEST(RebalanceTest, PlansAreDeterministicAndCapped) {
  RebalanceInput in;
  in.maps = Maps(30, 2, {"a", "b", "c"});
  in.agents = Rooms({"a", "b", "c", "d", "e"});
  auto one = PlanRebalance(in);
  auto two = PlanRebalance(in);
  ASSERT_EQ(one.moves.size(), two.moves.size());
  for (size_t i = 0; i < one.moves.size(); ++i) {
    EXPECT_EQ(one.moves[i].shard, two.moves[i].shard);
    EXPECT_EQ(one.moves[i].to, two.moves[i].to);
  }
  EXPECT_LE(one.spread_after, in.tolerance + 1e-9);
  in.max_moves = 3;
  EXPECT_EQ(PlanRebalance(in).moves.size(), 3u);
}

TEST(RebalanceTest, PickTargetSkipsHoldersAndIsStable) {
  const ShardRef ref{"t", "c", 0};
  const std::vector<std::string> all{"a", "b", "c", "d"};
  const std::string first = PickTarget(ref, all, {});
  EXPECT_FALSE(first.empty());
  EXPECT_EQ(first, PickTarget(ref, {"d", "c", "b", "a"}, {}));
  EXPECT_NE(PickTarget(ref, all, {first}), first);
  EXPECT_EQ(PickTarget(ref, all, {"a", "b", "c", "d"}), "");
}

}  // namespace
}  // namespace vecgpu::cluster
