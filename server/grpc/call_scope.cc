#include "server/grpc/call_scope.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "server/grpc/service_call.h"

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

namespace {

// The deadline of a gRPC call on the scheduler's clock: the soonest of `own`, the client's
// and env.request_timeout_ms from now (0: none).
Clock::time_point DeadlineOf(const GrpcEnv& env, const grpc::ServerContextBase& c,
                             Clock::time_point own) {
  const auto client = c.deadline();
  Clock::time_point d = own;
  if (client != std::chrono::system_clock::time_point::max()) {
    const auto left = client - std::chrono::system_clock::now();
    d = std::min(d, Clock::now() + std::chrono::duration_cast<Clock::duration>(left));
  }
  if (env.request_timeout_ms > 0 && own == Clock::time_point::max()) {
    d = std::min(d, Clock::now() + std::chrono::milliseconds(env.request_timeout_ms));
  }
  return d;
}

}  // namespace

ServiceCall::ServiceCall(const GrpcEnv& env, const grpc::ServerContextBase& context,
                         const CallScope& scope, Clock::time_point deadline)
    : env_(env), context_(context) {
  call_.tenant = scope.tenant;
  call_.admin = scope.admin;
  call_.deadline = DeadlineOf(env, context, deadline);
  call_.cancelled = std::make_shared<std::atomic<bool>>(false);
}

StatusOr<CollectionInfo> ServiceCall::Create(CreateCollectionRequest request) {
  return Await<CollectionInfo>([&](const CallContext& c, Completion<CollectionInfo> done) {
    env_.service->Create(c, std::move(request), std::move(done));
  });
}

Status ServiceCall::Drop(std::string collection) {
  return Await<Empty>([&](const CallContext& c, Completion<Empty> done) {
           env_.service->Drop(c, std::move(collection), std::move(done));
         })
      .status();
}

StatusOr<std::vector<CollectionInfo>> ServiceCall::List() {
  return Await<std::vector<CollectionInfo>>(
      [&](const CallContext& c, Completion<std::vector<CollectionInfo>> done) {
        env_.service->List(c, std::move(done));
      });
}

StatusOr<CollectionInfo> ServiceCall::Describe(std::string collection) {
  return Await<CollectionInfo>([&](const CallContext& c, Completion<CollectionInfo> done) {
    env_.service->Describe(c, std::move(collection), std::move(done));
  });
}

StatusOr<SearchReply> ServiceCall::Search(SearchRequest request) {
  return Await<SearchReply>([&](const CallContext& c, Completion<SearchReply> done) {
    env_.service->Search(c, std::move(request), std::move(done));
  });
}

StatusOr<WriteReply> ServiceCall::Write(WriteRequest request) {
  return Await<WriteReply>([&](const CallContext& c, Completion<WriteReply> done) {
    env_.service->Write(c, std::move(request), std::move(done));
  });
}

StatusOr<ReadReply> ServiceCall::Read(ReadRequest request) {
  return Await<ReadReply>([&](const CallContext& c, Completion<ReadReply> done) {
    env_.service->Read(c, std::move(request), std::move(done));
  });
}

StatusOr<SnapshotReport> ServiceCall::Snapshot() {
  return Await<SnapshotReport>([&](const CallContext& c, Completion<SnapshotReport> done) {
    env_.service->Snapshot(c, std::move(done));
  });
}

Status EnsureCollection(const GrpcEnv& env, ServiceCall& call, const CallScope& scope, int dim) {
  ReadRequest layout;
  layout.op = ReadRequest::Op::kLayout;
  layout.collection = scope.collection;
  auto found = call.Read(std::move(layout));
  if (found.ok() || found.status().code() != StatusCode::kNotFound) return found.status();
  CreateCollectionRequest req;
  req.name = scope.collection;
  req.dim = env.vald_dimension > 0 ? env.vald_dimension : dim;
  if (req.dim < 1 || req.dim > env.limits.max_dimension) {
    return InvalidArgument("vector: dimension " + std::to_string(dim) + " is not within 1.." +
                           std::to_string(env.limits.max_dimension));
  }
  req.index_type = env.vald_index_type;
  req.metric = env.vald_metric;
  req.keyed = true;
  auto created = call.Create(std::move(req));
  // Two first inserts racing: the loser finds the winner's collection.
  if (!created.ok() && created.status().code() != StatusCode::kAlreadyExists) {
    return created.status().WithContext("creating collection '" + scope.collection + "'");
  }
  return Status::Ok();
}

}  // namespace vecgpu::server
