#pragma once

#include <memory>

#include "core/backend.h"

namespace faiss {
struct Index;
struct IndexIVF;
struct IndexHNSW;
}  // namespace faiss

namespace vecgpu::cpu {

// A float FAISS index on the CPU, built by faiss::index_factory. Labels: storage positions for
// flat-storage kinds (FAISS renumbers them on removal); for IVF kinds, labels given at add time
// that never repeat, kept addressable by a hash-table direct map so reconstruct and remove
// work. Search parameters go through faiss::SearchParameters, so one request's nprobe or
// efSearch never touches the shared index.
// Thread safety: as Backend.
class FaissBackend final : public Backend {
 public:
  // Builds an empty index from spec.factory; InvalidArgument when FAISS cannot.
  static StatusOr<std::unique_ptr<Backend>> Create(const IndexSpec& spec);
  ~FaissBackend() override;

  const IndexSpec& spec() const override { return spec_; }
  BackendInfo Info() const override;
  int64_t ntotal() const override;
  bool is_trained() const override;
  int64_t next_label() const override;
  bool labels_shift_on_remove() const override { return ivf_ == nullptr; }
  Status Train(int64_t n, const float* x) override;
  Status Add(int64_t n, const float* x) override;
  Status AddLabeled(int64_t n, const float* x, const int64_t* labels) override;
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t> labels) override;
  Status Reset() override;
  Status Search(int64_t n, const float* x, int k, const SearchParams& params, float* distances,
                int64_t* labels) const override;
  StatusOr<RangeResult> RangeSearch(int64_t n, const float* x, float radius,
                                    const SearchParams& params) const override;
  Status Reconstruct(int64_t label, float* out) const override;
  std::vector<int64_t> LabelsAt(int64_t start, int64_t n) const override;
  Status ReconstructN(int64_t start, int64_t n, float* out) const override;
  std::vector<TransformStep> Transforms() const override;
  StatusOr<FloatMatrix> ApplyTransform(int64_t n, const float* x) const override;
  Status SetParameter(std::string_view name, double value) override;
  StatusOr<double> GetParameter(std::string_view name) const override;

 private:
  FaissBackend(IndexSpec spec, std::unique_ptr<faiss::Index> index);
  bool HasLabel(int64_t label) const;
  // Brute-force range search over the stored codes, for kinds FAISS has none for.
  Status ScanRange(int64_t n, const float* x, float radius, RangeResult* out) const;

  IndexSpec spec_;
  std::unique_ptr<faiss::Index> index_;
  faiss::IndexIVF* ivf_ = nullptr;    // IVF core, if any
  faiss::IndexHNSW* hnsw_ = nullptr;  // HNSW core, if any
  int64_t ivf_next_label_ = 0;        // IVF kinds: labels are never reused
};

}  // namespace vecgpu::cpu
