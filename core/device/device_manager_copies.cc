// DeviceManager's extra copies of hot indexes: reservations that take only room nobody else
// needs, given back (reclaimed) when a placement or a growth needs it.
#include <algorithm>

#include "core/device/device_manager.h"

namespace vecgpu {
namespace {

constexpr int64_t kMiB = 1 << 20;

std::string MiB(int64_t bytes) { return std::to_string((bytes + kMiB - 1) / kMiB) + " MiB"; }

}  // namespace

int DeviceManager::max_copies() const {
  const int n = static_cast<int>(gpus_.size());
  return options_.copies.max_copies > 0 ? std::min(options_.copies.max_copies, n) : n;
}

StatusOr<CopyReservation> DeviceManager::PlaceCopy(const IndexSpec& spec, int64_t bytes,
                                                   const std::vector<int>& exclude,
                                                   const std::string& who, const std::string& why,
                                                   std::function<void()> on_reclaim) {
  if (!GpuUnsupported(spec).empty()) return FailedPrecondition("FAISS cannot run it on a GPU");
  std::vector<int> ids;
  for (const auto& d : devices_) {
    if (d->healthy.load() &&
        std::find(exclude.begin(), exclude.end(), d->props.id) == exclude.end()) {
      ids.push_back(d->props.id);
    }
  }
  const std::map<int, int64_t> measured = Measured(ids);
  CopyReservation r;
  {
    MutexLock lock(mu_);
    Device* best = nullptr;
    int64_t best_room = -1;
    for (int id : ids) {
      Device* d = Find(id);
      int64_t room = d->budget - d->reserved;
      if (auto m = measured.find(id); m != measured.end()) room = std::min(room, m->second);
      if (room > best_room) {
        best = d;
        best_room = room;
      }
    }
    if (!best || best_room < bytes) {
      return ResourceExhausted("no other GPU has " + MiB(bytes) + " free for a copy" +
                               (best ? " (the most is " + MiB(std::max<int64_t>(best_room, 0)) +
                                           " on GPU " + std::to_string(best->props.id) + ")"
                                     : std::string()));
    }
    // The same headroom as a placement, so growth does not drop the copy on every add.
    const int64_t take = std::min(bytes + bytes / 4, best_room);
    best->reserved += take;
    best->reclaimable += take;
    best->extra_copies++;
    r = {next_copy_++, best->props.id, take};
    copies_[r.id] = Copy{r.gpu, take, who, std::move(on_reclaim)};
  }
  Log("placement: " + who + " copy on gpu:" + std::to_string(r.gpu) + ": " + why + " (" +
      MiB(r.bytes) + " reserved)");
  return r;
}

bool DeviceManager::ResizeCopy(uint64_t id, int64_t bytes) {
  int gpu = -1;
  {
    MutexLock lock(mu_);
    auto it = copies_.find(id);
    if (it == copies_.end()) return false;
    if (bytes <= it->second.bytes) return true;
    gpu = it->second.gpu;
  }
  const std::map<int, int64_t> measured = Measured({gpu});
  MutexLock lock(mu_);
  auto it = copies_.find(id);
  Device* d = Find(gpu);
  if (it == copies_.end() || !d) return false;
  const int64_t want = bytes + bytes / 4;
  const int64_t more = want - it->second.bytes;
  if (d->budget - d->reserved < more) return false;
  if (auto m = measured.find(gpu); m != measured.end() && m->second < more) return false;
  d->reserved += more;
  d->reclaimable += more;
  it->second.bytes = want;
  return true;
}

bool DeviceManager::DropCopyLocked(uint64_t id) {
  auto it = copies_.find(id);
  if (it == copies_.end()) return false;
  if (Device* d = Find(it->second.gpu)) {
    d->reserved -= it->second.bytes;
    d->reclaimable -= it->second.bytes;
    d->extra_copies--;
  }
  copies_.erase(it);
  return true;
}

void DeviceManager::ReleaseCopy(uint64_t id, const std::string& why) {
  std::string line;
  {
    MutexLock lock(mu_);
    // A reclaim of it that runs now has given the room back already; wait until its owner
    // has been told, so that nothing calls the owner after this.
    mu_.Await(reclaimed_cv_, [&]() REQUIRES(mu_) {
      return std::find(reclaiming_.begin(), reclaiming_.end(), id) == reclaiming_.end();
    });
    auto it = copies_.find(id);
    if (it == copies_.end()) return;
    line = "placement: " + it->second.who + " copy on gpu:" + std::to_string(it->second.gpu) +
           " dropped: " + why;
    DropCopyLocked(id);
  }
  Log(line);
}

void DeviceManager::CopyFailed(uint64_t id, const Status& error, const std::string& who) {
  int gpu = -1;
  {
    MutexLock lock(mu_);
    auto it = copies_.find(id);
    if (it == copies_.end()) return;  // reclaimed meanwhile: its room is back already
    gpu = it->second.gpu;
    DropCopyLocked(id);
  }
  const StatusCode code = error.code();
  const bool device_fault =
      code != StatusCode::kResourceExhausted && code != StatusCode::kInvalidArgument &&
      code != StatusCode::kFailedPrecondition && code != StatusCode::kUnimplemented;
  if (device_fault) DeviceLost(gpu, error.message());  // restarted, or quarantined
  Log("placement: " + who + " copy on gpu:" + std::to_string(gpu) + " dropped: it failed (" +
      error.message() + ")");
}

int64_t DeviceManager::ReclaimLocked(Device* d, int64_t room, int64_t need,
                                     const std::string& for_who, std::map<int, int64_t>* measured,
                                     Reclaims* calls) {
  if (room >= need || room + d->reclaimable < need) return 0;
  std::vector<std::pair<int64_t, uint64_t>> here;  // (bytes, id), largest first
  for (const auto& [id, c] : copies_) {
    if (c.gpu == d->props.id) here.push_back({c.bytes, id});
  }
  std::sort(here.rbegin(), here.rend());
  int64_t freed = 0;
  for (const auto& [bytes, id] : here) {
    if (room + freed >= need) break;
    Copy c = copies_[id];
    DropCopyLocked(id);
    freed += bytes;
    reclaiming_.push_back(id);
    calls->emplace_back(id, std::move(c.on_reclaim));
    Log("placement: " + c.who + " copy on gpu:" + std::to_string(c.gpu) + " reclaimed: " + for_who +
        " needs the room (" + MiB(bytes) + ")");
  }
  if (auto m = measured->find(d->props.id); m != measured->end()) m->second += freed;
  return freed;
}

void DeviceManager::ReclaimForPlace(const std::vector<Device*>& candidates, int64_t bytes,
                                    const std::string& for_who, std::map<int, int64_t>* measured,
                                    Reclaims* calls) {
  // The GPU where the fewest bytes of copies make room for it.
  Device* best = nullptr;
  int64_t best_room = 0, best_cost = 0;
  for (Device* d : candidates) {
    int64_t room = d->budget - d->reserved;
    if (auto m = measured->find(d->props.id); m != measured->end()) {
      room = std::min(room, m->second);
    }
    const int64_t cost = bytes - room;
    if (cost <= 0 || cost > d->reclaimable) continue;
    if (!best || cost < best_cost) {
      best = d;
      best_room = room;
      best_cost = cost;
    }
  }
  if (best) ReclaimLocked(best, best_room, bytes, for_who, measured, calls);
}

void DeviceManager::RunReclaims(Reclaims& calls) {
  for (auto& [id, call] : calls) {
    if (call) call();
  }
  if (calls.empty()) return;
  {
    MutexLock lock(mu_);
    for (const auto& [id, call] : calls) {
      auto it = std::find(reclaiming_.begin(), reclaiming_.end(), id);
      if (it != reclaiming_.end()) reclaiming_.erase(it);
    }
  }
  reclaimed_cv_.notify_all();
  calls.clear();
}

}  // namespace vecgpu
