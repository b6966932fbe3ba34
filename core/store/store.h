#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/engine.h"
#include "core/mutation_log.h"
#include "core/store/file_system.h"
#include "core/store/wal.h"

namespace vecgpu::store {

struct StoreOptions {
  std::string dir;  // --data-dir
  Durability durability = Durability::kSync;
  int sync_interval_ms = 100;  // kAsync: the window a crash can lose
  // On damage inside the log: serve the state up to the last good record, setting the rest
  // aside (<segment>.damaged), instead of refusing to start.
  bool recover_from_last_good = false;
};

// What recovery found and did.
struct RecoveryReport {
  int64_t records = 0;  // log records replayed
  int64_t refused = 0;  // of them, refused again (as they were when first made)
  uint64_t last_seq = 0;
  std::string torn_segment;  // a torn last record was cut off here
  std::string damage;        // with recover_from_last_good: the damage that was set aside
  double seconds = 0;
};

// The data directory: DIR/LOCK (one server at a time) and the write-ahead log DIR/wal
// (core/store/FORMAT.md). Open replays the log into the engine, then records every mutation
// the engine makes from then on (as its MutationLog): a write is acknowledged only once its
// record is durable under the configured durability. Snapshots are not written yet, so the
// log holds every mutation since the directory was made and recovery replays all of it.
// Thread-safe.
class Store final : public MutationLog {
 public:
  // DataLoss naming the file for a damaged log (nothing is served from it); Unavailable when
  // another process holds the directory.
  static StatusOr<std::unique_ptr<Store>> Open(FileSystem& fs, const StoreOptions& options,
                                               Engine& engine, RecoveryReport* report);

  Status Log(const WalRecord& record) override;
  // Makes every logged record durable (shutdown).
  Status Sync() { return wal_->Sync(); }

 private:
  Store(std::unique_ptr<FileLock> lock, std::unique_ptr<Wal> wal)
      : lock_(std::move(lock)), wal_(std::move(wal)) {}
  std::unique_ptr<FileLock> lock_;
  std::unique_ptr<Wal> wal_;
};

}  // namespace vecgpu::store
