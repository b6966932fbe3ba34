// The gRPC target: vecgpu's Vald v1 API (--grpc-port) through the generated C++ stubs, so the
// same scenarios measure it beside the FAISSx protocol on ZeroMQ. Only built with
// VECGPU_WITH_GRPC (bench/main.cc hands Runner a factory).
//
// Prepare creates a collection through vecgpu.v1.Collections/Create ("IDMap2," + the FAISS
// factory, so that string ids work, as a Vald insert would create it) and loads the base with
// /vald.v1.Insert/MultiInsert, ids being the decimal row numbers. Search is
// /vald.v1.Search/Search (num = k) for one query and MultiSearch for more; the string ids of
// the results are parsed back into row numbers for recall. Every call names the collection in
// `x-vecgpu-collection` metadata. Each Connection has its own channel and its own TCP
// connection (a local subchannel pool), as each ZeroMQ client has its own socket.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "bench/target.h"

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too.
#include <grpcpp/grpcpp.h>

#include "vald/v1/vald/insert.grpc.pb.h"
#include "vald/v1/vald/search.grpc.pb.h"
#include "vecgpu/v1/collections.grpc.pb.h"

namespace vecgpu::bench {
namespace {

namespace pb = ::payload::v1;

constexpr int64_t kInsertChunk = 1'000;  // objects per MultiInsert (the server allows 10,000)

// "grpc://host:port" or "host:port" -> "host:port".
std::string Address(const std::string& endpoint) {
  constexpr std::string_view kScheme = "grpc://";
  if (endpoint.rfind(kScheme, 0) == 0) return endpoint.substr(kScheme.size());
  return endpoint;
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address) {
  grpc::ChannelArguments args;
  // A channel of its own per client: without this, channels with the same arguments share
  // one TCP connection through gRPC's global subchannel pool.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// A gRPC status as the harness's Status: "<CODE NAME>: message", so ErrorKind() counts errors
// by gRPC code (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ...).
Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return Status::Ok();
  const auto code = static_cast<StatusCode>(s.error_code());
  return Status(code, std::string(StatusCodeName(code)) + ": " + s.error_message());
}

struct CallSettings {
  std::string collection;
  int timeout_ms = 60'000;
};

void Setup(grpc::ClientContext* ctx, const CallSettings& s) {
  ctx->AddMetadata("x-vecgpu-collection", s.collection);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(s.timeout_ms));
}

// The row number of a result id ("123"); -1 for anything else.
int64_t RowOf(const std::string& id) {
  int64_t v = -1;
  auto [p, ec] = std::from_chars(id.data(), id.data() + id.size(), v);
  return ec == std::errc() && p == id.data() + id.size() ? v : -1;
}

// Search parameters set by SetParameter, shared by the target's connections.
struct SearchKnobs {
  std::atomic<int> nprobe{0};
  std::atomic<int> ef_search{0};
};

class GrpcConnection : public Connection {
 public:
  GrpcConnection(const std::string& address, CallSettings settings, int d,
                 std::atomic<int64_t>* next_id, const SearchKnobs* knobs)
      : channel_(NewChannel(address)),
        search_(vald::v1::Search::NewStub(channel_)),
        insert_(vald::v1::Insert::NewStub(channel_)),
        settings_(std::move(settings)),
        d_(d),
        next_id_(next_id),
        knobs_(knobs) {}

  Status Search(const float* q, int64_t nq, int k, std::vector<int64_t>* labels) override {
    if (labels) labels->assign(nq * k, -1);
    grpc::ClientContext ctx;
    Setup(&ctx, settings_);
    if (nq == 1) {
      // Reused between calls: the vector's storage stays allocated.
      Fill(q, k, &request_);
      pb::Search::Response resp;
      RETURN_IF_ERROR(FromGrpc(search_->Search(&ctx, request_, &resp)));
      if (labels) Labels(resp, k, labels->data());
      return Status::Ok();
    }
    pb::Search::MultiRequest req;
    for (int64_t i = 0; i < nq; ++i) Fill(q + i * d_, k, req.add_requests());
    pb::Search::Responses resp;
    RETURN_IF_ERROR(FromGrpc(search_->MultiSearch(&ctx, req, &resp)));
    if (resp.responses_size() != nq) {
      return Internal("MultiSearch: " + std::to_string(resp.responses_size()) +
                      " responses for " + std::to_string(nq) + " queries");
    }
    if (labels) {
      for (int64_t i = 0; i < nq; ++i) Labels(resp.responses(i), k, labels->data() + i * k);
    }
    return Status::Ok();
  }

  Status Add(const float* x, int64_t n) override {
    const int64_t first = next_id_->fetch_add(n);
    return InsertRows(insert_.get(), settings_, x, first, n, d_);
  }

  // Inserts rows [first, first + n) of ids, vectors x (n x d), in one MultiInsert.
  static Status InsertRows(vald::v1::Insert::Stub* stub, const CallSettings& settings,
                           const float* x, int64_t first, int64_t n, int d) {
    pb::Insert::MultiRequest req;
    for (int64_t i = 0; i < n; ++i) {
      pb::Insert::Request* r = req.add_requests();
      r->mutable_vector()->set_id(std::to_string(first + i));
      r->mutable_vector()->mutable_vector()->Add(x + i * d, x + (i + 1) * d);
      r->mutable_config()->set_skip_strict_exist_check(true);
    }
    grpc::ClientContext ctx;
    Setup(&ctx, settings);
    pb::Object::Locations resp;
    return FromGrpc(stub->MultiInsert(&ctx, req, &resp));
  }

