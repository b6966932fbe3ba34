#include "core/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <regex>
#include <unordered_set>

#include "core/device/placed_backend.h"
#include "core/util/interrupt.h"
#include "core/util/utf8.h"
#include "core/view_ops.h"

namespace vecgpu {
namespace {

CollectionInfo Snapshot(const Collection& c) {
  CollectionInfo info;
  info.name = c.name();
  info.spec = c.spec();
  info.backend = c.Read([&](const Backend& b, const LabelTable& t) {
    info.spec.factory = b.spec().factory;  // a recluster may have rebuilt the index
    info.spec.nlist = b.spec().nlist;
    BackendInfo bi = b.Info();
    bi.ntotal = t.CountOf(c.view());  // an IDMap view holds only its own vectors
    return bi;
  });
  const CollectionStats& s = c.stats();
  info.searches = s.searches.load();
  info.queries = s.queries.load();
  info.adds = s.adds.load();
  info.vectors_added = s.vectors_added.load();
  info.removals = s.removals.load();
  info.search_micros = s.search_micros.load();
  return info;
}

// Largest squared L2 norm of a float vector: four times it still fits in a float32, so no
// squared distance between two accepted vectors overflows.
constexpr double kMaxSquaredNorm = 1e37;

Status CannotRemove(const Collection& c, std::string_view what) {
  return Unimplemented(std::string(what) + ": index '" + c.name() + "' is a " + c.spec().kind() +
                       " index, which cannot remove vectors");
}

}  // namespace

StatusOr<Engine::Logged> Engine::LogFor(IndexStorage& s,
                                        const std::function<store::WalRecord()>& make) const {
  Logged l{replay_seq_, s.log_seq() + 1};
  if (log_) {
    store::WalRecord r = make();
    r.storage_id = s.origin().id;  // 0 for a storage being created: this record names it
    r.storage_seq = l.storage_seq;
    ASSIGN_OR_RETURN(l.seq, log_->Log(r));
  }
  s.set_log_seq(l.storage_seq);
  return l;
}

Status Engine::Outcome(IndexStorage& s, const Logged& l, const std::string& tenant,
                       const std::string& name, Status result) const {
  if (result.ok() || !log_) return result;
  store::WalRecord f{.type = store::RecordType::kFailed, .tenant = tenant, .collection = name};
  f.storage_id = s.origin().id;
  f.storage_seq = l.storage_seq;
  f.error = result.message();
  // Best effort: should it not reach the disk, a replay applies the record again, and a
  // mutation that fails for what it asks (not for a passing fault) fails again.
  (void)log_->Log(f);
  return result;
}

std::shared_ptr<IndexStorage> Engine::StorageById(uint64_t id) const {
  MutexLock catalog(catalog_mu_);
  auto it = storages_by_id_.find(id);
  return it == storages_by_id_.end() ? nullptr : it->second.lock();
}

void Engine::RegisterStorage(const std::shared_ptr<IndexStorage>& s) {
  storages_by_id_[s->origin().id] = s;
  if (storages_by_id_.size() < 2 * storages_swept_at_) return;
  std::erase_if(storages_by_id_, [](const auto& e) { return e.second.expired(); });
  storages_swept_at_ = std::max<size_t>(64, storages_by_id_.size());
}

Status Engine::NotTrained(const std::string& name) {
  return FailedPrecondition("index '" + name + "' is not trained; call train_index first");
}

Status Engine::CheckIds(std::span<const int64_t> ids) {
  std::unordered_set<int64_t> seen;
  for (int64_t id : ids) {
    if (id < 0) {
      return InvalidArgument("ids: negative id " + std::to_string(id) +
                             " (ids must be >= 0; -1 marks a missing result)");
    }
    if (!seen.insert(id).second) {
      return InvalidArgument("ids: id " + std::to_string(id) + " appears twice in one request");
    }
  }
  return Status::Ok();
}

Engine::Engine(const Limits& limits, BackendFactory& factory, ServerMetrics* metrics,
               Scheduler* scheduler, DeviceManager* devices)
    : limits_(limits),
      factory_(factory),
      metrics_(metrics),
      scheduler_(scheduler),
      devices_(devices),
      registry_(limits.max_collections_per_tenant) {}

std::vector<Engine::TenantUsage> Engine::Usage() const {
  std::vector<TenantUsage> out;
  std::unordered_set<const IndexStorage*> counted;
  for (const auto& c : registry_.All()) {
    if (out.empty() || out.back().tenant != c->tenant()) out.push_back({c->tenant(), 0, 0});
    ++out.back().collections;
    if (counted.insert(c->storage().get()).second) out.back().vectors += c->storage()->vectors();
  }
  return out;
}

TenantUse Engine::UseOf(const std::string& tenant) const {
  TenantUse use;
  std::unordered_set<const IndexStorage*> counted;
  for (const auto& c : registry_.List(tenant)) {
    ++use.collections;
    if (!counted.insert(c->storage().get()).second) continue;
    use.vectors += c->storage()->vectors();
    use.bytes += c->storage()->CachedInfo(LabelTable::kBaseView).memory_bytes;
  }
  return use;
}

Status Engine::CheckQuota(const std::string& tenant, const Collection* c, int64_t collections,
                          int64_t vectors) const {
  if (!quotas_ || replaying_) return Status::Ok();
  const Quota& q = quotas_->Of(tenant);
  if (q.max_collections == 0 && q.max_vectors == 0 && q.max_bytes == 0) return Status::Ok();
  const TenantUse use = UseOf(tenant);
  int64_t per_vector = 0;
  if (c && vectors > 0) {
    const BackendInfo info = c->storage()->CachedInfo(LabelTable::kBaseView);
    per_vector = info.ntotal > 0 ? info.memory_bytes / info.ntotal
                                 : int64_t{c->spec().dim} * (c->spec().binary ? 1 : 4) /
                                       (c->spec().binary ? 8 : 1);
  }
  return quotas_->CheckStore(tenant, use, collections, vectors, vectors * per_vector);
}

Status Engine::CheckName(const std::string& name) const {
  if (name.empty()) return InvalidArgument("index_id: must be a non-empty string");
  if (static_cast<int>(name.size()) > limits_.max_index_id_length) {
    return InvalidArgument("index_id: longer than " + std::to_string(limits_.max_index_id_length) +
                           " characters");
  }
  if (!IsPrintableUtf8(name)) {
    return InvalidArgument("index_id: must be valid UTF-8 without control characters");
  }
  return Status::Ok();
}

Status Engine::CheckMatrix(const char* field, const FloatMatrix& x, const IndexSpec& spec,
                           int64_t max_rows) const {
  const int dim = spec.dim;
  if (x.rows < 1) return InvalidArgument(std::string(field) + ": no vectors given");
  if (x.rows > max_rows) {
    return InvalidArgument(std::string(field) + ": " + std::to_string(x.rows) +
                           " vectors, above the limit of " + std::to_string(max_rows));
  }
  if (x.cols != dim) {
    return InvalidArgument(std::string(field) + ": vector dimension " + std::to_string(x.cols) +
                           " does not match the index dimension " + std::to_string(dim));
  }
  if (static_cast<int64_t>(x.data.size()) != x.rows * x.cols) {
    return InvalidArgument(std::string(field) + ": matrix data does not match its shape");
  }
  for (size_t i = 0; i < x.data.size(); ++i) {
    if (!std::isfinite(x.data[i])) {
      return InvalidArgument(std::string(field) + ": vector " + std::to_string(i / dim) +
                             " component " + std::to_string(i % dim) + " is not a finite number");
    }
    if (spec.binary && x.data[i] != 0.0f && x.data[i] != 1.0f) {
      return InvalidArgument(std::string(field) + ": binary vector " + std::to_string(i / dim) +
                             " bit " + std::to_string(i % dim) + " is " +
                             std::to_string(x.data[i]) + ", not 0 or 1");
    }
  }
  if (spec.binary) return Status::Ok();
  // FAISS computes distances in float32 as |x|^2 + |y|^2 - 2<x, y>: a vector whose squared norm
  // overflows turns distances into inf - inf = NaN, and FAISS 1.7.3 then assigns vectors to
  // IVF lists that do not exist (an assertion that aborted the server).
  for (int64_t r = 0; r < x.rows; ++r) {
    double norm2 = 0;
    for (int64_t j = 0; j < x.cols; ++j)
      norm2 += double(x.data[r * x.cols + j]) * x.data[r * x.cols + j];
    if (norm2 > kMaxSquaredNorm) {
      return InvalidArgument(std::string(field) + ": vector " + std::to_string(r) +
                             " has a squared norm of " + std::to_string(norm2) +
                             ", above the limit of 1e37 (float32 distances would overflow)");
    }
  }
  return Status::Ok();
}

StatusOr<std::shared_ptr<Collection>> Engine::Find(const std::string& tenant,
                                                   const std::string& name) const {
  RETURN_IF_ERROR(CheckName(name));
  return registry_.Get(tenant, name);
}

StatusOr<CollectionInfo> Engine::Create(const std::string& tenant,
                                        const CreateCollectionRequest& req) {
  RETURN_IF_ERROR(CheckName(req.name));
  if (req.dim < 1 || req.dim > limits_.max_dimension) {
    return InvalidArgument("dimension: must be within 1.." + std::to_string(limits_.max_dimension) +
                           ", got " + std::to_string(req.dim));
  }
  ASSIGN_OR_RETURN(IndexSpec spec, ParseIndexType(req.index_type, req.dim, req.metric));
  // Creates and drops hold the catalog from logging to registering, so that a snapshot's list
  // of storages is a point in the log too (Storages). A storage's write order is taken before
  // the catalog, never after it: the catalog is held only for the log append and the
  // registration, so a create or drop never waits on another storage's long write while
  // holding what every other create needs.
  std::shared_ptr<IndexStorage> storage;
  const bool fresh = spec.base_index_id.empty();
  std::shared_ptr<Collection> base;
  if (!fresh) {
    // "IDMap:{base}": a view with ids of its own over the tenant's base index, sharing its
    // storage (as FAISS's IndexIDMap shares its base), so training sent to the base serves
    // the view too.
    RETURN_IF_ERROR(CheckName(spec.base_index_id));
    ASSIGN_OR_RETURN(base, registry_.Get(tenant, spec.base_index_id));
    if (base->spec().dim != req.dim) {
      return InvalidArgument("dimension: " + std::to_string(req.dim) +
                             " does not match base index '" + spec.base_index_id + "' dimension " +
                             std::to_string(base->spec().dim));
    }
    IndexSpec wrapped = base->spec();
    wrapped.index_type = spec.index_type;
    wrapped.id_map = spec.id_map;
    wrapped.base_index_id = spec.base_index_id;
    spec = std::move(wrapped);
    storage = base->storage();
  } else {
    ASSIGN_OR_RETURN(auto backend, MakeBackend(spec, req.device, tenant + "/" + req.name));
    storage = NewStorage(tenant, std::move(backend),
                         {0, tenant, req.name, req.index_type, req.dim, req.metric, req.device});
  }
  MutexLock order(storage->write_order());
  UninterruptibleScope uninterruptible;  // logged: replay must match
  MutexLock catalog(catalog_mu_);
  if (base) {  // dropped (or replaced) while this create waited for its storage
    auto now = registry_.Get(tenant, spec.base_index_id);
    if (!now.ok() || *now != base) {
      return NotFound("base index '" + spec.base_index_id + "' was dropped meanwhile");
    }
  }
  RETURN_IF_ERROR(registry_.CheckInsert(tenant, req.name));  // refused: nothing logged
  RETURN_IF_ERROR(CheckQuota(tenant, nullptr, 1, 0));
  store::WalRecord r{.type = store::RecordType::kCreate, .tenant = tenant, .collection = req.name};
  r.index_type = req.index_type;
  r.dim = req.dim;
  r.metric = req.metric;
  r.device = req.device;
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*storage, [&] { return r; }));
  const uint64_t seq = logged.seq;
  if (fresh) {
    storage->set_id(seq);  // not shared yet
    RegisterStorage(storage);
  }
  storage->set_names_seq(seq);
  const LabelTable::View view =
      storage->AddName(req.name, req.index_type, spec.id_map != IdMapKind::kNone);
  auto collection = std::make_shared<Collection>(tenant, req.name, spec, std::move(storage), view);
  RETURN_IF_ERROR(registry_.Insert(collection));  // checked above, under the same catalog hold
  return Snapshot(*collection);
}

