#pragma once

// The gateway's view of the agents (issue [2/5], item 3): a PrefixMirror of `<prefix>` in
// etcd (list, then watch from the listed revision + 1; list again when the watch ends),
// decoded. Values that are not an agent's JSON are skipped (and counted). An agent that speaks
// another agent API version than `api_version` (when not 0) is not a member here: it is
// listed by refused(), and `log` (when set) says so once per agent and version.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cluster/etcd/prefix_mirror.h"
#include "cluster/membership/agent_registration.h"

namespace vecgpu::cluster {

class MemberDirectory {
 public:
  using Members = std::map<std::string, AgentInfo>;  // by agent id
  // `on_change` (may be empty) gets the whole membership after each change, on the
  // directory's thread. `etcd` must outlive this.
  MemberDirectory(EtcdClient& etcd, std::string prefix = "/vecgpu/agents/",
                  std::function<void(const Members&)> on_change = {}, int api_version = 0,
                  std::function<void(const std::string&)> log = {});

  Members members() const;
  // Registered agents left out for their agent API version.
  Members refused() const;
  // The etcd revision the membership reflects (0 before the first list).
  int64_t revision() const { return mirror_->revision(); }
  // How many times the directory listed (1 after the first; more after each lost watch).
  int64_t lists() const { return mirror_->lists(); }
  // Values under the prefix that were not an agent's JSON.
  int64_t malformed() const;
  // Waits until `pred(members())` holds or `timeout` passes; returns whether it held.
  bool WaitFor(const std::function<bool(const Members&)>& pred,
               std::chrono::milliseconds timeout) const;

 private:
  void Decode(const PrefixMirror::Entries& entries);

  const std::function<void(const Members&)> on_change_;
  const int api_version_;
  const std::function<void(const std::string&)> log_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Members members_;        // guarded by mu_
  Members refused_;        // guarded by mu_
  int64_t malformed_ = 0;  // guarded by mu_
  std::unique_ptr<PrefixMirror> mirror_;  // last: its thread calls Decode
};

}  // namespace vecgpu::cluster
