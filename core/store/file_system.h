#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/util/status.h"

namespace vecgpu::store {

// A file opened for appending. Not thread-safe.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends all of `data`, or fails (a short write is an error: the bytes that did reach the
  // file are reported by size()).
  virtual Status Append(std::string_view data) = 0;
  // Makes every appended byte durable (fdatasync).
  virtual Status Sync() = 0;
  virtual Status Close() = 0;
  // Bytes in the file, as far as this handle knows.
  virtual int64_t size() const = 0;
};

// Held while a data directory is in use; released when destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

// Every file operation the Store makes, so that crash and fault tests run without real
// crashes (core/store/memory_file_system.h) and production uses POSIX files
// (core/store/posix_file_system.h). Errors name the path and the cause; a full disk is
// ResourceExhausted, other I/O errors Internal. Thread-safe.
class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Opens `path` for appending, creating it if missing; `truncate` empties it first.
  virtual StatusOr<std::unique_ptr<WritableFile>> OpenForAppend(const std::string& path,
                                                                bool truncate) = 0;
  virtual StatusOr<std::string> ReadFile(const std::string& path) = 0;
  // Atomically replaces `to` with `from` (rename(2)); durable once the directory is synced.
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Remove(const std::string& path) = 0;
  // Creates `path` (and missing parents); OK when it exists.
  virtual Status CreateDirs(const std::string& path) = 0;
  // Makes the directory's entries (created, renamed, removed files) durable.
  virtual Status SyncDir(const std::string& path) = 0;
  // Names in the directory (no "." or ".."), sorted.
  virtual StatusOr<std::vector<std::string>> ListDir(const std::string& path) = 0;
  virtual StatusOr<bool> Exists(const std::string& path) = 0;
  // Cuts `path` to `size` bytes (a torn log tail) and syncs it.
  virtual Status Truncate(const std::string& path, int64_t size) = 0;
  // Takes an exclusive lock on `path` (created if missing), without waiting: Unavailable
  // when another process (another vecgpu on the same data directory) holds it.
  virtual StatusOr<std::unique_ptr<FileLock>> Lock(const std::string& path) = 0;
};

// Writes `pieces`, in order, as the file `path` so that a crash at any moment leaves either the
// previous file or the whole new one: `path`.tmp, fsync, rename over `path`, fsync of the
// directory.
Status WriteFileAtomically(FileSystem& fs, const std::string& path,
                           std::initializer_list<std::string_view> pieces);

}  // namespace vecgpu::store
