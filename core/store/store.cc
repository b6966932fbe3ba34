#include "core/store/store.h"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <set>
#include <utility>

#include "core/store/snapshot.h"

namespace vecgpu::store {
namespace {

using Seconds = std::chrono::duration<double>;
using SteadyClock = std::chrono::steady_clock;

constexpr char kTenants[] = "tenants";

std::string Digits(uint64_t v) {
  char s[24];
  std::snprintf(s, sizeof(s), "%020" PRIu64, v);
  return s;
}

// tenants/<tenant>/<name>@<storage id>.<seq>.snap, relative to the data directory.
std::string SnapshotFile(const StorageSnapshot& s) {
  return std::string(kTenants) + "/" + EncodeName(s.tenant) + "/" + EncodeName(s.name) + "@" +
         Digits(s.storage_id) + "." + Digits(s.seq) + ".snap";
}

}  // namespace

Status Store::MakeDurableDir(const std::string& dir) {
  ASSIGN_OR_RETURN(bool exists, fs_.Exists(dir));
  if (exists) return Status::Ok();
  RETURN_IF_ERROR(fs_.CreateDirs(dir));
  return fs_.SyncDir(dir.substr(0, dir.find_last_of('/')));  // its entry in its parent
}

StatusOr<std::unique_ptr<Store>> Store::Open(FileSystem& fs, const StoreOptions& options,
                                             Engine& engine, RecoveryReport* report) {
  RETURN_IF_ERROR(fs.CreateDirs(options.dir));
  ASSIGN_OR_RETURN(std::unique_ptr<FileLock> lock, fs.Lock(options.dir + "/LOCK"));
  std::unique_ptr<Store> store(new Store(fs, options, engine, std::move(lock)));
  RecoveryReport r;
  RETURN_IF_ERROR(store->Recover(&r));
  if (report) *report = r;
  return store;
}

Status Store::Recover(RecoveryReport* r) {
  const auto start = SteadyClock::now();
  const std::string& dir = options_.dir;
  MutexLock lock(snapshot_mu_);
  ASSIGN_OR_RETURN(std::optional<Manifest> manifest, ReadManifest(fs_, dir));
  // (tenant, collection) -> the log position its storage's snapshot reflects.
  std::map<std::pair<std::string, std::string>, uint64_t> covered;
  uint64_t next_seq = 1;
  bool set_aside = false;  // a snapshot was left out (recover_from_last_good)
  if (manifest) {
    cut_ = manifest->cut;
    next_seq = manifest->cut + 1;
    for (const ManifestEntry& e : manifest->entries) {
      const std::string path = dir + "/" + e.file;
      StatusOr<StorageSnapshot> snap = DataLoss("");
      ASSIGN_OR_RETURN(bool exists, fs_.Exists(path));
      if (!exists) {
        snap =
            DataLoss("manifest " + dir + "/MANIFEST names snapshot " + path + ", which is missing");
      } else {
        snap = ReadSnapshot(fs_, path);
      }
      StatusOr<uint64_t> version = snap.status();
      if (snap.ok()) version = engine_.Restore(*snap);
      if (!version.ok()) {
        Status st = version.status().code() == StatusCode::kDataLoss
                        ? version.status()
                        : DataLoss(path + ": " + version.status().message());
        if (!options_.recover_from_last_good) return st;
        // Its collections are left out; the log records about them after the snapshot
        // replay against nothing and are refused.
        if (exists) RETURN_IF_ERROR(fs_.Rename(path, path + ".damaged"));
        r->damage += (r->damage.empty() ? "" : "; ") + st.message();
        set_aside = true;
        continue;
      }
      for (const SnapshotName& n : snap->names) covered[{snap->tenant, n.name}] = e.seq;
      const int64_t bytes = static_cast<int64_t>(snap->index.size() + snap->labels.size());
      entries_[e.storage_id] = {e, *version, bytes};
      snapshot_bytes_ += bytes;
      next_seq = std::max(next_seq, e.seq + 1);
      ++r->snapshots;
      r->snapshot_bytes += static_cast<int64_t>(snap->index.size() + snap->labels.size());
    }
  }
  r->snapshot_seconds = Seconds(SteadyClock::now() - start).count();

  const std::string wal_dir = dir + "/wal";
  // First the records that failed when made (a kFailed record follows each): they changed
  // nothing then, so replay skips them even should they succeed now. Damage is met again and
  // handled below.
  std::set<std::pair<uint64_t, uint64_t>> failed;  // (storage id, storage seq)
  const char failed_type =
      static_cast<char>(kStorageHeaderBit | static_cast<uint8_t>(RecordType::kFailed));
  (void)ReadWal(fs_, wal_dir, cut_ + 1, [&](uint64_t, std::string_view payload) -> Status {
    if (payload.empty() || payload[0] != failed_type) return Status::Ok();
    auto f = DecodeRecord(payload);
    if (f.ok()) failed.insert({f->storage_id, f->storage_seq});
    return Status::Ok();
  });
  WalReadResult read;
  int64_t replayed_bytes = 0;
  StatusOr<WalReadResult> full = ReadWal(
      fs_, wal_dir, cut_ + 1,
      [&](uint64_t seq, std::string_view payload) -> Status {
        ASSIGN_OR_RETURN(WalRecord record, DecodeRecord(payload));
        replayed_bytes += static_cast<int64_t>(payload.size());
        if (record.type == RecordType::kFailed) {
          ++r->skipped;
          return Status::Ok();
        }
        if (record.has_storage) {
          // Format 2: by storage and its own order, whatever the names have become since.
          const uint64_t storage = record.storage_id ? record.storage_id : seq;
          ASSIGN_OR_RETURN(
              Engine::Replayed done,
              engine_.Replay(record, seq, failed.count({storage, record.storage_seq}) > 0));
          if (done == Engine::Replayed::kSkipped) {
            ++r->skipped;
          } else {
            ++r->records;
            if (done == Engine::Replayed::kRefused) ++r->refused;
          }
          return Status::Ok();
        }
        last_legacy_seq_.store(seq, std::memory_order_relaxed);
        auto it = covered.find({record.tenant, record.collection});
        if (it != covered.end() && seq <= it->second) {
          ++r->skipped;
          return Status::Ok();
        }
        ++r->records;
        if (!engine_.Apply(record, seq).ok()) ++r->refused;
        return Status::Ok();
      },
      &read);
  if (!full.ok()) {
    // Damage inside the log (not a record that fails to decode: its frame was intact).
    if (!options_.recover_from_last_good || full.status().code() != StatusCode::kDataLoss ||
        read.damaged_segment.empty()) {
      return full.status();
    }
    RETURN_IF_ERROR(SetAsideDamage(fs_, wal_dir, read));
    r->damage += (r->damage.empty() ? "" : "; ") + full.status().message();
  }
  if (read.first_seq > cut_ + 1) {
    return DataLoss("write-ahead log " + wal_dir + " starts at record " +
                    std::to_string(read.first_seq) +
                    ", but the manifest needs every record after " + std::to_string(cut_) +
                    ": segments are missing");
  }
  r->last_seq = std::max(read.last_seq, next_seq - 1);
  r->torn_segment = read.torn_segment;
  WalOptions wo;
  wo.durability = options_.durability;
  wo.sync_interval_ms = options_.sync_interval_ms;
  wo.segment_bytes = options_.segment_bytes;
  ASSIGN_OR_RETURN(wal_, Wal::Open(fs_, wal_dir, r->last_seq + 1, wo));
  bytes_at_snapshot_ = -replayed_bytes;  // what recovery replayed counts toward the next one
  if (set_aside) {
    // The manifest must stop naming what was set aside, or the next start would be refused
    // for a missing file.
    Manifest kept{cut_, {}};
    for (const auto& [id, e] : entries_) kept.entries.push_back(e.manifest);
    RETURN_IF_ERROR(WriteManifest(fs_, dir, kept));
  }
  RemoveStrays();
  r->seconds = Seconds(SteadyClock::now() - start).count();
  return Status::Ok();
}

void Store::RemoveStrays() {
  std::set<std::string> named;
  for (const auto& [id, e] : entries_) named.insert(options_.dir + "/" + e.manifest.file);
  const std::string root = options_.dir + "/" + kTenants;
  auto tenants = fs_.ListDir(root);
  if (!tenants.ok()) return;  // none yet
  for (const std::string& t : *tenants) {
    auto files = fs_.ListDir(root + "/" + t);
    if (!files.ok()) continue;
    for (const std::string& f : *files) {
      const std::string path = root + "/" + t + "/" + f;
      const bool snap = f.ends_with(".snap") || f.ends_with(".snap.tmp");
      if (snap && !named.count(path)) (void)fs_.Remove(path);  // best effort
    }
  }
}

Store::~Store() {
  {
    MutexLock lock(bg_mu_);
    stopping_ = true;
  }
  bg_cv_.notify_all();
  if (background_.joinable()) background_.join();
}

StatusOr<MutationLog::Ticket> Store::Append(const WalRecord& record) {
  ASSIGN_OR_RETURN(Wal::Position pos, wal_->Append(EncodeRecord(record)));
  return Ticket{pos.seq, pos.generation};
}

Status Store::WaitDurable(const Ticket& t) { return wal_->WaitDurable({t.seq, t.generation}); }

StatusOr<SnapshotReport> Store::Snapshot(const std::string& tenant) {
  const auto start = SteadyClock::now();
  MutexLock lock(snapshot_mu_);
  SnapshotReport rep;
  const int64_t appended = wal_->appended_bytes();
  Manifest next;
  // A log failure healed during the snapshot would hand out again sequence numbers the
  // captures may cover: such a snapshot is abandoned (the next one starts after the heal).
  const uint64_t generation = wal_->generation();
  const std::map<uint64_t, Entry> previous = entries_;
  // Held storages are exactly the log up to the freeze, their names fixed until captured:
  // their images agree. Captured smallest first, each released once copied, so a small
  // index's writes wait only for its own copy; files are written after every release.
  struct Held {
    std::shared_ptr<IndexStorage> storage;
    bool held = true;
  };
  std::vector<Held> held;
  // Whatever happens below, no write order stays taken.
  struct ReleaseAll {
    std::vector<Held>& held;
    void operator()() {
      for (Held& h : held) {
        if (h.held) Engine::ReleaseHeld(*h.storage);
      }
      held.clear();
    }
    ~ReleaseAll() { (*this)(); }
  } release_all{held};
  Engine::Frozen frozen;
  std::map<uint64_t, Entry> entries;
  // A storage being written gets a quarter of a second; then it keeps its last image (or none:
  // its create and every write after it stay in the log) while that is safe: records up to an
  // image are skipped at replay by collection name, so no collection may have been dropped
  // since (its name could then belong to another image, or to none while its records are in
  // one).
  auto keep_image = [&](const IndexStorage& s) -> bool {
    const uint64_t id = s.origin().id;
    auto prev = previous.find(id);
    const uint64_t image_seq = prev != previous.end() ? prev->second.manifest.seq : id - 1;
    // Its image must name what it names now: a name dropped since could belong to another
    // image by the next start.
    if (prev != previous.end() && s.names_seq() > image_seq) return false;
    // Format-1 records after the image replay by collection name: then no collection may have
    // been dropped since (its name could belong to another image, or to none while its
    // records are in one). Format-2 records name their storage.
    if (frozen.last_drop_seq > image_seq && last_legacy_seq_.load(std::memory_order_relaxed) > image_seq)
      return false;
    if (prev != previous.end()) entries[id] = prev->second;
    next.cut = std::min(next.cut, image_seq);
    return true;
  };
  for (int attempt = 1;; ++attempt) {
    release_all();
    entries.clear();
    rep.busy = 0;
    frozen = engine_.Freeze();
    next.cut = frozen.last_seq;
    for (auto& s : frozen.held) held.push_back({std::move(s), true});
    std::string refused;  // a busy storage that cannot keep its image
    for (auto& s : frozen.busy) {
      if (Engine::TakeBusy(*s)) {
        if (s->names_seq() <= frozen.last_seq) {
          held.push_back({std::move(s), true});
          continue;
        }
        Engine::ReleaseHeld(*s);  // a collection moved on it meanwhile: as if still busy
      }
      if (!keep_image(*s)) {
        refused = "index '" + s->origin().name + "' of tenant '" + s->origin().tenant + "'";
        break;
      }
      ++rep.busy;
    }
    if (refused.empty()) break;
    if (attempt == 5) {
      return Unavailable("snapshot abandoned: " + refused +
                         " is being written and its collections changed since its last "
                         "snapshot; the next snapshot will try again");
    }
  }
  std::stable_sort(held.begin(), held.end(), [](const Held& a, const Held& b) {
    return a.storage->vectors() < b.storage->vectors();
  });
  std::vector<Engine::StorageImage> images;
  for (Held& h : held) {
    IndexStorage& storage = *h.storage;
    const uint64_t id = storage.origin().id;
    if (!tenant.empty() && storage.origin().tenant != tenant) {
      // Another tenant's: kept as it was when that is safe (as for busy ones), else captured.
      if (keep_image(storage)) {
        h.held = false;
        Engine::ReleaseHeld(storage);
        ++rep.out_of_scope;
        continue;
      }
    }
    auto prev = previous.find(id);
    std::optional<uint64_t> since;
    if (prev != previous.end()) since = prev->second.version;
    const auto copy_start = SteadyClock::now();
    h.held = false;  // CaptureHeld releases it, whatever it returns
    ASSIGN_OR_RETURN(Engine::StorageImage img, engine_.CaptureHeld(storage, since));
    rep.max_pause_seconds =
        std::max(rep.max_pause_seconds, Seconds(SteadyClock::now() - copy_start).count());
    if (img.alive) images.push_back(std::move(img));
  }
  for (Engine::StorageImage& img : images) {
    const uint64_t id = img.snapshot.storage_id;
    auto prev = previous.find(id);
    Entry e;
    if (!img.changed) {
      e = prev->second;
      e.manifest.seq = img.snapshot.seq;
      ++rep.unchanged;
    } else {
      const std::string file = SnapshotFile(img.snapshot);
      const std::string path = options_.dir + "/" + file;
      RETURN_IF_ERROR(MakeDurableDir(options_.dir + "/" + kTenants));
      RETURN_IF_ERROR(MakeDurableDir(path.substr(0, path.find_last_of('/'))));
      RETURN_IF_ERROR(WriteSnapshot(fs_, path, img.snapshot));
      e = {{id, img.snapshot.seq, file},
           img.version,
           static_cast<int64_t>(img.snapshot.index.size() + img.snapshot.labels.size())};
      ++rep.written;
      rep.bytes += e.bytes;
    }
    entries[id] = std::move(e);
    img.snapshot = {};  // written: its copy goes
  }
  int64_t total = 0;
  for (const auto& [id, e] : entries) {
    next.cut = std::min(next.cut, e.manifest.seq);
    total += e.bytes;
    next.entries.push_back(e.manifest);
  }
  // The snapshots may reflect records an async log has not synced yet: sync them first, so
  // the log never restarts below a sequence number the manifest covers.
  RETURN_IF_ERROR(wal_->Sync());
  if (wal_->generation() != generation) {
    return Unavailable("snapshot abandoned: the write-ahead log failed and healed meanwhile");
  }
  RETURN_IF_ERROR(WriteManifest(fs_, options_.dir, next));
  // The new manifest is durable: what it replaced can go.
  std::set<std::string> keep;
  for (const auto& [id, e] : entries) keep.insert(e.manifest.file);
  for (const auto& [id, e] : entries_) {
    if (!keep.count(e.manifest.file) && fs_.Remove(options_.dir + "/" + e.manifest.file).ok()) {
      ++rep.removed;
    }
  }
  entries_ = std::move(entries);
  snapshot_bytes_ = total;
  cut_ = next.cut;
  bytes_at_snapshot_ = appended;
  RETURN_IF_ERROR(wal_->DropBefore(next.cut + 1));
  rep.cut = next.cut;
  rep.seconds = Seconds(SteadyClock::now() - start).count();
  {
    MutexLock s(stats_mu_);
    ++stats_.snapshots;
    stats_.last_snapshot_seconds = rep.seconds;
    stats_.max_pause_seconds = std::max(stats_.max_pause_seconds, rep.max_pause_seconds);
  }
  return rep;
}

StoreStats Store::Stats() const {
  StoreStats s;
  {
    MutexLock lock(stats_mu_);
    s = stats_;
  }
  s.last_seq = wal_->last_seq();
  s.durable_seq = wal_->durable_seq();
  s.syncs = wal_->syncs();
  return s;
}

void Store::StartBackground() {
  if (options_.snapshot_log_bytes <= 0 && options_.snapshot_interval_s <= 0) return;
  background_ = std::thread([this] { BackgroundLoop(); });
}

void Store::BackgroundLoop() {
  auto last = SteadyClock::now();
  for (;;) {
    {
      MutexLock lock(bg_mu_);
      bg_mu_.AwaitUntil(bg_cv_, SteadyClock::now() + std::chrono::milliseconds(250),
                        [&]() REQUIRES(bg_mu_) { return stopping_; });
      if (stopping_) return;
    }
    int64_t grown = 0, held = 0;
    uint64_t cut = 0;
    {
      MutexLock lock(snapshot_mu_);
      grown = wal_->appended_bytes() - bytes_at_snapshot_;
      held = snapshot_bytes_;
      cut = cut_;
    }
    {
      MutexLock s(stats_mu_);
      stats_.log_bytes_since_snapshot = grown;
    }
    const bool by_size =
        options_.snapshot_log_bytes > 0 && grown >= std::max(options_.snapshot_log_bytes, held);
    const bool by_time =
        options_.snapshot_interval_s > 0 && wal_->last_seq() > cut &&
        SteadyClock::now() - last >= std::chrono::seconds(options_.snapshot_interval_s);
    if (!by_size && !by_time) continue;
    last = SteadyClock::now();
    auto rep = Snapshot();
    if (!rep.ok()) {
      {
        MutexLock s(stats_mu_);
        ++stats_.snapshot_failures;
      }
      if (options_.log) options_.log("snapshot failed: " + rep.status().message());
      continue;
    }
    if (options_.log) {
      char line[256];
      std::snprintf(line, sizeof(line),
                    "snapshot (%s): %" PRId64 " written, %" PRId64
                    " unchanged, %.1f MB, %.3f s, writes paused at most %.3f s; log kept "
                    "from record %" PRIu64,
                    by_size ? "log size" : "interval", rep->written, rep->unchanged,
                    rep->bytes / 1e6, rep->seconds, rep->max_pause_seconds, rep->cut + 1);
      options_.log(line);
    }
  }
}

}  // namespace vecgpu::store
