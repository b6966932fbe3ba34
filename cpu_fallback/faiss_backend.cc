#include "cpu_fallback/faiss_backend.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/VectorTransform.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/utils/distances.h>
#include <omp.h>

#include <algorithm>
#include <exception>
#include <functional>
#include <limits>
#include <numeric>

#include "cpu_fallback/faiss_errors.h"
#include "cpu_fallback/faiss_io.h"
#include "cpu_fallback/hnsw_search.h"

namespace vecgpu::cpu {
namespace {

faiss::MetricType ToFaiss(Metric m) {
  return m == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
}

// Scalar quantizers that learn their ranges from the data they are given keep their vectors
// exact until this many have arrived, then train on all of them (a quantizer trained on the
// first one or ten vectors clips everything after to their range).
constexpr int64_t kScalarQuantizerTrainRows = 1024;

// Splits a search of n rows into row chunks searched in parallel on the cores, for batches:
// the request workers run FAISS single-threaded (so concurrent small searches do not
// oversubscribe the cores), and FAISS's flat search hands batches of 20 rows or more to a
// single-threaded BLAS. fn(start, count) searches rows [start, start + count).
Status ParallelRows(int64_t n, const std::function<Status(int64_t, int64_t)>& fn) {
  static const int cores = std::max(1, omp_get_num_procs());
  constexpr int64_t kMinRowsPerChunk = 4;
  const int chunks = static_cast<int>(std::min<int64_t>(cores, n / kMinRowsPerChunk));
  if (chunks <= 1) return fn(0, n);
  std::vector<Status> st(chunks);
  // An exception must not leave an OpenMP region (std::terminate): FAISS throws when a search
  // is interrupted (its deadline, shutdown), so each chunk keeps its own and one is rethrown.
  std::vector<std::exception_ptr> thrown(chunks);
#pragma omp parallel for num_threads(chunks) schedule(static, 1)
  for (int c = 0; c < chunks; ++c) {
    const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    try {
      st[c] = fn(begin, end - begin);
    } catch (...) {
      thrown[c] = std::current_exception();
    }
  }
  for (const auto& e : thrown) {
    if (e) return CallFaiss("search", [&] { std::rethrow_exception(e); });
  }
  for (const Status& s : st) RETURN_IF_ERROR(s);
  return Status::Ok();
}

// Exact search of a flat index with the stored vectors split into one block per core: each
// core streams its block once for the whole batch (splitting the queries instead made every
// core stream every vector), and the per-block top-k lists are merged.
void FlatSearchByBlocks(const faiss::IndexFlat& index, int64_t n, const float* x, int k,
                        float* distances, int64_t* labels, int blocks) {
  const int64_t nb = index.ntotal, d = index.d;
  const bool ip = index.metric_type == faiss::METRIC_INNER_PRODUCT;
  std::vector<float> dist(static_cast<size_t>(blocks) * n * k);
  std::vector<int64_t> ids(dist.size());
  std::vector<std::exception_ptr> thrown(blocks);  // none may leave the region (ParallelRows)
#pragma omp parallel for num_threads(blocks) schedule(static, 1)
  for (int b = 0; b < blocks; ++b) {
    const int64_t begin = nb * b / blocks, end = nb * (b + 1) / blocks;
    float* db = dist.data() + static_cast<size_t>(b) * n * k;
    int64_t* ib = ids.data() + static_cast<size_t>(b) * n * k;
    const float* y = index.get_xb() + begin * d;
    try {
      if (ip) {
        faiss::knn_inner_product(x, y, d, n, end - begin, k, db, ib);
      } else {
        faiss::knn_L2sqr(x, y, d, n, end - begin, k, db, ib);
      }
    } catch (...) {
      thrown[b] = std::current_exception();
      continue;
    }
    for (int64_t i = 0; i < n * k; ++i) {
      if (ib[i] >= 0) ib[i] += begin;
    }
  }
  for (const auto& e : thrown) {
    if (e) std::rethrow_exception(e);
  }
  // Merge: each block's list is sorted, best first.
  std::vector<int> at(blocks);
  for (int64_t q = 0; q < n; ++q) {
    std::fill(at.begin(), at.end(), 0);
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int b = 0; b < blocks; ++b) {
        if (at[b] >= k) continue;
        const size_t i = (static_cast<size_t>(b) * n + q) * k + at[b];
        if (ids[i] < 0) continue;
        if (best < 0) {
          best = b;
          continue;
        }
        const size_t bi = (static_cast<size_t>(best) * n + q) * k + at[best];
        if (ip ? dist[i] > dist[bi] : dist[i] < dist[bi]) best = b;
      }
      if (best < 0) {
        labels[q * k + j] = -1;
        distances[q * k + j] =
            ip ? -std::numeric_limits<float>::max() : std::numeric_limits<float>::max();
        continue;
      }
      const size_t bi = (static_cast<size_t>(best) * n + q) * k + at[best]++;
      labels[q * k + j] = ids[bi];
      distances[q * k + j] = dist[bi];
    }
  }
}

