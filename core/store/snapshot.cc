#include "core/store/snapshot.h"

#include <cstring>

#include "core/store/crc32c.h"

namespace vecgpu::store {
namespace {

constexpr char kMagic[8] = {'V', 'E', 'C', 'G', 'P', 'U', 'S', 'N'};
constexpr uint32_t kVersion = 1;

void PutBytes(std::string* out, const void* p, size_t n) {
  out->append(static_cast<const char*>(p), n);
}
template <typename T>
void Put(std::string* out, T v) {
  PutBytes(out, &v, sizeof(T));
}
// Strings of any length (an index can be gigabytes): u64 length + bytes.
void PutStr(std::string* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s);
}

class Reader {
 public:
  Reader(std::string_view in, const std::string& path) : in_(in), path_(path) {}
  template <typename T>
  Status Get(const char* field, T* v) {
    if (in_.size() - at_ < sizeof(T)) return Short(field);
    std::memcpy(v, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return Status::Ok();
  }
  Status Str(const char* field, std::string* s) {
    uint64_t n = 0;
    RETURN_IF_ERROR(Get(field, &n));
    if (in_.size() - at_ < n) return Short(field);
    s->assign(in_.data() + at_, n);
    at_ += n;
    return Status::Ok();
  }
  size_t at() const { return at_; }
  void Skip(size_t n) { at_ += n; }  // callers checked the bytes are there

 private:
  Status Short(const char* field) const {
    return DataLoss("snapshot " + path_ + ": " + field + " runs past the end of the file");
  }
  std::string_view in_;
  const std::string& path_;
  size_t at_ = 0;
};

}  // namespace

// magic, version u32, flags u32, seq u64, tenant, name, index_type, dim i32, metric, device,
// next_label i64, view count u32, views (name, index_type, view u32), labels, index;
// CRC32C u32 of every byte before it. Strings: u64 length + bytes.
std::string EncodeSnapshot(const StorageSnapshot& s) {
  std::string out(kMagic, sizeof(kMagic));
  Put<uint32_t>(&out, kVersion);
  Put<uint32_t>(&out, 0);
  Put<uint64_t>(&out, s.seq);
  PutStr(&out, s.tenant);
  PutStr(&out, s.name);
  PutStr(&out, s.index_type);
  Put<int32_t>(&out, s.dim);
  PutStr(&out, s.metric);
  PutStr(&out, s.device);
  Put<int64_t>(&out, s.next_label);
  Put<uint32_t>(&out, static_cast<uint32_t>(s.views.size()));
  for (const SnapshotView& v : s.views) {
    PutStr(&out, v.name);
    PutStr(&out, v.index_type);
    Put<uint32_t>(&out, v.view);
  }
  PutStr(&out, s.labels);
  PutStr(&out, s.index);
  Put<uint32_t>(&out, Crc32c(out));
  return out;
}

StatusOr<StorageSnapshot> DecodeSnapshot(std::string_view bytes, const std::string& path) {
  auto bad = [&](const std::string& what) { return DataLoss("snapshot " + path + ": " + what); };
  if (bytes.size() < 24 + 4) return bad("shorter than its header");
  if (std::memcmp(bytes.data(), kMagic, 8) != 0) return bad("not a vecgpu snapshot (magic)");
  uint32_t crc = 0;
  std::memcpy(&crc, bytes.data() + bytes.size() - 4, 4);
  if (crc != Crc32c(bytes.substr(0, bytes.size() - 4))) return bad("CRC mismatch");
  Reader in(bytes.substr(0, bytes.size() - 4), path);
  StorageSnapshot s;
  uint32_t version = 0, flags = 0, nviews = 0;
  in.Skip(sizeof(kMagic));  // checked above
  RETURN_IF_ERROR(in.Get("version", &version));
  if (version != kVersion) {
    return bad("format version " + std::to_string(version) + " (this vecgpu reads version " +
               std::to_string(kVersion) + ")");
  }
  RETURN_IF_ERROR(in.Get("flags", &flags));
  RETURN_IF_ERROR(in.Get("seq", &s.seq));
  RETURN_IF_ERROR(in.Str("tenant", &s.tenant));
  RETURN_IF_ERROR(in.Str("name", &s.name));
  RETURN_IF_ERROR(in.Str("index_type", &s.index_type));
  RETURN_IF_ERROR(in.Get("dim", &s.dim));
  RETURN_IF_ERROR(in.Str("metric", &s.metric));
  RETURN_IF_ERROR(in.Str("device", &s.device));
  RETURN_IF_ERROR(in.Get("next_label", &s.next_label));
  RETURN_IF_ERROR(in.Get("view count", &nviews));
  if (nviews > bytes.size() / 20) return bad("view count past the end of the file");
  s.views.resize(nviews);
  for (SnapshotView& v : s.views) {
    RETURN_IF_ERROR(in.Str("view name", &v.name));
    RETURN_IF_ERROR(in.Str("view index_type", &v.index_type));
    RETURN_IF_ERROR(in.Get("view", &v.view));
  }
  RETURN_IF_ERROR(in.Str("labels", &s.labels));
  RETURN_IF_ERROR(in.Str("index", &s.index));
  if (in.at() != bytes.size() - 4) return bad("bytes after the index");
  return s;
}

Status WriteSnapshot(FileSystem& fs, const std::string& path, const StorageSnapshot& s) {
  const std::string tmp = path + ".tmp";
  {
    ASSIGN_OR_RETURN(auto file, fs.OpenForAppend(tmp, /*truncate=*/true));
    RETURN_IF_ERROR(file->Append(EncodeSnapshot(s)));
    RETURN_IF_ERROR(file->Sync());
    RETURN_IF_ERROR(file->Close());
  }
  RETURN_IF_ERROR(fs.Rename(tmp, path));
  const size_t slash = path.find_last_of('/');
  return fs.SyncDir(slash == std::string::npos ? "." : path.substr(0, slash));
}

StatusOr<StorageSnapshot> ReadSnapshot(FileSystem& fs, const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, fs.ReadFile(path));
  return DecodeSnapshot(bytes, path);
}

}  // namespace vecgpu::store
