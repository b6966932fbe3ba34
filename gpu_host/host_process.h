#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/util/mutex.h"
#include "gpu_host/wire.h"

namespace vecgpu::gpu_host {

// One running GPU host process and the socket to it: requests from any thread, each waiting
// for its own reply (a reader thread matches replies to requests by id). One object per
// process: a restarted device gets a new HostProcess, so a handle to the old one (a device
// copy) can only ever fail. Thread-safe.
class HostProcess {
 public:
  // Starts `exe gpu-host --device <device> args...` with the socket as its descriptor 3, in
  // its own process group (a terminal's Ctrl-C reaches the server only, which then closes
  // the socket). `on_exit(why)` runs once, on the reader thread, when the process ends
  // unasked (not when this object stops it).
  static StatusOr<std::unique_ptr<HostProcess>> Start(const std::string& exe, int device,
                                                      const std::vector<std::string>& args,
                                                      std::function<void(std::string)> on_exit);
  // Closes the socket (the process exits on its own), waiting up to 2 s before killing it.
  ~HostProcess();
  HostProcess(const HostProcess&) = delete;
  HostProcess& operator=(const HostProcess&) = delete;

  // Sends a request and waits for its reply, at most `timeout` (none: forever); a reply with
  // an error comes back as that Status. Unavailable, naming how the process ended, when it is
  // gone; after a timeout the process is killed (a device that stopped answering is lost).
  StatusOr<std::string> Call(Op op, std::string body,
                             std::optional<std::chrono::duration<double>> timeout);
  // Sends a request whose reply nobody waits for (freeing a copy).
  void Send(Op op, std::string body);

  bool alive() const { return !dead_.load(std::memory_order_acquire); }
  int device() const { return device_; }
  pid_t pid() const { return pid_; }
  // Kills the process (SIGKILL); the reader thread then reports it.
  void Kill() const;
  // Kills the process without reporting it (it is being replaced).
  void Retire() {
    stopping_.store(true);
    Kill();
  }

 private:
  HostProcess(int device, int fd, pid_t pid, std::function<void(std::string)> on_exit);
  void ReadLoop();
  // "exited with status 3", "killed by signal 9 (Killed)".
  static std::string HowItEnded(int wait_status);

  const int device_;
  const int fd_;
  const pid_t pid_;
  const std::function<void(std::string)> on_exit_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<bool> dead_{false};
  std::atomic<bool> stopping_{false};
  Mutex write_mu_;  // one frame at a time on the socket

  struct Pending {
    bool done = false;
    StatusOr<std::string> reply = std::string();
  };
  Mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::shared_ptr<Pending>> pending_ GUARDED_BY(mu_);
  std::string death_ GUARDED_BY(mu_);  // how it ended, once dead
  bool reaped_ GUARDED_BY(mu_) = false;
  std::thread reader_;
};

}  // namespace vecgpu::gpu_host
