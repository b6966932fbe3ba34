#pragma once

// What the Engine's source files (engine.cc, engine_training.cc, engine_replay.cc, ...) share
// beyond engine.h.

#include "core/collection.h"
#include "core/service/values.h"

namespace vecgpu {

// A copy of what `c` is now (its spec, backend state and counters), for list and describe.
CollectionInfo SnapshotOf(const Collection& c);

}  // namespace vecgpu
