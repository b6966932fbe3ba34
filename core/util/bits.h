#pragma once

#include <cstdint>
#include <vector>

#include "core/util/status.h"

namespace vecgpu {

// Packs n rows of d 0/1 floats (d a multiple of 8) into FAISS's binary codes: bit j of a row
// is bit j % 8 of byte j / 8. InvalidArgument names the first value that is not 0 or 1.
StatusOr<std::vector<uint8_t>> PackBits(int64_t n, int d, const float* x);
// The reverse: n rows of d bits from `codes` into 0/1 floats (out: n * d).
void UnpackBits(int64_t n, int d, const uint8_t* codes, float* out);

}  // namespace vecgpu
