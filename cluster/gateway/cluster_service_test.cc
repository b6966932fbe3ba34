// The service contract over a cluster: a real etcd, two agents in this process (each an
// engine, its scheduler and the agent API on a free port, registered in etcd) and the
// gateway's ClusterCollectionService: collections spread over the agents, every call reaches
// the agent holding its collection, lists gather every agent's, tenants stay apart, views
// live with their base, and a collection whose agent is gone answers UNAVAILABLE naming it.
#include "cluster/gateway/cluster_service.h"

#include <gtest/gtest.h>

#include <future>
#include <set>

#include "cluster/agent/agent_codec.h"
#include "cluster/agent/agent_server.h"
#include "cluster/etcd/test_etcd.h"
#include "cluster/membership/agent_registration.h"
#include "core/engine.h"
#include "core/service/local_service.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
constexpr int kDim = 8;

// One agent: what `vecgpu serve --join` runs, in process.
struct Agent {
  Agent(EtcdClient& etcd, const std::string& id) : id(id) {
    EXPECT_TRUE(limits.Validate().ok());
    SchedulerOptions o;
    EXPECT_TRUE(o.Validate().ok());
    scheduler = std::make_unique<Scheduler>(o);
    engine = std::make_unique<Engine>(limits, factory, nullptr, scheduler.get());
    local = std::make_unique<LocalCollectionService>(*engine, LocalServiceOptions{});
    server = std::make_unique<AgentServer>(*local, "127.0.0.1", 0);
    EXPECT_TRUE(server->Start().ok());
    RegistrationOptions ro;
    ro.ttl_seconds = 2;
    const std::string address = "127.0.0.1:" + std::to_string(server->port());
    registration = std::make_unique<AgentRegistration>(etcd, ro, [id, address] {
      return AgentInfo{id, address, {"cpu"}, int64_t{8} << 30, 0, "test", kAgentApiVersion};
    });
  }
  ~Agent() { Leave(); }
  void Leave() {
    registration.reset();
    if (server) server->Stop(milliseconds(100));
    server.reset();
    if (scheduler) scheduler->Shutdown();
  }
  std::string id;
  Limits limits;
  cpu::CpuBackendFactory factory;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<LocalCollectionService> local;
  std::unique_ptr<AgentServer> server;
  std::unique_ptr<AgentRegistration> registration;
};

CallContext As(const std::string& tenant) {
  CallContext c;
  c.tenant = tenant;
  c.deadline = Clock::now() + seconds(20);
  return c;
}

template <typename T, typename Start>
StatusOr<T> Wait(Start start) {
  std::promise<StatusOr<T>> p;
  start([&p](StatusOr<T> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

class ClusterServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::EtcdInstalled()) GTEST_SKIP() << "etcd (Debian's etcd-server) is not installed";
    etcd_ = std::make_unique<testing::EtcdProcess>();
    auto c = EtcdClient::Connect({{etcd_->endpoint()}, milliseconds(2000)});
    ASSERT_TRUE(c.ok());
    client_ = std::move(*c);
    for (int i = 0; i < 100 && !client_->Get("probe").ok(); ++i) {
      std::this_thread::sleep_for(milliseconds(100));
    }
    a_ = std::make_unique<Agent>(*client_, "agent-a");
    b_ = std::make_unique<Agent>(*client_, "agent-b");
    gateway_ = std::make_unique<ClusterCollectionService>(*client_);
    ASSERT_TRUE(gateway_->WaitReady(seconds(10)));
    ASSERT_TRUE(
        gateway_->members().WaitFor([](const auto& m) { return m.size() == 2; }, seconds(10)));
    for (Agent* agent : {a_.get(), b_.get()}) {  // registered: writes admitted
      for (int i = 0; i < 100 && agent->registration->fenced(); ++i) {
        std::this_thread::sleep_for(milliseconds(20));
      }
    }
  }
  void TearDown() override {
    gateway_.reset();
    a_.reset();
    b_.reset();
  }

  Status Create(const std::string& tenant, const std::string& name,
                const std::string& type = "L2") {
    CreateCollectionRequest r{name, type, kDim, "", ""};
    return Wait<CollectionInfo>([&](auto done) { gateway_->Create(As(tenant), r, done); }).status();
  }
  StatusOr<WriteReply> Add(const std::string& tenant, const std::string& name, FloatMatrix x) {
    WriteRequest w;
    w.collection = name;
    w.vectors = std::move(x);
    return Wait<WriteReply>([&](auto done) { gateway_->Write(As(tenant), w, done); });
  }
  StatusOr<SearchReply> Search(const std::string& tenant, const std::string& name, FloatMatrix q) {
    SearchRequest s;
    s.collection = name;
    s.queries = std::move(q);
    s.k = 1;
    return Wait<SearchReply>([&](auto done) { gateway_->Search(As(tenant), s, done); });
  }
  // Which agent holds `name` of tenant "t".
  std::string Holder(const std::string& name) {
    if (a_->engine->Layout("t", name).ok()) return "agent-a";
    if (b_->engine->Layout("t", name).ok()) return "agent-b";
    return "";
  }

  std::unique_ptr<testing::EtcdProcess> etcd_;
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<Agent> a_, b_;
  std::unique_ptr<ClusterCollectionService> gateway_;
};

