#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vecgpu {

enum class Metric { kL2, kInnerProduct };

std::string_view MetricName(Metric m);  // "L2" or "IP"

// A dense row-major float32 matrix: `rows` vectors of `cols` components each.
struct FloatMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> data;  // size rows * cols

  const float* row(int64_t i) const { return data.data() + i * cols; }
};

// Per-request search knobs. Unset fields fall back to the collection's own settings.
// They apply to the one request that carries them, never to other clients.
struct SearchParams {
  std::optional<int> nprobe;     // IVF: inverted lists visited
  std::optional<int> ef_search;  // HNSW: candidate list size
};

// k-NN results of nq queries, row-major nq * k. Missing neighbours: label -1 and
// distance +FLT_MAX (L2) / -FLT_MAX (IP), as FAISS reports them.
struct SearchResult {
  int64_t nq = 0;
  int k = 0;
  std::vector<float> distances;
  std::vector<int64_t> labels;
};

// Range search results in FAISS layout: query i owns entries [lims[i], lims[i+1]).
struct RangeResult {
  std::vector<int64_t> lims;  // size nq + 1
  std::vector<float> distances;
  std::vector<int64_t> labels;
};

struct ClusteringResult {
  FloatMatrix centroids;               // n_clusters * d
  std::vector<int64_t> assignments;    // one per input vector
  std::vector<int64_t> cluster_sizes;  // one per centroid
  double objective = 0;                // final k-means objective
};

}  // namespace vecgpu
