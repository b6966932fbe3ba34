#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/store/file_system.h"
#include "core/util/mutex.h"

namespace vecgpu::store {

// A FileSystem in memory that keeps what a crash would leave, for crash and fault tests (in
// the spirit of LevelDB's FaultInjectionTestEnv). Thread-safe (one mutex); the WritableFiles
// and FileLocks it returns must not outlive it.
//
// The model:
// - Paths are '/'-separated strings; repeated and trailing '/' are ignored. A path's parent
//   is the part before its last '/' ("" — the root, which always exists — when there is
//   none).
// - A file has its current bytes and its durable bytes, those of its last Sync (or Truncate,
//   which syncs). An open file follows its file, not its name, across Rename and Remove.
// - A directory entry (a file or directory created, renamed or removed in a directory) is
//   durable once SyncDir of that directory has run after the change. SyncDir makes the
//   directory's durable entries exactly its current ones. The exception is a directory made
//   directly under the root (the test's data directory), which is durable when created.
// - Crash() leaves exactly what was durable: each directory's entries as of its last SyncDir,
//   less those whose parent directory did not itself survive, each file holding its durable
//   bytes. So a file created and synced in a directory never synced vanishes; an unsynced
//   Rename reverts; an unsynced Remove brings the file back with its durable bytes. Open
//   files die (their calls fail with Unavailable("crashed")) and locks are released. (A
//   Rename across directories whose two directories are synced differently can leave the
//   file under both names after a crash, sharing its bytes like a hard link.)
// - Each mutating call — OpenForAppend, Append, Sync, Close, Rename, Remove, CreateDirs,
//   SyncDir, Truncate — is one step, numbered from 1, whether it succeeds or not; calls
//   refused with Unavailable("crashed") are not counted. Reads (ReadFile, ListDir, Exists)
//   and Lock are never counted nor failed by the faults below.
// - Directories cannot be renamed (Unimplemented) or removed.
class MemoryFileSystem final : public FileSystem {
 public:
  MemoryFileSystem() = default;
  MemoryFileSystem(const MemoryFileSystem&) = delete;
  MemoryFileSystem& operator=(const MemoryFileSystem&) = delete;

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

  // Drops everything that is not durable (see the model above).
  void Crash();
  // Ends the crashed state a FailAt(..., crash=true) left, and clears a pending FailAt.
  void Restart();

  // Mutating calls counted so far; the next one is steps() + 1.
  int64_t steps() const;
  // The call numbered `step` fails with `error` (REQUIRES: not OK) and has no effect. With `crash`,
  // the file system crashes (Crash()) just before it, and every later call fails with
  // Unavailable("crashed") until Restart(). One fault at a time: a later FailAt replaces it.
  void FailAt(int64_t step, Status error, bool crash);
  // Caps the total current bytes of all files; an Append that would pass it writes what fits
  // and fails with ResourceExhausted. Negative: no limit (the default).
  void SetSpaceLimit(int64_t bytes);
  // While `error` is not OK, every Sync and SyncDir (and the sync in Truncate) fails with it
  // and makes nothing durable. FailSyncs(Status::Ok()) ends it.
  void FailSyncs(Status error);

 private:
  class MemoryWritableFile;
  class MemoryFileLock;
  struct Node {
    std::string current;
    std::string durable;
  };

  // Counts a mutating call; the error it must fail with, if any (a crash, a fault).
  Status BeginStep() REQUIRES(mu_);
  void CrashLocked() REQUIRES(mu_);
  bool IsDir(const std::string& path) const REQUIRES(mu_);
  bool SurvivesCrash(const std::string& dir) const REQUIRES(mu_);
  // OK when `path`'s parent is an existing directory.
  Status CheckParent(std::string_view op, const std::string& path) const REQUIRES(mu_);
  int64_t TotalBytes() const REQUIRES(mu_);

  // Calls from the files and locks handed out. `epoch` is the crash count when it was made.
  Status FileAppend(const std::shared_ptr<Node>& node, const std::string& path, uint64_t epoch,
                    bool closed, std::string_view data, int64_t& size) EXCLUDES(mu_);
  Status FileSync(const std::shared_ptr<Node>& node, const std::string& path, uint64_t epoch,
                  bool closed) EXCLUDES(mu_);
  Status FileClose(uint64_t epoch) EXCLUDES(mu_);  // closing twice is harmless
  void Unlock(const std::string& path, uint64_t id) EXCLUDES(mu_);

  mutable Mutex mu_;
  // The current tree; files point to their Node, shared with the open files and durable_files_.
  std::map<std::string, std::shared_ptr<Node>> files_ GUARDED_BY(mu_);
  std::set<std::string> dirs_ GUARDED_BY(mu_);
  // The entries a crash would keep (as of each directory's last SyncDir).
  std::map<std::string, std::shared_ptr<Node>> durable_files_ GUARDED_BY(mu_);
  std::set<std::string> durable_dirs_ GUARDED_BY(mu_);
  std::map<std::string, uint64_t> locks_ GUARDED_BY(mu_);  // path -> id of the holder
  uint64_t next_lock_id_ GUARDED_BY(mu_) = 1;
  uint64_t epoch_ GUARDED_BY(mu_) = 0;  // Crash() count: open files of older epochs are dead

  int64_t steps_ GUARDED_BY(mu_) = 0;
  bool crashed_ GUARDED_BY(mu_) = false;
  int64_t fail_step_ GUARDED_BY(mu_) = 0;  // 0: no fault pending
  Status fail_error_ GUARDED_BY(mu_);
  bool fail_crash_ GUARDED_BY(mu_) = false;
  int64_t space_limit_ GUARDED_BY(mu_) = -1;
  Status sync_error_ GUARDED_BY(mu_);
};

}  // namespace vecgpu::store
