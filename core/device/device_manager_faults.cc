// DeviceManager, the faults part: losses, restarts with backoff, quarantine
// (ARCHITECTURE.md, "GPU faults").
#include <sstream>

#include "core/device/device_manager.h"

namespace vecgpu {

namespace {
std::string Seconds(double s) {
  std::ostringstream out;
  out << s << " s";
  return out.str();
}
}  // namespace

void DeviceManager::RecordFault(Device* d, const std::string& why) {
  const auto now = Clock::now();
  const auto window = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.fault_window_s));
  d->down = true;
  d->healthy.store(false, std::memory_order_release);
  d->faults++;
  d->last_fault = why;
  d->recent.push_back(now);
  while (!d->recent.empty() && d->recent.front() < now - window) d->recent.pop_front();
  const std::string id = "GPU " + std::to_string(d->props.id);
  const int n = static_cast<int>(d->recent.size());
  if (n >= options_.max_faults) {
    d->quarantined = true;
    d->quarantine_end =
        options_.quarantine_s > 0
            ? now + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(options_.quarantine_s))
            : Clock::time_point::max();
    Log("gpus: " + id + " quarantined after " + std::to_string(n) + " faults in " +
        Seconds(options_.fault_window_s) + " (last: " + why +
        "); its collections are served from the CPU until " +
        (options_.quarantine_s > 0 ? Seconds(options_.quarantine_s) + " have passed or " : "") +
        "an operator re-enables it (SIGHUP)");
  } else {
    const double backoff = options_.restart_backoff_s * static_cast<double>(1 << (n - 1));
    d->retry_at = now + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(backoff));
    Log("gpus: " + id + " lost (" + why + "); its collections are served from the CPU; restart in " +
        Seconds(backoff) + " (fault " + std::to_string(n) + " of " +
        std::to_string(options_.max_faults) + " in " + Seconds(options_.fault_window_s) + ")");
  }
  changed_ = true;
  cv_.notify_all();
}

void DeviceManager::DeviceLost(int device, const std::string& why) {
  Device* d = Find(device);
  if (!d) return;
  MutexLock lock(mu_);
  if (d->down) return;  // the same loss, reported again (a copy's error and the process's end)
  RecordFault(d, why);
}

int DeviceManager::Enable(int device) {
  int enabled = 0;
  MutexLock lock(mu_);
  for (const auto& d : devices_) {
    if ((device >= 0 && d->props.id != device) || !d->quarantined) continue;
    d->quarantined = false;
    d->recent.clear();
    d->retry_at = Clock::now();
    enabled++;
    Log("gpus: GPU " + std::to_string(d->props.id) + " re-enabled by the operator; restarting it");
  }
  changed_ = true;
  cv_.notify_all();
  return enabled;
}

void DeviceManager::Supervise() {
  MutexLock lock(mu_);
  while (!stop_) {
    changed_ = false;
    const auto now = Clock::now();
    auto next = now + std::chrono::hours(1);
    std::vector<Device*> due;
    for (const auto& d : devices_) {
      if (!d->down) continue;
      if (d->quarantined) {
        if (d->quarantine_end <= now) {
          d->quarantined = false;
          d->recent.clear();
          Log("gpus: GPU " + std::to_string(d->props.id) + " quarantine over; restarting it");
          due.push_back(d.get());
        } else {
          next = std::min(next, d->quarantine_end);
        }
      } else if (d->retry_at <= now) {
        due.push_back(d.get());
      } else {
        next = std::min(next, d->retry_at);
      }
    }
    if (due.empty()) {
      mu_.AwaitUntil(cv_, next, [this]() REQUIRES(mu_) { return stop_ || changed_; });
      continue;
    }
    for (Device* d : due) {
      const int id = d->props.id;
      mu_.Unlock();
      Status st = provider_->Restart(id);  // starts a process: never under mu_
      mu_.Lock();
      if (stop_) break;
      if (st.ok()) {
        d->down = false;
        d->restarts.fetch_add(1, std::memory_order_release);
        d->healthy.store(true, std::memory_order_release);
        Log("gpus: GPU " + std::to_string(id) + " is back (restart " +
            std::to_string(d->restarts.load()) + "); its collections return to it");
      } else {
        RecordFault(d, "restart failed: " + st.message());
      }
    }
  }
}

int64_t DeviceManager::generation(const std::vector<int>& devices) const {
  int64_t g = 0;
  for (int id : devices) {
    if (Device* d = Find(id)) g += d->restarts.load(std::memory_order_acquire);
  }
  return g;
}

std::string DeviceManager::DownReason(const std::vector<int>& devices) const {
  MutexLock lock(mu_);
  std::string out;
  for (int id : devices) {
    Device* d = Find(id);
    if (!d || !d->down) continue;
    if (!out.empty()) out += "; ";
    out += "GPU " + std::to_string(id) + " failed (" + d->last_fault + "), " +
           (d->quarantined ? "quarantined: served from the CPU until re-enabled"
                           : "restarting: served from the CPU until it is back");
  }
  return out;
}

std::string DeviceManager::QuarantineDetail() const {
  MutexLock lock(mu_);
  std::string out;
  for (const auto& d : devices_) {
    if (!d->quarantined) continue;
    out += "GPU " + std::to_string(d->props.id) + " quarantined after " +
           std::to_string(d->recent.size()) + " faults (last: " + d->last_fault +
           "); its collections are served from the CPU\n";
  }
  return out;
}

}  // namespace vecgpu