TEST_F(ClusterServiceTest, CollectionsSpreadOverAgentsAndEveryCallReachesItsHolder) {
  const FloatMatrix x = vecgpu::testing::Clustered(50, kDim);
  std::set<std::string> holders;
  for (int i = 0; i < 8; ++i) {
    const std::string name = "c" + std::to_string(i);
    ASSERT_TRUE(Create("t", name).ok()) << name;
    holders.insert(Holder(name));
    auto added = Add("t", name, x);
    ASSERT_TRUE(added.ok()) << added.status().ToString();
    EXPECT_EQ(added->ntotal, 50);
    auto found = Search("t", name, vecgpu::testing::Rows(x, 9, 1));
    ASSERT_TRUE(found.ok()) << found.status().ToString();
    EXPECT_EQ(found->knn.labels.at(0), 9);
  }
  EXPECT_EQ(holders, (std::set<std::string>{"agent-a", "agent-b"}));
  EXPECT_EQ(Create("t", "c3").code(), StatusCode::kAlreadyExists);

  auto list = Wait<std::vector<CollectionInfo>>([&](auto done) { gateway_->List(As("t"), done); });
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 8u);
  EXPECT_EQ(list->front().name, "c0");
  // Another tenant sees none of it, by any path.
  auto other = Wait<std::vector<CollectionInfo>>([&](auto done) { gateway_->List(As("u"), done); });
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->empty());
  EXPECT_EQ(Search("u", "c1", vecgpu::testing::Rows(x, 0, 1)).status().code(),
            StatusCode::kNotFound);

  // Drop: the collection and its map go; the name can be created again.
  ASSERT_TRUE(Wait<Empty>([&](auto done) { gateway_->Drop(As("t"), "c1", done); }).ok());
  EXPECT_EQ(Holder("c1"), "");
  EXPECT_EQ(Search("t", "c1", vecgpu::testing::Rows(x, 0, 1)).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(Create("t", "c1").ok());

  auto usage = Wait<UsageReply>([&](auto done) { gateway_->Usage(As("t"), done); });
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->caller.use.collections, 8);
  EXPECT_EQ(usage->caller.use.vectors, 7 * 50);
}

