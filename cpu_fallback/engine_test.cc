// Engine tests over the real FAISS CPU backend.
#include "core/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::Rows;

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() : engine_(MakeLimits(), factory_) {}
  static Limits MakeLimits() {
    Limits l;
    EXPECT_TRUE(l.Validate().ok());
    return l;
  }
  void Create(const std::string& tenant, const std::string& name, const std::string& type,
              int dim) {
    auto r = engine_.Create(tenant, {name, type, dim, ""});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  cpu::CpuBackendFactory factory_;
  Engine engine_;
};

TEST_F(EngineTest, TenantsAreIsolated) {
  Create("a", "docs", "L2", 8);
  Create("b", "docs", "L2", 8);
  FloatMatrix x = Clustered(10, 8);
  ASSERT_TRUE(engine_.Add("a", "docs", x, {}).ok());
  EXPECT_EQ(engine_.Describe("a", "docs")->backend.ntotal, 10);
  EXPECT_EQ(engine_.Describe("b", "docs")->backend.ntotal, 0);
  EXPECT_EQ(engine_.Search("c", "docs", Rows(x, 0, 1), 1, {}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(engine_.List("a").size(), 1u);
  EXPECT_TRUE(engine_.List("c").empty());
  ASSERT_TRUE(engine_.Drop("b", "docs").ok());
  EXPECT_EQ(engine_.Describe("a", "docs")->backend.ntotal, 10);
}

TEST_F(EngineTest, BadInputChangesNothing) {
  Create("t", "v", "L2", 4);
  FloatMatrix x = Clustered(3, 4);
  ASSERT_TRUE(engine_.Add("t", "v", x, {}).ok());
  FloatMatrix wrong = Clustered(2, 5);
  Status s = engine_.Add("t", "v", wrong, {}).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("dimension 5"), std::string::npos);
  FloatMatrix nan = Clustered(2, 4);
  nan.data[5] = std::nanf("");
  s = engine_.Add("t", "v", nan, {}).status();
  EXPECT_NE(s.message().find("vector 1 component 1"), std::string::npos);
  nan.data[5] = INFINITY;
  EXPECT_FALSE(engine_.Search("t", "v", nan, 1, {}).ok());
  EXPECT_FALSE(engine_.Search("t", "v", x, 0, {}).ok());
  EXPECT_FALSE(engine_.Search("t", "v", x, 10001, {}).ok());
  const int64_t wrong_ids[] = {1, 2};
  EXPECT_FALSE(engine_.Add("t", "v", x, wrong_ids).ok());
  EXPECT_EQ(engine_.Describe("t", "v")->backend.ntotal, 3);
  EXPECT_FALSE(engine_.Create("t", {"w", "L2", 0, ""}).ok());
  EXPECT_FALSE(engine_.Create("t", {"w", "L2", 10001, ""}).ok());
  EXPECT_FALSE(engine_.Create("t", {std::string(300, 'x'), "L2", 4, ""}).ok());
  EXPECT_EQ(engine_.Create("t", {"v", "L2", 4, ""}).status().code(), StatusCode::kAlreadyExists);
}

TEST_F(EngineTest, UntrainedIndexSaysNotTrained) {
  Create("t", "ivf", "IVF8", 8);
  FloatMatrix x = Clustered(500, 8);
  auto add = engine_.Add("t", "ivf", x, {});
  EXPECT_EQ(add.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_.Search("t", "ivf", Rows(x, 0, 1), 1, {}).status().code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(engine_.Train("t", "ivf", x).ok());
  EXPECT_TRUE(engine_.Add("t", "ivf", x, {}).ok());
}

TEST_F(EngineTest, ScalarQuantizerNeedsNoTrainCall) {
  Create("t", "sq", "SQ8", 8);
  EXPECT_TRUE(engine_.Describe("t", "sq")->backend.is_trained);
  FloatMatrix x = Clustered(100, 8);
  auto r = engine_.Add("t", "sq", x, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->ntotal, 100);
  auto s = engine_.Search("t", "sq", Rows(x, 7, 1), 1, {});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->labels[0], 7);
}

// "IDMap:{base}" shares the base's storage: training the base trains the map.
TEST_F(EngineTest, IdMapOverBaseSharesTrainingAndMapsIds) {
  Create("t", "base", "IVF4", 8);
  Create("t", "map", "IDMap2:base", 8);
  FloatMatrix x = Clustered(200, 8);
  ASSERT_TRUE(engine_.Train("t", "base", x).ok());
  std::vector<int64_t> ids(200);
  for (int i = 0; i < 200; ++i) ids[i] = 1000 + 3 * i;
  ASSERT_TRUE(engine_.Add("t", "map", x, ids).ok());
  SearchParams all;
  all.nprobe = 4;
  auto s = engine_.Search("t", "map", Rows(x, 10, 1), 1, all);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->labels[0], 1030);
  auto v = engine_.Reconstruct("t", "map", std::vector<int64_t>{1030});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->data, Rows(x, 10, 1).data);
  EXPECT_EQ(*engine_.Remove("t", "map", std::vector<int64_t>{1030, 1033, 5}), 2);
  s = engine_.Search("t", "map", Rows(x, 10, 1), 1, all);
  EXPECT_NE(s->labels[0], 1030);
  EXPECT_EQ(engine_.Reconstruct("t", "map", std::vector<int64_t>{1030}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(engine_.Create("t", {"m2", "IDMap:nope", 8, ""}).status().code(),
            StatusCode::kNotFound);
}

TEST_F(EngineTest, IdMapOverFlatUpsertsAndReplaces) {
  Create("t", "m", "IDMap,Flat", 4);
  FloatMatrix x = Clustered(4, 4);
  ASSERT_TRUE(engine_.Add("t", "m", x, std::vector<int64_t>{10, 20, 30, 40}).ok());
  EXPECT_FALSE(engine_.Add("t", "m", x, {}).ok());  // ids are required
  EXPECT_FALSE(engine_.Add("t", "m", Rows(x, 0, 2), std::vector<int64_t>{7, 7}).ok());
  EXPECT_FALSE(engine_.Add("t", "m", Rows(x, 0, 1), std::vector<int64_t>{-4}).ok());
  // Adding an existing id replaces its vector.
  ASSERT_TRUE(engine_.Add("t", "m", Rows(x, 3, 1), std::vector<int64_t>{20}).ok());
  EXPECT_EQ(engine_.Describe("t", "m")->backend.ntotal, 4);
  EXPECT_EQ(engine_.Reconstruct("t", "m", std::vector<int64_t>{20})->data, Rows(x, 3, 1).data);
  ASSERT_TRUE(engine_.Replace("t", "m", 10, Rows(x, 2, 1)).ok());
  EXPECT_EQ(engine_.Reconstruct("t", "m", std::vector<int64_t>{10})->data, Rows(x, 2, 1).data);
  EXPECT_EQ(engine_.Replace("t", "m", 99, Rows(x, 2, 1)).code(), StatusCode::kNotFound);
  std::vector<int64_t> ids;
  auto all = engine_.ReconstructRange("t", "m", 0, 10, &ids);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->rows, 4);
  EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()), (std::set<int64_t>{10, 20, 30, 40}));
}

