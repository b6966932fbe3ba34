#pragma once

#include <atomic>
#include <memory>

#include "core/backend.h"
#include "gpu_host/host_process.h"

namespace vecgpu::gpu_host {

// A device copy that lives in a GPU host process: every call is a request to it. Answers
// Search, Add / AddLabeled and Info (from what the last reply said); every other call is
// Unimplemented, as for any device copy. Once its process has ended, every call fails
// Unavailable naming how it ended. Freed in the process when this handle goes.
class RemoteReplica final : public Backend {
 public:
  RemoteReplica(std::shared_ptr<HostProcess> host, uint64_t id, IndexSpec spec,
                bool labels_shift, int64_t ntotal, int64_t next_label, int64_t memory,
                double call_timeout_s);
  ~RemoteReplica() override;

  const IndexSpec& spec() const override { return spec_; }
  BackendInfo Info() const override;
  int64_t ntotal() const override { return ntotal_.load(); }
  bool is_trained() const override { return true; }
  int64_t next_label() const override { return next_label_.load(); }
  bool labels_shift_on_remove() const override { return labels_shift_; }
  bool can_remove() const override { return false; }
  Status Train(int64_t, const float*) override;
  Status Add(int64_t n, const float* x) override;
  Status AddLabeled(int64_t n, const float* x, const int64_t* labels, int64_t next_label) override;
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t>) override;
  Status ReserveCapacity(int64_t n) override;
  Status Reset() override;
  Status Search(int64_t n, const float* x, int k, const SearchParams& params, float* distances,
                int64_t* labels) const override;
  StatusOr<RangeResult> RangeSearch(int64_t, const float*, float,
                                    const SearchParams&) const override;
  Status Reconstruct(int64_t, float*) const override;
  Status ReconstructN(int64_t, int64_t, float*) const override;
  std::vector<TransformStep> Transforms() const override { return {}; }
  StatusOr<FloatMatrix> ApplyTransform(int64_t, const float*) const override;
  Status SetParameter(std::string_view, double) override;
  StatusOr<double> GetParameter(std::string_view) const override;
  StatusOr<std::vector<uint8_t>> Serialize() const override;

 private:
  // The sizes after an add or a reserve: ntotal, memory.
  Status TakeSizes(const StatusOr<std::string>& reply);

  const std::shared_ptr<HostProcess> host_;
  const uint64_t id_;
  const IndexSpec spec_;
  const bool labels_shift_;
  const std::chrono::duration<double> timeout_;
  std::atomic<int64_t> ntotal_;
  std::atomic<int64_t> next_label_;
  std::atomic<int64_t> memory_;
};

}  // namespace vecgpu::gpu_host
