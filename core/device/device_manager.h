#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/device/device_provider.h"
#include "core/index_spec.h"
#include "core/metrics/server_metrics.h"
#include "core/util/mutex.h"
#include "core/util/status.h"

namespace vecgpu {

// --gpus and its memory budget.
struct DeviceOptions {
  // "none", "all", or device ordinals "0,1". Default: "all" (every visible GPU, none if
  // there is no GPU).
  std::string gpus = "all";
  // Share of each GPU's memory that placed collections may reserve; the rest is left to
  // FAISS's temporary memory (StandardGpuResources takes up to 1.5 GiB) and other users.
  // 0 < fraction <= 1. Default: 0.75.
  double memory_fraction = 0.75;
  // Device memory left free as the device reports it (cudaMemGetInfo, through the provider:
  // every process's use, FAISS's temporary memory included): a collection is placed on a GPU
  // only if, after it, the GPU's measured free memory stays above this. Default: 0 here;
  // `vecgpu serve --gpu-reserve-mb` sets 256 MiB.
  int64_t reserve_bytes = 0;
  // FAISS's temporary memory on each GPU (StandardGpuResources::setTempMemory): the scratch
  // its searches tile into; a search needing more allocates the rest with cudaMalloc on each
  // call. Taken when a GPU is first used, and counted as taken before that (the provider's
  // FreeBytes). 0 <= bytes <= 1.5 GiB (FAISS 1.7.3 takes no more, less on GPUs of 8 GiB or
  // under). Default: 1.5 GiB, FAISS's own on GPUs over 8 GiB, where its flat searches tile
  // into 1 GiB; `vecgpu serve --gpu-temp-memory-mb` sets it.
  int64_t temp_memory_bytes = int64_t{1536} << 20;

  Status Validate() const;
};

// Where a collection is served from, and why.
struct Placement {
  std::vector<int> gpus;          // empty: the CPU; several: sharded over them
  std::vector<int64_t> reserved;  // bytes reserved on each of gpus
  std::string reason;             // why, for people: logs, get_index_info
  std::string fallback;           // when on the CPU though GPUs are in use: the metric reason

  bool on_gpu() const { return !gpus.empty(); }
  // "cpu", "gpu:0", "gpu:0,1".
  std::string device() const;
};

// Reasons a collection is served from the CPU while GPUs are in use (metric label values).
inline constexpr const char* kFallbackHint = "hint";
inline constexpr const char* kFallbackUnsupported = "unsupported_kind";
inline constexpr const char* kFallbackNoBudget = "no_budget";
inline constexpr const char* kFallbackOutOfMemory = "out_of_memory";
inline constexpr const char* kFallbackDeviceFailed = "device_failed";

// Knows the GPUs (--gpus), their memory budgets and what is placed where (DESIGN.md).
// Placement rule: on the healthy GPU with the most free budget when FAISS runs the kind there
// and it fits; sharded over several GPUs when no single one has room but together they do;
// else the CPU, with the reason. Thread-safe.
class DeviceManager {
 public:
  // Probes `provider` (may be null: no GPU support built) and selects the devices `options`
  // names; every decision and problem is passed to `log` (one line each). Devices named but
  // not present are left out, with a log line; the server still starts.
  DeviceManager(DeviceProvider* provider, const DeviceOptions& options,
                std::function<void(const std::string&)> log = nullptr,
                ServerMetrics* metrics = nullptr);

  // The ordinals `spec` ("none", "all", "0,1") selects among `visible` devices; names of
  // missing devices go to `missing`. InvalidArgument for a malformed spec.
  static StatusOr<std::vector<int>> ParseGpus(const std::string& spec, int visible,
                                              std::vector<int>* missing);

  // The GPUs in use, in --gpus order.
  std::vector<int> gpus() const { return gpus_; }
  bool has_gpus() const { return !gpus_.empty(); }
  DeviceProvider* provider() const { return provider_; }

