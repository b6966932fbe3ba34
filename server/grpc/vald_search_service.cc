// vald.v1.Search over the service's Search: each query is queued on its collection and batched
// with the searches queued beside it (ZeroMQ's too). Search.Config: num is k (1..max_k),
// radius >= 0 drops results farther than it, min_num asks for at least that many results
// (else NOT_FOUND, as is an empty result), timeout in ns (0: --request-timeout-ms) gives
// DEADLINE_EXCEEDED when the answer is not there in time, nprobe sets the IVF lists visited,
// edge_size HNSW's efSearch; epsilon, ratio, aggregation and filters are accepted and ignored.
// Linear searches are exact: see ExactParams.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

#include "server/grpc/service_call.h"
#include "server/grpc/vald_services.h"

namespace vecgpu::server {
namespace {

using std::chrono::nanoseconds;

// One query of a search call. Owns copies of what it needs, so a stream can reuse its request
// message while the query is still running.
struct Query {
  std::vector<float> vector;
  pb::Search::Config config;
  std::string request_id;
};

// The params that make a search on `scope`'s collection exact (LinearSearch): none for flat
// indexes; nprobe = nlist for IVF with flat lists (every list visited, exact distances).
// Lossy kinds (PQ, SQ, HNSW, ...) cannot search exactly: UNIMPLEMENTED.
StatusOr<SearchParams> ExactParams(const CollectionInfo& info, const std::string& name) {
  const std::string kind = info.spec.kind();
  SearchParams p;
  if (kind == "FLAT" || kind == "BINARY_FLAT") return p;
  if (kind == "IVF" || kind == "BINARY_IVF") {
    p.nprobe = info.spec.nlist;
    return p;
  }
  return Unimplemented("linear search: collection '" + name + "' is a " + kind +
                       " index, which cannot search exactly (LinearSearch needs a Flat or IVF "
                       "index with flat lists)");
}

Status CheckConfig(const GrpcEnv& env, const pb::Search::Config& cfg) {
  if (cfg.num() == 0) return InvalidArgument("config.num: must be at least 1");
  if (cfg.num() > static_cast<uint32_t>(env.limits.max_k)) {
    return InvalidArgument("config.num: " + std::to_string(cfg.num()) + ", above the limit of " +
                           std::to_string(env.limits.max_k));
  }
  if (cfg.timeout() < 0) return InvalidArgument("config.timeout: negative");
  if (cfg.min_num() > cfg.num()) return InvalidArgument("config.min_num: above config.num");
  return Status::Ok();
}

// The deadline a Search.Config asks for: its timeout (0: none of its own; the client's and
// --request-timeout-ms then apply, see ServiceCall).
Clock::time_point ConfigDeadline(const pb::Search::Config& cfg) {
  if (cfg.timeout() > 0) return Clock::now() + nanoseconds(cfg.timeout());
  return Clock::time_point::max();
}

// A query handed to the service's Search (so it batches with the collection's other
// searches); Finish waits for its result and turns it into Vald's response.
class PendingSearch {
 public:
  // Checks `q` and submits it; an error is kept for Finish. `on_ready` (if set) is called,
  // from any thread, once the result is in, when submitted() is true.
  PendingSearch(const GrpcEnv& env, const grpc::ServerContextBase& c, const CallScope& scope,
                StatusOr<Query> q, bool linear, std::function<void()> on_ready = {})
      : service_(env.service), on_ready_(std::move(on_ready)) {
    if (!q.ok()) {
      error_ = q.status();
      return;
    }
    query_ = std::move(*q);
    error_ = CheckConfig(env, query_.config);
    if (!error_.ok()) return;
    call_ = std::make_unique<ServiceCall>(env, c, scope, ConfigDeadline(query_.config));
    error_ = Start(scope, linear);
  }

  // Whether the search was handed to the service (else Finish returns its error at once).
  bool submitted() const { return submitted_; }

