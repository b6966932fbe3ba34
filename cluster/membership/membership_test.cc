// Agent registration and the gateway's member directory against a real etcd: agents appear
// with what they say of themselves, leave at once when they stop, vanish a TTL after they stop
// renewing; an agent that cannot renew fences itself within its TTL and registers anew when it
// can; the directory lists again after its watch's start was compacted.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "cluster/etcd/test_etcd.h"
#include "cluster/membership/agent_registration.h"
#include "cluster/membership/member_directory.h"

namespace vecgpu::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::EtcdInstalled;
using testing::EtcdProcess;

AgentInfo Agent(const std::string& id, double load = 0) {
  return {id, "127.0.0.1:" + std::to_string(7000 + id.size()), {"cpu"}, 1 << 30, load, "test"};
}

class MembershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdInstalled()) GTEST_SKIP() << "etcd (Debian's etcd-server) is not installed";
    etcd_ = std::make_unique<EtcdProcess>();
    client_ = Connect();
    Status last;
    for (int i = 0; i < 100; ++i) {
      last = client_->Get("probe").status();
      if (last.ok()) return;
      std::this_thread::sleep_for(milliseconds(100));
    }
    FAIL() << "etcd did not come up: " << last.ToString();
  }
  std::unique_ptr<EtcdClient> Connect() {
    auto c = EtcdClient::Connect({{etcd_->endpoint()}, milliseconds(1000)});
    EXPECT_TRUE(c.ok());
    return c.ok() ? std::move(c).value() : nullptr;
  }
  static RegistrationOptions Fast() {
    RegistrationOptions o;
    o.ttl_seconds = 2;  // etcd's smallest (1.5 x its 1 s election timeout, rounded up)
    o.margin = milliseconds(200);
    o.refresh = milliseconds(0);
    return o;
  }
  static bool Has(const MemberDirectory::Members& m, const std::string& id) {
    return m.count(id) > 0;
  }

  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<EtcdClient> client_;
};

TEST(AgentInfoTest, RoundTripsAndRefusesWhatIsNotAnAgent) {
  const AgentInfo a{"a1", "10.0.0.1:7001", {"cpu", "gpu:0"}, 123, 0.5, "1.0"};
  auto back = DecodeAgentInfo(EncodeAgentInfo(a));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, a);
  for (const char* bad : {"", "[]", "{", "{\"id\": 3, \"address\": \"x\"}", "{\"id\": \"a\"}",
                          "{\"id\": \"\", \"address\": \"x\"}"}) {
    EXPECT_EQ(DecodeAgentInfo(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(MembershipTest, AgentsAppearAndLeaveAtOnceWhenTheyStop) {
  MemberDirectory directory(*client_);
  auto a = std::make_unique<AgentRegistration>(*client_, Fast(), [] { return Agent("a"); });
  AgentRegistration b(*client_, Fast(), [] { return Agent("bb", 0.25); });
  ASSERT_TRUE(directory.WaitFor(
      [](const auto& m) { return Has(m, "a") && Has(m, "bb"); }, seconds(10)));
  EXPECT_EQ(directory.members().at("bb"), Agent("bb", 0.25));
  for (int i = 0; i < 50 && a->fenced(); ++i) std::this_thread::sleep_for(milliseconds(20));
  EXPECT_TRUE(a->WriteAdmission().ok()) << a->WriteAdmission().ToString();
  // Held beyond its TTL by renewals.
  std::this_thread::sleep_for(seconds(3));
  EXPECT_TRUE(Has(directory.members(), "a"));
  EXPECT_TRUE(a->WriteAdmission().ok());
  EXPECT_EQ(a->registrations(), 1);
  // A graceful stop revokes the lease: gone without waiting for the TTL.
  const auto t0 = std::chrono::steady_clock::now();
  a.reset();
  ASSERT_TRUE(directory.WaitFor([](const auto& m) { return !Has(m, "a"); }, seconds(10)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(1500));
  EXPECT_TRUE(Has(directory.members(), "bb"));
}

TEST_F(MembershipTest, AnAgentCutOffFromEtcdFencesItselfWithinItsTtlAndComesBackWithIt) {
  MemberDirectory directory(*client_);
  AgentRegistration a(*client_, Fast(), [] { return Agent("a"); });
  ASSERT_TRUE(directory.WaitFor([](const auto& m) { return Has(m, "a"); }, seconds(10)));
  for (int i = 0; i < 50 && a.fenced(); ++i) std::this_thread::sleep_for(milliseconds(20));
  ASSERT_FALSE(a.fenced());
  // etcd goes away: within the TTL the agent refuses writes, naming why.
  etcd_->Stop();
  const auto t0 = std::chrono::steady_clock::now();
  while (!a.fenced() && std::chrono::steady_clock::now() - t0 < seconds(5)) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_TRUE(a.fenced());
  EXPECT_LE(std::chrono::steady_clock::now() - t0, seconds(2));
  EXPECT_EQ(a.WriteAdmission().code(), StatusCode::kUnavailable);
  EXPECT_NE(a.WriteAdmission().message().find("fenced"), std::string::npos);
  // etcd back (its data kept, and 3.4 gives its leases a full TTL again): the agent renews
  // the lease it had (its key never went away) and takes writes again.
  etcd_->Start();
  for (int i = 0; i < 300 && a.fenced(); ++i) std::this_thread::sleep_for(milliseconds(50));
  EXPECT_FALSE(a.fenced());
  EXPECT_EQ(a.registrations(), 1);
  ASSERT_TRUE(directory.WaitFor([](const auto& m) { return Has(m, "a"); }, seconds(15)));
}

TEST_F(MembershipTest, AKeyThatIsNotAnAgentIsSkippedAndALostWatchListsAgain) {
  ASSERT_TRUE(client_->Put("/vecgpu/agents/junk", "not json").ok());
  MemberDirectory directory(*client_);
  AgentRegistration a(*client_, Fast(), [] { return Agent("a"); });
  ASSERT_TRUE(directory.WaitFor([](const auto& m) { return Has(m, "a"); }, seconds(10)));
  EXPECT_FALSE(Has(directory.members(), "junk"));
  EXPECT_GE(directory.malformed(), 1);
  EXPECT_EQ(directory.lists(), 1);
  // etcd restarts: the directory's watch breaks, it lists again and still sees the agent.
  etcd_->Stop();
  std::this_thread::sleep_for(milliseconds(1500));
  etcd_->Start();
  AgentRegistration b(*client_, Fast(), [] { return Agent("late"); });
  ASSERT_TRUE(directory.WaitFor(
      [](const auto& m) { return Has(m, "a") && Has(m, "late"); }, seconds(20)));
  EXPECT_GE(directory.lists(), 2);
}

}  // namespace
}  // namespace vecgpu::cluster
