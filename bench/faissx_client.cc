#include "bench/faissx_client.h"

#include <zmq.hpp>

#include "server/faissx/map_writer.h"

namespace vecgpu::bench {
namespace {

using server::MapWriter;

void WriteVectors(MapWriter& w, std::string_view key, const float* x, int64_t n, int d,
                  Encoding enc) {
  w.Key(key);
  if (enc == Encoding::kBinary) {
    w.Bin(x, static_cast<size_t>(n) * d * sizeof(float));
    return;
  }
  w.packer().pack_array(static_cast<uint32_t>(n));
  for (int64_t i = 0; i < n; ++i) w.FloatArray(x + i * d, d);
}

// The fields every index request starts with.
void Begin(MapWriter& w, std::string_view action, const std::string& id) {
  w.Str("action", action);
  w.Str("index_id", id);
}

std::string Field(const msgpack::object& map, std::string_view key) {
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR &&
        std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key &&
        kv.val.type == msgpack::type::STR) {
      return std::string(kv.val.via.str.ptr, kv.val.via.str.size);
    }
  }
  return "";
}

const msgpack::object* Find(const msgpack::object& map, std::string_view key) {
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR &&
        std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key) {
      return &kv.val;
    }
  }
  return nullptr;
}

}  // namespace

std::string ErrorKind(const Status& s) {
  auto colon = s.message().find(':');
  return colon == std::string::npos ? "OTHER" : s.message().substr(0, colon);
}

FaissxClient::FaissxClient(zmq::context_t& ctx, std::string endpoint, int timeout_ms)
    : ctx_(ctx), endpoint_(std::move(endpoint)), timeout_ms_(timeout_ms) {
  Connect();
}

FaissxClient::~FaissxClient() = default;

void FaissxClient::Connect() {
  socket_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::req);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::rcvtimeo, timeout_ms_);
  socket_->connect(endpoint_);
}

Status FaissxClient::Call(const std::string& request, msgpack::object_handle* reply) {
  zmq::message_t msg;
  try {
    socket_->send(zmq::buffer(request), zmq::send_flags::none);
    if (!socket_->recv(msg, zmq::recv_flags::none)) {
      Connect();
      return Unavailable("TIMEOUT: no reply within " + std::to_string(timeout_ms_) + " ms");
    }
    *reply = msgpack::unpack(static_cast<const char*>(msg.data()), msg.size());
  } catch (const std::exception& e) {
    Connect();
    return Unavailable(std::string("TRANSPORT: ") + e.what());
  }
  const msgpack::object& r = reply->get();
  if (r.type != msgpack::type::MAP) return Internal("PROTOCOL: reply is not a map");
  const msgpack::object* success = Find(r, "success");
  if (!success || success->type != msgpack::type::BOOLEAN || !success->via.boolean) {
    std::string code = Field(r, "error_code");
    return Unavailable((code.empty() ? "ERROR" : code) + ": " + Field(r, "error"));
  }
  return Status::Ok();
}

Status FaissxClient::Send(const MapWriter& request) {
  msgpack::object_handle reply;
  return Call(request.Finish(), &reply);
}

Status FaissxClient::CreateIndex(const std::string& id, int dim, const std::string& index_type) {
  MapWriter w;
  Begin(w, "create_index", id);
  w.Int("dimension", dim);
  w.Str("index_type", index_type);
  return Send(w);
}

Status FaissxClient::DeleteIndex(const std::string& id) {
  MapWriter w;
  Begin(w, "delete_index", id);
  return Send(w);
}

Status FaissxClient::SetParameter(const std::string& id, const std::string& name, double value) {
  MapWriter w;
  Begin(w, "set_parameter", id);
  w.Str("parameter", name);
  w.Int("value", static_cast<int64_t>(value));
  return Send(w);
}

Status FaissxClient::Train(const std::string& id, const float* x, int64_t n, int d, Encoding enc) {
  MapWriter w;
  Begin(w, "train_index", id);
  WriteVectors(w, "training_vectors", x, n, d, enc);
  return Send(w);
}

Status FaissxClient::Add(const std::string& id, const float* x, int64_t n, int d, Encoding enc) {
  MapWriter w;
  Begin(w, "add_vectors", id);
  WriteVectors(w, "vectors", x, n, d, enc);
  return Send(w);
}

std::string FaissxClient::SearchRequest(const std::string& id, const float* q, int64_t nq, int d,
                                        int k, Encoding enc, const SearchParams& params) {
  MapWriter w;
  Begin(w, "search", id);
  WriteVectors(w, "query_vectors", q, nq, d, enc);
  w.Int("k", k);
  if (enc == Encoding::kBinary) w.Bool("binary", true);
  if (params.nprobe || params.ef_search) {
    auto& p = w.Key("params");
    p.pack_map((params.nprobe ? 1 : 0) + (params.ef_search ? 1 : 0));
    if (params.nprobe) p.pack("nprobe"), p.pack(*params.nprobe);
    if (params.ef_search) p.pack("efSearch"), p.pack(*params.ef_search);
  }
  return w.Finish();
}

Status FaissxClient::Search(const std::string& id, const float* q, int64_t nq, int d, int k,
                            Encoding enc, const SearchParams& params,
                            std::vector<int64_t>* labels) {
  msgpack::object_handle h;
  RETURN_IF_ERROR(Call(SearchRequest(id, q, nq, d, k, enc, params), &h));
  if (!labels) return Status::Ok();
  labels->assign(nq * k, -1);
  const msgpack::object& r = h.get();
  if (enc == Encoding::kBinary) {
    const msgpack::object* ind = Find(r, "indices");
    if (!ind || ind->type != msgpack::type::BIN ||
        ind->via.bin.size != labels->size() * sizeof(int64_t)) {
      return Internal("PROTOCOL: binary indices missing or of the wrong size");
    }
    std::memcpy(labels->data(), ind->via.bin.ptr, ind->via.bin.size);
    return Status::Ok();
  }
  // FAISSx's own layout: results[i].indices (works against both servers).
  const msgpack::object* results = Find(r, "results");
  if (!results || results->type != msgpack::type::ARRAY || results->via.array.size != nq) {
    return Internal("PROTOCOL: reply has no results for every query");
  }
  for (int64_t i = 0; i < nq; ++i) {
    const msgpack::object& res = results->via.array.ptr[i];
    if (res.type != msgpack::type::MAP) return Internal("PROTOCOL: result is not a map");
    const msgpack::object* ind = Find(res, "indices");
    if (!ind || ind->type != msgpack::type::ARRAY) return Internal("PROTOCOL: no indices");
    for (uint32_t j = 0; j < ind->via.array.size && j < static_cast<uint32_t>(k); ++j) {
      const auto& v = ind->via.array.ptr[j];
      (*labels)[i * k + j] = v.type == msgpack::type::NEGATIVE_INTEGER ? v.via.i64
                             : v.type == msgpack::type::POSITIVE_INTEGER
                                 ? static_cast<int64_t>(v.via.u64)
                                 : -1;
    }
  }
  return Status::Ok();
}

}  // namespace vecgpu::bench
