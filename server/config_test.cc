#include "server/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace vecgpu::server {
namespace {

ParsedCommand Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "vecgpu");
  return ParseCommandLine(static_cast<int>(args.size()), args.data());
}

class ConfigTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (auto v :
         {"FAISSX_PORT", "VECGPU_PORT", "VECGPU_MAX_K", "FAISSX_ENABLE_AUTH", "FAISSX_AUTH_KEYS"}) {
      unsetenv(v);
    }
  }
};

TEST_F(ConfigTest, Defaults) {
  auto p = Parse({"serve"});
  ASSERT_TRUE(p.serve) << p.message;
  EXPECT_EQ(p.options.port, 45678);
  EXPECT_EQ(p.options.bind_address, "127.0.0.1");
  EXPECT_FALSE(p.options.enable_auth);
  EXPECT_EQ(p.options.limits.max_k, 10000);
  EXPECT_EQ(p.options.limits.max_message_bytes, 2 * 100'000'000 + (1 << 20));
  EXPECT_GE(p.options.scheduler.query_threads, 4);
}

TEST_F(ConfigTest, LayersConfigThenEnvThenFlags) {
  std::string path = ::testing::TempDir() + "/vecgpu.json";
  std::ofstream(path) << R"({"port": 1111, "max_k": 50, "log-level": "debug"})";
  auto from_file = Parse({"serve", "--config", path.c_str()});
  ASSERT_TRUE(from_file.serve) << from_file.message;
  EXPECT_EQ(from_file.options.port, 1111);
  EXPECT_EQ(from_file.options.limits.max_k, 50);
  EXPECT_EQ(from_file.options.log_level, "debug");

  setenv("FAISSX_PORT", "2222", 1);
  EXPECT_EQ(Parse({"serve", "--config", path.c_str()}).options.port, 2222);
  setenv("VECGPU_PORT", "3333", 1);  // VECGPU_ wins over FAISSX_
  EXPECT_EQ(Parse({"serve", "--config", path.c_str()}).options.port, 3333);
  EXPECT_EQ(Parse({"serve", "--config", path.c_str(), "--port", "4444"}).options.port, 4444);

  std::ofstream(path) << R"({"no_such_setting": 1})";
  auto bad = Parse({"serve", "--config", path.c_str()});
  EXPECT_FALSE(bad.serve);
  EXPECT_NE(bad.message.find("no_such_setting"), std::string::npos);
}

TEST_F(ConfigTest, AuthSettings) {
  auto no_keys = Parse({"serve", "--enable-auth"});
  EXPECT_FALSE(no_keys.serve);
  EXPECT_NE(no_keys.message.find("no API keys"), std::string::npos);
  setenv("FAISSX_ENABLE_AUTH", "true", 1);
  setenv("FAISSX_AUTH_KEYS", "k:t", 1);
  auto env = Parse({"serve"});
  ASSERT_TRUE(env.serve) << env.message;
  EXPECT_TRUE(env.options.enable_auth);
  EXPECT_EQ(env.options.auth_keys.at("k"), "t");
  EXPECT_EQ(env.options.bind_address, "0.0.0.0");
}

TEST_F(ConfigTest, TakesDataDirAndRejectsBadValues) {
  auto dd = Parse({"serve", "--data-dir", "/tmp/x", "--durability", "async"});
  EXPECT_TRUE(dd.serve) << dd.message;
  EXPECT_EQ(dd.options.data_dir, "/tmp/x");
  EXPECT_EQ(dd.options.durability, "async");
  EXPECT_EQ(Parse({"serve"}).options.durability, "sync");
  auto bad = Parse({"serve", "--durability", "maybe"});
  EXPECT_FALSE(bad.serve);
  EXPECT_NE(bad.message.find("durability"), std::string::npos);
  EXPECT_FALSE(Parse({"serve", "--sync-interval-ms", "0"}).serve);
  EXPECT_FALSE(Parse({"serve", "--port", "70000"}).serve);
  EXPECT_FALSE(Parse({"serve", "--log-level", "loud"}).serve);
  EXPECT_FALSE(Parse({"serve", "--max-k", "0"}).serve);
  EXPECT_FALSE(Parse({"serve", "--bogus"}).serve);
  EXPECT_EQ(Parse({"serve", "--log-level", "WARNING"}).options.log_level, "warning");
}

