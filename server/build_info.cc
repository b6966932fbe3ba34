#include "server/build_info.h"

#include <dlfcn.h>
#include <faiss/utils/utils.h>

#include "vecgpu_build_config.h"  // generated (CMake): versions and options of this build

namespace vecgpu::server {
namespace {

// The BLAS the process runs: OpenBLAS names itself ("OpenBLAS 0.3.21 DYNAMIC_ARCH ...");
// found at run time, as the libblas alternative may point elsewhere.
std::string BlasName() {
  using Config = char* (*)();
  if (auto fn = reinterpret_cast<Config>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
    return fn();
  }
  return "not OpenBLAS (the system's libblas)";
}

}  // namespace

std::string BuildInfo() {
  std::string simd = faiss::get_compile_options();  // e.g. "OPTIMIZE AVX2 "
  std::string level = simd.find("AVX2") != std::string::npos ? "AVX2" : "generic (SSE)";
  std::string gpu = VECGPU_FAISS_GPU;
#if VECGPU_HAVE_GPU
  gpu = "yes (" + gpu + ")";
#else
  gpu = gpu == "none" ? "no" : "no (FAISS has " + gpu + ", but no CUDA toolkit was found)";
#endif
#if VECGPU_HAVE_GRPC
  const char* grpc = "yes (Vald v1 API)";
#else
  const char* grpc = "no (built without VECGPU_WITH_GRPC)";
#endif
  return std::string("vecgpu ") + VECGPU_VERSION + "\n" + VECGPU_FAISS_DESC + "\n" +
         "  SIMD: " + level + "\n  GPU: " + gpu + "\n  BLAS: " + BlasName() + "\n  gRPC: " + grpc;
}

}  // namespace vecgpu::server
