#pragma once

#include <map>
#include <optional>
#include <string>

#include "core/util/status.h"

namespace vecgpu::server {

using AuthKeys = std::map<std::string, std::string>;  // API key -> tenant

// "key1:tenant1,key2:tenant2" -> keys. InvalidArgument on an empty key or tenant.
StatusOr<AuthKeys> ParseAuthKeys(const std::string& spec);
// A JSON object {"key": "tenant", ...}.
StatusOr<AuthKeys> LoadAuthFile(const std::string& path);

// Decides the tenant of each request. Immutable after construction; thread-safe.
class Authenticator {
 public:
  // With `enabled`, an empty key table is an error: auth without keys would be an open door.
  static StatusOr<Authenticator> Create(bool enabled, AuthKeys keys);

  bool enabled() const { return enabled_; }
  // With auth: the key's tenant; a tenant_id, if given, must be that tenant. Without auth: the
  // tenant_id if given, else "default". Errors are Unauthenticated / PermissionDenied with
  // FAISSx's messages ("API key required", "Invalid API key", "Invalid tenant ID").
  StatusOr<std::string> TenantOf(const std::optional<std::string>& api_key,
                                 const std::optional<std::string>& tenant_id) const;

 private:
  Authenticator(bool enabled, AuthKeys keys) : enabled_(enabled), keys_(std::move(keys)) {}
  bool enabled_;
  AuthKeys keys_;
};

}  // namespace vecgpu::server