TEST_F(EngineTest, PlainIndexesNumberVectorsThemselves) {
  Create("t", "f", "L2", 4);
  FloatMatrix x = Clustered(2, 4);
  EXPECT_TRUE(engine_.Add("t", "f", x, std::vector<int64_t>{0, 1}).ok());
  EXPECT_FALSE(engine_.Add("t", "f", x, std::vector<int64_t>{7, 8}).ok());
  EXPECT_FALSE(engine_.Replace("t", "f", 0, Rows(x, 0, 1)).ok());
}

TEST_F(EngineTest, MergeCopiesVectorsAndIds) {
  Create("t", "a", "IDMap2,Flat", 4);
  Create("t", "b", "IDMap2,Flat", 4);
  FloatMatrix x = Clustered(6, 4);
  ASSERT_TRUE(engine_.Add("t", "a", Rows(x, 0, 3), std::vector<int64_t>{1, 2, 3}).ok());
  ASSERT_TRUE(engine_.Add("t", "b", Rows(x, 3, 3), std::vector<int64_t>{4, 5, 6}).ok());
  auto n = engine_.Merge("t", "a", {"b"});
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 6);
  EXPECT_EQ(engine_.Reconstruct("t", "a", std::vector<int64_t>{5})->data, Rows(x, 4, 1).data);
  EXPECT_EQ(engine_.Describe("t", "b")->backend.ntotal, 3);  // the source keeps its vectors
  EXPECT_FALSE(engine_.Merge("t", "a", {"a"}).ok());
  EXPECT_FALSE(engine_.Merge("other", "a", {"b"}).ok());
}

TEST_F(EngineTest, ResetKeepsTypeAndTraining) {
  Create("t", "ivf", "IVF4", 8);
  FloatMatrix x = Clustered(100, 8);
  ASSERT_TRUE(engine_.Train("t", "ivf", x).ok());
  ASSERT_TRUE(engine_.Add("t", "ivf", x, {}).ok());
  ASSERT_TRUE(engine_.Reset("t", "ivf").ok());
  auto info = engine_.Describe("t", "ivf");
  EXPECT_EQ(info->backend.ntotal, 0);
  EXPECT_TRUE(info->backend.is_trained);
  EXPECT_EQ(info->spec.nlist, 4);
}