// IVF search parameters for one request; `get()` is null when the request sets none. (HNSW
// efSearch goes through HnswSearch: FAISS 1.7.3 caps it at the index's own value.)
class RequestParams {
 public:
  RequestParams(const SearchParams& p, const faiss::Index* index, const faiss::IndexIVF* ivf) {
    if (ivf && p.nprobe) {
      ivf_.nprobe = std::clamp<size_t>(*p.nprobe, 1, ivf->nlist);
      ivf_.max_codes = ivf->max_codes;
      ptr_ = &ivf_;
    }
    if (ptr_ && dynamic_cast<const faiss::IndexPreTransform*>(index)) {
      pre_.index_params = ptr_;
      ptr_ = &pre_;
    }
  }
  const faiss::SearchParameters* get() const { return ptr_; }

 private:
  faiss::SearchParametersIVF ivf_;
  faiss::SearchParametersPreTransform pre_;
  faiss::SearchParameters* ptr_ = nullptr;
};

// x run through `pre`'s transform chain (or x itself when there is none); frees what it made.
class Transformed {
 public:
  Transformed(const faiss::IndexPreTransform* pre, int64_t n, const float* x)
      : x_(x), y_(pre ? pre->apply_chain(n, x) : x) {}
  ~Transformed() {
    if (y_ != x_) delete[] y_;
  }
  Transformed(const Transformed&) = delete;
  Transformed& operator=(const Transformed&) = delete;
  const float* get() const { return y_; }

 private:
  const float* x_;
  const float* y_;
};

}  // namespace

FaissBackend::FaissBackend(IndexSpec spec, std::unique_ptr<faiss::Index> index)
    : spec_(std::move(spec)), index_(std::move(index)) {
  faiss::Index* core = index_.get();
  pre_ = dynamic_cast<faiss::IndexPreTransform*>(core);
  if (pre_) core = pre_->index;
  core_ = core;
  ivf_ = dynamic_cast<faiss::IndexIVF*>(core);
  hnsw_ = dynamic_cast<faiss::IndexHNSW*>(core);
  if (spec_.kind() == "SQ" && !index_->is_trained) {
    pending_ = std::make_unique<faiss::IndexFlat>(spec_.dim, index_->metric_type);
  }
}

FaissBackend::~FaissBackend() = default;

StatusOr<std::unique_ptr<Backend>> FaissBackend::Create(const IndexSpec& spec) {
  std::unique_ptr<faiss::Index> index;
  Status st = CallFaiss("index_type '" + spec.index_type + "'", [&] {
    index.reset(faiss::index_factory(spec.dim, spec.factory.c_str(), ToFaiss(spec.metric)));
  });
  if (!st.ok()) return InvalidArgument(st.message());
  if (index->d != spec.dim) {
    return InvalidArgument("index_type '" + spec.index_type + "': changes the dimension");
  }
  // FAISS's factory turns on polysemous training for PQ kinds, which costs tens of seconds per
  // training run and is off in the IndexPQ / IndexIVFPQ constructors clients compare against.
  if (auto* pq = dynamic_cast<faiss::IndexPQ*>(index.get())) pq->do_polysemous_training = false;
  std::unique_ptr<FaissBackend> b(new FaissBackend(spec, std::move(index)));
  if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(b->ivf_)) {
    ivfpq->do_polysemous_training = false;
  }
  if (b->ivf_) {
    RETURN_IF_ERROR(CallFaiss("direct map",
                              [&] { b->ivf_->set_direct_map_type(faiss::DirectMap::Hashtable); }));
  }
  return std::unique_ptr<Backend>(std::move(b));
}

