#include "cpu_fallback/hnsw_search.h"

#include <faiss/IndexHNSW.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <queue>
#include <utility>
#include <vector>

namespace vecgpu::cpu {
namespace {

using Node = std::pair<float, int64_t>;  // (distance, label); smaller distance is nearer

}  // namespace

void HnswSearch(const faiss::IndexHNSW& index, int64_t n, const float* x, int k, int ef,
                float* distances, int64_t* labels) {
  const faiss::HNSW& g = index.hnsw;
  const bool ip = index.metric_type == faiss::METRIC_INNER_PRODUCT;
  const float missing = ip ? -std::numeric_limits<float>::max() : std::numeric_limits<float>::max();
  std::fill(labels, labels + n * k, int64_t{-1});
  std::fill(distances, distances + n * k, missing);
  if (g.entry_point < 0 || index.ntotal == 0) return;
  ef = std::max(ef, k);
  std::unique_ptr<faiss::DistanceComputer> dc(index.storage->get_distance_computer());
  // Inner products grow with similarity: negate them so that smaller is nearer throughout.
  auto dist = [&](int64_t i) { return ip ? -(*dc)(i) : (*dc)(i); };
  faiss::VisitedTable visited(static_cast<int>(index.ntotal));

  for (int64_t q = 0; q < n; ++q) {
    dc->set_query(x + q * index.d);
    // Greedy descent through the upper layers.
    int64_t ep = g.entry_point;
    float d_ep = dist(ep);
    for (int level = g.max_level; level >= 1; --level) {
      for (bool moved = true; moved;) {
        moved = false;
        size_t begin, end;
        g.neighbor_range(ep, level, &begin, &end);
        for (size_t j = begin; j < end && g.neighbors[j] >= 0; ++j) {
          const float d = dist(g.neighbors[j]);
          if (d < d_ep) ep = g.neighbors[j], d_ep = d, moved = true;
        }
      }
    }
    // Beam search of the base layer with `ef` candidates.
    std::priority_queue<Node, std::vector<Node>, std::greater<Node>> frontier;  // nearest on top
    std::priority_queue<Node> best;                                             // farthest on top
    frontier.emplace(d_ep, ep);
    best.emplace(d_ep, ep);
    visited.set(static_cast<int>(ep));
    while (!frontier.empty()) {
      const auto [d, node] = frontier.top();
      if (static_cast<int>(best.size()) >= ef && d > best.top().first) break;
      frontier.pop();
      size_t begin, end;
      g.neighbor_range(node, 0, &begin, &end);
      for (size_t j = begin; j < end && g.neighbors[j] >= 0; ++j) {
        const int64_t nb = g.neighbors[j];
        if (visited.get(static_cast<int>(nb))) continue;
        visited.set(static_cast<int>(nb));
        const float dn = dist(nb);
        if (static_cast<int>(best.size()) < ef || dn < best.top().first) {
          frontier.emplace(dn, nb);
          best.emplace(dn, nb);
          if (static_cast<int>(best.size()) > ef) best.pop();
        }
      }
    }
    visited.advance();
    while (static_cast<int>(best.size()) > k) best.pop();
    for (int j = static_cast<int>(best.size()) - 1; j >= 0; --j) {
      labels[q * k + j] = best.top().second;
      distances[q * k + j] = ip ? -best.top().first : best.top().first;
      best.pop();
    }
  }
}

}  // namespace vecgpu::cpu
