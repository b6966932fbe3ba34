#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/metrics/metrics.h"
#include "core/util/status.h"

namespace vecgpu::server {

// The operations HTTP listener: GET /metrics (Prometheus text format 0.0.4), /healthz (the
// process serves HTTP) and /readyz (the FAISSx front end accepts requests), and nothing else:
// no data, no administration. Runs its own thread. Start and Stop from one thread.
class MetricsServer {
 public:
  // `registry` must outlive the server; `ready` is polled by /readyz. A non-empty `token`
  // protects /metrics (tenant names are in its labels): requests must send
  // "Authorization: Bearer <token>", else 401. /healthz and /readyz stay open for probes.
  // `detail`, when set, adds lines to /readyz's body (quarantined GPUs) without changing its
  // status: the server still serves, from the CPU.
  MetricsServer(const MetricsRegistry& registry, std::function<bool()> ready,
                std::string token = "", std::function<std::string()> detail = nullptr);
  ~MetricsServer();

  // Binds address:port (port 0 picks a free one) and serves; Unavailable names the endpoint.
  Status Start(const std::string& address, int port);
  // The port bound by Start.
  int port() const { return port_; }
  void Stop();

 private:
  struct Impl;
  const MetricsRegistry& registry_;
  const std::function<bool()> ready_;
  const std::string token_;
  const std::function<std::string()> detail_;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace vecgpu::server
