#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/store/file_system.h"
#include "core/util/status.h"

namespace vecgpu::store {

// A collection over a snapshotted storage: the one that created it, and "IDMap:{base}" views.
struct SnapshotName {
  std::string name;
  std::string index_type;  // as created
  uint32_t view = 0;       // its LabelTable view (0: the base view)
  bool operator==(const SnapshotName&) const = default;
};

// One index storage at one point of the log (core/store/FORMAT.md): how it was created, the
// collections over it now, its label table and its FAISS index.
struct StorageSnapshot {
  // The log's last sequence number while it was taken: it reflects every record about its
  // collections up to here and none after.
  uint64_t seq = 0;
  uint64_t storage_id = 0;  // the sequence number of the record that created the storage
  // How many log records about the storage it reflects (WalRecord::storage_seq of the last;
  // 0 in a format-1 file, which did not count them).
  uint64_t storage_seq = 0;
  // The create request of the collection that made the storage (which may since be dropped,
  // its views living on).
  std::string tenant;
  std::string name;
  std::string index_type;
  int32_t dim = 0;
  std::string metric;
  std::string device;
  std::string factory;     // the FAISS factory string now (a recluster changes nlist)
  int64_t next_label = 0;  // Backend::next_label()
  std::vector<SnapshotName> names;
  std::string labels;          // LabelTable::Encode()
  std::string keys;            // the collections' string ids (empty: none; FORMAT.md)
  std::vector<uint8_t> index;  // Backend::Serialize()
  bool operator==(const StorageSnapshot&) const = default;
};

std::string EncodeSnapshot(const StorageSnapshot& s);
// DataLoss naming `path` and the problem for bytes that are not a whole, undamaged snapshot.
StatusOr<StorageSnapshot> DecodeSnapshot(std::string_view bytes, const std::string& path);

// Writes `s` to `path` so that a crash at any moment leaves either the previous file or the
// whole new one: `path`.tmp, fsync, rename over `path`, fsync of the directory. The index
// bytes are written as they are, not copied.
Status WriteSnapshot(FileSystem& fs, const std::string& path, const StorageSnapshot& s);
StatusOr<StorageSnapshot> ReadSnapshot(FileSystem& fs, const std::string& path);

}  // namespace vecgpu::store
