#pragma once

// A live copy of every key under an etcd prefix: it lists the prefix, then watches from the
// listed revision + 1, so no change between the two is missed; when the watch ends (its start
// was compacted, or etcd was unreachable for a while) it lists again and watches from there.
// What the gateway keeps of the agents (MemberDirectory) and of the shard maps.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/etcd/etcd_client.h"

namespace vecgpu::cluster {

class PrefixMirror {
 public:
  using Entries = std::map<std::string, KeyValue>;  // by key, the prefix taken off
  // `on_change` (may be empty) gets every entry after each change, on the mirror's thread,
  // before waiters are woken. `etcd` must outlive this.
  PrefixMirror(EtcdClient& etcd, std::string prefix,
               std::function<void(const Entries&)> on_change = {});
  ~PrefixMirror();
  PrefixMirror(const PrefixMirror&) = delete;
  PrefixMirror& operator=(const PrefixMirror&) = delete;

  Entries entries() const;
  int64_t revision() const;  // the etcd revision the copy reflects (0 before the first list)
  int64_t lists() const;     // lists made (more than 1 after a lost watch)
  // Waits until `pred(entries())` holds or `timeout` passes; returns whether it held.
  bool WaitFor(const std::function<bool(const Entries&)>& pred,
               std::chrono::milliseconds timeout) const;

 private:
  void Loop();
  void Changed(Entries now);

  EtcdClient& etcd_;
  const std::string prefix_;
  const std::function<void(const Entries&)> on_change_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Entries entries_;           // guarded by mu_
  int64_t revision_ = 0;      // guarded by mu_
  int64_t lists_ = 0;         // guarded by mu_
  bool watch_ended_ = false;  // guarded by mu_
  bool stopping_ = false;     // guarded by mu_
  std::thread thread_;
};

}  // namespace vecgpu::cluster
