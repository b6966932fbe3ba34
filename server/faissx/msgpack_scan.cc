#include "server/faissx/msgpack_scan.h"

#include <cstring>

#include "core/util/utf8.h"

namespace vecgpu::server {
namespace {

// A cursor over msgpack bytes. Every read is bounds-checked.
class Cursor {
 public:
  explicit Cursor(std::string_view b) : b_(b) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return b_.size() - pos_; }
  bool done() const { return pos_ == b_.size(); }

  bool Byte(uint8_t* out) {
    if (remaining() < 1) return false;
    *out = static_cast<uint8_t>(b_[pos_++]);
    return true;
  }
  // Big-endian unsigned integer of `width` bytes.
  bool Uint(int width, uint64_t* out) {
    if (remaining() < static_cast<size_t>(width)) return false;
    uint64_t v = 0;
    for (int i = 0; i < width; ++i) v = (v << 8) | static_cast<uint8_t>(b_[pos_ + i]);
    pos_ += width;
    *out = v;
    return true;
  }
  bool Skip(uint64_t n) {
    if (remaining() < n) return false;
    pos_ += n;
    return true;
  }
  std::string_view Take(uint64_t n) {
    std::string_view s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  // Skips up to `max` values in a row that are float64 (0xcb + 8 bytes) or float32 (0xca + 4),
  // as FAISSx sends vector components; returns how many. Scanning them one by one through
  // ScanValue cost a 99 MB request tens of milliseconds before its key could be checked.
  uint64_t SkipFloats(uint64_t max) {
    const char* p = b_.data() + pos_;
    const char* const end = b_.data() + b_.size();
    uint64_t n = 0;
    while (n < max) {
      const auto t = static_cast<uint8_t>(*p);
      const size_t width = t == 0xcb ? 9 : t == 0xca ? 5 : 0;
      if (width == 0 || static_cast<size_t>(end - p) < width) break;
      p += width;
      ++n;
      if (p == end) break;
    }
    pos_ = static_cast<size_t>(p - b_.data());
    return n;
  }

 private:
  std::string_view b_;
  size_t pos_ = 0;
};

enum class Kind { kScalar, kString, kBin, kExt, kArray, kMap, kInvalid, kTruncated };

struct Header {
  Kind kind = Kind::kInvalid;
  uint64_t length = 0;  // bytes for str/bin/ext and fixed scalars, elements for containers
};

// Reads the header of the next value; for scalars and fixed-size payloads `length` is the
// payload size still to skip.
Header ReadHeader(Cursor& c) {
  uint8_t t;
  if (!c.Byte(&t)) return {Kind::kTruncated, 0};
  if (t <= 0x7f || t >= 0xe0) return {Kind::kScalar, 0};
  if (t >= 0x80 && t <= 0x8f) return {Kind::kMap, uint64_t(t & 0x0f)};
  if (t >= 0x90 && t <= 0x9f) return {Kind::kArray, uint64_t(t & 0x0f)};
  if (t >= 0xa0 && t <= 0xbf) return {Kind::kString, uint64_t(t & 0x1f)};
  auto sized = [&](Kind k, int width, uint64_t extra) -> Header {
    uint64_t n;
    if (!c.Uint(width, &n)) return {Kind::kTruncated, 0};
    return {k, n + extra};
  };
  switch (t) {
    case 0xc0:
    case 0xc2:
    case 0xc3:
      return {Kind::kScalar, 0};
    case 0xc4:
      return sized(Kind::kBin, 1, 0);
    case 0xc5:
      return sized(Kind::kBin, 2, 0);
    case 0xc6:
      return sized(Kind::kBin, 4, 0);
    case 0xc7:
      return sized(Kind::kExt, 1, 1);
    case 0xc8:
      return sized(Kind::kExt, 2, 1);
    case 0xc9:
      return sized(Kind::kExt, 4, 1);
    case 0xca:
      return {Kind::kScalar, 4};
    case 0xcb:
      return {Kind::kScalar, 8};
    case 0xcc:
    case 0xd0:
      return {Kind::kScalar, 1};
    case 0xcd:
    case 0xd1:
      return {Kind::kScalar, 2};
    case 0xce:
    case 0xd2:
      return {Kind::kScalar, 4};
    case 0xcf:
    case 0xd3:
      return {Kind::kScalar, 8};
    case 0xd4:
      return {Kind::kExt, 2};
    case 0xd5:
      return {Kind::kExt, 3};
    case 0xd6:
      return {Kind::kExt, 5};
    case 0xd7:
      return {Kind::kExt, 9};
    case 0xd8:
      return {Kind::kExt, 17};
    case 0xd9:
      return sized(Kind::kString, 1, 0);
    case 0xda:
      return sized(Kind::kString, 2, 0);
    case 0xdb:
      return sized(Kind::kString, 4, 0);
    case 0xdc:
      return sized(Kind::kArray, 2, 0);
    case 0xdd:
      return sized(Kind::kArray, 4, 0);
    case 0xde:
      return sized(Kind::kMap, 2, 0);
    case 0xdf:
      return sized(Kind::kMap, 4, 0);
    default:
      return {Kind::kInvalid, 0};  // 0xc1
  }
}

Status Malformed(const Cursor& c, const std::string& what) {
  return InvalidArgument("Malformed request: " + what + " at byte " + std::to_string(c.pos()));
}

Status ScanValue(Cursor& c, const ScanLimits& limits, int depth) {
  Header h = ReadHeader(c);
  switch (h.kind) {
    case Kind::kTruncated:
      return Malformed(c, "message ends inside a value");
    case Kind::kInvalid:
      return Malformed(c, "invalid msgpack type byte");
    case Kind::kString:
      if (c.remaining() < h.length) {
        return Malformed(c, "string declares " + std::to_string(h.length) + " bytes but only " +
                                std::to_string(c.remaining()) + " remain");
      }
      // Strings are echoed (request_id, metadata, names in messages): msgpack str must be
      // UTF-8, or the client cannot decode the reply.
      if (!IsValidUtf8(c.Take(h.length))) return Malformed(c, "string is not valid UTF-8");
      return Status::Ok();
    case Kind::kScalar:
    case Kind::kBin:
    case Kind::kExt:
      if (!c.Skip(h.length)) {
        return Malformed(c, "value declares " + std::to_string(h.length) + " bytes but only " +
                                std::to_string(c.remaining()) + " remain");
      }
      return Status::Ok();
    case Kind::kArray:
    case Kind::kMap: {
      if (depth >= limits.max_depth) {
        return Malformed(c, "nesting deeper than " + std::to_string(limits.max_depth));
      }
      const uint64_t elements = h.kind == Kind::kMap ? 2 * h.length : h.length;
      if (h.length > static_cast<uint64_t>(limits.max_container_elements)) {
        return Malformed(c, "container declares " + std::to_string(h.length) +
                                " elements, above the limit of " +
                                std::to_string(limits.max_container_elements));
      }
      if (elements > c.remaining()) {  // every element takes at least one byte
        return Malformed(c, "container declares " + std::to_string(h.length) +
                                " elements but only " + std::to_string(c.remaining()) +
                                " bytes remain");
      }
      for (uint64_t i = 0; i < elements;) {
        if (h.kind == Kind::kArray && !c.done()) {
          i += c.SkipFloats(elements - i);
          if (i == elements) break;
        }
        RETURN_IF_ERROR(ScanValue(c, limits, depth + 1));
        ++i;
      }
      return Status::Ok();
    }
  }
  return Malformed(c, "unreachable");
}

}  // namespace

Status ScanMsgpack(std::string_view bytes, const ScanLimits& limits) {
  Cursor c(bytes);
  if (bytes.empty()) return InvalidArgument("Malformed request: empty message");
  RETURN_IF_ERROR(ScanValue(c, limits, 0));
  if (!c.done()) {
    return Malformed(c, std::to_string(c.remaining()) + " trailing bytes after the request");
  }
  return Status::Ok();
}

std::string PeekAction(std::string_view bytes) {
  Cursor c(bytes);
  Header h = ReadHeader(c);
  if (h.kind != Kind::kMap) return "";
  for (uint64_t i = 0; i < h.length; ++i) {
    Header key = ReadHeader(c);
    if (key.kind != Kind::kString) return "";
    if (c.remaining() < key.length) return "";
    std::string_view k = c.Take(key.length);
    if (k == "action") {
      Header v = ReadHeader(c);
      if (v.kind != Kind::kString || c.remaining() < v.length || v.length > 64) return "";
      return std::string(c.Take(v.length));
    }
    // Skip the value with the scanner itself; its limits only bound the walk on hostile input.
    if (!ScanValue(c, ScanLimits{64, INT64_MAX}, 1).ok()) return "";
  }
  return "";
}

Envelope PeekEnvelope(std::string_view bytes, int max_api_key_length,
                      int max_tenant_id_length) {
  Envelope e;
  Cursor c(bytes);
  Header h = ReadHeader(c);
  if (h.kind != Kind::kMap) return e;
  // Reads a non-empty string value of at most `max` bytes; nullopt (value skipped) for
  // anything else.
  auto string_value = [&c](uint64_t max, bool* bad) -> std::optional<std::string> {
    Cursor at = c;
    Header v = ReadHeader(c);
    if (v.kind == Kind::kString && v.length >= 1 && v.length <= max && c.remaining() >= v.length) {
      return std::string(c.Take(v.length));
    }
    *bad = true;
    c = at;
    if (!ScanValue(c, ScanLimits{64, INT64_MAX}, 1).ok()) *bad = false;  // caller sees !map
    return std::nullopt;
  };
  for (uint64_t i = 0; i < h.length; ++i) {
    Header key = ReadHeader(c);
    if (key.kind != Kind::kString || c.remaining() < key.length) return e;
    std::string_view k = c.Take(key.length);
    bool bad = false;
    if (k == "action") {
      auto v = string_value(64, &bad);
      if (!v && !bad) return e;
      if (v) e.action = std::move(*v);
    } else if (k == "api_key") {
      e.api_key = string_value(static_cast<uint64_t>(max_api_key_length), &bad);
      if (!e.api_key && !bad) return e;
      e.api_key_bad = bad;
    } else if (k == "tenant_id") {
      e.tenant_id = string_value(static_cast<uint64_t>(max_tenant_id_length), &bad);
      if (!e.tenant_id && !bad) return e;
      e.tenant_id_bad = bad;
    } else if (k == "request_id") {
      // Echoed on errors found before the request is decoded: a string or an integer.
      const size_t start = c.pos();
      Cursor peek = c;
      uint8_t type = 0;
      const bool has = peek.Byte(&type);
      if (!ScanValue(c, ScanLimits{64, INT64_MAX}, 1).ok()) return e;
      const bool str = (type >= 0xa0 && type <= 0xbf) || (type >= 0xd9 && type <= 0xdb);
      const bool integer = type <= 0x7f || type >= 0xe0 || (type >= 0xcc && type <= 0xd3);
      if (has && (str || integer) && c.pos() - start <= 300) {
        e.request_id = std::string(bytes.substr(start, c.pos() - start));
      }
    } else if (!ScanValue(c, ScanLimits{64, INT64_MAX}, 1).ok()) {
      return e;
    }
  }
  e.map = c.done();
  return e;
}

}  // namespace vecgpu::server
