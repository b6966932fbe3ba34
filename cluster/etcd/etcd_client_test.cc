// EtcdClient against a real etcd (Debian's etcd-server, started here on free loopback ports
// in a temporary directory, stopped at the end): reads at a revision, fenced transactions,
// leases that expire and keep-alives that hold them, watches that resume and report
// compaction, and failover between members' endpoints.
#include "cluster/etcd/etcd_client.h"

#include <gtest/gtest.h>

#include "cluster/etcd/test_etcd.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace vecgpu::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::EtcdInstalled;
using testing::EtcdProcess;
using testing::FreePort;

class EtcdClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdInstalled()) GTEST_SKIP() << "etcd (Debian's etcd-server) is not installed";
    etcd_ = std::make_unique<EtcdProcess>();
    auto c = EtcdClient::Connect({{"http://" + etcd_->endpoint()}, milliseconds(3000)});
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(*c);
    // Up within a few seconds.
    Status last;
    for (int i = 0; i < 100; ++i) {
      last = client_->Get("probe").status();
      if (last.ok()) return;
      std::this_thread::sleep_for(milliseconds(100));
    }
    FAIL() << "etcd did not come up: " << last.ToString() << "\n" << etcd_->Log();
  }

  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(EtcdClientTest, PutGetPrefixAndReadAtARevision) {
  auto r1 = client_->Put("/v/agents/a", "1");
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  auto r2 = client_->Put("/v/agents/b", "2");
  ASSERT_TRUE(r2.ok());
  ASSERT_TRUE(client_->Put("/v/agentsX", "not under the prefix").ok());
  ASSERT_TRUE(client_->Put("/v/agents/a", "1bis").ok());

  auto all = client_->GetPrefix("/v/agents/");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->kvs.size(), 2u);
  EXPECT_EQ(all->kvs[0].key, "/v/agents/a");
  EXPECT_EQ(all->kvs[0].value, "1bis");
  EXPECT_EQ(all->kvs[0].version, 2);
  EXPECT_EQ(all->kvs[1].value, "2");

  auto then = client_->GetPrefix("/v/agents/", *r2);  // as it was at the second put
  ASSERT_TRUE(then.ok());
  ASSERT_EQ(then->kvs.size(), 2u);
  EXPECT_EQ(then->kvs[0].value, "1");

  auto missing = client_->Get("/v/none");
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->kvs.empty());
  EXPECT_GE(missing->revision, *r2);

  auto deleted = client_->Delete("/v/agents/", /*prefix=*/true);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 2);
  EXPECT_EQ(client_->GetPrefix("/v/agents/")->kvs.size(), 0u);
}

// The fence every shard-map change goes through: a transaction that compares the revision it
// read. Of two writers that read the same revision, exactly one wins.
TEST_F(EtcdClientTest, TransactionsFenceOnTheRevisionRead) {
  ASSERT_TRUE(client_->Put("/v/map", "epoch 1").ok());
  auto read = client_->Get("/v/map");
  ASSERT_TRUE(read.ok());
  const int64_t seen = read->kvs.at(0).mod_revision;

  auto first = client_->Txn({Compare::ModRevisionIs("/v/map", seen)},
                            {TxnOp::Put("/v/map", "epoch 2 by A")}, {TxnOp::Get("/v/map")});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->succeeded);
  auto second = client_->Txn({Compare::ModRevisionIs("/v/map", seen)},
                             {TxnOp::Put("/v/map", "epoch 2 by B")}, {TxnOp::Get("/v/map")});
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->succeeded);
  ASSERT_EQ(second->reads.size(), 1u);  // the failure branch read what is there now
  EXPECT_EQ(second->reads[0].kvs.at(0).value, "epoch 2 by A");

  // Create-if-absent.
  auto created = client_->Txn({Compare::Absent("/v/placer")}, {TxnOp::Put("/v/placer", "A")});
  ASSERT_TRUE(created.ok());
  EXPECT_TRUE(created->succeeded);
  auto again = client_->Txn({Compare::Absent("/v/placer")}, {TxnOp::Put("/v/placer", "B")});
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->succeeded);
  EXPECT_EQ(client_->Get("/v/placer")->kvs.at(0).value, "A");
}

