// Mutual TLS on the agent API (cluster/security/tls.h): the files checked at start, a gateway's
// client over TLS, and the clients the agent refuses. Certificates are made with `openssl`
// (skipped where it is not installed); tests/python/test_cluster_tls.py covers etcd and reloads.
#include "cluster/security/tls.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>

#include "cluster/agent/agent_server.h"
#include "cluster/agent/remote_service.h"
#include "core/engine.h"
#include "core/service/local_service.h"
#include "cpu_fallback/cpu_backend_factory.h"

namespace vecgpu::cluster {
namespace {

using std::chrono::milliseconds;

class Pki {
 public:
  Pki() {
    char tmpl[] = "/tmp/vecgpu-tls-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  ~Pki() { std::filesystem::remove_all(dir_); }
  static bool Available() { return std::system("openssl version > /dev/null 2>&1") == 0; }

  // A CA `name`: returns its certificate's path (the key beside it, `.key`).
  std::string Ca(const std::string& name) {
    Run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "-subj /CN=" +
        name + " -keyout " + Path(name + ".key") + " -out " + Path(name + ".pem"));
    return Path(name + ".pem");
  }
  // A member's certificate `name` signed by the CA `ca` (as Ca returned) for `sans`.
  TlsFiles Issue(const std::string& ca_pem, const std::string& name, const std::string& sans) {
    const std::string ca_key = ca_pem.substr(0, ca_pem.size() - 4) + ".key";
    const std::string ext = Path(name + ".ext");
    std::ofstream(ext) << "subjectAltName = " << sans
                       << "\nextendedKeyUsage = serverAuth, clientAuth\n";
    Run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=" +
        name + " -keyout " + Path(name + ".key") + " -out " + Path(name + ".csr"));
    Run("openssl x509 -req -in " + Path(name + ".csr") + " -CA " + ca_pem + " -CAkey " + ca_key +
        " -set_serial " + std::to_string(++serial_) + " -days 2 -extfile " + ext + " -out " +
        Path(name + ".pem"));
    return {Path(name + ".pem"), Path(name + ".key"), ca_pem};
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  static void Run(const std::string& command) {
    ASSERT_EQ(std::system((command + " > /dev/null 2>&1").c_str()), 0) << command;
  }
  std::string dir_;
  int serial_ = 1000;
};

std::string MessageOf(const StatusOr<std::shared_ptr<const TlsCredentials>>& r) {
  return r.ok() ? "ok" : r.status().message();
}

TEST(ClusterTlsTest, FilesAHandshakeWouldRefuseAreRefusedAtStartNamingTheFlag) {
  if (!Pki::Available()) GTEST_SKIP() << "openssl is not installed";
  Pki pki;
  const std::string ca = pki.Ca("ca"), other = pki.Ca("other");
  const TlsFiles good = pki.Issue(ca, "agent", "IP:127.0.0.1, DNS:agent1.cluster");
  EXPECT_TRUE(TlsCredentials::ForCluster(good).ok());
  EXPECT_TRUE(TlsCredentials::ForCluster(good, "127.0.0.1").ok());
  EXPECT_TRUE(TlsCredentials::ForCluster(good, "agent1.cluster").ok());

  TlsFiles f = good;
  f.ca_file.clear();
  EXPECT_NE(MessageOf(TlsCredentials::ForCluster(f)).find("cluster-tls-ca: missing"),
            std::string::npos);
  f = good;
  f.key_file = pki.Path("none.key");
  EXPECT_NE(MessageOf(TlsCredentials::ForCluster(f)).find("cluster-tls-key: cannot read"),
            std::string::npos)
      << MessageOf(TlsCredentials::ForCluster(f));
  f = good;
  f.cert_file = good.key_file;  // a key where the certificate should be
  EXPECT_NE(MessageOf(TlsCredentials::ForCluster(f)).find("holds no PEM CERTIFICATE"),
            std::string::npos);
  f = good;
  f.key_file = pki.Issue(ca, "another", "IP:127.0.0.1").key_file;
  EXPECT_NE(MessageOf(TlsCredentials::ForCluster(f)).find("is not the key of"), std::string::npos)
      << MessageOf(TlsCredentials::ForCluster(f));
  f = good;
  f.ca_file = other;
  EXPECT_NE(MessageOf(TlsCredentials::ForCluster(f)).find("does not verify against"),
            std::string::npos)
      << MessageOf(TlsCredentials::ForCluster(f));
  const std::string wrong_name = MessageOf(TlsCredentials::ForCluster(good, "10.0.0.7"));
  EXPECT_NE(wrong_name.find("does not name '10.0.0.7'"), std::string::npos) << wrong_name;
  EXPECT_FALSE(TlsCredentials::ForCluster(good, "agent2.cluster").ok());

  // etcd's client: the CA alone, or a certificate with its key.
  EXPECT_TRUE(TlsCredentials::ForEtcdClient({"", "", ca}).ok());
  EXPECT_TRUE(TlsCredentials::ForEtcdClient({good.cert_file, good.key_file, ""}).ok());
  EXPECT_NE(MessageOf(TlsCredentials::ForEtcdClient({good.cert_file, "", ca})).find("etcd-key"),
            std::string::npos);
}

class AgentOverTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Pki::Available()) GTEST_SKIP() << "openssl is not installed";
    ca_ = pki_.Ca("ca");
    EXPECT_TRUE(limits_.Validate().ok());
    SchedulerOptions o;
    EXPECT_TRUE(o.Validate().ok());
    scheduler_ = std::make_unique<Scheduler>(o);
    engine_ = std::make_unique<Engine>(limits_, factory_, nullptr, scheduler_.get());
    local_ = std::make_unique<LocalCollectionService>(*engine_, LocalServiceOptions{});
    auto tls = TlsCredentials::ForCluster(pki_.Issue(ca_, "agent", "IP:127.0.0.1"), "127.0.0.1");
    ASSERT_TRUE(tls.ok()) << tls.status().message();
    server_ = std::make_unique<AgentServer>(*local_, "127.0.0.1", 0, nullptr, *tls);
    ASSERT_TRUE(server_->Start().ok());
    address_ = "127.0.0.1:" + std::to_string(server_->port());
    ASSERT_TRUE(engine_->Create("t", {"c", "L2", 4, ""}).ok());
  }
  void TearDown() override {
    if (server_) server_->Stop(milliseconds(100));
    if (scheduler_) scheduler_->Shutdown();
  }
  // List over `remote`: the collections' count, or the status.
  static StatusOr<size_t> List(RemoteCollectionService& remote) {
    CallContext call;
    call.tenant = "t";
    call.deadline = Clock::now() + milliseconds(3000);
    std::promise<StatusOr<size_t>> p;
    remote.List(call, [&](StatusOr<std::vector<CollectionInfo>> r) {
      p.set_value(r.ok() ? StatusOr<size_t>(r->size()) : StatusOr<size_t>(r.status()));
    });
    return p.get_future().get();
  }

  Pki pki_;
  std::string ca_;
  Limits limits_;
  cpu::CpuBackendFactory factory_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<LocalCollectionService> local_;
  std::unique_ptr<AgentServer> server_;
  std::string address_;
};

