#pragma once

// The values the service contract (core/service/collection_service.h) takes and returns:
// copies, never references into engine state, so a call can cross a thread or a network.
#include <cstdint>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/index_spec.h"
#include "core/types.h"

namespace vecgpu {

// A snapshot of one collection, for list/describe replies.
struct CollectionInfo {
  std::string name;
  IndexSpec spec;
  BackendInfo backend;
  int64_t searches = 0;
  int64_t queries = 0;
  int64_t adds = 0;
  int64_t vectors_added = 0;
  int64_t removals = 0;
  int64_t search_micros = 0;
};

// What a front end needs to decode a collection's vectors.
struct VectorLayout {
  int dim = 0;          // components (bits for binary indexes)
  bool binary = false;  // bit vectors
  Metric metric = Metric::kL2;
};

struct CreateCollectionRequest {
  std::string name;
  std::string index_type;  // FAISSx index_type or FAISS factory string
  int dim = 0;
  std::string metric;  // optional override for plain factory strings
  std::string device;  // placement hint: "" (automatic), "cpu", "gpu", "gpu:N"
  // Ids chosen by the client (the Vald API's string keys): an index type without an id map
  // is wrapped in an IDMap2 ("HNSW32" -> "IDMap2,HNSW32").
  bool keyed = false;
  // A cluster (`vecgpu gateway`): how many shards split the collection by id (0: one) and
  // how many copies each shard has (0: the gateway's --replicas). A single node ignores them.
  int shards = 0;
  int replicas = 0;
};

struct ReclusterResult {
  int previous_nlist = 0;
  int new_nlist = 0;
  int64_t ntotal = 0;
};

// k-NN results plus, for each query, the vectors of the neighbours found (in result order),
// read under the same lock hold as the search.
struct SearchAndReconstructResult {
  SearchResult result;
  std::vector<FloatMatrix> vectors;  // one per query; rows: the query's found neighbours
};

struct AddResult {
  int64_t count = 0;   // vectors added by this call
  int64_t ntotal = 0;  // vectors in the collection after it
};

// An object of the Vald API: a vector under a string id, stamped with a time.
struct KeyedObject {
  std::string key;
  std::vector<float> vector;
  int64_t timestamp = 0;     // Unix nanoseconds; 0 on a write: now
  bool skip_strict = false;  // on a write: skip the existence checks for this object
};

// How PutKeyed treats keys that exist (Vald's Insert, Update, Upsert).
enum class PutMode { kInsert, kUpdate, kUpsert };

// One comparison of Vald's RemoveByTimestamp (several are ANDed).
struct TimestampCondition {
  enum Op { kEq, kNe, kGe, kGt, kLe, kLt };
  Op op = kEq;
  int64_t timestamp = 0;
  bool Matches(int64_t t) const;
};

// What one snapshot did.
struct SnapshotReport {
  uint64_t cut = 0;          // the manifest's cut (core/store/manifest.h)
  int64_t written = 0;       // storages written
  int64_t unchanged = 0;     // storages kept as they were
  int64_t bytes = 0;         // bytes written
  int64_t removed = 0;       // old snapshot files and log segments removed
  int64_t busy = 0;          // storages being written, kept at their last image (the log after it)
  int64_t out_of_scope = 0;  // other tenants' storages, kept as they were
  double seconds = 0;
  double max_pause_seconds = 0;  // the longest time one storage's writes waited on the copy
};

}  // namespace vecgpu
