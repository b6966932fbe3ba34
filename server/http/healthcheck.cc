#include "server/http/healthcheck.h"

#include <httplib.h>

#include <ostream>

namespace vecgpu::server {

int RunHealthcheck(const HealthcheckOptions& options, std::ostream& out, std::ostream& err) {
  std::string host = options.address;
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::" || host == "[::]") host = "::1";
  const char* path = options.ready ? "/readyz" : "/healthz";
  httplib::Client client(host, options.port);
  const time_t sec = options.timeout_ms / 1000;
  const time_t usec = (options.timeout_ms % 1000) * 1000;
  client.set_connection_timeout(sec, usec);
  client.set_read_timeout(sec, usec);
  client.set_write_timeout(sec, usec);
  auto res = client.Get(path);
  if (!res) {
    err << "healthcheck: no answer from http://" << host << ":" << options.port << path << ": "
        << httplib::to_string(res.error()) << "\n";
    return 1;
  }
  if (res->status != 200) {
    err << "healthcheck: http://" << host << ":" << options.port << path << " answered "
        << res->status << ": " << res->body;
    return 1;
  }
  out << res->body;
  return 0;
}

}  // namespace vecgpu::server
