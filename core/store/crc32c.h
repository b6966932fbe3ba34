#pragma once

#include <cstdint>
#include <string_view>

namespace vecgpu::store {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `data`, with the standard initial
// and final inversion: Crc32c("123456789") == 0xE3069283. `crc` continues an earlier value,
// so Crc32c(b, Crc32c(a)) == Crc32c(a + b). Uses the SSE4.2 crc32 instruction when the CPU
// has it, a slicing-by-8 table otherwise. Thread-safe.
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

// The mask LevelDB applies to a CRC that is stored inside data that is itself CRC'd (the CRC
// of a string holding its own CRC is degenerate): rotate right by 15, add a constant.
inline constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;
inline constexpr uint32_t MaskCrc(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + kCrcMaskDelta;
}
inline constexpr uint32_t UnmaskCrc(uint32_t masked) {
  uint32_t rot = masked - kCrcMaskDelta;
  return (rot >> 17) | (rot << 15);
}

namespace internal {
// The two implementations Crc32c chooses between, exposed for tests.
uint32_t Crc32cPortable(std::string_view data, uint32_t crc);
// True when Crc32cHardware may be called (x86-64 with SSE4.2).
bool Crc32cHardwareAvailable();
// REQUIRES: Crc32cHardwareAvailable().
uint32_t Crc32cHardware(std::string_view data, uint32_t crc);
}  // namespace internal

}  // namespace vecgpu::store
