// vald.v1 Object, Flush and Index, and core.v1.Agent, over the service contract's keyed reads.
// vecgpu writes are searchable when acknowledged: nothing is ever uncommitted, so CreateIndex
// has nothing to do, and SaveIndex takes a snapshot of the data directory (--data-dir).
#include "server/grpc/service_call.h"
#include "server/grpc/vald_services.h"

namespace vecgpu::server {
namespace {

// Objects per page of StreamListObject.
constexpr int64_t kListPage = 256;

void SetVector(const KeyedObject& o, pb::Object::Vector* out) {
  out->set_id(o.key);
  out->mutable_vector()->Assign(o.vector.begin(), o.vector.end());
  out->set_timestamp(o.timestamp);
}

ReadRequest ReadOf(const CallScope& scope, ReadRequest::Op op, std::string key = "") {
  ReadRequest r;
  r.op = op;
  r.collection = scope.collection;
  if (!key.empty()) r.keys.push_back(std::move(key));
  return r;
}

StatusOr<KeyedObject> Get(ServiceCall& call, const CallScope& scope, const std::string& id) {
  if (id.empty()) return InvalidArgument("id: must not be empty");
  ASSIGN_OR_RETURN(ReadReply r, call.Read(ReadOf(scope, ReadRequest::Op::kGetKeyed, id)));
  return std::move(r.objects.at(0));
}

StatusOr<int64_t> TimestampOf(ServiceCall& call, const CallScope& scope, const std::string& id) {
  if (id.empty()) return InvalidArgument("id: must not be empty");
  ASSIGN_OR_RETURN(ReadReply r, call.Read(ReadOf(scope, ReadRequest::Op::kKeyTimestamp, id)));
  return r.timestamp;
}

std::string DistanceType(Metric m) { return m == Metric::kInnerProduct ? "ip" : "l2"; }

}  // namespace

Status CountOf(ServiceCall& call, const CallScope& scope, pb::Info::Index::Count* out) {
  out->Clear();
  auto info = call.Describe(scope.collection);
  if (!info.ok()) {
    return info.status().code() == StatusCode::kNotFound ? Status::Ok() : info.status();
  }
  int64_t stored = info->backend.ntotal;
  if (info->spec.id_map != IdMapKind::kNone) {
    ASSIGN_OR_RETURN(ReadReply r, call.Read(ReadOf(scope, ReadRequest::Op::kCountKeyed)));
    stored = r.count;
  }
  out->set_stored(static_cast<uint32_t>(std::min<int64_t>(stored, UINT32_MAX)));
  out->set_uncommitted(0);
  out->set_indexing(false);
  out->set_saving(false);
  return Status::Ok();
}

grpc::Status ValdObjectService::Exists(ServerContext* c, const pb::Object::ID* req,
                                       pb::Object::ID* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  ServiceCall call(env_, *c, *scope);
  auto t = TimestampOf(call, *scope, req->id());
  if (!t.ok()) return ToGrpc(t.status());
  out->set_id(req->id());
  return grpc::Status::OK;
}

grpc::Status ValdObjectService::GetObject(ServerContext* c, const pb::Object::VectorRequest* req,
                                          pb::Object::Vector* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  ServiceCall call(env_, *c, *scope);
  auto o = Get(call, *scope, req->id().id());
  if (!o.ok()) return ToGrpc(o.status());
  SetVector(*o, out);
  return grpc::Status::OK;
}

grpc::Status ValdObjectService::StreamGetObject(
    ServerContext* c, BiDi<pb::Object::StreamVector, pb::Object::VectorRequest>* s) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  pb::Object::VectorRequest req;
  while (s->Read(&req)) {
    pb::Object::StreamVector out;
    ServiceCall call(env_, *c, *scope);
    auto o = Get(call, *scope, req.id().id());
    if (o.ok()) {
      SetVector(*o, out.mutable_vector());
    } else {
      *out.mutable_status() = ToRpcStatus(o.status());
    }
    if (!s->Write(out)) break;
  }
  return grpc::Status::OK;
}

grpc::Status ValdObjectService::StreamListObject(
    ServerContext* c, const pb::Object::List::Request*,
    grpc::ServerWriter<pb::Object::List::Response>* w) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  int64_t after = -1;
  while (!c->IsCancelled()) {
    ReadRequest list = ReadOf(*scope, ReadRequest::Op::kListKeyed);
    list.start = after;
    list.count = kListPage;
    auto page = ServiceCall(env_, *c, *scope).Read(std::move(list));
    if (!page.ok()) {
      // An empty agent lists nothing.
      if (page.status().code() == StatusCode::kNotFound) return grpc::Status::OK;
      return ToGrpc(page.status());
    }
    const int64_t last = page->last_id;
    for (const KeyedObject& o : page->objects) {
      pb::Object::List::Response out;
      SetVector(o, out.mutable_vector());
      if (!w->Write(out)) return grpc::Status::OK;
    }
    if (static_cast<int64_t>(page->objects.size()) < kListPage || last <= after) break;
    after = last;
  }
  return grpc::Status::OK;
}

