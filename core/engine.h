#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/backend.h"
#include "core/device/device_manager.h"
#include "core/device/placed_backend.h"
#include "core/metrics/server_metrics.h"
#include "core/mutation_log.h"
#include "core/options.h"
#include "core/quota/quotas.h"
#include "core/scheduler/scheduler.h"
#include "core/service/values.h"
#include "core/store/snapshot.h"
#include "core/tenant_registry.h"

namespace vecgpu {

// The one transport-neutral API every front end calls. It validates every argument against
// Limits (dimension, k, counts, finite values) before touching an index, and scopes every
// name to the caller's tenant. Thread-safe; calls block until done.
class Engine {
 public:
  // `factory` (and `metrics`, `scheduler` and `devices`, if set) must outlive the engine.
  // With a scheduler, operations can be queued per index storage (Submit*); the synchronous
  // methods below still work from any thread (they take the storage's lock). With `devices`,
  // every index is placed (core/device/placed_backend.h): its device copy is rebuilt by long
  // workers after writes that make it stale, and its queue follows it to its GPU's workers.
  Engine(const Limits& limits, BackendFactory& factory, ServerMetrics* metrics = nullptr,
         Scheduler* scheduler = nullptr, DeviceManager* devices = nullptr);

  // Runs `run` on the queue of collection `name` (its storage's queue, shared with the
  // IDMap views over it), in order with everything queued there, on a worker of class `cls`;
  // `expire` answers it instead when it cannot run (deadline passed). Without a scheduler
  // `run` runs at once. NotFound and busy come back before anything is queued.
  Status Submit(const std::string& tenant, const std::string& name, WorkClass cls,
                Clock::time_point deadline, std::function<void()> run,
                std::function<void(const Status&)> expire);
  // As Submit, for work bound to no collection (clustering, creating an index): a queue of
  // its own, served fairly among the tenant's other work.
  Status SubmitUnbound(const std::string& tenant, WorkClass cls, Clock::time_point deadline,
                       std::function<void()> run, std::function<void(const Status&)> expire);
  // A search, batched with the searches queued right behind it on the same collection with
  // the same parameters (one backend call; each request gets exactly its own rows and k).
  // Arguments are checked before queuing; `done` gets the result or the error.
  using SearchDone = std::function<void(StatusOr<SearchResult>)>;
  Status SubmitSearch(const std::string& tenant, const std::string& name, FloatMatrix queries,
                      int k, const SearchParams& params, Clock::time_point deadline,
                      SearchDone done);
  // An add, merged with the adds queued right behind it on the same collection into one
  // backend add (adds whose ids overlap are applied one after the other, so a later add of an
  // id still replaces an earlier one; adds that number their own labels are never merged).
  // Arguments are checked before queuing; `done` gets this add's count and the ntotal after.
  using AddDone = std::function<void(StatusOr<AddResult>)>;
  Status SubmitAdd(const std::string& tenant, const std::string& name, FloatMatrix x,
                   std::vector<int64_t> ids, WorkClass cls, Clock::time_point deadline,
                   AddDone done);

  StatusOr<CollectionInfo> Create(const std::string& tenant, const CreateCollectionRequest& req);
  Status Drop(const std::string& tenant, const std::string& name);
  // The tenant's collections as of their last completed write (never waits on a lock).
  std::vector<CollectionInfo> List(const std::string& tenant) const;
  StatusOr<CollectionInfo> Describe(const std::string& tenant, const std::string& name) const;
  // Cheap: no lock on the index.
  StatusOr<VectorLayout> Layout(const std::string& tenant, const std::string& name) const;

