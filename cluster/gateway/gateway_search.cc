// The gateway's searches: lanes that batch concurrent k-NN searches of a collection, and each
// search over every shard, merged.
#include <algorithm>
#include <optional>
#include <set>

#include "cluster/gateway/cluster_service.h"
#include "cluster/gateway/gateway_internal.h"
#include "cluster/gateway/shard_merge.h"
#include "cluster/replication/replica_status.h"
#include "core/index_spec.h"

namespace vecgpu::cluster {

void ClusterCollectionService::SearchShards(const CallContext& call, const CollectionMap& map,
                                            SearchRequest request, Completion<SearchReply> done) {
  const int64_t nq = request.queries.rows;
  const int k = request.k;
  const bool partial = request.allow_partial || options_.allow_partial;
  const auto kind = request.kind;
  const bool larger = map.inner_product;
  auto shared = std::make_shared<SearchRequest>(std::move(request));
  const int n = static_cast<int>(map.shards.size());
  EachShard<SearchReply>(
      map, {},
      [call, shared](const Target& t, Completion<SearchReply> d) {
        SearchRequest r = *shared;
        r.collection = t.collection;
        t.agent->Search(t.For(call), std::move(r), std::move(d));
      },
      [done = std::move(done), nq, k, partial, kind, larger, n](auto results) {
        std::vector<SearchReply> parts;
        std::vector<std::string> missing;
        for (auto& [shard, r] : results) {
          if (r.ok()) {
            parts.push_back(std::move(*r));
            continue;
          }
          // An answer about the request (not about reaching the shard) is the answer.
          if (!partial || r.status().code() != StatusCode::kUnavailable) return done(r.status());
          missing.push_back(r.status().message());
        }
        if (n == 1 && missing.empty()) return done(std::move(parts.front()));
        SearchReply out;
        if (kind == SearchRequest::Kind::kRange) {
          std::vector<vecgpu::RangeResult> ranges;
          for (auto& p : parts) ranges.push_back(std::move(p.range));
          out.range = MergeRange(std::move(ranges), nq, larger);
        } else {
          out = MergeKnn(std::move(parts), nq, k, larger);
        }
        out.missing_shards = std::move(missing);
        done(std::move(out));
      });
}

void ClusterCollectionService::Search(const CallContext& call, SearchRequest request,
                                      Completion<SearchReply> done) {
  if (request.kind != SearchRequest::Kind::kKnn) {
    auto read = MapOf(call.tenant, request.collection);
    if (!read.ok()) return done(read.status());
    search_requests_.fetch_add(1);
    searches_sent_.fetch_add(1);
    return SearchShards(call, read->map, std::move(request), std::move(done));
  }
  // One lane per (tenant, collection, k, parameters, keys): while a search of the lane is in
  // flight, the next ones wait to go together.
  const SearchParams& p = request.params;
  const std::string lane = call.tenant + '\0' + request.collection + '\0' +
                           std::to_string(request.k) + '/' + std::to_string(p.nprobe.value_or(-1)) +
                           '/' + std::to_string(p.ef_search.value_or(-1)) + '/' +
                           (request.with_keys ? "k" : "") + (request.allow_partial ? "p" : "") +
                           '/' + std::to_string(request.queries.cols);
  {
    std::lock_guard lock(lanes_mu_);
    Lane& l = lanes_[lane];
    if (l.in_flight >= kLaneInFlight) {
      l.queued.push_back({call, std::move(request), std::move(done)});
      return;
    }
    ++l.in_flight;
  }
  std::vector<PendingSearch> batch;
  batch.push_back({call, std::move(request), std::move(done)});
  SendBatch(lane, std::move(batch));
}

void ClusterCollectionService::SendBatch(const std::string& lane,
                                         std::vector<PendingSearch> batch) {
  // Taken back or expired while waiting (or the gateway is stopping): answered now, not sent.
  std::erase_if(batch, [this](PendingSearch& p) {
    if (stopping_.load()) {
      p.done(Unavailable("the gateway is shutting down"));
      return true;
    }
    if (p.call.Cancelled()) {
      p.done(Cancelled("the call was cancelled by its caller"));
      return true;
    }
    if (Clock::now() >= p.call.deadline) {
      p.done(DeadlineExceeded("the request's deadline passed while it waited to be sent"));
      return true;
    }
    return false;
  });
  auto next = [this, lane] {
    std::vector<PendingSearch> more;
    {
      std::lock_guard lock(lanes_mu_);
      auto it = lanes_.find(lane);
      auto& queued = it->second.queued;
      // Up to kMaxBatchRows query rows in one search; the rest go in the next.
      size_t take = 0;
      int64_t rows = 0;
      while (take < queued.size() && (take == 0 || rows < kMaxBatchRows)) {
        rows += queued[take++].request.queries.rows;
      }
      more.assign(std::make_move_iterator(queued.begin()),
                  std::make_move_iterator(queued.begin() + static_cast<std::ptrdiff_t>(take)));
      queued.erase(queued.begin(), queued.begin() + static_cast<std::ptrdiff_t>(take));
      // Nothing waits: this search's place in flight is free (the lane closes with the last).
      if (more.empty() && --it->second.in_flight == 0) lanes_.erase(it);
    }
    if (!more.empty()) SendBatch(lane, std::move(more));
  };
  if (batch.empty()) return next();
  const PendingSearch& first = batch.front();
  auto read = MapOf(first.call.tenant, first.request.collection);
  if (!read.ok()) {
    for (auto& p : batch) p.done(read.status());
    return next();
  }
  // One request of every query, with the latest deadline of the batch (each answer is
  // checked against its own).
  SearchRequest merged;
  merged.collection = first.request.collection;
  merged.k = first.request.k;
  merged.params = first.request.params;
  merged.with_keys = first.request.with_keys;
  merged.allow_partial = first.request.allow_partial;
  merged.queries.cols = first.request.queries.cols;
  CallContext call = first.call;
  call.cancelled = nullptr;  // one caller's cancel must not take the others' back
  std::vector<int64_t> rows;
  for (const PendingSearch& p : batch) {
    merged.queries.rows += p.request.queries.rows;
    merged.queries.data.insert(merged.queries.data.end(), p.request.queries.data.begin(),
                               p.request.queries.data.end());
    rows.push_back(p.request.queries.rows);
    call.deadline = std::max(call.deadline, p.call.deadline);
  }
  search_requests_.fetch_add(static_cast<int64_t>(batch.size()));
  searches_sent_.fetch_add(1);
  auto shared = std::make_shared<std::vector<PendingSearch>>(std::move(batch));
  SearchShards(
      call, read->map, std::move(merged),
      [shared, rows = std::move(rows), next](StatusOr<SearchReply> r) {
        int64_t total = 0;
        for (int64_t n : rows) total += n;
        if (r.ok() &&
            (r->knn.nq != total || static_cast<int64_t>(r->knn.labels.size()) != total * r->knn.k ||
             (!r->keys.empty() && r->keys.size() != r->knn.labels.size()))) {
          r = Internal("agent answered a search of " + std::to_string(total) + " queries with " +
                       std::to_string(r->knn.nq));
        }
        int64_t row = 0;
        for (size_t i = 0; i < shared->size(); ++i) {
          PendingSearch& p = (*shared)[i];
          if (!r.ok()) {
            p.done(r.status());
            continue;
          }
          if (Clock::now() > p.call.deadline) {
            p.done(DeadlineExceeded("the request's deadline passed before its results were in"));
            row += rows[i];
            continue;
          }
          const int k = r->knn.k;
          SearchReply one;
          one.knn.nq = rows[i];
          one.knn.k = k;
          const auto from = row * k, to = (row + rows[i]) * k;
          one.knn.distances.assign(r->knn.distances.begin() + from, r->knn.distances.begin() + to);
          one.knn.labels.assign(r->knn.labels.begin() + from, r->knn.labels.begin() + to);
          if (!r->keys.empty()) one.keys.assign(r->keys.begin() + from, r->keys.begin() + to);
          one.missing_shards = r->missing_shards;
          row += rows[i];
          p.done(std::move(one));
        }
        next();
      });
}

}  // namespace vecgpu::cluster
