#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_factory.h>
#include <omp.h>

#include <shared_mutex>

#include "bench/target.h"

namespace vecgpu::bench {
namespace {

// Searches share the index; adds take it alone (as vecgpu's collection lock does).
struct SharedIndex {
  std::unique_ptr<faiss::Index> index;
  std::shared_mutex mu;
};

class InProcessConnection : public Connection {
 public:
  explicit InProcessConnection(SharedIndex& s) : s_(s) {}

  Status Search(const float* q, int64_t nq, int k, std::vector<int64_t>* labels) override {
    omp_set_num_threads(1);
    std::vector<float> d(nq * k);
    std::vector<int64_t> local;
    std::vector<int64_t>& l = labels ? *labels : local;
    l.resize(nq * k);
    std::shared_lock lock(s_.mu);
    s_.index->search(nq, q, k, d.data(), l.data());
    return Status::Ok();
  }
  Status Add(const float* x, int64_t n) override {
    std::unique_lock lock(s_.mu);
    s_.index->add(n, x);
    return Status::Ok();
  }

 private:
  SharedIndex& s_;
};

class InProcessTarget : public Target {
 public:
  std::string name() const override { return "faiss"; }

  Status Prepare(const IndexConfig& config, const Dataset& data, int64_t base_rows) override {
    try {
      shared_.index.reset(faiss::index_factory(
          static_cast<int>(data.base.cols), config.factory.c_str(),
          data.metric == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT));
      if (config.train_size > 0) {
        shared_.index->train(std::min(config.train_size, data.base.rows), data.base.data.data());
      }
      const int64_t rows = base_rows < 0 ? data.base.rows : std::min(base_rows, data.base.rows);
      shared_.index->add(rows, data.base.data.data());
      if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(shared_.index.get()); ivf && config.nprobe) {
        ivf->nprobe = config.nprobe;
      }
      if (auto* h = dynamic_cast<faiss::IndexHNSW*>(shared_.index.get()); h && config.ef_search) {
        h->hnsw.efSearch = config.ef_search;
      }
    } catch (const std::exception& e) {
      return Internal(std::string("faiss: ") + e.what());
    }
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<Connection>> Connect() override {
    return std::unique_ptr<Connection>(new InProcessConnection(shared_));
  }

  Status SetParameter(const std::string& name, int value) override {
    std::unique_lock lock(shared_.mu);
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(shared_.index.get()); ivf && name == "nprobe") {
      ivf->nprobe = value;
      return Status::Ok();
    }
    if (auto* h = dynamic_cast<faiss::IndexHNSW*>(shared_.index.get()); h && name == "efSearch") {
      h->hnsw.efSearch = value;
      return Status::Ok();
    }
    return InvalidArgument("faiss: no parameter " + name + " on this index");
  }

  Status Cleanup() override {
    shared_.index.reset();
    return Status::Ok();
  }

 private:
  SharedIndex shared_;
};

}  // namespace

std::unique_ptr<Target> MakeInProcessTarget() { return std::make_unique<InProcessTarget>(); }

}  // namespace vecgpu::bench