  // x: rows vectors of the collection's dimension; ids: empty or one per row.
  StatusOr<AddResult> Add(const std::string& tenant, const std::string& name, const FloatMatrix& x,
                          std::span<const int64_t> ids);
  StatusOr<CollectionInfo> Train(const std::string& tenant, const std::string& name,
                                 const FloatMatrix& x);
  // Returns the number of vectors removed.
  StatusOr<int64_t> Remove(const std::string& tenant, const std::string& name,
                           std::span<const int64_t> ids);
  // Replaces the vector stored under `id` (id-mapped collections).
  Status Replace(const std::string& tenant, const std::string& name, int64_t id,
                 const FloatMatrix& vector);
  // Empties the collection, keeping its type and training. On the collection that owns the
  // storage this empties the storage (and so every IDMap view over it); on an IDMap view it
  // removes the view's own vectors.
  Status Reset(const std::string& tenant, const std::string& name);

  StatusOr<SearchResult> Search(const std::string& tenant, const std::string& name,
                                const FloatMatrix& queries, int k,
                                const SearchParams& params) const;
  // Search, and the neighbours' stored vectors, atomically: no write lands in between.
  StatusOr<SearchAndReconstructResult> SearchAndReconstruct(const std::string& tenant,
                                                            const std::string& name,
                                                            const FloatMatrix& queries, int k,
                                                            const SearchParams& params) const;
  StatusOr<RangeResult> RangeSearch(const std::string& tenant, const std::string& name,
                                    const FloatMatrix& queries, float radius,
                                    const SearchParams& params) const;
  // One row per id, in order.
  StatusOr<FloatMatrix> Reconstruct(const std::string& tenant, const std::string& name,
                                    std::span<const int64_t> ids) const;
  // Vectors at storage positions [start, start + n), clipped to ntotal; their ids in `ids`.
  StatusOr<FloatMatrix> ReconstructRange(const std::string& tenant, const std::string& name,
                                         int64_t start, int64_t n,
                                         std::vector<int64_t>* ids = nullptr) const;

  Status SetParameter(const std::string& tenant, const std::string& name, std::string_view param,
                      double value);
  StatusOr<double> GetParameter(const std::string& tenant, const std::string& name,
                                std::string_view param) const;

  // Rebuilds an IVF collection's coarse clustering with `n_clusters` lists (0: as many as
  // now), trained on an even `sample_ratio` share of its vectors; every vector keeps its
  // label and id. Holds the collection's storage for the whole rebuild.
  StatusOr<ReclusterResult> Recluster(const std::string& tenant, const std::string& name,
                                      int n_clusters, double sample_ratio);

  // The collection's vector transform chain (empty when it has none).
  StatusOr<std::vector<TransformStep>> Transforms(const std::string& tenant,
                                                  const std::string& name) const;
  // x through the collection's transform chain.
  StatusOr<FloatMatrix> ApplyTransform(const std::string& tenant, const std::string& name,
                                       const FloatMatrix& x) const;

  // Adds copies of every source's vectors (with their ids) to `target`; returns its ntotal.
  // All or nothing: a source that cannot be merged leaves the target unchanged.
  StatusOr<int64_t> Merge(const std::string& tenant, const std::string& target,
                          const std::vector<std::string>& sources);

  // k-means over x; touches no collection.
  StatusOr<ClusteringResult> Cluster(const FloatMatrix& x, int n_clusters, Metric metric,
                                     int niter) const;

  // Collections and stored vectors per tenant, without waiting on any collection's lock (for
  // metrics). A storage shared by IDMap views counts once, for the tenant that owns it.
  struct TenantUsage {
    std::string tenant;
    int64_t collections = 0;
    int64_t vectors = 0;
  };
  std::vector<TenantUsage> Usage() const;
  // One tenant's collections, vectors and the estimated memory of its indexes (a storage
  // shared by IDMap views counts once), from the storages' caches: never waits on a lock.
  TenantUse UseOf(const std::string& tenant) const;

  // Storage quotas (collections, vectors, bytes) checked before a create or a write is
  // logged, so a refusal changes nothing and a replay never meets one. Null: none. Set once,
  // before serving; must outlive the engine.
  void set_quotas(const Quotas* quotas) { quotas_ = quotas; }

  const Limits& limits() const { return limits_; }

