#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/key_table.h"
#include "core/label_table.h"
#include "core/scheduler/scheduler.h"
#include "core/util/mutex.h"

namespace vecgpu {

// Counters of one collection, readable while it serves.
struct CollectionStats {
  std::atomic<int64_t> searches{0};       // search requests
  std::atomic<int64_t> queries{0};        // query vectors searched
  std::atomic<int64_t> adds{0};           // add requests
  std::atomic<int64_t> vectors_added{0};  // vectors added
  std::atomic<int64_t> removals{0};       // vectors removed
  std::atomic<int64_t> search_micros{0};  // time spent in backend searches
};

// A collection over this storage: the one that created it (view 0, unless it was created
// with an id map) and each "IDMap:{base}" view.
struct StorageName {
  std::string name;
  std::string index_type;  // as created
  LabelTable::View view = LabelTable::kBaseView;
  bool operator==(const StorageName&) const = default;
};
// The creating collection's request, for snapshots and restores.
struct StorageOrigin {
  uint64_t id = 0;  // the log sequence number of its create record (0: not logged)
  std::string tenant;
  std::string name;
  std::string index_type;
  int dim = 0;
  std::string metric;
  std::string device;
};

// An index, the table of who owns each of its vectors, and the lock that guards both. Shared
// by the collection that created it and the "IDMap:{base}" collections that are views over it,
// as FAISS's IndexIDMap shares its base index.
//
// For durability (core/store): every mutation of the storage is logged and applied while its
// write order is held, so the storage's state always reflects exactly the log records about
// it that precede whatever the log appends next; a snapshot taken under the write order is a
// point in the log.
class IndexStorage {
 public:
  using Name = StorageName;
  using Origin = StorageOrigin;

  explicit IndexStorage(std::unique_ptr<Backend> b, Origin origin = Origin())
      : origin_(std::move(origin)), backend_(std::move(b)) {
    Cache();
  }

  const Origin& origin() const { return origin_; }
  // Set once, after the create record is logged and before the storage is shared.
  void set_id(uint64_t id) { origin_.id = id; }

  // Held from logging a mutation of this storage until it is applied (Engine).
  Mutex& write_order() { return order_mu_; }

  // The sequence number of the last create or drop that bound a name to this storage or
  // unbound one (its own create first; 0 for one restored from a snapshot). Set with the
  // write order held (Engine::Create, Drop); read by Store::Snapshot.
  uint64_t names_seq() const { return names_seq_.load(); }
  void set_names_seq(uint64_t seq) { names_seq_.store(seq); }

  // How many log records are about this storage (its create the first): the storage's own
  // sequence (WalRecord::storage_seq). Advanced with the write order held as each record is
  // logged (or replayed); captured in its snapshot.
  uint64_t log_seq() const { return log_seq_.load(); }
  void set_log_seq(uint64_t seq) { log_seq_.store(seq); }

  // Binds a collection name to this storage; a view gets a new id namespace (never reused,
  // even after its collection is dropped).
  LabelTable::View AddName(std::string name, std::string index_type, bool view) {
    WriterLock lock(mu_);
    Name n{std::move(name), std::move(index_type),
           view ? labels_.NewView() : LabelTable::kBaseView};
    names_.push_back(n);
    ++version_;
    return n.view;
  }
  // Unbinds a dropped collection (its vectors stay, as FAISS's base keeps a dropped wrapper's;
  // its string ids go).
  void RemoveName(const std::string& name) {
    WriterLock lock(mu_);
    for (const Name& n : names_) {
      if (n.name == name && n.view != LabelTable::kBaseView) keys_.Clear(n.view);
    }
    std::erase_if(names_, [&](const Name& n) { return n.name == name; });
    ++version_;
  }
  // Restores the names, label table and string ids of a snapshot (before it is shared).
  void RestoreNames(std::vector<Name> names, LabelTable labels, KeyTable keys) {
    WriterLock lock(mu_);
    names_ = std::move(names);
    labels_ = std::move(labels);
    keys_ = std::move(keys);
    Cache();
  }

  // Runs fn(const Backend&, const LabelTable&, const KeyTable&, const std::vector<Name>&,
  // uint64_t version) with shared access: the whole state, for snapshots. `version` changes
  // with every write.
  template <typename F>
  auto Inspect(F&& fn) const {
    ReaderLock lock(mu_);
    return fn(static_cast<const Backend&>(*backend_), static_cast<const LabelTable&>(labels_),
              static_cast<const KeyTable&>(keys_), static_cast<const std::vector<Name>&>(names_),
              version_);
  }

  // Vectors stored, as of the last completed write (for metrics: never waits on the lock).
  int64_t vectors() const EXCLUDES(cache_mu_) {
    MutexLock lock(cache_mu_);
    return cached_total_;
  }

  // The backend's info and each view's vector count as of the last completed write, for
  // listings that must not wait behind a long write. Lock-free for the storage lock.
  BackendInfo CachedInfo(LabelTable::View view) const EXCLUDES(cache_mu_) {
    MutexLock lock(cache_mu_);
    BackendInfo info = cached_info_;
    auto it = cached_counts_.find(view);
    info.ntotal = view == LabelTable::kBaseView ? cached_total_
                                                : (it == cached_counts_.end() ? 0 : it->second);
    return info;
  }

  // The scheduler queue of this storage (shared by its IDMap views); null without a scheduler.
  std::shared_ptr<Scheduler::Queue> queue;
  // Runs after every write, with the storage held exclusively (the Engine's: brings the
  // device copy of a placed index up to date). Set before the storage is shared.
  std::function<void(Backend&)> on_write;

