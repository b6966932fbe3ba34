#include "core/device/placed_backend.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace vecgpu {

int64_t PlacedBackend::NextCapacity(int64_t capacity, int64_t want, int64_t limit) {
  if (want <= capacity) return capacity;
  const auto grown = static_cast<int64_t>(static_cast<double>(capacity) * DeviceManager::kGrowth);
  return std::max(want, std::min(grown, limit));
}

StatusOr<std::unique_ptr<PlacedBackend>> PlacedBackend::Create(std::unique_ptr<Backend> host,
                                                               DeviceManager& devices,
                                                               std::string hint, std::string who) {
  const IndexSpec& spec = host->spec();
  ASSIGN_OR_RETURN(Placement p,
                   devices.Place(spec, DeviceManager::GpuBytes(spec, host->ntotal()), hint, who));
  return std::unique_ptr<PlacedBackend>(
      new PlacedBackend(std::move(host), devices, std::move(hint), std::move(who), std::move(p)));
}

PlacedBackend::PlacedBackend(std::unique_ptr<Backend> host, DeviceManager& devices,
                             std::string hint, std::string who, Placement placement)
    : host_(std::move(host)),
      devices_(devices),
      hint_(std::move(hint)),
      who_(std::move(who)),
      placement_(std::move(placement)) {
  if (host_->spec().nlist > 0) {
    if (auto np = host_->GetParameter("nprobe"); np.ok()) nprobe_ = static_cast<int>(*np);
  }
}

PlacedBackend::~PlacedBackend() {
  MutexLock lock(mu_);
  devices_.Release(placement_);
}

Placement PlacedBackend::placement() const {
  MutexLock lock(mu_);
  return placement_;
}

int PlacedBackend::serving_gpu() const {
  MutexLock lock(mu_);
  return replica_ && devices_.all_healthy(placement_.gpus) ? placement_.gpus[0] : -1;
}

bool PlacedBackend::TakeRefresh() const {
  MutexLock lock(mu_);
  if (!placement_.on_gpu() || replica_ || refresh_taken_ || building_ || !host_->is_trained()) {
    return false;
  }
  refresh_taken_ = true;
  return true;
}

void PlacedBackend::Refresh() const {
  Placement p;
  {
    MutexLock lock(mu_);
    if (building_) return;  // one build at a time (a job queued for a replaced index may land here)
    refresh_taken_ = false;
    if (!placement_.on_gpu() || replica_ || !host_->is_trained()) return;
    p = placement_;
    building_ = true;
  }
  StatusOr<std::unique_ptr<Backend>> built = devices_.provider()->BuildReplica(*host_, p.gpus);
  MutexLock lock(mu_);
  building_ = false;
  if (placement_.gpus != p.gpus || replica_) return;  // placed again meanwhile
  if (!built.ok()) {
    placement_ = devices_.Failed(placement_, Culprit(p), built.status(), who_);
    return;
  }
  replica_ = std::shared_ptr<Backend>(std::move(*built));
  capacity_ = replica_->ntotal();  // FAISS copies exactly what the host holds
}

int PlacedBackend::Culprit(const Placement& p) {
  // A sharded copy's error does not say which GPU failed: blame none of them (only this
  // collection leaves the GPUs).
  return p.gpus.size() == 1 ? p.gpus[0] : -1;
}

void PlacedBackend::ReleaseRefresh() const {
  MutexLock lock(mu_);
  refresh_taken_ = false;
}

void PlacedBackend::DropReplica(const std::shared_ptr<Backend>& replica,
                                const Status& error) const {
  std::shared_ptr<Backend> dropped;  // freed after the lock: freeing waits for the device
  MutexLock lock(mu_);
  if (replica_ != replica) return;  // another caller handled it
  dropped = std::move(replica_);
  capacity_ = 0;
  placement_ = devices_.Failed(placement_, Culprit(placement_), error, who_);
}

void PlacedBackend::MarkStale() {
  std::shared_ptr<Backend> dropped;
  MutexLock lock(mu_);
  dropped = std::move(replica_);
  capacity_ = 0;
}

void PlacedBackend::Grow() {
  MutexLock lock(mu_);
  if (!placement_.on_gpu()) return;
  // The copy's storage, not only its vectors (an add may have grown it ahead).
  const int64_t need = DeviceManager::GpuBytes(host_->spec(), std::max(host_->ntotal(), capacity_));
  Placement next = devices_.Resize(placement_, host_->spec(), need, hint_, who_);
  if (next.gpus != placement_.gpus) {  // rebuilt where it goes now
    replica_.reset();
    capacity_ = 0;
  }
  placement_ = std::move(next);
}