const faiss::Index& FaissBackend::active() const { return pending_ ? *pending_ : *index_; }
faiss::Index& FaissBackend::active() { return pending_ ? *pending_ : *index_; }

int64_t FaissBackend::ntotal() const { return active().ntotal; }

bool FaissBackend::is_trained() const { return pending_ || index_->is_trained; }

BackendInfo FaissBackend::Info() const {
  BackendInfo info;
  info.ntotal = ntotal();
  info.is_trained = is_trained();
  info.device = "cpu";
  int64_t per_vector = 4 * static_cast<int64_t>(spec_.dim);
  const faiss::Index* codes = hnsw_ ? hnsw_->storage : index_.get();
  if (auto* fc = dynamic_cast<const faiss::IndexFlatCodes*>(codes)) per_vector = fc->code_size;
  if (ivf_) per_vector = static_cast<int64_t>(ivf_->code_size) + 8 + 16;  // code, id, map
  if (hnsw_) per_vector += 4LL * hnsw_->hnsw.nb_neighbors(0);
  info.memory_bytes = per_vector * index_->ntotal;
  if (pending_) info.memory_bytes = 4LL * spec_.dim * pending_->ntotal;
  if (ivf_) info.nprobe = static_cast<int>(ivf_->nprobe);
  if (hnsw_) {
    info.ef_search = hnsw_->hnsw.efSearch;
    info.ef_construction = hnsw_->hnsw.efConstruction;
  }
  return info;
}

int64_t FaissBackend::next_label() const { return ivf_ ? ivf_next_label_ : ntotal(); }

Status FaissBackend::Train(int64_t n, const float* x) {
  RETURN_IF_ERROR(CallFaiss("train_index", [&] { index_->train(n, x); }));
  return pending_ ? FlushPending(0, nullptr, /*train=*/false) : Status::Ok();
}

Status FaissBackend::FlushPending(int64_t n, const float* x, bool train) {
  // The buffered vectors, then x, keep their order: labels (positions) do not change.
  const int64_t held = pending_->ntotal;
  std::vector<float> all(pending_->get_xb(), pending_->get_xb() + held * spec_.dim);
  all.insert(all.end(), x, x + n * spec_.dim);
  const int64_t total = held + n;
  return CallFaiss("add_vectors", [&] {
    if (train) index_->train(total, all.data());
    index_->add(total, all.data());
    pending_.reset();
  });
}

Status FaissBackend::Add(int64_t n, const float* x) {
  if (pending_) {
    if (pending_->ntotal + n < kScalarQuantizerTrainRows) {
      return CallFaiss("add_vectors", [&] { pending_->add(n, x); });
    }
    return FlushPending(n, x, /*train=*/true);
  }
  if (!ivf_) return CallFaiss("add_vectors", [&] { index_->add(n, x); });
  std::vector<faiss::Index::idx_t> labels(n);
  std::iota(labels.begin(), labels.end(), ivf_next_label_);
  RETURN_IF_ERROR(CallFaiss("add_vectors", [&] { index_->add_with_ids(n, x, labels.data()); }));
  ivf_next_label_ += n;
  return Status::Ok();
}

Status FaissBackend::AddLabeled(int64_t n, const float* x, const int64_t* labels,
                                int64_t next_label) {
  if (!ivf_) {
    // Labels are storage positions: only the next ones can be given.
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] != ntotal() + i) {
        return Unimplemented("flat-storage indexes number their vectors by position");
      }
    }
    return Add(n, x);
  }
  RETURN_IF_ERROR(CallFaiss("add_vectors", [&] { index_->add_with_ids(n, x, labels); }));
  ivf_next_label_ = std::max(ivf_next_label_, next_label);
  for (int64_t i = 0; i < n; ++i) ivf_next_label_ = std::max(ivf_next_label_, labels[i] + 1);
  return Status::Ok();
}

