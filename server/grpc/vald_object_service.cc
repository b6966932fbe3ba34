// vald.v1 Object, Flush and Index, and core.v1.Agent, over the service contract's keyed reads.
// vecgpu writes are searchable when acknowledged: nothing is ever uncommitted, so CreateIndex
// has nothing to do, and SaveIndex takes a snapshot of the data directory (--data-dir).
#include "server/grpc/service_call.h"
#include "server/grpc/vald_services.h"

namespace vecgpu::server {
namespace {

// Objects per page of StreamListObject.
constexpr int64_t kListPage = 256;
// Requests of one StreamGetObject in the service at once.
constexpr size_t kGetStreamInFlight = 16;

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

Stream<pb::Object::VectorRequest, pb::Object::StreamVector>* ValdObjectService::StreamGetObject(
    CallbackServerContext* c) {
  auto scope = ScopeOf(env_, *c);
  using Reactor = StreamReactor<pb::Object::VectorRequest, pb::Object::StreamVector>;
  auto error = [](const Status& st) {
    pb::Object::StreamVector out;
    *out.mutable_status() = ToRpcStatus(st);
    return out;
  };
  const GrpcEnv& env = env_;
  return new Reactor(
      *env.streams, scope.status(), kGetStreamInFlight,
      [&env, c, scope, error](pb::Object::VectorRequest req,
                              const std::shared_ptr<std::atomic<bool>>&, Reactor::Answer answer) {
        ServiceCall call(env, *c, *scope);
        auto o = Get(call, *scope, req.id().id());
        if (!o.ok()) return answer(error(o.status()));
        pb::Object::StreamVector out;
        SetVector(*o, out.mutable_vector());
        answer(std::move(out));
      },
      error);
}

namespace {

// StreamListObject on the callback API: pages of kListPage objects read through the service
// on the stream threads, written one by one; no thread waits for the client.
class ListReactor final : public grpc::ServerWriteReactor<pb::Object::List::Response> {
 public:
  ListReactor(const GrpcEnv& env, CallbackServerContext* c)
      : env_(env), c_(c), slot_(*env.streams), scope_(ScopeOf(env, *c)) {
    if (Status st = slot_.status(); !st.ok()) {
      Finish(ToGrpc(st));
    } else if (!scope_.ok()) {
      Finish(ToGrpc(scope_.status()));
    } else {
      NextPage();
    }
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(grpc::Status::OK);  // the client is gone
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  void NextPage() {
    if (!env_.streams->run([this] { ReadPage(); })) {
      Finish(ToGrpc(ResourceExhausted("grpc: the stream threads' queue is full; retry later")));
    }
  }
  // On a stream thread.
  void ReadPage() {
    ReadRequest list;
    list.op = ReadRequest::Op::kListKeyed;
    list.collection = scope_->collection;
    list.start = after_;
    list.count = kListPage;
    auto page = ServiceCall(env_, *c_, *scope_).Read(std::move(list));
    if (!page.ok()) {
      // An empty agent lists nothing.
      if (page.status().code() == StatusCode::kNotFound) return Finish(grpc::Status::OK);
      return Finish(ToGrpc(page.status()));
    }
    last_page_ = static_cast<int64_t>(page->objects.size()) < kListPage || page->last_id <= after_;
    after_ = page->last_id;
    page_ = std::move(page->objects);
    next_ = 0;
    WriteNext();
  }
  void WriteNext() {
    if (next_ < page_.size()) {
      out_.Clear();
      SetVector(page_[next_++], out_.mutable_vector());
      return StartWrite(&out_);
    }
    if (last_page_) return Finish(grpc::Status::OK);
    NextPage();
  }

  const GrpcEnv& env_;
  CallbackServerContext* const c_;
  StreamSlot slot_;
  const StatusOr<CallScope> scope_;
  int64_t after_ = -1;
  bool last_page_ = false;
  std::vector<KeyedObject> page_;
  size_t next_ = 0;
  pb::Object::List::Response out_;
};

}  // namespace

grpc::ServerWriteReactor<pb::Object::List::Response>* ValdObjectService::StreamListObject(
    CallbackServerContext* c, const pb::Object::List::Request*) {
  return new ListReactor(env_, c);
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
