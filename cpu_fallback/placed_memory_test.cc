// GPU memory through the Engine, on fake GPUs whose copies model FAISS's GPU storage
// (core/device/fake_device_copy.h): single adds grow a copy's storage geometrically within its
// reservation; running out of device memory during an add, a reservation or a copy leaves the
// collection on the CPU with every acknowledged write, answering as the CPU does, and says so;
// requests beyond FAISS's GPU limits (k, nprobe > 2048) are answered by the host copy.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <thread>

#include "core/device/fake_device_copy.h"
#include "core/device/fake_device_provider.h"
#include "core/device/placed_backend.h"
#include "core/engine.h"
#include "core/metrics/metrics.h"
#include "core/util/mutex.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::Rows;

constexpr int kDim = 16;
constexpr int64_t kMiB = int64_t{1} << 20;

FloatMatrix Join(FloatMatrix a, const FloatMatrix& b) {
  a.rows += b.rows;
  a.data.insert(a.data.end(), b.data.begin(), b.data.end());
  return a;
}

// An Engine over one fake GPU whose copies are FakeDeviceCopy over a CPU index loaded from the
// host's serialization (any kind), with the DeviceManager's log kept.
struct MemoryEngine {
  explicit MemoryEngine(int64_t memory = 64 * kMiB) : provider({memory}) {
    provider.make_replica =
        [this](const Backend& host,
               const std::vector<int>& devices) -> StatusOr<std::unique_ptr<Backend>> {
      ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, host.Serialize());
      ASSIGN_OR_RETURN(
          auto index,
          factory.Load(host.spec(),
                       std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                       host.next_label()));
      auto copy = std::make_unique<FakeDeviceCopy>(std::move(index),
                                                   "gpu:" + std::to_string(devices[0]), &counters);
      last_copy = copy.get();
      return std::unique_ptr<Backend>(std::move(copy));
    };
    DeviceOptions o;
    o.memory_fraction = 1.0;
    devices = std::make_unique<DeviceManager>(
        &provider, o,
        [this](const std::string& line) {
          MutexLock lock(log_mu);
          log += line + "\n";
        },
        &metrics);
    SchedulerOptions so;
    so.query_threads = 2;
    so.write_threads = 1;
    EXPECT_TRUE(so.Validate().ok());
    scheduler = std::make_unique<Scheduler>(so, nullptr, &metrics, devices->gpus());
    EXPECT_TRUE(limits.Validate().ok());
    engine = std::make_unique<Engine>(limits, factory, &metrics, scheduler.get(), devices.get());
  }
  ~MemoryEngine() { scheduler->Shutdown(); }

  void Create(const std::string& name, const std::string& type = "L2") {
    ASSERT_TRUE(engine->Create("t", {name, type, kDim, ""}).ok());
  }
  StatusOr<AddResult> Add(const std::string& name, const FloatMatrix& x) {
    std::promise<StatusOr<AddResult>> p;
    Status st = engine->SubmitAdd("t", name, x, {}, WorkClass::kShort, Clock::time_point::max(),
                                  [&](StatusOr<AddResult> r) { p.set_value(std::move(r)); });
    if (!st.ok()) return st;
    return p.get_future().get();
  }
  StatusOr<SearchResult> Search(const std::string& name, const FloatMatrix& q, int k,
                                SearchParams params = {}) {
    std::promise<StatusOr<SearchResult>> p;
    Status st = engine->SubmitSearch("t", name, q, k, params, Clock::time_point::max(),
                                     [&](StatusOr<SearchResult> r) { p.set_value(std::move(r)); });
    if (!st.ok()) return st;
    return p.get_future().get();
  }
  BackendInfo Info(const std::string& name) { return engine->Describe("t", name)->backend; }
  bool WaitFor(const std::string& name, const std::string& replica, const std::string& device) {
    for (int i = 0; i < 1000; ++i) {
      const BackendInfo info = Info(name);
      if (info.replica == replica && info.device == device) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  bool WaitForCopy(const std::string& name) { return WaitFor(name, "current", "gpu:0"); }
  double Fallbacks(const char* reason) { return metrics.gpu_fallbacks.With({reason}).value(); }
  std::string Log() {
    MutexLock lock(log_mu);
    return log;
  }

  Limits limits;
  cpu::CpuBackendFactory factory;
  MetricsRegistry registry;
  ServerMetrics metrics{registry};
  FakeDeviceProvider provider;
  FakeDeviceCounters counters;
  FakeDeviceCopy* last_copy = nullptr;  // owned by the collection's PlacedBackend
  Mutex log_mu;
  std::string log GUARDED_BY(log_mu);
  std::unique_ptr<DeviceManager> devices;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Engine> engine;
};

// The exact answer, from a CPU-only engine holding the same vectors in a flat index.
SearchResult Expected(const FloatMatrix& data, const FloatMatrix& q, int k) {
  Limits limits;
  EXPECT_TRUE(limits.Validate().ok());
  cpu::CpuBackendFactory factory;
  Engine plain(limits, factory);
  EXPECT_TRUE(plain.Create("t", {"c", "L2", kDim, ""}).ok());
  for (int64_t at = 0; at < data.rows; at += 5000) {  // within the largest add Limits allow
    auto added = plain.Add("t", "c", Rows(data, at, std::min<int64_t>(5000, data.rows - at)), {});
    EXPECT_TRUE(added.ok()) << added.status().message();
  }
  return *plain.Search("t", "c", q, k, {});
}

TEST(PlacedMemoryTest, SingleAddsGrowTheDeviceStorageGeometrically) {
  MemoryEngine e;
  e.Create("c");
  FloatMatrix all = Clustered(100, kDim);
  ASSERT_TRUE(e.Add("c", all).ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  const int64_t reallocations = e.counters.reallocations.load();
  const FloatMatrix more = Clustered(10000, kDim, 20, 5);
  for (int64_t i = 0; i < more.rows; ++i) ASSERT_TRUE(e.Add("c", Rows(more, i, 1)).ok());
  all = Join(all, more);
  ASSERT_EQ(e.counters.adds.load(), 10000);  // every add reached the copy
  // FAISS alone would reallocate and copy the whole storage on each of the 10,000 adds (about
  // 50 million vectors copied); geometric growth: O(log n) reallocations, each vector copied
  // O(1) times on average.
  const int64_t grown = e.counters.reallocations.load() - reallocations;
  EXPECT_LE(grown, 2 * std::log2(10000.0) + 4) << grown;
  EXPECT_LE(e.counters.copied.load(), 4 * all.rows) << e.counters.copied.load();
  // Never more room than the placement reserved, and the reported memory counts the room.
  const int64_t reserved = e.devices->Devices()[0].reserved_bytes;
  const IndexSpec spec = *ParseIndexType("L2", kDim);
  ASSERT_NE(e.last_copy, nullptr);
  EXPECT_GE(e.last_copy->capacity(), all.rows);
  EXPECT_LE(e.last_copy->capacity(), DeviceManager::GpuCapacity(spec, reserved));
  EXPECT_EQ(e.Info("c").gpu_memory_bytes, DeviceManager::GpuBytes(spec, e.last_copy->capacity()));
  EXPECT_LE(e.Info("c").gpu_memory_bytes, reserved);
  // Still the copy serving, with the CPU's answers.
  const FloatMatrix q = Rows(all, 5000, 8);
  const int searches = e.counters.searches.load();
  auto r = e.Search("c", q, 5);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(e.counters.searches.load(), searches);
  EXPECT_EQ(r->labels, Expected(all, q, 5).labels);
}

TEST(PlacedMemoryTest, NextCapacityGrowsByHalfWithinTheReservation) {
  EXPECT_EQ(PlacedBackend::NextCapacity(100, 100, 1000), 100);  // fits: unchanged
  EXPECT_EQ(PlacedBackend::NextCapacity(100, 101, 1000), 150);
  EXPECT_EQ(PlacedBackend::NextCapacity(100, 400, 1000), 400);  // a large add: what it needs
  EXPECT_EQ(PlacedBackend::NextCapacity(100, 101, 120), 120);   // bounded by the reservation
  EXPECT_EQ(PlacedBackend::NextCapacity(100, 130, 120), 130);   // never less than needed
  EXPECT_EQ(PlacedBackend::NextCapacity(0, 1, 1000), 1);
}

// Every acknowledged add is in the host copy: searches after the fallback answer as the CPU.
void ExpectServedByTheHost(MemoryEngine& e, const FloatMatrix& all) {
  const BackendInfo info = e.Info("c");
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.ntotal, all.rows);
  EXPECT_NE(info.placement.find("on the CPU: gpu:0 ran out of memory"), std::string::npos)
      << info.placement;
  EXPECT_EQ(e.Fallbacks(kFallbackOutOfMemory), 1);
  EXPECT_NE(e.Log().find("placement: t/c on the CPU: gpu:0 ran out of memory"), std::string::npos)
      << e.Log();
  EXPECT_TRUE(e.devices->healthy(0));  // only this collection left the GPU
  EXPECT_EQ(e.devices->Devices()[0].reserved_bytes, 0);
  const FloatMatrix q = Rows(all, all.rows - 10, 10);
  auto r = e.Search("c", q, 4);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->labels, Expected(all, q, 4).labels);
}

