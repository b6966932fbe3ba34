#include "core/view_ops.h"

#include <algorithm>
#include <limits>
#include <string>

namespace vecgpu {
namespace {

// Rows of one over-fetching search call are chunked so a chunk holds at most this many
// results (16 MiB of distances and labels).
constexpr int64_t kMaxResultsPerChunk = int64_t{1} << 20;

bool SeesAll(const Backend& b, const LabelTable& t, LabelTable::View view) {
  return view == LabelTable::kBaseView || t.CountOf(view) == b.ntotal();
}

}  // namespace

Status SearchView(const Backend& b, const LabelTable& t, LabelTable::View view, int64_t n,
                  const float* x, int k, const SearchParams& params, float* distances,
                  int64_t* ids) {
  const int d = b.spec().dim;
  if (SeesAll(b, t, view)) {
    RETURN_IF_ERROR(b.Search(n, x, k, params, distances, ids));
    if (view != LabelTable::kBaseView) {
      for (int64_t i = 0; i < n * k; ++i) ids[i] = ids[i] < 0 ? -1 : t.IdOf(view, ids[i]);
    }
    return Status::Ok();
  }
  std::fill(ids, ids + n * k, int64_t{-1});
  std::fill(distances, distances + n * k, std::numeric_limits<float>::max());
  const int64_t own = t.CountOf(view);
  if (own == 0) return Status::Ok();
  // Enough neighbours that, however the foreign vectors rank, k of the view's own remain.
  const int64_t wide = std::min<int64_t>(b.ntotal(), k + (b.ntotal() - own));
  const int64_t rows = std::max<int64_t>(1, kMaxResultsPerChunk / wide);
  std::vector<float> dist(std::min(rows, n) * wide);
  std::vector<int64_t> labels(dist.size());
  for (int64_t q0 = 0; q0 < n; q0 += rows) {
    const int64_t m = std::min(rows, n - q0);
    RETURN_IF_ERROR(
        b.Search(m, x + q0 * d, static_cast<int>(wide), params, dist.data(), labels.data()));
    for (int64_t q = 0; q < m; ++q) {
      int kept = 0;
      for (int64_t j = 0; j < wide && kept < k; ++j) {
        const int64_t label = labels[q * wide + j];
        const int64_t id = label < 0 ? -1 : t.IdOf(view, label);
        if (id < 0) continue;
        ids[(q0 + q) * k + kept] = id;
        distances[(q0 + q) * k + kept] = dist[q * wide + j];
        ++kept;
      }
    }
  }
  return Status::Ok();
}

StatusOr<RangeResult> RangeSearchView(const Backend& b, const LabelTable& t, LabelTable::View view,
                                      int64_t n, const float* x, float radius,
                                      const SearchParams& params) {
  ASSIGN_OR_RETURN(RangeResult all, b.RangeSearch(n, x, radius, params));
  if (view == LabelTable::kBaseView) return all;
  RangeResult out;
  out.lims.assign(1, 0);
  for (int64_t q = 0; q < n; ++q) {
    for (int64_t j = all.lims[q]; j < all.lims[q + 1]; ++j) {
      const int64_t id = t.IdOf(view, all.labels[j]);
      if (id < 0) continue;
      out.labels.push_back(id);
      out.distances.push_back(all.distances[j]);
    }
    out.lims.push_back(static_cast<int64_t>(out.labels.size()));
  }
  return out;
}

Status ReconstructIds(const Backend& b, const LabelTable& t, LabelTable::View view,
                      std::span<const int64_t> ids, float* out) {
  const int d = b.spec().dim;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t label = t.LabelOf(view, ids[i]);
    if (label < 0) return NotFound("id " + std::to_string(ids[i]) + " is not in the index");
    RETURN_IF_ERROR(b.Reconstruct(label, out + i * d));
  }
  return Status::Ok();
}

Status ReconstructRangeView(const Backend& b, const LabelTable& t, LabelTable::View view,
                            int64_t start, int64_t n, float* out, std::vector<int64_t>* ids) {
  const int d = b.spec().dim;
  if (view == LabelTable::kBaseView && b.labels_shift_on_remove()) {
    // Labels are storage positions: one bulk copy.
    if (ids) {
      ids->resize(n);
      for (int64_t i = 0; i < n; ++i) (*ids)[i] = start + i;
    }
    return n > 0 ? b.ReconstructN(start, n, out) : Status::Ok();
  }
  const std::vector<int64_t> labels = t.LabelsOf(view);
  std::vector<int64_t> slice(labels.begin() + start, labels.begin() + start + n);
  for (int64_t i = 0; i < n; ++i) RETURN_IF_ERROR(b.Reconstruct(slice[i], out + i * d));
  if (ids) {
    for (int64_t& label : slice) label = t.IdOf(view, label);
    *ids = std::move(slice);
  }
  return Status::Ok();
}

}  // namespace vecgpu
