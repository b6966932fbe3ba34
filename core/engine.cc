#include "core/engine.h"

#include <chrono>
#include <cmath>
#include <regex>
#include <unordered_set>

namespace vecgpu {
namespace {

CollectionInfo Snapshot(const Collection& c) {
  CollectionInfo info;
  info.name = c.name();
  info.spec = c.spec();
  info.backend = c.Read([&](const Backend& b, const IdMap*) {
    info.spec.factory = b.spec().factory;  // a recluster may have rebuilt the index
    info.spec.nlist = b.spec().nlist;
    return b.Info();
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

Status NotTrained(const std::string& name) {
  return FailedPrecondition("index '" + name + "' is not trained; call train_index first");
}

// Scalar quantizers learn only per-dimension ranges, so they train on their first add:
// FAISSx's IndexScalarQuantizer client never sends train_index.
bool TrainsOnFirstAdd(const IndexSpec& spec) { return spec.kind() == "SQ"; }

Status CheckIds(std::span<const int64_t> ids) {
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

void LabelsToIds(const IdMap* map, std::vector<int64_t>& labels) {
  if (!map) return;
  for (auto& l : labels) l = l >= 0 ? map->IdOf(l) : -1;
}

}  // namespace

Engine::Engine(const Limits& limits, BackendFactory& factory)
    : limits_(limits), factory_(factory), registry_(limits.max_collections_per_tenant) {}

Status Engine::CheckName(const std::string& name) const {
  if (name.empty()) return InvalidArgument("index_id: must be a non-empty string");
  if (static_cast<int>(name.size()) > limits_.max_index_id_length) {
    return InvalidArgument("index_id: longer than " + std::to_string(limits_.max_index_id_length) +
                           " characters");
  }
  return Status::Ok();
}

Status Engine::CheckMatrix(const char* field, const FloatMatrix& x, int dim,
                           int64_t max_rows) const {
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
  std::shared_ptr<IndexStorage> storage;
  if (!spec.base_index_id.empty()) {
    // "IDMap:{base}": an id map over the tenant's base index, sharing its storage (as FAISS's
    // IndexIDMap shares its base), so training sent to the base serves the map too.
    ASSIGN_OR_RETURN(auto base, registry_.Get(tenant, spec.base_index_id));
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
    ASSIGN_OR_RETURN(auto backend, factory_.Create(spec));
    storage = std::make_shared<IndexStorage>(std::move(backend));
  }
  auto collection = std::make_shared<Collection>(tenant, req.name, spec, std::move(storage));
  RETURN_IF_ERROR(registry_.Insert(collection));
  return Snapshot(*collection);
}

Status Engine::Drop(const std::string& tenant, const std::string& name) {
  RETURN_IF_ERROR(CheckName(name));
  return registry_.Remove(tenant, name).status();
}

std::vector<CollectionInfo> Engine::List(const std::string& tenant) const {
  std::vector<CollectionInfo> out;
  for (const auto& c : registry_.List(tenant)) out.push_back(Snapshot(*c));
  return out;
}

StatusOr<CollectionInfo> Engine::Describe(const std::string& tenant,
                                          const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return Snapshot(*c);
}

Status Engine::AddLocked(const Collection& c, Backend& b, IdMap* map, const FloatMatrix& x,
                         std::span<const int64_t> ids) {
  if (!b.is_trained()) {
    if (!TrainsOnFirstAdd(c.spec())) return NotTrained(c.name());
    RETURN_IF_ERROR(b.Train(x.rows, x.data.data()));
  }
  if (!map) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] != b.next_label() + static_cast<int64_t>(i)) {
        return InvalidArgument("ids: index '" + c.name() + "' numbers its vectors itself (next: " +
                               std::to_string(b.next_label()) +
                               "); create it as IDMap to add vectors under ids of your own");
      }
    }
    return b.Add(x.rows, x.data.data());
  }
  if (ids.empty()) {
    return InvalidArgument("ids: index '" + c.name() +
                           "' is an IDMap index; give one id per vector");
  }
  RETURN_IF_ERROR(CheckIds(ids));
  std::vector<int64_t> replaced;
  for (int64_t id : ids) {
    if (int64_t label = map->LabelOf(id); label >= 0) replaced.push_back(label);
  }
  if (!replaced.empty()) {
    ASSIGN_OR_RETURN(int64_t removed, b.RemoveLabels(replaced));
    (void)removed;
    map->Erase(replaced, b.labels_shift_on_remove());
  }
  const int64_t first = b.next_label();
  RETURN_IF_ERROR(b.Add(x.rows, x.data.data()));
  map->Append(first, ids);
  return Status::Ok();
}

StatusOr<VectorLayout> Engine::Layout(const std::string& tenant, const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return VectorLayout{c->spec().dim, c->spec().binary};
}

StatusOr<AddResult> Engine::Add(const std::string& tenant, const std::string& name,
                                const FloatMatrix& x, std::span<const int64_t> ids) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckMatrix("vectors", x, c->spec().dim, limits_.max_add_vectors));
  if (!ids.empty() && static_cast<int64_t>(ids.size()) != x.rows) {
    return InvalidArgument("ids: " + std::to_string(ids.size()) + " ids for " +
                           std::to_string(x.rows) + " vectors");
  }
  return c->Write([&](Backend& b, IdMap* map) -> StatusOr<AddResult> {
    RETURN_IF_ERROR(AddLocked(*c, b, map, x, ids));
    c->stats().adds++;
    c->stats().vectors_added += x.rows;
    return AddResult{x.rows, b.ntotal()};
  });
}