  // From now on every mutation is recorded in `log` before it is applied (null: none). Set
  // once, after recovery and before serving.
  void set_log(MutationLog* log) { log_ = log; }
  // Applies a logged mutation again (recovery), exactly as it ran: the same call with the same
  // arguments, so it meets the same state and makes the same change or the same refusal.
  // `seq`: the record's sequence number (a replayed create gives its storage that id). Call
  // before set_log, from one thread.
  Status Apply(const store::WalRecord& record, uint64_t seq = 0);
  // Replays a format-2 record (one that names its storage), checking its place in its
  // storage's own order: kSkipped when the storage's snapshot already holds it, when its
  // storage or its collection was dropped later, or when `failed_when_made` (a kFailed record
  // names it: it changed nothing then); kApplied or kRefused otherwise. DataLoss when records
  // of its storage are missing before it.
  enum class Replayed { kApplied, kRefused, kSkipped };
  StatusOr<Replayed> Replay(const store::WalRecord& record, uint64_t seq, bool failed_when_made);

  // Replication (core/engine_replication.cc). A collection's place in its storage's own
  // order: the storage_seq of the last record about it.
  StatusOr<uint64_t> LogPosition(const std::string& tenant, const std::string& name) const;
  // Applies a record another node's engine logged about a collection this one holds a copy
  // of (same tenant and name), as the collection's next record, logging it here first:
  // false when the copy has it already (a retry: storage_seq at or before its position) or
  // when it changes nothing (a kFailed record, a create of a copy that exists), true when
  // applied (or refused as the primary refused it). FAILED_PRECONDITION when records are
  // missing before it; NOT_FOUND when the copy does not exist. Calls about one collection
  // must come from one thread at a time, in order.
  StatusOr<bool> ApplyReplicated(const store::WalRecord& record);
  // A copy of the collection as it is now (its storage_seq its position), for a replica whose
  // gap no kept record covers. Takes the storage's write order for the copy of its index.
  StatusOr<store::StorageSnapshot> CaptureCopy(const std::string& tenant,
                                               const std::string& name) const;
  // Replaces this node's copy (if any) of snapshot.name with `snapshot` (CaptureCopy's on
  // another node), at the snapshot's position. Logged as a create (Import): the caller takes
  // a snapshot of the data directory before relying on it.
  Status InstallCopy(const std::string& tenant, store::StorageSnapshot snapshot);

  // String ids (the Vald API; core/engine_keys.cc), on collections with an id map: each key
  // names an id of the collection (core/key_table.h), so both protocols see the same vectors.
  //
  // Writes every object or none, after checking them all: INVALID_ARGUMENT for an empty or
  // too long key, a key given twice, or a vector of the wrong dimension; ALREADY_EXISTS for
  // an insert of a key that exists, or an update or upsert to the vector already stored
  // (both unless skip_strict, for all, or the object's own); NOT_FOUND for an update of a
  // missing key.
  Status PutKeyed(const std::string& tenant, const std::string& name,
                  std::vector<KeyedObject> objects, PutMode mode, bool skip_strict);
  // Removes every key or none (NOT_FOUND names the first missing one).
  Status RemoveKeyed(const std::string& tenant, const std::string& name,
                     const std::vector<std::string>& keys);
  // Removes the objects whose timestamps meet every condition; returns their keys.
  StatusOr<std::vector<std::string>> RemoveKeyedWhere(
      const std::string& tenant, const std::string& name,
      const std::vector<TimestampCondition>& conditions);
  // Restamps an object; an older timestamp than its own only with `force`.
  Status StampKey(const std::string& tenant, const std::string& name, const std::string& key,
                  int64_t timestamp, bool force);
  // The timestamp of the object stored under `key` (NOT_FOUND when there is none): a cheap
  // existence check.
  StatusOr<int64_t> KeyTimestamp(const std::string& tenant, const std::string& name,
                                 const std::string& key) const;
  // The object stored under `key` (its vector as the index reconstructs it).
  StatusOr<KeyedObject> GetKeyed(const std::string& tenant, const std::string& name,
                                 const std::string& key) const;
  // Up to `limit` objects with ids after `after_id` (-1: from the start), by ascending id
  // (each object's id in `ids`, when given).
  StatusOr<std::vector<KeyedObject>> ListKeyed(const std::string& tenant, const std::string& name,
                                               int64_t after_id, int64_t limit,
                                               int64_t* last_id,
                                               std::vector<int64_t>* ids = nullptr) const;
  // The key of each id ("" for an id without one, as vectors added by int64 id have).
  StatusOr<std::vector<std::string>> KeysOf(const std::string& tenant, const std::string& name,
                                            std::span<const int64_t> ids) const;
  // Objects with a key in the collection.
  StatusOr<int64_t> CountKeyed(const std::string& tenant, const std::string& name) const;

