#pragma once

#include <string>
#include <string_view>

#include "core/engine.h"
#include "core/metrics/server_metrics.h"
#include "core/scheduler/scheduler.h"
#include "server/auth.h"

namespace vecgpu::server {

// The FAISSx protocol over the Engine, independent of the transport: one request payload in,
// one reply payload out. Decodes and validates the request, authenticates it, runs the action
// and maps any error to the wire (PROTOCOL.md). Never throws. Thread-safe.
class FaissxService {
 public:
  // `engine`, `auth` and `metrics` (if set) must outlive the service. With `metrics`, every
  // request is counted by action, tenant and outcome, and timed by action.
  FaissxService(Engine& engine, const Authenticator& auth, const Limits& limits,
                ServerMetrics* metrics = nullptr);

  std::string Handle(std::string payload) const;

  // Which scheduler lane a payload's action runs on (a cheap peek, no decoding).
  static Lane LaneOf(std::string_view payload);
  // A complete error reply for a request that never reached Handle (busy, bad framing).
  static std::string ErrorReply(const Status& status);

 private:
  // What the metrics record of one request.
  struct Outcome {
    std::string action = "malformed";  // the action, "unknown", or "malformed" (not decoded)
    std::string tenant;                // "" before authentication
    std::string code = "ok";           // "ok" or the wire error_code
  };
  std::string Serve(std::string payload, Outcome* o) const;

  Engine& engine_;
  const Authenticator& auth_;
  const Limits limits_;
  ServerMetrics* const metrics_;
};

}  // namespace vecgpu::server
