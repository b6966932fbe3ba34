#include <atomic>
#include <chrono>
#include <zmq.hpp>

#include "bench/target.h"

namespace vecgpu::bench {
namespace {

class RemoteConnection : public Connection {
 public:
  RemoteConnection(zmq::context_t& ctx, const std::string& endpoint, int timeout_ms,
                   std::string index_id, int d, Encoding enc)
      : client_(ctx, endpoint, timeout_ms), index_id_(std::move(index_id)), d_(d), enc_(enc) {}

  Status Search(const float* q, int64_t nq, int k, std::vector<int64_t>* labels) override {
    return client_.Search(index_id_, q, nq, d_, k, enc_, {}, labels);
  }
  Status Add(const float* x, int64_t n) override { return client_.Add(index_id_, x, n, d_, enc_); }

 private:
  FaissxClient client_;
  const std::string index_id_;
  const int d_;
  const Encoding enc_;
};

class RemoteTarget : public Target {
 public:
  RemoteTarget(std::string name, std::string endpoint, Encoding enc, int timeout_ms)
      : name_(std::move(name)),
        endpoint_(std::move(endpoint)),
        enc_(enc),
        timeout_ms_(timeout_ms) {}

  std::string name() const override { return name_; }

  Status Prepare(const IndexConfig& config, const Dataset& data, int64_t base_rows) override {
    static std::atomic<int> counter{0};
    index_id_ = "bench-" + config.name + "-" +
                std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "-" +
                std::to_string(counter++);
    d_ = static_cast<int>(data.base.cols);
    // Long timeouts: the FAISSx server takes seconds to train and to add large batches.
    FaissxClient admin(ctx_, endpoint_, 600'000);
    RETURN_IF_ERROR(admin.CreateIndex(index_id_, d_, config.index_type));
    // Setup traffic always uses nested lists: the FAISSx server knows no other encoding.
    if (config.train_size > 0) {
      const int64_t n = std::min(config.train_size, data.base.rows);
      RETURN_IF_ERROR(admin.Train(index_id_, data.base.data.data(), n, d_, Encoding::kList));
    }
    const int64_t rows = base_rows < 0 ? data.base.rows : std::min(base_rows, data.base.rows);
    for (int64_t start = 0; start < rows; start += 10'000) {
      const int64_t n = std::min<int64_t>(10'000, rows - start);
      RETURN_IF_ERROR(admin.Add(index_id_, data.base.row(start), n, d_, Encoding::kList));
    }
    if (config.nprobe > 0) RETURN_IF_ERROR(admin.SetParameter(index_id_, "nprobe", config.nprobe));
    if (config.ef_search > 0) {
      RETURN_IF_ERROR(admin.SetParameter(index_id_, "efSearch", config.ef_search));
    }
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<Connection>> Connect() override {
    return MakeFaissxConnection(ctx_, endpoint_, timeout_ms_, index_id_, d_, enc_);
  }

  Status SetParameter(const std::string& name, int value) override {
    FaissxClient admin(ctx_, endpoint_, 60'000);
    return admin.SetParameter(index_id_, name, value);
  }

  Status Cleanup() override {
    FaissxClient admin(ctx_, endpoint_, 60'000);
    return admin.DeleteIndex(index_id_);
  }

 private:
  const std::string name_;
  const std::string endpoint_;
  const Encoding enc_;
  const int timeout_ms_;
  zmq::context_t ctx_{1};
  std::string index_id_;
  int d_ = 0;
};

}  // namespace

std::unique_ptr<Connection> MakeFaissxConnection(zmq::context_t& ctx, const std::string& endpoint,
                                                 int timeout_ms, std::string index_id, int d,
                                                 Encoding enc) {
  return std::make_unique<RemoteConnection>(ctx, endpoint, timeout_ms, std::move(index_id), d, enc);
}

std::unique_ptr<Target> MakeRemoteTarget(std::string name, std::string endpoint, Encoding enc,
                                         int timeout_ms) {
  return std::make_unique<RemoteTarget>(std::move(name), std::move(endpoint), enc, timeout_ms);
}

}  // namespace vecgpu::bench
