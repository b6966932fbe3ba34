// vald.v1.Search over Engine::SubmitSearch: each query is queued on its collection and batched
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

Clock::time_point DeadlineOf(const GrpcEnv& env, const pb::Search::Config& cfg,
                             const ServerContext& c) {
  Clock::time_point deadline = Clock::time_point::max();
  if (cfg.timeout() > 0) {
    deadline = Clock::now() + nanoseconds(cfg.timeout());
  } else if (env.request_timeout_ms > 0) {
    deadline = Clock::now() + std::chrono::milliseconds(env.request_timeout_ms);
  }
  // The client's own gRPC deadline, when sooner.
  auto client = c.deadline();
  if (client != std::chrono::system_clock::time_point::max()) {
    auto left = client - std::chrono::system_clock::now();
    deadline = std::min(deadline, Clock::now() + std::chrono::duration_cast<nanoseconds>(left));
  }
  return deadline;
}

// A query handed to Engine::SubmitSearch (so it batches with the collection's other searches);
// Finish waits for its result and turns it into Vald's response.
class PendingSearch {
 public:
  // Checks `q` and submits it; an error is kept for Finish.
  PendingSearch(const GrpcEnv& env, const ServerContext& c, const CallScope& scope,
                StatusOr<Query> q, bool linear)
      : future_(promise_.get_future()) {
    if (!q.ok()) {
      error_ = q.status();
      return;
    }
    query_ = std::move(*q);
    error_ = Start(env, c, scope, linear);
  }

  StatusOr<pb::Search::Response> Finish(const GrpcEnv& env, const CallScope& scope) {
    RETURN_IF_ERROR(error_);
    StatusOr<SearchResult> r = future_.get();
    RETURN_IF_ERROR(r.status());
    if (Clock::now() > deadline_) {
      return DeadlineExceeded("search: config.timeout passed before the results were in");
    }
    const pb::Search::Config& cfg = query_.config;
    std::vector<int64_t> ids;
    std::vector<float> dists;
    for (int j = 0; j < r->k; ++j) {
      const int64_t label = r->labels[j];
      const float d = r->distances[j];
      if (label < 0) continue;
      // Farther than radius: a larger L2 distance, a smaller inner product.
      if (cfg.radius() >= 0 && (inner_product_ ? d < cfg.radius() : d > cfg.radius())) continue;
      ids.push_back(label);
      dists.push_back(d);
    }
    if (ids.size() < std::max<size_t>(1, cfg.min_num())) {
      return NotFound("search: " + std::to_string(ids.size()) + " results" +
                      (cfg.min_num() > 0
                           ? ", fewer than config.min_num " + std::to_string(cfg.min_num())
                           : std::string()));
    }
    ASSIGN_OR_RETURN(std::vector<std::string> keys,
                     env.engine->KeysOf(scope.tenant, scope.collection, ids));
    pb::Search::Response resp;
    resp.set_request_id(query_.request_id);
    for (size_t j = 0; j < ids.size(); ++j) {
      pb::Object::Distance* d = resp.add_results();
      d->set_id(keys[j].empty() ? std::to_string(ids[j]) : keys[j]);  // an id without a key
      d->set_distance(dists[j]);
    }
    return resp;
  }

 private:
  Status Start(const GrpcEnv& env, const ServerContext& c, const CallScope& scope, bool linear) {
    const pb::Search::Config& cfg = query_.config;
    RETURN_IF_ERROR(CheckConfig(env, cfg));
    if (query_.vector.empty()) return InvalidArgument("vector: empty");
    SearchParams params;
    if (linear) {  // the full description: the kind and list count pick the exact search
      ASSIGN_OR_RETURN(CollectionInfo info, env.engine->Describe(scope.tenant, scope.collection));
      inner_product_ = info.spec.metric == Metric::kInnerProduct;
      ASSIGN_OR_RETURN(params, ExactParams(info, scope.collection));
    } else {  // only the metric, for the radius: the lock-free layout, not Describe's stats
      if (cfg.radius() >= 0) {
        ASSIGN_OR_RETURN(VectorLayout layout, env.engine->Layout(scope.tenant, scope.collection));
        inner_product_ = layout.metric == Metric::kInnerProduct;
      }
      if (cfg.nprobe() > 0) params.nprobe = static_cast<int>(std::min(cfg.nprobe(), 1u << 20));
      if (cfg.edge_size() > 0) params.ef_search = std::min(cfg.edge_size(), 1 << 20);
    }
    FloatMatrix q;
    q.rows = 1;
    q.cols = static_cast<int64_t>(query_.vector.size());
    q.data = std::move(query_.vector);
    deadline_ = DeadlineOf(env, cfg, c);
    return env.engine->SubmitSearch(
        scope.tenant, scope.collection, std::move(q), static_cast<int>(cfg.num()), params,
        deadline_, [this](StatusOr<SearchResult> r) { promise_.set_value(std::move(r)); });
  }

