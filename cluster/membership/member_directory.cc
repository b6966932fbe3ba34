#include "cluster/membership/member_directory.h"

namespace vecgpu::cluster {

MemberDirectory::MemberDirectory(EtcdClient& etcd, std::string prefix,
                                 std::function<void(const Members&)> on_change)
    : etcd_(etcd), prefix_(std::move(prefix)), on_change_(std::move(on_change)) {
  thread_ = std::thread([this] { Loop(); });
}

MemberDirectory::~MemberDirectory() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

MemberDirectory::Members MemberDirectory::members() const {
  std::lock_guard lock(mu_);
  return members_;
}

int64_t MemberDirectory::revision() const {
  std::lock_guard lock(mu_);
  return revision_;
}

int64_t MemberDirectory::lists() const {
  std::lock_guard lock(mu_);
  return lists_;
}

int64_t MemberDirectory::malformed() const {
  std::lock_guard lock(mu_);
  return malformed_;
}

bool MemberDirectory::WaitFor(const std::function<bool(const Members&)>& pred,
                              std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return pred(members_); });
}

void MemberDirectory::Apply(const std::vector<WatchEvent>& events, int64_t revision) {
  Members now;
  {
    std::lock_guard lock(mu_);
    for (const WatchEvent& e : events) {
      const std::string id = e.kv.key.substr(prefix_.size());
      if (e.deleted) {
        members_.erase(id);
        continue;
      }
      auto info = DecodeAgentInfo(e.kv.value);
      if (!info.ok() || info->id != id) {
        ++malformed_;
        members_.erase(id);
        continue;
      }
      members_[id] = std::move(*info);
    }
    revision_ = revision;
    now = members_;
  }
  cv_.notify_all();
  if (on_change_) on_change_(now);
}

void MemberDirectory::Loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    // List, then watch from right after what was listed.
    auto listed = etcd_.GetPrefix(prefix_);
    std::unique_ptr<EtcdWatch> watch;
    if (listed.ok()) {
      Members fresh;
      int64_t bad = 0;
      for (const KeyValue& kv : listed->kvs) {
        const std::string id = kv.key.substr(prefix_.size());
        auto info = DecodeAgentInfo(kv.value);
        if (!info.ok() || info->id != id) {
          ++bad;
          continue;
        }
        fresh[id] = std::move(*info);
      }
      Members now;
      {
        std::lock_guard g(mu_);
        members_ = std::move(fresh);
        revision_ = listed->revision;
        ++lists_;
        malformed_ += bad;
        watch_ended_ = false;
        now = members_;
      }
      cv_.notify_all();
      if (on_change_) on_change_(now);
      auto w = etcd_.WatchPrefix(
          prefix_, listed->revision + 1,
          [this](const std::vector<WatchEvent>& events, int64_t rev) { Apply(events, rev); },
          [this](const Status&) {
            {
              std::lock_guard g(mu_);
              watch_ended_ = true;
            }
            cv_.notify_all();
          });
      if (w.ok()) watch = std::move(*w);
    }
    lock.lock();
    if (watch) {
      // Until the watch ends (then list again) or the directory stops.
      cv_.wait(lock, [&] { return stopping_ || watch_ended_; });
    } else {
      cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping_; });
    }
    lock.unlock();
    watch.reset();  // joins its thread: not under mu_, which its callbacks take
    lock.lock();
  }
}

}  // namespace vecgpu::cluster
