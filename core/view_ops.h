#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/backend.h"
#include "core/label_table.h"

namespace vecgpu {

// Reads of one collection's view of a shared index storage (see LabelTable): what the base
// view or an IDMap view sees, under its own ids. Free functions over a Backend and its
// LabelTable; REQUIRES: the storage's lock held, at least shared.

// The k nearest vectors `view` sees for each of n queries (x: size n * d). distances and ids:
// size n * k; missing results get id -1. When other views own vectors of the storage too, the
// search asks the backend for k + (vectors `view` does not see) neighbours, so exact kinds
// still return exactly the k nearest of the view's own.
Status SearchView(const Backend& b, const LabelTable& t, LabelTable::View view, int64_t n,
                  const float* x, int k, const SearchParams& params, float* distances,
                  int64_t* ids);

// Vectors `view` sees within `radius` of each query, named by the view's ids.
StatusOr<RangeResult> RangeSearchView(const Backend& b, const LabelTable& t, LabelTable::View view,
                                      int64_t n, const float* x, float radius,
                                      const SearchParams& params);

// The vectors stored under `ids` in `view`, one row each (out: size ids.size() * d).
// NotFound names the first id the view does not hold.
Status ReconstructIds(const Backend& b, const LabelTable& t, LabelTable::View view,
                      std::span<const int64_t> ids, float* out);

// The vectors at positions [start, start + n) of the view, in storage order (ascending
// label), with their ids. REQUIRES: start + n <= t.CountOf(view).
Status ReconstructRangeView(const Backend& b, const LabelTable& t, LabelTable::View view,
                            int64_t start, int64_t n, float* out, std::vector<int64_t>* ids);

}  // namespace vecgpu
