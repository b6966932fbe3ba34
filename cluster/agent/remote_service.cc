#include "cluster/agent/remote_service.h"

#include <condition_variable>
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

  // Calls in flight whose caller may take them back: a watcher cancels the RPC (the agent
  // then sets the call's flag, and its work stops at its next cancellation point) once the
  // caller's flag is set. Polled every 20 ms: the contract's flag is a plain atomic.
  struct Watched {
    std::weak_ptr<grpc::ClientContext> context;
    std::shared_ptr<std::atomic<bool>> cancelled;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Watched> watched;  // guarded by mu
  bool stopping = false;         // guarded by mu
  std::thread watcher;

  void Watch(const std::shared_ptr<grpc::ClientContext>& context,
             const std::shared_ptr<std::atomic<bool>>& cancelled) {
    std::lock_guard lock(mu);
    watched.push_back({context, cancelled});
    if (!watcher.joinable()) watcher = std::thread([this] { WatchLoop(); });
  }
  void WatchLoop() {
    std::unique_lock lock(mu);
    while (!stopping) {
      cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return stopping; });
      std::erase_if(watched, [](Watched& w) {
        auto context = w.context.lock();
        if (!context) return true;  // answered
        if (w.cancelled->load()) {
          context->TryCancel();
          return true;
        }
        return false;
      });
    }
  }
  ~Impl() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    cv.notify_all();
    if (watcher.joinable()) watcher.join();
  }

  // One call: the request (with the caller's context) to the agent; the reply decoded by
  // `decode` into the completion, on gRPC's thread.
  template <typename Reply, typename PbReq, typename PbResp, typename Rpc, typename Decode>
  void Call(const CallContext& call, PbReq req, Rpc rpc, Decode decode, Completion<Reply> done) {
    if (call.Cancelled()) return done(Cancelled("the call was cancelled by its caller"));
    // An agent whose last connection attempt failed is refused at once (gRPC retries the
    // connection in the background, within a second); otherwise the call waits for the
    // connection (a fresh channel, an agent reconnecting) within its deadline.
    if (channel->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_TRANSIENT_FAILURE) {
      return done(Unavailable("agent " + address + ": unreachable"));
    }
    struct State {
      std::shared_ptr<grpc::ClientContext> context = std::make_shared<grpc::ClientContext>();
      PbReq req;
      PbResp resp;
    };
    auto st = std::make_shared<State>();
    st->req = std::move(req);
    ToPb(call, st->req.mutable_context());
    if (call.deadline != Clock::time_point::max()) {
      st->context->set_deadline(std::chrono::system_clock::now() +
                                std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                    call.deadline - Clock::now()));
    }
    st->context->set_wait_for_ready(true);
    if (call.cancelled) Watch(st->context, call.cancelled);
    rpc(st->context.get(), &st->req, &st->resp,
        [st, decode, done = std::move(done), agent = address](grpc::Status s) {
          if (s.ok()) return done(decode(st->resp));
          if (s.error_code() == grpc::StatusCode::CANCELLED) {
            return done(Cancelled("the call was cancelled by its caller"));
          }
          std::string message = s.error_message();
          if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
              s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
            message = "agent " + agent + ": " + message;
          }
          done(Status(static_cast<StatusCode>(s.error_code()), message));
        });
  }
};

RemoteCollectionService::RemoteCollectionService(const std::string& address)
    : address_(address), impl_(std::make_unique<Impl>()) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(INT32_MAX);
  args.SetMaxSendMessageSize(INT32_MAX);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  impl_->address = address;
  impl_->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
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
