#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/util/status.h"

namespace vecgpu {

// What a provider reports about one GPU.
struct GpuProperties {
  int id = 0;  // the device ordinal, as --gpus names it
  std::string name;
  int64_t total_bytes = 0;
  int compute_major = 0;
  int compute_minor = 0;
};

// Told by a provider when a device's host (the GPU host process of gpu_host/) is lost: a
// crash, a CUDA fault, a hang. Called from the provider's own threads.
class DeviceWatcher {
 public:
  virtual ~DeviceWatcher() = default;
  virtual void DeviceLost(int device, const std::string& why) = 0;
};

// The devices a DeviceManager places collections on, and the copies it places there. The CUDA
// provider (gpu/) is thin: finding devices, their memory, and building FAISS GPU indexes from
// host indexes; every decision is the DeviceManager's. Tests use a fake. Thread-safe.
//
// Error codes of the replica operations tell the DeviceManager what failed:
// ResourceExhausted = out of device memory (the collection goes host-only); any other error =
// the device failed (it is marked unhealthy and everything on it is served from the host).
class DeviceProvider {
 public:
  virtual ~DeviceProvider() = default;

  virtual std::string name() const = 0;  // "cuda", "fake"
  // Visible devices; an error (no driver, no devices, a broken install) names why there are
  // none. Never aborts the process.
  virtual StatusOr<int> Count() = 0;
  virtual StatusOr<GpuProperties> Properties(int device) = 0;
  // Device memory free now, all users together, less FAISS's temporary memory where the
  // device has not taken it yet (it does at its first use).
  virtual StatusOr<int64_t> FreeBytes(int device) = 0;
  // FAISS's temporary memory on each device (DeviceOptions::temp_memory_bytes). The
  // DeviceManager sets it before it places anything; a device already in use keeps its own.
  virtual void SetTempMemory(int64_t bytes) = 0;

  // Builds a copy of `host` (trained, with all its vectors and their labels) on `devices`,
  // sharded over them when there are several. The copy answers Search, Add / AddLabeled (with
  // the labels the host gave the vectors) and Info; every other call is left to the host.
  // Each copy is called from one thread at a time, but the copies of one device may be called
  // at once (a GPU has several workers): the provider serialises what its devices need.
  virtual StatusOr<std::unique_ptr<Backend>> BuildReplica(const Backend& host,
                                                          const std::vector<int>& devices) = 0;

  // Who to tell when a device is lost (null: nobody). The provider calls `watcher` until
  // Watch(nullptr) returns.
  virtual void Watch(DeviceWatcher* watcher) { (void)watcher; }
  // After a loss: starts the device's host afresh (a new GPU host process). Copies built
  // before answer Unavailable from then on. OK when there is nothing to restart.
  virtual Status Restart(int device) {
    (void)device;
    return Status::Ok();
  }
};

}  // namespace vecgpu