  // Snapshots (core/store; core/engine_snapshot.cc).
  //
  // The start of a snapshot: under the catalog lock (so no create or drop is between being
  // logged and registered), the log's last sequence number and every storage that holds
  // collections, each with its write order taken if it was free at once. A held storage's state
  // is exactly the log's up to last_seq and its names cannot change until the caller releases
  // it (CaptureHeld, ReleaseHeld), so images taken from held storages agree with one another.
  // The catalog is released before this returns: creates and drops wait only for the listing.
  struct Frozen {
    uint64_t last_seq = 0;
    uint64_t last_drop_seq = 0;  // the sequence number of the last drop, at most last_seq
    std::vector<std::shared_ptr<IndexStorage>> held;  // write order held for the caller
    std::vector<std::shared_ptr<IndexStorage>> busy;  // write order was held by a write
  };
  Frozen Freeze() const;
  // Tries for up to a quarter of a second to take a busy storage's write order; true when
  // taken (the caller then owns it, as for Frozen::held).
  static bool TakeBusy(IndexStorage& storage);
  // Releases a held storage's write order without capturing it.
  static void ReleaseHeld(IndexStorage& storage);
  // One storage as it is now, taken under its write order, so that it reflects exactly the
  // log records about its collections up to snapshot.seq (the log's last sequence number
  // then). Searches go on meanwhile; writes to it wait for the copy of its index.
  struct StorageImage {
    store::StorageSnapshot snapshot;
    uint64_t version = 0;  // IndexStorage's version: equal versions, equal contents
    bool changed = true;   // false: version == unchanged_since, and the index was not copied
    bool alive = true;     // false: no collection is bound to it any more
  };
  // Of a storage whose write order the caller holds (Freeze, TakeBusy); releases it.
  // `unchanged_since`: the version of the last image taken of it, if any.
  StatusOr<StorageImage> CaptureHeld(IndexStorage& storage,
                                     std::optional<uint64_t> unchanged_since) const;
  // Recreates a storage and its collections from a snapshot (recovery, before set_log; a
  // placed index is placed again and its device copy rebuilt from the host index). Returns
  // the storage's version after it.
  StatusOr<uint64_t> Restore(const store::StorageSnapshot& snapshot);
  // Adds a collection (with its views, per snapshot.names) whose index comes from elsewhere
  // (`vecgpu import-faissx`), as Restore does, under `tenant`; it is logged as its create once
  // it checks out, so the caller takes a snapshot to make its contents durable. AlreadyExists /
  // DataLoss / ... log and change nothing.
  StatusOr<CollectionInfo> Import(const std::string& tenant, store::StorageSnapshot snapshot);

