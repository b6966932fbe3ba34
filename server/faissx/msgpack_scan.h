#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/util/status.h"

namespace vecgpu::server {

struct ScanLimits {
  int max_depth = 8;                            // nesting of arrays and maps
  int64_t max_container_elements = 16'000'000;  // elements of one array or map
};

// Walks one msgpack value without allocating and checks that it is well formed, that it fills
// `bytes` exactly, that nesting stays within max_depth, and that every array, map, string and
// bin declares no more elements or bytes than remain in the buffer (so a decoder can size its
// allocations from declared lengths safely) nor more than max_container_elements, and that
// every string is valid UTF-8.
// InvalidArgument names the problem and its byte offset.
Status ScanMsgpack(std::string_view bytes, const ScanLimits& limits);

// The string value of the top-level key "action" if `bytes` is a msgpack map that has one,
// else "". Cheap (stops at the key), tolerant of malformed input; for routing only.
std::string PeekAction(std::string_view bytes);

// The fields a request is routed and authenticated by, read from its top-level map without
// decoding or copying anything else (the other values are skipped by the allocation-free
// scanner), so that a request with a missing or unknown key is refused before any allocation
// proportional to its size.
struct Envelope {
  bool map = false;  // a map with string keys, walked to its end
  std::string action;
  std::optional<std::string> api_key;    // a non-empty string no longer than the limit
  bool api_key_bad = false;               // present, but not such a string
  std::optional<std::string> tenant_id;
  bool tenant_id_bad = false;
  std::string request_id;  // its msgpack bytes when a string or an integer, else empty
};
Envelope PeekEnvelope(std::string_view bytes, int max_api_key_length, int max_tenant_id_length);

}  // namespace vecgpu::server
