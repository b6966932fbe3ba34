// vecgpu-gpu-check: the in-process GPU checks of scripts/gpu-check.sh. Each command prints one
// JSON object on stdout and exits 0 when it passed (or found no GPU: {"skipped": "<why>"}),
// 1 when it failed, 2 on bad usage.
//
//   probe        the CUDA runtime's and driver's versions and each device as the CUDA
//                provider sees it (name, compute capability, total and free memory)
//   single-adds  10,000 single adds to the GPU copy of a 1,000,000 x 128 flat index, with
//                cudaMemGetInfo before and after (gpu_memory_checks.h)
//   oom          a forced out-of-memory: copies and adds refused with ResourceExhausted, a
//                placed collection served by its host copy (gpu_memory_checks.h)
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "gpu/cuda_device_provider.h"
#include "gpu/gpu_memory_checks.h"

namespace vecgpu::gpu {
namespace {

using json = nlohmann::json;

std::string Version(int v) {
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// Prints `r` with "ok" and "problems"; the exit code.
int Finish(json r, const std::vector<std::string>& problems) {
  r["problems"] = problems;
  r["ok"] = problems.empty();
  std::cout << r.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
  return problems.empty() ? 0 : 1;
}

int Probe(DeviceProvider& provider) {
  json r;
  int runtime = 0, driver = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) r["cuda_runtime"] = Version(runtime);
  if (cudaDriverGetVersion(&driver) == cudaSuccess) {
    r["cuda_driver"] = driver > 0 ? json(Version(driver)) : json();  // 0: no driver
  }
  cudaGetLastError();
  StatusOr<int> count = provider.Count();
  if (!count.ok()) {
    r["skipped"] = count.status().message();
    std::cout << r.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
    return 0;
  }
  std::vector<std::string> problems;
  r["count"] = *count;
  r["devices"] = json::array();
  for (int i = 0; i < *count; ++i) {
    StatusOr<GpuProperties> p = provider.Properties(i);
    StatusOr<int64_t> free_bytes = provider.FreeBytes(i);
    if (!p.ok() || !free_bytes.ok()) {
      problems.push_back("device " + std::to_string(i) + ": " +
                         (p.ok() ? free_bytes.status() : p.status()).ToString());
      continue;
    }
    r["devices"].push_back({{"id", i},
                            {"name", p->name},
                            {"compute_capability", std::to_string(p->compute_major) + "." +
                                                       std::to_string(p->compute_minor)},
                            {"total_bytes", p->total_bytes},
                            {"free_bytes", *free_bytes}});
  }
  return Finish(r, problems);
}

}  // namespace
}  // namespace vecgpu::gpu

int main(int argc, char** argv) {
  using namespace vecgpu::gpu;
  CLI::App app{"vecgpu-gpu-check: the in-process GPU checks of scripts/gpu-check.sh"};
  app.require_subcommand(1);
  int device = 0;
  app.add_option("--device", device, "CUDA device")->capture_default_str();
  app.add_subcommand("probe", "CUDA versions and the devices");
  SingleAddsOptions adds;
  CLI::App* single = app.add_subcommand("single-adds", "Single adds to a large flat GPU copy");
  single->add_option("--n", adds.n, "Vectors in the index")->capture_default_str();
  single->add_option("--dim", adds.dim, "Dimension")->capture_default_str();
  single->add_option("--adds", adds.adds, "Single adds")->capture_default_str();
  single->add_option("--seconds", adds.seconds, "Deadline for the adds")->capture_default_str();
  single->add_option("--max-slow-adds", adds.max_slow_adds, "Slow adds allowed")
      ->capture_default_str();
  OomOptions oom;
  CLI::App* oom_cmd = app.add_subcommand("oom", "A forced out-of-memory");
  oom_cmd->add_option("--copy-mb", oom.copy_mb, "Size of what must not fit")->capture_default_str();
  oom_cmd->add_option("--free-mb", oom.free_mb, "Device memory left free")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (adds.n < 1 || adds.dim < 1 || adds.adds < 1 || oom.copy_mb <= oom.free_mb ||
      oom.free_mb < 1) {
    std::cerr << "--n, --dim and --adds must be at least 1; --copy-mb must exceed --free-mb\n";
    return 2;
  }
  adds.device = oom.device = device;

  std::unique_ptr<vecgpu::DeviceProvider> provider = MakeCudaDeviceProvider();
  if (app.got_subcommand("probe")) return Probe(*provider);
  vecgpu::StatusOr<int> count = provider->Count();
  if (!count.ok()) {
    std::cout << nlohmann::json{{"skipped", count.status().message()}}.dump() << std::endl;
    return 0;
  }
  std::vector<std::string> problems;
  nlohmann::json r = app.got_subcommand("single-adds") ? SingleAdds(*provider, adds, &problems)
                                                       : ForcedOom(*provider, oom, &problems);
  return Finish(std::move(r), problems);
}
