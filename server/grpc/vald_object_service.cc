// vald.v1 Object, Flush and Index, and core.v1.Agent, over the Engine's string-id API.
// vecgpu writes are searchable when acknowledged: nothing is ever uncommitted, so CreateIndex
// has nothing to do, and SaveIndex takes a snapshot of the data directory (--data-dir).
#include "server/grpc/queued.h"
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

StatusOr<KeyedObject> Get(const GrpcEnv& env, const CallScope& scope, const std::string& id) {
  if (id.empty()) return InvalidArgument("id: must not be empty");
  return env.engine->GetKeyed(scope.tenant, scope.collection, id);
}

std::string DistanceType(Metric m) { return m == Metric::kInnerProduct ? "ip" : "l2"; }

}  // namespace

Status CountOf(const GrpcEnv& env, const CallScope& scope, pb::Info::Index::Count* out) {
  out->Clear();
  auto info = env.engine->Describe(scope.tenant, scope.collection);
  if (!info.ok()) {
    return info.status().code() == StatusCode::kNotFound ? Status::Ok() : info.status();
  }
  int64_t stored = info->backend.ntotal;
  if (info->spec.id_map != IdMapKind::kNone) {
    ASSIGN_OR_RETURN(stored, env.engine->CountKeyed(scope.tenant, scope.collection));
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
  if (req->id().empty()) return ToGrpc(InvalidArgument("id: must not be empty"));
  auto t = env_.engine->KeyTimestamp(scope->tenant, scope->collection, req->id());
  if (!t.ok()) return ToGrpc(t.status());
  out->set_id(req->id());
  return grpc::Status::OK;
}

grpc::Status ValdObjectService::GetObject(ServerContext* c, const pb::Object::VectorRequest* req,
                                          pb::Object::Vector* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  auto o = Get(env_, *scope, req->id().id());
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
    auto o = Get(env_, *scope, req.id().id());
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
    int64_t last = -1;
    auto page = env_.engine->ListKeyed(scope->tenant, scope->collection, after, kListPage, &last);
    if (!page.ok()) {
      // An empty agent lists nothing.
      if (page.status().code() == StatusCode::kNotFound) return grpc::Status::OK;
      return ToGrpc(page.status());
    }
    for (const KeyedObject& o : *page) {
      pb::Object::List::Response out;
      SetVector(o, out.mutable_vector());
      if (!w->Write(out)) return grpc::Status::OK;
    }
    if (static_cast<int64_t>(page->size()) < kListPage || last <= after) break;
    after = last;
  }
  return grpc::Status::OK;
}

grpc::Status ValdObjectService::GetTimestamp(ServerContext* c,
                                             const pb::Object::TimestampRequest* req,
                                             pb::Object::Timestamp* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  if (req->id().id().empty()) return ToGrpc(InvalidArgument("id: must not be empty"));
  auto t = env_.engine->KeyTimestamp(scope->tenant, scope->collection, req->id().id());
  if (!t.ok()) return ToGrpc(t.status());
  out->set_id(req->id().id());
  out->set_timestamp(*t);
  return grpc::Status::OK;
}

grpc::Status ValdFlushService::Flush(ServerContext* c, const pb::Flush::Request*,
                                     pb::Info::Index::Count* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  Status st = QueuedStatus(env_, *c, scope->tenant, &scope->collection, WorkClass::kShort,
                           [&] { return env_.engine->Reset(scope->tenant, scope->collection); });
  if (!st.ok() && st.code() != StatusCode::kNotFound) return ToGrpc(st);
  return ToGrpc(CountOf(env_, *scope, out));
}

grpc::Status ValdIndexService::IndexInfo(ServerContext* c, const pb::Empty*,
                                         pb::Info::Index::Count* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  return ToGrpc(CountOf(env_, *scope, out));
}

grpc::Status ValdIndexService::IndexDetail(ServerContext* c, const pb::Empty*,
                                           pb::Info::Index::Detail* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  pb::Info::Index::Count count;
  if (Status st = CountOf(env_, *scope, &count); !st.ok()) return ToGrpc(st);
  (*out->mutable_counts())[env_.server_name] = count;
  out->set_replica(1);
  out->set_live_agents(1);
  return grpc::Status::OK;
}

grpc::Status ValdIndexService::IndexStatistics(ServerContext* c, const pb::Empty*,
                                               pb::Info::Index::Statistics* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  out->set_valid(env_.engine->Describe(scope->tenant, scope->collection).ok());
  return grpc::Status::OK;
}

grpc::Status ValdIndexService::IndexStatisticsDetail(ServerContext* c, const pb::Empty*,
                                                     pb::Info::Index::StatisticsDetail* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  (*out->mutable_details())[env_.server_name].set_valid(
      env_.engine->Describe(scope->tenant, scope->collection).ok());
  return grpc::Status::OK;
}

grpc::Status ValdIndexService::IndexProperty(ServerContext* c, const pb::Empty*,
                                             pb::Info::Index::PropertyDetail* out) {
  auto scope = ScopeOf(env_, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  auto info = env_.engine->Describe(scope->tenant, scope->collection);
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
  if (!env_.snapshot) return grpc::Status::OK;  // in memory only, as Vald's in-memory mode
  return ToGrpc(QueuedStatus(env_, *c, scope->tenant, nullptr, WorkClass::kLong, [&] {
    return env_.snapshot(scope->admin ? "" : scope->tenant).status();
  }));
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
  return ToGrpc(CountOf(env_, *scope, out));
}

}  // namespace vecgpu::server
