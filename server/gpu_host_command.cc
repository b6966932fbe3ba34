#include "server/gpu_host_command.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/device/fake_device_provider.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "gpu_host/host_main.h"
#include "gpu_host/host_provider.h"
#include "server/config_checks.h"
#if VECGPU_HAVE_GPU
#include "gpu/cuda_device_provider.h"
#endif

namespace vecgpu::server {

std::unique_ptr<DeviceProvider> MakeDeviceProvider(const ServeOptions& o) {
  gpu_host::GpuHostOptions h;
  h.log = [](const std::string& line) { spdlog::info("{}", line); };
  if (!o.fake_gpus.empty()) {
    h.provider_args = {"--provider", "fake", "--fake-gpus", o.fake_gpus};
    return std::make_unique<gpu_host::GpuHostProvider>(std::move(h));
  }
#if VECGPU_HAVE_GPU
  h.provider_args = {"--provider", "cuda"};
  return std::make_unique<gpu_host::GpuHostProvider>(std::move(h));
#else
  return nullptr;
#endif
}

int RunGpuHostCommand(int argc, char** argv) {
  gpu_host::GpuHostMainOptions ho;
  std::string provider_name, fake;
  int64_t temp_memory = -1;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--device") {
      ho.device = std::atoi(value.c_str());
    } else if (flag == "--provider") {
      provider_name = value;
    } else if (flag == "--fake-gpus") {
      fake = value;
    } else if (flag == "--temp-memory-bytes") {
      temp_memory = std::atoll(value.c_str());
    } else {
      std::fprintf(stderr, "gpu-host: unknown flag %s (started by vecgpu serve only)\n",
                   flag.c_str());
      return 2;
    }
  }
  cpu::ConfigureCpuThreads();
  ho.on_worker_start = cpu::UseOneThreadHere;
  cpu::CpuBackendFactory cpu_factory;
  std::unique_ptr<DeviceProvider> inner;
  if (provider_name == "fake") {
    StatusOr<std::vector<int64_t>> memory = ParseFakeGpus(fake);
    if (!memory.ok()) {
      std::fprintf(stderr, "gpu-host: %s\n", memory.status().message().c_str());
      return 2;
    }
    auto f = std::make_unique<FakeDeviceProvider>(*memory);
    // A fake GPU's copy: a CPU index loaded from the host's bytes.
    f->make_replica = [&cpu_factory](const Backend& host, const std::vector<int>&)
        -> StatusOr<std::unique_ptr<Backend>> {
      ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, host.Serialize());
      return cpu_factory.Load(
          host.spec(), std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
          host.next_label());
    };
    inner = std::move(f);
    ho.fake = true;
  } else if (provider_name == "cuda") {
#if VECGPU_HAVE_GPU
    inner = gpu::MakeCudaDeviceProvider();
#else
    std::fprintf(stderr, "gpu-host: this build has no GPU support\n");
    return 2;
#endif
  } else {
    std::fprintf(stderr, "gpu-host: --provider must be cuda or fake\n");
    return 2;
  }
  if (temp_memory >= 0) inner->SetTempMemory(temp_memory);
  return gpu_host::RunGpuHost(ho, *inner, cpu_factory);
}

}  // namespace vecgpu::server