// A recluster rebuilds the coarse clustering; every vector keeps its label and id, including
// through an IDMap collection that shares the storage.
TEST_F(EngineTest, ReclusterKeepsVectorsAndIds) {
  Create("t", "ivf", "IVF4", 8);
  Create("t", "map", "IDMap2:ivf", 8);
  FloatMatrix x = Clustered(400, 8, 20);
  ASSERT_TRUE(engine_.Train("t", "ivf", x).ok());
  std::vector<int64_t> ids(400);
  for (int i = 0; i < 400; ++i) ids[i] = 5000 + i;
  ASSERT_TRUE(engine_.Add("t", "map", x, ids).ok());
  ASSERT_EQ(*engine_.Remove("t", "map", std::vector<int64_t>{5003}), 1);  // a gap in labels
  auto r = engine_.Recluster("t", "ivf", 16, 0.5);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->previous_nlist, 4);
  EXPECT_EQ(r->new_nlist, 16);
  EXPECT_EQ(r->ntotal, 399);
  EXPECT_EQ(engine_.Describe("t", "ivf")->spec.nlist, 16);
  SearchParams all;
  all.nprobe = 16;
  auto s = engine_.Search("t", "map", Rows(x, 42, 1), 1, all);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->labels[0], 5042);
  EXPECT_EQ(engine_.Reconstruct("t", "map", std::vector<int64_t>{5042})->data, Rows(x, 42, 1).data);
  EXPECT_EQ(engine_.Reconstruct("t", "map", std::vector<int64_t>{5003}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(engine_.Search("t", "ivf", Rows(x, 42, 1), 1, all)->labels[0], 42);
  EXPECT_FALSE(engine_.Recluster("t", "ivf", 1000, 0.5).ok());  // more lists than vectors
  EXPECT_FALSE(engine_.Recluster("t", "ivf", 8, 0).ok());
  Create("t", "flat", "L2", 8);
  EXPECT_EQ(engine_.Recluster("t", "flat", 8, 0.5).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, ClusteringShapes) {
  FloatMatrix x = Clustered(300, 8, 3);
  auto r = engine_.Cluster(x, 3, Metric::kL2, 10);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->centroids.rows, 3);
  EXPECT_EQ(r->assignments.size(), 300u);
  int64_t total = 0;
  for (auto s : r->cluster_sizes) total += s;
  EXPECT_EQ(total, 300);
  EXPECT_FALSE(engine_.Cluster(x, 301, Metric::kL2, 10).ok());
}

TEST_F(EngineTest, StatsCountSearches) {
  Create("t", "f", "L2", 4);
  FloatMatrix x = Clustered(20, 4);
  ASSERT_TRUE(engine_.Add("t", "f", x, {}).ok());
  ASSERT_TRUE(engine_.Search("t", "f", Rows(x, 0, 5), 3, {}).ok());
  auto info = engine_.Describe("t", "f");
  EXPECT_EQ(info->searches, 1);
  EXPECT_EQ(info->queries, 5);
  EXPECT_EQ(info->vectors_added, 20);
}

// One component of 1e20 in a batch of 20 made FAISS's BLAS distances NaN and its IVF add
// abort on `list_no < nlist` (found by the live fuzzer). Such vectors are refused up front.
TEST_F(EngineTest, VectorsWhoseDistancesOverflowAreRefused) {
  Create("t", "ivf", "IVF4", 16);
  FloatMatrix x = Clustered(64, 16);
  ASSERT_TRUE(engine_.Train("t", "ivf", x).ok());
  FloatMatrix big = Rows(x, 0, 20);
  big.data[3] = 1e20f;
  auto add = engine_.Add("t", "ivf", big, {});
  EXPECT_EQ(add.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(add.status().message().find("squared norm"), std::string::npos);
  EXPECT_EQ(engine_.Describe("t", "ivf")->backend.ntotal, 0);
  EXPECT_EQ(engine_.Train("t", "ivf", big).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_.Search("t", "ivf", big, 1, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_.Cluster(big, 2, Metric::kL2, 1).status().code(), StatusCode::kInvalidArgument);
  big.data[3] = 1e18f;  // large but safe
  EXPECT_TRUE(engine_.Add("t", "ivf", big, {}).ok());
}

}  // namespace
}  // namespace vecgpu
