#include "cpu_fallback/faiss_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

// Batches on large flat indexes are searched with the stored vectors split across the cores
// and the per-block results merged: the same neighbours as one query at a time, both metrics.
TEST(FaissBackendTest, BatchedFlatSearchEqualsOneQueryAtATime) {
  for (const char* type : {"L2", "IP"}) {
    auto b = Make(type, 16);
    FloatMatrix x = Clustered(10000, 16, 10000);
    ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
    const int nq = 9, k = 12;
    std::vector<float> d(nq * k), d1(k);
    std::vector<int64_t> l(nq * k), l1(k);
    ASSERT_TRUE(b->Search(nq, x.row(100), k, {}, d.data(), l.data()).ok());
    for (int q = 0; q < nq; ++q) {
      ASSERT_TRUE(b->Search(1, x.row(100 + q), k, {}, d1.data(), l1.data()).ok());
      for (int j = 0; j < k; ++j) {
        EXPECT_NEAR(d[q * k + j], d1[j], 1e-3 * (1 + std::fabs(d1[j]))) << type << " " << q;
      }
      if (std::string(type) == "L2") EXPECT_EQ(l[q * k], 100 + q);  // each finds itself first
    }
  }
}

// FAISS 1.7.3's flat search leaves its outputs unwritten on an empty index (found by the model
// test: a search of an empty L2 index answered id 0).
TEST(FaissBackendTest, EmptyIndexSearchReturnsNoResults) {
  for (const char* type : {"L2", "IP", "HNSW8", "SQ8"}) {
    auto b = Make(type, 4);
    std::vector<float> q(3 * 4, 0.5f), d(3 * 2, 7.f);
    std::vector<int64_t> l(3 * 2, 7);
    ASSERT_TRUE(b->Search(3, q.data(), 2, {}, d.data(), l.data()).ok()) << type;
    EXPECT_EQ(l, std::vector<int64_t>(6, -1)) << type;
  }
}

// FAISS 1.7.3 caps a request's efSearch at the index's own value (its candidate heap is sized
// from the index): efSearch 16, 64 and 256 gave the same recall. Each must count.
TEST(FaissBackendTest, PerRequestEfSearchAboveAndBelowTheIndexValue) {
  auto b = Make("HNSW8", 24);
  FloatMatrix x = Clustered(4000, 24, 4000);  // one point per "cluster": hard for a graph
  ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
  const int k = 10, nq = 100;
  auto recall = [&](int ef) {
    SearchParams p;
    p.ef_search = ef;
    return Recall(*b, x, nq, k, p);
  };
  const double at_default = Recall(*b, x, nq, k, {});
  const double at16 = recall(16), at256 = recall(256);
  EXPECT_GE(at256, 0.97);
  EXPECT_GT(at256, at16 + 0.02) << "a request's efSearch above the index's was ignored";
  EXPECT_NEAR(at16, at_default, 0.1);
  ASSERT_TRUE(b->SetParameter("efSearch", 256).ok());
  EXPECT_LT(recall(10), Recall(*b, x, nq, k, {})) << "a lower request efSearch was ignored";
  EXPECT_EQ(*b->GetParameter("efSearch"), 256);  // requests never change the index
}

// The exact copy of what is stored, for inner product too, with a transform in front.
TEST(FaissBackendTest, PerRequestEfSearchOnInnerProductBehindATransform) {
  auto spec = ParseIndexType("PCA8,HNSW8", 16, "IP");
  ASSERT_TRUE(spec.ok());
  auto made = FaissBackend::Create(*spec);
  ASSERT_TRUE(made.ok());
  auto& b = *made;
  FloatMatrix x = Clustered(500, 16);
  ASSERT_TRUE(b->Train(x.rows, x.data.data()).ok());
  ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
  std::vector<float> d1(5 * 3), d2(5 * 3);
  std::vector<int64_t> l1(5 * 3), l2(5 * 3);
  SearchParams p;
  p.ef_search = 500;
  ASSERT_TRUE(b->Search(5, x.data.data(), 3, p, d1.data(), l1.data()).ok());
  ASSERT_TRUE(b->SetParameter("efSearch", 500).ok());
  ASSERT_TRUE(b->Search(5, x.data.data(), 3, {}, d2.data(), l2.data()).ok());
  EXPECT_EQ(l1, l2);  // the same neighbours as FAISS's own search at that efSearch
  for (size_t i = 0; i < d1.size(); ++i) EXPECT_NEAR(d1[i], d2[i], 1e-3);
  EXPECT_GE(d1[0], d1[1]);  // inner product: most similar first
}

// A range search behind a transform must transform its queries (PCA4,HNSW8 missed vectors).
TEST(FaissBackendTest, RangeSearchBehindATransformFindsStoredVectors) {
  auto b = Make("PCA4,HNSW8", 8);
  FloatMatrix x = Clustered(300, 8);
  ASSERT_TRUE(b->Train(x.rows, x.data.data()).ok());
  ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok());
  auto r = b->RangeSearch(3, x.data.data(), 1e-3f, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (int q = 0; q < 3; ++q) {
    std::set<int64_t> hits(r->labels.begin() + r->lims[q], r->labels.begin() + r->lims[q + 1]);
    EXPECT_TRUE(hits.count(q)) << "query " << q << " did not find itself";
  }
}

