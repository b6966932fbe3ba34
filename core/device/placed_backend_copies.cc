// PlacedBackend's extra copies of a hot index on other GPUs: when they are added and
// dropped, and the GPUs they bring to the index's queue.
#include <algorithm>
#include <cstdio>

#include "core/device/placed_backend.h"

namespace vecgpu {
namespace {

std::string Seconds(std::chrono::duration<double> d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", d.count());
  return buf;
}

}  // namespace

std::vector<int> PlacedBackend::serving_gpus() const {
  MutexLock lock(mu_);
  std::vector<int> out;
  if (!FirstCopyServes()) return out;
  out.push_back(placement_.gpus[0]);
  for (const auto& c : extras_) {
    if (c->backend && devices_.healthy(c->reservation.gpu) &&
        devices_.generation({c->reservation.gpu}) == c->generation) {
      out.push_back(c->reservation.gpu);
    }
  }
  return out;
}

void PlacedBackend::SampleLoad(std::chrono::steady_clock::time_point now, int64_t queued) const {
  std::shared_ptr<DeviceCopy> drop;
  std::chrono::duration<double> deep_for{0};
  double saturated = 0;
  {
    MutexLock lock(mu_);
    const LoadSample s{now, queued, busy_seconds_};
    // Only a current copy on one GPU gets company.
    if (!replica_ || placement_.gpus.size() != 1) {
      hot_.Restart(s);
      return;
    }
    const int copies = 1 + static_cast<int>(extras_.size());
    const HotAction action = hot_.Observe(s, copies, devices_.max_copies(), devices_.copy_policy());
    if (action == HotAction::kNone) return;
    deep_for = hot_.deep_for();
    saturated = hot_.saturated();
    hot_.Restart(s);  // whatever comes of it, the next decision waits a whole window
    if (action == HotAction::kDropCopy) {
      drop = extras_.back();
      extras_.pop_back();
    }
  }
  if (drop) {
    ReleaseExtras({drop},
                  "the load fell (its copies were busy less than " +
                      std::to_string(static_cast<int>(devices_.copy_policy().drop_busy * 100)) +
                      "% of one fewer copies' time)");
    return;
  }
  AddExtra(deep_for, queued, saturated);
}

void PlacedBackend::AddExtra(std::chrono::duration<double> deep_for, int64_t queued,
                             double saturated) const {
  std::vector<int> exclude;
  std::string serving;
  {
    MutexLock lock(mu_);
    if (!replica_ || placement_.gpus.size() != 1) return;
    exclude = placement_.gpus;
    serving = placement_.device();
    for (const auto& c : extras_) {
      exclude.push_back(c->reservation.gpu);
      serving += "+gpu:" + std::to_string(c->reservation.gpu);
    }
  }
  auto copy = std::make_shared<DeviceCopy>();
  copy->why = saturated > 0
                  ? "busy " + std::to_string(static_cast<int>(saturated * 100)) +
                        "% of the time on " + serving + " for " +
                        Seconds(std::chrono::duration<double>(
                            devices_.copy_policy().add_after)) +
                        " (" + std::to_string(queued) + " requests waiting)"
                  : "queue deep on " + serving + " for " + Seconds(deep_for) + " (" +
                        std::to_string(queued) + " requests waiting)";
  std::weak_ptr<DeviceCopy> weak = copy;
  // The DeviceManager calls on_reclaim until ReleaseCopy returns, which the destructor waits
  // for: `this` outlives it.
  StatusOr<CopyReservation> r =
      devices_.PlaceCopy(host_->spec(), DeviceManager::GpuBytes(host_->spec(), host_->ntotal()),
                         exclude, who_, copy->why, [this, weak] {
                           if (auto c = weak.lock()) OnReclaimed(c);
                         });
  if (!r.ok()) return;  // no GPU has room: asked again after another deep window
  bool keep = false;
  {
    MutexLock lock(mu_);
    copy->reservation = *r;
    // Reclaimed already, or the first copy moved or failed meanwhile: give it back.
    keep = !copy->reclaimed && replica_ && placement_.gpus == std::vector<int>{exclude[0]};
    if (keep) extras_.push_back(copy);
  }
  if (!keep) ReleaseExtras({copy}, "its index moved while it was placed");
}

void PlacedBackend::DropExtra(const std::shared_ptr<DeviceCopy>& copy, const Status& error) const {
  std::shared_ptr<Backend> dropped;  // freed after the lock
  {
    MutexLock lock(mu_);
    auto it = std::find(extras_.begin(), extras_.end(), copy);
    if (it == extras_.end()) return;  // another caller handled it
    dropped = std::move(copy->backend);
    extras_.erase(it);
  }
  devices_.CopyFailed(copy->reservation.id, error, who_);
}

void PlacedBackend::ReleaseExtras(const Copies& copies, const std::string& why) const {
  for (const auto& c : copies) devices_.ReleaseCopy(c->reservation.id, why);
}

void PlacedBackend::OnReclaimed(const std::shared_ptr<DeviceCopy>& copy) const {
  std::shared_ptr<Backend> dropped;  // freed after the lock: its GPU memory goes back
  MutexLock lock(mu_);
  copy->reclaimed = true;
  dropped = std::move(copy->backend);
  std::erase(extras_, copy);
}

PlacedBackend::Copies PlacedBackend::TakeUnhealthyExtras() const {
  Copies lost;
  std::erase_if(extras_, [&](const std::shared_ptr<DeviceCopy>& c) {
    if (devices_.healthy(c->reservation.gpu) &&
        (!c->backend || devices_.generation({c->reservation.gpu}) == c->generation)) {
      return false;  // (a copy built before its GPU restarted went with the old process)
    }
    lost.push_back(c);
    return true;
  });
  return lost;
}

}  // namespace vecgpu
