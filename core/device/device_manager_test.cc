#include "core/device/device_manager.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "core/device/fake_device_provider.h"
#include "core/metrics/metrics.h"

namespace vecgpu {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kMiB = int64_t{1} << 20;

IndexSpec Spec(const std::string& type, int dim) { return *ParseIndexType(type, dim); }

struct Harness {
  explicit Harness(std::vector<int64_t> memory, std::string gpus = "all", double fraction = 1.0,
                   DeviceOptions options = Slow())
      : provider(std::move(memory)), options(options) {
    Make(std::move(gpus), fraction);
  }
  // Restarts that never come within a test, unless it asks for them.
  static DeviceOptions Slow() {
    DeviceOptions o;
    o.restart_backoff_s = 3600;
    return o;
  }
  void Make(std::string gpus, double fraction) {
    DeviceOptions o = options;
    o.gpus = std::move(gpus);
    o.memory_fraction = fraction;
    log.clear();
    dm = std::make_unique<DeviceManager>(
        &provider, o,
        [this](const std::string& line) {
          std::lock_guard<std::mutex> lock(log_mu);
          log += line + "\n";
        },
        &metrics);
  }
  double Fallbacks(const std::string& reason) {
    return metrics.gpu_fallbacks.With({reason}).value();
  }
  Placement Place(const std::string& type, int64_t bytes, const std::string& hint = "") {
    auto p = dm->Place(Spec(type, 128), bytes, hint, "t/c");
    EXPECT_TRUE(p.ok()) << p.status().message();
    return p.ok() ? *p : Placement{};
  }
  int64_t Reserved(int gpu) {
    for (const auto& d : dm->Devices()) {
      if (d.id == gpu) return d.reserved_bytes;
    }
    return -1;
  }

