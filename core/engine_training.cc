// The Engine's long work: training (logged as its result, installed, never repeated at
// replay), reclustering, merging and k-means, with the cost cap they share.
#include "core/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <regex>
#include <unordered_set>

#include "core/device/placed_backend.h"
#include "core/engine_internal.h"
#include "core/util/interrupt.h"
#include "core/util/utf8.h"
#include "core/view_ops.h"

namespace vecgpu {

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
  return SnapshotOf(*c);
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

}  // namespace vecgpu
