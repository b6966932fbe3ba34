#pragma once

// `vecgpu healthcheck [--ready]`: asks a running server's HTTP listener whether it is alive
// (/healthz) or ready (/readyz). For container HEALTHCHECKs and probes in images that carry no
// HTTP client of their own.

#include <iosfwd>
#include <string>

namespace vecgpu::server {

struct HealthcheckOptions {
  // Where the server's --metrics-port listener is; --metrics-address 0.0.0.0 (or ::) is
  // reached through loopback.
  std::string address = "127.0.0.1";
  int port = 45679;
  bool ready = false;  // /readyz instead of /healthz
  int timeout_ms = 2000;
};

// Returns the exit code: 0 when the server answered 200, 1 otherwise (the reason on `err`).
int RunHealthcheck(const HealthcheckOptions& options, std::ostream& out, std::ostream& err);

}  // namespace vecgpu::server
