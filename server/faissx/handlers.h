#pragma once

#include <string>
#include <string_view>

#include "core/engine.h"
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

// The handler of a FAISSx action, or null for an unknown action.
ActionHandler FindHandler(std::string_view action);

// Actions that change indexes or run long (training, bulk adds): the write lane.
bool IsWriteAction(std::string_view action);

}  // namespace vecgpu::server
