#include "gpu_host/wire.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace vecgpu::gpu_host {
namespace {

constexpr uint32_t kMagic = 0x31484756;  // "VGH1"

struct Header {
  uint32_t magic;
  uint32_t op;
  int32_t code;
  uint32_t reserved;
  uint64_t id;
  uint64_t length;
};
static_assert(sizeof(Header) == 32);

Status WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Unavailable(std::string("write: ") + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// false at a clean end of stream before any byte; errors otherwise.
StatusOr<bool> ReadAll(int fd, char* p, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Unavailable(std::string("read: ") + std::strerror(errno));
    if (r == 0) {
      if (got == 0) return false;
      return Unavailable("closed in the middle of a frame");
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

std::string_view OpName(Op op) {
  switch (op) {
    case Op::kHello: return "hello";
    case Op::kCount: return "count";
    case Op::kProperties: return "properties";
    case Op::kFreeBytes: return "free-bytes";
    case Op::kBuild: return "build";
    case Op::kSearch: return "search";
    case Op::kAdd: return "add";
    case Op::kDrop: return "drop";
    case Op::kCrash: return "crash";
    case Op::kReserve: return "reserve";
  }
  return "unknown";
}

Status WriteFrame(int fd, const Frame& f) {
  Header h{kMagic, static_cast<uint32_t>(f.op), static_cast<int32_t>(f.code), 0, f.id,
           f.body.size()};
  if (f.body.size() <= 64 * 1024) {  // one write for the small frames of the search path
    std::string all(reinterpret_cast<const char*>(&h), sizeof h);
    all += f.body;
    return WriteAll(fd, all.data(), all.size());
  }
  RETURN_IF_ERROR(WriteAll(fd, reinterpret_cast<const char*>(&h), sizeof h));
  return WriteAll(fd, f.body.data(), f.body.size());
}

StatusOr<Frame> ReadFrame(int fd) {
  Header h{};
  ASSIGN_OR_RETURN(bool got, ReadAll(fd, reinterpret_cast<char*>(&h), sizeof h));
  if (!got) return Unavailable("closed");
  if (h.magic != kMagic) return DataLoss("not a GPU host frame (bad magic)");
  if (h.length > kMaxBody) {
    return DataLoss("GPU host frame of " + std::to_string(h.length) + " bytes (over the limit)");
  }
  Frame f;
  f.op = static_cast<Op>(h.op);
  f.code = static_cast<StatusCode>(h.code);
  f.id = h.id;
  f.body.resize(h.length);
  if (h.length > 0) {
    ASSIGN_OR_RETURN(bool body, ReadAll(fd, f.body.data(), f.body.size()));
    if (!body) return Unavailable("closed in the middle of a frame");
  }
  return f;
}

Writer& Writer::Spec(const IndexSpec& s) {
  Str(s.index_type).Str(s.factory).I32(static_cast<int32_t>(s.metric)).I32(s.dim);
  I32(s.binary ? 1 : 0).I32(static_cast<int32_t>(s.id_map)).Str(s.base_index_id);
  return I32(s.nlist).I32(s.hnsw_m).I32(s.pq_m).I32(s.pq_nbits).I32(s.sq_bits);
}

Writer& Writer::Params(const SearchParams& p) {
  I32(p.nprobe ? 1 : 0).I32(p.nprobe.value_or(0));
  return I32(p.ef_search ? 1 : 0).I32(p.ef_search.value_or(0));
}

std::string_view Reader::Bytes(size_t size) {
  const int64_t n = I64();
  if (!ok_ || n < 0 || size == 0 ||
      static_cast<uint64_t>(n) > (in_.size() - at_) / size) {
    ok_ = false;
    return {};
  }
  std::string_view v = in_.substr(at_, static_cast<size_t>(n) * size);
  at_ += v.size();
  return v;
}

IndexSpec Reader::Spec() {
  IndexSpec s;
  s.index_type = Str();
  s.factory = Str();
  s.metric = static_cast<Metric>(I32());
  s.dim = I32();
  s.binary = I32() != 0;
  s.id_map = static_cast<IdMapKind>(I32());
  s.base_index_id = Str();
  s.nlist = I32();
  s.hnsw_m = I32();
  s.pq_m = I32();
  s.pq_nbits = I32();
  s.sq_bits = I32();
  return s;
}

SearchParams Reader::Params() {
  SearchParams p;
  const bool has_nprobe = I32() != 0;
  const int nprobe = I32();
  const bool has_ef = I32() != 0;
  const int ef = I32();
  if (has_nprobe) p.nprobe = nprobe;
  if (has_ef) p.ef_search = ef;
  return p;
}

}  // namespace vecgpu::gpu_host