Status Engine::Drop(const std::string& tenant, const std::string& name) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  MutexLock order(c->storage()->write_order());  // before the catalog (Create)
  MutexLock catalog(catalog_mu_);
  auto now = Find(tenant, name);
  if (!now.ok() || *now != c) return NotFound("index '" + name + "' was dropped meanwhile");
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     return store::WalRecord{
                         .type = store::RecordType::kDrop, .tenant = tenant, .collection = name};
                   }));
  const uint64_t seq = logged.seq;
  c->storage()->set_names_seq(seq);
  last_drop_seq_ = seq;
  RETURN_IF_ERROR(registry_.Remove(tenant, name).status());
  c->storage()->RemoveName(name);
  return Status::Ok();
}

std::vector<CollectionInfo> Engine::List(const std::string& tenant) const {
  // From each storage's cache of its last write: a listing never waits behind a training run.
  std::vector<CollectionInfo> out;
  for (const auto& c : registry_.List(tenant)) {
    CollectionInfo info;
    info.name = c->name();
    info.spec = c->spec();
    info.backend = c->storage()->CachedInfo(c->view());
    out.push_back(std::move(info));
  }
  return out;
}

StatusOr<CollectionInfo> Engine::Describe(const std::string& tenant,
                                          const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return Snapshot(*c);
}

