#pragma once

#include <memory>

#include "core/device/device_provider.h"
#include "server/config.h"

namespace vecgpu::server {

// GPU host processes (gpu_host/) serving the CUDA devices when this build has the GPU
// backend, or the fake GPUs of --fake-gpus; else none.
std::unique_ptr<DeviceProvider> MakeDeviceProvider(const ServeOptions& o);

// `vecgpu gpu-host --device N --provider cuda|fake [--fake-gpus MiB,...]
// [--temp-memory-bytes B]`: a GPU host process, started by the server (GpuHostProvider)
// with its socket as descriptor 3. Returns the exit status.
int RunGpuHostCommand(int argc, char** argv);

}  // namespace vecgpu::server
