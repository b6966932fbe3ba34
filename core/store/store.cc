#include "core/store/store.h"

#include <chrono>

namespace vecgpu::store {

StatusOr<std::unique_ptr<Store>> Store::Open(FileSystem& fs, const StoreOptions& options,
                                             Engine& engine, RecoveryReport* report) {
  const auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(fs.CreateDirs(options.dir));
  ASSIGN_OR_RETURN(std::unique_ptr<FileLock> lock, fs.Lock(options.dir + "/LOCK"));
  const std::string wal_dir = options.dir + "/wal";
  RecoveryReport r;
  WalReadResult read;
  StatusOr<WalReadResult> full = ReadWal(
      fs, wal_dir, 1,
      [&](uint64_t, std::string_view payload) -> Status {
        ASSIGN_OR_RETURN(WalRecord record, DecodeRecord(payload));
        ++r.records;
        if (!engine.Apply(record).ok()) ++r.refused;
        return Status::Ok();
      },
      &read);
  if (!full.ok()) {
    // Damage inside the log (not a record that fails to decode: its frame was intact).
    if (!options.recover_from_last_good || full.status().code() != StatusCode::kDataLoss ||
        read.damaged_segment.empty()) {
      return full.status();
    }
    RETURN_IF_ERROR(SetAsideDamage(fs, wal_dir, read));
    r.damage = full.status().message();
  }
  r.last_seq = read.last_seq;
  r.torn_segment = read.torn_segment;
  WalOptions wo;
  wo.durability = options.durability;
  wo.sync_interval_ms = options.sync_interval_ms;
  ASSIGN_OR_RETURN(std::unique_ptr<Wal> wal, Wal::Open(fs, wal_dir, read.last_seq + 1, wo));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (report) *report = r;
  return std::unique_ptr<Store>(new Store(std::move(lock), std::move(wal)));
}

Status Store::Log(const WalRecord& record) {
  ASSIGN_OR_RETURN(Wal::Position pos, wal_->Append(EncodeRecord(record)));
  return wal_->WaitDurable(pos);
}

}  // namespace vecgpu::store
