#pragma once

// The gateway's view of the agents (issue [2/5], item 3): it lists `<prefix>` in etcd, then
// watches from the listed revision + 1, so no change between the two is missed; when the watch
// ends (its start was compacted, or etcd was unreachable for a while) it lists again and
// watches from there. Values that are not an agent's JSON are skipped (and counted).

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/etcd/etcd_client.h"
#include "cluster/membership/agent_registration.h"

namespace vecgpu::cluster {

class MemberDirectory {
 public:
  using Members = std::map<std::string, AgentInfo>;  // by agent id
  // `on_change` (may be empty) gets the whole membership after each change, on the
  // directory's thread. `etcd` must outlive this.
  MemberDirectory(EtcdClient& etcd, std::string prefix = "/vecgpu/agents/",
                  std::function<void(const Members&)> on_change = {});
  ~MemberDirectory();
  MemberDirectory(const MemberDirectory&) = delete;
  MemberDirectory& operator=(const MemberDirectory&) = delete;

  Members members() const;
  // The etcd revision the membership reflects (0 before the first list).
  int64_t revision() const;
  // How many times the directory listed (1 after the first; more after each lost watch).
  int64_t lists() const;
  // Values under the prefix that were not an agent's JSON.
  int64_t malformed() const;
  // Waits until `pred(members())` holds or `timeout` passes; returns whether it held.
  bool WaitFor(const std::function<bool(const Members&)>& pred,
               std::chrono::milliseconds timeout) const;

 private:
  void Loop();
  void Apply(const std::vector<WatchEvent>& events, int64_t revision);

  EtcdClient& etcd_;
  const std::string prefix_;
  const std::function<void(const Members&)> on_change_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Members members_;          // guarded by mu_
  int64_t revision_ = 0;     // guarded by mu_
  int64_t lists_ = 0;        // guarded by mu_
  int64_t malformed_ = 0;    // guarded by mu_
  bool watch_ended_ = false;  // guarded by mu_
  bool stopping_ = false;    // guarded by mu_
  std::thread thread_;
};

}  // namespace vecgpu::cluster
