#include "server/grpc/call_scope.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "core/index_spec.h"
#include "server/grpc/queued.h"

namespace vecgpu::server {
namespace {

std::optional<std::string> Metadata(const grpc::ServerContextBase& context, std::string_view key) {
  const auto& md = context.client_metadata();
  auto it = md.find(grpc::string_ref(key.data(), key.size()));
  if (it == md.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

StatusOr<CallScope> ScopeOf(const GrpcEnv& env, const grpc::ServerContextBase& context,
                            bool meter) {
  std::optional<std::string> key;
  // Without auth every call is the default tenant's, whatever it sends (as on ZeroMQ).
  if (auto header = env.auth->enabled() ? Metadata(context, "authorization") : std::nullopt) {
    constexpr std::string_view kBearer = "bearer ";
    std::string prefix = header->substr(0, kBearer.size());
    std::transform(prefix.begin(), prefix.end(), prefix.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (prefix != kBearer) {
      return Unauthenticated("authorization: expected \"Bearer <API key>\"");
    }
    key = header->substr(kBearer.size());
    if (static_cast<int64_t>(key->size()) > env.limits.max_api_key_length) {
      return Unauthenticated("Invalid API key");
    }
  }
  CallScope scope;
  ASSIGN_OR_RETURN(Principal who, env.auth->Authenticate(key, std::nullopt));
  scope.tenant = std::move(who.tenant);
  scope.admin = who.admin;
  if (meter && env.quotas) {
    ASSIGN_OR_RETURN(scope.metered, env.quotas->Start(scope.tenant));
  }
  scope.collection = Metadata(context, "x-vecgpu-collection").value_or(env.default_collection);
  if (scope.collection.empty()) {
    return InvalidArgument("x-vecgpu-collection: must not be empty");
  }
  return scope;
}

grpc::Status ToGrpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

google::rpc::Status ToRpcStatus(const Status& status) {
  google::rpc::Status out;
  out.set_code(static_cast<int32_t>(status.code()));
  out.set_message(status.message());
  return out;
}

Status EnsureCollection(const GrpcEnv& env, const grpc::ServerContextBase& context,
                        const CallScope& scope, int dim) {
  auto layout = env.engine->Layout(scope.tenant, scope.collection);
  if (layout.ok() || layout.status().code() != StatusCode::kNotFound) return layout.status();
  CreateCollectionRequest req;
  req.name = scope.collection;
  req.dim = env.vald_dimension > 0 ? env.vald_dimension : dim;
  if (req.dim < 1 || req.dim > env.limits.max_dimension) {
    return InvalidArgument("vector: dimension " + std::to_string(dim) + " is not within 1.." +
                           std::to_string(env.limits.max_dimension));
  }
  ASSIGN_OR_RETURN(IndexSpec spec, ParseIndexType(env.vald_index_type, req.dim, env.vald_metric));
  if (spec.id_map != IdMapKind::kNone) {
    req.index_type = env.vald_index_type;
  } else {
    // FAISSx names ("HNSW32", "IVF100") become their factory string under an id map.
    req.index_type = "IDMap2," + spec.factory;
  }
  req.metric = std::string(MetricName(spec.metric));
  auto created = Queued<CollectionInfo>(env, context, scope.tenant, nullptr, WorkClass::kShort,
                                        [&env, &scope, req] {
                                          return env.engine->Create(scope.tenant, req);
                                        });
  // Two first inserts racing: the loser finds the winner's collection.
  if (!created.ok() && created.status().code() != StatusCode::kAlreadyExists) {
    return created.status().WithContext("creating collection '" + scope.collection + "'");
  }
  return Status::Ok();
}

}  // namespace vecgpu::server
