#pragma once

// The file `vecgpu cluster backup` writes and `vecgpu cluster restore` reads: one collection
// of a cluster, shard by shard, each shard's copy in the snapshot file encoding. The bytes are
// specified in core/store/FORMAT.md ("Backup of a cluster collection"): a magic, a version, a
// JSON header with its CRC32C, then one frame per shard (its number, its position, the
// snapshot's length and bytes, a CRC32C), and nothing after the last one.

#include <cstdint>
#include <istream>
#include <memory>
#include <string>
#include <string_view>

#include "core/store/file_system.h"
#include "core/store/snapshot.h"
#include "core/util/status.h"

namespace vecgpu::cluster {

inline constexpr char kBackupMagic[8] = {'V', 'E', 'C', 'G', 'P', 'U', 'B', 'K'};
inline constexpr uint32_t kBackupVersion = 1;
// Bounds a reader checks before it allocates: the JSON header, shards per collection (the
// gateway's limit) and one shard's copy (one agent API message: kMaxCopyMessageBytes).
inline constexpr uint32_t kMaxBackupHeaderBytes = uint32_t{1} << 20;
inline constexpr int kMaxBackupShards = 64;
inline constexpr uint64_t kMaxBackupShardBytes = uint64_t{0x7fffffff} - (uint64_t{1} << 20);

// What the file says of the collection: its JSON header.
struct BackupHeader {
  std::string tenant;
  std::string name;
  int shards = 1;              // S
  int replication = 1;         // R when it was backed up
  bool inner_product = false;  // the metric ("metric": "l2" or "inner_product")
  std::string index_type;      // as created (shard 0's copy says)
  int dim = 0;
  std::string created;  // when it was written, UTC, ISO 8601 (for people)
};

// One shard's copy, as the file holds it.
struct BackupShard {
  int shard = 0;
  uint64_t position = 0;  // the copy's position (storage_seq) when it was exported
  std::string snapshot;   // core/store/FORMAT.md's snapshot encoding
};

// Writes a backup to `path`.tmp and, once every shard is in, syncs it and renames it over
// `path` (so `path` is either absent, an earlier file, or this whole one). Not thread-safe.
class BackupWriter {
 public:
  // INVALID_ARGUMENT for a header that could not be read back (no name, S out of range).
  static StatusOr<std::unique_ptr<BackupWriter>> Create(store::FileSystem& fs, std::string path,
                                                        const BackupHeader& header);
  ~BackupWriter();  // removes the .tmp file unless Finish succeeded
  BackupWriter(const BackupWriter&) = delete;
  BackupWriter& operator=(const BackupWriter&) = delete;

  // REQUIRES: shards in order, 0 to S-1. INVALID_ARGUMENT for a copy over
  // kMaxBackupShardBytes or a shard out of order.
  Status Add(int shard, uint64_t position, std::string_view snapshot);
  // REQUIRES: every shard added.
  Status Finish();
  // Bytes written so far.
  int64_t size() const;

 private:
  BackupWriter(store::FileSystem& fs, std::string path, int shards,
               std::unique_ptr<store::WritableFile> file);
  store::FileSystem& fs_;
  const std::string path_;
  const int shards_;
  int next_ = 0;
  bool finished_ = false;
  std::unique_ptr<store::WritableFile> file_;
};

// Reads a backup from a stream, checking each part before it is used: the magic, the version,
// the header's CRC and fields; each frame's shard number, its length against the bytes left
// and kMaxBackupShardBytes (before allocating), and its CRC; and that nothing follows the
// last frame. Errors are DATA_LOSS naming `path` and the part (INVALID_ARGUMENT for a
// version from the future). Not thread-safe.
class BackupReader {
 public:
  // `size`: the stream's length in bytes.
  static StatusOr<std::unique_ptr<BackupReader>> Open(std::istream& in, uint64_t size,
                                                      std::string path);
  const BackupHeader& header() const { return header_; }
  // The next shard's frame (0, 1, ... S-1).
  StatusOr<BackupShard> Next();
  // After the last frame: DATA_LOSS when bytes follow it.
  Status Finish();

 private:
  BackupReader(std::istream& in, uint64_t size, std::string path)
      : in_(in), size_(size), path_(std::move(path)) {}
  Status Read(char* out, uint64_t n, const std::string& what);
  std::istream& in_;
  const uint64_t size_;
  const std::string path_;
  uint64_t at_ = 0;
  int next_ = 0;
  BackupHeader header_;
};

// The header encoded as it is stored (its JSON), and decoded with every field checked.
std::string EncodeBackupHeaderJson(const BackupHeader& header);
StatusOr<BackupHeader> DecodeBackupHeaderJson(std::string_view json);

// Shard `shard.shard`'s copy, decoded and checked against the header: a copy of that shard's
// collection on the agents alone (no views), at the frame's position, of the header's
// dimension. DATA_LOSS naming `path` otherwise.
StatusOr<store::StorageSnapshot> DecodeBackupShard(const BackupHeader& header,
                                                   const BackupShard& shard,
                                                   const std::string& path);

}  // namespace vecgpu::cluster
