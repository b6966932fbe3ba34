#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/store/file_system.h"
#include "core/util/status.h"

namespace vecgpu::store {

// An "IDMap:{base}" collection over a snapshotted storage.
struct SnapshotView {
  std::string name;
  std::string index_type;  // "IDMap:{base}" / "IDMap2:{base}"
  uint32_t view = 0;       // its LabelTable view
  bool operator==(const SnapshotView&) const = default;
};

// One index storage at one point of the log: the collection that owns it (as it was created),
// the IDMap views over it, its label table and its FAISS index (core/store/FORMAT.md).
struct StorageSnapshot {
  uint64_t seq = 0;  // the last log record it reflects
  std::string tenant;
  std::string name;
  std::string index_type;
  int32_t dim = 0;
  std::string metric;
  std::string device;
  int64_t next_label = 0;  // Backend::next_label()
  std::vector<SnapshotView> views;
  std::string labels;  // LabelTable::Encode()
  std::string index;   // Backend::Serialize()
  bool operator==(const StorageSnapshot&) const = default;
};

std::string EncodeSnapshot(const StorageSnapshot& s);
// DataLoss naming `path` and the problem for bytes that are not a whole, undamaged snapshot.
StatusOr<StorageSnapshot> DecodeSnapshot(std::string_view bytes, const std::string& path);

// Writes `s` to `path` so that a crash at any moment leaves either the previous file or the
// whole new one: `path`.tmp, fsync, rename over `path`, fsync of the directory.
Status WriteSnapshot(FileSystem& fs, const std::string& path, const StorageSnapshot& s);
StatusOr<StorageSnapshot> ReadSnapshot(FileSystem& fs, const std::string& path);

}  // namespace vecgpu::store