bool FaissBackend::HasLabel(int64_t label) const {
  if (!ivf_) return label >= 0 && label < ntotal();
  try {
    ivf_->direct_map.get(label);  // throws when absent
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

StatusOr<int64_t> FaissBackend::RemoveLabels(std::span<const int64_t> labels) {
  std::vector<faiss::Index::idx_t> present;
  for (int64_t l : labels) {
    if (HasLabel(l)) present.push_back(l);
  }
  if (present.empty()) return int64_t{0};
  size_t removed = 0;
  if (pending_) {
    faiss::IDSelectorBatch sel(present.size(), present.data());
    RETURN_IF_ERROR(CallFaiss("remove_ids", [&] { removed = pending_->remove_ids(sel); }));
  } else if (ivf_) {
    // The hash-table direct map removes by explicit label list only.
    faiss::IDSelectorArray sel(present.size(), present.data());
    RETURN_IF_ERROR(CallFaiss("remove_ids", [&] { removed = index_->remove_ids(sel); }));
  } else {
    faiss::IDSelectorBatch sel(present.size(), present.data());
    RETURN_IF_ERROR(CallFaiss("remove_ids", [&] { removed = index_->remove_ids(sel); }));
  }
  return static_cast<int64_t>(removed);
}

Status FaissBackend::Reset() {
  RETURN_IF_ERROR(CallFaiss("reset", [&] { active().reset(); }));
  ivf_next_label_ = 0;
  return Status::Ok();
}

Status FaissBackend::Search(int64_t n, const float* x, int k, const SearchParams& params,
                            float* distances, int64_t* labels) const {
  if (ntotal() == 0) {
    // FAISS 1.7.3's flat search returns without writing its outputs when the index is empty.
    std::fill(labels, labels + n * k, int64_t{-1});
    std::fill(distances, distances + n * k, std::numeric_limits<float>::max());
    return Status::Ok();
  }
  // A batch on an exact flat index: split the stored vectors across the cores.
  static const int cores = std::max(1, omp_get_num_procs());
  const auto* flat =
      pending_ ? pending_.get() : dynamic_cast<const faiss::IndexFlat*>(index_.get());
  if (flat && cores > 1 && n >= 4 && flat->ntotal >= 4096) {
    return CallFaiss("search",
                     [&] { FlatSearchByBlocks(*flat, n, x, k, distances, labels, cores); });
  }
  const int d = spec_.dim;
  return ParallelRows(n, [&](int64_t start, int64_t rows) {
    const float* xs = x + start * d;
    float* ds = distances + start * k;
    int64_t* ls = labels + start * k;
    if (pending_) return CallFaiss("search", [&] { pending_->search(rows, xs, k, ds, ls); });
    if (hnsw_ && params.ef_search) {
      const int ef = std::clamp(*params.ef_search, 1, 1'000'000);
      return CallFaiss("search", [&] {
        Transformed y(pre_, rows, xs);
        HnswSearch(*hnsw_, rows, y.get(), k, ef, ds, ls);
      });
    }
    RequestParams rp(params, index_.get(), ivf_);
    return CallFaiss("search", [&] { index_->search(rows, xs, k, ds, ls, rp.get()); });
  });
}

StatusOr<RangeResult> FaissBackend::RangeSearch(int64_t n, const float* x, float radius,
                                                const SearchParams& params) const {
  RangeResult out;
  if (!pending_ && !ivf_ && !dynamic_cast<const faiss::IndexFlat*>(core_)) {
    RETURN_IF_ERROR(ScanRange(n, x, radius, &out));
    return out;
  }
  RequestParams rp(params, index_.get(), ivf_);
  faiss::RangeSearchResult res(n);
  RETURN_IF_ERROR(CallFaiss("range_search", [&] {
    if (pending_) {
      pending_->range_search(n, x, radius, &res);
    } else {
      index_->range_search(n, x, radius, &res, rp.get());
    }
  }));
  out.lims.assign(res.lims, res.lims + n + 1);
  out.labels.assign(res.labels, res.labels + res.lims[n]);
  out.distances.assign(res.distances, res.distances + res.lims[n]);
  return out;
}

Status FaissBackend::ScanRange(int64_t n, const float* x, float radius, RangeResult* out) const {
  // The stored codes live behind the transform chain: queries go through it first.
  const faiss::Index* storage = hnsw_ ? hnsw_->storage : core_;
  std::unique_ptr<faiss::DistanceComputer> dc;
  std::unique_ptr<Transformed> y;
  RETURN_IF_ERROR(CallFaiss("range_search", [&] {
    dc.reset(storage->get_distance_computer());
    y = std::make_unique<Transformed>(pre_, n, x);
  }));
  const bool l2 = storage->metric_type == faiss::METRIC_L2;
  out->lims.assign(1, 0);
  for (int64_t q = 0; q < n; ++q) {
    dc->set_query(y->get() + q * storage->d);
    for (int64_t i = 0; i < storage->ntotal; ++i) {
      float d = (*dc)(i);
      if (l2 ? d < radius : d > radius) {
        out->labels.push_back(i);
        out->distances.push_back(d);
      }
    }
    out->lims.push_back(static_cast<int64_t>(out->labels.size()));
  }
  return Status::Ok();
}

Status FaissBackend::Reconstruct(int64_t label, float* out) const {
  if (!HasLabel(label)) return NotFound("id " + std::to_string(label) + " is not in the index");
  return CallFaiss("reconstruct", [&] { active().reconstruct(label, out); });
}

Status FaissBackend::ReconstructN(int64_t start, int64_t n, float* out) const {
  if (!ivf_) {
    if (start < 0 || n < 0 || start + n > ntotal()) {
      return NotFound("positions " + std::to_string(start) + ".." + std::to_string(start + n) +
                      " are past the index's " + std::to_string(ntotal()) + " vectors");
    }
    return CallFaiss("reconstruct_n", [&] { active().reconstruct_n(start, n, out); });
  }
  for (int64_t i = 0; i < n; ++i) RETURN_IF_ERROR(Reconstruct(start + i, out + i * spec_.dim));
  return Status::Ok();
}

std::vector<TransformStep> FaissBackend::Transforms() const {
  std::vector<TransformStep> steps;
  auto* pre = dynamic_cast<const faiss::IndexPreTransform*>(index_.get());
  if (!pre) return steps;
  for (const faiss::VectorTransform* t : pre->chain) {
    TransformStep step;
    step.type = dynamic_cast<const faiss::OPQMatrix*>(t)                ? "OPQMatrix"
                : dynamic_cast<const faiss::PCAMatrix*>(t)              ? "PCAMatrix"
                : dynamic_cast<const faiss::RandomRotationMatrix*>(t)   ? "RandomRotationMatrix"
                : dynamic_cast<const faiss::NormalizationTransform*>(t) ? "NormalizationTransform"
                                                                        : "VectorTransform";
    step.d_in = t->d_in;
    step.d_out = t->d_out;
    step.is_trained = t->is_trained;
    steps.push_back(step);
  }
  return steps;
}

StatusOr<FloatMatrix> FaissBackend::ApplyTransform(int64_t n, const float* x) const {
  auto* pre = dynamic_cast<const faiss::IndexPreTransform*>(index_.get());
  if (!pre) {
    return InvalidArgument("index_id: index '" + spec_.index_type + "' has no vector transform");
  }
  for (const faiss::VectorTransform* t : pre->chain) {
    if (!t->is_trained) {
      return FailedPrecondition("the index's vector transform is not trained; call train_index");
    }
  }
  FloatMatrix out;
  out.rows = n;
  out.cols = pre->index->d;
  out.data.resize(n * out.cols);
  RETURN_IF_ERROR(CallFaiss("apply_transform", [&] {
    const float* y = pre->apply_chain(n, x);
    std::copy(y, y + n * out.cols, out.data.begin());
    if (y != x) delete[] y;
  }));
  return out;
}

Status FaissBackend::SetParameter(std::string_view name, double value) {
  if (name == "nprobe") {
    if (!ivf_) return InvalidArgument("parameter: nprobe applies to IVF indexes only");
    if (value < 1 || value > static_cast<double>(ivf_->nlist)) {
      return InvalidArgument("value: nprobe must be within 1..nlist (" +
                             std::to_string(ivf_->nlist) + ")");
    }
    ivf_->nprobe = static_cast<size_t>(value);
    return Status::Ok();
  }
  if (name == "efSearch" || name == "ef_search" || name == "efConstruction") {
    if (!hnsw_) {
      return InvalidArgument("parameter: " + std::string(name) + " applies to HNSW indexes only");
    }
    if (value < 1 || value > 1e6) return InvalidArgument("value: must be within 1..1000000");
    (name == "efConstruction" ? hnsw_->hnsw.efConstruction : hnsw_->hnsw.efSearch) =
        static_cast<int>(value);
    return Status::Ok();
  }
  return InvalidArgument("parameter: unknown parameter '" + std::string(name) +
                         "' (expected nprobe, efSearch or efConstruction)");
}

StatusOr<double> FaissBackend::GetParameter(std::string_view name) const {
  BackendInfo info = Info();
  if (name == "nprobe" && ivf_) return info.nprobe;
  if ((name == "efSearch" || name == "ef_search") && hnsw_) return info.ef_search;
  if (name == "efConstruction" && hnsw_) return info.ef_construction;
  if (name == "nlist" && ivf_) return static_cast<double>(ivf_->nlist);
  if (name == "ntotal") return static_cast<double>(info.ntotal);
  if (name == "dimension" || name == "d") return spec_.dim;
  if (name == "is_trained") return info.is_trained ? 1 : 0;
  return InvalidArgument("parameter: '" + std::string(name) + "' is not a parameter of this " +
                         spec_.kind() + " index");
}

StatusOr<std::vector<uint8_t>> FaissBackend::Serialize() const {
  faiss::VectorIOWriter out;
  // Room for the codes up front: growing the buffer by doubling copied a large index several
  // times over, while a snapshot held its writes.
  out.data.reserve(Info().memory_bytes + (1 << 20));
  RETURN_IF_ERROR(CallFaiss("serialize", [&] {
    faiss::write_index(index_.get(), &out);
    // An untrained scalar quantizer's vectors are held exactly until it trains: they follow.
    if (pending_) faiss::write_index(pending_.get(), &out);
  }));
  return std::move(out.data);
}

StatusOr<std::unique_ptr<Backend>> FaissBackend::Load(const IndexSpec& spec, std::string_view bytes,
                                                      int64_t next_label) {
  std::unique_ptr<faiss::Index> index, pending;
  Status st = CallFaiss("load", [&] {
    SpanIOReader in(bytes);
    index.reset(faiss::read_index(&in));
    if (!in.done()) pending.reset(faiss::read_index(&in));  // see Serialize
  });
  if (!st.ok()) return DataLoss("index '" + spec.index_type + "': " + st.message());
  if (index->d != spec.dim) {
    return DataLoss("index '" + spec.index_type + "': stored dimension " +
                    std::to_string(index->d) + ", expected " + std::to_string(spec.dim));
  }
  std::unique_ptr<FaissBackend> b(new FaissBackend(spec, std::move(index)));
  if (b->ivf_) b->ivf_next_label_ = next_label;
  if (pending) {
    auto* flat = dynamic_cast<faiss::IndexFlat*>(pending.get());
    if (!b->pending_ || !flat || flat->d != spec.dim) {
      return DataLoss("index '" + spec.index_type + "': bytes after the index");
    }
    pending.release();
    b->pending_.reset(flat);
  }
  return std::unique_ptr<Backend>(std::move(b));
}

}  // namespace vecgpu::cpu