  // Runs fn(const Backend&) with shared access, then re-reads the cached info (for listings)
  // under the same hold: for a change that is not a write, such as a device copy becoming
  // current, so that listings follow it at once.
  template <typename F>
  void ReadBackendAndRecache(F&& fn) {
    ReaderLock lock(mu_);
    fn(static_cast<const Backend&>(*backend_));
    Cache();  // reads only: shared access is enough
  }

  // Runs fn(const Backend&) with shared access (for work that reads the whole index, such as
  // building its device copy, while searches go on).
  template <typename F>
  auto ReadBackend(F&& fn) const {
    ReaderLock lock(mu_);
    return fn(static_cast<const Backend&>(*backend_));
  }

 private:
  friend class Collection;
  // REQUIRES: mu_ held (shared is enough).
  void Cache() EXCLUDES(cache_mu_) NO_THREAD_SAFETY_ANALYSIS {
    const int64_t total = labels_.size();
    MutexLock lock(cache_mu_);
    cached_info_ = backend_->Info();
    cached_total_ = total;
    cached_counts_.clear();
    for (LabelTable::View v = 1; v < labels_.next_view(); ++v) {
      if (int64_t n = labels_.CountOf(v); n > 0) cached_counts_[v] = n;
    }
  }

  mutable Mutex cache_mu_;
  BackendInfo cached_info_ GUARDED_BY(cache_mu_);
  int64_t cached_total_ GUARDED_BY(cache_mu_) = 0;
  std::map<LabelTable::View, int64_t> cached_counts_ GUARDED_BY(cache_mu_);
  Origin origin_;
  std::atomic<uint64_t> names_seq_{0};
  std::atomic<uint64_t> log_seq_{0};
  Mutex order_mu_;
  mutable SharedMutex mu_;
  // Replaced only by a rebuild (recluster_index), under mu_ held exclusively.
  std::unique_ptr<Backend> backend_ GUARDED_BY(mu_);
  LabelTable labels_ GUARDED_BY(mu_);
  KeyTable keys_ GUARDED_BY(mu_);
  std::vector<Name> names_ GUARDED_BY(mu_);
  uint64_t version_ GUARDED_BY(mu_) = 0;
};

// One tenant's named index: its spec, its storage and its view of that storage (the base view
// for the collection that created the storage, its own view for an IDMap collection). Owned
// through shared_ptr by the TenantRegistry and by in-flight requests, so a drop never pulls
// the index from under a running search.
//
// Thread-safe. Reads (searches, reconstructs) share the storage; writes (add, train, remove,
// reset) hold it alone, so a search issued after a write is acknowledged sees the write.
class Collection {
 public:
  // `view`: LabelTable::kBaseView for a collection over its own storage without an id map,
  // else a view made by storage->NewView().
  Collection(std::string tenant, std::string name, IndexSpec spec,
             std::shared_ptr<IndexStorage> storage, LabelTable::View view)
      : tenant_(std::move(tenant)),
        name_(std::move(name)),
        spec_(std::move(spec)),
        storage_(std::move(storage)),
        view_(view) {}

  const std::string& tenant() const { return tenant_; }
  const std::string& name() const { return name_; }
  const IndexSpec& spec() const { return spec_; }
  const std::shared_ptr<IndexStorage>& storage() const { return storage_; }
  LabelTable::View view() const { return view_; }
  bool has_ids() const { return view_ != LabelTable::kBaseView; }
  CollectionStats& stats() const { return stats_; }

  // Runs fn(const Backend&, const LabelTable&) with shared access.
  template <typename F>
  auto Read(F&& fn) const {
    ReaderLock lock(storage_->mu_);
    return fn(static_cast<const Backend&>(*storage_->backend_),
              static_cast<const LabelTable&>(storage_->labels_));
  }

  // Runs fn(Backend&, LabelTable&) with exclusive access.
  template <typename F>
  auto Write(F&& fn) {
    WriterLock lock(storage_->mu_);
    auto result = fn(*storage_->backend_, storage_->labels_);
    ++storage_->version_;
    if (storage_->on_write) storage_->on_write(*storage_->backend_);
    storage_->Cache();
    return result;
  }

  // Read and Write with the storage's string ids too (the Vald API).
  template <typename F>
  auto ReadKeyed(F&& fn) const {
    ReaderLock lock(storage_->mu_);
    return fn(static_cast<const Backend&>(*storage_->backend_),
              static_cast<const LabelTable&>(storage_->labels_),
              static_cast<const KeyTable&>(storage_->keys_));
  }
  template <typename F>
  auto WriteKeyed(F&& fn) {
    WriterLock lock(storage_->mu_);
    auto result = fn(*storage_->backend_, storage_->labels_, storage_->keys_);
    ++storage_->version_;
    if (storage_->on_write) storage_->on_write(*storage_->backend_);
    storage_->Cache();
    return result;
  }

  // Runs fn(std::unique_ptr<Backend>&, LabelTable&) with exclusive access, so fn may replace
  // the backend (for every collection sharing this storage) with a rebuilt one.
  template <typename F>
  auto Rebuild(F&& fn) {
    WriterLock lock(storage_->mu_);
    auto result = fn(storage_->backend_, storage_->labels_);
    ++storage_->version_;
    if (storage_->on_write) storage_->on_write(*storage_->backend_);
    storage_->Cache();
    return result;
  }

 private:
  const std::string tenant_;
  const std::string name_;
  const IndexSpec spec_;
  const std::shared_ptr<IndexStorage> storage_;
  const LabelTable::View view_;
  mutable CollectionStats stats_;
};

}  // namespace vecgpu
