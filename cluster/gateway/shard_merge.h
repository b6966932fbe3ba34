#pragma once

// The gateway's arithmetic for a collection of S shards: how a write or read by id is split
// among the shards, and how the shards' answers become one answer, as if one engine had
// given it. A row with a client-chosen id lives on ShardOfId(id, S), a keyed object on
// ShardOfKey(key, S) (cluster/placement/rendezvous.h). Pure functions over the service
// contract's values (core/service/collection_service.h): no I/O, no state, thread-safe.
//
// Empty k-NN slots follow FAISS's CPU convention (core/types.h): label -1 and distance
// +FLT_MAX, or -FLT_MAX when larger is better (inner product). The engine does not always
// write -FLT_MAX for inner product (an empty index or an IDMap view's padding says +FLT_MAX),
// so a slot is judged empty by its label alone.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/service/collection_service.h"
#include "core/util/status.h"

namespace vecgpu::cluster {

// The per-shard k-NN replies to the same nq queries, merged per query into the k best by
// distance (smaller first; larger first when `larger_is_better`), ties to the smaller id.
// A part may have a smaller k than `k`; the merged reply has `k` slots a query, the empty
// ones last. An id found by several parts is kept once, at its best distance; when the
// parts carry keys, an entry is an (id, key) pair, since keyed objects get their ids from
// each shard's own counter and two shards may give one id to different keys.
// Carried along when every part has them: `vectors` (kKnnWithVectors; per query one row per
// found neighbour in result order, none for empty slots, as Engine::SearchAndReconstruct
// gives them) and `keys` (with_keys; one per slot, "" for an empty one).
// REQUIRES: each part has knn.nq == nq, knn.k <= k and nq * knn.k labels and distances.
SearchReply MergeKnn(std::vector<SearchReply> parts, int64_t nq, int k, bool larger_is_better);

// The per-shard range results of the same nq queries: per query the union of the parts'
// entries, an id kept once at its best distance, best first (ties to the smaller id). FAISS
// leaves a range result unordered; the merged one is sorted so it is the same every time.
// REQUIRES: each part has nq + 1 lims. (vecgpu::, not the etcd client's cluster::RangeResult.)
vecgpu::RangeResult MergeRange(std::vector<vecgpu::RangeResult> parts, int64_t nq,
                               bool larger_is_better);

// One shard's part of a write.
struct ShardWrite {
  int shard = 0;
  WriteRequest request;
};

// The parts of `w` for a collection of `shards` shards, by ascending shard; only shards
// that get something, except kReset and kRemoveKeyedWhere, which every shard gets whole.
// kAdd: rows by ShardOfId of their ids (order kept within a shard); without ids only when
// `shards` is 1 (a sharded collection cannot number rows itself). kRemove: ids by shard.
// kReplace: the shard of ids[0]. kPutKeyed: objects by ShardOfKey. kRemoveKeyed: keys by
// shard. kStampKey: the shard of keys[0]. A kAdd, kRemove, kPutKeyed or kRemoveKeyed with
// nothing to route goes to every shard whole, so each still checks it and reports its size.
// With `shards` == 1: one part, `w` unchanged.
// INVALID_ARGUMENT for `shards` < 1, ids that do not match the rows, an add without ids, and
// a replace or stamp that names no id or key.
StatusOr<std::vector<ShardWrite>> SplitWrite(const WriteRequest& w, int shards);

// The shards' replies to the parts of one write of `op`: counts and ntotal summed (each
// shard reports its own ntotal), keys concatenated in reply order.
WriteReply CombineWrites(WriteRequest::Op op, std::vector<WriteReply> replies);

// One shard's part of a read by id: `request` asks for the ids at `positions` of the
// original request, in that order.
struct ShardRead {
  int shard = 0;
  ReadRequest request;
  std::vector<size_t> positions;  // into the original request's ids
};

// The parts of a kReconstruct or kKeysOf read, by ascending shard; only shards that get
// ids. Without ids, shard 0 gets the request whole (it still answers NOT_FOUND for a missing
// collection and the vectors' width).
std::vector<ShardRead> SplitReadById(const ReadRequest& r, int shards);

// The replies to `split` (one each, in its order) reassembled in `original`'s id order.
// INTERNAL when a reply does not hold one vector or key per id it was asked for;
// INVALID_ARGUMENT for an op other than kReconstruct and kKeysOf.
StatusOr<ReadReply> CombineReadById(const ReadRequest& original,
                                    const std::vector<ShardRead>& split,
                                    std::vector<ReadReply> replies);

// The one shard a kGetKeyed or kKeyTimestamp read goes to: that of keys[0] (0 without keys;
// that shard then refuses the request).
int ShardOfRead(const ReadRequest& r, int shards);

// kCountKeyed: the shards' counts summed.
ReadReply CombineCountKeyed(const std::vector<ReadReply>& replies);

// kListKeyed: each shard is asked for `count` objects with ids after the same start and
// answers them by ascending id, with each object's id in `ids` (parallel to `objects`). The
// merged page holds the first `count` by (id, shard); ids are per shard, so an id the cut
// falls inside is kept whole (up to S - 1 objects over `count`): the next page, after
// last_id, must not skip another shard's object with the same id. last_id is the last kept
// id, -1 when none. Every object up to last_id of a shard that returned a full page is in
// it, since such a shard's last id is at least the cut.
// A single reply passes unchanged (it needs no ids). INTERNAL when, among several replies,
// one's ids do not match its objects (an agent that does not report them).
StatusOr<ReadReply> MergeListKeyed(std::vector<ReadReply> replies, int64_t count);

}  // namespace vecgpu::cluster
