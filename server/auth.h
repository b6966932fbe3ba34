#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>

#include "core/quota/quotas.h"
#include "core/util/status.h"

namespace vecgpu::server {

using AuthKeys = std::map<std::string, std::string>;  // API key -> tenant
using AdminKeys = std::set<std::string>;               // keys with the admin role

// Who a request comes from: its tenant, and whether its key has the admin role (server-wide
// actions: a snapshot of every tenant, every tenant's usage). Without auth every caller is an
// admin: the server has no boundary to keep.
struct Principal {
  std::string tenant;
  bool admin = false;
};

// "key1:tenant1,key2:tenant2" -> keys. InvalidArgument on an empty key or tenant.
StatusOr<AuthKeys> ParseAuthKeys(const std::string& spec);
// A JSON object {"key": "tenant", "key2": {"tenant": "ops", "role": "admin"}, ...}: a value is
// a tenant name, or an object with the tenant and a role ("tenant", the default, or "admin").
// Admin keys are added to `admins` (if given). An object may also carry the tenant's "quota":
// {"max_vectors", "max_bytes", "max_collections", "requests_per_second", "max_inflight"}
// (numbers; absent: the server's default; 0: no limit), added to `quotas` (if given) over `defaults`.
StatusOr<AuthKeys> LoadAuthFile(const std::string& path, AdminKeys* admins = nullptr,
                                std::map<std::string, Quota>* quotas = nullptr,
                                const Quota& defaults = {});

// Decides the tenant of each request. Immutable after construction; thread-safe.
class Authenticator {
 public:
  // With `enabled`, an empty key table is an error: auth without keys would be an open door.
  static StatusOr<Authenticator> Create(bool enabled, AuthKeys keys, AdminKeys admins = {});

  bool enabled() const { return enabled_; }
  // With auth: the key's tenant; a tenant_id, if given, must be that tenant. Without auth: the
  // tenant_id if given, else "default". Errors are Unauthenticated / PermissionDenied with
  // FAISSx's messages ("API key required", "Invalid API key", "Invalid tenant ID").
  StatusOr<std::string> TenantOf(const std::optional<std::string>& api_key,
                                 const std::optional<std::string>& tenant_id) const;
  // TenantOf, with the key's role.
  StatusOr<Principal> Authenticate(const std::optional<std::string>& api_key,
                                   const std::optional<std::string>& tenant_id) const;

 private:
  Authenticator(bool enabled, AuthKeys keys, AdminKeys admins)
      : enabled_(enabled), keys_(std::move(keys)), admins_(std::move(admins)) {}
  bool enabled_;
  AuthKeys keys_;
  AdminKeys admins_;
};

}  // namespace vecgpu::server
