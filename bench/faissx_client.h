#pragma once

#include <memory>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "core/types.h"
#include "core/util/status.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace vecgpu::server {
class MapWriter;
}  // namespace vecgpu::server

namespace vecgpu::bench {

// How vectors travel: nested float64 lists, as FAISSx clients send them, or vecgpu's binary
// float32 extension.
enum class Encoding { kList, kBinary };

// A minimal FAISSx client over one ZeroMQ REQ socket, for load generation: requests are built
// without Python's costs so that the server, not the client, is measured. A timed-out request
// recreates the socket (REQ cannot send twice). Errors come back as Status whose message starts
// with the kind ("BUSY: ...", "TIMEOUT: ...", the server's error_code, or "TRANSPORT: ...").
// Not thread-safe: one per client thread.
class FaissxClient {
 public:
  FaissxClient(zmq::context_t& ctx, std::string endpoint, int timeout_ms);
  ~FaissxClient();

  // Sends a prebuilt msgpack request; `reply` gets the decoded map on success.
  Status Call(const std::string& request, msgpack::object_handle* reply);

  Status CreateIndex(const std::string& id, int dim, const std::string& index_type);
  Status DeleteIndex(const std::string& id);
  Status SetParameter(const std::string& id, const std::string& name, double value);
  // x: n x d.
  Status Train(const std::string& id, const float* x, int64_t n, int d, Encoding enc);
  Status Add(const std::string& id, const float* x, int64_t n, int d, Encoding enc);
  // q: nq x d; labels gets nq x k.
  Status Search(const std::string& id, const float* q, int64_t nq, int d, int k, Encoding enc,
                const SearchParams& params, std::vector<int64_t>* labels);

  // Builds a search request, exposed for the codec micro benchmarks.
  static std::string SearchRequest(const std::string& id, const float* q, int64_t nq, int d, int k,
                                   Encoding enc, const SearchParams& params);

 private:
  void Connect();
  // Call() for requests whose reply only needs to say success.
  Status Send(const server::MapWriter& request);

  zmq::context_t& ctx_;
  const std::string endpoint_;
  const int timeout_ms_;
  std::unique_ptr<zmq::socket_t> socket_;
};

// The kind of an error returned by FaissxClient ("BUSY", "TIMEOUT", ...).
std::string ErrorKind(const Status& s);

}  // namespace vecgpu::bench
