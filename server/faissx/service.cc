#include "server/faissx/service.h"

#include <chrono>

#include "core/util/utf8.h"
#include "server/faissx/handlers.h"
#include "server/faissx/map_writer.h"
#include "server/faissx/msgpack_scan.h"
#include "server/faissx/request.h"
#include "server/wire_status.h"

namespace vecgpu::server {
namespace {

constexpr std::string_view kVersion = "vecgpu-0.1.0";

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Echoes `request_id` (string or integer) when the request carries one.
void EchoRequestId(const Request* req, MapWriter& out) {
  if (!req) return;
  const msgpack::object* id = req->Find("request_id");
  if (!id) return;
  using msgpack::type::object_type;
  if (id->type == object_type::STR || id->type == object_type::POSITIVE_INTEGER ||
      id->type == object_type::NEGATIVE_INTEGER) {
    out.Key("request_id").pack(*id);
  }
}

std::string Error(const Status& st, const Request* req) {
  MapWriter out;
  out.Bool("success", false);
  out.Str("error", EscapeInvalidUtf8(st.message()));
  out.Str("error_code", WireErrorCode(st.code()));
  auto& details = out.Key("error_details");
  details.pack_map(1);
  details.pack("status");
  details.pack(std::string(StatusCodeName(st.code())));
  out.Double("timestamp", Now());
  out.Str("version", kVersion);
  EchoRequestId(req, out);
  return out.Finish();
}

}  // namespace

FaissxService::FaissxService(Engine& engine, const Authenticator& auth, const Limits& limits,
                             ServerMetrics* metrics)
    : engine_(engine), auth_(auth), limits_(limits), metrics_(metrics) {}

Lane FaissxService::LaneOf(std::string_view payload) {
  const Action* action = FindAction(PeekAction(payload));
  return action ? action->lane : Lane::kQuery;
}

std::string FaissxService::ErrorReply(const Status& status) { return Error(status, nullptr); }

std::string FaissxService::Handle(std::string payload) const {
  const auto start = std::chrono::steady_clock::now();
  Outcome o;
  std::string reply = Serve(std::move(payload), &o);
  if (metrics_) {
    // Label values are bounded: actions come from the action table, outcomes from the wire
    // codes, and tenants are capped by the family (past the cap they share "_other").
    metrics_->requests.With({o.action, o.tenant.empty() ? "-" : o.tenant, o.code}).Inc();
    metrics_->request_seconds.With({o.action}).Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return reply;
}

std::string FaissxService::Serve(std::string payload, Outcome* o) const {
  auto fail = [&](const Status& st, const Request* req) {
    o->code = std::string(WireErrorCode(st.code()));
    return Error(st, req);
  };
  if (static_cast<int64_t>(payload.size()) > limits_.max_request_bytes) {
    return fail(
        InvalidArgument("Malformed request: " + std::to_string(payload.size()) +
                        " bytes, above the limit of " + std::to_string(limits_.max_request_bytes) +
                        " (max_request_bytes)"),
        nullptr);
  }
  auto decoded = Request::Decode(std::move(payload), limits_);
  if (!decoded.ok()) return fail(decoded.status(), nullptr);
  const Request& req = *decoded;
  o->action = "unknown";
  try {
    const Action* action = FindAction(req.action());
    if (!action) return fail(InvalidArgument("Unknown action"), &req);
    o->action = req.action();

    std::string tenant;
    if (req.action() != "ping") {
      std::optional<std::string> key, tenant_id;
      if (req.Has("api_key")) {
        auto k = req.String("api_key", limits_.max_api_key_length);
        if (!k.ok()) return fail(Unauthenticated("Invalid API key"), &req);
        key = *k;
      }
      if (req.Has("tenant_id")) {
        auto t = req.String("tenant_id", limits_.max_tenant_id_length);
        if (!t.ok()) return fail(PermissionDenied("Invalid tenant ID"), &req);
        tenant_id = *t;
      }
      auto who = auth_.TenantOf(key, tenant_id);
      if (!who.ok()) return fail(who.status(), &req);
      tenant = *who;
      o->tenant = tenant;
    }

    MapWriter out;
    out.Bool("success", true);
    ActionContext ctx{engine_, req, tenant, limits_, out};
    Status st = action->handler(ctx);
    if (!st.ok()) return fail(st, &req);
    out.Double("timestamp", Now());
    out.Str("version", kVersion);
    EchoRequestId(&req, out);
    return out.Finish();
  } catch (const std::bad_alloc&) {
    return fail(ResourceExhausted("out of memory while serving the request"), &req);
  } catch (const std::exception& e) {
    return fail(Internal(std::string("internal error: ") + e.what()), &req);
  }
}

}  // namespace vecgpu::server
