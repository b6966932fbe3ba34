#include "gpu/gpu_errors.h"

namespace vecgpu::gpu {
namespace {

bool Contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// FAISS messages read "Error in <function> at <file>:<line>: <message>"; keep the message.
std::string_view Trim(std::string_view s) {
  if (s.rfind("Error in ", 0) == 0) {
    const auto at = s.find(" at ");
    const auto colon = s.find(": ", at == std::string_view::npos ? 0 : at);
    if (colon != std::string_view::npos) s = s.substr(colon + 2);
  }
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  return s;
}

}  // namespace

Status GpuError(std::string_view what, std::string_view message) {
  const std::string_view m = Trim(message);
  std::string text = std::string(what) + ": " + std::string(m);
  // StandardGpuResources reports a failed cudaMalloc as "alloc fail ... (cudaMalloc error out
  // of memory [2])"; cuBLAS as CUBLAS_STATUS_ALLOC_FAILED.
  if (Contains(m, "out of memory") || Contains(m, "cudaErrorMemoryAllocation") ||
      Contains(m, "alloc fail") || Contains(m, "ALLOC_FAILED")) {
    return ResourceExhausted("GPU " + text);
  }
  if (Contains(m, "not supported") || Contains(m, "not implemented") ||
      Contains(m, "only supports") || Contains(m, "unsupported") ||
      Contains(m, "is not supported")) {
    return Unimplemented("GPU " + text);
  }
  return Internal("GPU " + text);
}

}  // namespace vecgpu::gpu