 private:
  StatusOr<std::shared_ptr<Collection>> Find(const std::string& tenant,
                                             const std::string& name) const;
  Status ApplyRecord(const store::WalRecord& record);
  // The collection `name` if it has an id map (string ids need one).
  StatusOr<std::shared_ptr<Collection>> FindKeyed(const std::string& tenant,
                                                  const std::string& name) const;
  // Applies a put_keys record: keys[i] := x row i, stamped timestamps[i].
  // REQUIRES: c's write order held.
  Status PutKeysLocked(Collection& c, const std::vector<std::string>& keys, const FloatMatrix& x,
                       const std::vector<int64_t>& timestamps);
  // Applies a remove_keys record. REQUIRES: c's write order held.
  Status RemoveKeysLocked(Collection& c, const std::vector<std::string>& keys);
  // Restore; with `log_create`, it is called once the snapshot checks out, and its sequence
  // number becomes the storage's id (Import).
  StatusOr<uint64_t> RestoreLocked(const store::StorageSnapshot& snapshot,
                                   const std::function<StatusOr<uint64_t>()>& log_create = {})
      REQUIRES(catalog_mu_);
  Status CheckName(const std::string& name) const;
  // The tenant's storage quotas for a write adding `collections` and `vectors` rows to `c`
  // (null: a new collection). Ok while replaying the log or without quotas.
  Status CheckQuota(const std::string& tenant, const Collection* c, int64_t collections,
                    int64_t vectors) const;
  // ResourceExhausted when a k-means run of this shape passes Limits::max_work_cost.
  Status CheckWorkCost(const std::string& what, int64_t rows, int64_t clusters,
                       int64_t iterations, int64_t dim) const;
  // Checks k and the queries of a search on c.
  Status CheckSearch(const Collection& c, const FloatMatrix& queries, int k) const;
  // Adds x under ids through c's view (upserting on IDMap views: the new vectors are added
  // before the old ones are removed, so a failed add changes nothing).
  // REQUIRES: the collection's storage held exclusively.
  Status AddLocked(const Collection& c, Backend& b, LabelTable& t, const FloatMatrix& x,
                   std::span<const int64_t> ids);
  // Checks shape (cols == spec.dim, 1 <= rows <= max_rows), that every value is finite and,
  // for binary indexes, 0 or 1.
  Status CheckMatrix(const char* field, const FloatMatrix& x, const IndexSpec& spec,
                     int64_t max_rows) const;

