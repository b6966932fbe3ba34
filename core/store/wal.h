#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "core/store/file_system.h"
#include "core/util/mutex.h"
#include "core/util/status.h"

namespace vecgpu::store {

// When a write counts as durable.
enum class Durability {
  kSync,   // after an fsync that covers it (concurrent writers share one: group commit)
  kAsync,  // at once; a background fsync every sync_interval_ms bounds what a crash loses
};

struct WalOptions {
  Durability durability = Durability::kSync;
  int sync_interval_ms = 100;        // kAsync
  int64_t segment_bytes = 64 << 20;  // a new segment file past this size
};

// The write-ahead log: segment files <dir>/<first sequence number, 20 digits>.log of framed,
// CRC32C-checked records with consecutive sequence numbers (core/store/FORMAT.md).
//
// Append writes a record (no fsync) and gives it the next sequence number, in call order;
// WaitDurable(seq) returns once an fsync covers it. Callers append under their collection's
// order and wait outside any lock, so writers on every collection share each fsync.
//
// After a failed write or fsync the log refuses every append (naming the first error) and
// every wait for a record not yet durable; the next append first tries to heal it: cut the
// segment back to what was last made durable and sync it. Thread-safe.
class Wal {
 public:
  // Starts a new segment whose first record gets `next_seq` (1 for a new log), after the
  // segments already in `dir` (read them first with ReadWal).
  static StatusOr<std::unique_ptr<Wal>> Open(FileSystem& fs, std::string dir, uint64_t next_seq,
                                             WalOptions options);
  ~Wal();

  // Where Append put a record: its sequence number, and the log's generation (a heal after a
  // failure discards what was not durable and starts a new generation).
  struct Position {
    uint64_t seq = 0;
    uint64_t generation = 0;
  };
  // Appends one record.
  StatusOr<Position> Append(std::string_view payload) EXCLUDES(mu_);
  // Until the record is durable (kSync); at once under kAsync. An error when the log failed
  // before the record was made durable (it is then never acknowledged, and cut off).
  Status WaitDurable(Position pos) EXCLUDES(mu_);
  // Makes everything appended durable now (shutdown, tests).
  Status Sync() EXCLUDES(mu_);

  uint64_t last_seq() const EXCLUDES(mu_);       // the last record appended
  uint64_t durable_seq() const EXCLUDES(mu_);    // the last record known durable
  int64_t syncs() const EXCLUDES(mu_);           // fsyncs done (group commit: fewer than waits)
  int64_t appended_bytes() const EXCLUDES(mu_);  // bytes appended since Open
  // Changes each time a heal cuts records that were not durable (their sequence numbers are
  // handed out again).
  uint64_t generation() const EXCLUDES(mu_);
  // Removes the segments whose records all precede `seq` (they are in a durable snapshot).
  Status DropBefore(uint64_t seq) EXCLUDES(mu_);

 private:
  Wal(FileSystem& fs, std::string dir, WalOptions options);
  Status StartSegment(uint64_t first_seq) REQUIRES(mu_);
  // Cuts the segment back to its durable size after a failure; clears the failure on success.
  Status Heal() REQUIRES(mu_);
  void SyncLoop() EXCLUDES(mu_);

  FileSystem& fs_;
  const std::string dir_;
  const WalOptions options_;
  mutable Mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<WritableFile> file_ GUARDED_BY(mu_);
  std::string segment_ GUARDED_BY(mu_);  // path of the open segment
  uint64_t segment_first_ GUARDED_BY(mu_) = 0;
  int64_t durable_size_ GUARDED_BY(mu_) = 0;  // bytes of the open segment known durable
  uint64_t next_seq_ GUARDED_BY(mu_) = 1;
  uint64_t durable_seq_ GUARDED_BY(mu_) = 0;
  uint64_t generation_ GUARDED_BY(mu_) = 0;
  bool syncing_ GUARDED_BY(mu_) = false;
  bool stopping_ GUARDED_BY(mu_) = false;
  int64_t syncs_ GUARDED_BY(mu_) = 0;
  int64_t appended_bytes_ GUARDED_BY(mu_) = 0;
  Status failed_ GUARDED_BY(mu_);
  std::thread sync_thread_;  // kAsync
};

// What ReadWal found.
struct WalReadResult {
  uint64_t first_seq = 0;    // the first sequence number the log holds (0: no segment)
  uint64_t last_seq = 0;     // the last good record (0: none)
  int64_t records = 0;       // records passed to the callback
  std::string torn_segment;  // a segment whose torn last record was cut off, if any
  int64_t torn_bytes = 0;    // bytes cut off
  // When the read stopped at damage (DataLoss): where, so that a caller serving from the last
  // good state can set the rest aside (SetAsideDamage).
  std::string damaged_segment;
  int64_t damaged_offset = 0;
};

// Reads the log in `dir` in order and calls `fn(seq, payload)` for every record with
// seq >= from_seq. A torn last record (a crash mid-append: a frame past the end of the last
// segment, or a bad CRC at its very end) is cut off (Truncate) and reported; any other damage
// (a bad header or CRC inside the log, a gap in the sequence numbers) is DataLoss naming the
// segment and offset. An error from fn stops the read and is returned.
// `so_far`, when given, is filled even when the read fails: the records read before the
// damage (they were passed to fn) and where the damage is.
StatusOr<WalReadResult> ReadWal(FileSystem& fs, const std::string& dir, uint64_t from_seq,
                                const std::function<Status(uint64_t, std::string_view)>& fn,
                                WalReadResult* so_far = nullptr);

// After ReadWal stopped at damage: keeps the log up to the last good record and sets the rest
// aside for inspection (the damaged segment is copied to <segment>.damaged and cut at the
// damage; every later segment is renamed to <segment>.damaged), so the log reads cleanly.
Status SetAsideDamage(FileSystem& fs, const std::string& dir, const WalReadResult& so_far);

}  // namespace vecgpu::store
