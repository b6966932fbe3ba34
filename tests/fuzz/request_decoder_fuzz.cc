// libFuzzer target for the FAISSx request decoder: the pre-scan, msgpack decoding and every
// typed accessor the handlers use. Built by scripts/test.sh with clang (-DVECGPU_FUZZ=ON).
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/faissx/msgpack_scan.h"
#include "server/faissx/request.h"

namespace {

vecgpu::Limits FuzzLimits() {
  vecgpu::Limits l;
  l.max_request_bytes = 1 << 20;
  l.max_dimension = 256;
  l.max_container_elements = 100'000;
  (void)l.Validate();
  return l;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vecgpu::server;
  static const vecgpu::Limits limits = FuzzLimits();
  std::string payload(reinterpret_cast<const char*>(data), size);
  (void)PeekAction(payload);
  auto req = Request::Decode(std::move(payload), limits);
  if (!req.ok()) return 0;
  for (const char* key : {"index_id", "index_type", "api_key", "tenant_id", "parameter"}) {
    (void)req->String(key, 256);
  }
  for (const char* key :
       {"k", "dimension", "id", "idx", "start_idx", "num_vectors", "n_clusters"}) {
    (void)req->Int(key, 0, 10'000);
  }
  (void)req->Number("radius");
  (void)req->OptionalBool("binary", false);
  (void)req->Ids("ids", 10'000);
  (void)req->Strings("source_index_ids", 64, 256);
  (void)req->Params();
  for (const char* key : {"vectors", "query_vectors", "training_vectors", "vector"}) {
    (void)req->Vectors(key, VectorShape{0, false}, 1000);
    (void)req->Vectors(key, VectorShape{8, false}, 1000);
    (void)req->Vectors(key, VectorShape{16, true}, 1000);
  }
  return 0;
}
