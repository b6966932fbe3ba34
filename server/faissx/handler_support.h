#pragma once

// What the FAISSx action handlers (handlers.cc, maintenance_handlers.cc) share.

#include <functional>
#include <memory>
#include <new>
#include <string>
#include <string_view>

#include "server/faissx/handlers.h"

namespace vecgpu::server::faissx_handlers {

using Call = std::shared_ptr<ActionCall>;
using VectorsNext = std::function<Status(FloatMatrix)>;

inline StatusOr<std::string> IndexId(const Call& c, std::string_view key = "index_id") {
  return c->req.String(key, c->limits.max_index_id_length);
}

// The completion of a service call: an error is the reply; a result goes through `write`,
// which fills the reply fields (or refuses it).
template <typename T, typename W>
Completion<T> Reply(const Call& c, W write) {
  return [c, write = std::move(write)](StatusOr<T> r) mutable {
    if (!r.ok()) return c->finish(r.status());
    Status written;
    try {
      written = write(*r);
    } catch (const std::bad_alloc&) {
      written = ResourceExhausted("out of memory while encoding the reply");
    }
    c->finish(written);
  };
}

// Reads the vector field `key` of the collection `name` and continues with it (handlers.cc).
Status WithVectors(const Call& c, const std::string& name, std::string_view key,
                   int64_t max_rows, VectorsNext next);

// maintenance_handlers.cc
Status SetParameter(const Call& c);
Status GetParameter(const Call& c);
Status MergeIndices(const Call& c);
Status ComputeClustering(const Call& c);
Status OptimizeIndex(const Call& c);
Status GetTransformInfo(const Call& c);
Status ApplyTransform(const Call& c);
Status ReclusterIndex(const Call& c);
Status TakeSnapshot(const Call& c);
Status TenantUsage(const Call& c);

}  // namespace vecgpu::server::faissx_handlers
