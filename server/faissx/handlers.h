#pragma once

#include <string>
#include <string_view>

#include "core/engine.h"
#include "core/scheduler/scheduler.h"
#include "server/faissx/map_writer.h"
#include "server/faissx/request.h"

namespace vecgpu::server {

// What one action handler works with.
struct ActionContext {
  Engine& engine;
  const Request& req;
  const std::string& tenant;
  const Limits& limits;
  MapWriter& out;  // the action's reply fields; "success" and the envelope are added later
};

using ActionHandler = Status (*)(ActionContext&);

// One FAISSx action: its handler and the lane it runs on (kWrite: it changes indexes or runs
// long, as training, bulk adds, merges and clustering do). Declared together, in one table.
struct Action {
  ActionHandler handler;
  Lane lane;
};

// The action named `action`, or null for an unknown action.
const Action* FindAction(std::string_view action);

}  // namespace vecgpu::server
