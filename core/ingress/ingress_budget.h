#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/util/mutex.h"
#include "core/util/status.h"

namespace vecgpu {

// Bounds on request bytes received and not yet answered (the payload and its decoded form
// live that long). Defaults fit a 24 GiB machine: decoded requests take up to about twice
// their wire size again, so the total bound keeps ingress under about 6 GiB.
struct IngressOptions {
  // All requests together. Default: 2 GiB.
  int64_t max_inflight_bytes = int64_t{2} << 30;
  // One tenant's requests. Default: 1 GiB.
  int64_t max_tenant_inflight_bytes = int64_t{1} << 30;
  // One connection's requests (a ZeroMQ peer, a gRPC peer). Default: 512 MiB.
  int64_t max_connection_inflight_bytes = int64_t{512} << 20;
  // Requests not yet authenticated, all connections together: a budget of their own, so that
  // a flood without a valid key cannot use the authenticated tenants' room. Messages up to
  // unauthenticated_free_bytes are not counted here (their count is bounded by the dispatch
  // queue). Default: 256 MiB.
  int64_t max_unauthenticated_bytes = int64_t{256} << 20;
  // Default: 64 KiB.
  int64_t unauthenticated_free_bytes = int64_t{64} << 10;

  Status Validate() const;
};

// Accounts the bytes of requests in flight by connection, by tenant, unauthenticated and in
// total; a request that does not fit is refused with ResourceExhausted naming the bound, and
// nothing is charged. Thread-safe; holds may outlive it.
class IngressBudget {
 public:
  explicit IngressBudget(IngressOptions options);

  // What one request holds; released when destroyed.
  class Hold;

  // A request of `bytes` that arrived on `connection`, not yet authenticated: charged to the
  // connection and, when larger than unauthenticated_free_bytes, to the unauthenticated budget.
  StatusOr<std::shared_ptr<Hold>> Admit(const std::string& connection, int64_t bytes);
  // The request is `tenant`'s: its bytes leave the unauthenticated budget and are charged to
  // the tenant's and the total. ResourceExhausted (the hold unchanged) when they do not fit.
  Status Authenticated(Hold& hold, const std::string& tenant);

  struct Usage {
    int64_t total = 0;
    int64_t unauthenticated = 0;
    std::map<std::string, int64_t> tenants;
  };
  Usage usage() const;
  const IngressOptions& options() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

class IngressBudget::Hold {
 public:
  ~Hold();
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;
  int64_t bytes() const { return bytes_; }

 private:
  friend class IngressBudget;
  Hold(std::shared_ptr<State> state, std::string connection, int64_t bytes)
      : state_(std::move(state)), connection_(std::move(connection)), bytes_(bytes) {}
  std::shared_ptr<State> state_;
  const std::string connection_;
  const int64_t bytes_;
  bool unauthenticated_ = false;  // charged to the unauthenticated budget
  std::string tenant_;            // charged to this tenant (and the total), once known
};

}  // namespace vecgpu