TEST(PlacedMemoryTest, OutOfMemoryDuringAnAddLosesNoWrite) {
  MemoryEngine e;
  e.Create("c");
  FloatMatrix all = Clustered(500, kDim);
  ASSERT_TRUE(e.Add("c", all).ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  e.counters.oom_at_add = 3;  // the copy's third add fails, mid-stream
  for (int i = 0; i < 20; ++i) {
    const FloatMatrix x = Clustered(5, kDim, 3, 100 + i);
    ASSERT_TRUE(e.Add("c", x).ok()) << i;  // acknowledged: the host has it
    all = Join(all, x);
  }
  EXPECT_EQ(e.counters.adds.load(), 3);  // none reached the copy after it failed
  ExpectServedByTheHost(e, all);
}

TEST(PlacedMemoryTest, OutOfMemoryGrowingTheStorageLosesNoWrite) {
  MemoryEngine e;
  e.Create("c");
  FloatMatrix all = Clustered(200, kDim);
  ASSERT_TRUE(e.Add("c", all).ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  e.counters.oom_on_reserve = true;
  const FloatMatrix x = Clustered(1, kDim, 1, 7);
  ASSERT_TRUE(e.Add("c", x).ok());  // the first add past the copy's room reserves
  all = Join(all, x);
  EXPECT_EQ(e.counters.adds.load(), 0);
  ExpectServedByTheHost(e, all);
}

TEST(PlacedMemoryTest, OutOfMemoryCopyingToTheGpuLosesNoWrite) {
  MemoryEngine e;
  e.provider.build_error = ResourceExhausted("cudaMalloc of 512 MiB: out of memory");
  e.Create("c");
  FloatMatrix all = Clustered(300, kDim);
  ASSERT_TRUE(e.Add("c", all).ok());
  ASSERT_TRUE(e.WaitFor("c", "none", "cpu"));
  for (int i = 0; i < 5; ++i) {  // writes go on, on the host
    const FloatMatrix x = Clustered(10, kDim, 2, 50 + i);
    ASSERT_TRUE(e.Add("c", x).ok());
    all = Join(all, x);
  }
  EXPECT_EQ(e.provider.builds.load(), 1);  // not retried on every write
  ExpectServedByTheHost(e, all);
}

TEST(PlacedMemoryTest, KBeyondTheGpuLimitIsAnsweredByTheHost) {
  MemoryEngine e;
  e.Create("c");
  const FloatMatrix all = Clustered(3000, kDim);
  ASSERT_TRUE(e.Add("c", all).ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  const FloatMatrix q = Rows(all, 10, 2);
  for (int k : {PlacedBackend::kMaxGpuK, PlacedBackend::kMaxGpuK + 1}) {
    const int searches = e.counters.searches.load();
    auto r = e.Search("c", q, k);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(e.counters.searches.load() - searches, k <= 2048 ? 1 : 0) << k;
    const SearchResult want = Expected(all, q, k);
    EXPECT_EQ(r->labels, want.labels) << k;
    EXPECT_EQ(r->distances, want.distances) << k;
  }
  EXPECT_EQ(e.Info("c").device, "gpu:0");  // the copy keeps serving
}

TEST(PlacedMemoryTest, NprobeBeyondTheGpuLimitIsAnsweredByTheHost) {
  MemoryEngine e;
  e.Create("c", "IVF16");
  const FloatMatrix all = Clustered(2000, kDim);
  ASSERT_TRUE(e.engine->Train("t", "c", all).ok());
  ASSERT_TRUE(e.Add("c", all).ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  const FloatMatrix q = Rows(all, 100, 3);
  const SearchResult exact = Expected(all, q, 10);  // every list probed: exact
  for (int nprobe : {2048, 4096}) {
    const int searches = e.counters.searches.load();
    SearchParams params;
    params.nprobe = nprobe;
    auto r = e.Search("c", q, 10, params);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(e.counters.searches.load() - searches, nprobe <= 2048 ? 1 : 0) << nprobe;
    EXPECT_EQ(r->labels, exact.labels) << nprobe;
    for (size_t i = 0; i < exact.distances.size(); ++i) {
      EXPECT_NEAR(r->distances[i], exact.distances[i], 1e-3 * (1 + exact.distances[i])) << i;
    }
  }
  EXPECT_EQ(e.Info("c").device, "gpu:0");
}

}  // namespace
}  // namespace vecgpu