Status Engine::AddLocked(const Collection& c, Backend& b, LabelTable& t, const FloatMatrix& x,
                         std::span<const int64_t> ids) {
  if (!b.is_trained()) return NotTrained(c.name());
  if (!c.has_ids()) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] != b.next_label() + static_cast<int64_t>(i)) {
        return InvalidArgument("ids: index '" + c.name() + "' numbers its vectors itself (next: " +
                               std::to_string(b.next_label()) +
                               "); create it as IDMap to add vectors under ids of your own");
      }
    }
    const int64_t first = b.next_label();
    RETURN_IF_ERROR(b.Add(x.rows, x.data.data()));
    t.Append(first, x.rows, LabelTable::kBaseView, {});
    return Status::Ok();
  }
  if (ids.empty()) {
    return InvalidArgument("ids: index '" + c.name() +
                           "' is an IDMap index; give one id per vector");
  }
  RETURN_IF_ERROR(CheckIds(ids));
  std::vector<int64_t> replaced;
  for (int64_t id : ids) {
    if (int64_t label = t.LabelOf(c.view(), id); label >= 0) replaced.push_back(label);
  }
  if (!replaced.empty() && !b.can_remove()) {
    return CannotRemove(c, "ids: id " + std::to_string(ids[0]) + " exists and replacing it");
  }
  // An upsert adds the new vectors first: if the add fails, the old ones are still there.
  const int64_t first = b.next_label();
  RETURN_IF_ERROR(b.Add(x.rows, x.data.data()));
  t.Append(first, x.rows, c.view(), ids);
  if (!replaced.empty()) {
    auto removed = b.RemoveLabels(replaced);
    if (!removed.ok()) {
      return Internal("upsert into '" + c.name() + "' added the new vectors but could not " +
                      "remove the old ones: " + removed.status().message());
    }
    t.Erase(replaced, b.labels_shift_on_remove());
  }
  return Status::Ok();
}

StatusOr<VectorLayout> Engine::Layout(const std::string& tenant, const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return VectorLayout{c->spec().dim, c->spec().binary, c->spec().metric};
}

StatusOr<AddResult> Engine::Add(const std::string& tenant, const std::string& name,
                                const FloatMatrix& x, std::span<const int64_t> ids) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckMatrix("vectors", x, c->spec(), limits_.max_add_vectors));
  if (!ids.empty() && static_cast<int64_t>(ids.size()) != x.rows) {
    return InvalidArgument("ids: " + std::to_string(ids.size()) + " ids for " +
                           std::to_string(x.rows) + " vectors");
  }
  if (c->has_ids() && !ids.empty()) RETURN_IF_ERROR(CheckIds(ids));  // as SubmitAdd does
  RETURN_IF_ERROR(CheckQuota(tenant, c.get(), 0, x.rows));
  MutexLock order(c->storage()->write_order());                      // log and apply in one order
  UninterruptibleScope uninterruptible;  // logged: replay must match
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     store::WalRecord r{
                         .type = store::RecordType::kAdd, .tenant = tenant, .collection = name};
                     r.vectors = x;
                     r.ids.assign(ids.begin(), ids.end());
                     return r;
                   }));
  return Outcome(*c->storage(), logged, tenant, name,
                 c->Write([&](Backend& b, LabelTable& t) -> StatusOr<AddResult> {
                   RETURN_IF_ERROR(AddLocked(*c, b, t, x, ids));
                   c->stats().adds++;
                   c->stats().vectors_added += x.rows;
                   return AddResult{x.rows, t.CountOf(c->view())};
                 }));
}

