#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/device/device_manager.h"
#include "core/device/hot_load.h"
#include "core/util/mutex.h"

namespace vecgpu {

// An index placed by the DeviceManager: the host index (the source of truth, what snapshots
// serialize) and, when placed on GPUs, a device copy built from it. Writes go to the host
// first, then to the copy where the copy can apply them (adds); after any other write
// (train, remove, reset) the copy is stale and rebuilt from the host by Refresh(), while
// searches are served from the host. Searches run on the copy when it is current, healthy,
// and FAISS's GPU limits allow the request (k and nprobe up to 2048); otherwise, and after any
// error of the copy, on the host: a failing GPU costs speed, never a request. The copy grows
// with the index and moves (another GPU, several, the CPU) when its GPUs run out of budget.
// Its storage grows geometrically (NextCapacity): FAISS's GPU flat storage would otherwise
// reallocate and copy itself on every add.
//
// A hot index gets extra copies on other GPUs (SampleLoad, HotCopyPolicy): each its own
// reclaimable reservation (DeviceManager::PlaceCopy), built from the host like the first.
// Searches go to the copy with the fewest searches running; adds reach the host, then each
// copy in order, and a copy that fails one is dropped; a write the copies cannot apply
// makes them all stale and rebuilt. An extra copy goes when the load falls, when a
// placement or a growth needs its room (the DeviceManager reclaims it), or when the first
// copy moves or fails. Only an index on one GPU gets extra copies (a sharded one is large).
//
// Thread safety as Backend; in addition Refresh() and SampleLoad() may run alongside
// searches. Locking: mu_ is never held while calling the DeviceManager's Place, Resize,
// PlaceCopy or ReleaseCopy, because a reclaim runs OnReclaimed (which takes mu_) from them.
class PlacedBackend final : public Backend {
 public:
  // The most results or lists FAISS's GPU k-selection handles per query.
  static constexpr int kMaxGpuK = 2048;
  // Whether FAISS's GPU search takes a request for k results visiting `nprobe` lists (0: not
  // IVF); otherwise the host answers it. The scheduler sends such requests to CPU workers.
  static constexpr bool WithinGpuLimits(int k, int nprobe) {
    return k <= kMaxGpuK && nprobe <= kMaxGpuK;
  }

  // The room, in vectors, a device copy with room for `capacity` should reserve before an
  // add brings it to `want`: unchanged when it fits; else DeviceManager::kGrowth times its
  // capacity (at least `want`), but no more than `limit`, what its placement's reservation
  // holds (DeviceManager::GpuCapacity). So n single adds reallocate O(log n) times, each
  // vector is copied O(1) times on average, and the copy never holds more than was reserved.
  static int64_t NextCapacity(int64_t capacity, int64_t want, int64_t limit);

  // Places `host` (hint: "", "cpu", "gpu", "gpu:N"); `who` names it in logs.
  static StatusOr<std::unique_ptr<PlacedBackend>> Create(std::unique_ptr<Backend> host,
                                                         DeviceManager& devices, std::string hint,
                                                         std::string who);
  ~PlacedBackend() override;

  Placement placement() const EXCLUDES(mu_);
  const std::string& hint() const { return hint_; }
  // The GPU whose workers run this index's queued work; -1: CPU workers.
  int serving_gpu() const EXCLUDES(mu_);
  // The GPUs whose workers run its queued work: the first GPU of each current copy, the
  // first copy's first (Scheduler::SetDevices); empty: CPU workers.
  std::vector<int> serving_gpus() const EXCLUDES(mu_);
  // One sample of the index's load, taken after a search batch: `queued` requests wait in
  // its queue at `now`. Adds an extra copy (on the GPU with the most room; built by the next
  // Refresh) or drops one, as HotLoad decides. The caller then points the queue at
  // serving_gpus() and queues a Refresh (TakeRefresh).
  void SampleLoad(std::chrono::steady_clock::time_point now, int64_t queued) const EXCLUDES(mu_);
  // True, once, when a device copy needs building: the caller then runs Refresh() (with
  // shared access to the index, so no write lands while it builds).
  bool TakeRefresh() const EXCLUDES(mu_);
  // Builds the device copies that need it from the host index, the first copy first.
  // Searches go on meanwhile, on the copies that are current or the host.
  void Refresh() const EXCLUDES(mu_);
  // Gives back a TakeRefresh() whose Refresh() will not run (it could not be queued).
  void ReleaseRefresh() const EXCLUDES(mu_);

  const IndexSpec& spec() const override { return host_->spec(); }
  BackendInfo Info() const override;
  int64_t ntotal() const override { return host_->ntotal(); }
  bool is_trained() const override { return host_->is_trained(); }
  int64_t next_label() const override { return host_->next_label(); }
  bool labels_shift_on_remove() const override { return host_->labels_shift_on_remove(); }
  bool can_remove() const override { return host_->can_remove(); }
  Status Train(int64_t n, const float* x) override;
  Status Add(int64_t n, const float* x) override;
  Status AddLabeled(int64_t n, const float* x, const int64_t* labels, int64_t next_label) override;
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t> labels) override;
  Status Reset() override;
  Status Search(int64_t n, const float* x, int k, const SearchParams& params, float* distances,
                int64_t* labels) const override;
  StatusOr<RangeResult> RangeSearch(int64_t n, const float* x, float radius,
                                    const SearchParams& params) const override {
    return host_->RangeSearch(n, x, radius, params);  // FAISS has no GPU range search
  }
  Status Reconstruct(int64_t label, float* out) const override {
    return host_->Reconstruct(label, out);
  }
  Status ReconstructN(int64_t start, int64_t n, float* out) const override {
    return host_->ReconstructN(start, n, out);
  }
  std::vector<TransformStep> Transforms() const override { return host_->Transforms(); }
  StatusOr<FloatMatrix> ApplyTransform(int64_t n, const float* x) const override {
    return host_->ApplyTransform(n, x);
  }
  Status SetParameter(std::string_view name, double value) override;
  StatusOr<double> GetParameter(std::string_view name) const override {
    return host_->GetParameter(name);
  }
  StatusOr<std::vector<uint8_t>> Serialize() const override { return host_->Serialize(); }

