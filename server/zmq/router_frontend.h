#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "core/ingress/ingress_budget.h"
#include "core/util/worker_pool.h"
#include "core/util/mutex.h"
#include "core/util/status.h"
#include "server/faissx/service.h"

namespace vecgpu::server {

struct FrontendOptions {
  std::string endpoint;           // e.g. "tcp://127.0.0.1:45678"
  int64_t max_message_bytes = 0;  // ZMQ_MAXMSGSIZE: larger messages drop the connection
  int io_threads = 1;
  // While one or two requests are in flight, the socket thread polls (yielding) for up to
  // this long before it blocks: a reply that comes back within it is sent without waking the
  // thread (about 60 us of a one-query round trip on a small VM). 0: always block.
  int poll_spin_us = 0;
  // Request bytes in flight, by connection, tenant, unauthenticated and in total (null: not
  // bounded but by the dispatch queue's count). Must outlive the front end's replies.
  IngressBudget* ingress = nullptr;
  // Requests larger than this many bytes are decoded on the bulk pool (if one is given), so
  // that a one-query search never waits behind the decoding of a large add or a keyless
  // 99 MB message. Default: 1 MiB.
  int64_t bulk_bytes = int64_t{1} << 20;
};

// The FAISSx ZeroMQ front end. One thread owns the ROUTER socket (REQ clients see plain
// request/reply); each request is handed to a dispatch thread that decodes it and queues its
// action (FaissxService), and its reply comes back, from wherever the action finished, through
// a queue and an eventfd that wakes the socket thread. Thread-safe: Start and Stop from one
// thread.
class RouterFrontend {
 public:
  // `bulk` (may be null): the pool that decodes requests larger than options.bulk_bytes.
  RouterFrontend(const FaissxService& service, WorkerPool& dispatch, FrontendOptions options,
                 WorkerPool* bulk = nullptr);
  ~RouterFrontend();

  // Binds the socket and starts serving; an error names the endpoint.
  Status Start();
  // Stops reading requests, waits up to `grace` for in-flight replies, closes the socket.
  // Returns the number of requests abandoned.
  int Stop(std::chrono::milliseconds grace);

 private:
  struct Impl;
  void Loop();
  void PushReply(std::string identity, std::string reply);

  const FaissxService& service_;
  WorkerPool& dispatch_;
  WorkerPool* const bulk_;
  const FrontendOptions options_;
  std::unique_ptr<Impl> impl_;
  int event_fd_ = -1;  // written by workers under mu_; closed by Stop under mu_
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> drain_over_{false};  // Stop's grace has ended
  std::atomic<int> in_flight_{0};
  Mutex mu_;
  bool closed_ GUARDED_BY(mu_) = false;  // replies pushed after Stop are dropped
  std::deque<std::pair<std::string, std::string>> replies_ GUARDED_BY(mu_);
};

}  // namespace vecgpu::server
