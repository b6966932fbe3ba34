#include "gpu/cuda_device_provider.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "core/device/device_manager.h"
#include "core/util/mutex.h"
#include "gpu/gpu_replica.h"

namespace vecgpu::gpu {
namespace {

std::string CudaError(const char* call, cudaError_t e) {
  return std::string("CUDA: ") + call + ": " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) +
         ", error " + std::to_string(static_cast<int>(e)) + ")";
}

class CudaDeviceProvider final : public DeviceProvider {
 public:
  std::string name() const override { return "cuda"; }

  StatusOr<int> Count() override {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clears the error, so later calls do not report it again
      return Unavailable(CudaError("cudaGetDeviceCount", e) +
                         "; no usable NVIDIA driver or device");
    }
    if (n <= 0) return Unavailable("no CUDA device visible");
    return n;
  }

  StatusOr<GpuProperties> Properties(int device) override {
    RETURN_IF_ERROR(CheckDevice(device));
    cudaDeviceProp prop{};
    const cudaError_t e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) return Internal(CudaError("cudaGetDeviceProperties", e));
    GpuProperties p;
    p.id = device;
    p.name = prop.name;
    p.total_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    p.compute_major = prop.major;
    p.compute_minor = prop.minor;
    return p;
  }

  StatusOr<int64_t> FreeBytes(int device) override {
    RETURN_IF_ERROR(CheckDevice(device));
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return Internal(CudaError("cudaSetDevice", e));
    size_t free_bytes = 0, total_bytes = 0;
    e = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (e != cudaSuccess) return Internal(CudaError("cudaMemGetInfo", e));
    int64_t free = static_cast<int64_t>(free_bytes);
    if (!DeviceInUse(*Device(device))) {
      // FAISS takes its temporary memory at the device's first use: count it as taken.
      free -= TempMemoryOf(static_cast<int64_t>(total_bytes));
    }
    return std::max<int64_t>(free, 0);
  }

  void SetTempMemory(int64_t bytes) override {
    MutexLock lock(mu_);
    temp_memory_ = bytes;
  }

  StatusOr<std::unique_ptr<Backend>> BuildReplica(const Backend& host,
                                                  const std::vector<int>& devices) override {
    if (devices.empty()) return InvalidArgument("no device to build the GPU copy on");
    std::set<int> seen;
    std::vector<std::shared_ptr<GpuDevice>> on;
    for (int d : devices) {
      RETURN_IF_ERROR(CheckDevice(d));
      if (!seen.insert(d).second) {
        return InvalidArgument("device " + std::to_string(d) + " named twice");
      }
      on.push_back(Device(d));
    }
    return BuildGpuReplica(host, on);
  }

 private:
  // OK when CUDA reports `device`; before any FAISS GPU call touches it.
  Status CheckDevice(int device) {
    ASSIGN_OR_RETURN(int n, Count());
    if (device < 0 || device >= n) {
      return Unavailable("CUDA device " + std::to_string(device) + " does not exist (" +
                         std::to_string(n) + " visible)");
    }
    return Status::Ok();
  }

  std::shared_ptr<GpuDevice> Device(int id) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    std::shared_ptr<GpuDevice>& d = devices_[id];
    if (!d) d = NewGpuDevice(id, temp_memory_);
    return d;
  }

  // The temporary memory FAISS 1.7.3 takes on a device of `total` bytes for what was asked
  // (StandardGpuResourcesImpl::getDefaultTempMemForGPU: at most 512 MiB up to 4 GiB, 1 GiB
  // up to 8 GiB, 1.5 GiB above).
  int64_t TempMemoryOf(int64_t total) EXCLUDES(mu_) {
    constexpr int64_t kGiB = int64_t{1} << 30;
    const int64_t cap = total <= 4 * kGiB ? kGiB / 2 : total <= 8 * kGiB ? kGiB : kGiB * 3 / 2;
    MutexLock lock(mu_);
    return std::min(temp_memory_, cap);
  }

  Mutex mu_;
  std::map<int, std::shared_ptr<GpuDevice>> devices_ GUARDED_BY(mu_);
  int64_t temp_memory_ GUARDED_BY(mu_) = DeviceOptions{}.temp_memory_bytes;
};

}  // namespace

std::unique_ptr<DeviceProvider> MakeCudaDeviceProvider() {
  return std::make_unique<CudaDeviceProvider>();
}

}  // namespace vecgpu::gpu
