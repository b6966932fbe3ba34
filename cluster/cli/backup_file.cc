#include "cluster/cli/backup_file.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "cluster/placement/shard_map.h"
#include "core/store/crc32c.h"

namespace vecgpu::cluster {
namespace {

// Little-endian fixed-width integers, as every vecgpu file stores them.
void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}

// A frame's fields before the snapshot: shard (u32), position (u64), length (u64).
constexpr size_t kFramePrefixBytes = 4 + 8 + 8;

Status CheckHeader(const BackupHeader& h) {
  if (h.name.empty()) return InvalidArgument("no collection name");
  if (h.name.find('#') != std::string::npos) {
    return InvalidArgument("collection name '" + h.name + "' holds '#' (it names shards)");
  }
  if (h.shards < 1 || h.shards > kMaxBackupShards) {
    return InvalidArgument("shards " + std::to_string(h.shards) + " is not within 1.." +
                           std::to_string(kMaxBackupShards));
  }
  if (h.replication < 1 || h.replication > kMaxBackupShards) {
    return InvalidArgument("replication " + std::to_string(h.replication) + " is not within 1.." +
                           std::to_string(kMaxBackupShards));
  }
  if (h.dim < 1) return InvalidArgument("dimension " + std::to_string(h.dim) + " is not positive");
  return Status::Ok();
}

}  // namespace

std::string EncodeBackupHeaderJson(const BackupHeader& h) {
  nlohmann::json j = {
      {"tenant", h.tenant},
      {"name", h.name},
      {"shards", h.shards},
      {"replication", h.replication},
      {"metric", h.inner_product ? "inner_product" : "l2"},
      {"index_type", h.index_type},
      {"dim", h.dim},
      {"created", h.created},
  };
  return j.dump();
}

StatusOr<BackupHeader> DecodeBackupHeaderJson(std::string_view json) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return InvalidArgument("the header is not a JSON object");
  BackupHeader h;
  auto str = [&](const char* key, std::string& out, bool required) -> Status {
    auto it = j.find(key);
    if (it == j.end())
      return required ? InvalidArgument(std::string("no \"") + key + "\"") : Status::Ok();
    if (!it->is_string()) return InvalidArgument(std::string("\"") + key + "\" is not a string");
    out = it->get<std::string>();
    return Status::Ok();
  };
  auto num = [&](const char* key, int& out) -> Status {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) {
      return InvalidArgument(std::string("\"") + key + "\" is missing or not an integer");
    }
    const int64_t v = it->get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) {
      return InvalidArgument(std::string("\"") + key + "\" is out of range");
    }
    out = static_cast<int>(v);
    return Status::Ok();
  };
  RETURN_IF_ERROR(str("tenant", h.tenant, true));
  RETURN_IF_ERROR(str("name", h.name, true));
  RETURN_IF_ERROR(num("shards", h.shards));
  RETURN_IF_ERROR(num("replication", h.replication));
  std::string metric;
  RETURN_IF_ERROR(str("metric", metric, true));
  if (metric != "l2" && metric != "inner_product") {
    return InvalidArgument("\"metric\" is '" + metric + "', not 'l2' or 'inner_product'");
  }
  h.inner_product = metric == "inner_product";
  RETURN_IF_ERROR(str("index_type", h.index_type, true));
  RETURN_IF_ERROR(num("dim", h.dim));
  RETURN_IF_ERROR(str("created", h.created, false));
  RETURN_IF_ERROR(CheckHeader(h));
  return h;
}

// ---- Writer ----

BackupWriter::BackupWriter(store::FileSystem& fs, std::string path, int shards,
                           std::unique_ptr<store::WritableFile> file)
    : fs_(fs), path_(std::move(path)), shards_(shards), file_(std::move(file)) {}

BackupWriter::~BackupWriter() {
  if (finished_) return;
  if (file_) (void)file_->Close();
  (void)fs_.Remove(path_ + ".tmp");
}

