#include "server/http/metrics_server.h"

#include <httplib.h>

#include <chrono>

namespace vecgpu::server {

struct MetricsServer::Impl {
  httplib::Server http;
};

namespace {
// Compares in time independent of where the strings differ.
bool SameSecret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % (b.empty() ? 1 : b.size())];
  return diff == 0 && !b.empty();
}
}  // namespace

MetricsServer::MetricsServer(const MetricsRegistry& registry, std::function<bool()> ready,
                             std::string token, std::function<std::string()> detail)
    : registry_(registry),
      ready_(std::move(ready)),
      token_(std::move(token)),
      detail_(std::move(detail)),
      impl_(std::make_unique<Impl>()) {}

MetricsServer::~MetricsServer() { Stop(); }

Status MetricsServer::Start(const std::string& address, int port) {
  httplib::Server& http = impl_->http;
  http.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    if (!token_.empty()) {
      const std::string auth = req.get_header_value("Authorization");
      constexpr std::string_view kBearer = "Bearer ";
      if (auth.size() <= kBearer.size() || auth.compare(0, kBearer.size(), kBearer) != 0 ||
          !SameSecret(auth.substr(kBearer.size()), token_)) {
        res.status = 401;
        res.set_header("WWW-Authenticate", "Bearer");
        res.set_content("unauthorized: /metrics needs \"Authorization: Bearer <metrics-token>\"\n",
                        "text/plain");
        return;
      }
    }
    res.set_content(registry_.Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  http.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    const bool ready = ready_();
    res.status = ready ? 200 : 503;
    std::string body = ready ? "ready\n" : "not ready\n";
    if (detail_) body += detail_();
    res.set_content(body, "text/plain");
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404) res.set_content("not found: /metrics, /healthz, /readyz\n", "text/plain");
  });
  http.set_read_timeout(5, 0);
  http.set_write_timeout(5, 0);
  if (port == 0) {
    port_ = http.bind_to_any_port(address);
  } else {
    port_ = http.bind_to_port(address, port) ? port : -1;
  }
  if (port_ < 0) {
    return Unavailable("cannot bind the metrics listener to " + address + ":" +
                       std::to_string(port));
  }
  thread_ = std::thread([this] { impl_->http.listen_after_bind(); });
  // httplib's stop() does nothing until the listener runs: wait for it, so a Stop right after
  // Start (a start-up that fails later) cannot leave the thread listening forever.
  for (int i = 0; i < 2000 && !impl_->http.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return Status::Ok();
}

void MetricsServer::Stop() {
  if (!thread_.joinable()) return;
  impl_->http.stop();
  thread_.join();
}

}  // namespace vecgpu::server
