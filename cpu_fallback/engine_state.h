#pragma once
// Test helpers for durability tests: a workload that makes every kind of mutation on every
// kind of index, and a comparison of everything a client can read of two engines.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/engine.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu::testing {

inline constexpr int kStateDim = 8;

// `rows` random bit vectors of `dim` bits (0/1 floats).
inline FloatMatrix Bits(int64_t rows, int dim, unsigned seed) {
  std::mt19937 rng(seed);
  FloatMatrix m{rows, dim, std::vector<float>(rows * dim)};
  for (auto& v : m.data) v = static_cast<float>(rng() % 2);
  return m;
}

// Everything a client can read of a collection: its vectors with their ids, and the answers
// to a few searches.
inline void ExpectSame(Engine& a, Engine& b, const std::string& tenant) {
  auto la = a.List(tenant), lb = b.List(tenant);
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) {
    const std::string& name = la[i].name;
    SCOPED_TRACE(name);
    ASSERT_EQ(name, lb[i].name);
    EXPECT_EQ(la[i].backend.ntotal, lb[i].backend.ntotal);
    EXPECT_EQ(la[i].backend.is_trained, lb[i].backend.is_trained);
    std::vector<int64_t> ia, ib;
    auto va = a.ReconstructRange(tenant, name, 0, 100000, &ia);
    auto vb = b.ReconstructRange(tenant, name, 0, 100000, &ib);
    ASSERT_EQ(va.ok(), vb.ok());
    if (va.ok()) {
      EXPECT_EQ(ia, ib);
      EXPECT_EQ(va->data, vb->data);
    }
    auto layout = a.Layout(tenant, name);
    const FloatMatrix q =
        layout->binary ? Bits(5, layout->dim, 99) : Clustered(5, kStateDim, 3, 99);
    auto sa = a.Search(tenant, name, q, 4, {});
    auto sb = b.Search(tenant, name, q, 4, {});
    ASSERT_EQ(sa.ok(), sb.ok());
    if (sa.ok()) {
      EXPECT_EQ(sa->labels, sb->labels);
      EXPECT_EQ(sa->distances, sb->distances);
    }
  }
}

// Creates flat, IVF (trained), IDMap views over both, HNSW and binary collections in tenant
// `t`, for RandomOps.
inline void CreateEveryKind(Engine& a, const std::string& t) {
  const FloatMatrix x = Clustered(400, kStateDim);
  ASSERT_TRUE(a.Create(t, {"flat", "L2", kStateDim, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"ivf", "IVF4", kStateDim, ""}).ok());
  ASSERT_TRUE(a.Train(t, "ivf", x).ok());
  ASSERT_TRUE(a.Create(t, {"ids", "IDMap:ivf", kStateDim, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"ids2", "IDMap2:flat", kStateDim, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"hnsw", "HNSW8", kStateDim, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"bin", "BINARY_FLAT", 16, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"gone", "L2", kStateDim, ""}).ok());
}

// `ops` random mutations (adds, removals, replaces, resets, parameters, binary adds, the odd
// recluster) on CreateEveryKind's collections; refusals are part of the workload.
inline void RandomOps(Engine& a, const std::string& t, int ops, unsigned seed) {
  const FloatMatrix x = Clustered(400, kStateDim);
  std::mt19937 rng(seed);
  const char* names[] = {"flat", "ivf", "ids", "ids2", "hnsw"};
  for (int op = 0; op < ops; ++op) {
    const std::string name = names[rng() % 5];
    const bool with_ids = name == "ids" || name == "ids2";
    const int64_t n = 1 + rng() % 8;
    const FloatMatrix rows = Rows(x, rng() % (x.rows - n), n);
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int64_t>(rng() % 60));
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2:
        (void)a.Add(t, name, Rows(rows, 0, with_ids ? static_cast<int64_t>(ids.size()) : n),
                    with_ids ? std::span<const int64_t>(ids) : std::span<const int64_t>());
        break;
      case 3:
      case 4:
        (void)a.Remove(t, name, ids);  // refused on HNSW: logged, and refused again in replay
        break;
      case 5:
        (void)a.Replace(t, name, ids[0], Rows(rows, 0, 1));
        break;
      case 6:
        if (rng() % 8 == 0) (void)a.Reset(t, name);
        break;
      case 7:
        (void)a.SetParameter(t, name, "nprobe", 1 + rng() % 4);
        break;
      case 8:
        (void)a.Add(t, "bin", Bits(n, 16, static_cast<unsigned>(op) + seed), {});
        break;
      case 9:
        if (rng() % 20 == 0) (void)a.Recluster(t, "ivf", 4, 0.5);
        break;
    }
  }
}

// Every kind of mutation at least once (merges, drops, a view over a dropped base...), after
// CreateEveryKind.
inline void EveryKindOnce(Engine& a, const std::string& t) {
  const FloatMatrix x = Clustered(400, kStateDim);
  // Every kind of mutation at least once, whatever the random ops did.
  const int64_t fresh[] = {1000, 1001, 1002};
  ASSERT_TRUE(a.Add(t, "ids2", Rows(x, 10, 3), fresh).ok());
  ASSERT_TRUE(a.Replace(t, "ids2", 1001, Rows(x, 399, 1)).ok());
  ASSERT_TRUE(a.Add(t, "ids", Rows(x, 20, 3), fresh).ok());
  const int64_t remove[] = {1000};
  ASSERT_TRUE(a.Remove(t, "ids", remove).ok());
  ASSERT_TRUE(a.Recluster(t, "ivf", 3, 1.0).ok());
  ASSERT_TRUE(a.SetParameter(t, "ivf", "nprobe", 2).ok());
  ASSERT_TRUE(a.Add(t, "gone", Rows(x, 100, 7), {}).ok());
  ASSERT_TRUE(a.Create(t, {"merged", "IDMap2:gone", kStateDim, ""}).ok());
  ASSERT_TRUE(a.Merge(t, "flat", {"gone"}).ok());
  const int64_t view_ids[] = {500, 501};
  ASSERT_TRUE(a.Add(t, "merged", Rows(x, 200, 2), view_ids).ok());
  ASSERT_TRUE(a.Merge(t, "ids2", {"merged"}).ok());
  ASSERT_TRUE(a.Drop(t, "merged").ok());
  ASSERT_TRUE(a.Drop(t, "gone").ok());
}

}  // namespace vecgpu::testing
