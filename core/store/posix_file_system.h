#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/store/file_system.h"

namespace vecgpu::store {

// FileSystem over POSIX files: appends with write(2) (retrying EINTR and partial writes),
// Sync is fdatasync(2), SyncDir fsyncs the directory, Lock is flock(2) on a file kept open.
// Errors read "<operation> <path>: <strerror>"; ENOSPC and EDQUOT are ResourceExhausted,
// ENOENT is NotFound, anything else Internal. Stateless and thread-safe; the files it opens
// are not (see WritableFile).
class PosixFileSystem final : public FileSystem {
 public:
  StatusOr<std::unique_ptr<WritableFile>> OpenForAppend(const std::string& path,
                                                        bool truncate) override;
  StatusOr<std::string> ReadFile(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status CreateDirs(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  StatusOr<bool> Exists(const std::string& path) override;
  Status Truncate(const std::string& path, int64_t size) override;
  StatusOr<std::unique_ptr<FileLock>> Lock(const std::string& path) override;
};

}  // namespace vecgpu::store
