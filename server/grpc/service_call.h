#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/grpc/call_scope.h"

namespace vecgpu::server {

// The service contract (core/service/collection_service.h) as the synchronous gRPC handlers
// use it: one call's tenant, role, deadline and cancellation, and a blocking shorthand per
// operation. The handler's thread waits for the completion but runs no FAISS and touches no
// storage; when the client cancels the call (or its deadline passes), the work is taken back
// through the call's cancellation flag and the handler returns at once.
class ServiceCall {
 public:
  // The deadline: `deadline` (e.g. a Vald Search.Config's timeout), else the client's gRPC
  // deadline, else env.request_timeout_ms from now (0: none); the soonest of those given.
  ServiceCall(const GrpcEnv& env, const grpc::ServerContextBase& context, const CallScope& scope,
              Clock::time_point deadline = Clock::time_point::max());

  const CallContext& context() const { return call_; }

  StatusOr<CollectionInfo> Create(CreateCollectionRequest request);
  Status Drop(std::string collection);
  StatusOr<std::vector<CollectionInfo>> List();
  StatusOr<CollectionInfo> Describe(std::string collection);
  StatusOr<SearchReply> Search(SearchRequest request);
  StatusOr<WriteReply> Write(WriteRequest request);
  StatusOr<ReadReply> Read(ReadRequest request);
  StatusOr<SnapshotReport> Snapshot();

  // Starts `start(context, completion)` and waits for its completion.
  template <typename T, typename Start>
  StatusOr<T> Await(Start start) {
    auto done = std::make_shared<std::promise<StatusOr<T>>>();
    std::future<StatusOr<T>> result = done->get_future();
    start(call_, Completion<T>([done](StatusOr<T> r) { done->set_value(std::move(r)); }));
    return Wait(result);
  }

  // Waits for a completion started with context(), watching the client: a cancelled call
  // sets the flag (the service answers its completion later, into the shared state) and
  // returns CANCELLED now.
  template <typename T>
  StatusOr<T> Wait(std::future<StatusOr<T>>& result) {
    while (result.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
      if (context_.IsCancelled()) {
        call_.cancelled->store(true);
        return Cancelled("the client cancelled the call");
      }
    }
    return result.get();
  }

 private:
  const GrpcEnv& env_;
  const grpc::ServerContextBase& context_;
  CallContext call_;
};

}  // namespace vecgpu::server
