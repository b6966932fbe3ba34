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

StatusOr<AuthKeys> LoadAuthFile(const std::string& path) {
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
  for (auto& [key, tenant] : j.items()) {
    if (key.empty() || !tenant.is_string() || tenant.get<std::string>().empty()) {
      return InvalidArgument("auth-file: every entry must map a key to a non-empty tenant name");
    }
    keys[key] = tenant.get<std::string>();
  }
  return keys;
}

StatusOr<Authenticator> Authenticator::Create(bool enabled, AuthKeys keys) {
  if (enabled && keys.empty()) {
    return InvalidArgument(
        "enable-auth: authentication is enabled but no API keys are "
        "configured (use --auth-keys or --auth-file)");
  }
  return Authenticator(enabled, std::move(keys));
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

}  // namespace vecgpu::server
