#include "cpu_fallback/cpu_backend_factory.h"

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>

#include "cpu_fallback/binary_backend.h"
#include "cpu_fallback/faiss_backend.h"
#include "cpu_fallback/faiss_errors.h"

namespace vecgpu::cpu {

StatusOr<std::unique_ptr<Backend>> CpuBackendFactory::Create(const IndexSpec& spec) {
  return spec.binary ? BinaryBackend::Create(spec) : FaissBackend::Create(spec);
}

StatusOr<std::unique_ptr<Backend>> CpuBackendFactory::Load(const IndexSpec& spec,
                                                           std::string_view bytes,
                                                           int64_t next_label) {
  return spec.binary ? BinaryBackend::Load(spec, bytes, next_label)
                     : FaissBackend::Load(spec, bytes, next_label);
}

StatusOr<ClusteringResult> CpuBackendFactory::Cluster(int64_t n, int d, const float* x,
                                                      int n_clusters, Metric metric, int niter) {
  ClusteringResult out;
  faiss::ClusteringParameters cp;
  cp.niter = niter;
  cp.spherical = metric == Metric::kInnerProduct;
  cp.seed = 1234;
  faiss::Clustering clus(d, n_clusters, cp);
  faiss::IndexFlat assigner(d,
                            metric == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT);
  std::vector<float> dist(n);
  out.assignments.resize(n);
  RETURN_IF_ERROR(CallFaiss("compute_clustering", [&] {
    clus.train(n, x, assigner);
    assigner.search(n, x, 1, dist.data(), out.assignments.data());
  }));
  out.centroids.rows = n_clusters;
  out.centroids.cols = d;
  out.centroids.data = clus.centroids;
  out.cluster_sizes.assign(n_clusters, 0);
  for (int64_t a : out.assignments) {
    if (a >= 0) out.cluster_sizes[a]++;
  }
  out.objective = clus.iteration_stats.empty() ? 0 : clus.iteration_stats.back().obj;
  return out;
}

}  // namespace vecgpu::cpu
