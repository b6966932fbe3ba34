#pragma once

#include <string>

namespace vecgpu::server {

// What `vecgpu --version` and the start-up log say about this build: the vecgpu version, the
// FAISS it runs (where from, SIMD level, GPU support) and the BLAS under it. Several lines.
std::string BuildInfo();

}  // namespace vecgpu::server
