#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/device/device_provider.h"
#include "core/util/mutex.h"

namespace vecgpu::gpu_host {

class HostProcess;

struct GpuHostOptions {
  // The binary started as `<exe> gpu-host --device N <provider_args>`: this one.
  std::string exe = "/proc/self/exe";
  // What the GPU host process serves with: {"--provider", "cuda"}, or the fake GPUs of tests
  // and `serve --fake-gpus`: {"--provider", "fake", "--fake-gpus", "1024,1024"}.
  std::vector<std::string> provider_args = {"--provider", "cuda"};
  // A search, an add or a memory reading that takes longer than this means a hung device: its
  // process is killed, and the device counts as lost.
  double call_timeout_s = 30;
  std::function<void(const std::string&)> log;
};

// The DeviceProvider of the server (ARCHITECTURE.md, "GPU faults"): every CUDA and FAISS GPU
// call runs in a GPU host process, one per GPU (`vecgpu gpu-host`, gpu_host/host_main.h),
// never in the server, so a CUDA fault that aborts FAISS (FAISS_ASSERT, CUDA_VERIFY, an Xid)
// takes down that process only. The server keeps the host copies and the log; device copies
// are handles (RemoteReplica) to copies in the GPU host process. When a GPU host process
// ends, or does not answer within call_timeout_s, every call to its copies fails Unavailable
// and the watcher hears DeviceLost; Restart starts a new process. A sharded copy lives in
// the process of its first GPU. Thread-safe.
class GpuHostProvider final : public DeviceProvider {
 public:
  explicit GpuHostProvider(GpuHostOptions options);
  ~GpuHostProvider() override;

  std::string name() const override;
  StatusOr<int> Count() override;
  StatusOr<GpuProperties> Properties(int device) override;
  StatusOr<int64_t> FreeBytes(int device) override;
  StatusOr<std::unique_ptr<Backend>> BuildReplica(const Backend& host,
                                                  const std::vector<int>& devices) override;
  // Handed to each GPU host process at its start (its CUDA provider's SetTempMemory).
  void SetTempMemory(int64_t bytes) override { temp_memory_.store(bytes); }
  void Watch(DeviceWatcher* watcher) override;
  Status Restart(int device) override;

  // The GPU host process of `device` (0: none running), for logs and tests.
  int pid(int device);
  // Tells the process of `device` to abort: only the fake provider's process obeys (tests).
  Status Crash(int device);

 private:
  // The running process of `device`; started on first use only (after a loss, Restart
  // starts the next). Unavailable when it is not running.
  StatusOr<std::shared_ptr<HostProcess>> Host(int device) EXCLUDES(mu_);
  StatusOr<std::shared_ptr<HostProcess>> Start(int device);
  void Lost(int device, const std::string& why) EXCLUDES(watch_mu_);
  void Log(const std::string& line) const;

  const GpuHostOptions options_;
  std::atomic<int64_t> temp_memory_{-1};  // -1: the provider's own default
  Mutex mu_;
  std::map<int, std::shared_ptr<HostProcess>> hosts_ GUARDED_BY(mu_);
  bool counted_ GUARDED_BY(mu_) = false;
  StatusOr<int> count_ GUARDED_BY(mu_) = 0;
  Mutex watch_mu_;
  DeviceWatcher* watcher_ GUARDED_BY(watch_mu_) = nullptr;
};

}  // namespace vecgpu::gpu_host
