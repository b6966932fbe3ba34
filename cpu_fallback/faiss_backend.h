#pragma once

#include <memory>

#include "core/backend.h"

namespace faiss {
struct Index;
struct IndexFlat;
struct IndexIVF;
struct IndexHNSW;
struct IndexPreTransform;
}  // namespace faiss

namespace vecgpu::cpu {

// A float FAISS index on the CPU, built by faiss::index_factory. Labels: storage positions for
// flat-storage kinds (FAISS renumbers them on removal); for IVF kinds, labels given at add time
// that never repeat, kept addressable by a hash-table direct map so reconstruct and remove
// work. Search parameters go through faiss::SearchParameters, so one request's nprobe or
// efSearch never touches the shared index. Scalar quantizers ("SQ8"...) need no train call:
// they keep their first vectors exact and train on all of them once there are enough.
// Thread safety: as Backend.
class FaissBackend final : public Backend {
 public:
  // Builds an empty index from spec.factory; InvalidArgument when FAISS cannot.
  static StatusOr<std::unique_ptr<Backend>> Create(const IndexSpec& spec);
  // From Serialize()'s bytes (see BackendFactory::Load).
  static StatusOr<std::unique_ptr<Backend>> Load(const IndexSpec& spec, std::string_view bytes,
                                                 int64_t next_label);
  ~FaissBackend() override;

  const IndexSpec& spec() const override { return spec_; }
  BackendInfo Info() const override;
  int64_t ntotal() const override;
  bool is_trained() const override;
  int64_t next_label() const override;
  bool labels_shift_on_remove() const override { return ivf_ == nullptr; }
  bool can_remove() const override { return hnsw_ == nullptr; }
  Status Train(int64_t n, const float* x) override;
  Status Add(int64_t n, const float* x) override;
  Status AddLabeled(int64_t n, const float* x, const int64_t* labels, int64_t next_label) override;
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t> labels) override;
  Status Reset() override;
  Status Search(int64_t n, const float* x, int k, const SearchParams& params, float* distances,
                int64_t* labels) const override;
  StatusOr<RangeResult> RangeSearch(int64_t n, const float* x, float radius,
                                    const SearchParams& params) const override;
  Status Reconstruct(int64_t label, float* out) const override;
  Status ReconstructN(int64_t start, int64_t n, float* out) const override;
  std::vector<TransformStep> Transforms() const override;
  StatusOr<FloatMatrix> ApplyTransform(int64_t n, const float* x) const override;
  Status SetParameter(std::string_view name, double value) override;
  StatusOr<double> GetParameter(std::string_view name) const override;
  StatusOr<std::vector<uint8_t>> Serialize() const override;

 private:
  FaissBackend(IndexSpec spec, std::unique_ptr<faiss::Index> index);
  bool HasLabel(int64_t label) const;
  // The index that holds the vectors now: the exact buffer of an untrained scalar quantizer,
  // else the FAISS index.
  const faiss::Index& active() const;
  faiss::Index& active();
  // Trains the quantizer (with `train`) on the buffered vectors plus x (size n * d), adds
  // them all in order, and drops the buffer.
  Status FlushPending(int64_t n, const float* x, bool train);
  // Brute-force range search over the stored codes, for kinds FAISS has none for.
  Status ScanRange(int64_t n, const float* x, float radius, RangeResult* out) const;

  IndexSpec spec_;
  std::unique_ptr<faiss::Index> index_;
  faiss::IndexPreTransform* pre_ = nullptr;    // transform chain, if any
  faiss::Index* core_ = nullptr;               // the index behind the chain (or index_)
  faiss::IndexIVF* ivf_ = nullptr;             // IVF core, if any
  faiss::IndexHNSW* hnsw_ = nullptr;           // HNSW core, if any
  int64_t ivf_next_label_ = 0;                 // IVF kinds: labels are never reused
  std::unique_ptr<faiss::IndexFlat> pending_;  // untrained scalar quantizer: exact vectors
};

}  // namespace vecgpu::cpu