 private:
  // Load of one device copy: searches running on it now, and when it was last chosen.
  struct CopyLoad {
    int in_flight = 0;
    uint64_t last_chosen = 0;  // searches_ when it was last chosen; 0: never
  };
  // An extra copy on another GPU (the first copy is placement_ and replica_). Fields are
  // guarded by the owner's mu_.
  struct DeviceCopy {
    CopyReservation reservation;
    std::string why;                   // why it was made, for get_index_info
    std::shared_ptr<Backend> backend;  // null: not built yet (or stale)
    CopyLoad load;
    bool reclaimed = false;  // the DeviceManager took its room back
    int64_t generation = 0;  // its GPU's generation when built (DeviceManager::generation)
  };
  using Copies = std::vector<std::shared_ptr<DeviceCopy>>;

  PlacedBackend(std::unique_ptr<Backend> host, DeviceManager& devices, std::string hint,
                std::string who, Placement placement);
  // Whether the first copy serves: built, its GPUs up, and not restarted since it was built.
  bool FirstCopyServes() const REQUIRES(mu_);
  // The GPU to blame for an error of a copy placed at `p`; -1: none of them.
  static int Culprit(const Placement& p);
  // The copy failed with `error`: serve from the host until it is rebuilt (after a GPU's
  // restart) or from now on (out of memory, an index the GPU cannot run); extra copies go too.
  void DropReplica(const std::shared_ptr<Backend>& replica, const Status& error) const
      EXCLUDES(mu_);
  // Extra copy `copy` failed with `error`: drop it (its GPU may be marked unhealthy).
  void DropExtra(const std::shared_ptr<DeviceCopy>& copy, const Status& error) const EXCLUDES(mu_);
  // Gives back the reservations of extra copies already taken out of extras_.
  void ReleaseExtras(const Copies& copies, const std::string& why) const EXCLUDES(mu_);
  // The DeviceManager took `copy`'s room back: drop it.
  void OnReclaimed(const std::shared_ptr<DeviceCopy>& copy) const EXCLUDES(mu_);
  // Extra copies whose GPU was marked unhealthy (by any collection), taken out of extras_.
  Copies TakeUnhealthyExtras() const REQUIRES(mu_);
  // Adds an extra copy for a queue deep `deep_for`, or copies busy a `saturated` share of
  // their time (PlaceCopy; nothing when no GPU has room).
  void AddExtra(std::chrono::duration<double> deep_for, int64_t queued, double saturated) const
      EXCLUDES(mu_);
  // After a write the copy cannot apply: rebuild it.
  void MarkStale() EXCLUDES(mu_);
  // After the host grew: resize the reservation, moving the copy if it no longer fits.
  void Grow() EXCLUDES(mu_);
  // Before adding n vectors to `replica`: grows its storage (NextCapacity). False when the
  // device could not (the copy is dropped).
  bool ReserveForAdd(const std::shared_ptr<Backend>& replica, int64_t n) EXCLUDES(mu_);
  // Applies an add of n vectors labelled `labels` (the host has them already) to the copy.
  void AddToReplica(int64_t n, const float* x, const int64_t* labels, int64_t next_label)
      EXCLUDES(mu_);

  const std::unique_ptr<Backend> host_;
  DeviceManager& devices_;
  const std::string hint_;
  const std::string who_;
  int nprobe_ = 0;  // the host's default, for copies searched with per-request parameters

  mutable Mutex mu_;
  mutable Placement placement_ GUARDED_BY(mu_);
  mutable std::shared_ptr<Backend> replica_ GUARDED_BY(mu_);  // null: none, or stale
  mutable int64_t replica_generation_ GUARDED_BY(mu_) = 0;    // its GPUs' generation
  mutable CopyLoad replica_load_ GUARDED_BY(mu_);
  mutable Copies extras_ GUARDED_BY(mu_);  // extra copies, oldest first
  mutable HotLoad hot_ GUARDED_BY(mu_);
  mutable double busy_seconds_ GUARDED_BY(mu_) = 0;           // all copies' search time
  mutable uint64_t searches_ GUARDED_BY(mu_) = 0;             // searches sent to copies
  // Vectors replica_ has room for (its storage, as last reserved); 0 without a copy.
  mutable int64_t capacity_ GUARDED_BY(mu_) = 0;
  mutable bool refresh_taken_ GUARDED_BY(mu_) = false;        // a rebuild is queued
  mutable bool building_ GUARDED_BY(mu_) = false;             // a rebuild runs
};

}  // namespace vecgpu