StatusOr<CollectionInfo> Engine::Train(const std::string& tenant, const std::string& name,
                                       const FloatMatrix& x) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckMatrix("training_vectors", x, c->spec().dim, limits_.max_train_vectors));
  RETURN_IF_ERROR(c->Write([&](Backend& b, IdMap*) { return b.Train(x.rows, x.data.data()); }));
  return Snapshot(*c);
}

StatusOr<int64_t> Engine::Remove(const std::string& tenant, const std::string& name,
                                 std::span<const int64_t> ids) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (static_cast<int64_t>(ids.size()) > limits_.max_add_vectors) {
    return InvalidArgument("ids: " + std::to_string(ids.size()) + " ids, above the limit of " +
                           std::to_string(limits_.max_add_vectors));
  }
  auto removed = c->Write([&](Backend& b, IdMap* map) -> StatusOr<int64_t> {
    std::vector<int64_t> labels;
    std::unordered_set<int64_t> seen;
    for (int64_t id : ids) {
      int64_t label = map ? map->LabelOf(id) : id;
      if (label >= 0 && seen.insert(label).second) labels.push_back(label);
    }
    if (labels.empty()) return int64_t{0};
    ASSIGN_OR_RETURN(int64_t n, b.RemoveLabels(labels));
    if (map) map->Erase(labels, b.labels_shift_on_remove());
    return n;
  });
  if (removed.ok()) c->stats().removals += *removed;
  return removed;
}

Status Engine::Replace(const std::string& tenant, const std::string& name, int64_t id,
                       const FloatMatrix& vector) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckMatrix("vector", vector, c->spec().dim, 1));
  if (c->spec().id_map == IdMapKind::kNone) {
    return InvalidArgument("replace_vector: index '" + name +
                           "' has no id map; create it as IDMap/IDMap2 to replace by id");
  }
  return c->Write([&](Backend& b, IdMap* map) -> Status {
    if (!map->Contains(id)) {
      return NotFound("id " + std::to_string(id) + " is not in index '" + name + "'");
    }
    const int64_t ids[] = {id};
    return AddLocked(*c, b, map, vector, ids);
  });
}

Status Engine::Reset(const std::string& tenant, const std::string& name) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return c->Write([](Backend& b, IdMap* map) {
    if (map) map->Clear();
    return b.Reset();
  });
}

StatusOr<SearchResult> Engine::Search(const std::string& tenant, const std::string& name,
                                      const FloatMatrix& queries, int k,
                                      const SearchParams& params) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (k < 1 || k > limits_.max_k) {
    return InvalidArgument("k: must be within 1.." + std::to_string(limits_.max_k) + ", got " +
                           std::to_string(k));
  }
  RETURN_IF_ERROR(CheckMatrix("query_vectors", queries, c->spec().dim, limits_.max_query_vectors));
  if (queries.rows * k > limits_.max_search_results) {
    return InvalidArgument("k: " + std::to_string(queries.rows) + " queries x k " +
                           std::to_string(k) + " is above the limit of " +
                           std::to_string(limits_.max_search_results) + " results per search");
  }
  SearchResult r;
  r.nq = queries.rows;
  r.k = k;
  r.distances.resize(r.nq * k);
  r.labels.resize(r.nq * k);
  auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(c->Read([&](const Backend& b, const IdMap* map) -> Status {
    if (!b.is_trained()) return NotTrained(name);
    RETURN_IF_ERROR(
        b.Search(r.nq, queries.data.data(), k, params, r.distances.data(), r.labels.data()));
    LabelsToIds(map, r.labels);
    return Status::Ok();
  }));
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);
  c->stats().searches++;
  c->stats().queries += r.nq;
  c->stats().search_micros += micros.count();
  return r;
}

