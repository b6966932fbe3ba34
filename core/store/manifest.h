#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/store/file_system.h"
#include "core/util/status.h"

namespace vecgpu::store {

// One storage's current snapshot.
struct ManifestEntry {
  uint64_t storage_id = 0;
  // It reflects every log record about the storage's collections up to here (at least the
  // seq inside the file: a storage not written since keeps its file and gets a later seq).
  uint64_t seq = 0;
  std::string file;  // relative to the data directory
  bool operator==(const ManifestEntry&) const = default;
};

// DIR/MANIFEST: the snapshots that, with the log after `cut`, make up the data directory's
// state (core/store/FORMAT.md). Every create and drop up to `cut` is reflected in the entries:
// a log record up to `cut` about a collection that has no entry belongs to a dropped one.
struct Manifest {
  uint64_t cut = 0;
  std::vector<ManifestEntry> entries;
  bool operator==(const Manifest&) const = default;
};

std::string EncodeManifest(const Manifest& m);
// DataLoss naming `path` and the problem for bytes that are not a whole, undamaged manifest.
StatusOr<Manifest> DecodeManifest(std::string_view bytes, const std::string& path);
// Switches DIR/MANIFEST to `m` atomically (temp, fsync, rename, fsync of DIR).
Status WriteManifest(FileSystem& fs, const std::string& dir, const Manifest& m);
// nullopt when DIR has no manifest (no snapshot was ever completed).
StatusOr<std::optional<Manifest>> ReadManifest(FileSystem& fs, const std::string& dir);

// A file name for any tenant or collection name: ASCII letters, digits, '-' and '_' stay,
// every other byte becomes %XX, so no name can escape its directory ("..", "a/b") or collide
// with another ("a.b" and "a%2Eb" differ). "" becomes "~". A name whose encoding passes 96
// bytes keeps its first 80 encoded bytes and ends in "~" and 16 hex digits of a 64-bit hash
// of the whole name.
std::string EncodeName(std::string_view name);

}  // namespace vecgpu::store
