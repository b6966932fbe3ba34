#include "cluster/agent/agent_server.h"

#include "cluster/agent/agent_codec.h"

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too.
#include <grpcpp/grpcpp.h>

#include "vecgpu/agent/v1/agent.grpc.pb.h"

namespace vecgpu::cluster {
namespace {

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());  // same numbering
}

void ToPb(const Empty&, apb::Empty*) {}
void ToPb(const std::vector<CollectionInfo>& list, apb::CollectionList* out) {
  for (const CollectionInfo& i : list) cluster::ToPb(i, out->add_collections());
}
using cluster::ToPb;

// A unary call's reactor whose client going away (a cancelled or expired call) sets the
// contract call's cancellation flag: the work stops at its next cancellation point.
class Reactor final : public grpc::ServerUnaryReactor {
 public:
  const std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  void OnCancel() override { cancelled->store(true); }
  void OnDone() override { delete this; }
};

// Decodes the call's context, starts the contract call, and finishes the RPC from its
// completion (on whichever thread completes it).
template <typename Reply, typename PbOut, typename Start>
grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext*, const apb::Context& context,
                                PbOut* out, Start start) {
  auto* reactor = new Reactor;
  StatusOr<CallContext> call = FromPb(context);
  if (!call.ok()) {
    reactor->Finish(ToGrpc(call.status()));
    return reactor;
  }
  call->cancelled = reactor->cancelled;
  try {
    start(*call, Completion<Reply>([reactor, out](StatusOr<Reply> r) {
      if (!r.ok()) return reactor->Finish(ToGrpc(r.status()));
      ToPb(*r, out);
      reactor->Finish(grpc::Status::OK);
    }));
  } catch (const std::bad_alloc&) {
    reactor->Finish(ToGrpc(ResourceExhausted("out of memory while serving the request")));
  }
  return reactor;
}

// A request that failed to decode.
grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* c, const Status& st) {
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  reactor->Finish(ToGrpc(st));
  return reactor;
}

}  // namespace

struct AgentServer::Impl final : public apb::Agent::CallbackService {
  Impl(CollectionService& s, ReplicaSink* r) : service(s), replicator(r) {}
  CollectionService& service;
  ReplicaSink* replicator;

  // Applied here, in order (the primary sends one request at a time per replica).
  grpc::ServerUnaryReactor* Replicate(grpc::CallbackServerContext* c,
                                      const apb::ReplicateRequest* r,
                                      apb::ReplicateReply* out) override {
    return ToReplica(c, r->api_version(), out, [&] {
      std::vector<std::string> records(r->records().begin(), r->records().end());
      return replicator->Apply(r->tenant(), r->collection(), r->primary(), r->epoch(), records);
    });
  }
  grpc::ServerUnaryReactor* Install(grpc::CallbackServerContext* c, const apb::InstallRequest* r,
                                    apb::ReplicateReply* out) override {
    return ToReplica(c, r->api_version(), out, [&] {
      return replicator->Install(r->tenant(), r->collection(), r->primary(), r->epoch(),
                                 r->offset(), r->total(), r->snapshot());
    });
  }
  // A backup's calls (cluster/cli/cluster_backup.h): a copy out, a copy in on a primary.
  grpc::ServerUnaryReactor* Export(grpc::CallbackServerContext* c, const apb::ExportRequest* r,
                                   apb::ExportReply* out) override {
    grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
    if (Status st = Admit(r->api_version()); !st.ok()) {
      reactor->Finish(ToGrpc(st));
      return reactor;
    }
    StatusOr<ExportedCopy> copy = replicator->Export(r->tenant(), r->collection());
    if (copy.ok()) {
      out->set_snapshot(std::move(copy->snapshot));
      out->set_position(copy->position);
    }
    reactor->Finish(ToGrpc(copy.status()));
    return reactor;
  }
  grpc::ServerUnaryReactor* Restore(grpc::CallbackServerContext* c, const apb::RestoreRequest* r,
                                    apb::ReplicateReply* out) override {
    return ToReplica(c, r->api_version(), out, [&] {
      return replicator->Restore(r->tenant(), r->collection(), r->primary(), r->epoch(),
                                 r->snapshot());
    });
  }
  // Whether this agent takes replication and backup calls of `api_version`.
  Status Admit(int32_t api_version) const {
    if (!replicator) return FailedPrecondition("this agent does not replicate");
    if (api_version != kAgentApiVersion) {
      return FailedPrecondition("agent API version " + std::to_string(api_version) +
                                " is not this agent's (" + std::to_string(kAgentApiVersion) + ")");
    }
    return Status::Ok();
  }
  // A primary's call to this replica: checked, run, answered with the copy's position.
  template <typename Run>
  grpc::ServerUnaryReactor* ToReplica(grpc::CallbackServerContext* c, int32_t api_version,
                                      apb::ReplicateReply* out, Run run) {
    grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
    if (Status st = Admit(api_version); !st.ok()) {
      reactor->Finish(ToGrpc(st));
      return reactor;
    }
    StatusOr<ReplicaPosition> position = run();
    if (position.ok()) {
      out->set_position(position->position);
      out->set_digest(position->digest);
    }
    reactor->Finish(ToGrpc(position.status()));
    return reactor;
  }

