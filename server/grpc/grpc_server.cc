#include "server/grpc/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/support/server_interceptor.h>

#include <climits>
#include <fstream>
#include <sstream>

#include "core/util/worker_pool.h"
#include "server/grpc/collections_service.h"
#include "server/grpc/vald_services.h"

namespace vecgpu::server {
namespace {

StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgument(flag + ": cannot read '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string HostPort(const std::string& address, int port) {
  const bool v6 = address.find(':') != std::string::npos && address.front() != '[';
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

// Counts and times every call in the request metrics FAISSx requests go to (GrpcEnv::metrics).
class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(const GrpcEnv& env, grpc::experimental::ServerRpcInfo* info)
      : env_(env), info_(info), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status st = methods->GetSendStatus();
      std::string tenant = "-";
      if (auto scope = ScopeOf(env_, *info_->server_context(), /*meter=*/false); scope.ok()) {
        tenant = scope->tenant;
      }
      const std::string action = info_->method() ? info_->method() : "unknown";
      const std::string outcome =
          st.ok() ? "ok" : std::string(StatusCodeName(static_cast<StatusCode>(st.error_code())));
      env_.metrics->requests.With({action, tenant, outcome}).Inc();
      env_.metrics->request_seconds.With({action}).Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    methods->Proceed();
  }

 private:
  const GrpcEnv& env_;
  grpc::experimental::ServerRpcInfo* info_;
  const std::chrono::steady_clock::time_point start_;
};

class MetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(const GrpcEnv& env) : env_(env) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(env_, info);
  }

 private:
  const GrpcEnv& env_;
};

}  // namespace

GrpcServer::GrpcServer(GrpcEnv env, GrpcServerOptions options)
    : env_(std::move(env)), options_(std::move(options)) {
  env_.streams = &streams_;
}

GrpcServer::~GrpcServer() {
  if (server_) Stop(std::chrono::milliseconds(0));
}

std::string GrpcServer::endpoint() const { return HostPort(options_.bind_address, port_); }

Status GrpcServer::Start() {
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options_.tls_cert_file.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ASSIGN_OR_RETURN(std::string cert, ReadFile("grpc-tls-cert", options_.tls_cert_file));
    ASSIGN_OR_RETURN(std::string key, ReadFile("grpc-tls-key", options_.tls_key_file));
    ssl.pem_key_cert_pairs.push_back({key, cert});
    if (!options_.tls_client_ca_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_root_certs,
                       ReadFile("grpc-tls-client-ca", options_.tls_client_ca_file));
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(ssl);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Without this gRPC sets SO_REUSEPORT, and a second server on the port would share it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(HostPort(options_.bind_address, options_.port), creds, &port_);
  // Keep up to 64 idle handler threads. The sync server runs each call on a thread of its
  // own (a search waits there for its batch) and by default keeps only 2 idle: with 16
  // concurrent clients it ended and started about 1,500 threads a second (0.4 per search),
  // and searches took about 25% more server CPU each (bench/README.md, "gRPC").
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 64);
  // Threads by work, not by connections: a cap on the threads that run unary calls (streams
  // run on the callback API and hold none), on the streams one connection opens, and on
  // gRPC's buffers; open streams in total are capped by StreamSlot.
  grpc::ResourceQuota quota("vecgpu-grpc");
  quota.SetMaxThreads(options_.max_threads);
  quota.Resize(static_cast<size_t>(options_.memory_bytes));
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_streams_per_connection);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(options_.max_request_bytes, INT_MAX)));
  builder.SetMaxSendMessageSize(
      static_cast<int>(std::min<int64_t>(options_.max_message_bytes, INT_MAX)));
  // Streams run on the callback API: their messages are processed by a fixed pool, so threads
  // do not grow with streams, and an idle stream holds none.
  stream_pool_ = std::make_unique<WorkerPool>("grpc-stream", options_.stream_threads, 65'536);
  streams_.max_open = options_.max_streams;
  streams_.run = [pool = stream_pool_.get()](std::function<void()> task) {
    return pool->Submit(std::move(task)).ok();
  };
  services_.push_back(std::make_unique<ValdInsertService>(env_));
  services_.push_back(std::make_unique<ValdUpdateService>(env_));
  services_.push_back(std::make_unique<ValdUpsertService>(env_));
  services_.push_back(std::make_unique<ValdRemoveService>(env_));
  services_.push_back(std::make_unique<ValdSearchService>(env_));
  services_.push_back(std::make_unique<ValdObjectService>(env_));
  services_.push_back(std::make_unique<ValdFlushService>(env_));
  services_.push_back(std::make_unique<ValdIndexService>(env_));
  services_.push_back(std::make_unique<AgentService>(env_));
  services_.push_back(std::make_unique<CollectionsService>(env_));
  for (auto& s : services_) builder.RegisterService(s.get());
  if (env_.metrics) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
    f.push_back(std::make_unique<MetricsInterceptorFactory>(env_));
    builder.experimental().SetInterceptorCreators(std::move(f));
  }
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    return Unavailable("grpc-port: cannot listen on " +
                       HostPort(options_.bind_address, options_.port));
  }
  return Status::Ok();
}

void GrpcServer::Stop(std::chrono::milliseconds grace) {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  server_.reset();
  if (stream_pool_) stream_pool_->Shutdown();
}

}  // namespace vecgpu::server
