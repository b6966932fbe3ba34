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
#include <faiss/index_factory.h>

#include <algorithm>
#include <numeric>

#include "cpu_fallback/faiss_errors.h"

namespace vecgpu::cpu {
namespace {

faiss::MetricType ToFaiss(Metric m) {
  return m == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
}

// Search parameters for one request; `get()` is null when the request sets none.
class RequestParams {
 public:
  RequestParams(const SearchParams& p, const faiss::Index* index, const faiss::IndexIVF* ivf,
                const faiss::IndexHNSW* hnsw) {
    if (ivf && p.nprobe) {
      ivf_.nprobe = std::clamp<size_t>(*p.nprobe, 1, ivf->nlist);
      ivf_.max_codes = ivf->max_codes;
      ptr_ = &ivf_;
    } else if (hnsw && p.ef_search) {
      hnsw_.efSearch = std::max(1, *p.ef_search);
      ptr_ = &hnsw_;
    }
    if (ptr_ && dynamic_cast<const faiss::IndexPreTransform*>(index)) {
      pre_.index_params = ptr_;
      ptr_ = &pre_;
    }
  }
  const faiss::SearchParameters* get() const { return ptr_; }

 private:
  faiss::SearchParametersIVF ivf_;
  faiss::SearchParametersHNSW hnsw_;
  faiss::SearchParametersPreTransform pre_;
  faiss::SearchParameters* ptr_ = nullptr;
};

}  // namespace

FaissBackend::FaissBackend(IndexSpec spec, std::unique_ptr<faiss::Index> index)
    : spec_(std::move(spec)), index_(std::move(index)) {
  faiss::Index* core = index_.get();
  if (auto* pre = dynamic_cast<faiss::IndexPreTransform*>(core)) core = pre->index;
  ivf_ = dynamic_cast<faiss::IndexIVF*>(core);
  hnsw_ = dynamic_cast<faiss::IndexHNSW*>(core);
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

int64_t FaissBackend::ntotal() const { return index_->ntotal; }

bool FaissBackend::is_trained() const { return index_->is_trained; }

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
  if (ivf_) info.nprobe = static_cast<int>(ivf_->nprobe);
  if (hnsw_) {
    info.ef_search = hnsw_->hnsw.efSearch;
    info.ef_construction = hnsw_->hnsw.efConstruction;
  }
  return info;
}

int64_t FaissBackend::next_label() const { return ivf_ ? ivf_next_label_ : index_->ntotal; }

Status FaissBackend::Train(int64_t n, const float* x) {
  return CallFaiss("train_index", [&] { index_->train(n, x); });
}

Status FaissBackend::Add(int64_t n, const float* x) {
  if (!ivf_) return CallFaiss("add_vectors", [&] { index_->add(n, x); });
  std::vector<faiss::Index::idx_t> labels(n);
  std::iota(labels.begin(), labels.end(), ivf_next_label_);
  RETURN_IF_ERROR(CallFaiss("add_vectors", [&] { index_->add_with_ids(n, x, labels.data()); }));
  ivf_next_label_ += n;
  return Status::Ok();
}

Status FaissBackend::AddLabeled(int64_t n, const float* x, const int64_t* labels) {
  if (!ivf_) return Unimplemented("only IVF indexes keep labels of their own");
  RETURN_IF_ERROR(CallFaiss("add_vectors", [&] { index_->add_with_ids(n, x, labels); }));
  for (int64_t i = 0; i < n; ++i) ivf_next_label_ = std::max(ivf_next_label_, labels[i] + 1);
  return Status::Ok();
}

bool FaissBackend::HasLabel(int64_t label) const {
  if (!ivf_) return label >= 0 && label < index_->ntotal;
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
  if (ivf_) {
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
  RETURN_IF_ERROR(CallFaiss("reset", [&] { index_->reset(); }));
  ivf_next_label_ = 0;
  return Status::Ok();
}

Status FaissBackend::Search(int64_t n, const float* x, int k, const SearchParams& params,
                            float* distances, int64_t* labels) const {
  RequestParams rp(params, index_.get(), ivf_, hnsw_);
  return CallFaiss("search", [&] { index_->search(n, x, k, distances, labels, rp.get()); });
}

StatusOr<RangeResult> FaissBackend::RangeSearch(int64_t n, const float* x, float radius,
                                                const SearchParams& params) const {
  RangeResult out;
  const faiss::Index* core = index_.get();
  if (auto* pre = dynamic_cast<const faiss::IndexPreTransform*>(core)) core = pre->index;
  if (!ivf_ && !dynamic_cast<const faiss::IndexFlat*>(core)) {
    RETURN_IF_ERROR(ScanRange(n, x, radius, &out));
    return out;
  }
  RequestParams rp(params, index_.get(), ivf_, hnsw_);
  faiss::RangeSearchResult res(n);
  RETURN_IF_ERROR(
      CallFaiss("range_search", [&] { index_->range_search(n, x, radius, &res, rp.get()); }));
  out.lims.assign(res.lims, res.lims + n + 1);
  out.labels.assign(res.labels, res.labels + res.lims[n]);
  out.distances.assign(res.distances, res.distances + res.lims[n]);
  return out;
}

Status FaissBackend::ScanRange(int64_t n, const float* x, float radius, RangeResult* out) const {
  const faiss::Index* storage = hnsw_ ? hnsw_->storage : index_.get();
  std::unique_ptr<faiss::DistanceComputer> dc;
  RETURN_IF_ERROR(CallFaiss("range_search", [&] { dc.reset(storage->get_distance_computer()); }));
  const bool l2 = storage->metric_type == faiss::METRIC_L2;
  out->lims.assign(1, 0);
  for (int64_t q = 0; q < n; ++q) {
    dc->set_query(x + q * spec_.dim);
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
  return CallFaiss("reconstruct", [&] { index_->reconstruct(label, out); });
}

std::vector<int64_t> FaissBackend::LabelsAt(int64_t start, int64_t n) const {
  std::vector<int64_t> labels;
  if (!ivf_) {
    labels.resize(n);
    std::iota(labels.begin(), labels.end(), start);
    return labels;
  }
  // Position i is the i-th smallest label: a stable order when labels have gaps.
  labels.reserve(ivf_->ntotal);
  for (size_t l = 0; l < ivf_->nlist; ++l) {
    faiss::InvertedLists::ScopedIds ids(ivf_->invlists, l);
    labels.insert(labels.end(), ids.get(), ids.get() + ivf_->invlists->list_size(l));
  }
  std::sort(labels.begin(), labels.end());
  return std::vector<int64_t>(labels.begin() + start, labels.begin() + start + n);
}

Status FaissBackend::ReconstructN(int64_t start, int64_t n, float* out) const {
  if (!ivf_) return CallFaiss("reconstruct_n", [&] { index_->reconstruct_n(start, n, out); });
  std::vector<int64_t> labels = LabelsAt(start, n);
  for (int64_t i = 0; i < n; ++i) RETURN_IF_ERROR(Reconstruct(labels[i], out + i * spec_.dim));
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

}  // namespace vecgpu::cpu
