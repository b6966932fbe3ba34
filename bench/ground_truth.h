#pragma once

#include <string>
#include <vector>

#include "bench/dataset.h"

namespace vecgpu::bench {

// Exact k nearest neighbours of every query (FAISS IndexFlat, the dataset's metric): nq x k
// ids, row-major. Empty when the shapes are inconsistent or k is not in [1, n].
std::vector<int32_t> ExactNeighbors(const Dataset& data, int k);

// Ensures data.neighbors has at least k columns: keeps the file's own ground truth, else
// reads `cache_path` (ivecs) when it holds enough columns for this data, else computes it
// and writes the cache. `cache_path` empty: compute only. A cache is used only when it has nq
// rows, >= k columns and ids inside the base, and a few of its rows agree (in distance, rank by
// rank) with an exact search; otherwise it is recomputed and overwritten. On return data.gt_k
// may exceed k (a wider file or cache). Refuses k outside [1, n]. If the cache cannot be
// written, the computed ground truth is still in `data` and the error is returned.
Status EnsureGroundTruth(Dataset& data, int k, const std::string& cache_path);

// Mean over queries of |found[q][:k] ∩ truth[q][:k]| / k. found: nq x found_k labels (-1 for
// none); truth: nq x truth_k. REQUIRES: k <= found_k and k <= truth_k. Returns NaN when the
// REQUIRES or the vector sizes do not hold, or nq is 0.
double RecallAtK(const std::vector<int64_t>& found, int found_k, const std::vector<int32_t>& truth,
                 int truth_k, int64_t nq, int k);

}  // namespace vecgpu::bench
