#include "core/tenant_registry.h"

#include <gtest/gtest.h>

namespace vecgpu {
namespace {

// The registry only stores collections, so a collection with no index is enough here.
std::shared_ptr<Collection> Make(const std::string& tenant, const std::string& name) {
  IndexSpec spec;
  spec.dim = 4;
  return std::make_shared<Collection>(tenant, name, spec, nullptr, LabelTable::kBaseView);
}

TEST(TenantRegistryTest, NamesArePerTenant) {
  TenantRegistry r(10);
  ASSERT_TRUE(r.Insert(Make("a", "docs")).ok());
  ASSERT_TRUE(r.Insert(Make("b", "docs")).ok());
  EXPECT_EQ(r.Insert(Make("a", "docs")).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ((*r.Get("a", "docs"))->tenant(), "a");
  EXPECT_EQ((*r.Get("b", "docs"))->tenant(), "b");
  EXPECT_EQ(r.Get("c", "docs").status().code(), StatusCode::kNotFound);
}

TEST(TenantRegistryTest, ListAndRemoveSeeOnlyTheTenant) {
  TenantRegistry r(10);
  ASSERT_TRUE(r.Insert(Make("a", "x")).ok());
  ASSERT_TRUE(r.Insert(Make("a", "y")).ok());
  ASSERT_TRUE(r.Insert(Make("ab", "z")).ok());
  auto a = r.List("a");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]->name(), "x");
  EXPECT_EQ(a[1]->name(), "y");
  EXPECT_EQ(r.Remove("b", "x").status().code(), StatusCode::kNotFound);
  auto held = r.Get("a", "x");
  ASSERT_TRUE(r.Remove("a", "x").ok());
  EXPECT_EQ((*held)->name(), "x");  // in-flight handles survive the drop
  EXPECT_EQ(r.size(), 2u);
}

TEST(TenantRegistryTest, PerTenantCap) {
  TenantRegistry r(2);
  ASSERT_TRUE(r.Insert(Make("a", "1")).ok());
  ASSERT_TRUE(r.Insert(Make("a", "2")).ok());
  EXPECT_EQ(r.Insert(Make("a", "3")).code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(r.Insert(Make("b", "1")).ok());
  ASSERT_TRUE(r.Remove("a", "1").ok());
  EXPECT_TRUE(r.Insert(Make("a", "3")).ok());
}

}  // namespace
}  // namespace vecgpu
