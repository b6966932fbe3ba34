#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/util/mutex.h"
#include "core/util/status.h"

namespace vecgpu {

// What one tenant may hold and ask for. 0 (every field): no limit.
struct Quota {
  int64_t max_vectors = 0;      // vectors stored, all its collections
  int64_t max_bytes = 0;        // the estimated memory of its indexes
  int64_t max_collections = 0;  // collections (indexes) it owns
  // Requests a second, as a token bucket holding one second's worth (at least one request).
  double requests_per_second = 0;
  int64_t max_inflight = 0;  // requests received and not yet answered

  // InvalidArgument naming the field for a negative value.
  Status Validate(const std::string& who) const;
};

// A tenant's use of what its quota bounds.
struct TenantUse {
  int64_t collections = 0;
  int64_t vectors = 0;
  int64_t bytes = 0;
  int64_t inflight = 0;
};

// Per-tenant quotas: a default for every tenant, and tenants of their own (the auth file's
// "quota" objects). Counts each tenant's requests in flight and meters its request rate.
// Storage quotas are checked by the Engine against its own counts (Engine::set_quotas).
// Thread-safe; immutable quotas, mutable meters.
class Quotas {
 public:
  Quotas(Quota defaults, std::map<std::string, Quota> tenants);

  const Quota& Of(const std::string& tenant) const;

  // Ends one request's stay in flight when destroyed.
  class Request;
  // One request of `tenant` starts: ResourceExhausted naming the quota and the current use
  // when it would pass the tenant's request rate or requests in flight (nothing counted then).
  StatusOr<std::shared_ptr<Request>> Start(const std::string& tenant);
  int64_t inflight(const std::string& tenant) const;

  // ResourceExhausted naming the quota when `use` plus what a write adds passes it.
  Status CheckStore(const std::string& tenant, const TenantUse& use, int64_t more_collections,
                    int64_t more_vectors, int64_t more_bytes) const;

 private:
  struct Meter {
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled{};
    int64_t inflight = 0;
    bool fresh = true;
  };
  struct State {
    mutable Mutex mu;
    std::map<std::string, Meter> meters GUARDED_BY(mu);
  };
  const Quota defaults_;
  const std::map<std::string, Quota> tenants_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

class Quotas::Request {
 public:
  ~Request();
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

 private:
  friend class Quotas;
  Request(std::shared_ptr<State> state, std::string tenant)
      : state_(std::move(state)), tenant_(std::move(tenant)) {}
  std::shared_ptr<State> state_;
  const std::string tenant_;
};

}  // namespace vecgpu