StatusOr<std::unique_ptr<BackupWriter>> BackupWriter::Create(store::FileSystem& fs,
                                                             std::string path,
                                                             const BackupHeader& header) {
  if (Status st = CheckHeader(header); !st.ok()) {
    return InvalidArgument("backup header: " + st.message());
  }
  const std::string json = EncodeBackupHeaderJson(header);
  if (json.size() > kMaxBackupHeaderBytes) {
    return InvalidArgument("backup header: " + std::to_string(json.size()) + " bytes, over " +
                           std::to_string(kMaxBackupHeaderBytes));
  }
  std::string head(kBackupMagic, sizeof(kBackupMagic));
  PutU32(head, kBackupVersion);
  PutU32(head, 0);  // flags
  PutU32(head, static_cast<uint32_t>(json.size()));
  head += json;
  PutU32(head, store::Crc32c(head));
  ASSIGN_OR_RETURN(auto file, fs.OpenForAppend(path + ".tmp", /*truncate=*/true));
  std::unique_ptr<BackupWriter> w(
      new BackupWriter(fs, std::move(path), header.shards, std::move(file)));
  RETURN_IF_ERROR(w->file_->Append(head));
  return w;
}

Status BackupWriter::Add(int shard, uint64_t position, std::string_view snapshot) {
  if (shard != next_ || shard >= shards_) {
    return InvalidArgument("backup: shard " + std::to_string(shard) + " added out of order");
  }
  if (snapshot.size() > kMaxBackupShardBytes) {
    return InvalidArgument("backup: shard " + std::to_string(shard) + "'s copy is " +
                           std::to_string(snapshot.size()) + " bytes, over " +
                           std::to_string(kMaxBackupShardBytes));
  }
  std::string prefix;
  PutU32(prefix, static_cast<uint32_t>(shard));
  PutU64(prefix, position);
  PutU64(prefix, snapshot.size());
  std::string crc;
  PutU32(crc, store::Crc32c(snapshot, store::Crc32c(prefix)));
  RETURN_IF_ERROR(file_->Append(prefix));
  RETURN_IF_ERROR(file_->Append(snapshot));
  RETURN_IF_ERROR(file_->Append(crc));
  ++next_;
  return Status::Ok();
}

Status BackupWriter::Finish() {
  if (next_ != shards_) {
    return FailedPrecondition("backup: " + std::to_string(next_) + " of " +
                              std::to_string(shards_) + " shards written");
  }
  RETURN_IF_ERROR(file_->Sync());
  RETURN_IF_ERROR(file_->Close());
  RETURN_IF_ERROR(fs_.Rename(path_ + ".tmp", path_));
  const size_t slash = path_.rfind('/');
  RETURN_IF_ERROR(fs_.SyncDir(slash == std::string::npos ? "."
                              : slash == 0               ? "/"
                                                         : path_.substr(0, slash)));
  finished_ = true;
  return Status::Ok();
}

int64_t BackupWriter::size() const { return file_ ? file_->size() : 0; }

// ---- Reader ----

Status BackupReader::Read(char* out, uint64_t n, const std::string& what) {
  if (n > size_ - at_) {
    return DataLoss("backup " + path_ + ": truncated: " + what + " needs " + std::to_string(n) +
                    " bytes at byte " + std::to_string(at_) + ", the file has " +
                    std::to_string(size_ - at_) + " left");
  }
  in_.read(out, static_cast<std::streamsize>(n));
  if (static_cast<uint64_t>(in_.gcount()) != n) {
    return DataLoss("backup " + path_ + ": cannot read " + what + " at byte " +
                    std::to_string(at_));
  }
  at_ += n;
  return Status::Ok();
}

StatusOr<std::unique_ptr<BackupReader>> BackupReader::Open(std::istream& in, uint64_t size,
                                                           std::string path) {
  std::unique_ptr<BackupReader> r(new BackupReader(in, size, std::move(path)));
  char fixed[sizeof(kBackupMagic) + 12];
  RETURN_IF_ERROR(r->Read(fixed, sizeof(fixed), "the file header"));
  if (std::memcmp(fixed, kBackupMagic, sizeof(kBackupMagic)) != 0) {
    return DataLoss("backup " + r->path_ + ": not a vecgpu collection backup (bad magic)");
  }
  const uint32_t version = GetU32(fixed + 8);
  if (version != kBackupVersion) {
    return InvalidArgument("backup " + r->path_ + ": format version " + std::to_string(version) +
                           "; this vecgpu reads version " + std::to_string(kBackupVersion));
  }
  const uint32_t flags = GetU32(fixed + 12);
  const uint32_t length = GetU32(fixed + 16);
  if (flags != 0) {
    return DataLoss("backup " + r->path_ + ": unknown flags " + std::to_string(flags));
  }
  if (length > kMaxBackupHeaderBytes) {
    return DataLoss("backup " + r->path_ + ": a header of " + std::to_string(length) +
                    " bytes (at most " + std::to_string(kMaxBackupHeaderBytes) + ")");
  }
  std::string json(length, '\0');
  RETURN_IF_ERROR(r->Read(json.data(), length, "the JSON header"));
  char crc[4];
  RETURN_IF_ERROR(r->Read(crc, 4, "the header's CRC"));
  if (store::Crc32c(json, store::Crc32c({fixed, sizeof(fixed)})) != GetU32(crc)) {
    return DataLoss("backup " + r->path_ + ": the header's CRC does not match (damaged file)");
  }
  auto header = DecodeBackupHeaderJson(json);
  if (!header.ok()) {
    return DataLoss("backup " + r->path_ + ": header: " + header.status().message());
  }
  r->header_ = std::move(*header);
  return r;
}