Status Engine::CheckWorkCost(const std::string& what, int64_t rows, int64_t clusters,
                             int64_t iterations, int64_t dim) const {
  // k-means samples at most 256 points a centroid (FAISS's max_points_per_centroid).
  const double used = std::min<double>(static_cast<double>(rows), 256.0 * clusters);
  const double cost = used * clusters * iterations * dim;
  if (cost <= limits_.max_work_cost) return Status::Ok();
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3g", cost);
  char cap[64];
  std::snprintf(cap, sizeof(cap), "%.3g", limits_.max_work_cost);
  return ResourceExhausted(what + ": estimated cost " + buf + " (" + std::to_string(rows) +
                           " rows x " + std::to_string(clusters) + " clusters x " +
                           std::to_string(iterations) + " iterations x dimension " +
                           std::to_string(dim) + ") is above the limit of " + cap +
                           " (--max-work-cost); use fewer rows, clusters or iterations");
}

StatusOr<CollectionInfo> Engine::Train(const std::string& tenant, const std::string& name,
                                       const FloatMatrix& x) {
  return TrainWith(tenant, name, x, nullptr);
}

StatusOr<CollectionInfo> Engine::TrainWith(const std::string& tenant, const std::string& name,
                                           const FloatMatrix& x, const std::string* artefact) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (!artefact) {
    RETURN_IF_ERROR(CheckMatrix("training_vectors", x, c->spec(), limits_.max_train_vectors));
    // Refused before it is logged, so a replay never meets the limit (which may change).
    if (c->spec().nlist > 0) {  // the coarse quantizer: FAISS's IVF k-means, 10 iterations
      RETURN_IF_ERROR(CheckWorkCost("train_index", x.rows, c->spec().nlist, 10, x.cols));
    }
    if (c->spec().pq_m > 0) {  // 256 codes a sub-space, 25 iterations
      RETURN_IF_ERROR(CheckWorkCost("train_index", x.rows, 256, 25, x.cols));
    }
  }
  IndexStorage& storage = *c->storage();
  MutexLock order(storage.write_order());  // log and apply in one order
  struct Before {
    bool empty = false;  // no vector yet, not trained: what training makes is all it holds
    IndexSpec spec;
    std::string hint;
    int64_t next_label = 0;
  };
  const Before before = c->Read([](const Backend& b, const LabelTable& t) {
    const auto* placed = dynamic_cast<const PlacedBackend*>(&b);
    // A scalar quantizer reports itself trained while it buffers vectors to train on.
    const bool untrained = !b.is_trained() || b.spec().kind() == "SQ";
    return Before{t.size() == 0 && untrained, b.spec(), placed ? placed->hint() : "",
                  b.next_label()};
  });
  // An empty index trains a copy of itself: the trained copy's bytes are logged and installed,
  // here and at replay alike, so a replay never trains again (and cannot come out otherwise).
  // An interruption (deadline, shutdown) stops the training with nothing logged or changed.
  // An index holding vectors trains in place, and replay trains it again from the vectors.
  std::string trained = artefact ? *artefact : std::string();
  if (!artefact && before.empty) {
    // A new index of the same spec, with the settings given to this one so far.
    auto copy = [&]() -> StatusOr<std::unique_ptr<Backend>> {
      ASSIGN_OR_RETURN(std::unique_ptr<Backend> fresh, factory_.Create(before.spec));
      RETURN_IF_ERROR(c->Read([&](const Backend& b, const LabelTable&) -> Status {
        for (const char* p : {"nprobe", "efSearch", "efConstruction"}) {
          auto v = b.GetParameter(p);
          if (v.ok()) RETURN_IF_ERROR(fresh->SetParameter(p, *v));
        }
        return Status::Ok();
      }));
      return fresh;
    }();
    if (copy.ok()) {
      RETURN_IF_ERROR((*copy)->Train(x.rows, x.data.data()));
      auto bytes = (*copy)->Serialize();
      if (bytes.ok()) trained.assign(bytes->begin(), bytes->end());
    }
  }
  UninterruptibleScope uninterruptible;  // logged: replay must match
  ASSIGN_OR_RETURN(const Logged logged, LogFor(storage, [&] {
                     store::WalRecord r{
                         .type = store::RecordType::kTrain, .tenant = tenant, .collection = name};
                     if (trained.empty()) {
                       r.vectors = x;
                     } else {
                       r.vectors.cols = x.cols;
                       r.artefact = trained;
                     }
                     return r;
                   }));
  Status st;
  if (trained.empty()) {
    st = c->Write([&](Backend& b, LabelTable&) { return b.Train(x.rows, x.data.data()); });
  } else {
    auto installed =
        LoadBackend(before.spec, trained, before.next_label, before.hint, tenant + "/" + name);
    st = installed.status();
    if (installed.ok()) {
      c->Rebuild([&](std::unique_ptr<Backend>& b, const LabelTable&) {
        b = std::move(*installed);
        return 0;
      });
    }
  }
  RETURN_IF_ERROR(Outcome(storage, logged, tenant, name, st));
  return Snapshot(*c);
}

