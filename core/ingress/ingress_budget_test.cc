#include "core/ingress/ingress_budget.h"

#include <gtest/gtest.h>

namespace vecgpu {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

IngressOptions Small() {
  IngressOptions o;
  o.max_inflight_bytes = 10 * kMiB;
  o.max_tenant_inflight_bytes = 6 * kMiB;
  o.max_connection_inflight_bytes = 4 * kMiB;
  o.max_unauthenticated_bytes = 3 * kMiB;
  o.unauthenticated_free_bytes = 64 << 10;
  EXPECT_TRUE(o.Validate().ok());
  return o;
}

TEST(IngressBudgetTest, UnauthenticatedBytesHaveABudgetOfTheirOwn) {
  IngressBudget b(Small());
  auto h1 = b.Admit("c1", 2 * kMiB);
  ASSERT_TRUE(h1.ok());
  auto h2 = b.Admit("c2", 2 * kMiB);  // 4 MiB unauthenticated > 3
  ASSERT_FALSE(h2.ok());
  EXPECT_EQ(h2.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(h2.status().message().find("--max-unauthenticated-mb"), std::string::npos);
  // Small messages are not charged to it: a flood of large ones cannot stop them.
  EXPECT_TRUE(b.Admit("c3", 1000).ok());
  // Once authenticated, the bytes move to the tenant, freeing the unauthenticated budget.
  ASSERT_TRUE(b.Authenticated(**h1, "t").ok());
  EXPECT_EQ(b.usage().unauthenticated, 0);
  EXPECT_EQ(b.usage().tenants.at("t"), 2 * kMiB);
  EXPECT_TRUE(b.Admit("c2", 2 * kMiB).ok());
}

TEST(IngressBudgetTest, TenantConnectionAndTotalBoundsNameThemselves) {
  IngressBudget b(Small());
  auto a = b.Admit("c1", 3 * kMiB);
  ASSERT_TRUE(a.ok());
  auto c = b.Admit("c1", 2 * kMiB);  // the connection's 4 MiB
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("--max-connection-inflight-mb"), std::string::npos);
  ASSERT_TRUE(b.Authenticated(**a, "t").ok());
  auto d = b.Admit("c2", 2 * kMiB);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(b.Authenticated(**d, "t").ok());
  auto e = b.Admit("c3", 2 * kMiB);
  ASSERT_TRUE(e.ok());
  Status over = b.Authenticated(**e, "t");  // the tenant's 6 MiB
  EXPECT_EQ(over.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("--max-tenant-inflight-mb"), std::string::npos);
  EXPECT_TRUE(b.Authenticated(**e, "u").ok());  // another tenant is not held up
  // Released when the holds go: everything is back to zero.
  a->reset();
  d->reset();
  e->reset();
  auto u = b.usage();
  EXPECT_EQ(u.total, 0);
  EXPECT_EQ(u.unauthenticated, 0);
  EXPECT_TRUE(u.tenants.empty());
}

TEST(IngressBudgetTest, ALoneRequestLargerThanABoundStillRuns) {
  IngressBudget b(Small());
  auto h = b.Admit("c", 20 * kMiB);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(b.Authenticated(**h, "t").ok());
}

}  // namespace
}  // namespace vecgpu