  StatusOr<pb::Search::Response> Finish() {
    RETURN_IF_ERROR(error_);
    StatusOr<SearchReply> reply = call_->Wait(future_);
    RETURN_IF_ERROR(reply.status());
    if (Clock::now() > call_->context().deadline) {
      return DeadlineExceeded("search: config.timeout passed before the results were in");
    }
    const SearchResult& r = reply->knn;
    const pb::Search::Config& cfg = query_.config;
    std::vector<int64_t> ids;
    std::vector<float> dists;
    std::vector<const std::string*> keys;
    for (int j = 0; j < r.k; ++j) {
      const int64_t label = r.labels[j];
      const float d = r.distances[j];
      if (label < 0) continue;
      // Farther than radius: a larger L2 distance, a smaller inner product.
      if (cfg.radius() >= 0 && (inner_product_ ? d < cfg.radius() : d > cfg.radius())) continue;
      ids.push_back(label);
      dists.push_back(d);
      keys.push_back(&reply->keys.at(j));
    }
    if (ids.size() < std::max<size_t>(1, cfg.min_num())) {
      return NotFound("search: " + std::to_string(ids.size()) + " results" +
                      (cfg.min_num() > 0
                           ? ", fewer than config.min_num " + std::to_string(cfg.min_num())
                           : std::string()));
    }
    pb::Search::Response resp;
    resp.set_request_id(query_.request_id);
    for (size_t j = 0; j < ids.size(); ++j) {
      pb::Object::Distance* d = resp.add_results();
      d->set_id(keys[j]->empty() ? std::to_string(ids[j]) : *keys[j]);  // an id without a key
      d->set_distance(dists[j]);
    }
    return resp;
  }

 private:
  Status Start(const CallScope& scope, bool linear) {
    const pb::Search::Config& cfg = query_.config;
    if (query_.vector.empty()) return InvalidArgument("vector: empty");
    SearchRequest req;
    req.collection = scope.collection;
    if (linear) {  // the full description: the kind and list count pick the exact search
      ASSIGN_OR_RETURN(CollectionInfo info, call_->Describe(scope.collection));
      inner_product_ = info.spec.metric == Metric::kInnerProduct;
      ASSIGN_OR_RETURN(req.params, ExactParams(info, scope.collection));
    } else {  // only the metric, for the radius: the cached layout, not Describe's stats
      if (cfg.radius() >= 0) {
        ReadRequest layout;
        layout.op = ReadRequest::Op::kLayout;
        layout.collection = scope.collection;
        ASSIGN_OR_RETURN(ReadReply r, call_->Read(std::move(layout)));
        inner_product_ = r.layout.metric == Metric::kInnerProduct;
      }
      if (cfg.nprobe() > 0) req.params.nprobe = static_cast<int>(std::min(cfg.nprobe(), 1u << 20));
      if (cfg.edge_size() > 0) req.params.ef_search = std::min(cfg.edge_size(), 1 << 20);
    }
    req.queries.rows = 1;
    req.queries.cols = static_cast<int64_t>(query_.vector.size());
    req.queries.data = std::move(query_.vector);
    req.k = static_cast<int>(cfg.num());
    req.with_keys = true;
    auto done = std::make_shared<std::promise<StatusOr<SearchReply>>>();
    future_ = done->get_future();
    submitted_ = true;
    service_->Search(call_->context(), std::move(req),
                     [done, on_ready = on_ready_](StatusOr<SearchReply> r) {
                       done->set_value(std::move(r));
                       if (on_ready) on_ready();
                     });
    return Status::Ok();
  }