TEST_F(ClusterServiceTest, AViewLivesWithItsBaseAndAGoneAgentIsNamed) {
  ASSERT_TRUE(Create("t", "base", "IVF4").ok());
  ASSERT_TRUE(Create("t", "view", "IDMap2:base").ok());
  EXPECT_EQ(Holder("view"), Holder("base"));
  ASSERT_TRUE(Create("t", "x").ok());
  ASSERT_TRUE(Create("t", "y").ok());
  ASSERT_TRUE(Create("t", "z").ok());

  // The agent holding "x" leaves: its collections answer UNAVAILABLE naming it; the other
  // agent's go on; a list (it would miss collections) is refused too.
  const std::string gone = Holder("x");
  (gone == "agent-a" ? a_ : b_)->Leave();
  ASSERT_TRUE(
      gateway_->members().WaitFor([&](const auto& m) { return !m.count(gone); }, seconds(10)));
  auto r = Search("t", "x", vecgpu::testing::Clustered(1, kDim));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find(gone), std::string::npos) << r.status().message();
  for (const char* name : {"y", "z", "base"}) {
    if (Holder(name) != gone && !Holder(name).empty()) {
      EXPECT_TRUE(Search("t", name, vecgpu::testing::Clustered(1, kDim)).status().code() !=
                  StatusCode::kUnavailable)
          << name;
    }
  }
  auto list = Wait<std::vector<CollectionInfo>>([&](auto done) { gateway_->List(As("t"), done); });
  EXPECT_EQ(list.status().code(), StatusCode::kUnavailable);
  // Reported: every shard of the departed agent, by name.
  const auto unserved = gateway_->UnservedShards();
  EXPECT_FALSE(unserved.empty());
  bool x_reported = false;
  for (const std::string& u : unserved) {
    EXPECT_NE(u.find(gone), std::string::npos) << u;
    x_reported |= u.rfind("t/x#0", 0) == 0;
  }
  EXPECT_TRUE(x_reported);
  EXPECT_EQ(gateway_->UnderReplicatedShards(), static_cast<int64_t>(unserved.size()));
  // New collections go to the agent that is live.
  ASSERT_TRUE(Create("t", "after").ok());
  EXPECT_NE(Holder("after"), gone);
}

}  // namespace
}  // namespace vecgpu::cluster

namespace vecgpu::cluster {
namespace {

// Searches of one collection that arrive while two are in flight go to the agent as one search
// when one returns, and each caller gets exactly its own rows.
TEST_F(ClusterServiceTest, ConcurrentSearchesOfACollectionGoAsOneAndEachGetsItsOwnRows) {
  ASSERT_TRUE(Create("t", "c").ok());
  const FloatMatrix x = vecgpu::testing::Clustered(100, kDim);
  ASSERT_TRUE(Add("t", "c", x).ok());
  Agent& holder = Holder("c") == "agent-a" ? *a_ : *b_;
  // Hold the collection's queue on its agent, so that the first search stays in flight.
  auto gate = std::make_shared<std::promise<void>>();
  auto opened = gate->get_future().share();
  std::promise<void> started;
  ASSERT_TRUE(holder.engine
                  ->Submit(
                      "t", "c", WorkClass::kShort, Clock::time_point::max(),
                      [opened, &started] {
                        started.set_value();
                        opened.wait();
                      },
                      [](const Status&) {})
                  .ok());
  started.get_future().wait();
  const int64_t sent_before = gateway_->searches_sent();
  constexpr int kRequests = 12;
  std::vector<std::future<StatusOr<SearchReply>>> answers;
  for (int i = 0; i < kRequests; ++i) {
    auto p = std::make_shared<std::promise<StatusOr<SearchReply>>>();
    answers.push_back(p->get_future());
    SearchRequest s;
    s.collection = "c";
    s.queries = vecgpu::testing::Rows(x, i * 3, 1 + i % 3);  // 1 to 3 rows each
    s.k = 2;
    gateway_->Search(As("t"), std::move(s), [p](StatusOr<SearchReply> r) { p->set_value(r); });
    if (i < 2) std::this_thread::sleep_for(milliseconds(50));  // the first two are in flight
  }
  std::this_thread::sleep_for(milliseconds(50));
  gate->set_value();
  for (int i = 0; i < kRequests; ++i) {
    auto r = answers[i].get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->knn.nq, 1 + i % 3);
    for (int q = 0; q < r->knn.nq; ++q) EXPECT_EQ(r->knn.labels[q * 2], i * 3 + q) << i;
  }
  // The first two alone, then the ten that waited, together.
  EXPECT_EQ(gateway_->searches_sent() - sent_before, 3);
}

}  // namespace
}  // namespace vecgpu::cluster
