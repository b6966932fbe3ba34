#include "cpu_fallback/binary_backend.h"

#include <gtest/gtest.h>

namespace vecgpu::cpu {
namespace {

std::unique_ptr<Backend> Make(std::string_view type, int bits) {
  auto spec = ParseIndexType(type, bits);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  auto b = BinaryBackend::Create(*spec);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? std::move(b).value() : nullptr;
}

TEST(BinaryBackendTest, HammingSearchAndRoundTrip) {
  auto b = Make("BINARY_FLAT", 16);
  // Three 16-bit vectors, one 0/1 float per bit.
  std::vector<float> x(3 * 16, 0.f);
  x[0] = 1;                                    // vector 0: bit 0
  for (int i = 0; i < 16; ++i) x[16 + i] = 1;  // vector 1: all bits
  x[32 + 0] = 1, x[32 + 1] = 1;                // vector 2: bits 0, 1
  ASSERT_TRUE(b->Add(3, x.data()).ok());
  std::vector<float> d(3);
  std::vector<int64_t> l(3);
  ASSERT_TRUE(b->Search(1, x.data(), 3, {}, d.data(), l.data()).ok());
  EXPECT_EQ(l, (std::vector<int64_t>{0, 2, 1}));
  EXPECT_EQ(d, (std::vector<float>{0, 1, 15}));
  std::vector<float> back(16);
  ASSERT_TRUE(b->Reconstruct(2, back.data()).ok());
  EXPECT_EQ(back, std::vector<float>(x.begin() + 32, x.begin() + 48));
  auto r = b->RangeSearch(1, x.data(), 2.f, {});  // Hamming distance < 2
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->lims[1], 2);
}

TEST(BinaryBackendTest, RejectsValuesOtherThanBits) {
  auto b = Make("BINARY_FLAT", 8);
  std::vector<float> x(8, 0.f);
  x[3] = 0.5f;
  Status s = b->Add(1, x.data());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("bit 3"), std::string::npos);
  EXPECT_EQ(b->Info().ntotal, 0);
}

TEST(BinaryBackendTest, IvfNeedsTrainingAndTakesNprobePerRequest) {
  auto b = Make("BINARY_IVF4", 32);
  EXPECT_FALSE(b->Info().is_trained);
  std::vector<float> x(200 * 32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = ((i * 2654435761u) >> 7) & 1;
  ASSERT_TRUE(b->Train(200, x.data()).ok());
  ASSERT_TRUE(b->Add(200, x.data()).ok());
  std::vector<float> d(1);
  std::vector<int64_t> l(1);
  SearchParams all;
  all.nprobe = 4;
  ASSERT_TRUE(b->Search(1, x.data() + 5 * 32, 1, all, d.data(), l.data()).ok());
  EXPECT_EQ(d[0], 0.f);
  EXPECT_EQ(*b->GetParameter("nprobe"), 1);
}

// Radii far past the dimension find everything, and negative ones nothing, without
// overflowing the int FAISS takes (a radius of 9e15 was undefined behaviour).
TEST(BinaryBackendTest, RangeSearchClampsHugeRadii) {
  auto b = Make("BINARY_FLAT", 16);
  std::vector<float> x(10 * 16);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (i * 7 % 3) == 0;
  ASSERT_TRUE(b->Add(10, x.data()).ok());
  auto all = b->RangeSearch(1, x.data(), 9.0072e15f, {});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->lims[1], 10);
  auto none = b->RangeSearch(1, x.data(), -1e30f, {});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->lims[1], 0);
}

}  // namespace
}  // namespace vecgpu::cpu
