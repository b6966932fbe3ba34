#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "core/metrics/server_metrics.h"
#include "core/service/collection_service.h"
#include "server/auth.h"
#include "server/faissx/map_writer.h"
#include "server/faissx/request.h"

namespace vecgpu::server {

struct ServiceOptions {
  // Deadline of a request that sets no `timeout_ms`; 0: none. Default: 0.
  int request_timeout_ms = 0;
  // Per-tenant request rate and requests in flight, checked once a request is authenticated
  // (storage quotas are the engine's). Null: none. Must outlive the service.
  Quotas* quotas = nullptr;
};

// The FAISSx protocol over the service contract (core/service/collection_service.h),
// independent of the transport: one request payload in, one reply payload out. Authenticates
// the request from its envelope, decodes and validates it, and calls the service (which
// decides where the work runs); the reply is encoded where the call completes. Maps any error
// to the wire (PROTOCOL.md). Never throws. Thread-safe.
class FaissxService {
 public:
  // `service`, `auth` and `metrics` (if set) must outlive this. With `metrics`, every
  // request is counted by action, tenant and outcome, and timed by action.
  FaissxService(CollectionService& service, const Authenticator& auth, const Limits& limits,
                ServerMetrics* metrics = nullptr, ServiceOptions options = {});

  using Done = std::function<void(std::string reply)>;
  // Called once the request is authenticated, before its payload is copied or decoded; an
  // error is the reply (ingress bounds: server/zmq/router_frontend.cc).
  using Admit = std::function<Status(const Principal& who)>;
  // Serves `payload` (read only until this call returns); `done` gets the reply exactly once,
  // on this thread (errors, cached reads) or on the worker that ran the action. The key is
  // checked from a scan of the envelope (PeekEnvelope) before anything else.
  void Handle(std::string_view payload, Done done, const Admit& admit = {}) const;
  void Handle(std::string payload, Done done) const;
  // Handle, waiting for the reply.
  std::string Handle(std::string payload) const;

  // A complete error reply for a request that never reached Handle (busy, bad framing).
  static std::string ErrorReply(const Status& status);

 private:
  // What the metrics record of one request.
  struct Outcome {
    std::string action = "malformed";  // the action, "unknown", or "malformed" (not decoded)
    std::string tenant;                // "" before authentication
    std::string code = "ok";           // "ok" or the wire error_code
  };
  StatusOr<std::chrono::steady_clock::time_point> Deadline(const Request& req) const;
  static std::string Success(MapWriter& out, const Request* req);

  CollectionService& service_;
  const Authenticator& auth_;
  const Limits limits_;
  ServerMetrics* const metrics_;
  const ServiceOptions options_;
};

}  // namespace vecgpu::server
