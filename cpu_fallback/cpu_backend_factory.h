#pragma once

#include "core/backend.h"

namespace vecgpu::cpu {

// Builds FAISS CPU backends (float and binary) and runs k-means on the CPU. Thread-safe.
class CpuBackendFactory final : public BackendFactory {
 public:
  std::string name() const override { return "cpu"; }
  StatusOr<std::unique_ptr<Backend>> Create(const IndexSpec& spec) override;
  StatusOr<std::unique_ptr<Backend>> Load(const IndexSpec& spec, std::string_view bytes,
                                          int64_t next_label) override;
  StatusOr<ClusteringResult> Cluster(int64_t n, int d, const float* x, int n_clusters,
                                     Metric metric, int niter) override;
};

}  // namespace vecgpu::cpu