TEST_F(EtcdClientTest, ConcurrentFencedIncrementsLoseNothing) {
  ASSERT_TRUE(client_->Put("/v/counter", "0").ok());
  std::atomic<int> failures{0};
  auto bump = [&] {
    for (int done = 0; done < 20;) {
      auto r = client_->Get("/v/counter");
      if (!r.ok()) {
        ++failures;
        return;
      }
      const int v = std::stoi(r->kvs.at(0).value);
      auto t = client_->Txn({Compare::ModRevisionIs("/v/counter", r->kvs[0].mod_revision)},
                            {TxnOp::Put("/v/counter", std::to_string(v + 1))});
      if (!t.ok()) {
        ++failures;
        return;
      }
      if (t->succeeded) ++done;
    }
  };
  std::thread a(bump), b(bump), c(bump);
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(client_->Get("/v/counter")->kvs.at(0).value, "60");
}

TEST_F(EtcdClientTest, LeasedKeysGoWithTheirLeaseAndKeepAliveHoldsThem) {
  auto held = client_->GrantLease(2);
  auto lapsed = client_->GrantLease(2);
  ASSERT_TRUE(held.ok() && lapsed.ok());
  EXPECT_GE(held->ttl_seconds, 2);
  ASSERT_TRUE(client_->Put("/v/members/held", "x", held->id).ok());
  ASSERT_TRUE(client_->Put("/v/members/lapsed", "y", lapsed->id).ok());
  EXPECT_EQ(client_->Get("/v/members/held")->kvs.at(0).lease, held->id);
  // Renew one every 500 ms for 4 s; the other lapses.
  for (int i = 0; i < 8; ++i) {
    auto ttl = client_->KeepAliveOnce(held->id);
    ASSERT_TRUE(ttl.ok()) << ttl.status().ToString();
    EXPECT_GE(*ttl, 1);
    std::this_thread::sleep_for(milliseconds(500));
  }
  auto left = client_->GetPrefix("/v/members/");
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->kvs.size(), 1u);
  EXPECT_EQ(left->kvs[0].key, "/v/members/held");
  EXPECT_EQ(client_->KeepAliveOnce(lapsed->id).status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(client_->RevokeLease(held->id).ok());
  EXPECT_TRUE(client_->GetPrefix("/v/members/")->kvs.empty());
  EXPECT_EQ(client_->GrantLease(0).status().code(), StatusCode::kInvalidArgument);
}

// Collects a watch's events.
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<WatchEvent, int64_t>> events;
  std::optional<Status> ended;

  void Add(const std::vector<WatchEvent>& evs, int64_t rev) {
    std::lock_guard lock(mu);
    for (const auto& e : evs) events.push_back({e, rev});
    cv.notify_all();
  }
  void End(const Status& st) {
    std::lock_guard lock(mu);
    ended = st;
    cv.notify_all();
  }
  bool WaitFor(size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, seconds(10), [&] { return events.size() >= n; });
  }
  bool WaitEnd() {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, seconds(10), [&] { return ended.has_value(); });
  }
};

