#pragma once

#include <memory>

#include "core/backend.h"

namespace faiss {
struct IndexBinary;
struct IndexBinaryIVF;
}  // namespace faiss

namespace vecgpu::cpu {

// A binary FAISS index (BFlat, BIVF, BHash) on the CPU. Vectors cross the Backend interface as
// one 0/1 float per bit (FAISSx's wire form) and are packed LSB-first into codes here;
// distances are Hamming distances. Labels: storage positions for flat and hash kinds; for IVF
// kinds, labels handed out at add time that never repeat, kept addressable by a hash-table
// direct map (FAISS's own add numbers by ntotal, which repeats a label after a removal).
// Thread safety: as Backend.
class BinaryBackend final : public Backend {
 public:
  static StatusOr<std::unique_ptr<Backend>> Create(const IndexSpec& spec);
  // From Serialize()'s bytes (see BackendFactory::Load).
  static StatusOr<std::unique_ptr<Backend>> Load(const IndexSpec& spec, std::string_view bytes,
                                                 int64_t next_label);
  ~BinaryBackend() override;

  const IndexSpec& spec() const override { return spec_; }
  BackendInfo Info() const override;
  int64_t ntotal() const override;
  bool is_trained() const override;
  int64_t next_label() const override;
  bool labels_shift_on_remove() const override { return ivf_ == nullptr; }
  bool can_remove() const override;
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
  BinaryBackend(IndexSpec spec, std::unique_ptr<faiss::IndexBinary> index);
  bool HasLabel(int64_t label) const;

  IndexSpec spec_;
  std::unique_ptr<faiss::IndexBinary> index_;
  faiss::IndexBinaryIVF* ivf_ = nullptr;
  int64_t ivf_next_label_ = 0;  // IVF kinds: labels are never reused
};

}  // namespace vecgpu::cpu