StatusOr<BackupShard> BackupReader::Next() {
  if (next_ >= header_.shards) {
    return FailedPrecondition("backup " + path_ + ": every shard was read");
  }
  const std::string which = "shard " + std::to_string(next_);
  char prefix[kFramePrefixBytes];
  RETURN_IF_ERROR(Read(prefix, sizeof(prefix), which + "'s frame"));
  BackupShard s;
  const uint32_t shard = GetU32(prefix);
  s.position = GetU64(prefix + 4);
  const uint64_t length = GetU64(prefix + 12);
  if (shard != static_cast<uint32_t>(next_)) {
    return DataLoss("backup " + path_ + ": the frame for " + which + " says shard " +
                    std::to_string(shard));
  }
  if (length > kMaxBackupShardBytes) {
    return DataLoss("backup " + path_ + ": " + which + " declares " + std::to_string(length) +
                    " bytes (at most " + std::to_string(kMaxBackupShardBytes) + ")");
  }
  if (length + 4 > size_ - at_) {  // checked before allocating
    return DataLoss("backup " + path_ + ": truncated: " + which + " declares " +
                    std::to_string(length) + " bytes, the file has " + std::to_string(size_ - at_) +
                    " left");
  }
  s.snapshot.resize(length);
  RETURN_IF_ERROR(Read(s.snapshot.data(), length, which + "'s copy"));
  char crc[4];
  RETURN_IF_ERROR(Read(crc, 4, which + "'s CRC"));
  if (store::Crc32c(s.snapshot, store::Crc32c({prefix, sizeof(prefix)})) != GetU32(crc)) {
    return DataLoss("backup " + path_ + ": " + which + "'s CRC does not match (damaged file)");
  }
  s.shard = next_++;
  return s;
}

Status BackupReader::Finish() {
  if (next_ != header_.shards) {
    return FailedPrecondition("backup " + path_ + ": " + std::to_string(next_) + " of " +
                              std::to_string(header_.shards) + " shards read");
  }
  if (at_ != size_) {
    return DataLoss("backup " + path_ + ": " + std::to_string(size_ - at_) +
                    " bytes after the last shard");
  }
  return Status::Ok();
}

StatusOr<store::StorageSnapshot> DecodeBackupShard(const BackupHeader& header,
                                                   const BackupShard& shard,
                                                   const std::string& path) {
  const std::string which = "backup " + path + ": shard " + std::to_string(shard.shard);
  auto copy = store::DecodeSnapshot(shard.snapshot, which);
  if (!copy.ok()) return copy.status();
  const std::string want = ShardCollectionName(header.name, shard.shard, header.shards);
  if (copy->name != want || copy->names.size() != 1 || copy->names[0].name != want) {
    return DataLoss(which + ": a copy of index '" + copy->name + "' (" +
                    std::to_string(copy->names.size()) + " collections), not of '" + want +
                    "' alone (a view, or a collection with views, is not backed up on its own)");
  }
  if (copy->storage_seq != shard.position || shard.position == 0) {
    return DataLoss(which + ": the copy is at record " + std::to_string(copy->storage_seq) +
                    ", its frame says " + std::to_string(shard.position));
  }
  if (copy->dim != header.dim) {
    return DataLoss(which + ": dimension " + std::to_string(copy->dim) + ", the header says " +
                    std::to_string(header.dim));
  }
  return copy;
}

}  // namespace vecgpu::cluster
