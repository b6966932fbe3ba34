#pragma once

#include <memory>
#include <vector>

#include "core/backend.h"
#include "core/util/status.h"

namespace vecgpu::gpu {

// One CUDA device as FAISS uses it: its resources (streams, cuBLAS handle, temporary memory:
// a faiss::gpu::StandardGpuResources, made on first use) and the device lock that serialises
// every use of them, since a StandardGpuResources is not safe for concurrent use. Owned by the
// CUDA provider and shared with every copy placed on the device. Thread-safe. Defined in
// gpu_replica.cc, so no FAISS or CUDA type shows here.
class GpuDevice;

// REQUIRES: CUDA reports a device `id` (FAISS's GPU code aborts the process on a missing one).
// `temp_memory`: FAISS's temporary memory there (DeviceOptions::temp_memory_bytes), set
// before its first use.
std::shared_ptr<GpuDevice> NewGpuDevice(int id, int64_t temp_memory);
// Whether FAISS's resources exist on the device, its temporary memory taken.
bool DeviceInUse(const GpuDevice& device);

// Builds the device copy of `host` (trained) on `devices`: a FAISS GPU index made from the
// host's own serialization (Backend::Serialize), sharded over the devices when there are
// several. Kinds: Flat (L2, IP), IVF-Flat, IVF-PQ (8-bit codes), IVF-SQ and binary Flat;
// anything else is Unimplemented. The copy answers Search and Add / AddLabeled with exactly
// the host's labels, ReserveCapacity (flat kinds reserve their storage ahead; FAISS's IVF
// lists grow by powers of two on their own), and Info; its other methods return
// Unimplemented. Each of its calls holds the device locks of all its devices (taken in
// ascending device order), including its destructor, which frees device memory.
//
// Errors: ResourceExhausted when a device ran out of memory; InvalidArgument, Unimplemented
// or FailedPrecondition when FAISS cannot run this index on a GPU; Internal when the device
// failed.
StatusOr<std::unique_ptr<Backend>> BuildGpuReplica(
    const Backend& host, const std::vector<std::shared_ptr<GpuDevice>>& devices);

}  // namespace vecgpu::gpu
