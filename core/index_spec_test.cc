#include "core/index_spec.h"

#include <gtest/gtest.h>

namespace vecgpu {
namespace {

IndexSpec Parse(std::string_view t, int dim = 64, std::string_view metric = {}) {
  auto s = ParseIndexType(t, dim, metric);
  EXPECT_TRUE(s.ok()) << t << ": " << s.status().ToString();
  return s.ok() ? *s : IndexSpec{};
}

TEST(IndexSpecTest, FaissxShorthands) {
  EXPECT_EQ(Parse("L2").factory, "Flat");
  EXPECT_EQ(Parse("L2").metric, Metric::kL2);
  EXPECT_EQ(Parse("IP").metric, Metric::kInnerProduct);
  EXPECT_EQ(Parse("IVF").factory, "IVF100,Flat");
  EXPECT_EQ(Parse("IVF256").factory, "IVF256,Flat");
  EXPECT_EQ(Parse("IVF256").nlist, 256);
  EXPECT_EQ(Parse("IVF64,PQ8x4").factory, "IVF64,PQ8x4");
  EXPECT_EQ(Parse("IVF64,PQ8x4").pq_nbits, 4);
  EXPECT_EQ(Parse("HNSW").factory, "HNSW32");
  EXPECT_EQ(Parse("HNSW16").hnsw_m, 16);
  EXPECT_EQ(Parse("PQ").factory, "PQ8x8");
  EXPECT_EQ(Parse("PQ16x8").pq_m, 16);
  EXPECT_EQ(Parse("HNSW16").kind(), "HNSW");
  EXPECT_EQ(Parse("IVF64,PQ8x4").kind(), "IVF_PQ");
}

TEST(IndexSpecTest, IpSuffixOnEveryKind) {
  for (auto t : {"IVF16_IP", "HNSW32_IP", "PQ8x8_IP", "SQ8_IP", "IVF16_SQ0_IP", "L2_IP"}) {
    EXPECT_EQ(Parse(t).metric, Metric::kInnerProduct) << t;
  }
  EXPECT_EQ(Parse("IVF16_IP").factory, "IVF16,Flat");
}

TEST(IndexSpecTest, ScalarQuantizerNumberings) {
  // IndexScalarQuantizer: faissx's constants; IVF{n}_SQ{q}: FAISS's enum.
  EXPECT_EQ(Parse("SQ8").factory, "SQ8");
  EXPECT_EQ(Parse("SQ4").factory, "SQ4");
  EXPECT_EQ(Parse("SQ16").factory, "SQfp16");
  EXPECT_EQ(Parse("SQfp16").factory, "SQfp16");
  EXPECT_EQ(Parse("SQ1").factory, "SQ8");              // faissx QT_8bit
  EXPECT_EQ(Parse("SQ7").factory, "SQ6");              // faissx QT_6bit
  EXPECT_EQ(Parse("IVF16_SQ0").factory, "IVF16,SQ8");  // FAISS QT_8bit
  EXPECT_EQ(Parse("IVF16_SQ1").factory, "IVF16,SQ4");  // FAISS QT_4bit
  EXPECT_EQ(Parse("IVF16_SQ4").factory, "IVF16,SQfp16");
  EXPECT_EQ(Parse("IVF16_SQ8").factory, "IVF16,SQ8");
  EXPECT_EQ(Parse("SQ8").kind(), "SQ");
}

TEST(IndexSpecTest, IdMaps) {
  IndexSpec s = Parse("IDMap:base-1");
  EXPECT_EQ(s.id_map, IdMapKind::kIdMap);
  EXPECT_EQ(s.base_index_id, "base-1");
  EXPECT_EQ(Parse("IDMap2:b").id_map, IdMapKind::kIdMap2);
  IndexSpec f = Parse("IDMap2,HNSW32");
  EXPECT_EQ(f.id_map, IdMapKind::kIdMap2);
  EXPECT_EQ(f.factory, "HNSW32");
  EXPECT_FALSE(ParseIndexType("IDMap:", 8).ok());
}

TEST(IndexSpecTest, BinaryKinds) {
  EXPECT_EQ(Parse("BINARY_FLAT", 64).factory, "BFlat");
  EXPECT_TRUE(Parse("BINARY_FLAT", 64).binary);
  EXPECT_EQ(Parse("BINARY_IVF32", 64).factory, "BIVF32");
  EXPECT_EQ(Parse("BINARY_HASH16", 64).factory, "BHash16");
  auto bad = ParseIndexType("BINARY_FLAT", 12);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseIndexType("BINARY_NOPE", 64).ok());
}

TEST(IndexSpecTest, PlainFactoryStringsWithMetric) {
  IndexSpec s = Parse("OPQ8,IVF32,PQ8", 64, "IP");
  EXPECT_EQ(s.factory, "OPQ8,IVF32,PQ8");
  EXPECT_EQ(s.metric, Metric::kInnerProduct);
  EXPECT_EQ(s.nlist, 32);
  EXPECT_EQ(Parse("HNSW24,Flat", 64, "METRIC_INNER_PRODUCT").hnsw_m, 24);
  EXPECT_FALSE(ParseIndexType("Flat", 8, "COSINE").ok());
  EXPECT_FALSE(ParseIndexType("", 8).ok());
}

// FAISS 1.7.3 crashes, aborts or loops on these; they must be refused before it sees them.
TEST(IndexSpecTest, DegenerateFactoryParametersAreRefused) {
  for (auto t : {"PQ0",         "IVF4,PQ0",       "PQ4x0",
                 "IVF4,PQ2x0",  "PQ4x65",         "IVF0",
                 "IVF0_SQ0",    "IVF0,PQ2",       "IVF4_HNSW0,Flat",
                 "OPQ0,Flat",   "HNSW0",          "HNSW1",
                 "RQ1x0",       "NSG0",           "PQ3",
                 "IVF4,PQ3",    "PCA8,Flat",      "IVF99999999999,Flat",
                 "Flat,Flat",   "IVF4,Flat,Flat", "HNSW300",
                 "BINARY_IVF0", "BINARY_HASH0",   "BINARY_HASH99"}) {
    auto s = ParseIndexType(t, std::string(t).rfind("BINARY", 0) == 0 ? 8 : 4);
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << t;
    if (!s.ok()) {
      EXPECT_EQ(s.status().message().rfind("index_type", 0), 0u)
          << t << ": " << s.status().message();
    }
  }
}

TEST(IndexSpecTest, SupportedFactoryStrings) {
  for (auto t : {"Flat", "IVF4,Flat", "IVF4_HNSW16,Flat", "IVF4,PQ2x4", "IVF4,SQfp16",
                 "HNSW16,Flat", "HNSW16_SQ8", "PCA2,Flat", "OPQ2,IVF4,PQ2", "OPQ2_4,PQ2",
                 "L2norm,Flat", "PQ4x12", "RR4,Flat", "PCAR2,HNSW8"}) {
    EXPECT_TRUE(ParseIndexType(t, 4).ok()) << t << ": " << ParseIndexType(t, 4).status().ToString();
  }
}

}  // namespace
}  // namespace vecgpu