 private:
  void Fill(const float* q, int k, pb::Search::Request* r) const {
    auto* v = r->mutable_vector();
    v->Resize(d_, 0.0f);
    std::copy(q, q + d_, v->mutable_data());
    pb::Search::Config* c = r->mutable_config();
    c->set_num(k);
    c->set_radius(-1);  // no radius: Vald's clients send -1
    if (int n = knobs_->nprobe.load(); n > 0) c->set_nprobe(n);
    if (int e = knobs_->ef_search.load(); e > 0) c->set_edge_size(e);
  }

  static void Labels(const pb::Search::Response& resp, int k, int64_t* out) {
    const int n = std::min(resp.results_size(), k);
    for (int j = 0; j < n; ++j) out[j] = RowOf(resp.results(j).id());
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<vald::v1::Search::Stub> search_;
  std::unique_ptr<vald::v1::Insert::Stub> insert_;
  const CallSettings settings_;
  const int d_;
  std::atomic<int64_t>* next_id_;
  const SearchKnobs* knobs_;
  pb::Search::Request request_;
};

class GrpcTarget : public Target {
 public:
  GrpcTarget(std::string name, std::string endpoint, int timeout_ms)
      : name_(std::move(name)), address_(Address(endpoint)), timeout_ms_(timeout_ms) {}

  std::string name() const override { return name_; }

  Status Prepare(const IndexConfig& config, const Dataset& data, int64_t base_rows) override {
    if (config.train_size > 0) {
      return Unimplemented("the gRPC target cannot train (the Vald API has no training call): " +
                           config.factory);
    }
    static std::atomic<int> counter{0};
    settings_.collection =
        "bench-grpc-" + config.name + "-" +
        std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "-" +
        std::to_string(counter++);
    settings_.timeout_ms = 600'000;
    d_ = static_cast<int>(data.base.cols);
    knobs_.nprobe = config.nprobe;
    knobs_.ef_search = config.ef_search;
    admin_ = NewChannel(address_);
    // The server opens its gRPC port just after its ZeroMQ one.
    if (!admin_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
      return Unavailable("UNAVAILABLE: no gRPC server at " + address_);
    }
    auto collections = ::vecgpu::v1::Collections::NewStub(admin_);
    {
      ::vecgpu::v1::CreateRequest req;
      req.set_name(settings_.collection);
      req.set_index_type("IDMap2," + config.factory);
      req.set_dimension(d_);
      req.set_metric("L2");
      ::vecgpu::v1::Collection resp;
      grpc::ClientContext ctx;
      Setup(&ctx, settings_);
      RETURN_IF_ERROR(FromGrpc(collections->Create(&ctx, req, &resp)));
    }
    auto insert = vald::v1::Insert::NewStub(admin_);
    const int64_t rows = base_rows < 0 ? data.base.rows : std::min(base_rows, data.base.rows);
    for (int64_t start = 0; start < rows; start += kInsertChunk) {
      const int64_t n = std::min(kInsertChunk, rows - start);
      RETURN_IF_ERROR(GrpcConnection::InsertRows(insert.get(), settings_, data.base.row(start),
                                                 start, n, d_));
    }
    next_id_ = rows;
    settings_.timeout_ms = timeout_ms_;
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<Connection>> Connect() override {
    return std::unique_ptr<Connection>(
        new GrpcConnection(address_, settings_, d_, &next_id_, &knobs_));
  }

  Status SetParameter(const std::string& name, int value) override {
    if (name == "nprobe") {
      knobs_.nprobe = value;
    } else if (name == "efSearch") {
      knobs_.ef_search = value;
    } else {
      return InvalidArgument("gRPC target: no search parameter '" + name + "'");
    }
    return Status::Ok();
  }

  Status Cleanup() override {
    if (!admin_) return Status::Ok();
    auto collections = ::vecgpu::v1::Collections::NewStub(admin_);
    ::vecgpu::v1::NameRequest req;
    req.set_name(settings_.collection);
    ::vecgpu::v1::DeleteResponse resp;
    grpc::ClientContext ctx;
    Setup(&ctx, settings_);
    Status st = FromGrpc(collections->Delete(&ctx, req, &resp));
    admin_.reset();
    return st;
  }

 private:
  const std::string name_;
  const std::string address_;
  const int timeout_ms_;
  CallSettings settings_;
  int d_ = 0;
  std::atomic<int64_t> next_id_{0};
  SearchKnobs knobs_;
  std::shared_ptr<grpc::Channel> admin_;
};

}  // namespace

std::unique_ptr<Target> MakeGrpcTarget(std::string name, std::string endpoint, int timeout_ms) {
  return std::make_unique<GrpcTarget>(std::move(name), std::move(endpoint), timeout_ms);
}

}  // namespace vecgpu::bench
