#pragma once

#include <cstdint>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "core/util/status.h"

namespace vecgpu::gpu {

// Maps the message of an exception FAISS's GPU code threw (or of a CUDA call that failed) to
// a Status whose code tells the DeviceManager what happened: out of device memory ->
// ResourceExhausted; a limit or feature of FAISS's GPU indexes -> Unimplemented (this index
// cannot run there); anything else -> Internal (the device failed). `what` names the
// operation ("search", "add_vectors", "build").
Status GpuError(std::string_view what, std::string_view message);

// Runs `fn`, turning any exception into a Status as GpuError does. FAISS reports CUDA
// failures of its own calls as exceptions too, except those it asserts on.
template <typename F>
Status CallGpu(std::string_view what, F&& fn) {
  try {
    fn();
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(std::string(what) + ": out of host memory");
  } catch (const std::exception& e) {
    return GpuError(what, e.what());
  } catch (...) {
    return Internal(std::string(what) + ": unknown exception from FAISS GPU code");
  }
}

// Packs n binary vectors of d bits given as one 0/1 float per bit (row-major, size n * d)
// into FAISS's code layout (d / 8 bytes a vector, bit i of a vector in byte i / 8 at bit
// i % 8), as the host binary backend does. InvalidArgument for a component that is not 0 or 1.
// REQUIRES: d % 8 == 0.
StatusOr<std::vector<uint8_t>> PackBits(int64_t n, int d, const float* x);

}  // namespace vecgpu::gpu