  CollectionService* service_;
  const std::function<void()> on_ready_;
  bool submitted_ = false;
  Query query_;
  Status error_;
  bool inner_product_ = false;
  std::unique_ptr<ServiceCall> call_;
  std::future<StatusOr<SearchReply>> future_;
};

Query FromRequest(const pb::Search::Request& r) {
  return {std::vector<float>(r.vector().begin(), r.vector().end()), r.config(),
          r.config().request_id()};
}

// SearchByID: the stored vector of the id, then a search with it.
StatusOr<Query> FromIdRequest(const GrpcEnv& env, const grpc::ServerContextBase& c,
                              const CallScope& scope,
                              const pb::Search::IDRequest& r) {
  if (r.id().empty()) return InvalidArgument("id: must not be empty");
  ReadRequest get;
  get.op = ReadRequest::Op::kGetKeyed;
  get.collection = scope.collection;
  get.keys = {r.id()};
  ASSIGN_OR_RETURN(ReadReply got, ServiceCall(env, c, scope).Read(std::move(get)));
  KeyedObject& o = got.objects.at(0);
  std::string request_id = r.config().request_id().empty() ? r.id() : r.config().request_id();
  return Query{std::move(o.vector), r.config(), std::move(request_id)};
}

template <typename Request>
StatusOr<Query> QueryOf(const GrpcEnv& env, const grpc::ServerContextBase& c, const CallScope& scope,
                        const Request& r) {
  if constexpr (std::is_same_v<Request, pb::Search::IDRequest>) {
    return FromIdRequest(env, c, scope, r);
  } else {
    return FromRequest(r);
  }
}

template <typename Request>
grpc::Status One(const GrpcEnv& env, ServerContext* c, const Request& req, bool linear,
                 pb::Search::Response* out) {
  auto scope = ScopeOf(env, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  PendingSearch search(env, *c, *scope, QueryOf(env, *c, *scope, req), linear);
  auto resp = search.Finish();
  if (!resp.ok()) return ToGrpc(resp.status());
  *out = std::move(*resp);
  return grpc::Status::OK;
}

// Multi*: every query submitted before any is waited for (so they batch); any error fails the
// whole call, as Vald's Multi* do.
template <typename MultiRequest>
grpc::Status Multi(const GrpcEnv& env, ServerContext* c, const MultiRequest& req, bool linear,
                   pb::Search::Responses* out) {
  auto scope = ScopeOf(env, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  if (req.requests_size() > env.limits.max_query_vectors) {
    return ToGrpc(InvalidArgument("requests: " + std::to_string(req.requests_size()) +
                                  " queries, above the limit of " +
                                  std::to_string(env.limits.max_query_vectors) + " per call"));
  }
  if (req.requests_size() == 0) return ToGrpc(InvalidArgument("requests: no query given"));
  std::vector<std::unique_ptr<PendingSearch>> pending;
  for (const auto& r : req.requests()) {
    pending.push_back(
        std::make_unique<PendingSearch>(env, *c, *scope, QueryOf(env, *c, *scope, r), linear));
  }
  Status first;
  for (auto& p : pending) {
    auto resp = p->Finish();  // every one, so none is left running
    if (!resp.ok()) {
      if (first.ok()) first = resp.status();
      continue;
    }
    *out->add_responses() = std::move(*resp);
  }
  if (!first.ok()) {
    out->Clear();
    return ToGrpc(first);
  }
  return grpc::Status::OK;
}

// Stream*: one response per request, in request order, the error of a failing one as its
// status entry. Up to kStreamInFlight requests of a stream are in the service at once, so
// they batch; a stream thread only submits each one (and reads the key of a search by id):
// none waits for a result.
constexpr size_t kStreamInFlight = 64;

pb::Search::StreamResponse StreamAnswer(StatusOr<pb::Search::Response> resp) {
  pb::Search::StreamResponse out;
  if (resp.ok()) {
    *out.mutable_response() = std::move(*resp);
  } else {
    *out.mutable_status() = ToRpcStatus(resp.status());
  }
  return out;
}

pb::Search::StreamResponse StreamError(const Status& st) { return StreamAnswer(st); }

// One search of a stream: answered when both its submission returned and its result is in
// (either may come first).
struct StreamSearch {
  std::unique_ptr<PendingSearch> pending;
  std::function<void(pb::Search::StreamResponse)> answer;
  std::atomic<int> steps_left{2};

  void Step() {
    if (steps_left.fetch_sub(1) == 1) answer(StreamAnswer(pending->Finish()));
  }
};

template <typename Request>
Stream<Request, pb::Search::StreamResponse>* StreamOf(const GrpcEnv& env,
                                                      CallbackServerContext* c, bool linear) {
  auto scope = ScopeOf(env, *c);
  using Reactor = StreamReactor<Request, pb::Search::StreamResponse>;
  return new Reactor(
      *env.streams, scope.status(), kStreamInFlight,
      [&env, c, scope, linear](Request req, const std::shared_ptr<std::atomic<bool>>&,
                               typename Reactor::Answer answer) {
        auto job = std::make_shared<StreamSearch>();
        job->answer = std::move(answer);
        job->pending = std::make_unique<PendingSearch>(
            env, *c, *scope, QueryOf(env, *c, *scope, req), linear, [job] { job->Step(); });
        if (!job->pending->submitted()) return job->answer(StreamAnswer(job->pending->Finish()));
        job->Step();
      },
      StreamError);
}

}  // namespace

grpc::Status ValdSearchService::Search(ServerContext* c, const pb::Search::Request* req,
                                       pb::Search::Response* out) {
  return One(env_, c, *req, false, out);
}
grpc::Status ValdSearchService::SearchByID(ServerContext* c, const pb::Search::IDRequest* req,
                                           pb::Search::Response* out) {
  return One(env_, c, *req, false, out);
}
Stream<pb::Search::Request, pb::Search::StreamResponse>* ValdSearchService::StreamSearch(
    CallbackServerContext* c) {
  return StreamOf<pb::Search::Request>(env_, c, false);
}
Stream<pb::Search::IDRequest, pb::Search::StreamResponse>* ValdSearchService::StreamSearchByID(
    CallbackServerContext* c) {
  return StreamOf<pb::Search::IDRequest>(env_, c, false);
}
grpc::Status ValdSearchService::MultiSearch(ServerContext* c, const pb::Search::MultiRequest* req,
                                            pb::Search::Responses* out) {
  return Multi(env_, c, *req, false, out);
}
grpc::Status ValdSearchService::MultiSearchByID(ServerContext* c,
                                                const pb::Search::MultiIDRequest* req,
                                                pb::Search::Responses* out) {
  return Multi(env_, c, *req, false, out);
}
grpc::Status ValdSearchService::LinearSearch(ServerContext* c, const pb::Search::Request* req,
                                             pb::Search::Response* out) {
  return One(env_, c, *req, true, out);
}
grpc::Status ValdSearchService::LinearSearchByID(ServerContext* c, const pb::Search::IDRequest* req,
                                                 pb::Search::Response* out) {
  return One(env_, c, *req, true, out);
}
Stream<pb::Search::Request, pb::Search::StreamResponse>* ValdSearchService::StreamLinearSearch(
    CallbackServerContext* c) {
  return StreamOf<pb::Search::Request>(env_, c, true);
}
Stream<pb::Search::IDRequest, pb::Search::StreamResponse>*
ValdSearchService::StreamLinearSearchByID(CallbackServerContext* c) {
  return StreamOf<pb::Search::IDRequest>(env_, c, true);
}
grpc::Status ValdSearchService::MultiLinearSearch(ServerContext* c,
                                                  const pb::Search::MultiRequest* req,
                                                  pb::Search::Responses* out) {
  return Multi(env_, c, *req, true, out);
}
grpc::Status ValdSearchService::MultiLinearSearchByID(ServerContext* c,
                                                      const pb::Search::MultiIDRequest* req,
                                                      pb::Search::Responses* out) {
  return Multi(env_, c, *req, true, out);
}

}  // namespace vecgpu::server
