#pragma once

#include <cstdint>
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

}  // namespace vecgpu::server
