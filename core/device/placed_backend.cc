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
  Copies extras;
  {
    MutexLock lock(mu_);
    extras = std::move(extras_);
    devices_.Release(placement_);
  }
  // Waits for a reclaim of them that runs now, so none calls OnReclaimed after this.
  ReleaseExtras(extras, "its index is gone");
}

Placement PlacedBackend::placement() const {
  MutexLock lock(mu_);
  return placement_;
}

int PlacedBackend::serving_gpu() const {
  MutexLock lock(mu_);
  return FirstCopyServes() ? placement_.gpus[0] : -1;
}

bool PlacedBackend::TakeRefresh() const {
  MutexLock lock(mu_);
  const bool extras_built = std::all_of(extras_.begin(), extras_.end(),
                                        [](const auto& c) { return c->backend != nullptr; });
  if (!placement_.on_gpu() || (replica_ && extras_built) || refresh_taken_ || building_ ||
      !host_->is_trained() || !devices_.all_healthy(placement_.gpus)) {
    return false;  // a GPU that is down: rebuilt once it is back (the next search asks again)
  }
  refresh_taken_ = true;
  return true;
}

void PlacedBackend::Refresh() const {
  // The first copy, then each extra copy that needs building, one at a time.
  for (;;) {
    Placement p;
    std::shared_ptr<DeviceCopy> extra;  // null: the first copy
    {
      MutexLock lock(mu_);
      if (building_) return;  // one build at a time (a job queued for a replaced index lands here)
      refresh_taken_ = false;
      if (!placement_.on_gpu() || !host_->is_trained()) return;
      if (replica_) {
        auto it = std::find_if(extras_.begin(), extras_.end(),
                               [](const auto& c) { return c->backend == nullptr; });
        if (it == extras_.end()) return;
        extra = *it;
        p.gpus = {extra->reservation.gpu};
      } else {
        p = placement_;
      }
      building_ = true;
    }
    const int64_t generation = devices_.generation(p.gpus);
    StatusOr<std::unique_ptr<Backend>> built = devices_.provider()->BuildReplica(*host_, p.gpus);
    Copies dropped;
    {
      MutexLock lock(mu_);
      building_ = false;
      if (extra) {
        const bool kept = std::find(extras_.begin(), extras_.end(), extra) != extras_.end();
        if (kept && built.ok()) {
          extra->backend = std::shared_ptr<Backend>(std::move(*built));
          extra->generation = generation;
        }
        if (!kept || built.ok()) continue;  // (not kept: reclaimed or dropped meanwhile)
      } else {
        if (placement_.gpus != p.gpus || replica_) return;  // placed again meanwhile
        if (!built.ok()) {
          if (devices_.generation(p.gpus) != generation) return;  // its process went meanwhile
          placement_ = devices_.Failed(placement_, Culprit(p), built.status(), who_);
          dropped = std::move(extras_);
        } else {
          replica_ = std::shared_ptr<Backend>(std::move(*built));
          replica_generation_ = generation;
          capacity_ = replica_->ntotal();  // FAISS copies exactly what the host holds
          continue;
        }
      }
    }
    if (extra) {
      DropExtra(extra, built.status());
      continue;
    }
    ReleaseExtras(dropped, "its first copy could not be built");
    return;
  }
}

bool PlacedBackend::FirstCopyServes() const {
  return replica_ && devices_.all_healthy(placement_.gpus) &&
         devices_.generation(placement_.gpus) == replica_generation_;
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
  Copies extras;
  {
    MutexLock lock(mu_);
    if (replica_ != replica) return;  // another caller handled it
    dropped = std::move(replica_);
    capacity_ = 0;
    extras = std::move(extras_);
    // A copy of a GPU that restarted since it was built: the loss is known already.
    if (devices_.generation(placement_.gpus) == replica_generation_) {
      placement_ = devices_.Failed(placement_, Culprit(placement_), error, who_);
    }
  }
  ReleaseExtras(extras, "its first copy failed");
}

void PlacedBackend::MarkStale() {
  std::vector<std::shared_ptr<Backend>> dropped;
  MutexLock lock(mu_);
  dropped.push_back(std::move(replica_));
  capacity_ = 0;
  for (auto& c : extras_) dropped.push_back(std::move(c->backend));
}