TEST_F(ConfigTest, GpuWorkersPerGpu) {
  EXPECT_EQ(Parse({"serve"}).options.scheduler.gpu_workers, 2);
  auto four = Parse({"serve", "--gpu-workers", "4"});
  ASSERT_TRUE(four.serve) << four.message;
  EXPECT_EQ(four.options.scheduler.gpu_workers, 4);
  setenv("VECGPU_GPU_WORKERS", "3", 1);
  EXPECT_EQ(Parse({"serve"}).options.scheduler.gpu_workers, 3);
  unsetenv("VECGPU_GPU_WORKERS");
  auto none = Parse({"serve", "--gpu-workers", "0"});
  EXPECT_FALSE(none.serve);
  EXPECT_NE(none.message.find("gpu_workers: must be positive"), std::string::npos)
      << none.message;
}

TEST_F(ConfigTest, GpuMemorySettings) {
  auto d = Parse({"serve"});
  ASSERT_TRUE(d.serve) << d.message;
  EXPECT_EQ(d.options.devices.reserve_bytes, int64_t{256} << 20);
  EXPECT_EQ(d.options.devices.temp_memory_bytes, int64_t{1536} << 20);
  auto flags = Parse({"serve", "--gpu-temp-memory-mb", "512", "--gpu-reserve-mb", "0"});
  ASSERT_TRUE(flags.serve) << flags.message;
  EXPECT_EQ(flags.options.devices.temp_memory_bytes, int64_t{512} << 20);
  EXPECT_EQ(flags.options.devices.reserve_bytes, 0);
  setenv("VECGPU_GPU_TEMP_MEMORY_MB", "0", 1);
  auto env = Parse({"serve"});
  unsetenv("VECGPU_GPU_TEMP_MEMORY_MB");
  ASSERT_TRUE(env.serve) << env.message;
  EXPECT_EQ(env.options.devices.temp_memory_bytes, 0);
  for (const char* bad : {"-1", "1537"}) {
    auto refused = Parse({"serve", "--gpu-temp-memory-mb", bad});
    EXPECT_FALSE(refused.serve) << bad;
    EXPECT_NE(refused.message.find("gpu-temp-memory-mb: must be within 0..1536"), std::string::npos)
        << refused.message;
  }
  EXPECT_FALSE(Parse({"serve", "--gpu-reserve-mb", "-1"}).serve);
}

TEST_F(ConfigTest, GrpcAndValdSettings) {
  auto d = Parse({"serve"});
  ASSERT_TRUE(d.serve) << d.message;
  EXPECT_EQ(d.options.grpc_port, 8081);
  EXPECT_EQ(d.options.vald_collection, "default");
  EXPECT_EQ(d.options.vald_dimension, 0);
  EXPECT_EQ(d.options.vald_index_type, "Flat");
  EXPECT_EQ(d.options.vald_metric, "L2");
  setenv("VECGPU_GRPC_PORT", "9091", 1);
  setenv("FAISSX_VALD_COLLECTION", "vecs", 1);
  auto env = Parse({"serve", "--vald-dimension", "128", "--vald-index-type", "HNSW32"});
  unsetenv("VECGPU_GRPC_PORT");
  unsetenv("FAISSX_VALD_COLLECTION");
  ASSERT_TRUE(env.serve) << env.message;
  EXPECT_EQ(env.options.grpc_port, 9091);
  EXPECT_EQ(env.options.vald_collection, "vecs");
  EXPECT_EQ(env.options.vald_dimension, 128);
  EXPECT_EQ(env.options.vald_index_type, "HNSW32");
  EXPECT_TRUE(Parse({"serve", "--grpc-port", "0"}).serve);
  EXPECT_FALSE(Parse({"serve", "--grpc-port", "70000"}).serve);
  EXPECT_FALSE(Parse({"serve", "--grpc-port", "45678"}).serve);  // the FAISSx port
  EXPECT_FALSE(Parse({"serve", "--grpc-tls-cert", "c.pem"}).serve);
  EXPECT_FALSE(Parse({"serve", "--grpc-tls-client-ca", "ca.pem"}).serve);
  EXPECT_TRUE(Parse({"serve", "--grpc-tls-cert", "c.pem", "--grpc-tls-key", "k.pem"}).serve);
  EXPECT_FALSE(Parse({"serve", "--vald-collection", ""}).serve);
  EXPECT_FALSE(Parse({"serve", "--vald-dimension", "-1"}).serve);
  EXPECT_FALSE(Parse({"serve", "--vald-dimension", "20000"}).serve);
}