  grpc::ServerUnaryReactor* Create(grpc::CallbackServerContext* c, const apb::CreateRequest* r,
                                   apb::CollectionInfo* out) override {
    return Serve<CollectionInfo>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Create(call, FromPb(*r), std::move(done));
    });
  }
  grpc::ServerUnaryReactor* Drop(grpc::CallbackServerContext* c, const apb::NameRequest* r,
                                 apb::Empty* out) override {
    return Serve<Empty>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Drop(call, r->collection(), std::move(done));
    });
  }
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* c, const apb::ContextRequest* r,
                                 apb::CollectionList* out) override {
    return Serve<std::vector<CollectionInfo>>(
        c, r->context(), out,
        [&](const CallContext& call, auto done) { service.List(call, std::move(done)); });
  }
  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* c, const apb::NameRequest* r,
                                     apb::CollectionInfo* out) override {
    return Serve<CollectionInfo>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Describe(call, r->collection(), std::move(done));
    });
  }
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* c, const apb::SearchRequest* r,
                                   apb::SearchReply* out) override {
    auto req = FromPb(*r);
    if (!req.ok()) return Refuse(c, req.status());
    return Serve<SearchReply>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Search(call, std::move(*req), std::move(done));
    });
  }
  grpc::ServerUnaryReactor* Write(grpc::CallbackServerContext* c, const apb::WriteRequest* r,
                                  apb::WriteReply* out) override {
    auto req = FromPb(*r);
    if (!req.ok()) return Refuse(c, req.status());
    return Serve<WriteReply>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Write(call, std::move(*req), std::move(done));
    });
  }
  grpc::ServerUnaryReactor* Read(grpc::CallbackServerContext* c, const apb::ReadRequest* r,
                                 apb::ReadReply* out) override {
    auto req = FromPb(*r);
    if (!req.ok()) return Refuse(c, req.status());
    return Serve<ReadReply>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Read(call, std::move(*req), std::move(done));
    });
  }
  grpc::ServerUnaryReactor* Maintain(grpc::CallbackServerContext* c, const apb::MaintainRequest* r,
                                     apb::MaintainReply* out) override {
    auto req = FromPb(*r);
    if (!req.ok()) return Refuse(c, req.status());
    return Serve<MaintainReply>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Maintain(call, std::move(*req), std::move(done));
    });
  }
  grpc::ServerUnaryReactor* Cluster(grpc::CallbackServerContext* c, const apb::ClusterRequest* r,
                                    apb::ClusterReply* out) override {
    auto req = FromPb(*r);
    if (!req.ok()) return Refuse(c, req.status());
    return Serve<ClusteringResult>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Cluster(call, std::move(*req), std::move(done));
    });
  }
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* c, const apb::ContextRequest* r,
                                     apb::SnapshotReply* out) override {
    return Serve<SnapshotReport>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Snapshot(call, std::move(done));
    });
  }
  grpc::ServerUnaryReactor* Usage(grpc::CallbackServerContext* c, const apb::ContextRequest* r,
                                  apb::UsageReply* out) override {
    return Serve<UsageReply>(c, r->context(), out, [&](const CallContext& call, auto done) {
      service.Usage(call, std::move(done));
    });
  }
};

AgentServer::AgentServer(CollectionService& service, std::string bind_address, int port,
                         ReplicaSink* replicator, std::shared_ptr<const TlsCredentials> tls)
    : impl_(std::make_unique<Impl>(service, replicator)),
      bind_address_(std::move(bind_address)),
      port_(port),
      tls_(std::move(tls)) {}

AgentServer::~AgentServer() {
  if (server_) Stop(std::chrono::milliseconds(0));
}

Status AgentServer::Start() {
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  const std::string host =
      bind_address_.find(':') != std::string::npos ? "[" + bind_address_ + "]" : bind_address_;
  builder.AddListeningPort(host + ":" + std::to_string(port_), MakeServerCredentials(tls_.get()),
                           &port_);
  builder.SetMaxReceiveMessageSize(INT32_MAX);
  builder.SetMaxSendMessageSize(INT32_MAX);
  builder.RegisterService(impl_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    return Unavailable("agent API: cannot listen on " + host);
  }
  return Status::Ok();
}

void AgentServer::Stop(std::chrono::milliseconds grace) {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  server_.reset();
}

}  // namespace vecgpu::cluster