  Query query_;
  Status error_;
  bool inner_product_ = false;
  Clock::time_point deadline_ = Clock::time_point::max();
  std::promise<StatusOr<SearchResult>> promise_;
  std::future<StatusOr<SearchResult>> future_;
};

Query FromRequest(const pb::Search::Request& r) {
  return {std::vector<float>(r.vector().begin(), r.vector().end()), r.config(),
          r.config().request_id()};
}

// SearchByID: the stored vector of the id, then a search with it.
StatusOr<Query> FromIdRequest(const GrpcEnv& env, const CallScope& scope,
                              const pb::Search::IDRequest& r) {
  if (r.id().empty()) return InvalidArgument("id: must not be empty");
  ASSIGN_OR_RETURN(KeyedObject o, env.engine->GetKeyed(scope.tenant, scope.collection, r.id()));
  std::string request_id = r.config().request_id().empty() ? r.id() : r.config().request_id();
  return Query{std::move(o.vector), r.config(), std::move(request_id)};
}

template <typename Request>
StatusOr<Query> QueryOf(const GrpcEnv& env, const CallScope& scope, const Request& r) {
  if constexpr (std::is_same_v<Request, pb::Search::IDRequest>) {
    return FromIdRequest(env, scope, r);
  } else {
    return FromRequest(r);
  }
}

template <typename Request>
grpc::Status One(const GrpcEnv& env, ServerContext* c, const Request& req, bool linear,
                 pb::Search::Response* out) {
  auto scope = ScopeOf(env, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  PendingSearch search(env, *c, *scope, QueryOf(env, *scope, req), linear);
  auto resp = search.Finish(env, *scope);
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
        std::make_unique<PendingSearch>(env, *c, *scope, QueryOf(env, *scope, r), linear));
  }
  Status first;
  for (auto& p : pending) {
    auto resp = p->Finish(env, *scope);  // every one, so none is left running
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
// status entry. Requests are submitted as they arrive (up to kStreamInFlight at once, so they
// batch) while a second thread writes the answers.
constexpr size_t kStreamInFlight = 64;

template <typename Request>
grpc::Status Stream(const GrpcEnv& env, ServerContext* c,
                    BiDi<pb::Search::StreamResponse, Request>* s, bool linear) {
  auto scope = ScopeOf(env, *c);
  if (!scope.ok()) return ToGrpc(scope.status());
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<PendingSearch>> queue;  // guarded by mu
  bool reading = true;                               // guarded by mu
  std::thread writer([&] {
    bool open = true;
    for (;;) {
      std::unique_ptr<PendingSearch> p;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return !queue.empty() || !reading; });
        if (queue.empty()) return;
        p = std::move(queue.front());
        queue.pop_front();
      }
      cv.notify_all();
      auto resp = p->Finish(env, *scope);
      if (!open) continue;  // the client is gone: only drain
      pb::Search::StreamResponse out;
      if (resp.ok()) {
        *out.mutable_response() = std::move(*resp);
      } else {
        *out.mutable_status() = ToRpcStatus(resp.status());
      }
      open = s->Write(out);
    }
  });
  Request req;
  while (s->Read(&req)) {
    auto p = std::make_unique<PendingSearch>(env, *c, *scope, QueryOf(env, *scope, req), linear);
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return queue.size() < kStreamInFlight; });
    queue.push_back(std::move(p));
    cv.notify_all();
  }
  {
    std::lock_guard lock(mu);
    reading = false;
  }
  cv.notify_all();
  writer.join();
  return grpc::Status::OK;
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
grpc::Status ValdSearchService::StreamSearch(
    ServerContext* c, BiDi<pb::Search::StreamResponse, pb::Search::Request>* s) {
  return Stream(env_, c, s, false);
}
grpc::Status ValdSearchService::StreamSearchByID(
    ServerContext* c, BiDi<pb::Search::StreamResponse, pb::Search::IDRequest>* s) {
  return Stream(env_, c, s, false);
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
grpc::Status ValdSearchService::StreamLinearSearch(
    ServerContext* c, BiDi<pb::Search::StreamResponse, pb::Search::Request>* s) {
  return Stream(env_, c, s, true);
}
grpc::Status ValdSearchService::StreamLinearSearchByID(
    ServerContext* c, BiDi<pb::Search::StreamResponse, pb::Search::IDRequest>* s) {
  return Stream(env_, c, s, true);
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
