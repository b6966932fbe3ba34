#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/device/device_provider.h"
#include "core/device/hot_load.h"
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
  // A lost GPU (its GPU host process crashed, faulted or hung) is restarted after
  // restart_backoff_s, doubled for each earlier fault in the window; max_faults losses within
  // fault_window_s quarantine it for quarantine_s (0: until Enable(), which SIGHUP calls).
  // Its collections are served from the CPU meanwhile. Defaults: 3, 600 s, 3600 s, 0.5 s.
  int max_faults = 3;
  double fault_window_s = 600;
  double quarantine_s = 3600;
  double restart_backoff_s = 0.5;
  // When a hot index gets a copy on another GPU, and when it gives it back
  // (core/device/hot_load.h). `vecgpu serve --gpu-max-copies` sets copies.max_copies.
  HotCopyPolicy copies;
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

// An extra copy's reservation on one GPU (DeviceManager::PlaceCopy).
struct CopyReservation {
  uint64_t id = 0;  // names it to ReleaseCopy, ResizeCopy, CopyFailed
  int gpu = -1;
  int64_t bytes = 0;
};

// Knows the GPUs (--gpus), their memory budgets and what is placed where (DESIGN.md).
// Placement rule: on the healthy GPU with the most free budget when FAISS runs the kind there
// and it fits; sharded over several GPUs when no single one has room but together they do;
// else the CPU, with the reason. Extra copies of hot indexes (PlaceCopy) only take room
// nobody else needs: a placement or a growth that finds no room reclaims them before it
// shards or falls back to the CPU.
//
// Faults: a GPU that is lost (the provider's DeviceLost, or a device error a copy returned)
// is unhealthy until its own thread has restarted it through the provider (restart backoff,
// quarantine: DeviceOptions); collections placed there keep their placement and are served
// from the CPU meanwhile, their copies rebuilt once it is back. Thread-safe.
class DeviceManager final : public DeviceWatcher {
 public:
  // Probes `provider` (may be null: no GPU support built) and selects the devices `options`
  // names; every decision and problem is passed to `log` (one line each). Devices named but
  // not present are left out, with a log line; the server still starts.
  DeviceManager(DeviceProvider* provider, const DeviceOptions& options,
                std::function<void(const std::string&)> log = nullptr,
                ServerMetrics* metrics = nullptr);
  ~DeviceManager() override;

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

  // An extra copy of an index of `spec` (`bytes` on one GPU) on the healthy GPU with the most
  // room among those not in `exclude` (the GPUs its other copies use); it never takes room
  // from another copy. The reservation is reclaimable: when a placement or a growth needs its
  // room, it is given back and `on_reclaim` runs once (on that caller's thread, with no lock
  // of the DeviceManager held) to tell the owner to drop the copy. ResourceExhausted when no
  // GPU has room.
  // REQUIRES of the owner: `on_reclaim` takes no lock held by a caller of Place or Resize;
  // so an owner never calls Place, Resize, PlaceCopy or ReleaseCopy under the lock its
  // on_reclaim takes.
  StatusOr<CopyReservation> PlaceCopy(const IndexSpec& spec, int64_t bytes,
                                      const std::vector<int>& exclude, const std::string& who,
                                      const std::string& why, std::function<void()> on_reclaim);
  // Grows an extra copy's reservation to `bytes` in place; false (reservation unchanged)
  // when its GPU has no room: the owner then drops the copy. Smaller sizes keep it.
  bool ResizeCopy(uint64_t id, int64_t bytes);
  // Gives back an extra copy's reservation (nothing when it was reclaimed already). Waits
  // while its on_reclaim runs, so after it returns on_reclaim will not run.
  void ReleaseCopy(uint64_t id, const std::string& why);
  // An extra copy failed with `error`: gives back its reservation and, for a device fault
  // (not out of memory, not a kind the GPU cannot run), marks its GPU unhealthy as Failed does.
  void CopyFailed(uint64_t id, const Status& error, const std::string& who);
  const HotCopyPolicy& copy_policy() const { return options_.copies; }
  // The most copies of one index, the first included (HotCopyPolicy::max_copies, where 0 is
  // one per GPU in use).
  int max_copies() const;

  bool healthy(int device) const;
  bool all_healthy(const std::vector<int>& devices) const;
  // Changes whenever one of `devices` restarts: a copy built at another generation lives in a
  // process that is gone, and its errors are not new faults.
  // Lock-free: asked on every search.
  int64_t generation(const std::vector<int>& devices) const;
  // Why `devices` do not serve now ("GPU 0 failed (...); restarting"), "" when they all do.
  std::string DownReason(const std::vector<int>& devices) const EXCLUDES(mu_);

