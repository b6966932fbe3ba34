#include "server/import_faissx.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <system_error>
#include <utility>

#include "core/engine.h"
#include "core/options.h"
#include "core/store/posix_file_system.h"
#include "core/store/store.h"
#include "core/util/utf8.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "server/faiss_file_check.h"

namespace vecgpu::server {
namespace {

using faissx_import::Bad;

namespace fs = std::filesystem;

// FAISSx writes <id>.json files of a few dozen bytes; a larger one is not one of them.
constexpr uint64_t kMaxMetadataBytes = uint64_t{1} << 20;

// ---- Reading the FAISSx directory -------------------------------------------------------
//
// The directory is the import's input, and whoever wrote it may have meant harm: its entries
// are opened relative to the directory's descriptor, never through a symbolic link, and only
// when they are regular files; nothing read from them goes into a message.

// A file descriptor, closed with it.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string ErrnoText(int e) { return std::error_code(e, std::generic_category()).message(); }

// Why `name`, of type `mode`, is not read.
Status NotRegular(const std::string& name, mode_t mode) {
  if (S_ISLNK(mode)) return Bad(name + ": is a symbolic link; refused");
  const char* kind = S_ISDIR(mode)                    ? "a directory"
                     : S_ISFIFO(mode)                 ? "a FIFO"
                     : S_ISSOCK(mode)                 ? "a socket"
                     : S_ISCHR(mode) || S_ISBLK(mode) ? "a device"
                                                      : "of an unknown type";
  return Bad(name + ": not a regular file (" + std::string(kind) + "); refused");
}

// The contents of the regular file `name` in the directory open as `dir`, refused when longer
// than `max_bytes` (before anything is allocated for it). Symbolic links, FIFOs, devices,
// sockets and directories are refused: looked at without following or opening them first
// (opening a FIFO waits for a writer, opening a device may act on it), then opened with
// O_NOFOLLOW | O_NONBLOCK and checked again, so that one swapped in between is refused too.
StatusOr<std::vector<uint8_t>> ReadRegularFile(int dir, const std::string& name,
                                               uint64_t max_bytes) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return Bad(name + ": cannot read it (" + ErrnoText(errno) + ")");
  }
  if (!S_ISREG(st.st_mode)) return NotRegular(name, st.st_mode);
  Fd fd(::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ELOOP) return NotRegular(name, S_IFLNK);
    return Bad(name + ": cannot open it (" + ErrnoText(errno) + ")");
  }
  if (::fstat(fd.get(), &st) != 0) return Bad(name + ": cannot read it (" + ErrnoText(errno) + ")");
  if (!S_ISREG(st.st_mode)) return NotRegular(name, st.st_mode);
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Bad(name + ": " + std::to_string(st.st_size) + " bytes, more than the " +
               std::to_string(max_bytes) + " the import reads from such a file; refused");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd.get(), bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Bad(name + ": cannot read it (" + ErrnoText(errno) + ")");
    if (n == 0) break;  // cut short since fstat: what it holds is what is checked and read
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);
  return bytes;
}

// The largest FAISS file imported: a quarter of this host's memory. Importing one holds its
// bytes, the index FAISS reads from them and the copy serialized for the snapshot at once;
// and a sparse file declares any length without using the disk.
uint64_t MaxIndexFileBytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return uint64_t{1} << 34;  // 16 GiB when the host does not say
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 4;
}

// The names in the directory open as `dir`, without "." and "..".
StatusOr<std::vector<std::string>> ListDirectory(int dir) {
  // fdopendir takes its descriptor: a duplicate, so that `dir` stays open for openat.
  const int fd = ::fcntl(dir, F_DUPFD_CLOEXEC, 0);
  DIR* d = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (!d) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    return Internal(ErrnoText(e));
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(d, ::closedir);
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(d);
    if (!entry) break;
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  if (errno != 0) return Internal(ErrnoText(errno));
  return names;
}
struct Metadata {
  std::string index_id;  // empty: named after the file, as FAISSx's own loader does
  int64_t dimension = -1;
};

// Reads `file` (<stem>.json) from the directory open as `dir`.
StatusOr<Metadata> ReadMetadata(int dir, const std::string& file) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> text, ReadRegularFile(dir, file, kMaxMetadataBytes));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // Not e.what(): it quotes the bytes the parser stopped at.
    return Bad(file + ": not valid JSON (at byte " + std::to_string(e.byte) + ")");
  } catch (const std::exception&) {
    return Bad(file + ": not valid JSON");
  }
  if (!j.is_object()) return Bad(file + ": does not hold a JSON object");
  Metadata m;
  auto field = [&](const char* key) -> const nlohmann::json* {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  };
  if (auto* v = field("index_id")) {
    if (!v->is_string()) return Bad(file + ": index_id is not a string");
    m.index_id = v->get<std::string>();
    // It names the index in the report: checked as the engine checks names, before then.
    const int max_length = Limits{}.max_index_id_length;
    if (static_cast<int64_t>(m.index_id.size()) > max_length || !IsPrintableUtf8(m.index_id)) {
      return Bad(file + ": index_id is not a name vecgpu takes (printable UTF-8, at most " +
                 std::to_string(max_length) + " bytes)");
    }
  }
  if (auto* v = field("dimension")) {
    if (!v->is_number_integer()) return Bad(file + ": dimension is not an integer");
    m.dimension = v->get<int64_t>();
  }
  return m;
}

// One index of the FAISSx directory: <stem>.faiss and/or <stem>.json.
struct Entry {
  std::string stem;
  bool has_index = false;
  bool has_metadata = false;
};

// What became of one index.
struct Outcome {
  std::string name;
  Status status;
  std::string index_type;
  int64_t vectors = 0;
};

