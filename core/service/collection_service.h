#pragma once

// The service contract: the one interface the front ends (FAISSx over ZeroMQ, gRPC and the
// Vald API) use to reach collections. Asynchronous and value-typed: every call takes who is
// calling (tenant, role), a deadline and a cancellation flag, plus a request value, and
// completes exactly once with a StatusOr of a result value, on whichever thread finishes the
// work (possibly before the call returns). Nothing returned refers to engine state, so the
// same contract can be served in process (core/service/local_service.h) or by a gateway over
// remote agents ([2/5]).
//
// Errors are the Status codes of core/util/status.h, mapped to each wire at its edge:
// INVALID_ARGUMENT for a bad request (naming the field), NOT_FOUND for a collection the
// tenant does not have (another tenant's collections do not exist for it), RESOURCE_EXHAUSTED
// for a quota or bound (naming it), DEADLINE_EXCEEDED when the deadline passes while queued or
// at a cancellation point, CANCELLED when the caller cancelled, UNAVAILABLE when shutting
// down. A refused request changes nothing.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/options.h"
#include "core/quota/quotas.h"
#include "core/service/values.h"
#include "core/util/status.h"

namespace vecgpu {

using Clock = std::chrono::steady_clock;

// Who calls, until when, and how the call is taken back.
struct CallContext {
  std::string tenant;  // every collection name is scoped to it
  bool admin = false;  // server-wide scope (snapshot of everything, usage of every tenant)
  Clock::time_point deadline = Clock::time_point::max();
  // Set by the caller to take the call back: queued work is answered CANCELLED without
  // running; running work stops at its next cancellation point where it can (searches,
  // training, clustering), else finishes. Null: not cancellable.
  std::shared_ptr<std::atomic<bool>> cancelled;
  // A cluster's gateway routing a write to a shard's primary: the shard map's epoch it
  // routed by (the agent refuses the write unless it is the primary in that epoch). 0: none.
  int64_t shard_epoch = 0;

