#include "core/tenant_registry.h"

namespace vecgpu {
namespace {

Status NoSuchIndex(const std::string& name) { return NotFound("index '" + name + "' not found"); }

}  // namespace

Status TenantRegistry::CheckInsertLocked(const std::string& tenant, const std::string& name) const {
  if (collections_.count(Key{tenant, name})) {
    return AlreadyExists("index '" + name + "' already exists");
  }
  auto it = per_tenant_.find(tenant);
  if (it != per_tenant_.end() && it->second >= max_per_tenant_) {
    return ResourceExhausted("tenant already owns " + std::to_string(it->second) +
                             " indexes, the limit (max_collections_per_tenant)");
  }
  return Status::Ok();
}

Status TenantRegistry::CheckInsert(const std::string& tenant, const std::string& name) const {
  ReaderLock lock(mu_);
  return CheckInsertLocked(tenant, name);
}

Status TenantRegistry::Insert(std::shared_ptr<Collection> collection) {
  WriterLock lock(mu_);
  Key key{collection->tenant(), collection->name()};
  RETURN_IF_ERROR(CheckInsertLocked(key.first, key.second));
  ++per_tenant_[key.first];
  collections_.emplace(std::move(key), std::move(collection));
  return Status::Ok();
}

StatusOr<std::shared_ptr<Collection>> TenantRegistry::Get(const std::string& tenant,
                                                          const std::string& name) const {
  ReaderLock lock(mu_);
  auto it = collections_.find(Key{tenant, name});
  if (it == collections_.end()) return NoSuchIndex(name);
  return it->second;
}

StatusOr<std::shared_ptr<Collection>> TenantRegistry::Remove(const std::string& tenant,
                                                             const std::string& name) {
  WriterLock lock(mu_);
  auto it = collections_.find(Key{tenant, name});
  if (it == collections_.end()) return NoSuchIndex(name);
  auto collection = std::move(it->second);
  collections_.erase(it);
  if (--per_tenant_[tenant] == 0) per_tenant_.erase(tenant);
  return collection;
}

std::vector<std::shared_ptr<Collection>> TenantRegistry::List(const std::string& tenant) const {
  ReaderLock lock(mu_);
  std::vector<std::shared_ptr<Collection>> out;
  for (auto it = collections_.lower_bound(Key{tenant, ""});
       it != collections_.end() && it->first.first == tenant; ++it) {
    out.push_back(it->second);
  }
  return out;
}

std::vector<std::shared_ptr<Collection>> TenantRegistry::All() const {
  ReaderLock lock(mu_);
  std::vector<std::shared_ptr<Collection>> out;
  out.reserve(collections_.size());
  for (const auto& [key, c] : collections_) out.push_back(c);
  return out;
}

size_t TenantRegistry::size() const {
  ReaderLock lock(mu_);
  return collections_.size();
}

}  // namespace vecgpu
