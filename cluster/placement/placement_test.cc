// Placement: rendezvous hashing (deterministic, distinct owners, minimal movement, weighted
// shares), shard maps (codec and consistency), and the fenced map store and placer election
// against a real etcd (two placers never both win; a deposed placer changes nothing).
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "cluster/etcd/test_etcd.h"
#include "cluster/placement/rendezvous.h"
#include "cluster/placement/shard_map.h"

namespace vecgpu::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::vector<Candidate> Agents(int n, double weight = 1) {
  std::vector<Candidate> out;
  for (int i = 0; i < n; ++i) out.push_back({"agent-" + std::to_string(i), weight});
  return out;
}

TEST(RendezvousTest, DeterministicDistinctAndStable) {
  const auto agents = Agents(5);
  EXPECT_EQ(StableHash("vecgpu"), StableHash("vecgpu"));
  EXPECT_NE(StableHash("a"), StableHash("b"));
  for (int k = 0; k < 200; ++k) {
    const std::string key = "t/c/" + std::to_string(k);
    auto owners = Rendezvous(key, agents, 3);
    ASSERT_EQ(owners.size(), 3u);
    EXPECT_EQ(std::set<std::string>(owners.begin(), owners.end()).size(), 3u);
    EXPECT_EQ(owners, Rendezvous(key, agents, 3));  // the same every time
    // Candidate order does not matter.
    std::vector<Candidate> reversed(agents.rbegin(), agents.rend());
    EXPECT_EQ(owners, Rendezvous(key, reversed, 3));
  }
  EXPECT_EQ(Rendezvous("k", agents, 9).size(), 5u);  // at most every candidate
  EXPECT_TRUE(Rendezvous("k", {{"dead", 0}}, 1).empty());
}

TEST(RendezvousTest, RemovingAnAgentMovesOnlyItsKeysAndAddingOneTakesAFairShare) {
  auto agents = Agents(6);
  std::map<std::string, std::string> before;
  for (int k = 0; k < 3000; ++k) before[std::to_string(k)] = Rendezvous(std::to_string(k), agents, 1)[0];
  auto fewer = agents;
  fewer.erase(fewer.begin() + 2);  // agent-2 leaves
  int moved = 0;
  for (const auto& [k, owner] : before) {
    const std::string now = Rendezvous(k, fewer, 1)[0];
    if (owner != "agent-2") {
      EXPECT_EQ(now, owner) << k;  // untouched keys stay
    } else {
      ++moved;
    }
  }
  EXPECT_GT(moved, 3000 / 6 / 2);
  auto more = agents;
  more.push_back({"agent-new", 1});
  int taken = 0;
  for (const auto& [k, owner] : before) {
    const std::string now = Rendezvous(k, more, 1)[0];
    if (now != owner) {
      EXPECT_EQ(now, "agent-new");  // a newcomer only takes keys, never shuffles others
      ++taken;
    }
  }
  EXPECT_NEAR(taken, 3000 / 7, 3000 / 7 * 0.25);
}

TEST(RendezvousTest, SharesFollowWeights) {
  std::vector<Candidate> agents = {{"small", 1}, {"big", 3}};
  int big = 0;
  for (int k = 0; k < 8000; ++k) big += Rendezvous(std::to_string(k), agents, 1)[0] == "big";
  EXPECT_NEAR(big / 8000.0, 0.75, 0.03);
}

TEST(RendezvousTest, IdsSpreadOverShards) {
  std::vector<int> count(8);
  for (int64_t id = 0; id < 8000; ++id) ++count[ShardOfId(id, 8)];
  for (int c : count) EXPECT_NEAR(c, 1000, 150);
  EXPECT_EQ(ShardOfId(12345, 1), 0);
  EXPECT_EQ(ShardOfKey("doc-1", 4), ShardOfKey("doc-1", 4));
}

TEST(ShardMapTest, FirstPlacementAndCodec) {
  auto m = FirstPlacement("t", "c", 3, 2, Agents(4));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->shards.size(), 3u);
  for (const ShardState& s : m->shards) {
    EXPECT_EQ(s.replicas.size(), 2u);
    EXPECT_EQ(s.primary, s.replicas[0]);
    EXPECT_EQ(s.in_sync, s.replicas);
    EXPECT_EQ(s.epoch, 1);
  }
  auto back = DecodeCollectionMap(EncodeCollectionMap(*m));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, *m);
  // Primaries spread over the owners: three shards over three agents, each on all three,
  // are led by three different agents; agents that lead shards elsewhere lead fewer here.
  auto spread = FirstPlacement("t", "spread", 3, 3, Agents(3));
  ASSERT_TRUE(spread.ok());
  std::set<std::string> leaders;
  for (const ShardState& s : spread->shards) leaders.insert(s.primary);
  EXPECT_EQ(leaders.size(), 3u);
  auto busy = Agents(3);
  std::map<std::string, int> elsewhere{{busy[0].id, 5}, {busy[1].id, 5}};
  auto around = FirstPlacement("t", "around", 1, 3, busy, elsewhere);
  ASSERT_TRUE(around.ok());
  EXPECT_EQ(around->shards[0].primary, busy[2].id);
  EXPECT_EQ(FirstPlacement("t", "c", 1, 3, Agents(2)).status().code(),
            StatusCode::kFailedPrecondition);
  // Inconsistent maps are refused, naming the problem.
  CollectionMap bad = *m;
  bad.shards[1].primary = "stranger";
  auto refused = DecodeCollectionMap(EncodeCollectionMap(bad));
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("stranger"), std::string::npos);
  bad = *m;
  bad.shards[0].in_sync.push_back("ghost");
  EXPECT_FALSE(DecodeCollectionMap(EncodeCollectionMap(bad)).ok());
  EXPECT_FALSE(DecodeCollectionMap("{\"name\": \"c\"}").ok());
  EXPECT_FALSE(DecodeCollectionMap("[").ok());
}

class PlacementEtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::EtcdInstalled()) GTEST_SKIP() << "etcd (Debian's etcd-server) is not installed";
    etcd_ = std::make_unique<testing::EtcdProcess>();
    auto c = EtcdClient::Connect({{etcd_->endpoint()}, milliseconds(1000)});
    ASSERT_TRUE(c.ok());
    client_ = std::move(*c);
    for (int i = 0; i < 100 && !client_->Get("probe").ok(); ++i) {
      std::this_thread::sleep_for(milliseconds(100));
    }
  }
  std::unique_ptr<testing::EtcdProcess> etcd_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(PlacementEtcdTest, OnePlacerAtATimeAndADeposedOneChangesNothing) {
  auto a = std::make_unique<PlacerElection>(*client_, "gateway-a", "/vecgpu/placer", 2);
  ASSERT_TRUE(a->WaitForLeadership(seconds(10)));
  PlacerElection b(*client_, "gateway-b", "/vecgpu/placer", 2);
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_EQ(b.fence(), 0) << "two placers at once";
  const int64_t a_fence = a->fence();

  ShardMapStore store(*client_);
  auto map = FirstPlacement("t", "c", 2, 1, Agents(3));
  ASSERT_TRUE(map.ok());
  ASSERT_TRUE(store.Create(*map, a->key(), a_fence).ok());
  EXPECT_EQ(store.Create(*map, a->key(), a_fence).status().code(), StatusCode::kAlreadyExists);
  // b does not lead: its writes are refused whatever it passes.
  auto read = store.Get("t", "c");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->map, *map);
  CollectionMap next = read->map;
  next.shards[0].epoch = 2;
  EXPECT_EQ(store.Update(next, read->mod_revision, b.key(), 12345).status().code(),
            StatusCode::kAborted);

  // a resigns: b leads; a's old fence no longer changes anything.
  a.reset();
  ASSERT_TRUE(b.WaitForLeadership(seconds(10)));
  EXPECT_NE(b.fence(), a_fence);
  auto stale = store.Update(next, read->mod_revision, "/vecgpu/placer", a_fence);
  EXPECT_EQ(stale.status().code(), StatusCode::kAborted);
  EXPECT_NE(stale.status().message().find("no longer the placer"), std::string::npos);
  EXPECT_EQ(store.Get("t", "c")->map.shards[0].epoch, 1);
  ASSERT_TRUE(store.Update(next, read->mod_revision, b.key(), b.fence()).ok());
  EXPECT_EQ(store.Get("t", "c")->map.shards[0].epoch, 2);
}

TEST_F(PlacementEtcdTest, UpdatesFencedOnTheRevisionReadAndStoreListsMaps) {
  ShardMapStore store(*client_);
  auto map = FirstPlacement("tenant one", "c/1", 1, 2, Agents(3));
  ASSERT_TRUE(map.ok());
  ASSERT_TRUE(store.Create(*map, "", 0).ok());
  EXPECT_EQ(store.KeyOf("tenant one", "c/1"), "/vecgpu/collections/tenant%20one/c%2F1");
  auto read = store.Get("tenant one", "c/1");
  ASSERT_TRUE(read.ok());
  // Two updates from the same read: one wins, the other is told the map changed.
  CollectionMap promote = read->map;
  std::swap(promote.shards[0].replicas[0], promote.shards[0].replicas[1]);
  promote.shards[0].primary = promote.shards[0].replicas[0];
  promote.shards[0].epoch = 2;
  CollectionMap shrink = read->map;
  shrink.shards[0].in_sync = {shrink.shards[0].primary};
  ASSERT_TRUE(store.Update(promote, read->mod_revision, "", 0).ok());
  auto lost = store.Update(shrink, read->mod_revision, "", 0);
  EXPECT_EQ(lost.status().code(), StatusCode::kAborted);
  EXPECT_NE(lost.status().message().find("changed meanwhile"), std::string::npos);
  EXPECT_EQ(store.Get("tenant one", "c/1")->map, promote);

  ASSERT_TRUE(client_->Put("/vecgpu/collections/junk", "not a map").ok());
  int64_t rev = 0, malformed = 0;
  auto all = store.List(&rev, &malformed);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(malformed, 1);
  EXPECT_GT(rev, 0);
  auto now = store.Get("tenant one", "c/1");
  EXPECT_FALSE(store.Delete("tenant one", "c/1", read->mod_revision, "", 0).ok());
  ASSERT_TRUE(store.Delete("tenant one", "c/1", now->mod_revision, "", 0).ok());
  EXPECT_EQ(store.Get("tenant one", "c/1").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace vecgpu::cluster