StatusOr<RangeResult> Engine::RangeSearch(const std::string& tenant, const std::string& name,
                                          const FloatMatrix& queries, float radius,
                                          const SearchParams& params) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (!std::isfinite(radius)) return InvalidArgument("radius: must be a finite number");
  RETURN_IF_ERROR(CheckMatrix("query_vectors", queries, c->spec().dim, limits_.max_query_vectors));
  auto r = c->Read([&](const Backend& b, const IdMap* map) -> StatusOr<RangeResult> {
    if (!b.is_trained()) return NotTrained(name);
    ASSIGN_OR_RETURN(RangeResult res,
                     b.RangeSearch(queries.rows, queries.data.data(), radius, params));
    LabelsToIds(map, res.labels);
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
  RETURN_IF_ERROR(c->Read([&](const Backend& b, const IdMap* map) -> Status {
    for (size_t i = 0; i < ids.size(); ++i) {
      int64_t label = map ? map->LabelOf(ids[i]) : ids[i];
      if (label < 0) return NotFound("id " + std::to_string(ids[i]) + " is not in the index");
      RETURN_IF_ERROR(b.Reconstruct(label, out.data.data() + i * out.cols));
    }
    return Status::Ok();
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
  RETURN_IF_ERROR(c->Read([&](const Backend& b, const IdMap* map) -> Status {
    int64_t ntotal = b.ntotal();
    if (start > ntotal) {
      return OutOfRange("start_idx: " + std::to_string(start) + " is past ntotal " +
                        std::to_string(ntotal));
    }
    out.rows = std::min(n, ntotal - start);
    out.data.resize(out.rows * out.cols);
    if (out.rows > 0) RETURN_IF_ERROR(b.ReconstructN(start, out.rows, out.data.data()));
    if (ids) {
      *ids = b.LabelsAt(start, out.rows);
      LabelsToIds(map, *ids);
    }
    return Status::Ok();
  }));
  return out;
}

Status Engine::SetParameter(const std::string& tenant, const std::string& name,
                            std::string_view param, double value) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (!std::isfinite(value)) return InvalidArgument("value: must be a finite number");
  return c->Write([&](Backend& b, IdMap*) { return b.SetParameter(param, value); });
}

StatusOr<double> Engine::GetParameter(const std::string& tenant, const std::string& name,
                                      std::string_view param) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return c->Read([&](const Backend& b, const IdMap*) { return b.GetParameter(param); });
}

StatusOr<ReclusterResult> Engine::Recluster(const std::string& tenant, const std::string& name,
                                            int n_clusters, double sample_ratio) {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  if (!(sample_ratio > 0 && sample_ratio <= 1)) {
    return InvalidArgument("sample_ratio: must be within (0, 1]");
  }
  return c->Rebuild([&](std::unique_ptr<Backend>& b) -> StatusOr<ReclusterResult> {
    const IndexSpec old = b->spec();
    const BackendInfo info = b->Info();
    if (old.nlist <= 0 || old.binary) {
      return InvalidArgument("index_id: '" + name + "' is not an IVF index; only IVF indexes " +
                             "are reclustered");
    }
    if (!info.is_trained) return NotTrained(name);
    const int nlist = n_clusters > 0 ? n_clusters : old.nlist;
    const int64_t n = info.ntotal;
    if (n < nlist) {
      return InvalidArgument("n_clusters: " + std::to_string(nlist) + " lists need at least as " +
                             "many vectors; the index holds " + std::to_string(n));
    }
    if (n > limits_.max_train_vectors) {
      return InvalidArgument("index_id: '" + name + "' holds " + std::to_string(n) +
                             " vectors, above the recluster limit of " +
                             std::to_string(limits_.max_train_vectors) + " (max_train_vectors)");
    }
    const std::string factory =
        std::regex_replace(old.factory, std::regex(R"(IVF\d+)"), "IVF" + std::to_string(nlist),
                           std::regex_constants::format_first_only);
    ASSIGN_OR_RETURN(IndexSpec spec, ParseIndexType(factory, old.dim, MetricName(old.metric)));
    spec.index_type = old.index_type;
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> fresh, factory_.Create(spec));
    const std::vector<int64_t> labels = b->LabelsAt(0, n);
    std::vector<float> x(n * old.dim);
    RETURN_IF_ERROR(b->ReconstructN(0, n, x.data()));
    // Train on an even sample of at least nlist vectors.
    const int64_t m =
        std::clamp<int64_t>(static_cast<int64_t>(std::ceil(sample_ratio * n)), nlist, n);
    std::vector<float> sample(m * old.dim);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t row = i * n / m;
      std::copy(x.begin() + row * old.dim, x.begin() + (row + 1) * old.dim,
                sample.begin() + i * old.dim);
    }
    RETURN_IF_ERROR(fresh->Train(m, sample.data()));
    RETURN_IF_ERROR(fresh->AddLabeled(n, x.data(), labels.data()));
    RETURN_IF_ERROR(fresh->SetParameter("nprobe", std::min(info.nprobe, nlist)));
    b = std::move(fresh);  // every collection sharing this storage sees the new index
    return ReclusterResult{old.nlist, nlist, n};
  });
}

