#include "cpu_fallback/binary_backend.h"

#include <faiss/IndexBinary.h>
#include <faiss/IndexBinaryHash.h>
#include <faiss/IndexBinaryIVF.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <cmath>

#include "core/util/bits.h"
#include "cpu_fallback/faiss_errors.h"
#include "cpu_fallback/faiss_io.h"

namespace vecgpu::cpu {

BinaryBackend::BinaryBackend(IndexSpec spec, std::unique_ptr<faiss::IndexBinary> index)
    : spec_(std::move(spec)), index_(std::move(index)) {
  ivf_ = dynamic_cast<faiss::IndexBinaryIVF*>(index_.get());
}

BinaryBackend::~BinaryBackend() = default;

StatusOr<std::unique_ptr<Backend>> BinaryBackend::Create(const IndexSpec& spec) {
  std::unique_ptr<faiss::IndexBinary> index;
  Status st = CallFaiss("index_type '" + spec.index_type + "'", [&] {
    index.reset(faiss::index_binary_factory(spec.dim, spec.factory.c_str()));
  });
  if (!st.ok()) return InvalidArgument(st.message());
  std::unique_ptr<BinaryBackend> b(new BinaryBackend(spec, std::move(index)));
  if (b->ivf_) {
    RETURN_IF_ERROR(CallFaiss("direct map",
                              [&] { b->ivf_->set_direct_map_type(faiss::DirectMap::Hashtable); }));
  }
  return std::unique_ptr<Backend>(std::move(b));
}

bool BinaryBackend::can_remove() const {
  return dynamic_cast<const faiss::IndexBinaryHash*>(index_.get()) == nullptr;
}

int64_t BinaryBackend::ntotal() const { return index_->ntotal; }

bool BinaryBackend::is_trained() const { return index_->is_trained; }

BackendInfo BinaryBackend::Info() const {
  BackendInfo info;
  info.ntotal = ntotal();
  info.is_trained = is_trained();
  info.device = "cpu";
  info.memory_bytes = index_->ntotal * (spec_.dim / 8 + (ivf_ ? 8 : 0));
  if (ivf_) info.nprobe = static_cast<int>(ivf_->nprobe);
  return info;
}

Status BinaryBackend::Train(int64_t n, const float* x) {
  ASSIGN_OR_RETURN(auto codes, PackBits(n, spec_.dim, x));
  return CallFaiss("train_index", [&] { index_->train(n, codes.data()); });
}

int64_t BinaryBackend::next_label() const { return ivf_ ? ivf_next_label_ : index_->ntotal; }

Status BinaryBackend::Add(int64_t n, const float* x) {
  ASSIGN_OR_RETURN(auto codes, PackBits(n, spec_.dim, x));
  if (!ivf_) return CallFaiss("add_vectors", [&] { index_->add(n, codes.data()); });
  std::vector<faiss::IndexBinary::idx_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = ivf_next_label_ + i;
  RETURN_IF_ERROR(
      CallFaiss("add_vectors", [&] { index_->add_with_ids(n, codes.data(), labels.data()); }));
  ivf_next_label_ += n;
  return Status::Ok();
}

Status BinaryBackend::AddLabeled(int64_t n, const float* x, const int64_t* labels,
                                 int64_t next_label) {
  if (!ivf_) {
    // Labels are storage positions: only the next ones can be given.
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] != index_->ntotal + i) {
        return Unimplemented("flat-storage indexes number their vectors by position");
      }
    }
    return Add(n, x);
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> codes, PackBits(n, spec_.dim, x));
  RETURN_IF_ERROR(CallFaiss("add_vectors", [&] { index_->add_with_ids(n, codes.data(), labels); }));
  ivf_next_label_ = std::max(ivf_next_label_, next_label);
  for (int64_t i = 0; i < n; ++i) ivf_next_label_ = std::max(ivf_next_label_, labels[i] + 1);
  return Status::Ok();
}