void PlacedBackend::AddToReplica(int64_t n, const float* x, const int64_t* labels,
                                 int64_t next_label) {
  Grow();
  std::shared_ptr<Backend> replica;
  {
    MutexLock lock(mu_);
    replica = replica_;
  }
  if (!replica || !ReserveForAdd(replica, n)) return;
  Status st = replica->AddLabeled(n, x, labels, next_label);
  if (!st.ok()) DropReplica(replica, st);
}

bool PlacedBackend::ReserveForAdd(const std::shared_ptr<Backend>& replica, int64_t n) {
  int64_t next = 0;
  {
    MutexLock lock(mu_);
    if (replica_ != replica) return false;
    int64_t reserved = 0;
    for (int64_t r : placement_.reserved) reserved += r;
    next = NextCapacity(capacity_, replica->ntotal() + n,
                        DeviceManager::GpuCapacity(host_->spec(), reserved));
    if (next == capacity_) return true;
  }
  // Outside mu_: the device may take a while, and readers of the placement need not wait.
  Status st = replica->ReserveCapacity(next);
  if (!st.ok()) {
    DropReplica(replica, st);
    return false;
  }
  MutexLock lock(mu_);
  if (replica_ == replica) capacity_ = next;
  return true;
}

BackendInfo PlacedBackend::Info() const {
  BackendInfo info = host_->Info();
  MutexLock lock(mu_);
  info.placement = placement_.reason;
  if (!placement_.on_gpu()) {
    info.replica = "none";
  } else if (replica_ && devices_.all_healthy(placement_.gpus)) {
    info.device = placement_.device();
    info.replica = "current";
    info.gpu_memory_bytes =
        DeviceManager::GpuBytes(host_->spec(), std::max(capacity_, replica_->ntotal()));
  } else {
    info.replica = host_->is_trained() ? "building" : "after training";
  }
  return info;
}

Status PlacedBackend::Train(int64_t n, const float* x) {
  RETURN_IF_ERROR(host_->Train(n, x));
  MarkStale();
  return Status::Ok();
}

Status PlacedBackend::Add(int64_t n, const float* x) {
  const int64_t first = host_->next_label();
  RETURN_IF_ERROR(host_->Add(n, x));
  std::vector<int64_t> labels(n);
  std::iota(labels.begin(), labels.end(), first);
  AddToReplica(n, x, labels.data(), host_->next_label());
  return Status::Ok();
}

Status PlacedBackend::AddLabeled(int64_t n, const float* x, const int64_t* labels,
                                 int64_t next_label) {
  RETURN_IF_ERROR(host_->AddLabeled(n, x, labels, next_label));
  AddToReplica(n, x, labels, host_->next_label());
  return Status::Ok();
}

StatusOr<int64_t> PlacedBackend::RemoveLabels(std::span<const int64_t> labels) {
  ASSIGN_OR_RETURN(int64_t removed, host_->RemoveLabels(labels));
  if (removed > 0) MarkStale();
  return removed;
}

Status PlacedBackend::Reset() {
  RETURN_IF_ERROR(host_->Reset());
  MarkStale();
  return Status::Ok();
}

Status PlacedBackend::SetParameter(std::string_view name, double value) {
  RETURN_IF_ERROR(host_->SetParameter(name, value));
  if (name == "nprobe") nprobe_ = static_cast<int>(value);
  return Status::Ok();
}

Status PlacedBackend::Search(int64_t n, const float* x, int k, const SearchParams& params,
                             float* distances, int64_t* labels) const {
  std::shared_ptr<Backend> replica, orphaned;
  {
    MutexLock lock(mu_);
    if (replica_ && devices_.all_healthy(placement_.gpus)) {
      replica = replica_;
    } else if (replica_) {
      orphaned = replica_;  // another collection's error marked one of its GPUs unhealthy
    }
  }
  if (orphaned) DropReplica(orphaned, Unavailable("its GPU was marked unhealthy"));
  SearchParams p = params;
  if (host_->spec().nlist > 0 && !p.nprobe) p.nprobe = nprobe_;
  if (replica && k <= kMaxGpuK && p.nprobe.value_or(0) <= kMaxGpuK) {
    Status st = replica->Search(n, x, k, p, distances, labels);
    if (st.ok()) return st;
    // The request's own fault is the host's to answer; anything else retires the copy.
    if (st.code() != StatusCode::kInvalidArgument) DropReplica(replica, st);
  }
  return host_->Search(n, x, k, params, distances, labels);
}

}  // namespace vecgpu
