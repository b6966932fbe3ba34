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

CollectionInfo SnapshotOf(const Collection& c) {
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

namespace {

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
  return SnapshotOf(*collection);
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
  return SnapshotOf(*c);
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

}  // namespace vecgpu
