#include "cluster/agent/remote_service.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "cluster/agent/agent_codec.h"

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too.
#include <grpcpp/grpcpp.h>

#include "vecgpu/agent/v1/agent.grpc.pb.h"

namespace vecgpu::cluster {
namespace {

std::vector<CollectionInfo> FromPbList(const apb::CollectionList& l) {
  std::vector<CollectionInfo> out;
  for (const auto& i : l.collections()) out.push_back(FromPb(i));
  return out;
}

}  // namespace

struct RemoteCollectionService::Impl {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<apb::Agent::Stub> stub;

  // Every call in flight, by its ClientContext. A context is never destroyed inside gRPC's
  // completion callback (gRPC 1.51 tripped a reference-count assertion when it was): the
  // callback retires it, and the keeper thread frees retired contexts. The keeper also cancels
  // the RPC of a call whose caller set its cancellation flag (the agent then sets the flag of
  // the work it runs), polling every 20 ms: the contract's flag is a plain atomic.
  struct InFlight {
    std::shared_ptr<std::atomic<bool>> cancelled;  // may be null
  };
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::shared_ptr<grpc::ClientContext>, InFlight> inflight;  // guarded by mu
  std::vector<std::shared_ptr<grpc::ClientContext>> retired;          // guarded by mu
  bool stopping = false;                                              // guarded by mu
  std::thread keeper;

  Impl() : keeper([this] { Keep(); }) {}

  void Begin(const std::shared_ptr<grpc::ClientContext>& context,
             const std::shared_ptr<std::atomic<bool>>& cancelled) {
    std::lock_guard lock(mu);
    inflight[context] = {cancelled};
  }
  void End(std::shared_ptr<grpc::ClientContext> context) {
    {
      std::lock_guard lock(mu);
      inflight.erase(context);
      retired.push_back(std::move(context));
    }
    cv.notify_all();
  }
  void Keep() {
    std::unique_lock lock(mu);
    while (!stopping) {
      cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return stopping; });
      std::vector<std::shared_ptr<grpc::ClientContext>> cancel;
      for (auto& [context, f] : inflight) {
        if (f.cancelled && f.cancelled->load()) {
          cancel.push_back(context);
          f.cancelled = nullptr;  // once
        }
      }
      std::vector<std::shared_ptr<grpc::ClientContext>> free;
      free.swap(retired);
      lock.unlock();  // gRPC may complete a call from TryCancel: not under mu
      for (auto& c : cancel) c->TryCancel();
      cancel.clear();
      free.clear();
      lock.lock();
    }
  }
  ~Impl() {
    std::unique_lock lock(mu);
    // Calls still in flight are cancelled and waited for: their callbacks use this.
    std::vector<std::shared_ptr<grpc::ClientContext>> cancel;
    for (auto& [context, f] : inflight) cancel.push_back(context);
    lock.unlock();
    for (auto& c : cancel) c->TryCancel();
    cancel.clear();
    lock.lock();
    cv.wait(lock, [&] { return inflight.empty(); });
    stopping = true;
    lock.unlock();
    cv.notify_all();
    keeper.join();
    retired.clear();
  }

  // One call: the request (with the caller's context) to the agent; the reply decoded by
  // `decode` into the completion, on gRPC's thread.
  template <typename Reply, typename PbReq, typename PbResp, typename Rpc, typename Decode>
  void Call(const CallContext& call, PbReq req, Rpc rpc, Decode decode, Completion<Reply> done) {
    if (call.Cancelled()) return done(Cancelled("the call was cancelled by its caller"));
    // Fail fast: an agent that is down answers UNAVAILABLE at once (gRPC reconnects in the
    // background, within a second of its coming back), not when the caller's deadline ends.
    if (channel->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_TRANSIENT_FAILURE) {
      return done(Unavailable("agent " + address + ": unreachable"));
    }
    struct State {
      PbReq req;
      PbResp resp;
    };
    auto st = std::make_shared<State>();
    st->req = std::move(req);
    ToPb(call, st->req.mutable_context());
    auto context = std::make_shared<grpc::ClientContext>();
    if (call.deadline != Clock::time_point::max()) {
      context->set_deadline(std::chrono::system_clock::now() +
                            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                call.deadline - Clock::now()));
    }
    Begin(context, call.cancelled);
    grpc::ClientContext* raw = context.get();
    rpc(raw, &st->req, &st->resp,
        [this, st, context = std::move(context), decode, done = std::move(done),
         agent = address](grpc::Status s) mutable {
          if (s.ok()) {
            done(decode(st->resp));
          } else if (s.error_code() == grpc::StatusCode::CANCELLED) {
            done(Cancelled("the call was cancelled by its caller"));
          } else {
            std::string message = s.error_message();
            if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
              message = "agent " + agent + ": " + message;
            }
            done(Status(static_cast<StatusCode>(s.error_code()), message));
          }
          End(std::move(context));  // last: the destructor waits for it
        });
  }
};

RemoteCollectionService::RemoteCollectionService(const std::string& address,
                                                 std::shared_ptr<const TlsCredentials> tls)
    : address_(address), impl_(std::make_unique<Impl>()) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(INT32_MAX);
  args.SetMaxSendMessageSize(INT32_MAX);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  impl_->address = address;
  impl_->channel = MakeChannel(address, args, tls.get());
  impl_->stub = apb::Agent::NewStub(impl_->channel);
}

