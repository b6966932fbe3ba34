#include "core/key_table.h"

#include <gtest/gtest.h>

namespace vecgpu {
namespace {

TEST(KeyTableTest, PutFindEraseAndEncode) {
  KeyTable k;
  k.Put(1, "a", 0, 10);
  k.Put(1, "b", 5, 20);
  k.Put(2, "a", 0, 30);
  EXPECT_EQ(k.NextId(1), 6);
  EXPECT_EQ(k.Find(1, "b")->id, 5);
  EXPECT_EQ(*k.KeyOf(2, 0), "a");
  k.Put(1, "a", 0, 11);  // restamp
  EXPECT_EQ(k.Find(1, "a")->timestamp, 11);
  EXPECT_TRUE(k.Erase(1, "a"));
  EXPECT_FALSE(k.Erase(1, "a"));
  k.EraseId(2, 0);
  EXPECT_EQ(k.Count(2), 0);
  EXPECT_EQ(k.NextId(2), 1);  // never reused
  auto back = KeyTable::Decode(k.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->Find(1, "b")->id, 5);
  EXPECT_EQ(back->Find(1, "b")->timestamp, 20);
  EXPECT_EQ(back->NextId(1), 6);
  EXPECT_EQ(back->NextId(2), 1);
  EXPECT_EQ(KeyTable().Encode(), "");
  EXPECT_TRUE(KeyTable::Decode("").ok());
  const std::string bytes = k.Encode();
  for (size_t cut = 1; cut < bytes.size(); ++cut) {
    EXPECT_EQ(KeyTable::Decode(bytes.substr(0, cut)).status().code(), StatusCode::kDataLoss);
  }
}

}  // namespace
}  // namespace vecgpu
