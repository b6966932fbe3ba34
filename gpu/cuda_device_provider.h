#pragma once

#include <memory>

#include "core/device/device_provider.h"

namespace vecgpu::gpu {

// The CUDA DeviceProvider ("cuda"): finds the devices through the CUDA runtime and builds
// FAISS GPU copies of host indexes (gpu_replica.h). Without a driver or a device, Count()
// says why and nothing else touches CUDA or FAISS's GPU code (which aborts the process when
// there is no device). Owns one set of FAISS GPU resources and one device lock per device,
// made on first use and shared by the copies placed there; copies keep them alive, so the
// provider may go before its copies. Thread-safe.
std::unique_ptr<DeviceProvider> MakeCudaDeviceProvider();

}  // namespace vecgpu::gpu
