#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "server/grpc/call_scope.h"
#include "server/grpc/stream_reactor.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace vecgpu {
class WorkerPool;
}

namespace vecgpu::server {

struct GrpcServerOptions {
  // Address and port to listen on (port 0: any free one; see GrpcServer::port()).
  std::string bind_address = "127.0.0.1";
  int port = 8081;
  // Largest request (Limits::max_request_bytes) and reply (Limits::max_message_bytes), as on
  // ZeroMQ; a larger request: RESOURCE_EXHAUSTED, before it is decoded.
  int64_t max_message_bytes = 4 << 20;
  int64_t max_request_bytes = 4 << 20;
  // PEM files: TLS when cert and key are set; client certificates required and verified
  // against client_ca when it is set. Default: plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Threads serving unary calls while they work, all connections together: past it a new
  // call gets RESOURCE_EXHAUSTED. Streams hold none (callback API). Default: 256.
  int max_threads = 256;
  // Calls one connection may have open at once (HTTP/2 concurrent streams). Default: 32.
  int max_streams_per_connection = 32;
  // Memory gRPC may take for its buffers. Default: 1 GiB.
  int64_t memory_bytes = int64_t{1} << 30;
  // Streams open at once, all connections together: past it a new stream gets
  // RESOURCE_EXHAUSTED. Default: 10,000.
  int64_t max_streams = 10'000;
  // Threads that process the streams' messages (submitting searches, running writes and
  // keyed reads), whatever the number of streams. Default: 16.
  int stream_threads = 16;
};

// The gRPC front end: the Vald v1 services, core.v1.Agent, vecgpu.v1.Collections, the standard
// health service and server reflection, on one port, over the collection service in `env`. Start once, Stop
// once (Stop before the scheduler shuts down: searches wait on it). Not thread-safe itself;
// the services it runs are.
class GrpcServer {
 public:
  GrpcServer(GrpcEnv env, GrpcServerOptions options);
  ~GrpcServer();

  // Binds and starts serving. Unavailable when the port cannot be bound; InvalidArgument when
  // a TLS file cannot be read.
  Status Start();
  // Stops accepting calls and waits up to `grace` for the running ones, then cancels them.
  void Stop(std::chrono::milliseconds grace);
  // The bound port (after Start).
  int port() const { return port_; }
  // "host:port" as listened on.
  std::string endpoint() const;
  bool tls() const { return !options_.tls_cert_file.empty(); }

 private:
  GrpcEnv env_;  // env_.streams points at streams_
  const GrpcServerOptions options_;
  StreamResources streams_;
  std::unique_ptr<WorkerPool> stream_pool_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace vecgpu::server
