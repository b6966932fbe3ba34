#include "server/faissx/service.h"

#include <chrono>
#include <future>
#include <optional>

#include "core/util/utf8.h"
#include "server/faissx/handlers.h"
#include "server/faissx/map_writer.h"
#include "server/faissx/msgpack_scan.h"
#include "server/faissx/request.h"
#include "server/faissx/search_reply.h"
#include "server/wire_status.h"

namespace vecgpu::server {
namespace {

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

std::string Error(const Status& st, const Request* req, const std::string& raw_request_id = "") {
  MapWriter out;
  out.Bool("success", false);
  out.Str("error", EscapeInvalidUtf8(st.message()));
  out.Str("error_code", WireErrorCode(st.code()));
  auto& details = out.Key("error_details");
  details.pack_map(1);
  details.pack("status");
  details.pack(std::string(StatusCodeName(st.code())));
  WriteReplyTrailer(out);
  if (req) {
    EchoRequestId(req, out);
  } else if (!raw_request_id.empty()) {
    out.Raw("request_id", raw_request_id);  // from the envelope (PeekEnvelope)
  }
  return out.Finish();
}

}  // namespace

FaissxService::FaissxService(CollectionService& service, const Authenticator& auth,
                             const Limits& limits, ServerMetrics* metrics, ServiceOptions options)
    : service_(service), auth_(auth), limits_(limits), metrics_(metrics), options_(options) {}

std::string FaissxService::ErrorReply(const Status& status) { return Error(status, nullptr); }

std::string FaissxService::Handle(std::string payload) const {
  std::promise<std::string> reply;
  auto future = reply.get_future();
  Handle(std::string_view(payload), [&reply](std::string r) { reply.set_value(std::move(r)); });
  return future.get();
}

void FaissxService::Handle(std::string payload, Done done) const {
  Handle(std::string_view(payload), std::move(done));
}

void FaissxService::Handle(std::string_view payload, Done done, const Admit& admit) const {
  // Everything the request's completion needs, kept alive until its reply is sent.
  using Clock = std::chrono::steady_clock;
  struct Call {
    Clock::time_point start = Clock::now();
    Outcome o;
    std::optional<Request> req;
    Principal who;
    std::string tenant;
    std::string request_id;                    // from the envelope, until the request is decoded
    std::shared_ptr<Quotas::Request> metered;  // in flight until the reply
    Done done;
  };
  auto call = std::make_shared<Call>();
  call->done = std::move(done);
  // Sends the reply and records the request's metrics.
  auto finish = [this](Call& c, std::string reply) {
    c.metered.reset();
    if (metrics_) {
      // Label values are bounded: actions come from the action table, outcomes from the wire
      // codes, and tenants are capped by the family (past the cap they share "_other").
      metrics_->requests.With({c.o.action, c.o.tenant.empty() ? "-" : c.o.tenant, c.o.code}).Inc();
      metrics_->request_seconds.With({c.o.action})
          .Observe(std::chrono::duration<double>(Clock::now() - c.start).count());
    }
    c.done(std::move(reply));
  };
  auto fail = [finish](Call& c, const Status& st) {
    c.o.code = std::string(WireErrorCode(st.code()));
    finish(c, Error(st, c.req ? &*c.req : nullptr, c.request_id));
  };

  if (static_cast<int64_t>(payload.size()) > limits_.max_request_bytes) {
    return fail(
        *call, InvalidArgument("Malformed request: " + std::to_string(payload.size()) +
                               " bytes, above the limit of " +
                               std::to_string(limits_.max_request_bytes) + " (max_request_bytes)"));
  }
  // Authentication reads the envelope only: nothing proportional to the message is allocated
  // for a request without a valid key.
  const Envelope env =
      PeekEnvelope(payload, limits_.max_api_key_length, limits_.max_tenant_id_length);
  if (!env.map) {
    Status scan = ScanMsgpack(payload, {limits_.max_depth, limits_.max_container_elements});
    return fail(*call, scan.ok() ? InvalidArgument("Malformed request: the request must be a "
                                                   "msgpack map with string keys")
                                 : scan);
  }
  call->request_id = env.request_id;
  call->o.action = "unknown";
  const Action* action = FindAction(env.action);
  if (env.action.empty())
    return fail(*call, InvalidArgument("Malformed request: no 'action' field"));
  if (!action) return fail(*call, InvalidArgument("Unknown action"));
  call->o.action = env.action;
  if (env.action != "ping") {
    if (env.api_key_bad) return fail(*call, Unauthenticated("Invalid API key"));
    if (env.tenant_id_bad) return fail(*call, PermissionDenied("Invalid tenant ID"));
    auto who = auth_.Authenticate(env.api_key, env.tenant_id);
    if (!who.ok()) return fail(*call, who.status());
    call->who = *who;
    call->tenant = who->tenant;
    call->o.tenant = call->tenant;
  }
  if (options_.quotas && !call->tenant.empty()) {
    auto metered = options_.quotas->Start(call->tenant);
    if (!metered.ok()) return fail(*call, metered.status());
    call->metered = std::move(*metered);
  }
  if (admit) {
    if (Status st = admit(call->who); !st.ok()) return fail(*call, st);
  }

  auto decoded = Request::Decode(std::string(payload), limits_);
  if (!decoded.ok()) return fail(*call, decoded.status());
  call->req.emplace(std::move(decoded).value());
  const Request& req = *call->req;

  auto deadline = Deadline(req);
  if (!deadline.ok()) return fail(*call, deadline.status());
  auto action_call = std::make_shared<ActionCall>(
      service_, req, CallContext{call->tenant, call->who.admin, *deadline, nullptr}, limits_);
  action_call->keep_alive = call;
  action_call->out.Bool("success", true);
  // The reply: the handler's fields, or the error. Called once, from the handler (an error
  // before the service was called) or from the service call's completion.
  ActionCall* ac = action_call.get();
  action_call->finish = [call, ac, finish, fail](const Status& st) {
    if (!st.ok()) return fail(*call, st);
    finish(*call, Success(ac->out, &*call->req));
  };
  try {
    if (Status st = action->handler(action_call); !st.ok()) fail(*call, st);
  } catch (const std::bad_alloc&) {
    fail(*call, ResourceExhausted("out of memory while serving the request"));
  } catch (const std::exception& e) {
    fail(*call, Internal(std::string("internal error: ") + e.what()));
  }
}

StatusOr<std::chrono::steady_clock::time_point> FaissxService::Deadline(const Request& req) const {
  using Clock = std::chrono::steady_clock;
  ASSIGN_OR_RETURN(int64_t ms,
                   req.OptionalInt("timeout_ms", options_.request_timeout_ms, 0, 86'400'000));
  if (ms == 0) return Clock::time_point::max();
  return Clock::now() + std::chrono::milliseconds(ms);
}

std::string FaissxService::Success(MapWriter& out, const Request* req) {
  WriteReplyTrailer(out);
  EchoRequestId(req, out);
  return out.Finish();
}

}  // namespace vecgpu::server