TEST_F(EtcdClientTest, WatchFromARevisionSeesEveryChangeInOrder) {
  auto start = client_->Put("/v/w/a", "1");
  ASSERT_TRUE(start.ok());
  ASSERT_TRUE(client_->Put("/v/w/b", "2").ok());
  Seen seen;
  // From the first put: the history first, then what comes.
  auto watch = client_->WatchPrefix(
      "/v/w/", *start, [&](const auto& evs, int64_t rev) { seen.Add(evs, rev); },
      [&](const Status& st) { seen.End(st); });
  ASSERT_TRUE(watch.ok());
  ASSERT_TRUE(client_->Put("/v/other", "unwatched").ok());
  ASSERT_TRUE(client_->Delete("/v/w/a").ok());
  ASSERT_TRUE(client_->Txn({}, {TxnOp::Put("/v/w/c", "3"), TxnOp::Put("/v/w/d", "4")}).ok());
  ASSERT_TRUE(seen.WaitFor(5));
  std::lock_guard lock(seen.mu);
  ASSERT_EQ(seen.events.size(), 5u);
  EXPECT_EQ(seen.events[0].first.kv.key, "/v/w/a");
  EXPECT_EQ(seen.events[0].second, *start);
  EXPECT_EQ(seen.events[1].first.kv.value, "2");
  EXPECT_TRUE(seen.events[2].first.deleted);
  EXPECT_EQ(seen.events[2].first.kv.key, "/v/w/a");
  // One transaction: one revision, both events.
  EXPECT_EQ(seen.events[3].second, seen.events[4].second);
  EXPECT_EQ(seen.events[3].first.kv.key, "/v/w/c");
  for (size_t i = 1; i < seen.events.size(); ++i) {
    EXPECT_GE(seen.events[i].second, seen.events[i - 1].second);
  }
  EXPECT_FALSE(seen.ended.has_value());
}

TEST_F(EtcdClientTest, AWatchFromACompactedRevisionEndsNamingTheCompaction) {
  auto first = client_->Put("/v/c/x", "1");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(client_->Put("/v/c/x", "2").ok());
  auto last = client_->Put("/v/c/x", "3");
  ASSERT_TRUE(last.ok());
  // Compact up to the last put (etcdctl, as an operator would).
  const std::string cmd = "ETCDCTL_API=3 etcdctl --endpoints=" + etcd_->endpoint() +
                          " compact " + std::to_string(*last) + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(client_->Get("/v/c/x", *first).status().code(), StatusCode::kOutOfRange);
  Seen seen;
  auto watch = client_->WatchPrefix(
      "/v/c/", *first, [&](const auto& evs, int64_t rev) { seen.Add(evs, rev); },
      [&](const Status& st) { seen.End(st); });
  ASSERT_TRUE(watch.ok());
  ASSERT_TRUE(seen.WaitEnd());
  EXPECT_EQ(seen.ended->code(), StatusCode::kOutOfRange);
  EXPECT_NE(seen.ended->message().find(std::to_string(*last)), std::string::npos)
      << seen.ended->message();
}

TEST_F(EtcdClientTest, UnreachableEtcdIsUnavailableAndAnotherEndpointServes) {
  // A dead first endpoint: reads move on to the live one.
  auto both = EtcdClient::Connect(
      {{"127.0.0.1:" + std::to_string(FreePort()), etcd_->endpoint()}, milliseconds(1000)});
  ASSERT_TRUE(both.ok());
  ASSERT_TRUE(client_->Put("/v/f", "here").ok());
  auto r = (*both)->Get("/v/f");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kvs.at(0).value, "here");
  EXPECT_EQ((*both)->endpoint(), etcd_->endpoint());

  // etcd gone: calls fail UNAVAILABLE (or DEADLINE_EXCEEDED) within their deadline; a watch
  // ends UNAVAILABLE.
  Seen seen;
  auto watch = client_->WatchPrefix(
      "/v/", 0, [&](const auto& evs, int64_t rev) { seen.Add(evs, rev); },
      [&](const Status& st) { seen.End(st); });
  ASSERT_TRUE(watch.ok());
  std::this_thread::sleep_for(milliseconds(300));
  etcd_->Kill();
  const auto t0 = std::chrono::steady_clock::now();
  auto put = client_->Put("/v/f", "gone");
  EXPECT_TRUE(put.status().code() == StatusCode::kUnavailable ||
              put.status().code() == StatusCode::kDeadlineExceeded)
      << put.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(5));
  ASSERT_TRUE(seen.WaitEnd());
  EXPECT_EQ(seen.ended->code(), StatusCode::kUnavailable);
  EXPECT_EQ(PrefixEnd("/v/"), "/v0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
}

}  // namespace
}  // namespace vecgpu::cluster
