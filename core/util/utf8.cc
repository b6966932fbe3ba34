#include "core/util/utf8.h"

#include <cstdint>
#include <cstdio>

namespace vecgpu {
namespace {

// Length of the valid UTF-8 sequence at s[i] (1..4) and its code point, or 0 if invalid.
int SequenceAt(std::string_view s, size_t i, uint32_t* cp_out) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    *cp_out = c;
    return 1;
  }
  int len;
  uint32_t cp;
  if ((c & 0xe0) == 0xc0) {
    len = 2, cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3, cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (int j = 1; j < len; ++j) {
    const auto cc = static_cast<unsigned char>(s[i + j]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  *cp_out = cp;
  return len;
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    const int len = SequenceAt(s, i, &cp);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

bool IsPrintableUtf8(std::string_view s) {
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    const int len = SequenceAt(s, i, &cp);
    if (len == 0 || cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return false;
    i += len;
  }
  return true;
}

std::string EscapeInvalidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    const int len = SequenceAt(s, i, &cp);
    if (len == 0) {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02X", static_cast<unsigned char>(s[i]));
      out += buf;
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

}  // namespace vecgpu
