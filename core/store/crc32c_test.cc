#include "core/store/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

namespace vecgpu::store {
namespace {

// Runs `check` on the portable path and, when the CPU has it, the hardware path.
template <typename Check>
void ForEachImpl(Check check) {
  check("portable", internal::Crc32cPortable);
  if (internal::Crc32cHardwareAvailable()) check("hardware", internal::Crc32cHardware);
}

TEST(Crc32cTest, KnownVectors) {
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  std::string descending(32, '\0');
  for (int i = 0; i < 32; ++i) descending[i] = static_cast<char>(31 - i);
  ForEachImpl([&](const char* name, auto crc) {
    SCOPED_TRACE(name);
    EXPECT_EQ(crc("", 0), 0u);
    EXPECT_EQ(crc("123456789", 0), 0xE3069283u);
    // RFC 3720, B.4.
    EXPECT_EQ(crc(std::string(32, '\0'), 0), 0x8A9136AAu);
    EXPECT_EQ(crc(std::string(32, '\xff'), 0), 0x62A8AB43u);
    EXPECT_EQ(crc(ascending, 0), 0x46DD794Eu);
    EXPECT_EQ(crc(descending, 0), 0x113FDB5Cu);
  });
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
}

TEST(Crc32cTest, ContinuesAnEarlierValue) {
  std::string data = "The quick brown fox jumps over the lazy dog, twice over and again.";
  uint32_t whole = Crc32c(data);
  for (size_t cut = 0; cut <= data.size(); ++cut) {
    std::string_view a(data.data(), cut), b(data.data() + cut, data.size() - cut);
    EXPECT_EQ(Crc32c(b, Crc32c(a)), whole) << "cut at " << cut;
  }
}

TEST(Crc32cTest, MaskRoundTrips) {
  for (uint32_t crc : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x80000000u}) {
    EXPECT_EQ(UnmaskCrc(MaskCrc(crc)), crc);
    EXPECT_NE(MaskCrc(crc), crc);
    EXPECT_NE(MaskCrc(MaskCrc(crc)), MaskCrc(crc));
  }
  static_assert(UnmaskCrc(MaskCrc(0x12345678u)) == 0x12345678u);
}

TEST(Crc32cTest, EveryLengthAndAlignmentMatchesThePortablePath) {
  std::mt19937 rng(7);
  std::string buf(1100, '\0');
  for (char& c : buf) c = static_cast<char>(rng());
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t len = 0; len <= 80; ++len) {
      std::string_view s(buf.data() + offset, len);
      uint32_t want = internal::Crc32cPortable(s, 0);
      // Byte at a time, as the definition states it.
      uint32_t bytewise = 0;
      for (char c : s) bytewise = internal::Crc32cPortable(std::string_view(&c, 1), bytewise);
      ASSERT_EQ(bytewise, want) << offset << "+" << len;
      ASSERT_EQ(Crc32c(s), want) << offset << "+" << len;
      if (internal::Crc32cHardwareAvailable()) {
        ASSERT_EQ(internal::Crc32cHardware(s, 0x1234567u), internal::Crc32cPortable(s, 0x1234567u))
            << offset << "+" << len;
      }
    }
  }
  std::string_view big(buf.data() + 3, 1091);
  EXPECT_EQ(Crc32c(big), internal::Crc32cPortable(big, 0));
}

}  // namespace
}  // namespace vecgpu::store
