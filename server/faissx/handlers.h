#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/service/collection_service.h"
#include "server/faissx/map_writer.h"
#include "server/faissx/request.h"

namespace vecgpu::server {

// One FAISSx request being served, shared by its handler and the completions of the service
// calls it makes, until its reply is sent.
struct ActionCall {
  ActionCall(CollectionService& s, const Request& r, CallContext c, const Limits& l)
      : service(s), req(r), call(std::move(c)), limits(l) {}
  CollectionService& service;
  const Request& req;  // owned by whoever owns `keep_alive`
  const CallContext call;
  const Limits& limits;
  MapWriter out;  // the action's reply fields; "success" and the envelope are added later
  // Sends the reply: on OK the fields in `out`, else the error. Called exactly once.
  std::function<void(const Status&)> finish;
  std::shared_ptr<void> keep_alive;  // the request and the reply's bookkeeping
};

// An action handler decodes its request's fields (on the calling thread), calls the service
// and returns OK: the service's completion writes the reply fields and calls `finish`. An
// error means nothing was called and the caller finishes with it.
using ActionHandler = Status (*)(const std::shared_ptr<ActionCall>&);

// One FAISSx action. Where and on which worker it runs is the service's business
// (core/service/local_service.h); the front end only decodes and encodes.
struct Action {
  ActionHandler handler;
};

// The action named `action`, or null for an unknown action.
const Action* FindAction(std::string_view action);

}  // namespace vecgpu::server
