#pragma once

#include <memory>
#include <string>

#include "core/backend.h"
#include "core/device/device_manager.h"
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
// Thread safety as Backend; in addition Refresh() may run alongside searches.
class PlacedBackend final : public Backend {
 public:
  // The most results or lists FAISS's GPU k-selection handles per query.
  static constexpr int kMaxGpuK = 2048;

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
  // The GPU whose worker runs this index's queued work; -1: CPU workers.
  int serving_gpu() const EXCLUDES(mu_);
  // True, once, when the device copy needs building: the caller then runs Refresh() (with
  // shared access to the index, so no write lands while it builds).
  bool TakeRefresh() const EXCLUDES(mu_);
  // Builds the device copy from the host index. Searches go on meanwhile, on the host.
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
  PlacedBackend(std::unique_ptr<Backend> host, DeviceManager& devices, std::string hint,
                std::string who, Placement placement);
  // The GPU to blame for an error of a copy placed at `p`; -1: none of them.
  static int Culprit(const Placement& p);
  // The copy failed with `error`: serve from the host from now on.
  void DropReplica(const std::shared_ptr<Backend>& replica, const Status& error) const
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
  // Vectors replica_ has room for (its storage, as last reserved); 0 without a copy.
  mutable int64_t capacity_ GUARDED_BY(mu_) = 0;
  mutable bool refresh_taken_ GUARDED_BY(mu_) = false;        // a rebuild is queued
  mutable bool building_ GUARDED_BY(mu_) = false;             // a rebuild runs
};

}  // namespace vecgpu
