// The echo target: the ZeroMQ transport's own floor, measured with the same clients as vecgpu.
#include <atomic>
#include <map>
#include <random>
#include <thread>
#include <zmq.hpp>

#include "bench/target.h"
#include "server/faissx/search_reply.h"

namespace vecgpu::bench {
namespace {

// A ROUTER on a free loopback port, served by its own thread until destroyed: each request
// (identity frames, the empty delimiter, one body) is answered with the reply registered for
// its body's size in bytes, else with `fallback`. Nothing is decoded. Not thread-safe beyond
// that: construct, read endpoint(), destroy.
class EchoServer {
 public:
  EchoServer(std::map<size_t, std::string> replies, std::string fallback)
      : replies_(std::move(replies)), fallback_(std::move(fallback)) {
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { Loop(); });  // the socket moves to that thread here
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  void Loop() {
    std::vector<zmq::message_t> frames;
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    while (!stop_) {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(50)) <= 0) continue;
      // Every queued request, each read whole (ZeroMQ delivers a message's frames together).
      while (true) {
        frames.clear();
        zmq::message_t m;
        if (!router_.recv(m, zmq::recv_flags::dontwait)) break;
        frames.push_back(std::move(m));
        while (frames.back().more()) {
          zmq::message_t part;
          (void)router_.recv(part, zmq::recv_flags::none);
          frames.push_back(std::move(part));
        }
        auto it = replies_.find(frames.back().size());
        const std::string& reply = it == replies_.end() ? fallback_ : it->second;
        for (size_t i = 0; i + 1 < frames.size(); ++i) {  // the envelope, as it came
          router_.send(frames[i], zmq::send_flags::sndmore);
        }
        router_.send(zmq::buffer(reply), zmq::send_flags::none);
      }
    }
  }

  const std::map<size_t, std::string> replies_;
  const std::string fallback_;
  zmq::context_t ctx_{1};
  zmq::socket_t router_{ctx_, zmq::socket_type::router};
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A reply of the shape a real search returns: nq x k labels drawn uniformly from the index's
// rows (so list-encoded integers take the bytes real neighbours do), -1 on an empty index.
std::string SearchReplyBytes(int64_t nq, int k, int64_t rows, bool binary) {
  SearchResult r;
  r.nq = nq;
  r.k = k;
  r.distances.resize(nq * k);
  r.labels.resize(nq * k, -1);
  std::mt19937_64 rng(nq * 1000 + k);
  for (size_t i = 0; i < r.labels.size(); ++i) {
    if (rows > 0) r.labels[i] = static_cast<int64_t>(rng() % rows);
    r.distances[i] = 1.0f + 0.25f * static_cast<float>(i % k);
  }
  return server::EncodeSearchReply(std::move(r), binary);
}

class EchoTarget : public Target {
 public:
  EchoTarget(Encoding enc, int timeout_ms, std::vector<int> batches, int k)
      : enc_(enc), timeout_ms_(timeout_ms), batches_(std::move(batches)), k_(k) {}

  std::string name() const override { return "echo"; }

  Status Prepare(const IndexConfig& config, const Dataset& data, int64_t base_rows) override {
    index_id_ = "bench-echo-" + config.name;
    d_ = static_cast<int>(data.base.cols);
    const int64_t rows = base_rows < 0 ? data.base.rows : std::min(base_rows, data.base.rows);
    const bool binary = enc_ == Encoding::kBinary;
    // The request of each batch size, as the client encodes it: float64 lists and float32
    // bins have a fixed size per value, so the size tells the batch.
    std::map<size_t, std::string> replies;
    for (int batch : batches_) {
      const std::vector<float> q(static_cast<size_t>(batch) * d_, 0.5f);
      const std::string request =
          FaissxClient::SearchRequest(index_id_, q.data(), batch, d_, k_, enc_, {});
      replies[request.size()] = SearchReplyBytes(batch, k_, rows, binary);
    }
    try {
      server_ =
          std::make_unique<EchoServer>(std::move(replies), SearchReplyBytes(1, k_, rows, binary));
    } catch (const std::exception& e) {
      return Internal(std::string("echo: cannot start the ROUTER: ") + e.what());
    }
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<Connection>> Connect() override {
    if (!server_) return FailedPrecondition("echo: not prepared");
    return MakeFaissxConnection(ctx_, server_->endpoint(), timeout_ms_, index_id_, d_, enc_);
  }

  // Nothing to set: the replies do not depend on it.
  Status SetParameter(const std::string&, int) override { return Status::Ok(); }

  Status Cleanup() override {
    server_.reset();
    return Status::Ok();
  }

 private:
  const Encoding enc_;
  const int timeout_ms_;
  const std::vector<int> batches_;
  const int k_;
  zmq::context_t ctx_{1};  // the clients' (declared before server_: destroyed after it)
  std::unique_ptr<EchoServer> server_;
  std::string index_id_;
  int d_ = 0;
};

}  // namespace

std::unique_ptr<Target> MakeEchoTarget(Encoding enc, int timeout_ms, std::vector<int> batches,
                                       int k) {
  return std::make_unique<EchoTarget>(enc, timeout_ms, std::move(batches), k);
}

}  // namespace vecgpu::bench
