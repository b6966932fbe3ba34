#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "server/grpc/call_scope.h"

namespace vecgpu::server {

// The deadline of a gRPC call on the scheduler's clock: the client's, else
// env.request_timeout_ms from now (0: none).
inline Clock::time_point DeadlineOf(const GrpcEnv& env, const grpc::ServerContextBase& c) {
  const auto client = c.deadline();
  Clock::time_point d = Clock::time_point::max();
  if (client != std::chrono::system_clock::time_point::max()) {
    const auto left = client - std::chrono::system_clock::now();
    d = Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
  }
  if (env.request_timeout_ms > 0) {
    d = std::min(d, Clock::now() + std::chrono::milliseconds(env.request_timeout_ms));
  }
  return d;
}

// Runs `fn` on the scheduler, as FAISSx requests run: on the queue of `collection` (in order
// with every other request on it, FAISSx's included, on a worker of class `cls`), or, with
// `collection` null, on a queue of its own (creates, snapshots), served fairly among the
// tenant's other work; within the call's deadline (TIMEOUT when it passes while queued). The
// gRPC thread waits for the result but runs no FAISS and touches no storage itself.
template <typename T>
StatusOr<T> Queued(const GrpcEnv& env, const grpc::ServerContextBase& c, const std::string& tenant,
                   const std::string* collection, WorkClass cls, std::function<StatusOr<T>()> fn) {
  auto done = std::make_shared<std::promise<StatusOr<T>>>();
  auto result = done->get_future();
  auto run = [done, fn = std::move(fn)] {
    try {
      done->set_value(fn());
    } catch (const std::bad_alloc&) {
      done->set_value(ResourceExhausted("out of memory while serving the request"));
    }
  };
  auto expire = [done](const Status& st) { done->set_value(st); };
  const Clock::time_point deadline = DeadlineOf(env, c);
  Status queued = collection
                      ? env.engine->Submit(tenant, *collection, cls, deadline, run, expire)
                      : env.engine->SubmitUnbound(tenant, cls, deadline, run, expire);
  if (!queued.ok()) return queued;
  return result.get();
}

// Queued, for work with no result but its status.
inline Status QueuedStatus(const GrpcEnv& env, const grpc::ServerContextBase& c,
                           const std::string& tenant, const std::string* collection,
                           WorkClass cls, std::function<Status()> fn) {
  return Queued<bool>(env, c, tenant, collection, cls, [fn = std::move(fn)]() -> StatusOr<bool> {
           RETURN_IF_ERROR(fn());
           return true;
         })
      .status();
}

}  // namespace vecgpu::server
