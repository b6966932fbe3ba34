// The memory checks of vecgpu-gpu-check over a fake GPU whose copies are CPU indexes: the
// placed collection, the adds and the figures, without CUDA (its device copy timing and its
// memory hog need a real device, and say so).
#include "gpu/gpu_memory_checks.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "core/device/fake_device_provider.h"
#include "cpu_fallback/cpu_backend_factory.h"

namespace vecgpu::gpu {
namespace {

class GpuMemoryChecksTest : public ::testing::Test {
 protected:
  GpuMemoryChecksTest() : fake_({int64_t{1} << 30}) {
    fake_.make_replica = [this](const Backend& host,
                                const std::vector<int>&) -> StatusOr<std::unique_ptr<Backend>> {
      ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, host.Serialize());
      return cpu_.Load(host.spec(),
                       std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                       host.next_label());
    };
  }

  // A real device is visible (then the checks time and take its memory for real).
  static bool CudaDevice() {
    int n = 0;
    const bool yes = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError();
    return yes;
  }

  cpu::CpuBackendFactory cpu_;
  FakeDeviceProvider fake_;
};

TEST_F(GpuMemoryChecksTest, SingleAddsReportTheCollectionAndTheMemory) {
  SingleAddsOptions o;
  o.n = 20000;
  o.dim = 16;
  o.adds = 300;
  std::vector<std::string> problems;
  const nlohmann::json r = SingleAdds(fake_, o, &problems);
  EXPECT_TRUE(problems.empty()) << nlohmann::json(problems).dump();
  EXPECT_EQ(r["adds_done"], 300);
  EXPECT_EQ(r["index_bytes"], 20000 * 16 * 4);
  EXPECT_EQ(r["after"]["device"], "gpu:0");
  EXPECT_EQ(r["after"]["gpu_copy"], "current");
  EXPECT_EQ(r["after"]["ntotal"], 20300);
  EXPECT_EQ(r["free_bytes_before_copy"], int64_t{1} << 30);  // what the fake reports
  EXPECT_EQ(r["peak_extra_bytes"], 0);
  EXPECT_GT(r["free_samples"].get<int64_t>(), 0);
  EXPECT_GT(r["adds_per_second"].get<double>(), 0);
  if (!CudaDevice()) {
    // Without CUDA there is no storage copy to time, so no slow add is judged.
    EXPECT_EQ(r["storage_copy_ms"], 0);
    EXPECT_TRUE(r["slow_adds"].is_null());
  }
}

TEST_F(GpuMemoryChecksTest, SingleAddsSayWhenNoCopyIsPlaced) {
  fake_.build_error = ResourceExhausted("fake: out of memory");
  SingleAddsOptions o;
  o.n = 1000;
  o.dim = 8;
  o.adds = 10;
  std::vector<std::string> problems;
  SingleAdds(fake_, o, &problems);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("no current GPU copy"), std::string::npos) << problems[0];
}

TEST_F(GpuMemoryChecksTest, ForcedOomNeedsARealDeviceForItsPressure) {
  if (CudaDevice()) GTEST_SKIP() << "a CUDA device is visible: gpu-check.sh's oom step runs";
  OomOptions o;
  o.copy_mb = 8;
  o.free_mb = 4;
  std::vector<std::string> problems;
  const nlohmann::json r = ForcedOom(fake_, o, &problems);
  EXPECT_EQ(r["placed_before"]["gpu_copy"], "current");
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(problems.back().find("taking device memory: INTERNAL: cudaSetDevice"),
            std::string::npos)
      << problems.back();
}

}  // namespace
}  // namespace vecgpu::gpu
