#include "core/store/snapshot.h"

#include <cstring>

#include "core/store/crc32c.h"

namespace vecgpu::store {
namespace {

constexpr char kMagic[8] = {'V', 'E', 'C', 'G', 'P', 'U', 'S', 'N'};
constexpr uint32_t kVersion = 2;
constexpr uint32_t kOldestVersion = 1;  // format 1: no storage seq

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
  // As Str, without copying: a view into the input.
  Status View(const char* field, std::string_view* s) {
    uint64_t n = 0;
    RETURN_IF_ERROR(Get(field, &n));
    if (in_.size() - at_ < n) return Short(field);
    *s = in_.substr(at_, n);
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

// Everything before the index bytes: magic, version u32, flags u32, seq u64, storage_id u64,
// storage_seq u64 (version 2 on), tenant, name, index_type, dim i32, metric, device, factory, next_label i64, name count u32,
// names (name, index_type, view u32), labels, keys, index length u64. Then the index bytes and the
// CRC32C u32 of every byte before it. Strings: u64 length + bytes.
std::string EncodeHead(const StorageSnapshot& s) {
  std::string out(kMagic, sizeof(kMagic));
  Put<uint32_t>(&out, kVersion);
  Put<uint32_t>(&out, 0);
  Put<uint64_t>(&out, s.seq);
  Put<uint64_t>(&out, s.storage_id);
  Put<uint64_t>(&out, s.storage_seq);
  PutStr(&out, s.tenant);
  PutStr(&out, s.name);
  PutStr(&out, s.index_type);
  Put<int32_t>(&out, s.dim);
  PutStr(&out, s.metric);
  PutStr(&out, s.device);
  PutStr(&out, s.factory);
  Put<int64_t>(&out, s.next_label);
  Put<uint32_t>(&out, static_cast<uint32_t>(s.names.size()));
  for (const SnapshotName& n : s.names) {
    PutStr(&out, n.name);
    PutStr(&out, n.index_type);
    Put<uint32_t>(&out, n.view);
  }
  PutStr(&out, s.labels);
  PutStr(&out, s.keys);
  Put<uint64_t>(&out, s.index.size());
  return out;
}

std::string_view IndexBytes(const StorageSnapshot& s) {
  return {reinterpret_cast<const char*>(s.index.data()), s.index.size()};
}

}  // namespace

std::string EncodeSnapshot(const StorageSnapshot& s) {
  std::string out = EncodeHead(s);
  out.append(IndexBytes(s));
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
  uint32_t version = 0, flags = 0, nnames = 0;
  in.Skip(sizeof(kMagic));  // checked above
  RETURN_IF_ERROR(in.Get("version", &version));
  if (version < kOldestVersion || version > kVersion) {
    return bad("format version " + std::to_string(version) + " (this vecgpu reads versions " +
               std::to_string(kOldestVersion) + " to " + std::to_string(kVersion) + ")");
  }
  RETURN_IF_ERROR(in.Get("flags", &flags));
  RETURN_IF_ERROR(in.Get("seq", &s.seq));
  RETURN_IF_ERROR(in.Get("storage id", &s.storage_id));
  if (version >= 2) RETURN_IF_ERROR(in.Get("storage seq", &s.storage_seq));
  RETURN_IF_ERROR(in.Str("tenant", &s.tenant));
  RETURN_IF_ERROR(in.Str("name", &s.name));
  RETURN_IF_ERROR(in.Str("index_type", &s.index_type));
  RETURN_IF_ERROR(in.Get("dim", &s.dim));
  RETURN_IF_ERROR(in.Str("metric", &s.metric));
  RETURN_IF_ERROR(in.Str("device", &s.device));
  RETURN_IF_ERROR(in.Str("factory", &s.factory));
  RETURN_IF_ERROR(in.Get("next_label", &s.next_label));
  RETURN_IF_ERROR(in.Get("name count", &nnames));
  if (nnames > bytes.size() / 20) return bad("name count past the end of the file");
  s.names.resize(nnames);
  for (SnapshotName& n : s.names) {
    RETURN_IF_ERROR(in.Str("collection name", &n.name));
    RETURN_IF_ERROR(in.Str("collection index_type", &n.index_type));
    RETURN_IF_ERROR(in.Get("view", &n.view));
  }
  RETURN_IF_ERROR(in.Str("labels", &s.labels));
  RETURN_IF_ERROR(in.Str("keys", &s.keys));
  std::string_view index;
  RETURN_IF_ERROR(in.View("index", &index));
  s.index.assign(index.begin(), index.end());
  if (in.at() != bytes.size() - 4) return bad("bytes after the index");
  return s;
}

Status WriteSnapshot(FileSystem& fs, const std::string& path, const StorageSnapshot& s) {
  const std::string head = EncodeHead(s);
  std::string crc;
  Put<uint32_t>(&crc, Crc32c(IndexBytes(s), Crc32c(head)));
  return WriteFileAtomically(fs, path, {head, IndexBytes(s), crc});
}

StatusOr<StorageSnapshot> ReadSnapshot(FileSystem& fs, const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, fs.ReadFile(path));
  return DecodeSnapshot(bytes, path);
}

}  // namespace vecgpu::store
