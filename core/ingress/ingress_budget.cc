#include "core/ingress/ingress_budget.h"

namespace vecgpu {

namespace {
std::string MiB(int64_t bytes) {
  return std::to_string((bytes + (int64_t{1} << 20) - 1) >> 20) + " MiB";
}
Status Exhausted(const std::string& what, int64_t used, int64_t bytes, int64_t bound,
                 const char* flag) {
  return ResourceExhausted("resource exhausted: " + what + " has " + MiB(used) +
                           " of requests in flight; this one (" + MiB(bytes) +
                           ") would pass the bound of " + MiB(bound) + " (" + flag +
                           "); retry when its requests are answered");
}
}  // namespace

Status IngressOptions::Validate() const {
  if (max_inflight_bytes < (int64_t{1} << 20) || max_tenant_inflight_bytes < (int64_t{1} << 20) ||
      max_connection_inflight_bytes < (int64_t{1} << 20) ||
      max_unauthenticated_bytes < (int64_t{1} << 20)) {
    return InvalidArgument("max-inflight-mb, max-tenant-inflight-mb, max-connection-inflight-mb, "
                           "max-unauthenticated-mb: each at least 1");
  }
  if (unauthenticated_free_bytes < 0) {
    return InvalidArgument("unauthenticated-free-bytes: must not be negative");
  }
  return Status::Ok();
}

struct IngressBudget::State {
  explicit State(IngressOptions o) : options(o) {}
  const IngressOptions options;
  mutable Mutex mu;
  int64_t total GUARDED_BY(mu) = 0;
  int64_t unauthenticated GUARDED_BY(mu) = 0;
  std::map<std::string, int64_t> tenants GUARDED_BY(mu);
  std::map<std::string, int64_t> connections GUARDED_BY(mu);
};

IngressBudget::IngressBudget(IngressOptions options)
    : state_(std::make_shared<State>(options)) {}

const IngressOptions& IngressBudget::options() const { return state_->options; }

StatusOr<std::shared_ptr<IngressBudget::Hold>> IngressBudget::Admit(const std::string& connection,
                                                                   int64_t bytes) {
  State& s = *state_;
  const bool unauth = bytes > s.options.unauthenticated_free_bytes;
  MutexLock lock(s.mu);
  auto conn = s.connections.find(connection);
  const int64_t on_conn = conn == s.connections.end() ? 0 : conn->second;
  if (on_conn > 0 && on_conn + bytes > s.options.max_connection_inflight_bytes) {
    return Exhausted("this connection", on_conn, bytes, s.options.max_connection_inflight_bytes,
                     "--max-connection-inflight-mb");
  }
  if (unauth && s.unauthenticated > 0 &&
      s.unauthenticated + bytes > s.options.max_unauthenticated_bytes) {
    return Exhausted("the unauthenticated budget", s.unauthenticated, bytes,
                     s.options.max_unauthenticated_bytes, "--max-unauthenticated-mb");
  }
  s.connections[connection] += bytes;
  if (unauth) s.unauthenticated += bytes;
  std::shared_ptr<Hold> hold(new Hold(state_, connection, bytes));
  hold->unauthenticated_ = unauth;
  return hold;
}

Status IngressBudget::Authenticated(Hold& hold, const std::string& tenant) {
  State& s = *state_;
  MutexLock lock(s.mu);
  if (!hold.tenant_.empty()) return Status::Ok();
  auto t = s.tenants.find(tenant);
  const int64_t on_tenant = t == s.tenants.end() ? 0 : t->second;
  // A lone request larger than a bound still runs (the size limits bound it): the bounds
  // stop requests piling up, not one request.
  if (on_tenant > 0 && on_tenant + hold.bytes_ > s.options.max_tenant_inflight_bytes) {
    return Exhausted("tenant '" + tenant + "'", on_tenant, hold.bytes_,
                     s.options.max_tenant_inflight_bytes, "--max-tenant-inflight-mb");
  }
  if (s.total > 0 && s.total + hold.bytes_ > s.options.max_inflight_bytes) {
    return Exhausted("the server", s.total, hold.bytes_, s.options.max_inflight_bytes,
                     "--max-inflight-mb");
  }
  if (hold.unauthenticated_) s.unauthenticated -= hold.bytes_;
  hold.unauthenticated_ = false;
  s.tenants[tenant] += hold.bytes_;
  s.total += hold.bytes_;
  hold.tenant_ = tenant;
  return Status::Ok();
}

IngressBudget::Hold::~Hold() {
  State& s = *state_;
  MutexLock lock(s.mu);
  if (auto c = s.connections.find(connection_); c != s.connections.end()) {
    if ((c->second -= bytes_) <= 0) s.connections.erase(c);
  }
  if (unauthenticated_) s.unauthenticated -= bytes_;
  if (!tenant_.empty()) {
    s.total -= bytes_;
    if (auto t = s.tenants.find(tenant_); t != s.tenants.end() && (t->second -= bytes_) <= 0) {
      s.tenants.erase(t);
    }
  }
}

IngressBudget::Usage IngressBudget::usage() const {
  const State& s = *state_;
  MutexLock lock(s.mu);
  return {s.total, s.unauthenticated, s.tenants};
}

}  // namespace vecgpu