StatusOr<std::vector<TransformStep>> Engine::Transforms(const std::string& tenant,
                                                        const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return c->Read([](const Backend& b, const IdMap*) { return b.Transforms(); });
}

StatusOr<FloatMatrix> Engine::ApplyTransform(const std::string& tenant, const std::string& name,
                                             const FloatMatrix& x) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  RETURN_IF_ERROR(CheckMatrix("vectors", x, c->spec().dim, limits_.max_add_vectors));
  return c->Read(
      [&](const Backend& b, const IdMap*) { return b.ApplyTransform(x.rows, x.data.data()); });
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
    const bool dst_ids = dst->spec().id_map != IdMapKind::kNone;
    if (dst_ids && src->spec().id_map == IdMapKind::kNone) {
      return InvalidArgument("source_index_ids: '" + s + "' has no ids to merge into IDMap " +
                             "index '" + target + "'");
    }
    srcs.push_back(std::move(src));
  }
  for (const auto& src : srcs) {
    // Copy the source out under its own lock, then add it under the target's: the two locks
    // are never held together, so concurrent merges cannot deadlock.
    std::vector<int64_t> ids;
    ASSIGN_OR_RETURN(FloatMatrix x,
                     ReconstructRange(tenant, src->name(), 0, limits_.max_fetch_vectors, &ids));
    const int64_t src_total =
        src->Read([](const Backend& b, const IdMap*) { return b.ntotal(); });
    if (x.rows < src_total) {
      return InvalidArgument("source_index_ids: '" + src->name() + "' holds " +
                             std::to_string(src_total) + " vectors, above the merge limit of " +
                             std::to_string(limits_.max_fetch_vectors) + " (max_fetch_vectors)");
    }
    if (x.rows == 0) continue;
    RETURN_IF_ERROR(dst->Write([&](Backend& b, IdMap* map) -> Status {
      if (map) {
        for (int64_t id : ids) {
          if (id < 0 || map->Contains(id)) {
            return AlreadyExists("source_index_ids: id " + std::to_string(id) + " of '" +
                                 src->name() + "' is already in '" + target +
                                 "'; merging would replace it");
          }
        }
      }
      return AddLocked(*dst, b, map, x,
                       map ? std::span<const int64_t>(ids) : std::span<const int64_t>());
    }));
  }
  return dst->Read([](const Backend& b, const IdMap*) { return b.ntotal(); });
}

StatusOr<ClusteringResult> Engine::Cluster(const FloatMatrix& x, int n_clusters, Metric metric,
                                           int niter) const {
  if (x.cols < 1 || x.cols > limits_.max_dimension) {
    return InvalidArgument("vectors: dimension must be within 1.." +
                           std::to_string(limits_.max_dimension));
  }
  RETURN_IF_ERROR(CheckMatrix("vectors", x, static_cast<int>(x.cols), limits_.max_train_vectors));
  if (n_clusters < 1 || n_clusters > x.rows) {
    return InvalidArgument("n_clusters: must be within 1..number of vectors (" +
                           std::to_string(x.rows) + "), got " + std::to_string(n_clusters));
  }
  if (niter < 1 || niter > 1000) {
    return InvalidArgument("niter: must be within 1..1000, got " + std::to_string(niter));
  }
  return factory_.Cluster(x.rows, static_cast<int>(x.cols), x.data.data(), n_clusters, metric,
                          niter);
}

}  // namespace vecgpu
