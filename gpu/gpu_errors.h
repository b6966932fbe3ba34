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

}  // namespace vecgpu::gpu