  // The log so far (the supervisor thread writes it too).
  std::string Log() {
    std::lock_guard<std::mutex> lock(log_mu);
    return log;
  }
  bool WaitFor(const std::function<bool()>& done) {
    for (int i = 0; i < 1000; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  MetricsRegistry registry;
  ServerMetrics metrics{registry};
  FakeDeviceProvider provider;
  DeviceOptions options;
  std::mutex log_mu;
  std::string log;
  std::unique_ptr<DeviceManager> dm;
};

TEST(ParseGpus, NoneAllAndLists) {
  std::vector<int> missing;
  EXPECT_TRUE(DeviceManager::ParseGpus("none", 2, &missing)->empty());
  EXPECT_EQ(*DeviceManager::ParseGpus("all", 2, &missing), (std::vector<int>{0, 1}));
  EXPECT_TRUE(DeviceManager::ParseGpus("all", 0, &missing)->empty());
  EXPECT_EQ(*DeviceManager::ParseGpus("1,0", 2, &missing), (std::vector<int>{1, 0}));
  EXPECT_TRUE(missing.empty());
  EXPECT_EQ(*DeviceManager::ParseGpus("0,3", 2, &missing), (std::vector<int>{0}));
  EXPECT_EQ(missing, (std::vector<int>{3}));
}

TEST(ParseGpus, RefusesMalformedLists) {
  std::vector<int> missing;
  for (const char* bad : {"a", "0,", "0,0", "-1", "1.5", "gpu0", "0;1"}) {
    auto r = DeviceManager::ParseGpus(bad, 2, &missing);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  DeviceOptions o;
  o.memory_fraction = 0;
  EXPECT_FALSE(o.Validate().ok());
  o.memory_fraction = 0.5;
  o.gpus = "x";
  EXPECT_FALSE(o.Validate().ok());
}

TEST(DeviceManager, GpusThatDoNotExistAreLeftOutAndLogged) {
  Harness h({kGiB, kGiB}, "0,5");
  EXPECT_EQ(h.dm->gpus(), std::vector<int>{0});
  EXPECT_NE(h.log.find("GPU 5 does not exist (2 visible)"), std::string::npos) << h.log;
  Harness only_missing({kGiB}, "3");
  EXPECT_TRUE(only_missing.dm->gpus().empty());
  Placement p = only_missing.Place("Flat", kMiB);
  EXPECT_FALSE(p.on_gpu());
  EXPECT_EQ(p.device(), "cpu");
}

TEST(DeviceManager, NoDriverServesFromTheCpuAndSaysWhy) {
  Harness h({kGiB});
  h.provider.count_error = Unavailable("CUDA: no CUDA-capable device is detected (error 100)");
  h.Make("all", 1.0);
  EXPECT_TRUE(h.dm->gpus().empty());
  EXPECT_NE(h.log.find("no usable GPU (CUDA: no CUDA-capable device"), std::string::npos);
  EXPECT_EQ(h.Place("Flat", kMiB).reason, "on the CPU: no GPU in use");

  DeviceManager none(nullptr, DeviceOptions{}, nullptr);
  EXPECT_TRUE(none.gpus().empty());
  Harness off({kGiB}, "none");
  EXPECT_TRUE(off.dm->gpus().empty());
  EXPECT_NE(off.log.find("none requested"), std::string::npos);
}

TEST(DeviceManager, PlacesOnTheGpuWithTheMostFreeBudget) {
  Harness h({kGiB, 2 * kGiB}, "all", 0.5);  // budgets 512 MiB and 1 GiB
  Placement a = h.Place("Flat", 100 * kMiB);
  EXPECT_EQ(a.gpus, std::vector<int>{1});
  EXPECT_EQ(a.reserved[0], 125 * kMiB);  // a quarter of headroom
  Placement b = h.Place("IVF64,Flat", 500 * kMiB);
  EXPECT_EQ(b.gpus, std::vector<int>{1});  // 899 MiB free there, 512 on GPU 0
  Placement c = h.Place("Flat", 200 * kMiB);
  EXPECT_EQ(c.gpus, std::vector<int>{0});  // now GPU 0 has more free
  EXPECT_EQ(h.Reserved(0), 250 * kMiB);
  h.dm->Release(c);
  EXPECT_EQ(h.Reserved(0), 0);
  EXPECT_NE(h.log.find("placement: t/c on GPU 1, the one with the most free budget"),
            std::string::npos)
      << h.log;
}

TEST(DeviceManager, KindsFaissCannotRunOnAGpuGoToTheCpu) {
  Harness h({kGiB});
  for (const char* type : {"HNSW32", "PQ16", "SQ8", "BINARY_IVF16", "PCA64,IVF16,Flat",
                           "IVF16,PQ16x4", "IVF16_HNSW32,Flat"}) {
    Placement p = h.Place(type, kMiB);
    EXPECT_FALSE(p.on_gpu()) << type;
    EXPECT_EQ(p.fallback, kFallbackUnsupported) << type;
  }
  for (const char* type : {"L2", "IP", "IVF16", "IVF16,PQ16", "IVF16_SQ8", "BINARY_FLAT"}) {
    EXPECT_TRUE(h.Place(type, kMiB).on_gpu()) << type;
  }
  EXPECT_EQ(h.Fallbacks(kFallbackUnsupported), 7);
  EXPECT_EQ(h.dm->cpu_collections(), 7);
}

TEST(DeviceManager, EveryGpuKindRunsWithEitherMetric) {
  // FAISS 1.7.3's GPU flat and IVF indexes take L2 and inner product alike (GpuIndexIVF
  // refuses other metrics; vecgpu has no others): the metric never sends an index to the CPU.
  Harness h({kGiB});
  for (const char* type : {"Flat", "IVF16,Flat", "IVF16,PQ16", "IVF16,SQ8", "IVF16,SQfp16"}) {
    for (const char* metric : {"L2", "IP"}) {
      auto spec = ParseIndexType(type, 128, metric);
      ASSERT_TRUE(spec.ok()) << type;
      auto p = h.dm->Place(*spec, kMiB, "", "t/c");
      ASSERT_TRUE(p.ok());
      EXPECT_TRUE(p->on_gpu()) << type << " " << metric << ": " << p->reason;
    }
  }
  EXPECT_EQ(h.Fallbacks(kFallbackUnsupported), 0);
}

TEST(DeviceManager, IvfPqRunsOnAGpuWithAnyDimensionsPerSubQuantizer) {
  // FAISS 1.7.3 runs dimensions per sub-quantizer without a specialised kernel (48 here) on
  // its GEMM path, and PQ96 with float16 lookup tables: both belong on the GPU.
  Harness h({kGiB});
  for (const char* type : {"IVF16,PQ16", "IVF16,PQ96", "IVF16,PQ48", "IVF16,PQ64"}) {
    auto p = h.dm->Place(Spec(type, 768), kMiB, "", "t/c");
    ASSERT_TRUE(p.ok()) << type;
    EXPECT_TRUE(p->on_gpu()) << type << ": " << p->reason;
  }
  // What it does not run: 5 or 128 sub-quantizers, 4-bit codes.
  for (const char* type : {"IVF16,PQ5", "IVF16,PQ128", "IVF16,PQ16x4"}) {
    auto spec = ParseIndexType(type, 640);
    ASSERT_TRUE(spec.ok()) << type;
    EXPECT_FALSE(DeviceManager::GpuUnsupported(*spec).empty()) << type;
  }
  EXPECT_EQ(DeviceManager::GpuUnsupported(Spec("IVF16,PQ16", 768)), "");
}

TEST(DeviceManager, PlacementReadsTheDevicesFreeMemoryAndKeepsTheReserve) {
  // Budgets of 1 GiB, but another process holds most of GPU 0: it reports 300 MiB free.
  FakeDeviceProvider provider({kGiB, kGiB});
  DeviceOptions options;
  options.reserve_bytes = 256 * kMiB;
  struct H {
    FakeDeviceProvider& provider;
    std::unique_ptr<DeviceManager> dm;
    Placement Place(const std::string& type, int64_t bytes) {
      auto p = dm->Place(Spec(type, 128), bytes, "", "t/c");
      EXPECT_TRUE(p.ok());
      return p.ok() ? *p : Placement{};
    }
  } h{provider, std::make_unique<DeviceManager>(&provider, options)};
  h.provider.free[0] = 300 * kMiB;
  h.provider.free[1] = 700 * kMiB;
  Placement a = h.Place("L2", 200 * kMiB);
  EXPECT_EQ(a.gpus, std::vector<int>{1}) << a.reason;  // more free, as measured
  // 500 MiB: GPU 1 would keep less than the 256 MiB reserve once it is used (700 - 256 =
  // 444 < 500), GPU 0 has 44 MiB beyond its reserve: the CPU, saying so.
  h.provider.free[1] = 450 * kMiB;  // the first copy, built
  Placement b = h.Place("L2", 500 * kMiB);
  EXPECT_FALSE(b.on_gpu());
  EXPECT_NE(b.reason.find("as measured, less the 256 MiB reserve"), std::string::npos) << b.reason;
  // Growth is measured too: GPU 1 has 450 - 256 = 194 MiB to give beyond its reserve.
  Placement grown = h.dm->Resize(a, Spec("L2", 128), 400 * kMiB, "", "t/c");
  EXPECT_FALSE(grown.on_gpu() && grown.gpus == a.gpus && grown.reserved[0] >= 500 * kMiB)
      << grown.reason;
  // A provider that cannot measure leaves the budget alone in charge.
  h.provider.free_error = Unavailable("no cudaMemGetInfo");
  EXPECT_TRUE(h.Place("L2", 300 * kMiB).on_gpu());
}

TEST(DeviceManager, GrowthInPlaceIsGeometricWhenTheGpuHasRoom) {
  Harness h({kGiB, kGiB});
  IndexSpec flat = Spec("Flat", 128);
  Placement a = h.Place("Flat", 80 * kMiB);  // GPU 0: 100 reserved
  ASSERT_EQ(a.reserved[0], 100 * kMiB);
  // Just past its reservation: half as much again (150), more than a quarter over 101.
  a = h.dm->Resize(a, flat, 101 * kMiB, "", "t/a");
  EXPECT_EQ(a.gpus, std::vector<int>{0});
  EXPECT_EQ(a.reserved[0], 150 * kMiB);
  // A large step: a quarter over what it needs, when that is more.
  a = h.dm->Resize(a, flat, 400 * kMiB, "", "t/a");
  EXPECT_EQ(a.reserved[0], 500 * kMiB);
  // Room for the quarter but not for half again: the quarter, in place.
  Placement b = h.Place("Flat", 300 * kMiB, "gpu:0");  // 375: 149 MiB left on GPU 0
  ASSERT_EQ(b.gpus, std::vector<int>{0});
  a = h.dm->Resize(a, flat, 501 * kMiB, "", "t/a");  // 750 does not fit, 626 does
  EXPECT_EQ(a.gpus, std::vector<int>{0}) << a.reason;
  EXPECT_EQ(a.reserved[0], 501 * kMiB + 501 * kMiB / 4);
  EXPECT_EQ(h.Reserved(0), a.reserved[0] + b.reserved[0]);
}

TEST(DeviceManager, SetsFaissTemporaryMemoryBeforePlacingAnything) {
  FakeDeviceProvider provider({kGiB});
  DeviceOptions o;
  EXPECT_EQ(o.temp_memory_bytes, 1536 * kMiB);  // FAISS's own default on large GPUs
  o.temp_memory_bytes = 512 * kMiB;
  ASSERT_TRUE(o.Validate().ok());
  std::string log;
  DeviceManager dm(&provider, o, [&](const std::string& line) { log += line + "\n"; });
  EXPECT_EQ(provider.temp_memory.load(), 512 * kMiB);
  EXPECT_NE(log.find("FAISS temporary memory 512 MiB"), std::string::npos) << log;
  // Off: no provider call at all.
  FakeDeviceProvider unused({kGiB});
  o.gpus = "none";
  DeviceManager none(&unused, o);
  EXPECT_EQ(unused.temp_memory.load(), -1);
  for (int64_t bad : {int64_t{-1}, 1537 * kMiB}) {
    o.temp_memory_bytes = bad;
    EXPECT_NE(o.Validate().message().find("gpu_temp_memory_mb"), std::string::npos) << bad;
  }
}

TEST(DeviceManager, ShardsWhatNoSingleGpuHolds) {
  Harness h({kGiB, kGiB, kGiB});
  Placement p = h.Place("Flat", 1500 * kMiB);
  ASSERT_EQ(p.gpus.size(), 2u) << p.reason;  // the fewest GPUs whose shares fit
  EXPECT_NE(p.reason.find("sharded over 2 GPUs"), std::string::npos);
  EXPECT_EQ(p.device(), "gpu:0,1");
  // Shards are not used for a GPU named in the hint.
  Placement q = h.Place("Flat", 1500 * kMiB, "gpu:2");
  EXPECT_FALSE(q.on_gpu());
  // More than all of them together: the CPU.
  Placement r = h.Place("Flat", 5 * kGiB);
  EXPECT_FALSE(r.on_gpu());
  EXPECT_EQ(r.fallback, kFallbackNoBudget);
  EXPECT_NE(r.reason.find("needs 5120 MiB of GPU memory"), std::string::npos) << r.reason;
}

TEST(DeviceManager, HintsPinOrRefuse) {
  Harness h({kGiB, kGiB});
  EXPECT_EQ(h.Place("Flat", kMiB, "gpu:1").gpus, std::vector<int>{1});
  Placement cpu = h.Place("Flat", kMiB, "cpu");
  EXPECT_FALSE(cpu.on_gpu());
  EXPECT_EQ(cpu.fallback, kFallbackHint);
  EXPECT_TRUE(h.Place("Flat", kMiB, "gpu").on_gpu());
  EXPECT_NE(h.Place("Flat", kMiB, "gpu:7").reason.find("GPU 7 is not in use"), std::string::npos);
  for (const char* bad : {"tpu", "gpu:", "gpu:x", "gpu:-1"}) {
    EXPECT_EQ(h.dm->Place(Spec("Flat", 128), kMiB, bad, "t/c").status().code(),
              StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(DeviceManager, GrowthResizesInPlaceThenMoves) {
  Harness h({kGiB, kGiB});  // budgets 1024 MiB each
  IndexSpec flat = Spec("Flat", 128);
  Placement a = h.Place("Flat", 100 * kMiB);  // GPU 0 (ties go to the lower id), 125 reserved
  Placement b = h.Place("Flat", 100 * kMiB);  // GPU 1
  Placement c = h.Place("Flat", 700 * kMiB);  // GPU 0 again: 875 reserved, 24 MiB left
  ASSERT_EQ(a.gpus, std::vector<int>{0});
  ASSERT_EQ(b.gpus, std::vector<int>{1});
  ASSERT_EQ(c.gpus, std::vector<int>{0});
  // Within its reservation: unchanged.
  EXPECT_EQ(h.dm->Resize(b, flat, 120 * kMiB, "", "t/b").reserved, b.reserved);
  // Past it with room on its GPU: in place, with headroom.
  b = h.dm->Resize(b, flat, 300 * kMiB, "", "t/b");
  EXPECT_EQ(b.gpus, std::vector<int>{1});
  EXPECT_EQ(b.reserved[0], 375 * kMiB);
  // No room left on GPU 0: moves to GPU 1.
  a = h.dm->Resize(a, flat, 300 * kMiB, "", "t/a");
  EXPECT_EQ(a.gpus, std::vector<int>{1}) << a.reason;
  EXPECT_EQ(h.Reserved(0), 875 * kMiB);
  // Outgrows every GPU (and two shares of 600 MiB do not fit either): the CPU.
  c = h.dm->Resize(c, flat, 1200 * kMiB, "", "t/c");
  EXPECT_FALSE(c.on_gpu());
  EXPECT_EQ(c.fallback, kFallbackNoBudget);
  EXPECT_EQ(h.Reserved(0), 0);  // its reservation was given back
  // GPU 0 is free now: a collection outgrowing GPU 1 moves there.
  b = h.dm->Resize(b, flat, 800 * kMiB, "", "t/b");
  EXPECT_EQ(b.gpus, std::vector<int>{0}) << b.reason;
  EXPECT_EQ(h.Reserved(1), 375 * kMiB);  // a's
}

TEST(DeviceManager, OutOfMemorySendsOneCollectionToTheCpu) {
  Harness h({kGiB});
  Placement p = h.Place("Flat", kMiB);
  Placement cpu = h.dm->Failed(p, 0, ResourceExhausted("cudaMalloc: out of memory"), "t/c");
  EXPECT_FALSE(cpu.on_gpu());
  EXPECT_EQ(cpu.fallback, kFallbackOutOfMemory);
  EXPECT_TRUE(h.dm->healthy(0));
  EXPECT_EQ(h.Reserved(0), 0);
  EXPECT_TRUE(h.Place("Flat", kMiB).on_gpu());
  EXPECT_EQ(h.Fallbacks(kFallbackOutOfMemory), 1);
}

TEST(DeviceManager, AFailingGpuIsMarkedUnhealthyAndAvoided) {
  Harness h({kGiB, kGiB});
  Placement p = h.Place("Flat", kMiB);
  ASSERT_EQ(p.gpus, std::vector<int>{0});
  Placement kept = h.dm->Failed(p, 0, Internal("CUDA error 700: an illegal memory access"), "t/c");
  // The collection keeps its place (and reservation) on the GPU, served from the CPU until
  // the GPU is back.
  EXPECT_EQ(kept.gpus, std::vector<int>{0});
  EXPECT_EQ(h.Reserved(0), p.reserved[0]);
  EXPECT_EQ(h.Fallbacks(kFallbackDeviceFailed), 1);
  EXPECT_FALSE(h.dm->healthy(0));
  EXPECT_TRUE(h.dm->healthy(1));
  EXPECT_NE(h.Log().find("GPU 0 lost (CUDA error 700: an illegal memory access)"),
            std::string::npos)
      << h.Log();
  EXPECT_EQ(h.dm->DownReason({0}),
            "GPU 0 failed (CUDA error 700: an illegal memory access), restarting: served from "
            "the CPU until it is back");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(h.Place("Flat", kMiB).gpus, std::vector<int>{1});
  h.dm->Failed(h.Place("Flat", kMiB), 1, Internal("CUDA error 999"), "t/c");
  Placement none = h.Place("Flat", kMiB);
  EXPECT_FALSE(none.on_gpu());
  EXPECT_EQ(none.reason, "on the CPU: every GPU in use has failed");
}

TEST(DeviceManager, ALostGpuRestartsAfterItsBackoffAndComesBack) {
  DeviceOptions o;
  o.restart_backoff_s = 0.05;
  Harness h({kGiB, kGiB}, "all", 1.0, o);
  const int64_t before = h.dm->generation({0});
  h.provider.Lose(0, "its GPU host process killed by signal 9 (Killed)");
  EXPECT_FALSE(h.dm->healthy(0));
  // Reported again (a copy's error after the process's end): the same loss.
  h.dm->DeviceLost(0, "the GPU host process of GPU 0 (pid 7) killed by signal 9");
  ASSERT_TRUE(h.WaitFor([&] { return h.dm->healthy(0); }));
  EXPECT_EQ(h.provider.restarts.load(), 1);
  EXPECT_NE(h.dm->generation({0}), before);
  EXPECT_EQ(h.dm->generation({1}), 0);
  const auto d = h.dm->Devices()[0];
  EXPECT_EQ(d.faults, 1);
  EXPECT_EQ(d.restarts, 1);
  EXPECT_FALSE(d.quarantined);
  EXPECT_NE(h.Log().find("GPU 0 is back (restart 1)"), std::string::npos) << h.Log();
  EXPECT_EQ(h.dm->DownReason({0, 1}), "");
}

TEST(DeviceManager, RepeatedFaultsQuarantineAGpuUntilItIsEnabled) {
  DeviceOptions o;
  o.restart_backoff_s = 0.01;
  o.max_faults = 2;
  o.fault_window_s = 60;
  o.quarantine_s = 0;  // until an operator
  Harness h({kGiB, kGiB}, "all", 1.0, o);
  h.provider.Lose(0, "crash 1");
  ASSERT_TRUE(h.WaitFor([&] { return h.dm->healthy(0); }));
  h.provider.Lose(0, "crash 2");
  EXPECT_TRUE(h.dm->Devices()[0].quarantined);
  EXPECT_NE(h.Log().find("GPU 0 quarantined after 2 faults in 60 s (last: crash 2)"),
            std::string::npos)
      << h.Log();
  EXPECT_NE(h.dm->QuarantineDetail().find("GPU 0 quarantined after 2 faults"), std::string::npos);
  EXPECT_NE(h.dm->DownReason({0}).find("quarantined"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(h.provider.restarts.load(), 1);  // no restart while quarantined
  EXPECT_FALSE(h.dm->healthy(0));
  // New collections avoid it meanwhile.
  EXPECT_EQ(h.Place("Flat", kMiB).gpus, std::vector<int>{1});
  EXPECT_EQ(h.dm->Enable(-1), 1);
  ASSERT_TRUE(h.WaitFor([&] { return h.dm->healthy(0); }));
  EXPECT_EQ(h.provider.restarts.load(), 2);
  EXPECT_EQ(h.dm->QuarantineDetail(), "");
  EXPECT_EQ(h.dm->Enable(-1), 0);
}

TEST(DeviceManager, AQuarantineEndsByItselfAfterItsTime) {
  DeviceOptions o;
  o.restart_backoff_s = 0.01;
  o.max_faults = 1;
  o.quarantine_s = 0.2;
  Harness h({kGiB}, "all", 1.0, o);
  h.provider.Lose(0, "crash");
  EXPECT_TRUE(h.dm->Devices()[0].quarantined);
  ASSERT_TRUE(h.WaitFor([&] { return h.dm->healthy(0); }));
  EXPECT_NE(h.Log().find("GPU 0 quarantine over"), std::string::npos) << h.Log();
}

TEST(DeviceManager, ARestartThatFailsIsAnotherFault) {
  DeviceOptions o;
  o.restart_backoff_s = 0.01;
  o.max_faults = 3;
  o.quarantine_s = 0;
  Harness h({kGiB}, "all", 1.0, o);
  h.provider.restart_error = Unavailable("cannot start the GPU host process");
  h.provider.Lose(0, "crash");
  ASSERT_TRUE(h.WaitFor([&] { return h.dm->Devices()[0].quarantined; }));
  EXPECT_EQ(h.provider.restarts.load(), 2);  // 1 loss + 2 failed restarts = 3 faults
  EXPECT_EQ(h.dm->Devices()[0].faults, 3);
  EXPECT_NE(h.Log().find("restart failed: cannot start the GPU host process"), std::string::npos);
}

TEST(DeviceManager, FaultOptionsAreValidated) {
  DeviceOptions o;
  o.max_faults = 0;
  EXPECT_NE(o.Validate().message().find("gpu_max_faults"), std::string::npos);
  o = DeviceOptions();
  o.fault_window_s = 0;
  EXPECT_NE(o.Validate().message().find("gpu_fault_window_s"), std::string::npos);
  o = DeviceOptions();
  o.quarantine_s = -1;
  EXPECT_NE(o.Validate().message().find("gpu_quarantine_s"), std::string::npos);
}

TEST(DeviceManager, AFailedShardedCopyBlamesNoGpu) {
  Harness h({kGiB, kGiB});
  Placement p = h.Place("Flat", 1500 * kMiB);
  ASSERT_EQ(p.gpus.size(), 2u);
  Placement cpu = h.dm->Failed(p, -1, Internal("CUDA error 700"), "t/c");
  EXPECT_EQ(cpu.fallback, kFallbackDeviceFailed);
  EXPECT_NE(cpu.reason.find("its copy on gpu:0,1 failed"), std::string::npos) << cpu.reason;
  EXPECT_TRUE(h.dm->healthy(0));
  EXPECT_TRUE(h.dm->healthy(1));
  EXPECT_EQ(h.Reserved(0) + h.Reserved(1), 0);
}

TEST(DeviceManager, CountsBalanceThroughFailuresAndMoves) {
  Harness h({kGiB});
  IndexSpec flat = Spec("Flat", 128);
  Placement a = h.Place("Flat", kMiB);
  Placement b = h.Place("Flat", kMiB);
  a = h.dm->Failed(a, 0, ResourceExhausted("out of memory"), "t/a");
  b = h.dm->Resize(b, flat, 2 * kGiB, "", "t/b");  // outgrows the GPU: the CPU
  EXPECT_FALSE(b.on_gpu());
  EXPECT_EQ(h.dm->cpu_collections(), 2);
  EXPECT_EQ(h.dm->Devices()[0].collections, 0);
  h.dm->Release(a);
  h.dm->Release(b);
  EXPECT_EQ(h.dm->cpu_collections(), 0);
  EXPECT_EQ(h.Reserved(0), 0);
}

// Extra copies of hot indexes: on another GPU, counted, and taken back (the owner told once)
// when a placement needs the room, before it would shard or go to the CPU.
TEST(DeviceManager, ExtraCopiesBorrowRoomAPlacementTakesBack) {
  Harness h({kGiB, kGiB});  // budgets 1024 MiB each
  IndexSpec flat = Spec("Flat", 128);
  Placement hot = h.Place("Flat", 100 * kMiB);  // GPU 0
  ASSERT_EQ(hot.gpus, std::vector<int>{0});
  int reclaimed = 0;
  auto copy =
      h.dm->PlaceCopy(flat, 600 * kMiB, hot.gpus, "t/hot", "queue deep", [&] { reclaimed++; });
  ASSERT_TRUE(copy.ok()) << copy.status().message();
  EXPECT_EQ(copy->gpu, 1);
  EXPECT_EQ(copy->bytes, 750 * kMiB);  // with a quarter of headroom, as placements
  EXPECT_EQ(h.Reserved(1), 750 * kMiB);
  EXPECT_EQ(h.dm->Devices()[1].extra_copies, 1);
  EXPECT_EQ(h.dm->Devices()[1].collections, 0);  // a copy is not a collection
  EXPECT_NE(h.log.find("t/hot copy on gpu:1: queue deep"), std::string::npos) << h.log;
  // Copies never take room from copies: no GPU left with 600 MiB for a second one.
  auto second = h.dm->PlaceCopy(flat, 600 * kMiB, hot.gpus, "t/warm", "queue deep", [] {});
  EXPECT_EQ(second.status().code(), StatusCode::kResourceExhausted);
  // A collection needing 800 MiB: GPU 0 has 899 MiB free, so it goes there untouched.
  // Then one of 500 MiB: neither GPU has room (99 and 274 MiB), sharding would fit, but the
  // copy's room is taken back first so it lands whole on GPU 1.
  Placement big = h.Place("Flat", 800 * kMiB);
  ASSERT_EQ(big.gpus, std::vector<int>{0});
  EXPECT_EQ(reclaimed, 0);
  Placement other = h.Place("Flat", 500 * kMiB);
  EXPECT_EQ(other.gpus, std::vector<int>{1}) << other.reason;
  EXPECT_EQ(reclaimed, 1);
  EXPECT_EQ(h.dm->Devices()[1].extra_copies, 0);
  EXPECT_EQ(h.Reserved(1), 625 * kMiB);  // only the new collection's
  EXPECT_NE(h.log.find("t/hot copy on gpu:1 reclaimed: t/c needs the room"), std::string::npos)
      << h.log;
  // Its owner's release afterwards is a no-op; the owner is not told twice.
  h.dm->ReleaseCopy(copy->id, "the load fell");
  EXPECT_EQ(h.Reserved(1), 625 * kMiB);
  EXPECT_EQ(reclaimed, 1);
}

TEST(DeviceManager, GrowthReclaimsCopiesOnItsGpuBeforeMoving) {
  Harness h({kGiB, kGiB});
  IndexSpec flat = Spec("Flat", 128);
  Placement a = h.Place("Flat", 400 * kMiB);  // GPU 0: 500 reserved
  Placement b = h.Place("Flat", 400 * kMiB);  // GPU 1: 500 reserved
  ASSERT_EQ(b.gpus, std::vector<int>{1});
  bool told = false;
  auto copy = h.dm->PlaceCopy(flat, 300 * kMiB, a.gpus, "t/a", "queue deep", [&] { told = true; });
  ASSERT_TRUE(copy.ok());
  ASSERT_EQ(copy->gpu, 1);  // 375 MiB on GPU 1: 149 MiB left there
  // b grows to 600 MiB (750 with headroom): only with the copy's room does it fit in place.
  b = h.dm->Resize(b, flat, 600 * kMiB, "", "t/b");
  EXPECT_EQ(b.gpus, std::vector<int>{1}) << b.reason;
  EXPECT_EQ(b.reserved[0], 750 * kMiB);
  EXPECT_TRUE(told);
  EXPECT_EQ(h.Reserved(1), 750 * kMiB);
  // A copy that cannot grow in place says so (its owner drops it).
  auto c = h.dm->PlaceCopy(flat, 100 * kMiB, b.gpus, "t/b", "queue deep", [] {});
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->gpu, 0);
  EXPECT_TRUE(h.dm->ResizeCopy(c->id, 300 * kMiB));   // 375 MiB: fits beside a's 500
  EXPECT_FALSE(h.dm->ResizeCopy(c->id, 500 * kMiB));  // 625 MiB: does not
  h.dm->ReleaseCopy(c->id, "no room to grow");
  EXPECT_EQ(h.Reserved(0), 500 * kMiB);
  EXPECT_EQ(h.dm->Devices()[0].extra_copies, 0);
}

TEST(DeviceManager, AFailedCopyMarksItsGpuUnhealthyUnlessItRanOutOfMemory) {
  Harness h({kGiB, kGiB, kGiB});
  IndexSpec flat = Spec("Flat", 128);
  auto oom = h.dm->PlaceCopy(flat, kMiB, {0}, "t/c", "queue deep", [] {});
  ASSERT_TRUE(oom.ok());
  h.dm->CopyFailed(oom->id, ResourceExhausted("cudaMalloc: out of memory"), "t/c");
  EXPECT_TRUE(h.dm->healthy(oom->gpu));
  EXPECT_EQ(h.Reserved(oom->gpu), 0);
  auto fault = h.dm->PlaceCopy(flat, kMiB, {0}, "t/c", "queue deep", [] {});
  ASSERT_TRUE(fault.ok());
  h.dm->CopyFailed(fault->id, Internal("CUDA error 700"), "t/c");
  EXPECT_FALSE(h.dm->healthy(fault->gpu));
  EXPECT_EQ(h.Reserved(fault->gpu), 0);
  // Kinds FAISS cannot run on a GPU get no copy.
  EXPECT_FALSE(h.dm->PlaceCopy(Spec("HNSW32", 128), kMiB, {0}, "t/c", "", [] {}).ok());
}

TEST(DeviceManager, MaxCopiesDefaultsToOnePerGpu) {
  Harness h({kGiB, kGiB, kGiB});
  EXPECT_EQ(h.dm->max_copies(), 3);
  DeviceOptions o;
  o.copies.max_copies = 2;
  DeviceManager two(&h.provider, o);
  EXPECT_EQ(two.max_copies(), 2);
  o.copies.max_copies = -1;
  EXPECT_FALSE(o.Validate().ok());
  o.copies.max_copies = 0;
  o.copies.drop_busy = 1;
  EXPECT_FALSE(o.Validate().ok());
}

TEST(DeviceManager, GpuCapacityInvertsGpuBytes) {
  for (const char* type : {"Flat", "IVF16,PQ16", "IVF16_SQ8", "BINARY_FLAT", "IVF16"}) {
    const IndexSpec spec = Spec(type, 128);
    for (int64_t n : {0, 1, 1000, 123457}) {
      const int64_t bytes = DeviceManager::GpuBytes(spec, n);
      EXPECT_EQ(DeviceManager::GpuCapacity(spec, bytes), n) << type << " " << n;
      EXPECT_EQ(DeviceManager::GpuCapacity(spec, bytes - 1), std::max<int64_t>(n - 1, 0)) << type;
    }
  }
  EXPECT_EQ(DeviceManager::GpuCapacity(Spec("Flat", 128), 0), 0);
}

TEST(DeviceManager, GpuBytesFollowFaissLayouts) {
  EXPECT_EQ(DeviceManager::GpuBytes(Spec("Flat", 128), 1000) -
                DeviceManager::GpuBytes(Spec("Flat", 128), 0),
            1000 * (128 * 4 + 4));
  EXPECT_EQ(DeviceManager::GpuBytes(Spec("IVF16,PQ16", 128), 1000) -
                DeviceManager::GpuBytes(Spec("IVF16,PQ16", 128), 0),
            1000 * (16 + 8));
  EXPECT_EQ(DeviceManager::GpuBytes(Spec("BINARY_FLAT", 256), 1000) -
                DeviceManager::GpuBytes(Spec("BINARY_FLAT", 256), 0),
            1000 * 32);
}

}  // namespace
}  // namespace vecgpu