void PlacedBackend::Grow() {
  // REQUIRES: exclusive access to the index (a write), so nothing else places it meanwhile;
  // mu_ is not held across the DeviceManager's calls (they may reclaim our own extras).
  Placement now;
  Copies extras;
  int64_t capacity = 0;
  {
    MutexLock lock(mu_);
    if (!placement_.on_gpu()) return;
    now = placement_;
    extras = extras_;
    capacity = capacity_;
  }
  // The first copy's storage, not only its vectors (an add may have grown it ahead).
  const int64_t need = DeviceManager::GpuBytes(host_->spec(), std::max(host_->ntotal(), capacity));
  // An extra copy grows in place or goes: it only ever takes room nobody needs.
  Copies shrunk;
  for (const auto& c : extras) {
    if (!devices_.ResizeCopy(c->reservation.id, need)) shrunk.push_back(c);
  }
  Placement next = devices_.Resize(now, host_->spec(), need, hint_, who_);
  {
    MutexLock lock(mu_);
    std::erase_if(extras_, [&](const auto& c) {
      return std::find(shrunk.begin(), shrunk.end(), c) != shrunk.end();
    });
    if (next.gpus != now.gpus) {  // rebuilt where it goes now, without company at first
      replica_.reset();
      capacity_ = 0;
      for (auto& c : extras_) shrunk.push_back(c);
      extras_.clear();
    }
    placement_ = std::move(next);
  }
  ReleaseExtras(shrunk, "no room to grow with its index");
}

void PlacedBackend::AddToReplica(int64_t n, const float* x, const int64_t* labels,
                                 int64_t next_label) {
  Grow();
  std::shared_ptr<Backend> replica;
  std::vector<std::pair<std::shared_ptr<DeviceCopy>, std::shared_ptr<Backend>>> extras;
  {
    MutexLock lock(mu_);
    replica = replica_;
    for (const auto& c : extras_) {
      if (c->backend) extras.emplace_back(c, c->backend);
    }
  }
  if (!replica || !ReserveForAdd(replica, n)) return;
  // In order: the first copy, then each extra one; a copy that fails the add never serves.
  Status st = replica->AddLabeled(n, x, labels, next_label);
  if (!st.ok()) {
    DropReplica(replica, st);
    return;
  }
  for (const auto& [copy, backend] : extras) {
    if (Status added = backend->AddLabeled(n, x, labels, next_label); !added.ok()) {
      DropExtra(copy, added);
    }
  }
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
  } else if (!devices_.all_healthy(placement_.gpus)) {
    info.placement += "; " + devices_.DownReason(placement_.gpus);
    info.replica = "waiting for the GPU";
  } else if (FirstCopyServes()) {
    info.device = placement_.device();
    info.replica = "current";
    info.gpu_memory_bytes =  // its storage, reserved ahead of the vectors it holds
        DeviceManager::GpuBytes(host_->spec(), std::max(capacity_, replica_->ntotal()));
    // Extra copies: "gpu:0+gpu:1", and why each is there.
    for (const auto& c : extras_) {
      const std::string gpu = "gpu:" + std::to_string(c->reservation.gpu);
      if (c->backend) {
        info.device += "+" + gpu;
        info.gpu_memory_bytes += c->backend->Info().memory_bytes;
        info.placement += "; copy on " + gpu + ": " + c->why;
      } else {
        info.placement += "; copy on " + gpu + " (building): " + c->why;
      }
    }
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
  SearchParams p = params;
  if (host_->spec().nlist > 0 && !p.nprobe) p.nprobe = nprobe_;
  const bool gpu_can = WithinGpuLimits(k, p.nprobe.value_or(0));
  std::shared_ptr<Backend> replica, orphaned, chosen;
  std::shared_ptr<DeviceCopy> extra;  // the extra copy chosen; null: the first copy
  Copies lost;
  {
    MutexLock lock(mu_);
    if (FirstCopyServes()) {
      replica = replica_;
    } else if (replica_) {
      // Its GPU failed (another collection's copy or the GPU host process said so), or has
      // restarted since: the copy went with the process. Rebuilt when the GPU is back.
      orphaned = std::move(replica_);
      capacity_ = 0;
      lost = std::move(extras_);
    }
    Copies unhealthy = TakeUnhealthyExtras();
    lost.insert(lost.end(), unhealthy.begin(), unhealthy.end());
    if (replica && gpu_can) {
      // The copy with the fewest searches running; among equals, the one chosen least
      // recently (so one search at a time takes turns).
      CopyLoad* best = &replica_load_;
      for (const auto& c : extras_) {
        if (!c->backend) continue;
        const CopyLoad& l = c->load;
        if (l.in_flight < best->in_flight ||
            (l.in_flight == best->in_flight && l.last_chosen < best->last_chosen)) {
          best = &c->load;
          extra = c;
        }
      }
      chosen = extra ? extra->backend : replica;
      best->in_flight++;
      best->last_chosen = ++searches_;
    }
  }
  orphaned.reset();
  ReleaseExtras(lost, "its GPU is down");
  if (chosen) {
    const auto start = std::chrono::steady_clock::now();
    Status st = chosen->Search(n, x, k, p, distances, labels);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    {
      MutexLock lock(mu_);
      (extra ? extra->load : replica_load_).in_flight--;
      busy_seconds_ += took.count();
    }
    if (st.ok()) return st;
    // The request's own fault is the host's to answer; anything else retires the copy.
    if (st.code() != StatusCode::kInvalidArgument) {
      if (extra) {
        DropExtra(extra, st);
      } else {
        DropReplica(replica, st);
      }
    }
  }
  return host_->Search(n, x, k, params, distances, labels);
}

}  // namespace vecgpu
