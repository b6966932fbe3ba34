#pragma once

#include <functional>

#include "core/backend.h"
#include "core/device/device_provider.h"

namespace vecgpu::gpu_host {

struct GpuHostMainOptions {
  int fd = 3;          // the socket to the server
  int device = -1;     // the GPU this process serves; -1: it only counts devices
  bool fake = false;   // `inner` is a fake: it obeys kCrash, and free memory is counted here
  int workers = 4;     // threads for searches and adds (builds have one of their own)
  std::function<void()> on_worker_start;
};

// The body of `vecgpu gpu-host` (started by GpuHostProvider, never by people): serves the
// server's requests on `fd` with `inner` (the CUDA provider, or a fake) until the socket
// closes, loading each host copy it is sent with `cpu` and building the device copy from it.
// Returns the exit status. After a device error (anything but a refusal such as out of
// memory or an unsupported index) it replies and exits with status 3: a CUDA context that
// faulted is not used again.
int RunGpuHost(const GpuHostMainOptions& options, DeviceProvider& inner, BackendFactory& cpu);

}  // namespace vecgpu::gpu_host
