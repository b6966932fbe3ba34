#pragma once

// Inside the replicator (not for other callers): its agent API clients to the other agents,
// shared by the sender loop (replicator.cc) and the copy threads (replicator_copies.cc).
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/replication/replicator.h"
#include "cluster/security/tls.h"

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too.
#include <grpcpp/grpcpp.h>

#include "vecgpu/agent/v1/agent.grpc.pb.h"

namespace vecgpu::cluster {

// A replica's answer: a gRPC status, then the position it reports.
inline ReplicateOutcome OutcomeOf(const grpc::Status& st, const apb::ReplicateReply& reply,
                           bool installed = false) {
  ReplicateOutcome o;
  o.installed = installed;
  if (st.ok()) {
    o.at = {reply.position(), reply.digest()};
  } else {
    o.status = Status(static_cast<StatusCode>(st.error_code()), st.error_message());
  }
  return o;
}

// One agent API client per other agent, and the calls in flight to them.
struct Replicator::Peers {
  struct Call {
    grpc::ClientContext context;
    apb::ReplicateRequest request;
    apb::ReplicateReply reply;
  };
  std::mutex mu;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels;  // by address
  std::map<std::string, std::unique_ptr<apb::Agent::Stub>> stubs;
  // Calls in flight (their owners, by context), and answered ones: freed by the loop, never
  // inside their own completion (gRPC asserts when a context dies in its callback).
  std::map<grpc::ClientContext*, std::shared_ptr<void>> in_flight;
  std::vector<std::shared_ptr<void>> retired;
  std::condition_variable idle;
  bool closed = false;  // shutting down: no more calls
  std::shared_ptr<const TlsCredentials> tls;  // null: plaintext

  // False (the call is not to be made) once closed.
  bool Started(grpc::ClientContext* c, std::shared_ptr<void> owner) {
    std::lock_guard lock(mu);
    if (closed) return false;
    in_flight[c] = std::move(owner);
    return true;
  }
  void Finished(grpc::ClientContext* c) {
    std::lock_guard lock(mu);
    auto it = in_flight.find(c);
    if (it == in_flight.end()) return;
    retired.push_back(std::move(it->second));
    in_flight.erase(it);
    if (in_flight.empty()) idle.notify_all();
  }

  apb::Agent::Stub& StubOf(const std::string& address) {
    std::lock_guard lock(mu);
    auto& stub = stubs[address];
    if (!stub) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(INT32_MAX);
      args.SetMaxSendMessageSize(INT32_MAX);
      auto channel = MakeChannel(address, args, tls.get());
      channels[address] = channel;
      stub = apb::Agent::NewStub(channel);
    }
    return *stub;
  }
};

}  // namespace vecgpu::cluster