// Imports the index of `e` (one FAISSx file pair) under `tenant` and snapshots it.
// `imported`: the index ids this run already imported, and from which file.
Outcome ImportOne(int dir, const Entry& e, const std::string& tenant, Engine& engine,
                  store::Store& persisted, const std::map<std::string, std::string>& imported) {
  Outcome r{e.stem};
  Metadata meta;
  if (e.has_metadata) {
    auto m = ReadMetadata(dir, e.stem + ".json");
    if (!m.ok()) {
      r.status = m.status();
      return r;
    }
    meta = *m;
    if (!meta.index_id.empty()) r.name = meta.index_id;
  }
  if (!e.has_index) {
    r.status = Bad("there is no " + e.stem + ".faiss beside " + e.stem + ".json");
    return r;
  }
  if (auto it = imported.find(r.name); it != imported.end()) {
    r.status = AlreadyExists(it->second + " already held this index id");
    return r;
  }
  const std::string file = e.stem + ".faiss";
  auto bytes = ReadRegularFile(dir, file, MaxIndexFileBytes());
  if (!bytes.ok()) {
    r.status = bytes.status();
    return r;
  }
  auto snap = ConvertFaissxIndex(std::move(*bytes), r.name, meta.dimension);
  if (!snap.ok()) {
    r.status = snap.status().WithContext(file);
    return r;
  }
  r.index_type = snap->index_type;
  auto info = engine.Import(tenant, std::move(*snap));
  if (!info.ok()) {
    r.status = info.status().code() == StatusCode::kAlreadyExists
                   ? AlreadyExists("the data directory already holds an index '" + r.name +
                                   "' for tenant '" + tenant + "'")
                   : info.status();
    return r;
  }
  r.vectors = info->backend.ntotal;
  // Import logs a create; the snapshot holds the contents. Without one the next start would
  // find the index empty, so it is dropped again.
  auto taken = persisted.Snapshot();
  if (!taken.ok()) {
    std::string why = "writing its snapshot: " + taken.status().message();
    if (Status dropped = engine.Drop(tenant, r.name); !dropped.ok()) {
      why += "; dropping it again failed too (" + dropped.message() +
             "), so the data directory holds it empty";
    }
    r.status = Status(taken.status().code(), why);
  }
  return r;
}

}  // namespace

int RunImportFaissx(const ImportFaissxOptions& o, std::ostream& out, std::ostream& err) {
  // Engine and store report through spdlog: warnings and worse only, and not on `out`.
  auto logger = spdlog::stderr_color_mt("vecgpu-import");
  logger->set_level(spdlog::level::warn);
  spdlog::set_default_logger(logger);

  // Its files are opened through this descriptor: the path is looked up once.
  Fd dir(::open(o.faissx_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) {
    const int e = errno;
    if (e == ENOENT || e == ENOTDIR) {
      err << "import-faissx: " << o.faissx_dir << " is not a directory\n";
    } else {
      err << "import-faissx: cannot open " << o.faissx_dir << ": " << ErrnoText(e) << "\n";
    }
    return 2;
  }
  auto names = ListDirectory(dir.get());
  if (!names.ok()) {
    err << "import-faissx: cannot list " << o.faissx_dir << ": " << names.status().message()
        << "\n";
    return 2;
  }
  // <stem>.faiss with its <stem>.json, as FAISSx's server writes them (its loader looks for the
  // json under a shorter name when the index id holds two dots; this is where it was written).
  // Whatever their type: one that is not a regular file is refused by name when read.
  std::map<std::string, Entry> entries;
  for (const std::string& name : *names) {
    const fs::path p(name);
    const std::string ext = p.extension().string();
    if (ext != ".faiss" && ext != ".json") continue;
    Entry& e = entries[p.stem().string()];
    e.stem = p.stem().string();
    (ext == ".faiss" ? e.has_index : e.has_metadata) = true;
  }

  cpu::CpuBackendFactory factory;
  Engine engine(Limits{}, factory);
  store::PosixFileSystem file_system;
  store::StoreOptions so;
  so.dir = o.data_dir;
  auto opened = store::Store::Open(file_system, so, engine, nullptr);
  if (!opened.ok()) {
    err << "import-faissx: data-dir " << o.data_dir << ": " << opened.status().message() << "\n";
    return 2;
  }
  std::unique_ptr<store::Store> persisted = std::move(*opened);
  engine.set_log(persisted.get());

  int loaded = 0, refused = 0;
  int64_t vectors = 0;
  std::map<std::string, std::string> imported;  // index id -> the file it came from
  for (const auto& [stem, e] : entries) {
    Outcome r = ImportOne(dir.get(), e, o.tenant, engine, *persisted, imported);
    if (r.status.ok()) {
      ++loaded;
      vectors += r.vectors;
      imported[r.name] = stem + ".faiss";
      out << "loaded " << r.name << ": " << r.index_type << ", " << r.vectors << " vectors"
          << std::endl;
    } else {
      ++refused;
      out << "refused " << r.name << ": " << r.status.message() << std::endl;
    }
  }
  // Each loaded index is in a snapshot already; this one moves the log's cut past anything a
  // refused import may have logged before it was refused.
  auto last = persisted->Snapshot();
  if (!last.ok()) {
    err << "import-faissx: data-dir " << o.data_dir
        << ": the final snapshot failed: " << last.status().message() << "\n";
  }
  out << "imported " << loaded << " of " << loaded + refused << " indexes (" << vectors
      << " vectors) from " << o.faissx_dir << " into " << o.data_dir << " for tenant '" << o.tenant
      << "'";
  if (refused > 0) out << "; " << refused << " refused";
  out << std::endl;
  return refused == 0 && last.ok() ? 0 : 1;
}

}  // namespace vecgpu::server
