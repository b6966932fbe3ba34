#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "core/backend.h"

namespace vecgpu {

// What a FakeDeviceCopy did and what it is told to fail with; shared by a test and the copies
// its FakeDeviceProvider builds. Thread-safe (atomics).
struct FakeDeviceCounters {
  // Storage reallocations (each copies every vector held) and the vectors they copied.
  std::atomic<int64_t> reallocations{0};
  std::atomic<int64_t> copied{0};
  // The most storage (in vectors) held at once: a reallocation holds old and new together.
  std::atomic<int64_t> peak{0};
  std::atomic<int> searches{0};
  std::atomic<int> adds{0};
  // Adds (AddLabeled) numbered this or later (counting every copy's adds from 1), or every
  // ReserveCapacity, fail with ResourceExhausted, as a cudaMalloc out of memory; 0: never.
  std::atomic<int> oom_at_add{0};
  std::atomic<bool> oom_on_reserve{false};
};

// A device copy for tests with the FakeDeviceProvider: a host-side index (a CPU backend the
// test supplies, holding the host's vectors) plays the GPU index, and its storage is modelled
// as FAISS 1.7.3's GPU flat storage behaves: an add that does not fit reallocates to exactly
// what it needs (append with reserveExact), copying everything held; ReserveCapacity makes
// room ahead. Answers Search, Add / AddLabeled, ReserveCapacity and Info, like the CUDA copy.
// Thread safety as Backend.
class FakeDeviceCopy final : public Backend {
 public:
  FakeDeviceCopy(std::unique_ptr<Backend> index, std::string device, FakeDeviceCounters* counters)
      : index_(std::move(index)),
        device_(std::move(device)),
        counters_(counters),
        capacity_(index_->ntotal()) {}

  int64_t capacity() const { return capacity_; }

  const IndexSpec& spec() const override { return index_->spec(); }
  BackendInfo Info() const override {
    BackendInfo info = index_->Info();
    info.device = device_;
    return info;
  }
  int64_t ntotal() const override { return index_->ntotal(); }
  bool is_trained() const override { return true; }
  int64_t next_label() const override { return index_->next_label(); }
  bool labels_shift_on_remove() const override { return index_->labels_shift_on_remove(); }
  bool can_remove() const override { return false; }
  Status Train(int64_t, const float*) override { return Unimplemented(kOnly); }
  Status Add(int64_t, const float*) override { return Unimplemented(kOnly); }
  Status AddLabeled(int64_t n, const float* x, const int64_t* labels, int64_t next_label) override {
    const int add = counters_->adds.fetch_add(1) + 1;
    const int oom = counters_->oom_at_add.load();
    if (oom > 0 && add >= oom) return ResourceExhausted("cudaMalloc: out of memory (fake)");
    if (ntotal() + n > capacity_) Reallocate(ntotal() + n);  // FAISS's exact append
    if (index_->labels_shift_on_remove()) {  // flat kinds: labels are storage positions
      if (n > 0 && labels[0] != index_->ntotal()) return FailedPrecondition("labels out of order");
      return index_->Add(n, x);
    }
    return index_->AddLabeled(n, x, labels, next_label);
  }
  Status ReserveCapacity(int64_t n) override {
    if (counters_->oom_on_reserve.load()) {
      return ResourceExhausted("cudaMalloc: out of memory (fake reserve)");
    }
    if (n > capacity_) Reallocate(n);
    return Status::Ok();
  }
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t>) override { return Unimplemented(kOnly); }
  Status Reset() override { return Unimplemented(kOnly); }
  Status Search(int64_t n, const float* x, int k, const SearchParams& params, float* distances,
                int64_t* labels) const override {
    counters_->searches++;
    return index_->Search(n, x, k, params, distances, labels);
  }
  StatusOr<RangeResult> RangeSearch(int64_t, const float*, float,
                                    const SearchParams&) const override {
    return Unimplemented(kOnly);
  }
  Status Reconstruct(int64_t, float*) const override { return Unimplemented(kOnly); }
  Status ReconstructN(int64_t, int64_t, float*) const override { return Unimplemented(kOnly); }
  std::vector<TransformStep> Transforms() const override { return {}; }
  StatusOr<FloatMatrix> ApplyTransform(int64_t, const float*) const override {
    return Unimplemented(kOnly);
  }
  Status SetParameter(std::string_view, double) override { return Unimplemented(kOnly); }
  StatusOr<double> GetParameter(std::string_view) const override { return Unimplemented(kOnly); }
  StatusOr<std::vector<uint8_t>> Serialize() const override { return Unimplemented(kOnly); }

 private:
  static constexpr const char* kOnly = "the device copy answers searches and adds only";

  void Reallocate(int64_t capacity) {
    counters_->reallocations++;
    counters_->copied += ntotal();
    const int64_t held = capacity_ + capacity;  // old and new storage, while copying
    int64_t peak = counters_->peak.load();
    while (held > peak && !counters_->peak.compare_exchange_weak(peak, held)) {
    }
    capacity_ = capacity;
  }

  const std::unique_ptr<Backend> index_;
  const std::string device_;
  FakeDeviceCounters* const counters_;
  int64_t capacity_;  // vectors the modelled storage holds
};

}  // namespace vecgpu
