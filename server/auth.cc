#include "server/auth.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace vecgpu::server {

StatusOr<AuthKeys> ParseAuthKeys(const std::string& spec) {
  AuthKeys keys;
  std::stringstream ss(spec);
  std::string pair;
  while (std::getline(ss, pair, ',')) {
    if (pair.empty()) continue;
    auto colon = pair.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == pair.size()) {
      return InvalidArgument("auth-keys: entry '" + pair + "' is not key:tenant");
    }
    keys[pair.substr(0, colon)] = pair.substr(colon + 1);
  }
  return keys;
}

namespace {
// The "quota" object of an auth-file entry, over the server's defaults.
StatusOr<Quota> ParseQuota(const nlohmann::json& j, const std::string& tenant, Quota q) {
  if (!j.is_object()) return InvalidArgument("auth-file: tenant '" + tenant + "': quota must be an object");
  for (auto& [field, v] : j.items()) {
    if (!v.is_number() || v.get<double>() < 0) {
      return InvalidArgument("auth-file: tenant '" + tenant + "': quota " + field +
                             " must be a number of at least 0");
    }
    const double x = v.get<double>();
    if (field == "max_vectors") {
      q.max_vectors = static_cast<int64_t>(x);
    } else if (field == "max_bytes") {
      q.max_bytes = static_cast<int64_t>(x);
    } else if (field == "max_collections") {
      q.max_collections = static_cast<int64_t>(x);
    } else if (field == "requests_per_second") {
      q.requests_per_second = x;
    } else if (field == "max_inflight") {
      q.max_inflight = static_cast<int64_t>(x);
    } else {
      return InvalidArgument("auth-file: tenant '" + tenant + "': unknown quota '" + field +
                             "' (max_vectors, max_bytes, max_collections, requests_per_second, "
                             "max_inflight)");
    }
  }
  return q;
}
}  // namespace

StatusOr<AuthKeys> LoadAuthFile(const std::string& path, AdminKeys* admins,
                                std::map<std::string, Quota>* quotas, const Quota& defaults) {
  std::ifstream in(path);
  if (!in) return InvalidArgument("auth-file: cannot read '" + path + "'");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    return InvalidArgument("auth-file: '" + path + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument("auth-file: must hold a JSON object {key: tenant}");
  AuthKeys keys;
  for (auto& [key, value] : j.items()) {
    nlohmann::json tenant = value;
    std::string role = "tenant";
    if (value.is_object()) {
      tenant = value.contains("tenant") ? value["tenant"] : nlohmann::json();
      if (value.contains("role")) {
        if (!value["role"].is_string()) {
          return InvalidArgument("auth-file: a key's role must be \"tenant\" or \"admin\"");
        }
        role = value["role"].get<std::string>();
      }
      if (role != "tenant" && role != "admin") {
        return InvalidArgument("auth-file: role '" + role + "' is not \"tenant\" or \"admin\"");
      }
      for (auto& [field, unused] : value.items()) {
        if (field != "tenant" && field != "role" && field != "quota") {
          return InvalidArgument("auth-file: unknown field '" + field +
                                 "' (tenant, role, quota)");
        }
      }
    }
    if (key.empty() || !tenant.is_string() || tenant.get<std::string>().empty()) {
      return InvalidArgument("auth-file: every entry must map a key to a non-empty tenant name");
    }
    keys[key] = tenant.get<std::string>();
    if (role == "admin" && admins) admins->insert(key);
    if (value.is_object() && value.contains("quota") && quotas) {
      const std::string t = tenant.get<std::string>();
      ASSIGN_OR_RETURN(Quota q, ParseQuota(value["quota"], t, defaults));
      auto [it, fresh] = quotas->emplace(t, q);
      if (!fresh) {
        return InvalidArgument("auth-file: tenant '" + t + "' has a quota on more than one key");
      }
    }
  }
  return keys;
}

StatusOr<Authenticator> Authenticator::Create(bool enabled, AuthKeys keys, AdminKeys admins) {
  if (enabled && keys.empty()) {
    return InvalidArgument(
        "enable-auth: authentication is enabled but no API keys are "
        "configured (use --auth-keys or --auth-file)");
  }
  for (const std::string& k : admins) {
    if (!keys.count(k)) return InvalidArgument("auth: an admin key is not among the API keys");
  }
  return Authenticator(enabled, std::move(keys), std::move(admins));
}

StatusOr<std::string> Authenticator::TenantOf(const std::optional<std::string>& api_key,
                                              const std::optional<std::string>& tenant_id) const {
  if (!enabled_) return tenant_id.value_or("default");
  if (!api_key || api_key->empty()) return Unauthenticated("API key required");
  auto it = keys_.find(*api_key);
  if (it == keys_.end()) return Unauthenticated("Invalid API key");
  if (tenant_id && *tenant_id != it->second) return PermissionDenied("Invalid tenant ID");
  return it->second;
}

StatusOr<Principal> Authenticator::Authenticate(
    const std::optional<std::string>& api_key, const std::optional<std::string>& tenant_id) const {
  ASSIGN_OR_RETURN(std::string tenant, TenantOf(api_key, tenant_id));
  return Principal{std::move(tenant), !enabled_ || admins_.count(*api_key) > 0};
}

}  // namespace vecgpu::server