  // A placement for a new collection needing `bytes` of GPU memory. `hint`: "" (automatic),
  // "cpu", "gpu" (any GPU) or "gpu:N". InvalidArgument for a malformed hint.
  StatusOr<Placement> Place(const IndexSpec& spec, int64_t bytes, const std::string& hint,
                            const std::string& who);
  // Resizes `p`'s reservation for `bytes`: in place when its GPUs have room, growing
  // geometrically (kGrowth times the reservation, or a quarter more than `bytes` if that is
  // more; only the quarter when the larger does not fit), so growth does not re-place on
  // every add and a device copy can grow its storage ahead (PlacedBackend); else a new
  // placement (another GPU, several, or the CPU). Smaller sizes keep the reservation.
  Placement Resize(const Placement& p, const IndexSpec& spec, int64_t bytes,
                   const std::string& hint, const std::string& who);
  // Gives back `p`'s reservations.
  void Release(const Placement& p);
  // A device copy failed with `error`: out of memory (ResourceExhausted) sends only that
  // collection to the CPU; anything else marks `device` unhealthy, and everything placed
  // there is served from the host copy from then on (device -1: blame no GPU, when the
  // failing one is not known). Returns the CPU placement to use.
  Placement Failed(const Placement& p, int device, const Status& error, const std::string& who);

  bool healthy(int device) const;
  bool all_healthy(const std::vector<int>& devices) const;

  // For metrics and listings.
  struct DeviceState {
    int id = 0;
    std::string name;
    int64_t total_bytes = 0;
    int64_t budget_bytes = 0;
    int64_t reserved_bytes = 0;
    int collections = 0;
    bool healthy = true;
  };
  std::vector<DeviceState> Devices() const;
  // Collections placed on the CPU, all reasons together.
  int cpu_collections() const;

  // How much a reservation grows in place at once (Resize), and with it a device copy's
  // storage (PlacedBackend::NextCapacity).
  static constexpr double kGrowth = 1.5;

  // Bytes a GPU copy of an index of `spec` with room for `n` vectors takes, estimated from
  // FAISS's GPU layouts. Why FAISS cannot run `spec` on a GPU, or "" when it can.
  static int64_t GpuBytes(const IndexSpec& spec, int64_t n);
  // The most vectors a GPU copy of `spec` holds in `bytes` (GpuBytes' inverse); 0 when
  // `bytes` does not hold its fixed part.
  static int64_t GpuCapacity(const IndexSpec& spec, int64_t bytes);
  static std::string GpuUnsupported(const IndexSpec& spec);

 private:
  struct Device {
    GpuProperties props;
    int64_t budget = 0;
    int64_t reserved = 0;
    int collections = 0;
    std::atomic<bool> healthy{true};
  };
  Device* Find(int id) const;
  // Each GPU's measured free memory less the reserve (the provider's FreeBytes, asked now,
  // outside mu_); a GPU whose provider cannot say is left out (no limit but the budget).
  std::map<int, int64_t> Measured(const std::vector<int>& ids) const;
  // Chooses GPUs with room for `bytes` among `candidates` (room: the budget left, and the
  // measured free memory less the reserve); reserves with headroom.
  Placement Choose(const std::vector<Device*>& candidates, int64_t bytes, bool shardable,
                   const std::map<int, int64_t>& measured) REQUIRES(mu_);
  void Log(const std::string& line) const;
  void CountFallback(const std::string& reason) const;
  void ReleaseLocked(const Placement& p) REQUIRES(mu_);

  DeviceProvider* const provider_;
  const DeviceOptions options_;
  const std::function<void(const std::string&)> log_;
  ServerMetrics* const metrics_;
  std::vector<int> gpus_;
  std::vector<std::unique_ptr<Device>> devices_;  // fixed after construction
  mutable Mutex mu_;
  int cpu_collections_ GUARDED_BY(mu_) = 0;
};

}  // namespace vecgpu
