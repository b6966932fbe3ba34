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

StatusOr<std::vector<uint8_t>> PackBits(int64_t n, int d, const float* x) {
  std::vector<uint8_t> codes(n * (d / 8), 0);
  for (int64_t i = 0; i < n * d; ++i) {
    if (x[i] == 1.0f) {
      codes[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    } else if (x[i] != 0.0f) {
      return InvalidArgument("vectors: binary vector " + std::to_string(i / d) + " bit " +
                             std::to_string(i % d) + " is " + std::to_string(x[i]) +
                             ", not 0 or 1");
    }
  }
  return codes;
}

}  // namespace vecgpu::gpu
