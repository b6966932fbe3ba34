#include "core/id_map.h"

#include <gtest/gtest.h>

namespace vecgpu {
namespace {

TEST(IdMapTest, AppendAndLookUp) {
  IdMap m;
  const int64_t ids[] = {100, 200, 300};
  m.Append(0, ids);
  EXPECT_EQ(m.size(), 3);
  EXPECT_EQ(m.LabelOf(200), 1);
  EXPECT_EQ(m.IdOf(2), 300);
  EXPECT_EQ(m.LabelOf(7), -1);
  EXPECT_EQ(m.IdOf(3), -1);
  EXPECT_TRUE(m.Contains(100));
}

TEST(IdMapTest, EraseWithShiftRenumbersLikeFlatStorage) {
  IdMap m;
  const int64_t ids[] = {10, 11, 12, 13};
  m.Append(0, ids);
  const int64_t gone[] = {1};
  m.Erase(gone, /*shift=*/true);
  EXPECT_EQ(m.size(), 3);
  EXPECT_FALSE(m.Contains(11));
  EXPECT_EQ(m.IdOf(1), 12);
  EXPECT_EQ(m.LabelOf(13), 2);
}

TEST(IdMapTest, EraseWithoutShiftKeepsLabels) {
  IdMap m;
  const int64_t ids[] = {10, 11, 12};
  m.Append(5, ids);
  const int64_t gone[] = {6};
  m.Erase(gone, /*shift=*/false);
  EXPECT_EQ(m.IdOf(6), -1);
  EXPECT_EQ(m.LabelOf(12), 7);
  const int64_t more[] = {20};
  m.Append(8, more);
  EXPECT_EQ(m.LabelOf(20), 8);
  m.Clear();
  EXPECT_EQ(m.size(), 0);
}

}  // namespace
}  // namespace vecgpu
