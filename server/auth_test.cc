#include "server/auth.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace vecgpu::server {
namespace {

TEST(AuthTest, ParsesKeyList) {
  auto keys = ParseAuthKeys("k1:t1,k2:t2");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->at("k2"), "t2");
  EXPECT_FALSE(ParseAuthKeys("k1").ok());
  EXPECT_FALSE(ParseAuthKeys(":t").ok());
  EXPECT_FALSE(ParseAuthKeys("k:").ok());
}

TEST(AuthTest, LoadsJsonFile) {
  std::string path = ::testing::TempDir() + "/keys.json";
  std::ofstream(path) << R"({"alpha": "tenant-a", "beta": "tenant-b"})";
  auto keys = LoadAuthFile(path);
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(keys->at("beta"), "tenant-b");
  std::ofstream(path) << R"(["not", "an", "object"])";
  EXPECT_FALSE(LoadAuthFile(path).ok());
  EXPECT_FALSE(LoadAuthFile(path + ".missing").ok());
  std::remove(path.c_str());
}

TEST(AuthTest, EnabledWithoutKeysRefuses) {
  EXPECT_FALSE(Authenticator::Create(true, {}).ok());
  EXPECT_TRUE(Authenticator::Create(false, {}).ok());
}

TEST(AuthTest, TenantIsTheKeysTenant) {
  auto auth = Authenticator::Create(true, {{"ka", "a"}, {"kb", "b"}});
  ASSERT_TRUE(auth.ok());
  EXPECT_EQ(*auth->TenantOf("ka", std::nullopt), "a");
  EXPECT_EQ(*auth->TenantOf("kb", "b"), "b");
  auto wrong_tenant = auth->TenantOf("ka", "b");
  EXPECT_EQ(wrong_tenant.status().message(), "Invalid tenant ID");
  EXPECT_EQ(auth->TenantOf("nope", std::nullopt).status().message(), "Invalid API key");
  EXPECT_EQ(auth->TenantOf(std::nullopt, "a").status().message(), "API key required");
}

TEST(AuthTest, WithoutAuthTheTenantIdNamespaces) {
  auto auth = Authenticator::Create(false, {});
  EXPECT_EQ(*auth->TenantOf(std::nullopt, std::nullopt), "default");
  EXPECT_EQ(*auth->TenantOf("anything", "team-x"), "team-x");
}

}  // namespace
}  // namespace vecgpu::server
