#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "core/engine.h"
#include "core/scheduler/scheduler.h"
#include "core/store/store.h"
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
  // Takes a snapshot of the data directory (the `snapshot` action); null without --data-dir.
  const std::function<StatusOr<store::SnapshotReport>(const std::string&)>* snapshot = nullptr;
  // The caller's key has the admin role (server/auth.h): server-wide actions.
  bool admin = false;
  // Per-tenant quotas and their meters (the `usage` action); null: none.
  const Quotas* quotas = nullptr;
};

using ActionHandler = Status (*)(ActionContext&);

// Where an action runs.
enum class Placement {
  kInline,      // on the dispatch thread, at once (ping, list, usage: cached reads only)
  kCollection,  // on the queue of the index named by `collection_key`, in order
  kUnbound,     // on a queue of its own (clustering, create, snapshot: bound to no index)
  kSearch,      // a search: queued on its index and batched with the searches behind it
  kAdd,         // an add: queued on its index and merged with the adds behind it
};

// One FAISSx action: its handler, where it runs and on which class of worker (kLong: it can
// run long, as training, merges, reclustering and clustering do; adds of at least
// long_add_rows vectors are long too). Declared together, in the one table of handlers.cc.
struct Action {
  ActionHandler handler;  // null for kAdd / kSearch (DecodeAdd / DecodeSearch)
  WorkClass cls;
  Placement where;
  const char* collection_key;  // request field naming the index, for kCollection / kSearch
};

// The action named `action`, or null for an unknown action.
const Action* FindAction(std::string_view action);

// A decoded search request, for Placement::kSearch.
struct SearchCall {
  std::string name;
  FloatMatrix queries;
  int k = 0;
  SearchParams params;
  bool binary = false;  // results as float32 / int64 bins
};
StatusOr<SearchCall> DecodeSearch(ActionContext& c);
// Writes a search's results as the reply fields.
void WriteSearchReply(MapWriter& out, SearchResult& r, bool binary);

// A decoded add request (add_vectors, add_with_ids, batch_add_with_ids), for Placement::kAdd.
struct AddCall {
  std::string name;
  FloatMatrix x;
  std::vector<int64_t> ids;  // empty when the request gave none
};
StatusOr<AddCall> DecodeAdd(ActionContext& c);
void WriteAddReply(MapWriter& out, const AddResult& r);

}  // namespace vecgpu::server
