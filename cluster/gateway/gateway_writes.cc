// The gateway's writes, maintenance and reads: split by shard, writes to each shard's primary
// with the map's epoch, reads from a live in-sync replica, the answers combined.
#include <algorithm>
#include <optional>
#include <set>

#include "cluster/gateway/cluster_service.h"
#include "cluster/gateway/gateway_internal.h"
#include "cluster/gateway/shard_merge.h"
#include "cluster/replication/replica_status.h"
#include "core/index_spec.h"

namespace vecgpu::cluster {

void ClusterCollectionService::Write(const CallContext& call, WriteRequest request,
                                     Completion<WriteReply> done) {
  auto read = MapOf(call.tenant, request.collection);
  if (!read.ok()) return done(read.status());
  const int n = static_cast<int>(read->map.shards.size());
  auto split = SplitWrite(request, n);
  if (!split.ok()) return done(split.status());
  std::vector<std::pair<int, WriteRequest>> parts;
  for (ShardWrite& w : *split) {
    w.request.collection = ShardCollectionName(request.collection, w.shard, n);
    parts.emplace_back(w.shard, std::move(w.request));
  }
  auto shared = std::make_shared<Completion<WriteReply>>(std::move(done));
  ToPrimaries<WriteReply, WriteRequest>(
      call, read->map, std::move(parts),
      [](RemoteCollectionService& a, const CallContext& c, WriteRequest r,
         Completion<WriteReply> d) { a.Write(c, std::move(r), std::move(d)); },
      [shared, op = request.op](std::vector<WriteReply> replies) {
        (*shared)(CombineWrites(op, std::move(replies)));
      },
      [shared](Status st) { (*shared)(st); });
}

void ClusterCollectionService::Maintain(const CallContext& call, MaintainRequest request,
                                        Completion<MaintainReply> done) {
  auto read = MapOf(call.tenant, request.collection);
  if (!read.ok()) return done(read.status());
  const int n = static_cast<int>(read->map.shards.size());
  if (request.op == MaintainRequest::Op::kMerge && n > 1) {
    return done(Unimplemented("merge_indices: index '" + request.collection +
                              "' is sharded; merging into a sharded index is not supported"));
  }
  // Training, reclustering and settings apply to every shard (each trains on the same
  // vectors, on its primary; the trained artefacts reach the replicas through the log).
  std::vector<std::pair<int, MaintainRequest>> parts;
  for (int i = 0; i < n; ++i) {
    MaintainRequest r = request;
    r.collection = ShardCollectionName(request.collection, i, n);
    parts.emplace_back(i, std::move(r));
  }
  auto shared = std::make_shared<Completion<MaintainReply>>(std::move(done));
  ToPrimaries<MaintainReply, MaintainRequest>(
      call, read->map, std::move(parts),
      [](RemoteCollectionService& a, const CallContext& c, MaintainRequest r,
         Completion<MaintainReply> d) { a.Maintain(c, std::move(r), std::move(d)); },
      [shared, name = request.collection](std::vector<MaintainReply> replies) {
        MaintainReply out = std::move(replies.front());
        for (size_t i = 1; i < replies.size(); ++i) {
          out.info.backend.ntotal += replies[i].info.backend.ntotal;
          out.recluster.ntotal += replies[i].recluster.ntotal;
          out.ntotal += replies[i].ntotal;
        }
        if (!out.info.name.empty()) out.info.name = name;
        (*shared)(std::move(out));
      },
      [shared](Status st) { (*shared)(st); });
}

void ClusterCollectionService::Read(const CallContext& call, ReadRequest request,
                                    Completion<ReadReply> done) {
  auto read = MapOf(call.tenant, request.collection);
  if (!read.ok()) return done(read.status());
  const CollectionMap& map = read->map;
  const int n = static_cast<int>(map.shards.size());
  using Op = ReadRequest::Op;
  auto one = [call](const Target& t, ReadRequest r, Completion<ReadReply> d) {
    r.collection = t.collection;
    t.agent->Read(t.For(call), std::move(r), std::move(d));
  };
  auto shared = std::make_shared<ReadRequest>(std::move(request));
  auto all = [&](std::vector<int> shards,
                 std::function<StatusOr<ReadReply>(std::vector<ReadReply>)> combine) {
    EachShard<ReadReply>(
        map, std::move(shards),
        [shared, one](const Target& t, Completion<ReadReply> d) { one(t, *shared, std::move(d)); },
        [combine, done = std::move(done)](auto results) {
          std::vector<ReadReply> replies;
          for (auto& [shard, r] : results) {
            if (!r.ok()) return done(r.status());
            replies.push_back(std::move(*r));
          }
          done(combine(std::move(replies)));
        });
  };
  const Op op = shared->op;
  if (n == 1 || op == Op::kLayout || op == Op::kTransforms || op == Op::kApplyTransform ||
      (op == Op::kParameter && shared->parameter != "ntotal")) {
    return all(
        {0}, [](std::vector<ReadReply> r) -> StatusOr<ReadReply> { return std::move(r.front()); });
  }
  switch (op) {
    case Op::kReconstruct:
    case Op::kKeysOf: {
      auto split = std::make_shared<std::vector<ShardRead>>(SplitReadById(*shared, n));
      auto original = std::make_shared<ReadRequest>(*shared);
      std::vector<int> shards;
      for (const ShardRead& s : *split) shards.push_back(s.shard);
      EachShard<ReadReply>(
          map, shards,
          [split, one](const Target& t, Completion<ReadReply> d) {
            for (const ShardRead& s : *split) {
              if (s.shard == t.shard) return one(t, s.request, std::move(d));
            }
            d(Internal("no part of the read for " + t.collection));
          },
          [split, original, done = std::move(done)](auto results) {
            std::vector<ReadReply> replies;
            for (auto& [shard, r] : results) {
              if (!r.ok()) return done(r.status());
              replies.push_back(std::move(*r));
            }
            done(CombineReadById(*original, *split, std::move(replies)));
          });
      return;
    }
    case Op::kGetKeyed:
    case Op::kKeyTimestamp:
      return all({ShardOfRead(*shared, n)}, [](std::vector<ReadReply> r) -> StatusOr<ReadReply> {
        return std::move(r.front());
      });
    case Op::kCountKeyed:
      return all(
          {}, [](std::vector<ReadReply> r) -> StatusOr<ReadReply> { return CombineCountKeyed(r); });
    case Op::kListKeyed:
      return all({}, [count = shared->count](std::vector<ReadReply> r) {
        return MergeListKeyed(std::move(r), count);
      });
    case Op::kParameter:  // ntotal
      return all({}, [](std::vector<ReadReply> r) -> StatusOr<ReadReply> {
        ReadReply out = r.front();
        for (size_t i = 1; i < r.size(); ++i) out.value += r[i].value;
        return out;
      });
    case Op::kRange:
      return done(Unimplemented("reconstruct_n: index '" + shared->collection +
                                "' is sharded by id: positions are per shard; read by id"));
    default:
      return done(Unimplemented("this read of a sharded index is not supported"));
  }
}

}  // namespace vecgpu::cluster
