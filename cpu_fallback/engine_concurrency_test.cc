// The Engine under concurrent clients: searches, atomic search-and-reconstructs and writes
// through two IDMap views sharing one storage, resets, reclusters and drops, all at once.
// Run under ThreadSanitizer by scripts/test.sh; in every build it checks that each
// search_and_reconstruct pairs every result with the vector that was found.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::Rows;

constexpr int kDim = 8;

double L2(const float* a, const float* b) {
  double s = 0;
  for (int i = 0; i < kDim; ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return s;
}

TEST(EngineConcurrencyTest, ReadersAndWritersOnSharedStorage) {
  Limits limits;
  ASSERT_TRUE(limits.Validate().ok());
  cpu::CpuBackendFactory factory;
  Engine engine(limits, factory);
  for (const char* type : {"L2", "IVF4"}) {
    const std::string base = std::string("base_") + type;
    ASSERT_TRUE(engine.Create("t", {base, type, kDim, ""}).ok());
    const FloatMatrix train = Clustered(200, kDim);
    ASSERT_TRUE(engine.Train("t", base, train).ok());
    ASSERT_TRUE(engine.Create("t", {base + "_a", "IDMap:" + base, kDim, ""}).ok());
    ASSERT_TRUE(engine.Create("t", {base + "_b", "IDMap2:" + base, kDim, ""}).ok());
  }
  const FloatMatrix x = Clustered(400, kDim);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> mismatches{0}, reads{0};

  auto writer = [&](const std::string& view, int seed) {
    std::mt19937 rng(seed);
    while (!stop) {
      const int64_t id = rng() % 50;
      const FloatMatrix row = Rows(x, rng() % x.rows, 1);
      const int64_t ids[] = {id};
      switch (rng() % 6) {
        case 0:
        case 1:
          (void)engine.Add("t", view, row, ids);
          break;  // add or upsert
        case 2:
          (void)engine.Replace("t", view, id, row);
          break;
        case 3:
          (void)engine.Remove("t", view, ids);
          break;
        case 4:
          (void)engine.Reconstruct("t", view, ids);
          break;
        default:
          if (rng() % 20 == 0) (void)engine.Reset("t", view);
      }
    }
  };
  auto reader = [&](const std::string& view, int seed) {
    std::mt19937 rng(seed);
    while (!stop) {
      const FloatMatrix q = Rows(x, rng() % (x.rows - 1), 2);
      auto r = engine.SearchAndReconstruct("t", view, q, 5, {});
      if (!r.ok()) continue;
      ++reads;
      for (int64_t i = 0; i < r->result.nq; ++i) {
        const FloatMatrix& v = r->vectors[i];
        for (int64_t j = 0; j < v.rows; ++j) {
          // The vector found must be the one the distance was computed from.
          const double d = L2(q.row(i), v.row(j));
          if (std::fabs(d - r->result.distances[i * 5 + j]) > 1e-3 * (1 + d)) ++mismatches;
        }
      }
      (void)engine.RangeSearch("t", view, q, 4.f, {});
      (void)engine.ReconstructRange("t", view, 0, 20);
      (void)engine.List("t");
    }
  };
  auto admin = [&] {
    std::mt19937 rng(99);
    while (!stop) {
      (void)engine.Recluster("t", "base_IVF4", 2 + rng() % 3, 1.0);
      (void)engine.SetParameter("t", "base_IVF4", "nprobe", 1 + rng() % 2);
      (void)engine.Create("t", {"tmp", "IDMap:base_L2", kDim, ""});
      (void)engine.Drop("t", "tmp");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };

  std::vector<std::thread> threads;
  int seed = 1;
  for (const char* base : {"base_L2", "base_IVF4"}) {
    for (const char* v : {"_a", "_b"}) {
      threads.emplace_back(writer, std::string(base) + v, seed++);
      threads.emplace_back(reader, std::string(base) + v, seed++);
    }
  }
  threads.emplace_back(admin);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(mismatches.load(), 0) << "search_and_reconstruct paired results with other vectors";
}

}  // namespace
}  // namespace vecgpu
