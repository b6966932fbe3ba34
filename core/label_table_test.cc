#include "core/label_table.h"

#include <gtest/gtest.h>

#include <cstring>

namespace vecgpu {
namespace {

constexpr LabelTable::View kBase = LabelTable::kBaseView;

TEST(LabelTableTest, ViewsSeeTheirOwnIdsAndTheBaseSeesAll) {
  LabelTable t;
  const LabelTable::View a = t.NewView(), b = t.NewView();
  EXPECT_NE(a, b);
  t.Append(0, 2, kBase, {});
  const int64_t ids_a[] = {100, 200};
  t.Append(2, 2, a, ids_a);
  const int64_t ids_b[] = {100};
  t.Append(4, 1, b, ids_b);
  EXPECT_EQ(t.size(), 5);
  EXPECT_EQ(t.CountOf(kBase), 5);
  EXPECT_EQ(t.CountOf(a), 2);
  EXPECT_EQ(t.CountOf(b), 1);
  EXPECT_EQ(t.LabelOf(a, 100), 2);
  EXPECT_EQ(t.LabelOf(b, 100), 4);  // the same id in two views names two vectors
  EXPECT_EQ(t.LabelOf(a, 7), -1);
  EXPECT_EQ(t.IdOf(a, 3), 200);
  EXPECT_EQ(t.IdOf(b, 3), -1);     // owned by a
  EXPECT_EQ(t.IdOf(kBase, 3), 3);  // the base names every vector by its label
  EXPECT_EQ(t.LabelsOf(a), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.LabelsOf(kBase), (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(LabelTableTest, ShiftingRemovalThroughOneViewRenumbersEveryView) {
  // The defect this table replaced: two IDMap wrappers over one flat base, each with its own
  // map; a removal through one shifted the base's positions and left the other's map stale.
  LabelTable t;
  const LabelTable::View a = t.NewView(), b = t.NewView();
  const int64_t ids_a[] = {10, 11};
  const int64_t ids_b[] = {20, 21};
  t.Append(0, 2, a, ids_a);
  t.Append(2, 2, b, ids_b);
  const int64_t gone[] = {0};  // id 10 of view a
  t.Erase(gone, /*shift=*/true);
  EXPECT_EQ(t.LabelOf(a, 10), -1);
  EXPECT_EQ(t.LabelOf(a, 11), 0);
  EXPECT_EQ(t.LabelOf(b, 20), 1);
  EXPECT_EQ(t.LabelOf(b, 21), 2);
  EXPECT_EQ(t.IdOf(b, 2), 21);
  EXPECT_EQ(t.size(), 3);
}

TEST(LabelTableTest, RemovalWithoutShiftLeavesHolesAndClearForgetsAll) {
  LabelTable t;
  const LabelTable::View a = t.NewView();
  const int64_t ids[] = {1, 2, 3};
  t.Append(5, 3, a, ids);
  const int64_t gone[] = {6, 99};
  t.Erase(gone, /*shift=*/false);
  EXPECT_EQ(t.LabelOf(a, 3), 7);
  EXPECT_EQ(t.IdOf(a, 6), -1);
  EXPECT_EQ(t.LabelOf(kBase, 6), -1);
  EXPECT_EQ(t.LabelOf(kBase, 7), 7);
  EXPECT_EQ(t.CountOf(a), 2);
  t.Clear();
  EXPECT_EQ(t.size(), 0);
  EXPECT_EQ(t.LabelOf(a, 1), -1);
  // After a reset of the base, a view must not name vectors added later through the base.
  t.Append(0, 3, kBase, {});
  EXPECT_EQ(t.CountOf(a), 0);
  EXPECT_EQ(t.IdOf(a, 0), -1);
}

// An upsert appends the id's new vector first, then erases the old label: the id must stay.
TEST(LabelTableTest, ErasingAnIdsOldLabelKeepsItsNewOne) {
  LabelTable t;
  const LabelTable::View a = t.NewView();
  const int64_t ids[] = {7, 8};
  t.Append(0, 2, a, ids);
  const int64_t again[] = {7};
  t.Append(2, 1, a, again);
  const int64_t old[] = {0};
  t.Erase(old, /*shift=*/false);
  EXPECT_EQ(t.LabelOf(a, 7), 2);
  EXPECT_EQ(t.CountOf(a), 2);
  t.Erase(std::vector<int64_t>{1}, /*shift=*/true);  // and with renumbering
  EXPECT_EQ(t.LabelOf(a, 7), 0);
  EXPECT_EQ(t.CountOf(a), 1);
}

TEST(LabelTableTest, EncodesAndDecodesEveryView) {
  LabelTable t;
  const LabelTable::View a = t.NewView(), b = t.NewView();
  t.Append(0, 3, LabelTable::kBaseView, {});
  const int64_t ids_a[] = {100, 101};
  t.Append(3, 2, a, ids_a);
  const int64_t ids_b[] = {7};
  t.Append(5, 1, b, ids_b);
  const int64_t gone[] = {1};
  t.Erase(gone, /*shift=*/false);  // an IVF-style hole
  auto back = LabelTable::Decode(t.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->size(), t.size());
  EXPECT_EQ(back->next_view(), t.next_view());
  for (LabelTable::View v : {LabelTable::kBaseView, a, b}) {
    EXPECT_EQ(back->LabelsOf(v), t.LabelsOf(v));
    EXPECT_EQ(back->CountOf(v), t.CountOf(v));
  }
  EXPECT_EQ(back->LabelOf(a, 101), 4);
  EXPECT_EQ(back->IdOf(b, 5), 7);
  EXPECT_EQ(back->LabelOf(LabelTable::kBaseView, 1), -1);
  // Damage is named, never crashes.
  const std::string bytes = t.Encode();
  EXPECT_EQ(LabelTable::Decode(bytes.substr(0, 20)).status().code(), StatusCode::kDataLoss);
  std::string unknown_view = bytes;
  unknown_view[12 + 12 * 3] = 9;  // label 3's owner
  EXPECT_EQ(LabelTable::Decode(unknown_view).status().code(), StatusCode::kDataLoss);
  std::string twice = bytes;
  std::memcpy(twice.data() + 16 + 12 * 4, twice.data() + 16 + 12 * 3, 8);  // id 100 twice
  EXPECT_EQ(LabelTable::Decode(twice).status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace vecgpu