TEST_F(AgentOverTlsTest, AMemberOfTheClusterIsServed) {
  auto gateway = TlsCredentials::ForCluster(pki_.Issue(ca_, "gateway", "DNS:gateway"));
  ASSERT_TRUE(gateway.ok()) << gateway.status().message();
  RemoteCollectionService remote(address_, *gateway);
  auto n = List(remote);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, 1u);
}

TEST_F(AgentOverTlsTest, PlaintextAndOtherCasAreRefusedNamingTheAgent) {
  RemoteCollectionService plaintext(address_);
  auto n = List(plaintext);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kUnavailable) << n.status().ToString();
  EXPECT_NE(n.status().message().find(address_), std::string::npos) << n.status().message();

  // A client of another CA: the agent refuses its certificate.
  const std::string rogue_ca = pki_.Ca("rogue-ca");
  TlsFiles rogue = pki_.Issue(rogue_ca, "stranger", "DNS:stranger");
  rogue.ca_file = ca_;  // it trusts the agent; the agent does not trust it
  auto rogue_tls = TlsCredentials::ForCluster(rogue);
  ASSERT_FALSE(rogue_tls.ok());  // refused at start too: its chain does not lead to ca_file
  const std::string bundle_path = pki_.Path("both.pem");
  ASSERT_EQ(std::system(("cat " + ca_ + " " + rogue_ca + " > " + bundle_path).c_str()), 0);
  rogue.ca_file = bundle_path;  // trusts both, so it starts; the agent trusts only ca_
  rogue_tls = TlsCredentials::ForCluster(rogue);
  ASSERT_TRUE(rogue_tls.ok()) << rogue_tls.status().message();
  RemoteCollectionService stranger(address_, *rogue_tls);
  n = List(stranger);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kUnavailable) << n.status().ToString();

  // An agent whose certificate does not name the host dialled: the client refuses it.
  auto gateway = TlsCredentials::ForCluster(pki_.Issue(ca_, "gateway", "DNS:gateway"));
  ASSERT_TRUE(gateway.ok());
  auto misnamed = TlsCredentials::ForCluster(pki_.Issue(ca_, "misnamed", "DNS:elsewhere"));
  ASSERT_TRUE(misnamed.ok());  // no name given to check at start
  AgentServer other(*local_, "127.0.0.1", 0, nullptr, *misnamed);
  ASSERT_TRUE(other.Start().ok());
  RemoteCollectionService to_other("127.0.0.1:" + std::to_string(other.port()), *gateway);
  n = List(to_other);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kUnavailable) << n.status().ToString();
  EXPECT_NE(n.status().message().find("Hostname Verification"), std::string::npos)
      << n.status().message();
  other.Stop(milliseconds(0));
}

}  // namespace
}  // namespace vecgpu::cluster
