#include "core/quota/quotas.h"

#include <algorithm>
#include <cstdio>

namespace vecgpu {
namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

Status Over(const std::string& tenant, const char* quota, const std::string& use,
            const std::string& limit, const std::string& what) {
  return ResourceExhausted("quota exceeded: tenant '" + tenant + "' " + quota + ": " + use +
                           " of " + limit + what);
}

}  // namespace

Status Quota::Validate(const std::string& who) const {
  if (max_vectors < 0 || max_bytes < 0 || max_collections < 0 || requests_per_second < 0 ||
      max_inflight < 0) {
    return InvalidArgument(who + ": quotas must not be negative (0: no limit)");
  }
  return Status::Ok();
}

Quotas::Quotas(Quota defaults, std::map<std::string, Quota> tenants)
    : defaults_(defaults), tenants_(std::move(tenants)) {}

const Quota& Quotas::Of(const std::string& tenant) const {
  auto it = tenants_.find(tenant);
  return it == tenants_.end() ? defaults_ : it->second;
}

StatusOr<std::shared_ptr<Quotas::Request>> Quotas::Start(const std::string& tenant) {
  const Quota& q = Of(tenant);
  State& s = *state_;
  MutexLock lock(s.mu);
  Meter& m = s.meters[tenant];
  if (q.max_inflight > 0 && m.inflight >= q.max_inflight) {
    return Over(tenant, "max_inflight (requests in flight)", std::to_string(m.inflight),
                std::to_string(q.max_inflight), "; retry when its requests are answered");
  }
  if (q.requests_per_second > 0) {
    const auto now = std::chrono::steady_clock::now();
    const double burst = std::max(1.0, q.requests_per_second);
    if (m.fresh) {
      m.tokens = burst;
    } else {
      const double elapsed = std::chrono::duration<double>(now - m.refilled).count();
      m.tokens = std::min(burst, m.tokens + elapsed * q.requests_per_second);
    }
    m.fresh = false;
    m.refilled = now;
    if (m.tokens < 1) {
      return Over(tenant, "requests_per_second", "rate above " + Num(q.requests_per_second),
                  Num(q.requests_per_second) + " a second",
                  "; retry in " + Num((1 - m.tokens) / q.requests_per_second) + " s");
    }
    m.tokens -= 1;
  }
  ++m.inflight;
  return std::shared_ptr<Request>(new Request(state_, tenant));
}

Quotas::Request::~Request() {
  MutexLock lock(state_->mu);
  auto it = state_->meters.find(tenant_);
  if (it != state_->meters.end()) --it->second.inflight;
}

int64_t Quotas::inflight(const std::string& tenant) const {
  MutexLock lock(state_->mu);
  auto it = state_->meters.find(tenant);
  return it == state_->meters.end() ? 0 : it->second.inflight;
}

Status Quotas::CheckStore(const std::string& tenant, const TenantUse& use,
                          int64_t more_collections, int64_t more_vectors,
                          int64_t more_bytes) const {
  const Quota& q = Of(tenant);
  if (more_collections > 0 && q.max_collections > 0 &&
      use.collections + more_collections > q.max_collections) {
    return Over(tenant, "max_collections", std::to_string(use.collections) + " collections",
                std::to_string(q.max_collections), "; drop one first");
  }
  if (more_vectors > 0 && q.max_vectors > 0 && use.vectors + more_vectors > q.max_vectors) {
    return Over(tenant, "max_vectors", std::to_string(use.vectors) + " vectors",
                std::to_string(q.max_vectors),
                "; this write adds " + std::to_string(more_vectors));
  }
  if (more_bytes > 0 && q.max_bytes > 0 && use.bytes + more_bytes > q.max_bytes) {
    return Over(tenant, "max_bytes", std::to_string(use.bytes) + " bytes",
                std::to_string(q.max_bytes),
                "; this write adds about " + std::to_string(more_bytes));
  }
  return Status::Ok();
}

}  // namespace vecgpu