RemoteCollectionService::~RemoteCollectionService() = default;

// The stub's async entry point for one RPC, as Impl::Call takes it.
#define VECGPU_RPC(Method)                                                         \
  [stub = impl_->stub.get()](grpc::ClientContext* c, const auto* req, auto* resp, \
                             std::function<void(grpc::Status)> cb) {               \
    stub->async()->Method(c, req, resp, std::move(cb));                            \
  }

void RemoteCollectionService::Create(const CallContext& call, CreateCollectionRequest request,
                                     Completion<CollectionInfo> done) {
  apb::CreateRequest req;
  ToPb(request, &req);
  impl_->Call<CollectionInfo, apb::CreateRequest, apb::CollectionInfo>(
      call, std::move(req), VECGPU_RPC(Create),
      [](const apb::CollectionInfo& r) -> StatusOr<CollectionInfo> { return FromPb(r); },
      std::move(done));
}

void RemoteCollectionService::Drop(const CallContext& call, std::string collection,
                                   Completion<Empty> done) {
  apb::NameRequest req;
  req.set_collection(collection);
  impl_->Call<Empty, apb::NameRequest, apb::Empty>(
      call, std::move(req), VECGPU_RPC(Drop),
      [](const apb::Empty&) -> StatusOr<Empty> { return Empty{}; }, std::move(done));
}

void RemoteCollectionService::List(const CallContext& call,
                                   Completion<std::vector<CollectionInfo>> done) {
  impl_->Call<std::vector<CollectionInfo>, apb::ContextRequest, apb::CollectionList>(
      call, apb::ContextRequest(), VECGPU_RPC(List),
      [](const apb::CollectionList& r) -> StatusOr<std::vector<CollectionInfo>> {
        return FromPbList(r);
      },
      std::move(done));
}

void RemoteCollectionService::Describe(const CallContext& call, std::string collection,
                                       Completion<CollectionInfo> done) {
  apb::NameRequest req;
  req.set_collection(collection);
  impl_->Call<CollectionInfo, apb::NameRequest, apb::CollectionInfo>(
      call, std::move(req), VECGPU_RPC(Describe),
      [](const apb::CollectionInfo& r) -> StatusOr<CollectionInfo> { return FromPb(r); },
      std::move(done));
}

void RemoteCollectionService::Search(const CallContext& call, SearchRequest request,
                                     Completion<SearchReply> done) {
  apb::SearchRequest req;
  ToPb(request, &req);
  impl_->Call<SearchReply, apb::SearchRequest, apb::SearchReply>(
      call, std::move(req), VECGPU_RPC(Search),
      [](const apb::SearchReply& r) { return FromPb(r); }, std::move(done));
}

void RemoteCollectionService::Write(const CallContext& call, WriteRequest request,
                                    Completion<WriteReply> done) {
  apb::WriteRequest req;
  ToPb(request, &req);
  impl_->Call<WriteReply, apb::WriteRequest, apb::WriteReply>(
      call, std::move(req), VECGPU_RPC(Write),
      [](const apb::WriteReply& r) -> StatusOr<WriteReply> { return FromPb(r); },
      std::move(done));
}

void RemoteCollectionService::Read(const CallContext& call, ReadRequest request,
                                   Completion<ReadReply> done) {
  apb::ReadRequest req;
  ToPb(request, &req);
  impl_->Call<ReadReply, apb::ReadRequest, apb::ReadReply>(
      call, std::move(req), VECGPU_RPC(Read), [](const apb::ReadReply& r) { return FromPb(r); },
      std::move(done));
}

void RemoteCollectionService::Maintain(const CallContext& call, MaintainRequest request,
                                       Completion<MaintainReply> done) {
  apb::MaintainRequest req;
  ToPb(request, &req);
  impl_->Call<MaintainReply, apb::MaintainRequest, apb::MaintainReply>(
      call, std::move(req), VECGPU_RPC(Maintain),
      [](const apb::MaintainReply& r) -> StatusOr<MaintainReply> { return FromPb(r); },
      std::move(done));
}

void RemoteCollectionService::Cluster(const CallContext& call, ClusterRequest request,
                                      Completion<ClusteringResult> done) {
  apb::ClusterRequest req;
  ToPb(request, &req);
  impl_->Call<ClusteringResult, apb::ClusterRequest, apb::ClusterReply>(
      call, std::move(req), VECGPU_RPC(Cluster),
      [](const apb::ClusterReply& r) { return FromPb(r); }, std::move(done));
}

void RemoteCollectionService::Snapshot(const CallContext& call, Completion<SnapshotReport> done) {
  impl_->Call<SnapshotReport, apb::ContextRequest, apb::SnapshotReply>(
      call, apb::ContextRequest(), VECGPU_RPC(Snapshot),
      [](const apb::SnapshotReply& r) -> StatusOr<SnapshotReport> { return FromPb(r); },
      std::move(done));
}

void RemoteCollectionService::Usage(const CallContext& call, Completion<UsageReply> done) {
  impl_->Call<UsageReply, apb::ContextRequest, apb::UsageReply>(
      call, apb::ContextRequest(), VECGPU_RPC(Usage),
      [](const apb::UsageReply& r) -> StatusOr<UsageReply> { return FromPb(r); },
      std::move(done));
}

#undef VECGPU_RPC

}  // namespace vecgpu::cluster
