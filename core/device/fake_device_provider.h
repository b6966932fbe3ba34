#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "core/device/device_provider.h"
#include "core/util/mutex.h"

namespace vecgpu {

// A DeviceProvider for tests: GPUs that exist only in memory, with failures on demand. Its
// device copies come from `make_replica` (tests supply a CPU backend that plays the GPU copy);
// without one, BuildReplica answers Unimplemented.
class FakeDeviceProvider final : public DeviceProvider {
 public:
  // One entry per GPU: its memory in bytes.
  explicit FakeDeviceProvider(std::vector<int64_t> memory) : memory_(std::move(memory)) {
    for (auto& f : free) f = -1;
  }

  std::string name() const override { return "fake"; }
  StatusOr<int> Count() override {
    if (!count_error.ok()) return count_error;
    return static_cast<int>(memory_.size());
  }
  StatusOr<GpuProperties> Properties(int device) override {
    if (device < 0 || device >= static_cast<int>(memory_.size())) return NotFound("no device");
    return GpuProperties{device, "Fake GPU", memory_[device], 9, 0};
  }
  StatusOr<int64_t> FreeBytes(int device) override {
    if (!free_error.ok()) return free_error;
    if (device >= 0 && device < static_cast<int>(free.size()) && free[device] >= 0) {
      return free[device].load();
    }
    return memory_.at(device);
  }
  void SetTempMemory(int64_t bytes) override { temp_memory = bytes; }
  StatusOr<std::unique_ptr<Backend>> BuildReplica(const Backend& host,
                                                  const std::vector<int>& devices) override {
    builds++;
    last_devices = devices;
    if (!build_error.ok()) return build_error;
    if (!make_replica) return Unimplemented("the fake provider builds no copies");
    return make_replica(host, devices);
  }

  void Watch(DeviceWatcher* watcher) override {
    MutexLock lock(watch_mu_);
    watcher_ = watcher;
  }
  Status Restart(int device) override {
    restarted.push_back(device);
    restarts++;
    return restart_error;
  }
  // Plays a crash of `device`'s host: tells the watcher it is lost.
  void Lose(int device, const std::string& why) {
    MutexLock lock(watch_mu_);
    if (watcher_) watcher_->DeviceLost(device, why);
  }

  // Count() fails with this when set (no driver, ...).
  Status count_error;
  // BuildReplica fails with this when set.
  Status build_error;
  // FreeBytes reports these (per GPU; -1 or absent: all its memory), or fails with
  // free_error when set: memory other processes hold, as cudaMemGetInfo would say.
  std::vector<std::atomic<int64_t>> free = std::vector<std::atomic<int64_t>>(8);
  Status free_error;
  std::function<StatusOr<std::unique_ptr<Backend>>(const Backend&, const std::vector<int>&)>
      make_replica;
  // What SetTempMemory was given; -1: never called.
  std::atomic<int64_t> temp_memory{-1};
  std::atomic<int> builds{0};
  std::vector<int> last_devices;
  // Restart() answers this, and counts.
  Status restart_error;
  std::atomic<int> restarts{0};
  std::vector<int> restarted;

 private:
  std::vector<int64_t> memory_;
  Mutex watch_mu_;
  DeviceWatcher* watcher_ GUARDED_BY(watch_mu_) = nullptr;
};

}  // namespace vecgpu
