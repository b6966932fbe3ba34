#include "bench/ground_truth.h"

#include <faiss/IndexFlat.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>

namespace vecgpu::bench {
namespace {

// Queries searched per FAISS call, bounding the temporary distance/label buffers.
constexpr int64_t kQueryBlock = 4096;
// Queries of a cached ground truth that are recomputed to check it belongs to this data.
constexpr int64_t kCacheSpotChecks = 8;

// The preconditions of an exact search: consistent shapes, 0 < k <= n, ids fit in int32.
Status CheckShapes(const Dataset& data, int k) {
  const FloatMatrix& b = data.base;
  const FloatMatrix& q = data.queries;
  if (b.rows <= 0 || b.cols <= 0 || static_cast<int64_t>(b.data.size()) != b.rows * b.cols) {
    return InvalidArgument("ground truth: the base is empty or its data is not rows x cols");
  }
  if (q.rows <= 0 || q.cols != b.cols || static_cast<int64_t>(q.data.size()) != q.rows * q.cols) {
    return InvalidArgument("ground truth: no queries, or their dimension differs from the base");
  }
  if (b.rows > std::numeric_limits<int32_t>::max()) {
    return InvalidArgument("ground truth: base ids do not fit in int32 (ivecs)");
  }
  if (k <= 0 || k > b.rows) {
    return InvalidArgument("ground truth: k = " + std::to_string(k) + " must be in [1, " +
                           std::to_string(b.rows) + "]");
  }
  return Status::Ok();
}

// An exact index over the base with the dataset's metric.
std::unique_ptr<faiss::IndexFlat> BuildIndex(const Dataset& data) {
  std::unique_ptr<faiss::IndexFlat> index;
  if (data.metric == Metric::kInnerProduct) {
    index = std::make_unique<faiss::IndexFlatIP>(data.base.cols);
  } else {
    index = std::make_unique<faiss::IndexFlatL2>(data.base.cols);
  }
  index->add(data.base.rows, data.base.data.data());
  return index;
}

// Exact k-NN ids of `nq` queries (size nq * d) into `out` (size nq * k). REQUIRES: CheckShapes.
void SearchExact(const faiss::IndexFlat& index, const float* queries, int64_t nq, int k,
                 int32_t* out) {
  std::vector<float> distances;
  std::vector<faiss::Index::idx_t> labels;
  for (int64_t q0 = 0; q0 < nq; q0 += kQueryBlock) {
    const int64_t n = std::min(kQueryBlock, nq - q0);
    distances.resize(static_cast<size_t>(n * k));
    labels.resize(static_cast<size_t>(n * k));
    index.search(n, queries + q0 * index.d, k, distances.data(), labels.data());
    std::transform(labels.begin(), labels.end(), out + q0 * k,
                   [](faiss::Index::idx_t l) { return static_cast<int32_t>(l); });
  }
}

// Exact ground truth, or the reason FAISS refused it. REQUIRES: CheckShapes.
StatusOr<std::vector<int32_t>> ComputeExact(const Dataset& data, int k) {
  std::vector<int32_t> out(static_cast<size_t>(data.queries.rows * k));
  try {
    SearchExact(*BuildIndex(data), data.queries.data.data(), data.queries.rows, k, out.data());
  } catch (const std::exception& e) {
    return Internal(std::string("ground truth: FAISS failed: ") + e.what());
  }
  return out;
}

// Distance of query `q` to base row `id` under the dataset's metric, in double precision.
double Distance(const Dataset& data, const float* q, int32_t id) {
  const float* x = data.base.row(id);
  double s = 0;
  for (int64_t j = 0; j < data.base.cols; ++j) {
    s += data.metric == Metric::kL2 ? (double{q[j]} - x[j]) * (double{q[j]} - x[j])
                                    : double{q[j]} * x[j];
  }
  return s;
}

double SquaredNorm(const float* v, int64_t d) {
  double s = 0;
  for (int64_t j = 0; j < d; ++j) s += double{v[j]} * v[j];
  return s;
}

// Whether a cached ground truth (nq x cols) fits this data: right shape, ids in range, and on
// a few queries the same distances at every rank as an exact search (ids may differ on ties),
// which catches a cache left by another dataset of the same shape.
bool CacheMatches(const Dataset& data, const std::vector<int32_t>& cache, int cols, int k) {
  const int64_t nq = data.queries.rows;
  if (cols < k || cols > data.base.rows || static_cast<int64_t>(cache.size()) != nq * cols) {
    return false;
  }
  for (int32_t id : cache) {
    if (id < 0 || id >= data.base.rows) return false;
  }
  const int64_t checks = std::min(nq, kCacheSpotChecks);
  std::vector<float> sample(static_cast<size_t>(checks * data.queries.cols));
  std::vector<int64_t> rows(static_cast<size_t>(checks));
  for (int64_t s = 0; s < checks; ++s) {
    rows[s] = s * nq / checks;
    std::copy_n(data.queries.row(rows[s]), data.queries.cols,
                sample.data() + s * data.queries.cols);
  }
  std::vector<int32_t> exact(static_cast<size_t>(checks * cols));
  try {
    SearchExact(*BuildIndex(data), sample.data(), checks, cols, exact.data());
  } catch (const std::exception&) {
    return false;
  }
  for (int64_t s = 0; s < checks; ++s) {
    const float* q = data.queries.row(rows[s]);
    const double qq = SquaredNorm(q, data.queries.cols);
    for (int j = 0; j < cols; ++j) {
      const int32_t want = exact[s * cols + j];
      const int32_t got = cache[rows[s] * cols + j];
      if (want == got) continue;
      // float32 search error scales with the norms involved; other data differs by far more.
      const double tolerance = 1e-4 * (qq + SquaredNorm(data.base.row(want), data.base.cols) +
                                       SquaredNorm(data.base.row(got), data.base.cols));
      if (std::abs(Distance(data, q, want) - Distance(data, q, got)) > tolerance) return false;
    }
  }
  return true;
}

}  // namespace

std::vector<int32_t> ExactNeighbors(const Dataset& data, int k) {
  if (!CheckShapes(data, k).ok()) return {};
  StatusOr<std::vector<int32_t>> out = ComputeExact(data, k);
  if (!out.ok()) return {};
  return std::move(out).value();
}

Status EnsureGroundTruth(Dataset& data, int k, const std::string& cache_path) {
  RETURN_IF_ERROR(CheckShapes(data, k));
  const int64_t nq = data.queries.rows;
  if (data.gt_k >= k && static_cast<int64_t>(data.neighbors.size()) == nq * data.gt_k) {
    return Status::Ok();
  }
  if (!cache_path.empty()) {
    int cols = 0;
    StatusOr<std::vector<int32_t>> cached = ReadIvecs(cache_path, &cols);
    if (cached.ok() && CacheMatches(data, *cached, cols, k)) {
      data.neighbors = std::move(cached).value();
      data.gt_k = cols;
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(data.neighbors, ComputeExact(data, k));
  data.gt_k = k;
  if (cache_path.empty()) return Status::Ok();
  return WriteIvecs(cache_path, data.neighbors, k).WithContext("writing the ground-truth cache");
}

double RecallAtK(const std::vector<int64_t>& found, int found_k, const std::vector<int32_t>& truth,
                 int truth_k, int64_t nq, int k) {
  if (nq <= 0 || k <= 0 || k > found_k || k > truth_k ||
      static_cast<int64_t>(found.size()) < nq * found_k ||
      static_cast<int64_t>(truth.size()) < nq * truth_k) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  std::vector<int64_t> f(k), t(k);
  int64_t hits = 0;
  for (int64_t q = 0; q < nq; ++q) {
    std::copy_n(found.begin() + q * found_k, k, f.begin());
    std::copy_n(truth.begin() + q * truth_k, k, t.begin());
    std::sort(f.begin(), f.end());
    std::sort(t.begin(), t.end());
    // A sorted merge: each true id is matched at most once however often it was returned, and
    // -1 ("none") never counts.
    for (auto fi = f.begin(), ti = t.begin(); fi != f.end() && ti != t.end();) {
      if (*fi < *ti) {
        ++fi;
      } else if (*ti < *fi) {
        ++ti;
      } else {
        hits += *fi >= 0;
        ++fi;
        ++ti;
      }
    }
  }
  return static_cast<double>(hits) / (static_cast<double>(nq) * k);
}

}  // namespace vecgpu::bench