  bool Cancelled() const { return cancelled && cancelled->load(std::memory_order_relaxed); }
};

// The completion of a call: called exactly once.
template <typename T>
using Completion = std::function<void(StatusOr<T>)>;

// A result with nothing in it.
struct Empty {};

struct SearchRequest {
  enum class Kind {
    kKnn,             // k nearest neighbours (batched with the searches queued behind it)
    kKnnWithVectors,  // and the neighbours' stored vectors, read in the same hold
    kRange,           // every vector within `radius`
  };
  Kind kind = Kind::kKnn;
  std::string collection;
  FloatMatrix queries;
  int k = 10;        // kKnn, kKnnWithVectors
  float radius = 0;  // kRange
  SearchParams params;
  bool with_keys = false;  // kKnn: and the key of each neighbour (the Vald API's string ids)
  // A cluster: answer from the shards that can answer when some cannot (the reply names the
  // missing ones) instead of failing UNAVAILABLE. A single node has every shard.
  bool allow_partial = false;
};

struct SearchReply {
  SearchResult knn;                  // kKnn, kKnnWithVectors
  std::vector<FloatMatrix> vectors;  // kKnnWithVectors: per query, its neighbours' vectors
  RangeResult range;                 // kRange
  std::vector<std::string> keys;     // with_keys: per neighbour slot, "" for none
  // allow_partial: the shards that did not answer ("shard 2 of 'c': ..."); empty: complete.
  std::vector<std::string> missing_shards;
};

struct WriteRequest {
  enum class Op {
    kAdd,               // vectors, ids (empty: numbered by the index)
    kRemove,            // ids
    kReplace,           // ids[0] := vectors row 0
    kReset,             // empty the collection (an IDMap view: its own vectors)
    kPutKeyed,          // objects, mode, skip_strict (the Vald API)
    kRemoveKeyed,       // keys
    kRemoveKeyedWhere,  // conditions
    kStampKey,          // keys[0] stamped timestamp (older only with force)
  };
  Op op = Op::kAdd;
  std::string collection;
  FloatMatrix vectors;
  std::vector<int64_t> ids;
  std::vector<KeyedObject> objects;
  PutMode mode = PutMode::kInsert;
  bool skip_strict = false;
  std::vector<std::string> keys;
  std::vector<TimestampCondition> conditions;
  int64_t timestamp = 0;
  bool force = false;
};

struct WriteReply {
  int64_t count = 0;              // vectors added or removed by this call
  int64_t ntotal = 0;             // kAdd, kRemove: vectors in the collection after it
  std::vector<std::string> keys;  // kRemoveKeyedWhere: the keys removed
};

struct ReadRequest {
  enum class Op {
    kLayout,          // dimension, binary, metric (cheap: no index lock)
    kReconstruct,     // the vectors of ids
    kRange,           // vectors at positions [start, start + count) and their ids
    kParameter,       // parameter's value ("nprobe", "efSearch", "ntotal", ...)
    kTransforms,      // the vector transform chain
    kApplyTransform,  // vectors through the transform chain
    kGetKeyed,        // the object under keys[0]
    kKeyTimestamp,    // the timestamp of keys[0] (a cheap existence check)
    kListKeyed,       // up to `count` objects with ids after `start` (-1: from the start)
    kCountKeyed,      // objects with a key
    kKeysOf,          // the key of each of ids ("" for none)
  };
  Op op = Op::kLayout;
  std::string collection;
  std::vector<int64_t> ids;
  int64_t start = 0;
  int64_t count = 0;
  std::string parameter;
  FloatMatrix vectors;
  std::vector<std::string> keys;
};

struct ReadReply {
  VectorLayout layout;
  FloatMatrix vectors;       // kReconstruct, kRange, kApplyTransform
  std::vector<int64_t> ids;  // kRange; kListKeyed: each object's id
  int64_t ntotal = 0;        // kRange: vectors in the collection
  double value = 0;          // kParameter
  std::vector<TransformStep> transforms;
  std::vector<KeyedObject> objects;  // kGetKeyed (one), kListKeyed
  int64_t last_id = -1;              // kListKeyed: where the next page starts
  int64_t timestamp = 0;             // kKeyTimestamp
  int64_t count = 0;                 // kCountKeyed
  std::vector<std::string> keys;     // kKeysOf
};

struct MaintainRequest {
  enum class Op {
    kTrain,         // vectors
    kRecluster,     // n_clusters (0: as many lists as now), sample_ratio
    kMerge,         // sources into the collection
    kSetParameter,  // parameter := value
  };
  Op op = Op::kTrain;
  std::string collection;
  FloatMatrix vectors;
  int n_clusters = 0;
  double sample_ratio = 0.5;
  std::vector<std::string> sources;
  std::string parameter;
  double value = 0;
};

struct MaintainReply {
  CollectionInfo info;        // kTrain: the collection after it
  ReclusterResult recluster;  // kRecluster
  int64_t ntotal = 0;         // kMerge
};

struct ClusterRequest {
  FloatMatrix vectors;
  int n_clusters = 0;
  Metric metric = Metric::kL2;
  int niter = 25;
};

// A tenant's use of what its quotas bound, and the quotas (0: no limit).
struct TenantUsageReport {
  std::string tenant;
  TenantUse use;
  Quota quota;
};

struct UsageReply {
  TenantUsageReport caller;
  std::vector<TenantUsageReport> tenants;  // admin: every tenant's
};

class CollectionService {
 public:
  virtual ~CollectionService() = default;

  // The catalog. Creates, drops, lists and describes never wait for another collection's work.
  virtual void Create(const CallContext& call, CreateCollectionRequest request,
                      Completion<CollectionInfo> done) = 0;
  virtual void Drop(const CallContext& call, std::string collection, Completion<Empty> done) = 0;
  virtual void List(const CallContext& call, Completion<std::vector<CollectionInfo>> done) = 0;
  virtual void Describe(const CallContext& call, std::string collection,
                        Completion<CollectionInfo> done) = 0;

  // Data. Work on one collection runs in the order it was called.
  virtual void Search(const CallContext& call, SearchRequest request,
                      Completion<SearchReply> done) = 0;
  virtual void Write(const CallContext& call, WriteRequest request,
                     Completion<WriteReply> done) = 0;
  virtual void Read(const CallContext& call, ReadRequest request, Completion<ReadReply> done) = 0;
  // Long work on a collection (training, reclustering, merging) and its settings.
  virtual void Maintain(const CallContext& call, MaintainRequest request,
                        Completion<MaintainReply> done) = 0;

  // k-means over the request's vectors; touches no collection.
  virtual void Cluster(const CallContext& call, ClusterRequest request,
                       Completion<ClusteringResult> done) = 0;

  // A snapshot of the caller's collections (an admin's: every collection) to the data
  // directory; UNIMPLEMENTED without one.
  virtual void Snapshot(const CallContext& call, Completion<SnapshotReport> done) = 0;
  virtual void Usage(const CallContext& call, Completion<UsageReply> done) = 0;
};

}  // namespace vecgpu