StatusOr<int64_t> Engine::Remove(const std::string& tenant, const std::string& name,
                                 std::span<const int64_t> ids) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (static_cast<int64_t>(ids.size()) > limits_.max_add_vectors) {
    return InvalidArgument("ids: " + std::to_string(ids.size()) + " ids, above the limit of " +
                           std::to_string(limits_.max_add_vectors));
  }
  MutexLock order(c->storage()->write_order());  // log and apply in one order
  UninterruptibleScope uninterruptible;  // logged: replay must match
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     store::WalRecord r{
                         .type = store::RecordType::kRemove, .tenant = tenant, .collection = name};
                     r.ids.assign(ids.begin(), ids.end());
                     return r;
                   }));
  auto removed = c->WriteKeyed([&](Backend& b, LabelTable& t, KeyTable& k) -> StatusOr<int64_t> {
    if (!b.can_remove()) return CannotRemove(*c, "remove_ids");
    std::vector<int64_t> labels;
    std::unordered_set<int64_t> seen;
    for (int64_t id : ids) {
      int64_t label = t.LabelOf(c->view(), id);
      if (label >= 0 && seen.insert(label).second) labels.push_back(label);
    }
    if (labels.empty()) return int64_t{0};
    ASSIGN_OR_RETURN(int64_t n, b.RemoveLabels(labels));
    // A string id names a removed vector no more, whichever view added it (the base view
    // removes the vectors of every view).
    for (int64_t label : labels) {
      LabelTable::View owner = LabelTable::kBaseView;
      int64_t id = -1;
      if (t.OwnerOf(label, &owner, &id) && owner != LabelTable::kBaseView) k.EraseId(owner, id);
    }
    t.Erase(labels, b.labels_shift_on_remove());
    return n;
  });
  removed = Outcome(*c->storage(), logged, tenant, name, std::move(removed));
  if (removed.ok()) c->stats().removals += *removed;
  return removed;
}

Status Engine::Replace(const std::string& tenant, const std::string& name, int64_t id,
                       const FloatMatrix& vector) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckMatrix("vector", vector, c->spec(), 1));
  if (!c->has_ids()) {
    return InvalidArgument("replace_vector: index '" + name +
                           "' has no id map; create it as IDMap/IDMap2 to replace by id");
  }
  MutexLock order(c->storage()->write_order());  // log and apply in one order
  UninterruptibleScope uninterruptible;  // logged: replay must match
  // A missing id refuses the replace before anything is logged.
  RETURN_IF_ERROR(c->Read([&](const Backend&, const LabelTable& t) -> Status {
    if (t.LabelOf(c->view(), id) < 0) {
      return NotFound("id " + std::to_string(id) + " is not in index '" + name + "'");
    }
    return Status::Ok();
  }));
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     store::WalRecord r{
                         .type = store::RecordType::kReplace, .tenant = tenant, .collection = name};
                     r.vectors = vector;
                     r.ids = {id};
                     return r;
                   }));
  return Outcome(*c->storage(), logged, tenant, name,
                 c->Write([&](Backend& b, LabelTable& t) -> Status {
                   const int64_t ids[] = {id};
                   return AddLocked(*c, b, t, vector, ids);
                 }));
}

Status Engine::Reset(const std::string& tenant, const std::string& name) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  MutexLock order(c->storage()->write_order());  // log and apply in one order
  UninterruptibleScope uninterruptible;  // logged: replay must match
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     return store::WalRecord{
                         .type = store::RecordType::kReset, .tenant = tenant, .collection = name};
                   }));
  return Outcome(*c->storage(), logged, tenant, name, c->WriteKeyed([&](Backend& b, LabelTable& t, KeyTable& k) -> Status {
    if (!c->has_ids()) {
      RETURN_IF_ERROR(b.Reset());
      t.Clear();
      k = KeyTable();
      return Status::Ok();
    }
    const std::vector<int64_t> own = t.LabelsOf(c->view());
    if (own.empty()) {
      k.Clear(c->view());
      return Status::Ok();
    }
    if (static_cast<int64_t>(own.size()) == t.size()) {
      RETURN_IF_ERROR(b.Reset());  // the view holds the whole storage: cheaper than removal
      t.Clear();
      k.Clear(c->view());  // its string ids go with its vectors
      return Status::Ok();
    }
    if (!b.can_remove()) return CannotRemove(*c, "reset of an IDMap view sharing its storage");
    RETURN_IF_ERROR(b.RemoveLabels(own).status());
    t.Erase(own, b.labels_shift_on_remove());
    k.Clear(c->view());
    return Status::Ok();
  }));
}

Status Engine::CheckSearch(const Collection& c, const FloatMatrix& queries, int k) const {
  if (k < 1 || k > limits_.max_k) {
    return InvalidArgument("k: must be within 1.." + std::to_string(limits_.max_k) + ", got " +
                           std::to_string(k));
  }
  RETURN_IF_ERROR(CheckMatrix("query_vectors", queries, c.spec(), limits_.max_query_vectors));
  if (queries.rows * k > limits_.max_search_results) {
    return InvalidArgument("k: " + std::to_string(queries.rows) + " queries x k " +
                           std::to_string(k) + " is above the limit of " +
                           std::to_string(limits_.max_search_results) + " results per search");
  }
  return Status::Ok();
}