  // Where a mutation went in the log: its sequence number (Apply's record without a log) and
  // its place in its storage's own order.
  struct Logged {
    uint64_t seq = 0;
    uint64_t storage_seq = 0;
  };
  // Records a mutation of `s` before it is applied, as the storage's next record, once
  // durable: `make` builds the record (called only when there is a log). Advances the
  // storage's order even without a log (replay). REQUIRES: s's write order held.
  StatusOr<Logged> LogFor(IndexStorage& s, const std::function<store::WalRecord()>& make) const;
  // After a logged mutation was applied: when it failed, logs a kFailed record for it, so that
  // replay skips it too (it changed nothing). Returns `result`.
  Status Outcome(IndexStorage& s, const Logged& l, const std::string& tenant,
                 const std::string& name, Status result) const;
  template <typename T>
  StatusOr<T> Outcome(IndexStorage& s, const Logged& l, const std::string& tenant,
                      const std::string& name, StatusOr<T> result) const {
    if (!result.ok()) (void)Outcome(s, l, tenant, name, result.status());
    return result;
  }
  // The storage named by `id` (the sequence number of its create), if it lives.
  std::shared_ptr<IndexStorage> StorageById(uint64_t id) const EXCLUDES(catalog_mu_);
  void RegisterStorage(const std::shared_ptr<IndexStorage>& s) REQUIRES(catalog_mu_);
  // A host backend rebuilt from `bytes` (Backend::Serialize), placed as MakeBackend places.
  StatusOr<std::unique_ptr<Backend>> LoadBackend(const IndexSpec& spec, std::string_view bytes,
                                                 int64_t next_label, const std::string& hint,
                                                 const std::string& who);
  StatusOr<std::unique_ptr<Backend>> Place(std::unique_ptr<Backend> host, const std::string& hint,
                                           const std::string& who);
  // Train and Recluster, with the artefact of a replayed record (null: live).
  StatusOr<CollectionInfo> TrainWith(const std::string& tenant, const std::string& name,
                                     const FloatMatrix& x, const std::string* artefact);
  StatusOr<ReclusterResult> ReclusterWith(const std::string& tenant, const std::string& name,
                                          int n_clusters, double sample_ratio,
                                          const std::string* artefact);
  // The last step of a merge: adds x under ids to dst (ids empty unless dst has an id map).
  // `owner` names the source of each id for messages (null in recovery).
  StatusOr<int64_t> MergeVectors(Collection& dst, const FloatMatrix& x,
                                 const std::vector<int64_t>& ids,
                                 const std::unordered_map<int64_t, std::string>* owner);
  static Status NotTrained(const std::string& name);
  // Refuses negative ids and ids given twice.
  static Status CheckIds(std::span<const int64_t> ids);
  // Queues `w` (runs it at once without a scheduler).
  Status Enqueue(const std::shared_ptr<Scheduler::Queue>& queue, Work w);
  // Records one backend search call of `rows` query rows serving `requests` requests.
  void ObserveBatch(int64_t rows, int64_t requests) const;
  struct Task;
  struct SearchTask;
  struct AddTask;
  // Runs searches of one collection with the same parameters as one backend call.
  void RunSearches(const std::vector<SearchTask*>& tasks) const;
  // Runs adds to one collection, merged where their ids allow.
  void RunAdds(const std::vector<AddTask*>& tasks);
  // A new storage for `backend`, with its scheduler queue.
  std::shared_ptr<IndexStorage> NewStorage(const std::string& tenant,
                                           std::unique_ptr<Backend> backend,
                                           IndexStorage::Origin origin);
  // A backend for `spec`, placed by the DeviceManager when there is one.
  StatusOr<std::unique_ptr<Backend>> MakeBackend(const IndexSpec& spec, const std::string& hint,
                                                 const std::string& who);
  // After a write to a placed index: points its queue at the device that serves it and
  // queues the rebuild of a stale device copy. REQUIRES: the storage held exclusively.
  void AfterWrite(const std::weak_ptr<IndexStorage>& storage, Backend& b);
  // Points the storage's queue at the device serving its searches now.
  void FollowDevice(const IndexStorage& storage, const Backend& b) const;
  // Whether a search of c for k results with `params` needs the host copy wherever c is
  // placed (beyond FAISS's GPU limits): then a CPU worker runs it, not a GPU worker.
  bool HostOnlySearch(const Collection& c, int k, const SearchParams& params) const;
  // Queues the rebuild of the placed index's device copy on a long worker, if it needs one.
  void QueueRefresh(const std::shared_ptr<IndexStorage>& storage,
                    const PlacedBackend& placed) const;
  // Searches of at most this many query rows x stored vectors may run on the decoding thread.
  static constexpr int64_t kInlineSearchWork = int64_t{1} << 20;

  const Limits limits_;
  BackendFactory& factory_;
  ServerMetrics* const metrics_;
  Scheduler* const scheduler_;
  DeviceManager* const devices_;
  MutationLog* log_ = nullptr;
  const Quotas* quotas_ = nullptr;
  std::atomic<bool> replaying_{false};  // Apply: records replay as they ran, quotas unchecked
  std::atomic<uint64_t> last_drop_seq_{0};  // Frozen::last_drop_seq
  uint64_t replay_seq_ = 0;  // Apply's record, as LogMutation's answer without a log
  // Held by creates and drops from logging to registering, and by Storages.
  mutable Mutex catalog_mu_;
  // Storages by id (Replay); expired entries are swept as it grows.
  std::unordered_map<uint64_t, std::weak_ptr<IndexStorage>> storages_by_id_
      GUARDED_BY(catalog_mu_);
  size_t storages_swept_at_ GUARDED_BY(catalog_mu_) = 64;
  TenantRegistry registry_;
};

}  // namespace vecgpu