grpc::Status ValdObjectService::GetTimestamp(ServerContext* c,
                                             const pb::Object::TimestampRequest* req,
                                             pb::Object::Timestamp* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  ServiceCall call(env_, *c, *scope);
  auto t = TimestampOf(call, *scope, req->id().id());
  if (!t.ok()) return ToGrpc(t.status());
  out->set_id(req->id().id());
  out->set_timestamp(*t);
  return grpc::Status::OK;
}

grpc::Status ValdFlushService::Flush(ServerContext* c, const pb::Flush::Request*,
                                     pb::Info::Index::Count* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  ServiceCall call(env_, *c, *scope);
  WriteRequest reset;
  reset.op = WriteRequest::Op::kReset;
  reset.collection = scope->collection;
  Status st = call.Write(std::move(reset)).status();
  if (!st.ok() && st.code() != StatusCode::kNotFound) return ToGrpc(st);
  return ToGrpc(CountOf(call, *scope, out));
}

grpc::Status ValdIndexService::IndexInfo(ServerContext* c, const pb::Empty*,
                                         pb::Info::Index::Count* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  ServiceCall call(env_, *c, *scope);
  return ToGrpc(CountOf(call, *scope, out));
}

grpc::Status ValdIndexService::IndexDetail(ServerContext* c, const pb::Empty*,
                                           pb::Info::Index::Detail* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  pb::Info::Index::Count count;
  ServiceCall call(env_, *c, *scope);
  if (Status st = CountOf(call, *scope, &count); !st.ok()) return ToGrpc(st);
  (*out->mutable_counts())[env_.server_name] = count;
  out->set_replica(1);
  out->set_live_agents(1);
  return grpc::Status::OK;
}

grpc::Status ValdIndexService::IndexStatistics(ServerContext* c, const pb::Empty*,
                                               pb::Info::Index::Statistics* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  out->set_valid(ServiceCall(env_, *c, *scope).Describe(scope->collection).ok());
  return grpc::Status::OK;
}

grpc::Status ValdIndexService::IndexStatisticsDetail(ServerContext* c, const pb::Empty*,
                                                     pb::Info::Index::StatisticsDetail* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  (*out->mutable_details())[env_.server_name].set_valid(
      ServiceCall(env_, *c, *scope).Describe(scope->collection).ok());
  return grpc::Status::OK;
}

grpc::Status ValdIndexService::IndexProperty(ServerContext* c, const pb::Empty*,
                                             pb::Info::Index::PropertyDetail* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  auto info = ServiceCall(env_, *c, *scope).Describe(scope->collection);
  if (!info.ok()) return ToGrpc(info.status());
  pb::Info::Index::Property& p = (*out->mutable_details())[env_.server_name];
  p.set_dimension(info->spec.dim);
  p.set_object_type(info->spec.binary ? "uint8" : "float");
  p.set_distance_type(info->spec.binary ? "hamming" : DistanceType(info->spec.metric));
  p.set_index_type(info->spec.factory);
  return grpc::Status::OK;
}

grpc::Status AgentService::CreateIndex(ServerContext* c, const pb::Control::CreateIndexRequest*,
                                       pb::Empty*) {
  auto scope = ScopeOf(env_, *c);
  return ToGrpc(scope.status());  // every write is indexed when acknowledged
}

grpc::Status AgentService::SaveIndex(ServerContext* c, const pb::Empty*, pb::Empty*) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  Status st = ServiceCall(env_, *c, *scope).Snapshot().status();
  // In memory only (no --data-dir): nothing to save, as Vald's in-memory mode.
  if (st.code() == StatusCode::kUnimplemented) return grpc::Status::OK;
  return ToGrpc(st);
}

grpc::Status AgentService::CreateAndSaveIndex(ServerContext* c,
                                              const pb::Control::CreateIndexRequest*,
                                              pb::Empty* out) {
  return SaveIndex(c, nullptr, out);
}

grpc::Status AgentService::IndexInfo(ServerContext* c, const pb::Empty*,
                                     pb::Info::Index::Count* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  ServiceCall call(env_, *c, *scope);
  return ToGrpc(CountOf(call, *scope, out));
}

}  // namespace vecgpu::server
