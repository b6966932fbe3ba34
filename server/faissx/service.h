#pragma once

#include <string>
#include <string_view>

#include "core/engine.h"
#include "core/scheduler/scheduler.h"
#include "server/auth.h"

namespace vecgpu::server {

// The FAISSx protocol over the Engine, independent of the transport: one request payload in,
// one reply payload out. Decodes and validates the request, authenticates it, runs the action
// and maps any error to the wire (PROTOCOL.md). Never throws. Thread-safe.
class FaissxService {
 public:
  // `engine` and `auth` must outlive the service.
  FaissxService(Engine& engine, const Authenticator& auth, const Limits& limits);

  std::string Handle(std::string payload) const;

  // Which scheduler lane a payload's action runs on (a cheap peek, no decoding).
  static Lane LaneOf(std::string_view payload);
  // A complete error reply for a request that never reached Handle (busy, bad framing).
  static std::string ErrorReply(const Status& status);

 private:
  Engine& engine_;
  const Authenticator& auth_;
  const Limits limits_;
};

}  // namespace vecgpu::server
