// vald.v1 Insert, Update, Upsert and Remove over the service's keyed writes. A unary call
// is a Multi call of one; a stream answers each request with its location or its error (as a
// google.rpc.Status entry) and goes on; a Multi call writes every object or none.
#include <chrono>
#include <string>
#include <type_traits>
#include <vector>

#include "server/grpc/service_call.h"
#include "server/grpc/vald_services.h"

namespace vecgpu::server {
namespace {

void SetLocation(const GrpcEnv& env, const std::string& id, pb::Object::Location* out) {
  out->set_name(env.server_name);
  out->set_uuid(id);
  out->clear_ips();
}

// Writes `reqs` (Insert/Update/Upsert.Request) as one all-or-nothing PutKeyed, each with its
// own skip_strict_exist_check.
template <typename Request>
Status Put(const GrpcEnv& env, const grpc::ServerContextBase& c, const CallScope& scope,
           const std::vector<const Request*>& reqs, PutMode mode, pb::Object::Locations* out) {
  if (reqs.empty()) return InvalidArgument("requests: no object given");
  // PutMulti checks --max-add-vectors before it gathers `reqs`; the others put one object.
  for (const Request* r : reqs) {
    if (r->vector().vector().empty()) {
      return InvalidArgument("vector of id '" + r->vector().id() + "': empty");
    }
    if (r->config().timestamp() < 0) {
      return InvalidArgument("config.timestamp: negative");
    }
  }
  ServiceCall call(env, c, scope);
  if (mode != PutMode::kUpdate) {
    RETURN_IF_ERROR(
        EnsureCollection(env, call, scope, static_cast<int>(reqs[0]->vector().vector_size())));
  }
  WriteRequest put;
  put.op = WriteRequest::Op::kPutKeyed;
  put.collection = scope.collection;
  put.mode = mode;
  put.objects.reserve(reqs.size());
  for (const Request* r : reqs) {
    const auto& v = r->vector().vector();
    put.objects.push_back({r->vector().id(), std::vector<float>(v.begin(), v.end()),
                           r->config().timestamp(), r->config().skip_strict_exist_check()});
  }
  // On the collection's queue, in order with its other writes and searches (FAISSx's too).
  RETURN_IF_ERROR(call.Write(std::move(put)).status());
  for (const Request* r : reqs) SetLocation(env, r->vector().id(), out->add_locations());
  return Status::Ok();
}

template <typename Request>
grpc::Status PutOne(const GrpcEnv& env, ServerContext* c, const Request& req, PutMode mode,
                    pb::Object::Location* out) {
  auto scope = ScopeOf(env, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  pb::Object::Locations locs;
  Status st = Put<Request>(env, *c, *scope, {&req}, mode, &locs);
  if (st.ok()) *out = locs.locations(0);
  return ToGrpc(st);
}

template <typename MultiRequest>
grpc::Status PutMulti(const GrpcEnv& env, ServerContext* c, const MultiRequest& req, PutMode mode,
                      pb::Object::Locations* out) {
  auto scope = ScopeOf(env, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  if (req.requests_size() > env.limits.max_add_vectors) {
    return ToGrpc(InvalidArgument("requests: " + std::to_string(req.requests_size()) +
                                  " objects, above the limit of " +
                                  std::to_string(env.limits.max_add_vectors) + " per call"));
  }
  std::vector<const std::remove_cvref_t<decltype(req.requests(0))>*> reqs;
  for (const auto& r : req.requests()) reqs.push_back(&r);
  return ToGrpc(Put(env, *c, *scope, reqs, mode, out));
}

// One request of a write stream, answered with its location or its error (and the stream goes
// on).
template <typename Request>
pb::Object::StreamLocation StreamAnswer(const Status& st, const pb::Object::Locations& locs) {
  pb::Object::StreamLocation resp;
  if (st.ok()) {
    *resp.mutable_location() = locs.locations(0);
  } else {
    *resp.mutable_status() = ToRpcStatus(st);
  }
  return resp;
}

pb::Object::StreamLocation StreamError(const Status& st) {
  pb::Object::StreamLocation resp;
  *resp.mutable_status() = ToRpcStatus(st);
  return resp;
}

// Stream writes: one request at a time per stream, in order (a stream's writes must apply in
// the order sent), on the stream threads.
constexpr size_t kWriteStreamInFlight = 1;

template <typename Request>
Stream<Request, pb::Object::StreamLocation>* PutStream(const GrpcEnv& env,
                                                        CallbackServerContext* c, PutMode mode) {
  auto scope = ScopeOf(env, *c);
  using Reactor = StreamReactor<Request, pb::Object::StreamLocation>;
  return new Reactor(
      *env.streams, scope.status(), kWriteStreamInFlight,
      [&env, c, scope, mode](Request req, const std::shared_ptr<std::atomic<bool>>&,
                             typename Reactor::Answer answer) {
        pb::Object::Locations locs;
        Status st = Put<Request>(env, *c, *scope, {&req}, mode, &locs);
        answer(StreamAnswer<Request>(st, locs));
      },
      StreamError);
}

Status RemoveIds(const GrpcEnv& env, const grpc::ServerContextBase& c, const CallScope& scope,
                 const std::vector<std::string>& ids, pb::Object::Locations* out) {
  if (ids.empty()) return InvalidArgument("requests: no id given");
  // MultiRemove checks --max-add-vectors before it copies the ids; the others remove one.
  for (const std::string& id : ids) {
    if (id.empty()) return InvalidArgument("id: must not be empty");
  }
  WriteRequest remove;
  remove.op = WriteRequest::Op::kRemoveKeyed;
  remove.collection = scope.collection;
  remove.keys = ids;
  RETURN_IF_ERROR(ServiceCall(env, c, scope).Write(std::move(remove)).status());
  for (const std::string& id : ids) SetLocation(env, id, out->add_locations());
  return Status::Ok();
}

}  // namespace

grpc::Status ValdInsertService::Insert(ServerContext* c, const pb::Insert::Request* req,
                                       pb::Object::Location* out) {
  return PutOne(env_, c, *req, PutMode::kInsert, out);
}
Stream<pb::Insert::Request, pb::Object::StreamLocation>* ValdInsertService::StreamInsert(
    CallbackServerContext* c) {
  return PutStream<pb::Insert::Request>(env_, c, PutMode::kInsert);
}
grpc::Status ValdInsertService::MultiInsert(ServerContext* c, const pb::Insert::MultiRequest* req,
                                            pb::Object::Locations* out) {
  return PutMulti(env_, c, *req, PutMode::kInsert, out);
}

grpc::Status ValdUpdateService::Update(ServerContext* c, const pb::Update::Request* req,
                                       pb::Object::Location* out) {
  return PutOne(env_, c, *req, PutMode::kUpdate, out);
}
Stream<pb::Update::Request, pb::Object::StreamLocation>* ValdUpdateService::StreamUpdate(
    CallbackServerContext* c) {
  return PutStream<pb::Update::Request>(env_, c, PutMode::kUpdate);
}
grpc::Status ValdUpdateService::MultiUpdate(ServerContext* c, const pb::Update::MultiRequest* req,
                                            pb::Object::Locations* out) {
  return PutMulti(env_, c, *req, PutMode::kUpdate, out);
}
grpc::Status ValdUpdateService::UpdateTimestamp(ServerContext* c,
                                                const pb::Update::TimestampRequest* req,
                                                pb::Object::Location* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  if (req->id().empty()) return ToGrpc(InvalidArgument("id: must not be empty"));
  if (req->timestamp() < 0) return ToGrpc(InvalidArgument("timestamp: negative"));
  int64_t ts = req->timestamp();
  if (ts == 0) {
    ts = std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
             .count();
  }
  WriteRequest stamp;
  stamp.op = WriteRequest::Op::kStampKey;
  stamp.collection = scope->collection;
  stamp.keys = {req->id()};
  stamp.timestamp = ts;
  stamp.force = req->force();
  Status st = ServiceCall(env_, *c, *scope).Write(std::move(stamp)).status();
  if (st.ok()) SetLocation(env_, req->id(), out);
  return ToGrpc(st);
}

grpc::Status ValdUpsertService::Upsert(ServerContext* c, const pb::Upsert::Request* req,
                                       pb::Object::Location* out) {
  return PutOne(env_, c, *req, PutMode::kUpsert, out);
}
Stream<pb::Upsert::Request, pb::Object::StreamLocation>* ValdUpsertService::StreamUpsert(
    CallbackServerContext* c) {
  return PutStream<pb::Upsert::Request>(env_, c, PutMode::kUpsert);
}
grpc::Status ValdUpsertService::MultiUpsert(ServerContext* c, const pb::Upsert::MultiRequest* req,
                                            pb::Object::Locations* out) {
  return PutMulti(env_, c, *req, PutMode::kUpsert, out);
}

grpc::Status ValdRemoveService::Remove(ServerContext* c, const pb::Remove::Request* req,
                                       pb::Object::Location* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  pb::Object::Locations locs;
  Status st = RemoveIds(env_, *c, *scope, {req->id().id()}, &locs);
  if (st.ok()) *out = locs.locations(0);
  return ToGrpc(st);
}

grpc::Status ValdRemoveService::RemoveByTimestamp(ServerContext* c,
                                                  const pb::Remove::TimestampRequest* req,
                                                  pb::Object::Locations* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  if (req->timestamps().empty()) {
    return ToGrpc(InvalidArgument("timestamps: no condition given"));
  }
  WriteRequest where;
  where.op = WriteRequest::Op::kRemoveKeyedWhere;
  where.collection = scope->collection;
  for (const auto& t : req->timestamps()) {
    if (t.operator_() < pb::Remove::Timestamp::Eq || t.operator_() > pb::Remove::Timestamp::Lt) {
      return ToGrpc(InvalidArgument("timestamps: unknown operator " +
                                    std::to_string(static_cast<int>(t.operator_()))));
    }
    // Vald's operator numbers (Eq..Lt) are TimestampCondition's.
    where.conditions.push_back({static_cast<TimestampCondition::Op>(t.operator_()), t.timestamp()});
  }
  auto removed = ServiceCall(env_, *c, *scope).Write(std::move(where));
  if (!removed.ok()) return ToGrpc(removed.status());
  if (removed->keys.empty()) return ToGrpc(NotFound("no object matches the timestamps"));
  for (const std::string& id : removed->keys) SetLocation(env_, id, out->add_locations());
  return grpc::Status::OK;
}

Stream<pb::Remove::Request, pb::Object::StreamLocation>* ValdRemoveService::StreamRemove(
    CallbackServerContext* c) {
  auto scope = ScopeOf(env_, *c);
  using Reactor = StreamReactor<pb::Remove::Request, pb::Object::StreamLocation>;
  const GrpcEnv& env = env_;
  return new Reactor(
      *env.streams, scope.status(), kWriteStreamInFlight,
      [&env, c, scope](pb::Remove::Request req, const std::shared_ptr<std::atomic<bool>>&,
                       Reactor::Answer answer) {
        pb::Object::Locations locs;
        Status st = RemoveIds(env, *c, *scope, {req.id().id()}, &locs);
        answer(StreamAnswer<pb::Remove::Request>(st, locs));
      },
      StreamError);
}

grpc::Status ValdRemoveService::MultiRemove(ServerContext* c, const pb::Remove::MultiRequest* req,
                                            pb::Object::Locations* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  if (req->requests_size() > env_.limits.max_add_vectors) {
    return ToGrpc(InvalidArgument("requests: " + std::to_string(req->requests_size()) +
                                  " ids, above the limit of " +
                                  std::to_string(env_.limits.max_add_vectors) + " per call"));
  }
  std::vector<std::string> ids;
  for (const auto& r : req->requests()) ids.push_back(r.id().id());
  return ToGrpc(RemoveIds(env_, *c, *scope, ids, out));
}

}  // namespace vecgpu::server
