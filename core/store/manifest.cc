#include "core/store/manifest.h"

#include <cstdio>
#include <cstring>

#include "core/store/crc32c.h"

namespace vecgpu::store {
namespace {

constexpr char kMagic[8] = {'V', 'E', 'C', 'G', 'P', 'U', 'M', 'F'};
constexpr uint32_t kVersion = 1;

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

}  // namespace

// magic, version u32, flags u32, cut u64, entry count u32, entries (storage_id u64, seq u64,
// file: u32 length + bytes), CRC32C u32 of every byte before it.
std::string EncodeManifest(const Manifest& m) {
  std::string out(kMagic, sizeof(kMagic));
  Put<uint32_t>(&out, kVersion);
  Put<uint32_t>(&out, 0);
  Put<uint64_t>(&out, m.cut);
  Put<uint32_t>(&out, static_cast<uint32_t>(m.entries.size()));
  for (const ManifestEntry& e : m.entries) {
    Put<uint64_t>(&out, e.storage_id);
    Put<uint64_t>(&out, e.seq);
    Put<uint32_t>(&out, static_cast<uint32_t>(e.file.size()));
    out.append(e.file);
  }
  Put<uint32_t>(&out, Crc32c(out));
  return out;
}

StatusOr<Manifest> DecodeManifest(std::string_view bytes, const std::string& path) {
  auto bad = [&](const std::string& what) { return DataLoss("manifest " + path + ": " + what); };
  if (bytes.size() < 28 + 4) return bad("shorter than its header");
  if (std::memcmp(bytes.data(), kMagic, 8) != 0) return bad("not a vecgpu manifest (magic)");
  uint32_t crc = 0;
  std::memcpy(&crc, bytes.data() + bytes.size() - 4, 4);
  if (crc != Crc32c(bytes.substr(0, bytes.size() - 4))) return bad("CRC mismatch");
  const std::string_view in = bytes.substr(0, bytes.size() - 4);
  size_t at = 8;
  auto get = [&](auto* v, const char* field) -> Status {
    if (in.size() - at < sizeof(*v)) return bad(std::string(field) + " runs past the end");
    std::memcpy(v, in.data() + at, sizeof(*v));
    at += sizeof(*v);
    return Status::Ok();
  };
  uint32_t version = 0, flags = 0, count = 0;
  RETURN_IF_ERROR(get(&version, "version"));
  if (version != kVersion) {
    return bad("format version " + std::to_string(version) + " (this vecgpu reads version " +
               std::to_string(kVersion) + ")");
  }
  Manifest m;
  RETURN_IF_ERROR(get(&flags, "flags"));
  RETURN_IF_ERROR(get(&m.cut, "cut"));
  RETURN_IF_ERROR(get(&count, "entry count"));
  if (count > in.size() / 20) return bad("entry count past the end");
  m.entries.resize(count);
  for (ManifestEntry& e : m.entries) {
    uint32_t n = 0;
    RETURN_IF_ERROR(get(&e.storage_id, "storage id"));
    RETURN_IF_ERROR(get(&e.seq, "seq"));
    RETURN_IF_ERROR(get(&n, "file name length"));
    if (in.size() - at < n) return bad("file name runs past the end");
    e.file.assign(in.data() + at, n);
    at += n;
    if (e.file.empty() || e.file[0] == '/' || e.file.find("..") != std::string::npos) {
      return bad("file name '" + e.file + "' is not inside the data directory");
    }
  }
  if (at != in.size()) return bad("bytes after the last entry");
  return m;
}

Status WriteManifest(FileSystem& fs, const std::string& dir, const Manifest& m) {
  return WriteFileAtomically(fs, dir + "/MANIFEST", {EncodeManifest(m)});
}

StatusOr<std::optional<Manifest>> ReadManifest(FileSystem& fs, const std::string& dir) {
  const std::string path = dir + "/MANIFEST";
  ASSIGN_OR_RETURN(bool exists, fs.Exists(path));
  if (!exists) return std::optional<Manifest>();
  ASSIGN_OR_RETURN(std::string bytes, fs.ReadFile(path));
  ASSIGN_OR_RETURN(Manifest m, DecodeManifest(bytes, path));
  return std::optional<Manifest>(std::move(m));
}

std::string EncodeName(std::string_view name) {
  if (name.empty()) return "~";
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : name) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (out.size() <= 96) return out;
  uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  size_t keep = 80;  // never cut an escape in two
  if (out[keep - 1] == '%') {
    keep -= 1;
  } else if (out[keep - 2] == '%') {
    keep -= 2;
  }
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(h));
  return out.substr(0, keep) + "~" + hash;
}

}  // namespace vecgpu::store
