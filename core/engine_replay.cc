// The Engine's side of recovery: replaying logged records (format 2 by storage and its own
// order; format 1 by collection name) and loading a storage's backend from a snapshot.
#include "core/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <unordered_set>

#include "core/device/placed_backend.h"
#include "core/engine_internal.h"
#include "core/util/interrupt.h"
#include "core/util/utf8.h"
#include "core/view_ops.h"

namespace vecgpu {

Status Engine::Apply(const store::WalRecord& r, uint64_t seq) {
  replay_seq_ = seq;
  replaying_ = true;
  Status st = ApplyRecord(r);
  replaying_ = false;
  replay_seq_ = 0;
  return st;
}

StatusOr<Engine::Replayed> Engine::Replay(const store::WalRecord& r, uint64_t seq,
                                          bool failed_when_made) {
  std::shared_ptr<IndexStorage> s;
  // A create whose name is taken now: when it was made the name was free, so it is held by a
  // snapshot of a later incarnation, and this one was dropped before that snapshot.
  const bool name_taken = r.type == store::RecordType::kCreate &&
                          registry_.Get(r.tenant, r.collection).ok();
  if (r.type == store::RecordType::kCreate && r.storage_id == 0) {
    if (StorageById(seq)) return Replayed::kSkipped;  // its storage's snapshot was loaded
    if (name_taken) return Replayed::kSkipped;
    if (r.storage_seq != 1) {
      return DataLoss("log record " + std::to_string(seq) + ": a create that makes a storage " +
                      "is its record 1, not " + std::to_string(r.storage_seq));
    }
    if (failed_when_made) return Replayed::kSkipped;
  } else {
    s = StorageById(r.storage_id);
    if (!s) return Replayed::kSkipped;  // every name of it was dropped later
    const uint64_t at = s->log_seq();
    if (r.storage_seq <= at) return Replayed::kSkipped;  // in its snapshot
    if (r.storage_seq != at + 1) {
      return DataLoss("log record " + std::to_string(seq) + " is record " +
                      std::to_string(r.storage_seq) + " of the storage of index '" +
                      s->origin().name + "' (tenant '" + s->origin().tenant + "'), whose last " +
                      "record was " + std::to_string(at) + ": records are missing");
    }
    bool named = r.type == store::RecordType::kCreate && !name_taken;  // a view
    if (!named) {
      auto c = registry_.Get(r.tenant, r.collection);
      named = c.ok() && (*c)->storage() == s;
    }
    if (failed_when_made || !named) {
      // It changed nothing when made (or, written after its collection was dropped, nothing
      // that any collection sees): its place in the storage's order passes.
      s->set_log_seq(r.storage_seq);
      return Replayed::kSkipped;
    }
  }
  const Status st = Apply(r, seq);
  // A record refused now before it was logged again still takes its place.
  if (s && s->log_seq() < r.storage_seq) s->set_log_seq(r.storage_seq);
  return st.ok() ? Replayed::kApplied : Replayed::kRefused;
}

StatusOr<std::unique_ptr<Backend>> Engine::LoadBackend(const IndexSpec& spec,
                                                       std::string_view bytes,
                                                       int64_t next_label,
                                                       const std::string& hint,
                                                       const std::string& who) {
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> host, factory_.Load(spec, bytes, next_label));
  return Place(std::move(host), hint, who);
}

Status Engine::ApplyRecord(const store::WalRecord& r) {
  using store::RecordType;
  const std::string& t = r.tenant;
  const std::string& n = r.collection;
  switch (r.type) {
    case RecordType::kCreate:
      return Create(t, {n, r.index_type, r.dim, r.metric, r.device}).status();
    case RecordType::kDrop:
      return Drop(t, n);
    case RecordType::kAdd:
      return Add(t, n, r.vectors, r.ids).status();
    case RecordType::kRemove:
      return Remove(t, n, r.ids).status();
    case RecordType::kReplace:
      if (r.ids.size() != 1)
        return DataLoss("log record: replace names " + std::to_string(r.ids.size()) + " ids");
      return Replace(t, n, r.ids[0], r.vectors);
    case RecordType::kTrain:
      return TrainWith(t, n, r.vectors, r.artefact.empty() ? nullptr : &r.artefact).status();
    case RecordType::kReset:
      return Reset(t, n);
    case RecordType::kMerge: {
      ASSIGN_OR_RETURN(auto dst, Find(t, n));
      return MergeVectors(*dst, r.vectors, r.ids, nullptr).status();
    }
    case RecordType::kRecluster:
      return ReclusterWith(t, n, r.n_clusters, r.sample_ratio,
                           r.artefact.empty() ? nullptr : &r.artefact)
          .status();
    case RecordType::kSetParameter:
      return SetParameter(t, n, r.name, r.value);
    case RecordType::kPutKeys: {
      ASSIGN_OR_RETURN(auto c, FindKeyed(t, n));
      if (r.timestamps.size() != r.keys.size() ||
          r.vectors.rows != static_cast<int64_t>(r.keys.size()) ||
          r.vectors.cols != c->spec().dim) {
        return DataLoss("log record: put_keys does not match index '" + n + "'");
      }
      return PutKeysLocked(*c, r.keys, r.vectors, r.timestamps);
    }
    case RecordType::kRemoveKeys: {
      ASSIGN_OR_RETURN(auto c, FindKeyed(t, n));
      return RemoveKeysLocked(*c, r.keys);
    }
    case RecordType::kStampKey:
      if (r.keys.size() != 1 || r.timestamps.size() != 1) {
        return DataLoss("log record: stamp_key names " + std::to_string(r.keys.size()) + " ids");
      }
      return StampKey(t, n, r.keys[0], r.timestamps[0], /*force=*/true);
    case RecordType::kFailed:
      return Status::Ok();  // read by the store, never applied
  }
  return DataLoss("log record: unknown type");
}

}  // namespace vecgpu