StatusOr<SearchAndReconstructResult> Engine::SearchAndReconstruct(
    const std::string& tenant, const std::string& name, const FloatMatrix& queries, int k,
    const SearchParams& params) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckSearch(*c, queries, k));
  SearchAndReconstructResult out;
  SearchResult& r = out.result;
  r.nq = queries.rows;
  r.k = k;
  r.distances.resize(r.nq * k);
  r.labels.resize(r.nq * k);
  out.vectors.resize(r.nq);
  RETURN_IF_ERROR(c->Read([&](const Backend& b, const LabelTable& t) -> Status {
    if (!b.is_trained()) return NotTrained(name);
    RETURN_IF_ERROR(SearchView(b, t, c->view(), r.nq, queries.data.data(), k, params,
                               r.distances.data(), r.labels.data()));
    for (int64_t q = 0; q < r.nq; ++q) {
      std::vector<int64_t> found;
      for (int j = 0; j < k; ++j) {
        if (r.labels[q * k + j] >= 0) found.push_back(r.labels[q * k + j]);
      }
      FloatMatrix& v = out.vectors[q];
      v.rows = static_cast<int64_t>(found.size());
      v.cols = c->spec().dim;
      v.data.resize(v.rows * v.cols);
      RETURN_IF_ERROR(ReconstructIds(b, t, c->view(), found, v.data.data()));
    }
    return Status::Ok();
  }));
  ObserveBatch(r.nq, 1);
  c->stats().searches++;
  c->stats().queries += r.nq;
  return out;
}

StatusOr<RangeResult> Engine::RangeSearch(const std::string& tenant, const std::string& name,
                                          const FloatMatrix& queries, float radius,
                                          const SearchParams& params) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (!std::isfinite(radius)) return InvalidArgument("radius: must be a finite number");
  RETURN_IF_ERROR(CheckMatrix("query_vectors", queries, c->spec(), limits_.max_query_vectors));
  auto r = c->Read([&](const Backend& b, const LabelTable& t) -> StatusOr<RangeResult> {
    if (!b.is_trained()) return NotTrained(name);
    ASSIGN_OR_RETURN(RangeResult res, RangeSearchView(b, t, c->view(), queries.rows,
                                                      queries.data.data(), radius, params));
    if (static_cast<int64_t>(res.labels.size()) > limits_.max_search_results) {
      return ResourceExhausted(
          "radius: " + std::to_string(res.labels.size()) + " results, above the limit of " +
          std::to_string(limits_.max_search_results) + " per search; use a smaller radius");
    }
    return res;
  });
  if (r.ok()) {
    c->stats().searches++;
    c->stats().queries += queries.rows;
  }
  return r;
}

StatusOr<FloatMatrix> Engine::Reconstruct(const std::string& tenant, const std::string& name,
                                          std::span<const int64_t> ids) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (static_cast<int64_t>(ids.size()) > limits_.max_fetch_vectors) {
    return InvalidArgument("ids: more than " + std::to_string(limits_.max_fetch_vectors));
  }
  FloatMatrix out;
  out.rows = static_cast<int64_t>(ids.size());
  out.cols = c->spec().dim;
  out.data.resize(out.rows * out.cols);
  RETURN_IF_ERROR(c->Read([&](const Backend& b, const LabelTable& t) {
    return ReconstructIds(b, t, c->view(), ids, out.data.data());
  }));
  return out;
}

StatusOr<FloatMatrix> Engine::ReconstructRange(const std::string& tenant, const std::string& name,
                                               int64_t start, int64_t n,
                                               std::vector<int64_t>* ids) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (start < 0) return InvalidArgument("start_idx: must not be negative");
  if (n < 0) return InvalidArgument("num_vectors: must not be negative");
  if (n > limits_.max_fetch_vectors) {
    return InvalidArgument("num_vectors: " + std::to_string(n) + " is above the limit of " +
                           std::to_string(limits_.max_fetch_vectors));
  }
  FloatMatrix out;
  out.cols = c->spec().dim;
  RETURN_IF_ERROR(c->Read([&](const Backend& b, const LabelTable& t) -> Status {
    const int64_t ntotal = t.CountOf(c->view());
    if (start > ntotal) {
      return OutOfRange("start_idx: " + std::to_string(start) + " is past ntotal " +
                        std::to_string(ntotal));
    }
    out.rows = std::min(n, ntotal - start);
    out.data.resize(out.rows * out.cols);
    return ReconstructRangeView(b, t, c->view(), start, out.rows, out.data.data(), ids);
  }));
  return out;
}

Status Engine::SetParameter(const std::string& tenant, const std::string& name,
                            std::string_view param, double value) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (!std::isfinite(value)) return InvalidArgument("value: must be a finite number");
  MutexLock order(c->storage()->write_order());  // log and apply in one order
  UninterruptibleScope uninterruptible;  // logged: replay must match
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*c->storage(), [&] {
                     store::WalRecord r{.type = store::RecordType::kSetParameter,
                                        .tenant = tenant,
                                        .collection = name};
                     r.name = std::string(param);
                     r.value = value;
                     return r;
                   }));
  return Outcome(
      *c->storage(), logged, tenant, name,
      c->Write([&](Backend& b, LabelTable&) { return b.SetParameter(param, value); }));
}

StatusOr<double> Engine::GetParameter(const std::string& tenant, const std::string& name,
                                      std::string_view param) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return c->Read([&](const Backend& b, const LabelTable& t) -> StatusOr<double> {
    if (param == "ntotal") return static_cast<double>(t.CountOf(c->view()));
    return b.GetParameter(param);
  });
}

StatusOr<ReclusterResult> Engine::Recluster(const std::string& tenant, const std::string& name,
                                            int n_clusters, double sample_ratio) {
  return ReclusterWith(tenant, name, n_clusters, sample_ratio, nullptr);
}

