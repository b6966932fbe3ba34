#include "core/util/bits.h"

#include <string>

namespace vecgpu {

StatusOr<std::vector<uint8_t>> PackBits(int64_t n, int d, const float* x) {
  std::vector<uint8_t> codes(n * (d / 8), 0);
  for (int64_t i = 0; i < n * d; ++i) {
    if (x[i] == 1.0f) {
      codes[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    } else if (x[i] != 0.0f) {
      return InvalidArgument("vectors: binary vector " + std::to_string(i / d) + " bit " +
                             std::to_string(i % d) + " is " + std::to_string(x[i]) +
                             ", not 0 or 1");
    }
  }
  return codes;
}

void UnpackBits(int64_t n, int d, const uint8_t* codes, float* out) {
  for (int64_t i = 0; i < n * d; ++i) out[i] = (codes[i / 8] >> (i % 8)) & 1;
}

}  // namespace vecgpu
