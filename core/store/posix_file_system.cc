#include "core/store/posix_file_system.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vecgpu::store {
namespace {

// "<op> <path>: <strerror(err)>", coded by what the caller can do about it.
Status PosixError(std::string_view op, const std::string& path, int err) {
  std::string message = std::string(op) + " " + path + ": " + std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return ResourceExhausted(std::move(message));
    case ENOENT:
      return NotFound(std::move(message));
    default:
      return Internal(std::move(message));
  }
}

std::string Parent(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Closes `fd`, keeping the first error in `status`. close(2) is not retried on EINTR: on
// Linux the descriptor is gone either way.
void CloseFd(int fd, const std::string& path, Status& status) {
  if (::close(fd) != 0 && status.ok()) status = PosixError("close", path, errno);
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, int64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::string_view data) override {
    if (fd_ < 0) return Internal("append " + path_ + ": file is closed");
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return PosixError("append", path_, errno);
      }
      if (n == 0) return PosixError("append", path_, EIO);  // no progress: never loop forever
      size_ += n;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return Status::Ok();
  }

  Status Sync() override {
    if (fd_ < 0) return Internal("sync " + path_ + ": file is closed");
    if (::fdatasync(fd_) != 0) return PosixError("sync", path_, errno);
    return Status::Ok();
  }

  Status Close() override {
    if (fd_ < 0) return Status::Ok();
    Status status;
    CloseFd(fd_, path_, status);
    fd_ = -1;
    return status;
  }

  int64_t size() const override { return size_; }

 private:
  const std::string path_;
  int fd_;
  int64_t size_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // closing the descriptor releases the flock

 private:
  const int fd_;
};

}  // namespace

StatusOr<std::unique_ptr<WritableFile>> PosixFileSystem::OpenForAppend(const std::string& path,
                                                                       bool truncate) {
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0);
  int fd;
  do {
    fd = ::open(path.c_str(), flags, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PosixError("open", path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    Status status = PosixError("stat", path, errno);
    ::close(fd);
    return status;
  }
  return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd, st.st_size));
}

StatusOr<std::string> PosixFileSystem::ReadFile(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PosixError("open", path, errno);
  std::string data;
  struct stat st;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) data.reserve(static_cast<size_t>(st.st_size));
  Status status;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      status = PosixError("read", path, errno);
      break;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  CloseFd(fd, path, status);
  if (!status.ok()) return status;
  return data;
}

Status PosixFileSystem::Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    return PosixError("rename", from + " to " + to, errno);
  return Status::Ok();
}

Status PosixFileSystem::Remove(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return PosixError("remove", path, errno);
  return Status::Ok();
}

Status PosixFileSystem::CreateDirs(const std::string& path) {
  // mkdir each prefix in turn ("a", "a/b", "a/b/c"); one that exists is fine.
  for (size_t end = 0; end != std::string::npos;) {
    end = path.find('/', end + 1);
    std::string prefix = path.substr(0, end);
    if (prefix.empty()) continue;
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return PosixError("mkdir", prefix, errno);
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return PosixError("mkdir", path, errno);
  if (!S_ISDIR(st.st_mode)) return PosixError("mkdir", path, ENOTDIR);
  return Status::Ok();
}

Status PosixFileSystem::SyncDir(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PosixError("open dir", path, errno);
  Status status;
  if (::fsync(fd) != 0) status = PosixError("sync dir", path, errno);
  CloseFd(fd, path, status);
  return status;
}

StatusOr<std::vector<std::string>> PosixFileSystem::ListDir(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return PosixError("list", path, errno);
  std::vector<std::string> names;
  Status status;
  for (;;) {
    errno = 0;
    struct dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      if (errno != 0) status = PosixError("list", path, errno);
      break;
    }
    std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(dir);
  if (!status.ok()) return status;
  std::sort(names.begin(), names.end());
  return names;
}

StatusOr<bool> PosixFileSystem::Exists(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT || errno == ENOTDIR) return false;
  return PosixError("stat", path, errno);
}

Status PosixFileSystem::Truncate(const std::string& path, int64_t size) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PosixError("open", path, errno);
  Status status;
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    status = PosixError("truncate", path, errno);
  } else if (::fsync(fd) != 0) {
    status = PosixError("sync", path, errno);
  }
  CloseFd(fd, path, status);
  return status;
}

StatusOr<std::unique_ptr<FileLock>> PosixFileSystem::Lock(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return PosixError("open", path, errno);
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return Unavailable("data directory " + Parent(path) + " is in use by another process (lock " +
                         path + ")");
    }
    return PosixError("lock", path, err);
  }
  return std::unique_ptr<FileLock>(new PosixFileLock(fd));
}

}  // namespace vecgpu::store
