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

}  // namespace
}  // namespace vecgpu::server
