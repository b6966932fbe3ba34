#pragma once

#include <cstdint>

namespace faiss {
struct IndexHNSW;
}  // namespace faiss

namespace vecgpu::cpu {

// k-NN search of an HNSW graph with a candidate list of `ef` entries (at least k), for the
// queries x (size n * hnsw.d). distances/labels: size n * k, best first; missing: -1.
//
// FAISS 1.7.3's own search sizes its candidate heap from the index's efSearch, so a per-request
// efSearch above the index's value is silently capped (and one below it cut the walk short):
// this search honours the request's value exactly, without touching the shared index, so it
// may run concurrently with other searches. Single-threaded; throws what FAISS throws.
void HnswSearch(const faiss::IndexHNSW& index, int64_t n, const float* x, int k, int ef,
                float* distances, int64_t* labels);

}  // namespace vecgpu::cpu