StatusOr<ReclusterResult> Engine::ReclusterWith(const std::string& tenant, const std::string& name,
                                                int n_clusters, double sample_ratio,
                                                const std::string* artefact) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (!(sample_ratio > 0 && sample_ratio <= 1)) {
    return InvalidArgument("sample_ratio: must be within (0, 1]");
  }
  if (!artefact) {
    RETURN_IF_ERROR(CheckWorkCost(
        "recluster_index", static_cast<int64_t>(sample_ratio * c->storage()->vectors()),
        n_clusters > 0 ? n_clusters : std::max(1, c->spec().nlist), 10, c->spec().dim));
  }
  IndexStorage& storage = *c->storage();
  MutexLock order(storage.write_order());  // no other write until the new index is in place
  // What the rebuild needs, read with shared access: searches go on while it trains.
  struct Plan {
    IndexSpec spec;
    std::string hint;
    int old_nlist = 0;
    int nlist = 0;
    int nprobe = 0;
    int64_t next_label = 0;
    std::vector<int64_t> labels;
    std::vector<float> x;
  };
  ASSIGN_OR_RETURN(
      Plan p, c->Read([&](const Backend& b, const LabelTable& t) -> StatusOr<Plan> {
        const IndexSpec old = b.spec();
        const BackendInfo info = b.Info();
        if (old.nlist <= 0 || old.binary) {
          return InvalidArgument("index_id: '" + name + "' is not an IVF index; only IVF " +
                                 "indexes are reclustered");
        }
        if (!info.is_trained) return NotTrained(name);
        Plan p;
        p.old_nlist = old.nlist;
        p.nlist = n_clusters > 0 ? n_clusters : old.nlist;
        p.nprobe = info.nprobe;
        p.next_label = b.next_label();
        const int64_t n = info.ntotal;
        if (n < p.nlist) {
          return InvalidArgument("n_clusters: " + std::to_string(p.nlist) +
                                 " lists need at least as many vectors; the index holds " +
                                 std::to_string(n));
        }
        if (old.pq_nbits > 0 && n < (int64_t{1} << old.pq_nbits)) {
          return InvalidArgument("index_id: '" + name + "' holds " + std::to_string(n) +
                                 " vectors; retraining its " + std::to_string(old.pq_nbits) +
                                 "-bit product quantizer needs at least " +
                                 std::to_string(1 << old.pq_nbits));
        }
        if (n > limits_.max_train_vectors) {
          return InvalidArgument("index_id: '" + name + "' holds " + std::to_string(n) +
                                 " vectors, above the recluster limit of " +
                                 std::to_string(limits_.max_train_vectors) +
                                 " (max_train_vectors)");
        }
        const std::string factory = std::regex_replace(
            old.factory, std::regex(R"(IVF\d+)"), "IVF" + std::to_string(p.nlist),
            std::regex_constants::format_first_only);
        ASSIGN_OR_RETURN(p.spec, ParseIndexType(factory, old.dim, MetricName(old.metric)));
        p.spec.index_type = old.index_type;
        const auto* placed = dynamic_cast<const PlacedBackend*>(&b);
        if (placed) p.hint = placed->hint();
        // Every label of the storage (all views), so the table stays true for every view.
        p.labels = t.LabelsOf(LabelTable::kBaseView);
        p.x.resize(n * old.dim);
        RETURN_IF_ERROR(ReconstructIds(b, t, LabelTable::kBaseView, p.labels, p.x.data()));
        return p;
      }));
  const int64_t n = static_cast<int64_t>(p.labels.size());
  const int dim = p.spec.dim;
  std::string trained;
  if (artefact) {
    trained = *artefact;
  } else {
    // Train on an even sample of at least nlist vectors, on a host index of the new shape:
    // an interruption (deadline, shutdown) stops it with nothing logged or changed.
    const int64_t m =
        std::clamp<int64_t>(static_cast<int64_t>(std::ceil(sample_ratio * n)), p.nlist, n);
    std::vector<float> sample(m * dim);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t row = i * n / m;
      std::copy(p.x.begin() + row * dim, p.x.begin() + (row + 1) * dim, sample.begin() + i * dim);
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> host, factory_.Create(p.spec));
    RETURN_IF_ERROR(host->Train(m, sample.data()));
    ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, host->Serialize());
    trained.assign(bytes.begin(), bytes.end());
  }
  UninterruptibleScope uninterruptible;  // logged: replay must match
  ASSIGN_OR_RETURN(const Logged logged, LogFor(storage, [&] {
                     store::WalRecord r{
                         .type = store::RecordType::kRecluster, .tenant = tenant, .collection = name};
                     r.n_clusters = n_clusters;
                     r.sample_ratio = sample_ratio;
                     r.artefact = trained;
                     return r;
                   }));
  // Live and at replay alike, the new index is the logged training plus the vectors.
  auto built = [&]() -> StatusOr<std::unique_ptr<Backend>> {
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> fresh,
                     LoadBackend(p.spec, trained, 0, p.hint, tenant + "/" + name));
    RETURN_IF_ERROR(fresh->AddLabeled(n, p.x.data(), p.labels.data(), p.next_label));
    RETURN_IF_ERROR(fresh->SetParameter("nprobe", std::min(p.nprobe, p.nlist)));
    return fresh;
  }();
  RETURN_IF_ERROR(Outcome(storage, logged, tenant, name, built.status()));
  c->Rebuild([&](std::unique_ptr<Backend>& b, const LabelTable&) {
    b = std::move(*built);  // every collection sharing this storage sees the new index
    return 0;
  });
  return ReclusterResult{p.old_nlist, p.nlist, n};
}

StatusOr<std::vector<TransformStep>> Engine::Transforms(const std::string& tenant,
                                                        const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return c->Read([](const Backend& b, const LabelTable&) { return b.Transforms(); });
}

