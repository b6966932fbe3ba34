#pragma once

// An agent's membership in the cluster (issue [2/5], item 3): it registers under
// `<prefix><id>` on an etcd lease (TTL ~10 s, renewed every TTL/4) with its address, devices,
// free memory and load, and fences itself: when no renewal has succeeded for a TTL, counted
// from when the last successful renewal was *sent* (so etcd cannot have kept the lease for
// less), it stops accepting writes until a renewal succeeds again: of the same lease while
// etcd still holds it (its key never went away, so nobody took its shards over: issue [3/5]),
// else on a fresh lease. The fence is
// computed from the clock at every admission, so an agent that was paused (SIGSTOP, a long GC
// or swap) is fenced the moment it runs again, before its background thread notices.
//
// etcd 3.4 resets leases to their full TTL when its leader changes: a dead agent's key can
// outlive its TTL (CLUSTER.md 1.3). That errs on the safe side here (the agent fences itself
// on its own clock); the gateway must not take a key's presence as proof of life for writes.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd/etcd_client.h"
#include "core/util/status.h"

namespace vecgpu::cluster {

// What an agent says of itself in its membership key (JSON).
struct AgentInfo {
  std::string id;
  std::string address;               // host:port of its agent API
  std::vector<std::string> devices;  // "cpu", "gpu:0", ...
  int64_t free_memory_bytes = 0;
  double load = 0;                   // queued work per worker, or similar: lower is idler
  std::string version;               // vecgpu's, for operators
  // The agent API version it speaks (kAgentApiVersion); 0: not said (before [3/5]). A
  // gateway does not route to, nor place on, an agent whose version is not its own.
  int api_version = 0;

  bool operator==(const AgentInfo&) const = default;
};

std::string EncodeAgentInfo(const AgentInfo& info);
// Refuses (INVALID_ARGUMENT naming the problem) what is not an agent's JSON.
StatusOr<AgentInfo> DecodeAgentInfo(std::string_view json);

struct RegistrationOptions {
  std::string prefix = "/vecgpu/agents/";
  int64_t ttl_seconds = 10;
  // Fenced this long before a TTL has passed since the last renewal was sent: room for
  // clock-rate differences between the agent and etcd.
  std::chrono::milliseconds margin{500};
  // The membership value is rewritten when what the agent says of itself changed, at most
  // this often (every write is an event for every gateway's watch).
  std::chrono::milliseconds refresh{10'000};
};

class AgentRegistration {
 public:
  // Registers in the background from now on; `describe` is asked what to publish (its id
  // must not change). `etcd` must outlive this.
  AgentRegistration(EtcdClient& etcd, RegistrationOptions options,
                    std::function<AgentInfo()> describe);
  // Leaves: revokes the lease, so the key goes at once (a graceful stop).
  ~AgentRegistration();
  AgentRegistration(const AgentRegistration&) = delete;
  AgentRegistration& operator=(const AgentRegistration&) = delete;

  // OK while the agent holds a live lease; UNAVAILABLE naming why otherwise (not registered
  // yet, or no renewal for a TTL). Cheap: reads two atomics and the clock.
  Status WriteAdmission() const;
  bool fenced() const { return !WriteAdmission().ok(); }
  // The lease now held (0: none).
  int64_t lease() const { return lease_.load(); }
  // How many times the agent registered (1 after the first; more after each fence).
  int64_t registrations() const { return registrations_.load(); }

 private:
  void Loop();
  // Grants a lease and writes the key on it.
  Status Register();

  EtcdClient& etcd_;
  const RegistrationOptions options_;
  const std::function<AgentInfo()> describe_;
  std::atomic<int64_t> lease_{0};
  // Steady-clock nanoseconds when the last successful grant or renewal was sent.
  std::atomic<int64_t> renewed_sent_{0};
  std::atomic<int64_t> registrations_{0};
  std::string published_;  // the value last written (loop thread only)
  std::chrono::steady_clock::time_point published_at_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace vecgpu::cluster
