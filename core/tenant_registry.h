#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/collection.h"
#include "core/util/mutex.h"
#include "core/util/status.h"

namespace vecgpu {

// (tenant, collection name) -> Collection. Names are per tenant: two tenants may both own
// "docs", and nothing here lets one tenant reach another's collection.
// Thread-safe.
class TenantRegistry {
 public:
  explicit TenantRegistry(int max_collections_per_tenant)
      : max_per_tenant_(max_collections_per_tenant) {}

  // AlreadyExists if the tenant already has `name`; ResourceExhausted past the per-tenant cap.
  Status Insert(std::shared_ptr<Collection> collection);
  // What Insert of tenant/name would say now, without inserting.
  Status CheckInsert(const std::string& tenant, const std::string& name) const;
  // NotFound if the tenant has no collection `name`.
  StatusOr<std::shared_ptr<Collection>> Get(const std::string& tenant,
                                            const std::string& name) const;
  // Removes and returns the collection; in-flight requests keep their handle.
  StatusOr<std::shared_ptr<Collection>> Remove(const std::string& tenant, const std::string& name);
  // The tenant's collections, ordered by name.
  std::vector<std::shared_ptr<Collection>> List(const std::string& tenant) const;
  // All collections of all tenants (for metrics and snapshots), ordered by tenant and name.
  std::vector<std::shared_ptr<Collection>> All() const;
  size_t size() const;

 private:
  using Key = std::pair<std::string, std::string>;
  Status CheckInsertLocked(const std::string& tenant, const std::string& name) const
      REQUIRES_SHARED(mu_);
  const int max_per_tenant_;
  mutable SharedMutex mu_;
  std::map<Key, std::shared_ptr<Collection>> collections_ GUARDED_BY(mu_);
  std::map<std::string, int> per_tenant_ GUARDED_BY(mu_);
};

}  // namespace vecgpu
