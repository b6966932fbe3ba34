#pragma once

#include <functional>
#include <string>

#include "core/metrics/server_metrics.h"
#include "core/service/collection_service.h"
#include "server/auth.h"

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too, and a system header's
// redefinition is not warned about.
#include <grpcpp/grpcpp.h>

#include "google/rpc/status.pb.h"

namespace vecgpu::server {

struct StreamResources;

// What every gRPC service shares: the collections (the service contract), the authenticator,
// the limits and the Vald defaults. Owned by GrpcServer; read-only once serving, so
// thread-safe.
struct GrpcEnv {
  CollectionService* service = nullptr;
  const Authenticator* auth = nullptr;
  Limits limits;
  // The collection of Vald calls without x-vecgpu-collection metadata.
  std::string default_collection = "default";
  // How Insert/Upsert create a missing collection (see ServeOptions::vald_*).
  int vald_dimension = 0;
  std::string vald_index_type = "Flat";
  std::string vald_metric = "L2";
  // A search's deadline when its Search.Config sets no timeout (0: none); every call's when
  // its client sets none.
  int request_timeout_ms = 0;
  // Object.Location.name: this server (its host name, or "vecgpu").
  std::string server_name = "vecgpu";
  // With metrics, every call is counted in vecgpu_requests_total{action = the method path,
  // tenant, outcome = "ok" or the gRPC code's name} and timed in
  // vecgpu_request_duration_seconds{action}. Must outlive the server.
  ServerMetrics* metrics = nullptr;
  // Per-tenant request rate and requests in flight (null: none). Must outlive the server.
  Quotas* quotas = nullptr;
  // The streams' threads and open-stream count (server/grpc/stream_reactor.h); set by
  // GrpcServer.
  StreamResources* streams = nullptr;
};

// Who a call is for and which collection it reaches: the tenant of its `authorization:
// Bearer <key>` metadata (Authenticator::TenantOf, as on ZeroMQ) and the collection named by
// `x-vecgpu-collection` metadata, else the Vald default.
struct CallScope {
  std::string tenant;
  bool admin = false;  // the key has the admin role (server-wide actions)
  // The call's place in its tenant's requests in flight, while the scope lives.
  std::shared_ptr<Quotas::Request> metered;
  std::string collection;
};
// With `meter`, the call counts against its tenant's request rate and requests in flight
// (ResourceExhausted naming the quota when over).
StatusOr<CallScope> ScopeOf(const GrpcEnv& env, const grpc::ServerContextBase& context,
                            bool meter = true);

// The one table from vecgpu's Status to the wire: core codes are numbered as gRPC's.
grpc::Status ToGrpc(const Status& status);
// The same, as the google.rpc.Status entry of a stream response.
google::rpc::Status ToRpcStatus(const Status& status);

// Creates the scope's collection if it does not exist (Vald's Insert/Upsert on an empty
// agent): --vald-dimension (0: `dim`, the first vector's length), --vald-index-type keyed
// (wrapped in an IDMap2 so that string ids work), --vald-metric; through the service, so it is
// scheduled and logged like any create.
class ServiceCall;
Status EnsureCollection(const GrpcEnv& env, ServiceCall& call, const CallScope& scope, int dim);

}  // namespace vecgpu::server