  // The provider lost `device`: unhealthy from now on, restarted after the backoff, or
  // quarantined after max_faults losses in the window. A loss reported again before the
  // device is back is the same loss.
  void DeviceLost(int device, const std::string& why) override EXCLUDES(mu_);
  // Ends the quarantine of `device` (-1: every quarantined GPU) and restarts it now: an
  // operator's call (SIGHUP). Returns how many it re-enabled.
  int Enable(int device) EXCLUDES(mu_);
  // "GPU 0 quarantined after 3 faults ...; " for each quarantined GPU; "" when none is.
  std::string QuarantineDetail() const EXCLUDES(mu_);

  // For metrics and listings.
  struct DeviceState {
    int id = 0;
    std::string name;
    int64_t total_bytes = 0;
    int64_t budget_bytes = 0;
    int64_t reserved_bytes = 0;
    int collections = 0;
    int extra_copies = 0;  // extra copies of hot indexes (PlaceCopy)
    bool healthy = true;
    bool quarantined = false;
    int64_t faults = 0;    // losses since start
    int64_t restarts = 0;  // restarts that brought it back
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
  using Clock = std::chrono::steady_clock;
  struct Device {
    GpuProperties props;
    int64_t budget = 0;
    int64_t reserved = 0;
    int collections = 0;
    int extra_copies = 0;
    int64_t reclaimable = 0;  // bytes of extra copies' reservations
    std::atomic<bool> healthy{true};
    // Faults (guarded by mu_).
    bool down = false;                 // lost, not restarted yet
    bool quarantined = false;          // not restarted until quarantine_end or Enable()
    std::deque<Clock::time_point> recent;  // losses within the fault window
    Clock::time_point retry_at;
    Clock::time_point quarantine_end;
    std::string last_fault;
    int64_t faults = 0;
    // Restarts that brought it back: its generation. Atomic, so the search path reads it
    // without mu_ (DeviceManager::generation).
    std::atomic<int64_t> restarts{0};
  };
  // Records a loss of `d` (down already or not); logs; wakes the supervisor.
  void RecordFault(Device* d, const std::string& why) REQUIRES(mu_);
  // Restarts lost GPUs when their backoff or quarantine ends.
  void Supervise() EXCLUDES(mu_);
  struct Copy {
    int gpu = -1;
    int64_t bytes = 0;
    std::string who;
    std::function<void()> on_reclaim;
  };
  // Owners to tell that their copies were reclaimed: (copy id, on_reclaim).
  using Reclaims = std::vector<std::pair<uint64_t, std::function<void()>>>;
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
  // Gives back extra copies on `d`, largest first, until `room` (its room now) reaches
  // `need`; nothing when even all of them would not make enough. Adds what it gave back to
  // `measured` (the copies' memory is freed as their owners drop them) and their on_reclaim
  // calls to `calls`, run them with RunReclaims once mu_ is released. Returns the bytes.
  int64_t ReclaimLocked(Device* d, int64_t room, int64_t need, const std::string& for_who,
                        std::map<int, int64_t>* measured, Reclaims* calls) REQUIRES(mu_);
  // Frees room for `bytes` on the candidate that needs the least reclaimed (Place).
  void ReclaimForPlace(const std::vector<Device*>& candidates, int64_t bytes,
                       const std::string& for_who, std::map<int, int64_t>* measured,
                       Reclaims* calls) REQUIRES(mu_);
  void RunReclaims(Reclaims& calls) EXCLUDES(mu_);
  // Removes copy `id` from copies_ and gives back its room; false when it is not there.
  bool DropCopyLocked(uint64_t id) REQUIRES(mu_);

  DeviceProvider* const provider_;
  const DeviceOptions options_;
  const std::function<void(const std::string&)> log_;
  ServerMetrics* const metrics_;
  std::vector<int> gpus_;
  std::vector<std::unique_ptr<Device>> devices_;  // fixed after construction
  mutable Mutex mu_;
  int cpu_collections_ GUARDED_BY(mu_) = 0;
  std::condition_variable cv_;  // the supervisor's wake-up
  bool stop_ GUARDED_BY(mu_) = false;
  bool changed_ GUARDED_BY(mu_) = false;  // a loss or an Enable since the supervisor looked
  std::thread supervisor_;
  std::map<uint64_t, Copy> copies_ GUARDED_BY(mu_);  // extra copies' reservations
  uint64_t next_copy_ GUARDED_BY(mu_) = 1;
  std::vector<uint64_t> reclaiming_ GUARDED_BY(mu_);  // on_reclaim calls running now
  std::condition_variable reclaimed_cv_;
};

}  // namespace vecgpu