// Files that exist (their contents are the TLS module's to judge, at start).
std::string TouchedFile(const std::string& name) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << "-----BEGIN CERTIFICATE-----\n";
  return path;
}

TEST_F(ConfigTest, ClusterTlsNeedsAllThreeFilesReadableOnAClusterMember) {
  const std::string cert = TouchedFile("member.pem"), key = TouchedFile("member.key"),
                    ca = TouchedFile("ca.pem");
  auto agent = [&](std::vector<const char*> extra) {
    std::vector<const char*> args = {"serve", "--join", "http://127.0.0.1:2379", "--advertise",
                                     "127.0.0.1:7001"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Parse(args);
  };
  auto all = agent({"--cluster-tls-cert", cert.c_str(), "--cluster-tls-key", key.c_str(),
                    "--cluster-tls-ca", ca.c_str()});
  ASSERT_TRUE(all.serve) << all.message;
  EXPECT_EQ(all.options.cluster_tls_cert, cert);
  EXPECT_EQ(all.options.cluster_tls_key, key);
  EXPECT_EQ(all.options.cluster_tls_ca, ca);
  EXPECT_TRUE(agent({}).serve);  // none: plaintext, as before

  // Each one missing is named.
  auto no_ca = agent({"--cluster-tls-cert", cert.c_str(), "--cluster-tls-key", key.c_str()});
  EXPECT_FALSE(no_ca.serve);
  EXPECT_EQ(no_ca.exit_code, 2);
  EXPECT_NE(no_ca.message.find("cluster-tls-ca: missing"), std::string::npos) << no_ca.message;
  auto no_key = agent({"--cluster-tls-cert", cert.c_str(), "--cluster-tls-ca", ca.c_str()});
  EXPECT_NE(no_key.message.find("cluster-tls-key: missing"), std::string::npos) << no_key.message;
  auto no_cert = agent({"--cluster-tls-key", key.c_str(), "--cluster-tls-ca", ca.c_str()});
  EXPECT_NE(no_cert.message.find("cluster-tls-cert: missing"), std::string::npos)
      << no_cert.message;
  // A file that cannot be read is named with its flag.
  auto unreadable = agent({"--cluster-tls-cert", cert.c_str(), "--cluster-tls-key",
                           "/no/such/key.pem", "--cluster-tls-ca", ca.c_str()});
  EXPECT_FALSE(unreadable.serve);
  EXPECT_NE(unreadable.message.find("cluster-tls-key: cannot read '/no/such/key.pem'"),
            std::string::npos)
      << unreadable.message;
  // Only a cluster member has cluster links.
  auto single = Parse({"serve", "--cluster-tls-cert", cert.c_str(), "--cluster-tls-key",
                       key.c_str(), "--cluster-tls-ca", ca.c_str()});
  EXPECT_FALSE(single.serve);
  EXPECT_NE(single.message.find("--join"), std::string::npos) << single.message;
  // From the environment, as every serve flag.
  setenv("VECGPU_CLUSTER_TLS_CERT", cert.c_str(), 1);
  setenv("VECGPU_CLUSTER_TLS_KEY", key.c_str(), 1);
  setenv("VECGPU_CLUSTER_TLS_CA", ca.c_str(), 1);
  auto gateway = Parse({"gateway", "--etcd", "http://127.0.0.1:2379"});
  for (const char* v :
       {"VECGPU_CLUSTER_TLS_CERT", "VECGPU_CLUSTER_TLS_KEY", "VECGPU_CLUSTER_TLS_CA"}) {
    unsetenv(v);
  }
  ASSERT_TRUE(gateway.serve) << gateway.message;
  EXPECT_EQ(gateway.options.cluster_tls_ca, ca);
}

TEST_F(ConfigTest, EtcdTlsGoesWithHttpsUrls) {
  const std::string ca = TouchedFile("etcd-ca.pem"), cert = TouchedFile("etcd-client.pem"),
                    key = TouchedFile("etcd-client.key");
  auto gateway = [&](const char* urls, std::vector<const char*> extra) {
    std::vector<const char*> args = {"gateway", "--etcd", urls};
    args.insert(args.end(), extra.begin(), extra.end());
    return Parse(args);
  };
  auto full = gateway(
      "https://10.0.0.1:2379,https://10.0.0.2:2379",
      {"--etcd-cacert", ca.c_str(), "--etcd-cert", cert.c_str(), "--etcd-key", key.c_str()});
  ASSERT_TRUE(full.serve) << full.message;
  EXPECT_EQ(full.options.etcd.size(), 2u);
  EXPECT_EQ(full.options.etcd_cacert, ca);
  EXPECT_EQ(full.options.etcd_cert, cert);
  EXPECT_EQ(full.options.etcd_key, key);
  EXPECT_TRUE(gateway("https://10.0.0.1:2379", {}).serve);  // the system's roots
  EXPECT_TRUE(gateway("https://10.0.0.1:2379", {"--etcd-cacert", ca.c_str()}).serve);

  auto half = gateway("https://10.0.0.1:2379", {"--etcd-cert", cert.c_str()});
  EXPECT_FALSE(half.serve);
  EXPECT_NE(half.message.find("etcd-key: missing"), std::string::npos) << half.message;
  auto plain = gateway("http://10.0.0.1:2379", {"--etcd-cacert", ca.c_str()});
  EXPECT_FALSE(plain.serve);
  EXPECT_NE(plain.message.find("https://"), std::string::npos) << plain.message;
  auto mixed = gateway("https://10.0.0.1:2379,http://10.0.0.2:2379", {});
  EXPECT_FALSE(mixed.serve);
  EXPECT_NE(mixed.message.find("https://"), std::string::npos) << mixed.message;
  auto unreadable = gateway("https://10.0.0.1:2379", {"--etcd-cacert", "/no/such/ca.pem"});
  EXPECT_FALSE(unreadable.serve);
  EXPECT_NE(unreadable.message.find("etcd-cacert: cannot read"), std::string::npos)
      << unreadable.message;
  // An agent's --join takes them too; a single node has no etcd.
  EXPECT_TRUE(Parse({"serve", "--join", "https://10.0.0.1:2379", "--advertise", "h:1",
                     "--etcd-cacert", ca.c_str()})
                  .serve);
  EXPECT_FALSE(Parse({"serve", "--etcd-cacert", ca.c_str()}).serve);

  // `cluster status`: the same rules, and the flags (or VECGPU_ETCD*) handed on.
  auto status = Parse({"cluster", "status", "--etcd", "https://10.0.0.1:2379", "--etcd-cacert",
                       ca.c_str(), "--etcd-cert", cert.c_str(), "--etcd-key", key.c_str()});
  ASSERT_TRUE(status.cluster_status) << status.message;
  EXPECT_EQ(status.cluster_etcd_cacert, ca);
  EXPECT_EQ(status.cluster_etcd_cert, cert);
  EXPECT_EQ(status.cluster_etcd_key, key);
  auto bad_status = Parse({"cluster", "status", "--etcd", "http://10.0.0.1:2379", "--etcd-cert",
                           cert.c_str(), "--etcd-key", key.c_str()});
  EXPECT_FALSE(bad_status.cluster_status);
  EXPECT_EQ(bad_status.exit_code, 2);
  setenv("VECGPU_ETCD", "https://10.0.0.9:2379", 1);
  setenv("VECGPU_ETCD_CACERT", ca.c_str(), 1);
  auto from_env = Parse({"cluster", "status"});
  auto flag_wins = Parse({"cluster", "status", "--etcd", "https://10.0.0.1:2379,https://h:2"});
  unsetenv("VECGPU_ETCD");
  unsetenv("VECGPU_ETCD_CACERT");
  ASSERT_TRUE(from_env.cluster_status) << from_env.message;
  EXPECT_EQ(from_env.cluster_etcd, std::vector<std::string>{"https://10.0.0.9:2379"});
  EXPECT_EQ(from_env.cluster_etcd_cacert, ca);
  ASSERT_TRUE(flag_wins.cluster_status) << flag_wins.message;
  EXPECT_EQ(flag_wins.cluster_etcd,
            (std::vector<std::string>{"https://10.0.0.1:2379", "https://h:2"}));
}

TEST_F(ConfigTest, ClusterBackupAndRestoreTakeTheirFlags) {
  auto backup = Parse({"cluster", "backup", "c", "--etcd", "http://e1:2379,http://e2:2379",
                       "--tenant", "t", "--out", "/tmp/c.backup"});
  ASSERT_TRUE(backup.cluster_backup) << backup.message;
  EXPECT_EQ(backup.cluster_collection, "c");
  EXPECT_EQ(backup.cluster_tenant, "t");
  EXPECT_EQ(backup.cluster_file, "/tmp/c.backup");
  EXPECT_EQ(backup.cluster_etcd, (std::vector<std::string>{"http://e1:2379", "http://e2:2379"}));
  // The tenant and the file are required.
  EXPECT_FALSE(
      Parse({"cluster", "backup", "c", "--etcd", "http://e:1", "--out", "f"}).cluster_backup);
  EXPECT_FALSE(
      Parse({"cluster", "backup", "c", "--etcd", "http://e:1", "--tenant", "t"}).cluster_backup);

  auto restore = Parse({"cluster", "restore", "--etcd", "http://e:1", "--from", "f", "--as", "d",
                        "--replicas", "3", "--wait", "20", "--cluster-tls-cert", "c.pem",
                        "--cluster-tls-key", "k.pem", "--cluster-tls-ca", "ca.pem"});
  ASSERT_TRUE(restore.cluster_restore) << restore.message;
  EXPECT_EQ(restore.cluster_file, "f");
  EXPECT_EQ(restore.cluster_as, "d");
  EXPECT_TRUE(restore.cluster_tenant.empty());  // the backup's
  EXPECT_EQ(restore.cluster_replicas, 3);
  EXPECT_EQ(restore.cluster_restore_wait_s, 20);
  EXPECT_EQ(restore.cluster_tls_cert, "c.pem");
  EXPECT_EQ(restore.cluster_tls_key, "k.pem");
  EXPECT_EQ(restore.cluster_tls_ca, "ca.pem");
  EXPECT_EQ(
      Parse({"cluster", "restore", "--etcd", "http://e:1", "--from", "f"}).cluster_restore_wait_s,
      300);
  // The agents' TLS: all three files or none.
  auto half = Parse(
      {"cluster", "restore", "--etcd", "http://e:1", "--from", "f", "--cluster-tls-cert", "c.pem"});
  EXPECT_FALSE(half.cluster_restore);
  EXPECT_EQ(half.exit_code, 2);
  EXPECT_NE(half.message.find("all three or none"), std::string::npos) << half.message;
  EXPECT_FALSE(
      Parse({"cluster", "restore", "--etcd", "http://e:1", "--from", "f", "--replicas", "0"})
          .cluster_restore);
}

}  // namespace
}  // namespace vecgpu::server
