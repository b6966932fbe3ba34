#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "core/backend.h"
#include "core/id_map.h"
#include "core/util/thread_annotations.h"

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

// An index and the lock that guards it. Shared by a collection and the "IDMap:{base}"
// collections that wrap it, as FAISS's IndexIDMap shares its base index.
struct IndexStorage {
  explicit IndexStorage(std::unique_ptr<Backend> b) : backend(std::move(b)) {}
  mutable std::shared_mutex mu;
  // Replaced only by a rebuild (recluster_index), under mu held exclusively.
  std::unique_ptr<Backend> backend GUARDED_BY(mu);
};

// One tenant's named index: its spec, its storage and, for IDMap kinds, its id map. Owned
// through shared_ptr by the TenantRegistry and by in-flight requests, so a drop never pulls
// the index from under a running search.
//
// Thread-safe. Reads (searches, reconstructs) share the storage; writes (add, train, remove,
// reset) hold it alone, so a search issued after a write is acknowledged sees the write.
class Collection {
 public:
  Collection(std::string tenant, std::string name, IndexSpec spec,
             std::shared_ptr<IndexStorage> storage)
      : tenant_(std::move(tenant)),
        name_(std::move(name)),
        spec_(std::move(spec)),
        storage_(std::move(storage)),
        id_map_(spec_.id_map != IdMapKind::kNone ? std::make_unique<IdMap>() : nullptr) {}

  const std::string& tenant() const { return tenant_; }
  const std::string& name() const { return name_; }
  const IndexSpec& spec() const { return spec_; }
  const std::shared_ptr<IndexStorage>& storage() const { return storage_; }
  CollectionStats& stats() const { return stats_; }

  // Runs fn(const Backend&, const IdMap* or null) with shared access.
  template <typename F>
  auto Read(F&& fn) const {
    std::shared_lock lock(storage_->mu);
    return fn(static_cast<const Backend&>(*storage_->backend), id_map_.get());
  }

  // Runs fn(Backend&, IdMap* or null) with exclusive access.
  template <typename F>
  auto Write(F&& fn) {
    std::unique_lock lock(storage_->mu);
    return fn(*storage_->backend, id_map_.get());
  }

  // Runs fn(std::unique_ptr<Backend>&) with exclusive access, so fn may replace the backend
  // (for every collection sharing this storage) with a rebuilt one.
  template <typename F>
  auto Rebuild(F&& fn) {
    std::unique_lock lock(storage_->mu);
    return fn(storage_->backend);
  }

 private:
  const std::string tenant_;
  const std::string name_;
  const IndexSpec spec_;
  const std::shared_ptr<IndexStorage> storage_;
  const std::unique_ptr<IdMap> id_map_;  // GUARDED_BY(storage_->mu)
  mutable CollectionStats stats_;
};

}  // namespace vecgpu
