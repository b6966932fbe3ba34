#include "cluster/etcd/prefix_mirror.h"

#include <memory>

namespace vecgpu::cluster {

PrefixMirror::PrefixMirror(EtcdClient& etcd, std::string prefix,
                           std::function<void(const Entries&)> on_change)
    : etcd_(etcd), prefix_(std::move(prefix)), on_change_(std::move(on_change)) {
  thread_ = std::thread([this] { Loop(); });
}

PrefixMirror::~PrefixMirror() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

PrefixMirror::Entries PrefixMirror::entries() const {
  std::lock_guard lock(mu_);
  return entries_;
}

int64_t PrefixMirror::revision() const {
  std::lock_guard lock(mu_);
  return revision_;
}

int64_t PrefixMirror::lists() const {
  std::lock_guard lock(mu_);
  return lists_;
}

bool PrefixMirror::WaitFor(const std::function<bool(const Entries&)>& pred,
                           std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return pred(entries_); });
}

void PrefixMirror::Changed(Entries now) {
  if (on_change_) on_change_(now);
  cv_.notify_all();
}

void PrefixMirror::Loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    auto listed = etcd_.GetPrefix(prefix_);
    std::unique_ptr<EtcdWatch> watch;
    if (listed.ok()) {
      Entries fresh;
      for (KeyValue& kv : listed->kvs) fresh[kv.key.substr(prefix_.size())] = std::move(kv);
      {
        std::lock_guard g(mu_);
        entries_ = fresh;
        revision_ = listed->revision;
        ++lists_;
        watch_ended_ = false;
      }
      Changed(std::move(fresh));
      auto w = etcd_.WatchPrefix(
          prefix_, listed->revision + 1,
          [this](const std::vector<WatchEvent>& events, int64_t rev) {
            Entries now;
            {
              std::lock_guard g(mu_);
              for (const WatchEvent& e : events) {
                const std::string key = e.kv.key.substr(prefix_.size());
                if (e.deleted) {
                  entries_.erase(key);
                } else {
                  entries_[key] = e.kv;
                }
              }
              revision_ = rev;
              now = entries_;
            }
            Changed(std::move(now));
          },
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
      cv_.wait(lock, [&] { return stopping_ || watch_ended_; });  // then list again
    } else {
      cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping_; });
    }
    lock.unlock();
    watch.reset();  // joins its thread: not under mu_, which its callbacks take
    lock.lock();
  }
}

}  // namespace vecgpu::cluster
