#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "core/index_spec.h"
#include "core/types.h"
#include "core/util/status.h"

namespace vecgpu::gpu_host {

// The messages between the server and a GPU host process (`vecgpu gpu-host`), over one
// stream socket (ARCHITECTURE.md, "GPU faults"). Every message is one frame: a fixed header
// (magic, operation, status code, request id, body length; little-endian, as the two ends
// are the same binary on the same machine) and a body of fields in a fixed order per
// operation (Writer / Reader). Replies carry the request's id and operation; a failed
// operation's reply has its StatusCode and the message as body.
enum class Op : uint32_t {
  kHello = 1,       // -> pid
  kCount = 2,       // -> devices visible (the probe process)
  kProperties = 3,  // device -> name, total bytes, compute capability
  kFreeBytes = 4,   // device -> bytes free now
  kBuild = 5,       // replica id, devices, spec, next label, index bytes -> ntotal, memory
  kSearch = 6,      // replica id, n, k, params, x -> distances, labels
  kAdd = 7,         // replica id, n, labels, next label, x -> ntotal, memory
  kDrop = 8,        // replica id -> (frees the copy)
  kCrash = 9,       // the fake provider's process aborts (tests); refused otherwise
  kReserve = 10,    // replica id, vectors -> memory (storage grown ahead of adds)
};
std::string_view OpName(Op op);

struct Frame {
  Op op = Op::kHello;
  StatusCode code = StatusCode::kOk;
  uint64_t id = 0;
  std::string body;
};

// Largest body either end accepts: an index copy (the host's serialization) may be large.
inline constexpr uint64_t kMaxBody = uint64_t{64} << 30;

// Writes one frame; the caller serialises writers. Unavailable when the peer is gone.
Status WriteFrame(int fd, const Frame& f);
// Reads one frame. Unavailable("closed") at a clean end of stream; DataLoss for a frame
// that is not one (bad magic, a body over kMaxBody).
StatusOr<Frame> ReadFrame(int fd);

// Appends fields to a body.
class Writer {
 public:
  Writer& U32(uint32_t v) { return Raw(&v, sizeof v); }
  Writer& I32(int32_t v) { return Raw(&v, sizeof v); }
  Writer& I64(int64_t v) { return Raw(&v, sizeof v); }
  Writer& F64(double v) { return Raw(&v, sizeof v); }
  Writer& Str(std::string_view s) {
    I64(static_cast<int64_t>(s.size()));
    return Raw(s.data(), s.size());
  }
  template <typename T>
  Writer& Array(const T* p, int64_t n) {
    I64(n);
    return Raw(p, static_cast<size_t>(n) * sizeof(T));
  }
  Writer& Spec(const IndexSpec& s);
  Writer& Params(const SearchParams& p);
  std::string Take() { return std::move(out_); }

 private:
  Writer& Raw(const void* p, size_t n) {
    out_.append(static_cast<const char*>(p), n);
    return *this;
  }
  std::string out_;
};

// Reads fields back, in the order written; any read past the end or of a negative or
// oversized length leaves ok() false (and zeros / empty values), so a malformed body is one
// check at the end.
class Reader {
 public:
  explicit Reader(std::string_view body) : in_(body) {}
  uint32_t U32() { return Pod<uint32_t>(); }
  int32_t I32() { return Pod<int32_t>(); }
  int64_t I64() { return Pod<int64_t>(); }
  double F64() { return Pod<double>(); }
  std::string Str() {
    std::string_view v = Bytes(1);
    return std::string(v);
  }
  // A string or array body without a copy: `size` bytes per element.
  std::string_view Bytes(size_t size);
  template <typename T>
  std::vector<T> Array() {
    std::string_view v = Bytes(sizeof(T));
    std::vector<T> out(v.size() / sizeof(T));
    if (!v.empty()) std::memcpy(out.data(), v.data(), v.size());
    return out;
  }
  IndexSpec Spec();
  SearchParams Params();
  bool ok() const { return ok_; }
  bool done() const { return ok_ && at_ == in_.size(); }

 private:
  template <typename T>
  T Pod() {
    T v{};
    if (!ok_ || in_.size() - at_ < sizeof(T)) {
      ok_ = false;
      return v;
    }
    std::memcpy(&v, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  std::string_view in_;
  size_t at_ = 0;
  bool ok_ = true;
};

}  // namespace vecgpu::gpu_host
