#include "cluster/gateway/shard_merge.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "cluster/placement/rendezvous.h"

namespace vecgpu::cluster {
namespace {

// Whether distance `a` ranks before `b`, ties to the smaller id.
bool Before(float a, int64_t a_id, float b, int64_t b_id, bool larger_is_better) {
  if (a != b) return larger_is_better ? a > b : a < b;
  return a_id < b_id;
}

// The part's neighbour vectors, when they are as Engine::SearchAndReconstruct gives them: per
// query, one row per found neighbour. A malformed part is not carried rather than misread.
bool HasVectors(const SearchReply& part, int64_t nq) {
  if (static_cast<int64_t>(part.vectors.size()) != nq) return false;
  for (int64_t q = 0; q < nq; ++q) {
    const FloatMatrix& m = part.vectors[q];
    int64_t found = 0;
    for (int j = 0; j < part.knn.k; ++j) found += part.knn.labels[q * part.knn.k + j] >= 0;
    if (m.rows != found || static_cast<int64_t>(m.data.size()) != m.rows * m.cols) return false;
  }
  return true;
}

bool HasKeys(const SearchReply& part, int64_t nq) {
  return static_cast<int64_t>(part.keys.size()) == nq * part.knn.k;
}

// One found neighbour of a query in one part.
struct Hit {
  float distance;
  int64_t id;
  std::string_view key;  // "" without keys
  size_t part;
  int64_t row;  // in the part's vectors of the query
};

}  // namespace

SearchReply MergeKnn(std::vector<SearchReply> parts, int64_t nq, int k, bool larger_is_better) {
  bool with_vectors = !parts.empty();
  bool with_keys = !parts.empty();
  for (const SearchReply& p : parts) {
    with_vectors = with_vectors && HasVectors(p, nq);
    with_keys = with_keys && HasKeys(p, nq);
  }
  SearchReply out;
  SearchResult& r = out.knn;
  r.nq = nq;
  r.k = k;
  r.labels.assign(nq * k, -1);
  r.distances.assign(nq * k, larger_is_better ? -std::numeric_limits<float>::max()
                                              : std::numeric_limits<float>::max());
  if (with_keys) out.keys.assign(nq * k, "");
  if (with_vectors) out.vectors.resize(nq);

  std::vector<Hit> hits;
  std::set<std::pair<int64_t, std::string_view>> seen;
  for (int64_t q = 0; q < nq; ++q) {
    hits.clear();
    for (size_t p = 0; p < parts.size(); ++p) {
      const SearchResult& in = parts[p].knn;
      int64_t row = 0;
      for (int j = 0; j < in.k; ++j) {
        const int64_t i = q * in.k + j;
        if (in.labels[i] < 0) continue;  // empty, whatever its distance says
        const std::string_view key = with_keys ? std::string_view(parts[p].keys[i]) : "";
        hits.push_back({in.distances[i], in.labels[i], key, p, row++});
      }
    }
    std::sort(hits.begin(), hits.end(), [&](const Hit& a, const Hit& b) {
      if (a.distance != b.distance || a.id != b.id) {
        return Before(a.distance, a.id, b.distance, b.id, larger_is_better);
      }
      return std::tie(a.key, a.part) < std::tie(b.key, b.part);
    });
    // The first of an (id, key) after sorting is its best entry.
    seen.clear();
    std::vector<const Hit*> kept;
    for (const Hit& h : hits) {
      if (static_cast<int>(kept.size()) == k) break;
      if (seen.insert({h.id, h.key}).second) kept.push_back(&h);
    }
    for (size_t j = 0; j < kept.size(); ++j) {
      r.labels[q * k + j] = kept[j]->id;
      r.distances[q * k + j] = kept[j]->distance;
      if (with_keys) out.keys[q * k + j] = std::string(kept[j]->key);
    }
    if (!with_vectors) continue;
    FloatMatrix& v = out.vectors[q];
    for (const SearchReply& p : parts) v.cols = std::max(v.cols, p.vectors[q].cols);
    v.rows = static_cast<int64_t>(kept.size());
    v.data.resize(v.rows * v.cols);
    for (size_t j = 0; j < kept.size(); ++j) {
      const FloatMatrix& from = parts[kept[j]->part].vectors[q];
      std::copy_n(from.row(kept[j]->row), from.cols, v.data.data() + j * v.cols);
    }
  }
  return out;
}

vecgpu::RangeResult MergeRange(std::vector<vecgpu::RangeResult> parts, int64_t nq,
                               bool larger_is_better) {
  vecgpu::RangeResult out;
  out.lims.assign(1, 0);
  std::vector<std::pair<float, int64_t>> entries;  // (distance, id)
  for (int64_t q = 0; q < nq; ++q) {
    entries.clear();
    for (const vecgpu::RangeResult& p : parts) {
      for (int64_t i = p.lims[q]; i < p.lims[q + 1]; ++i) {
        entries.emplace_back(p.distances[i], p.labels[i]);
      }
    }
    std::sort(entries.begin(), entries.end(), [&](const auto& a, const auto& b) {
      return Before(a.first, a.second, b.first, b.second, larger_is_better);
    });
    std::set<int64_t> seen;
    for (const auto& [distance, id] : entries) {
      if (!seen.insert(id).second) continue;
      out.distances.push_back(distance);
      out.labels.push_back(id);
    }
    out.lims.push_back(static_cast<int64_t>(out.labels.size()));
  }
  return out;
}

namespace {

// `w` without the lists a split divides (rows, ids, objects, keys).
WriteRequest Header(const WriteRequest& w) {
  WriteRequest h;
  h.op = w.op;
  h.collection = w.collection;
  h.vectors.cols = w.vectors.cols;
  h.mode = w.mode;
  h.skip_strict = w.skip_strict;
  h.conditions = w.conditions;
  h.timestamp = w.timestamp;
  h.force = w.force;
  return h;
}

std::vector<ShardWrite> EveryShard(const WriteRequest& w, int shards) {
  std::vector<ShardWrite> out;
  for (int s = 0; s < shards; ++s) out.push_back({s, w});
  return out;
}

// Parts indexed by shard, each starting as Header(w); NonEmpty() drops those that got nothing.
std::vector<ShardWrite> Blank(const WriteRequest& w, int shards) {
  std::vector<ShardWrite> out;
  for (int s = 0; s < shards; ++s) out.push_back({s, Header(w)});
  return out;
}

std::vector<ShardWrite> NonEmpty(std::vector<ShardWrite> all) {
  std::erase_if(all, [](const ShardWrite& p) {
    const WriteRequest& r = p.request;
    return r.vectors.rows == 0 && r.ids.empty() && r.objects.empty() && r.keys.empty();
  });
  return all;
}

}  // namespace

StatusOr<std::vector<ShardWrite>> SplitWrite(const WriteRequest& w, int shards) {
  using Op = WriteRequest::Op;
  if (shards < 1)
    return InvalidArgument("shards: must be at least 1, got " + std::to_string(shards));
  if (shards == 1) return std::vector<ShardWrite>{{0, w}};
  std::vector<ShardWrite> parts = Blank(w, shards);
  switch (w.op) {
    case Op::kAdd:
      if (w.ids.empty() && w.vectors.rows == 0) return EveryShard(w, shards);
      if (w.ids.empty()) {
        return InvalidArgument("ids: the collection is sharded by id (S=" + std::to_string(shards) +
                               "), so an add needs ids (add_with_ids)");
      }
      if (static_cast<int64_t>(w.ids.size()) != w.vectors.rows ||
          static_cast<int64_t>(w.vectors.data.size()) != w.vectors.rows * w.vectors.cols) {
        return InvalidArgument("ids: " + std::to_string(w.ids.size()) + " ids for " +
                               std::to_string(w.vectors.rows) + " vectors");
      }
      for (size_t i = 0; i < w.ids.size(); ++i) {
        WriteRequest& to = parts[ShardOfId(w.ids[i], shards)].request;
        to.ids.push_back(w.ids[i]);
        const float* row = w.vectors.row(static_cast<int64_t>(i));
        to.vectors.data.insert(to.vectors.data.end(), row, row + w.vectors.cols);
        ++to.vectors.rows;
      }
      return NonEmpty(std::move(parts));
    case Op::kRemove:
      if (w.ids.empty()) return EveryShard(w, shards);
      for (int64_t id : w.ids) parts[ShardOfId(id, shards)].request.ids.push_back(id);
      return NonEmpty(std::move(parts));
    case Op::kReplace:
      if (w.ids.empty()) return InvalidArgument("ids: a replace names one id");
      return std::vector<ShardWrite>{{ShardOfId(w.ids[0], shards), w}};
    case Op::kPutKeyed:
      if (w.objects.empty()) return EveryShard(w, shards);
      for (const KeyedObject& o : w.objects) {
        parts[ShardOfKey(o.key, shards)].request.objects.push_back(o);
      }
      return NonEmpty(std::move(parts));
    case Op::kRemoveKeyed:
      if (w.keys.empty()) return EveryShard(w, shards);
      for (const std::string& key : w.keys) {
        parts[ShardOfKey(key, shards)].request.keys.push_back(key);
      }
      return NonEmpty(std::move(parts));
    case Op::kStampKey:
      if (w.keys.empty()) return InvalidArgument("keys: a stamp names one key");
      return std::vector<ShardWrite>{{ShardOfKey(w.keys[0], shards), w}};
    case Op::kReset:
    case Op::kRemoveKeyedWhere:
      return EveryShard(w, shards);
  }
  return InvalidArgument("write: unknown operation");
}

WriteReply CombineWrites(WriteRequest::Op op, std::vector<WriteReply> replies) {
  // Every op combines the same way today; `op` is there for one that will not.
  WriteReply out;
  for (WriteReply& r : replies) {
    out.count += r.count;
    out.ntotal += r.ntotal;
    std::move(r.keys.begin(), r.keys.end(), std::back_inserter(out.keys));
  }
  return out;
}

std::vector<ShardRead> SplitReadById(const ReadRequest& r, int shards) {
  shards = std::max(shards, 1);
  if (r.ids.empty()) return {{0, r, {}}};
  std::vector<ShardRead> parts(shards);
  for (int s = 0; s < shards; ++s) {
    parts[s].shard = s;
    parts[s].request.op = r.op;
    parts[s].request.collection = r.collection;
  }
  for (size_t i = 0; i < r.ids.size(); ++i) {
    ShardRead& to = parts[ShardOfId(r.ids[i], shards)];
    to.request.ids.push_back(r.ids[i]);
    to.positions.push_back(i);
  }
  std::erase_if(parts, [](const ShardRead& p) { return p.positions.empty(); });
  return parts;
}

StatusOr<ReadReply> CombineReadById(const ReadRequest& original,
                                    const std::vector<ShardRead>& split,
                                    std::vector<ReadReply> replies) {
  using Op = ReadRequest::Op;
  if (original.op != Op::kReconstruct && original.op != Op::kKeysOf) {
    return InvalidArgument("read: only reconstruct and keys-of reads are split by id");
  }
  if (replies.size() != split.size()) {
    return Internal("read: " + std::to_string(replies.size()) + " replies for " +
                    std::to_string(split.size()) + " shards");
  }
  const size_t n = original.ids.size();
  size_t asked = 0;
  for (const ShardRead& p : split) asked += p.positions.size();
  if (asked != n || split.empty()) {
    return Internal("read: the split asks for " + std::to_string(asked) + " of " +
                    std::to_string(n) + " ids");
  }
  ReadReply out;
  if (original.op == Op::kKeysOf) out.keys.resize(n);
  for (size_t i = 0; i < split.size(); ++i) {
    const std::vector<size_t>& at = split[i].positions;
    ReadReply& r = replies[i];
    const std::string shard = "shard " + std::to_string(split[i].shard);
    if (original.op == Op::kKeysOf) {
      if (r.keys.size() != at.size()) {
        return Internal(shard + " answered " + std::to_string(r.keys.size()) + " keys for " +
                        std::to_string(at.size()) + " ids");
      }
      for (size_t j = 0; j < at.size(); ++j) out.keys[at[j]] = std::move(r.keys[j]);
      continue;
    }
    const FloatMatrix& v = r.vectors;
    if (v.rows != static_cast<int64_t>(at.size()) ||
        static_cast<int64_t>(v.data.size()) != v.rows * v.cols ||
        (i > 0 && v.cols != out.vectors.cols)) {
      return Internal(shard + " answered " + std::to_string(v.rows) + " vectors of " +
                      std::to_string(v.cols) + " for " + std::to_string(at.size()) + " ids");
    }
    if (i == 0) {
      out.vectors.rows = static_cast<int64_t>(n);
      out.vectors.cols = v.cols;
      out.vectors.data.resize(n * v.cols);
    }
    for (size_t j = 0; j < at.size(); ++j) {
      std::copy_n(v.row(static_cast<int64_t>(j)), v.cols, out.vectors.data.data() + at[j] * v.cols);
    }
  }
  return out;
}

int ShardOfRead(const ReadRequest& r, int shards) {
  return r.keys.empty() ? 0 : ShardOfKey(r.keys[0], shards);
}

ReadReply CombineCountKeyed(const std::vector<ReadReply>& replies) {
  ReadReply out;
  for (const ReadReply& r : replies) out.count += r.count;
  return out;
}

StatusOr<ReadReply> MergeListKeyed(std::vector<ReadReply> replies, int64_t count) {
  struct Entry {
    int64_t id;
    size_t shard;  // index into replies
    size_t at;     // index into its objects
  };
  if (replies.size() == 1) return std::move(replies[0]);  // one shard: nothing to interleave
  std::vector<Entry> all;
  for (size_t s = 0; s < replies.size(); ++s) {
    const ReadReply& r = replies[s];
    if (r.ids.size() != r.objects.size()) {
      return Internal("list: reply " + std::to_string(s) + " has " + std::to_string(r.ids.size()) +
                      " ids for " + std::to_string(r.objects.size()) + " objects");
    }
    for (size_t i = 0; i < r.ids.size(); ++i) all.push_back({r.ids[i], s, i});
  }
  std::sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.id, a.shard) < std::tie(b.id, b.shard);
  });
  // The first `count`, and the rest of the id the cut falls inside.
  size_t keep = std::min(all.size(), static_cast<size_t>(std::max<int64_t>(count, 0)));
  while (keep > 0 && keep < all.size() && all[keep].id == all[keep - 1].id) ++keep;
  ReadReply out;
  for (size_t i = 0; i < keep; ++i) {
    out.objects.push_back(std::move(replies[all[i].shard].objects[all[i].at]));
    out.ids.push_back(all[i].id);
  }
  out.last_id = keep > 0 ? all[keep - 1].id : -1;
  return out;
}

}  // namespace vecgpu::cluster