// A scalar quantizer must not train on whatever arrives first: one vector, then many, used to
// give recall 0 (every query the same label).
TEST(FaissBackendTest, ScalarQuantizerTrainsOnEnoughVectors) {
  auto b = Make("SQ8", 16);
  EXPECT_TRUE(b->is_trained());  // serves at once, exactly, until it has enough to train on
  FloatMatrix x = Clustered(3001, 16, 3001);
  ASSERT_TRUE(b->Add(1, x.data.data()).ok());
  std::vector<float> v(16);
  ASSERT_TRUE(b->Reconstruct(0, v.data()).ok());
  EXPECT_EQ(v, std::vector<float>(x.row(0), x.row(0) + 16));  // still exact
  ASSERT_TRUE(b->Add(3000, x.row(1)).ok());
  EXPECT_EQ(b->ntotal(), 3001);
  EXPECT_GE(Recall(*b, x, 100, 10, {}), 0.9);
  ASSERT_TRUE(b->Reconstruct(0, v.data()).ok());
  for (int j = 0; j < 16; ++j) EXPECT_NEAR(v[j], x.row(0)[j], 0.5);  // label 0 kept its vector
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
  std::vector<float> rows(2 * 8);
  EXPECT_EQ(b->ReconstructN(2, 2, rows.data()).code(), StatusCode::kNotFound);  // 3 is gone
  ASSERT_TRUE(b->ReconstructN(4, 2, rows.data()).ok());
  EXPECT_EQ(std::vector<float>(rows.begin(), rows.begin() + 8),
            std::vector<float>(x.row(4), x.row(4) + 8));
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

// Serialize then Load gives an index that answers exactly as the original, keeps its labels
// and hands out new ones after them; bytes that are not an index are DataLoss.
TEST(FaissBackendTest, SerializedIndexesLoadBack) {
  const FloatMatrix x = Clustered(600, 16);
  for (const char* type : {"L2", "IP", "IVF8", "IVF8,PQ4", "IVF8_SQ8", "HNSW8", "PCA8,IVF4,Flat"}) {
    auto b = Make(type, 16);
    ASSERT_TRUE(b);
    ASSERT_TRUE(b->Train(x.rows, x.data.data()).ok()) << type;
    ASSERT_TRUE(b->Add(x.rows, x.data.data()).ok()) << type;
    if (b->can_remove()) {
      const int64_t gone[] = {3, 599};
      ASSERT_TRUE(b->RemoveLabels(gone).ok()) << type;
    }
    auto bytes = b->Serialize();
    ASSERT_TRUE(bytes.ok()) << type;
    std::string_view view(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    auto loaded = FaissBackend::Load(b->spec(), view, b->next_label());
    ASSERT_TRUE(loaded.ok()) << type << ": " << loaded.status().message();
    EXPECT_EQ((*loaded)->ntotal(), b->ntotal()) << type;
    EXPECT_EQ((*loaded)->next_label(), b->next_label()) << type;
    const int k = 5, nq = 20;
    std::vector<float> d1(nq * k), d2(nq * k);
    std::vector<int64_t> l1(nq * k), l2(nq * k);
    ASSERT_TRUE(b->Search(nq, x.data.data(), k, {}, d1.data(), l1.data()).ok());
    ASSERT_TRUE((*loaded)->Search(nq, x.data.data(), k, {}, d2.data(), l2.data()).ok());
    EXPECT_EQ(l1, l2) << type;
    EXPECT_EQ(d1, d2) << type;
    // Adds continue the labels.
    ASSERT_TRUE((*loaded)->Add(1, x.row(7)).ok());
    EXPECT_EQ((*loaded)->next_label(), b->next_label() + 1) << type;
  }
  // A scalar quantizer that has not trained itself yet holds its vectors exactly: they load
  // back too, and it still trains itself once enough arrive.
  for (const char* type : {"SQ8", "SQ4"}) {
    auto b = Make(type, 16);
    ASSERT_TRUE(b->Add(50, x.data.data()).ok());
    auto bytes = b->Serialize();
    ASSERT_TRUE(bytes.ok());
    std::string_view view(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    auto loaded = FaissBackend::Load(b->spec(), view, b->next_label());
    ASSERT_TRUE(loaded.ok()) << type << ": " << loaded.status().message();
    EXPECT_EQ((*loaded)->ntotal(), 50) << type;
    std::vector<float> d1(5), d2(5), v(16);
    std::vector<int64_t> l1(5), l2(5);
    ASSERT_TRUE(b->Search(1, x.row(3), 5, {}, d1.data(), l1.data()).ok());
    ASSERT_TRUE((*loaded)->Search(1, x.row(3), 5, {}, d2.data(), l2.data()).ok());
    EXPECT_EQ(l1, l2) << type;
    EXPECT_EQ(d1, d2) << type;
    ASSERT_TRUE((*loaded)->Reconstruct(7, v.data()).ok());
    EXPECT_EQ(std::vector<float>(x.row(7), x.row(7) + 16), v) << type;
    ASSERT_TRUE((*loaded)->Add(550, x.row(50)).ok());
    EXPECT_EQ((*loaded)->ntotal(), 600) << type;
  }
  auto spec = ParseIndexType("L2", 16);
  EXPECT_EQ(FaissBackend::Load(*spec, "not an index", 0).status().code(), StatusCode::kDataLoss);
  auto other = Make("L2", 8);
  auto bytes = other->Serialize();
  std::string_view view(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  EXPECT_EQ(FaissBackend::Load(*spec, view, 0).status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace vecgpu::cpu
