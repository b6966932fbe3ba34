#include "cpu_fallback/faiss_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "cpu_fallback/test_data.h"

namespace vecgpu::cpu {
namespace {

using vecgpu::testing::Clustered;

std::unique_ptr<Backend> Make(std::string_view type, int dim) {
  auto spec = ParseIndexType(type, dim);
  EXPECT_TRUE(spec.ok());
  auto b = FaissBackend::Create(*spec);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? std::move(b).value() : nullptr;
}

// Exact k-NN labels by brute force (squared L2).
std::vector<int64_t> BruteForce(const FloatMatrix& base, const float* q, int k) {
  std::vector<std::pair<float, int64_t>> d;
  for (int64_t i = 0; i < base.rows; ++i) {
    float s = 0;
    for (int j = 0; j < base.cols; ++j) s += (base.row(i)[j] - q[j]) * (base.row(i)[j] - q[j]);
    d.emplace_back(s, i);
  }
  std::partial_sort(d.begin(), d.begin() + k, d.end());
  std::vector<int64_t> out;
  for (int i = 0; i < k; ++i) out.push_back(d[i].second);
  return out;
}

// recall@k of the first nq rows of x searched in b, against brute force over x.
double Recall(const Backend& b, const FloatMatrix& x, int nq, int k, SearchParams p) {
  std::vector<float> d(nq * k);
  std::vector<int64_t> l(nq * k);
  EXPECT_TRUE(b.Search(nq, x.data.data(), k, p, d.data(), l.data()).ok());
  int hits = 0;
  for (int q = 0; q < nq; ++q) {
    auto truth = BruteForce(x, x.row(q), k);
    std::set<int64_t> got(l.begin() + q * k, l.begin() + (q + 1) * k);
    for (auto t : truth) hits += got.count(t);
  }
  return hits / double(nq * k);
}

TEST(FaissBackendTest, FlatIsExact) {
  auto b = Make("L2", 16);
  FloatMatrix x = Clustered(500, 16);
  ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
  EXPECT_EQ(b->Info().ntotal, 500);
  std::vector<float> d(5);
  std::vector<int64_t> l(5);
  ASSERT_TRUE(b->Search(1, x.row(42), 5, {}, d.data(), l.data()).ok());
  EXPECT_EQ(l, BruteForce(x, x.row(42), 5));
  EXPECT_FLOAT_EQ(d[0], 0.f);
}

TEST(FaissBackendTest, BadFactoryStringIsInvalidArgument) {
  IndexSpec spec;  // bypasses ParseIndexType, which would refuse it first
  spec.index_type = spec.factory = "NotAnIndex42";
  spec.dim = 8;
  auto b = FaissBackend::Create(spec);
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find("NotAnIndex42"), std::string::npos);
}

TEST(FaissBackendTest, PerRequestNprobeLeavesIndexUntouched) {
  auto b = Make("IVF32", 16);
  FloatMatrix x = Clustered(2000, 16, 40);
  ASSERT_TRUE(b->Train(x.rows, x.data.data()).ok());
  ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
  const int k = 20, nq = 50;
  auto recall = [&](SearchParams p) { return Recall(*b, x, nq, k, p); };
  double one = recall({});
  SearchParams all;
  all.nprobe = 32;
  EXPECT_DOUBLE_EQ(recall(all), 1.0);
  EXPECT_LT(one, 1.0);
  EXPECT_EQ(*b->GetParameter("nprobe"), 1);  // the request's nprobe did not stick
  ASSERT_TRUE(b->SetParameter("nprobe", 32).ok());
  EXPECT_DOUBLE_EQ(recall({}), 1.0);
  EXPECT_FALSE(b->SetParameter("nprobe", 33).ok());
  EXPECT_FALSE(b->SetParameter("efSearch", 10).ok());
}

TEST(FaissBackendTest, PerRequestEfSearch) {
  auto b = Make("HNSW8", 16);
  FloatMatrix x = Clustered(3000, 16, 50);
  ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
  const int k = 50, nq = 40;
  auto recall = [&](SearchParams p) { return Recall(*b, x, nq, k, p); };
  SearchParams low, high;
  low.ef_search = 1;
  high.ef_search = 400;
  EXPECT_GT(recall(high), recall(low));
  EXPECT_EQ(*b->GetParameter("efSearch"), 16);  // FAISS's default, untouched
}

TEST(FaissBackendTest, IvfLabelsSurviveRemoval) {
  auto b = Make("IVF8", 8);
  FloatMatrix x = Clustered(200, 8);
  ASSERT_TRUE(b->Train(x.rows, x.data.data()).ok());
  ASSERT_TRUE(b->Add(100, x.data.data()).ok());
  EXPECT_FALSE(b->labels_shift_on_remove());
  const int64_t gone[] = {3, 50, 9999};
  EXPECT_EQ(*b->RemoveLabels(gone), 2);
  EXPECT_EQ(b->Info().ntotal, 98);
  EXPECT_EQ(b->next_label(), 100);  // labels are never reused
  ASSERT_TRUE(b->Add(1, x.row(150)).ok());
  std::vector<float> v(8);
  ASSERT_TRUE(b->Reconstruct(100, v.data()).ok());
  EXPECT_EQ(v, std::vector<float>(x.row(150), x.row(150) + 8));
  EXPECT_EQ(b->Reconstruct(3, v.data()).code(), StatusCode::kNotFound);
  auto labels = b->LabelsAt(0, 5);
  EXPECT_EQ(labels, (std::vector<int64_t>{0, 1, 2, 4, 5}));
}

TEST(FaissBackendTest, FlatLabelsShiftOnRemoval) {
  auto b = Make("L2", 4);
  FloatMatrix x = Clustered(10, 4);
  ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
  EXPECT_TRUE(b->labels_shift_on_remove());
  const int64_t gone[] = {0};
  EXPECT_EQ(*b->RemoveLabels(gone), 1);
  std::vector<float> v(4);
  ASSERT_TRUE(b->Reconstruct(0, v.data()).ok());
  EXPECT_EQ(v, std::vector<float>(x.row(1), x.row(1) + 4));
}

// Range search: native for flat and IVF, a scan over stored codes for the others. For HNSW
// the scan is exact over the stored vectors, so it must equal flat's answer.
TEST(FaissBackendTest, RangeSearchEveryKind) {
  FloatMatrix x = Clustered(400, 16);
  auto flat = Make("L2", 16);
  ASSERT_TRUE(flat->Add(x.rows, x.data.data()).ok());
  auto expected = flat->RangeSearch(3, x.data.data(), 20.f, {});
  ASSERT_TRUE(expected.ok());
  ASSERT_GT(expected->lims[3], 3);
  for (auto type : {"HNSW16", "IVF4", "SQ8", "PQ4x8"}) {
    auto b = Make(type, 16);
    ASSERT_TRUE(b->Train(x.rows, x.data.data()).ok());
    ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
    SearchParams all;
    all.nprobe = 4;
    auto r = b->RangeSearch(3, x.data.data(), 20.f, all);
    ASSERT_TRUE(r.ok()) << type << ": " << r.status().ToString();
    ASSERT_EQ(r->lims.size(), 4u);
    for (size_t i = 0; i < r->labels.size(); ++i) EXPECT_LT(r->distances[i], 20.f);
    if (std::string(type) == "HNSW16" || std::string(type) == "IVF4") {
      std::multiset<int64_t> a(expected->labels.begin(), expected->labels.end());
      std::multiset<int64_t> got(r->labels.begin(), r->labels.end());
      EXPECT_EQ(a, got) << type;
    } else {
      EXPECT_GT(r->lims[3], 0) << type;  // approximate codes still find the query's own row
    }
  }
}

TEST(FaissBackendTest, ResetKeepsTraining) {
  auto b = Make("IVF4", 8);
  FloatMatrix x = Clustered(100, 8);
  ASSERT_TRUE(b->Train(x.rows, x.data.data()).ok());
  ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
  ASSERT_TRUE(b->Reset().ok());
  EXPECT_EQ(b->Info().ntotal, 0);
  EXPECT_TRUE(b->Info().is_trained);
  EXPECT_EQ(b->next_label(), 0);
}

TEST(FaissBackendTest, TransformChain) {
  auto b = Make("PCA4,Flat", 16);
  FloatMatrix x = Clustered(300, 16);
  auto steps = b->Transforms();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].type, "PCAMatrix");
  EXPECT_FALSE(steps[0].is_trained);
  EXPECT_EQ(b->ApplyTransform(1, x.data.data()).status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(b->Train(x.rows, x.data.data()).ok());
  auto y = b->ApplyTransform(2, x.data.data());
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  EXPECT_EQ(y->rows, 2);
  EXPECT_EQ(y->cols, 4);
  EXPECT_TRUE(Make("L2", 4)->Transforms().empty());
  EXPECT_EQ(Make("L2", 4)->ApplyTransform(1, x.data.data()).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(FaissBackendTest, TrainingErrorsAreStatuses) {
  auto b = Make("IVF64", 8);
  FloatMatrix x = Clustered(10, 8);
  Status s = b->Train(x.rows, x.data.data());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(b->Info().is_trained);
  auto hnsw = Make("HNSW8", 8);
  ASSERT_TRUE(hnsw->Add(x.rows, x.data.data()).ok());
  const int64_t ids[] = {1};
  EXPECT_EQ(hnsw->RemoveLabels(ids).status().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace vecgpu::cpu