StatusOr<FloatMatrix> Engine::ApplyTransform(const std::string& tenant, const std::string& name,
                                             const FloatMatrix& x) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckMatrix("vectors", x, c->spec(), limits_.max_add_vectors));
  return c->Read(
      [&](const Backend& b, const LabelTable&) { return b.ApplyTransform(x.rows, x.data.data()); });
}

StatusOr<int64_t> Engine::Merge(const std::string& tenant, const std::string& target,
                                const std::vector<std::string>& sources) {
  ASSIGN_OR_RETURN(auto dst, Find(tenant, target));
  std::vector<std::shared_ptr<Collection>> srcs;
  for (const auto& s : sources) {
    ASSIGN_OR_RETURN(auto src, Find(tenant, s));
    if (src->storage() == dst->storage()) {
      return InvalidArgument("source_index_ids: '" + s + "' is the target or shares its storage");
    }
    if (src->spec().dim != dst->spec().dim || src->spec().binary != dst->spec().binary) {
      return InvalidArgument("source_index_ids: '" + s + "' has dimension " +
                             std::to_string(src->spec().dim) + ", the target " +
                             std::to_string(dst->spec().dim));
    }
    if (dst->has_ids() && !src->has_ids()) {
      return InvalidArgument("source_index_ids: '" + s + "' has no ids to merge into IDMap " +
                             "index '" + target + "'");
    }
    srcs.push_back(std::move(src));
  }
  // Copy every source out under its own lock, then add them all under the target's in one
  // step: no two locks are held together (no deadlock), and a refusal changes nothing.
  FloatMatrix x;
  x.cols = dst->spec().dim;
  std::vector<int64_t> ids;
  std::unordered_map<int64_t, std::string> owner;  // id -> source, for duplicate messages
  for (const auto& src : srcs) {
    std::vector<int64_t> src_ids;
    ASSIGN_OR_RETURN(FloatMatrix part,
                     ReconstructRange(tenant, src->name(), 0, limits_.max_fetch_vectors, &src_ids));
    const int64_t src_total =
        src->Read([&](const Backend&, const LabelTable& t) { return t.CountOf(src->view()); });
    if (part.rows < src_total || x.rows + part.rows > limits_.max_fetch_vectors) {
      return InvalidArgument("source_index_ids: the sources hold more than the merge limit of " +
                             std::to_string(limits_.max_fetch_vectors) +
                             " vectors (max_fetch_vectors)");
    }
    if (dst->has_ids()) {
      for (int64_t id : src_ids) {
        auto [it, fresh] = owner.emplace(id, src->name());
        if (!fresh) {
          return InvalidArgument("source_index_ids: id " + std::to_string(id) + " is in both '" +
                                 it->second + "' and '" + src->name() + "'");
        }
      }
      ids.insert(ids.end(), src_ids.begin(), src_ids.end());
    }
    x.data.insert(x.data.end(), part.data.begin(), part.data.end());
    x.rows += part.rows;
  }
  MutexLock order(dst->storage()->write_order());  // log and apply in one order
  UninterruptibleScope uninterruptible;  // logged: replay must match
  ASSIGN_OR_RETURN(const Logged logged, LogFor(*dst->storage(), [&] {
                     // The vectors themselves, not the sources' names: replaying must not
                     // depend on what the sources hold by then.
                     store::WalRecord r{
                         .type = store::RecordType::kMerge, .tenant = tenant, .collection = target};
                     r.sources = sources;
                     r.vectors = x;
                     r.ids = ids;
                     return r;
                   }));
  return Outcome(*dst->storage(), logged, tenant, target, MergeVectors(*dst, x, ids, &owner));
}

StatusOr<int64_t> Engine::MergeVectors(Collection& dst, const FloatMatrix& x,
                                       const std::vector<int64_t>& ids,
                                       const std::unordered_map<int64_t, std::string>* owner) {
  return dst.Write([&](Backend& b, LabelTable& t) -> StatusOr<int64_t> {
    if (x.rows > 0) {
      for (int64_t id : ids) {
        if (t.LabelOf(dst.view(), id) >= 0) {
          auto it = owner ? owner->find(id) : decltype(owner->find(id)){};
          const std::string from =
              owner && it != owner->end() ? "'" + it->second + "'" : "a source";
          return AlreadyExists("source_index_ids: id " + std::to_string(id) + " of " + from +
                               " is already in '" + dst.name() + "'; merging would replace it");
        }
      }
      RETURN_IF_ERROR(AddLocked(dst, b, t, x, ids));
    }
    return t.CountOf(dst.view());
  });
}

StatusOr<ClusteringResult> Engine::Cluster(const FloatMatrix& x, int n_clusters, Metric metric,
                                           int niter) const {
  if (x.cols < 1 || x.cols > limits_.max_dimension) {
    return InvalidArgument("vectors: dimension must be within 1.." +
                           std::to_string(limits_.max_dimension));
  }
  IndexSpec shape;
  shape.dim = static_cast<int>(x.cols);
  RETURN_IF_ERROR(CheckMatrix("vectors", x, shape, limits_.max_train_vectors));
  if (n_clusters < 1 || n_clusters > x.rows) {
    return InvalidArgument("n_clusters: must be within 1..number of vectors (" +
                           std::to_string(x.rows) + "), got " + std::to_string(n_clusters));
  }
  if (niter < 1 || niter > 1000) {
    return InvalidArgument("niter: must be within 1..1000, got " + std::to_string(niter));
  }
  RETURN_IF_ERROR(CheckWorkCost("compute_clustering", x.rows, n_clusters, niter, x.cols));
  return factory_.Cluster(x.rows, static_cast<int>(x.cols), x.data.data(), n_clusters, metric,
                          niter);
}

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
