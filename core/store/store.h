#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "core/engine.h"
#include "core/mutation_log.h"
#include "core/store/file_system.h"
#include "core/store/manifest.h"
#include "core/store/wal.h"

namespace vecgpu::store {

struct StoreOptions {
  std::string dir;  // --data-dir
  Durability durability = Durability::kSync;
  int sync_interval_ms = 100;  // kAsync: the window a crash can lose
  // On damage (inside the log, or a snapshot that cannot be read): serve the last good state,
  // setting the damaged files aside (<file>.damaged), instead of refusing to start.
  bool recover_from_last_good = false;
  // Background snapshots: once the log has grown by this many bytes since the last one, and
  // by as many as the snapshots hold, so that rewriting a large index costs no more than the
  // log it replaces (0: never by size); and at least this often while anything changed (0:
  // never by time).
  int64_t snapshot_log_bytes = int64_t{256} << 20;
  int snapshot_interval_s = 600;
  int64_t segment_bytes = int64_t{64} << 20;  // WalOptions::segment_bytes
  // Where the background snapshotter reports (a line each); null: nowhere.
  std::function<void(const std::string&)> log;
};

// What recovery found and did.
struct RecoveryReport {
  int64_t snapshots = 0;       // storages loaded from snapshots
  int64_t snapshot_bytes = 0;  // their files' size
  double snapshot_seconds = 0;
  int64_t records = 0;  // log records replayed
  int64_t refused = 0;  // of them, refused again (as they were when first made)
  // Records not applied: the snapshots already reflect them, their storage was dropped later,
  // or they failed when made (a kFailed record says so), and those kFailed records.
  int64_t skipped = 0;
  uint64_t last_seq = 0;
  std::string torn_segment;  // a torn last record was cut off here
  std::string damage;        // with recover_from_last_good: the damage that was set aside
  double seconds = 0;
};

using ::vecgpu::SnapshotReport;

// Counters for /metrics.
struct StoreStats {
  int64_t snapshots = 0;
  int64_t snapshot_failures = 0;
  double last_snapshot_seconds = 0;
  double max_pause_seconds = 0;
  int64_t log_bytes_since_snapshot = 0;
  uint64_t last_seq = 0;
  uint64_t durable_seq = 0;
  int64_t syncs = 0;
};

// The data directory (core/store/FORMAT.md): DIR/LOCK (one server at a time), the write-ahead
// log DIR/wal, one snapshot file per index storage under DIR/tenants, and DIR/MANIFEST naming
// the current snapshots.
//
// Open loads the manifest's snapshots into the engine and replays the log records they do not
// reflect; from then on the Store is the engine's MutationLog, so a write is acknowledged only
// once its record is durable under the configured durability. Snapshot() writes a point-in-time
// snapshot of every storage changed since the last one (searches go on; each storage's writes
// wait only while its index is copied), switches the manifest, and only then removes the
// snapshots and log segments it replaces. Thread-safe.
class Store final : public MutationLog {
 public:
  // DataLoss naming the file for a damaged log or snapshot (nothing is served from it);
  // Unavailable when another process holds the directory.
  static StatusOr<std::unique_ptr<Store>> Open(FileSystem& fs, const StoreOptions& options,
                                               Engine& engine, RecoveryReport* report);
  ~Store() override;

  StatusOr<Ticket> Append(const WalRecord& record) override;
  Status WaitDurable(const Ticket& ticket) override;
  uint64_t LastSeq() const override { return wal_->last_seq(); }

  // Makes every logged record durable (shutdown).
  Status Sync() { return wal_->Sync(); }
  // Takes a snapshot now; one at a time (a second caller waits for the first). `tenant`
  // non-empty: only that tenant's storages are captured; the others keep their last image.
  //
  // The catalog is held only while the storages are listed (Engine::Freeze); files are written
  // holding no lock. A storage being written (training, a long add) is not waited for: it
  // keeps its last image and the log after it, as other tenants' storages do, while no
  // collection was dropped since that image (else the snapshot is abandoned: Unavailable, and
  // the next one tries again). Each storage's writes wait only while its own index is copied.
  StatusOr<SnapshotReport> Snapshot(const std::string& tenant = "") EXCLUDES(snapshot_mu_);
  // Starts the background snapshotter (options' size and time triggers); call once the
  // engine logs here. Stopped by the destructor.
  void StartBackground();
  StoreStats Stats() const EXCLUDES(stats_mu_);

 private:
  struct Entry {
    ManifestEntry manifest;
    uint64_t version = 0;  // the storage's version the file holds
    int64_t bytes = 0;     // its index and tables
  };
  Store(FileSystem& fs, StoreOptions options, Engine& engine, std::unique_ptr<FileLock> lock)
      : fs_(fs), options_(std::move(options)), engine_(engine), lock_(std::move(lock)) {}
  // Loads the manifest's snapshots and replays the log after them.
  Status Recover(RecoveryReport* r) EXCLUDES(snapshot_mu_);
  // Removes snapshot files the manifest does not name (left by a crash mid-snapshot).
  void RemoveStrays() REQUIRES(snapshot_mu_);
  // Creates `dir` (whose parent exists) and makes its entry durable.
  Status MakeDurableDir(const std::string& dir);
  void BackgroundLoop() EXCLUDES(bg_mu_);

  FileSystem& fs_;
  const StoreOptions options_;
  Engine& engine_;
  std::unique_ptr<FileLock> lock_;
  std::unique_ptr<Wal> wal_;

  Mutex snapshot_mu_;
  std::map<uint64_t, Entry> entries_ GUARDED_BY(snapshot_mu_);  // by storage id
  uint64_t cut_ GUARDED_BY(snapshot_mu_) = 0;
  // The last format-1 record replayed (0: none). Such records name no storage: they replay by
  // collection name, so a storage kept at an image older than one of them needs no drop since.
  std::atomic<uint64_t> last_legacy_seq_{0};  // written by Recover only, before serving
  int64_t bytes_at_snapshot_ GUARDED_BY(snapshot_mu_) = 0;  // wal_->appended_bytes() then
  int64_t snapshot_bytes_ GUARDED_BY(snapshot_mu_) = 0;     // what the manifest's files hold

  mutable Mutex stats_mu_;
  StoreStats stats_ GUARDED_BY(stats_mu_);

  Mutex bg_mu_;
  std::condition_variable bg_cv_;
  bool stopping_ GUARDED_BY(bg_mu_) = false;
  std::thread background_;
};

}  // namespace vecgpu::store