bool BinaryBackend::HasLabel(int64_t label) const {
  if (!ivf_) return label >= 0 && label < index_->ntotal;
  try {
    ivf_->direct_map.get(label);  // throws when absent
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

StatusOr<int64_t> BinaryBackend::RemoveLabels(std::span<const int64_t> labels) {
  std::vector<faiss::IndexBinary::idx_t> present;
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

Status BinaryBackend::Reset() {
  RETURN_IF_ERROR(CallFaiss("reset", [&] { index_->reset(); }));
  ivf_next_label_ = 0;
  return Status::Ok();
}

Status BinaryBackend::Search(int64_t n, const float* x, int k, const SearchParams& params,
                             float* distances, int64_t* labels) const {
  ASSIGN_OR_RETURN(auto codes, PackBits(n, spec_.dim, x));
  if (index_->ntotal == 0) {  // as for float indexes, FAISS may leave the outputs unwritten
    std::fill(labels, labels + n * k, int64_t{-1});
    std::fill(distances, distances + n * k, std::numeric_limits<float>::max());
    return Status::Ok();
  }
  std::vector<int32_t> dist(n * k);
  Status st;
  if (ivf_ && params.nprobe) {
    // A per-request nprobe: assign to lists here so the index's own nprobe is untouched.
    const size_t nprobe = std::clamp<size_t>(*params.nprobe, 1, ivf_->nlist);
    std::vector<faiss::IndexBinary::idx_t> assign(n * nprobe);
    std::vector<int32_t> coarse(n * nprobe);
    faiss::IVFSearchParameters p;
    p.nprobe = nprobe;
    st = CallFaiss("search", [&] {
      ivf_->quantizer->search(n, codes.data(), nprobe, coarse.data(), assign.data());
      ivf_->search_preassigned(n, codes.data(), k, assign.data(), coarse.data(), dist.data(),
                               labels, false, &p);
    });
  } else {
    st = CallFaiss("search", [&] { index_->search(n, codes.data(), k, dist.data(), labels); });
  }
  RETURN_IF_ERROR(st);
  for (int64_t i = 0; i < n * k; ++i) {
    distances[i] = labels[i] < 0 ? std::numeric_limits<float>::max() : dist[i];
  }
  return Status::Ok();
}

StatusOr<RangeResult> BinaryBackend::RangeSearch(int64_t n, const float* x, float radius,
                                                 const SearchParams&) const {
  ASSIGN_OR_RETURN(auto codes, PackBits(n, spec_.dim, x));
  faiss::RangeSearchResult res(n);
  // Hamming distances are integers in 0..d: "< radius" for a float radius is "< ceil(radius)",
  // and any radius past d + 1 finds everything (clamped before the conversion: a radius of
  // 9e15 overflowed the int, found by the live fuzzer under UBSan).
  const int r = static_cast<int>(std::clamp<double>(std::ceil(radius), 0, spec_.dim + 1));
  RETURN_IF_ERROR(
      CallFaiss("range_search", [&] { index_->range_search(n, codes.data(), r, &res); }));
  RangeResult out;
  out.lims.assign(res.lims, res.lims + n + 1);
  out.labels.assign(res.labels, res.labels + res.lims[n]);
  out.distances.assign(res.distances, res.distances + res.lims[n]);
  return out;
}

Status BinaryBackend::Reconstruct(int64_t label, float* out) const {
  if (!HasLabel(label)) return NotFound("id " + std::to_string(label) + " is not in the index");
  std::vector<uint8_t> code(spec_.dim / 8);
  RETURN_IF_ERROR(CallFaiss("reconstruct", [&] { index_->reconstruct(label, code.data()); }));
  UnpackBits(1, spec_.dim, code.data(), out);
  return Status::Ok();
}

Status BinaryBackend::ReconstructN(int64_t start, int64_t n, float* out) const {
  // Row by row: FAISS 1.7.3's IndexBinary::reconstruct_n writes each row d bytes (not d / 8)
  // apart, past the end of a buffer sized n * d / 8.
  for (int64_t i = 0; i < n; ++i) RETURN_IF_ERROR(Reconstruct(start + i, out + i * spec_.dim));
  return Status::Ok();
}

std::vector<TransformStep> BinaryBackend::Transforms() const { return {}; }

StatusOr<FloatMatrix> BinaryBackend::ApplyTransform(int64_t, const float*) const {
  return InvalidArgument("index_id: binary indexes have no vector transform");
}

Status BinaryBackend::SetParameter(std::string_view name, double value) {
  if (name == "nprobe" && ivf_) {
    if (value < 1 || value > static_cast<double>(ivf_->nlist)) {
      return InvalidArgument("value: nprobe must be within 1..nlist (" +
                             std::to_string(ivf_->nlist) + ")");
    }
    ivf_->nprobe = static_cast<size_t>(value);
    return Status::Ok();
  }
  return InvalidArgument("parameter: '" + std::string(name) + "' is not a parameter of this " +
                         spec_.kind() + " index");
}

StatusOr<double> BinaryBackend::GetParameter(std::string_view name) const {
  if (name == "nprobe" && ivf_) return static_cast<double>(ivf_->nprobe);
  if (name == "ntotal") return static_cast<double>(index_->ntotal);
  if (name == "dimension" || name == "d") return spec_.dim;
  return InvalidArgument("parameter: '" + std::string(name) + "' is not a parameter of this " +
                         spec_.kind() + " index");
}

StatusOr<std::vector<uint8_t>> BinaryBackend::Serialize() const {
  faiss::VectorIOWriter out;
  out.data.reserve(Info().memory_bytes + (1 << 20));  // as FaissBackend::Serialize
  RETURN_IF_ERROR(CallFaiss("serialize", [&] { faiss::write_index_binary(index_.get(), &out); }));
  return std::move(out.data);
}

StatusOr<std::unique_ptr<Backend>> BinaryBackend::Load(const IndexSpec& spec,
                                                       std::string_view bytes, int64_t next_label) {
  std::unique_ptr<faiss::IndexBinary> index;
  Status st = CallFaiss("load", [&] {
    SpanIOReader in(bytes);
    index.reset(faiss::read_index_binary(&in));
  });
  if (!st.ok()) return DataLoss("index '" + spec.index_type + "': " + st.message());
  if (index->d != spec.dim) {
    return DataLoss("index '" + spec.index_type + "': stored dimension " +
                    std::to_string(index->d) + ", expected " + std::to_string(spec.dim));
  }
  std::unique_ptr<BinaryBackend> b(new BinaryBackend(spec, std::move(index)));
  if (b->ivf_) b->ivf_next_label_ = next_label;
  return std::unique_ptr<Backend>(std::move(b));
}

}  // namespace vecgpu::cpu
