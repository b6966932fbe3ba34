#include "core/store/wal.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/store/crc32c.h"

namespace vecgpu::store {
namespace {

// Segment header (FORMAT.md): magic, format version, flags, first sequence number, CRC32C of
// the 24 bytes before it.
constexpr char kMagic[8] = {'V', 'E', 'C', 'G', 'P', 'U', 'W', 'L'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 28;
// Record frame: payload length u32, seq u64, masked CRC32C u32 of those 12 bytes, masked
// CRC32C u32 of the payload, payload. The header's own CRC tells a damaged length inside the
// log from a frame cut short by a crash.
constexpr size_t kFrameBytes = 20;
constexpr uint32_t kMaxPayload = 1u << 30;

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

template <typename T>
T Get(std::string_view in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(T));
  return v;
}

std::string SegmentName(uint64_t first_seq) {
  char name[32];
  std::snprintf(name, sizeof(name), "%020" PRIu64 ".log", first_seq);
  return name;
}

// The first sequence number a segment file name carries, or 0 when it is not a segment.
uint64_t SegmentFirst(const std::string& name) {
  if (name.size() != 24 || name.compare(20, 4, ".log") != 0) return 0;
  uint64_t v = 0;
  for (int i = 0; i < 20; ++i) {
    if (name[i] < '0' || name[i] > '9') return 0;
    v = v * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return v;
}

std::string Header(uint64_t first_seq) {
  std::string h(kMagic, sizeof(kMagic));
  Put<uint32_t>(&h, kVersion);
  Put<uint32_t>(&h, 0);  // flags
  Put<uint64_t>(&h, first_seq);
  Put<uint32_t>(&h, Crc32c(h));
  return h;
}

uint32_t HeaderCrc(std::string_view frame) { return MaskCrc(Crc32c(frame.substr(0, 12))); }
uint32_t PayloadCrc(std::string_view payload) { return MaskCrc(Crc32c(payload)); }

}  // namespace

Wal::Wal(FileSystem& fs, std::string dir, WalOptions options)
    : fs_(fs), dir_(std::move(dir)), options_(options) {}

StatusOr<std::unique_ptr<Wal>> Wal::Open(FileSystem& fs, std::string dir, uint64_t next_seq,
                                         WalOptions options) {
  RETURN_IF_ERROR(fs.CreateDirs(dir));
  if (size_t slash = dir.find_last_of('/'); slash != std::string::npos && slash > 0) {
    RETURN_IF_ERROR(fs.SyncDir(dir.substr(0, slash)));  // the log directory itself is durable
  }
  std::unique_ptr<Wal> wal(new Wal(fs, std::move(dir), options));
  {
    MutexLock lock(wal->mu_);
    wal->next_seq_ = next_seq;
    wal->durable_seq_ = next_seq - 1;
    RETURN_IF_ERROR(wal->StartSegment(next_seq));
  }
  if (options.durability == Durability::kAsync) {
    wal->sync_thread_ = std::thread([w = wal.get()] { w->SyncLoop(); });
  }
  return wal;
}

Wal::~Wal() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (sync_thread_.joinable()) sync_thread_.join();
  (void)Sync();
  MutexLock lock(mu_);
  if (file_) (void)file_->Close();
}

Status Wal::StartSegment(uint64_t first_seq) {
  if (file_) RETURN_IF_ERROR(file_->Close());
  file_.reset();
  const std::string path = dir_ + "/" + SegmentName(first_seq);
  ASSIGN_OR_RETURN(file_, fs_.OpenForAppend(path, /*truncate=*/true));
  RETURN_IF_ERROR(file_->Append(Header(first_seq)));
  RETURN_IF_ERROR(file_->Sync());
  RETURN_IF_ERROR(fs_.SyncDir(dir_));  // the new segment's name is durable
  segment_ = path;
  segment_first_ = first_seq;
  durable_size_ = file_->size();
  return Status::Ok();
}

Status Wal::Heal() {
  // Records past the durable size were never acknowledged: cut them off, with their numbers.
  if (file_) (void)file_->Close();
  file_.reset();
  RETURN_IF_ERROR(fs_.Truncate(segment_, durable_size_));
  ASSIGN_OR_RETURN(file_, fs_.OpenForAppend(segment_, /*truncate=*/false));
  next_seq_ = durable_seq_ + 1;
  ++generation_;  // waits for the records cut off now fail
  failed_ = Status::Ok();
  return Status::Ok();
}

StatusOr<Wal::Position> Wal::Append(std::string_view payload) {
  if (payload.size() > kMaxPayload) {
    return InvalidArgument("log record of " + std::to_string(payload.size()) +
                           " bytes is above the 1 GiB limit");
  }
  // The frame is built outside the lock; only its sequence number and header CRC wait for it.
  std::string frame;
  frame.reserve(kFrameBytes + payload.size());
  Put<uint32_t>(&frame, static_cast<uint32_t>(payload.size()));
  Put<uint64_t>(&frame, 0);  // the sequence number, below
  Put<uint32_t>(&frame, 0);  // the header CRC, below
  Put<uint32_t>(&frame, PayloadCrc(payload));
  frame.append(payload);
  MutexLock lock(mu_);
  if (stopping_) return Unavailable("the write-ahead log is closed");
  if (!failed_.ok()) {
    // Only once no fsync is running: it could still make the bytes we would cut durable.
    if (syncing_ || !Heal().ok()) {
      return Unavailable("write-ahead log " + dir_ + " is failing (" + failed_.message() +
                         "); writes are refused until it is healthy again");
    }
  }
  if (file_->size() >= options_.segment_bytes && durable_seq_ + 1 == next_seq_ && !syncing_) {
    if (Status st = StartSegment(next_seq_); !st.ok()) {
      failed_ = st;
      return Unavailable("write-ahead log: cannot start a segment: " + st.message());
    }
  }
  const uint64_t seq = next_seq_;
  std::memcpy(frame.data() + 4, &seq, sizeof(seq));
  const uint32_t header_crc = HeaderCrc(frame);
  std::memcpy(frame.data() + 12, &header_crc, sizeof(header_crc));
  if (Status st = file_->Append(frame); !st.ok()) {
    failed_ = st;
    cv_.notify_all();
    return st.code() == StatusCode::kResourceExhausted
               ? ResourceExhausted("write-ahead log: " + st.message() + "; the write is refused")
               : Unavailable("write-ahead log: " + st.message() + "; the write is refused");
  }
  ++next_seq_;
  appended_bytes_ += static_cast<int64_t>(frame.size());
  return Position{seq, generation_};
}

Status Wal::WaitDurable(Position pos) {
  if (options_.durability == Durability::kAsync) return Status::Ok();
  MutexLock lock(mu_);
  for (;;) {
    if (pos.generation != generation_) {
      return Unavailable(
          "write-ahead log: the write was cut off after a log failure; it is "
          "refused");
    }
    if (durable_seq_ >= pos.seq) break;
    if (!failed_.ok()) {
      return Unavailable("write-ahead log: " + failed_.message() + "; the write is refused");
    }
    if (syncing_) {  // another writer's fsync is running: it may cover us
      mu_.Await(cv_, [&]() REQUIRES(mu_) { return !syncing_; });
      continue;
    }
    // Become the syncer for everything appended so far (group commit).
    syncing_ = true;
    const uint64_t covered = next_seq_ - 1;
    const int64_t size = file_->size();
    WritableFile* file = file_.get();
    mu_.Unlock();
    Status st = file->Sync();  // outside the lock: writers keep appending meanwhile
    mu_.Lock();
    syncing_ = false;
    ++syncs_;
    if (st.ok()) {
      durable_seq_ = std::max(durable_seq_, covered);
      durable_size_ = std::max(durable_size_, size);
    } else if (failed_.ok()) {
      failed_ = st;
    }
    cv_.notify_all();
  }
  return Status::Ok();
}

Status Wal::Sync() {
  uint64_t last;
  {
    MutexLock lock(mu_);
    last = next_seq_ - 1;
  }
  if (options_.durability == Durability::kSync) {
    uint64_t generation;
    {
      MutexLock lock(mu_);
      generation = generation_;
    }
    return WaitDurable(Position{last, generation});
  }
  // kAsync: WaitDurable returns at once; sync here.
  MutexLock lock(mu_);
  mu_.Await(cv_, [&]() REQUIRES(mu_) { return !syncing_; });
  if (!failed_.ok()) return failed_;
  if (durable_seq_ >= last) return Status::Ok();
  // As in WaitDurable: the fsync runs outside the lock (marked by syncing_, which keeps the
  // segment from being switched or cut meanwhile), so appends never wait for it.
  syncing_ = true;
  const uint64_t covered = next_seq_ - 1;
  const int64_t size = file_->size();
  WritableFile* file = file_.get();
  mu_.Unlock();
  Status st = file->Sync();
  mu_.Lock();
  syncing_ = false;
  ++syncs_;
  if (st.ok()) {
    durable_seq_ = std::max(durable_seq_, covered);
    durable_size_ = std::max(durable_size_, size);
  } else if (failed_.ok()) {
    failed_ = st;
  }
  cv_.notify_all();
  return st;
}

void Wal::SyncLoop() {
  for (;;) {
    {
      MutexLock lock(mu_);
      if (stopping_) return;
      mu_.AwaitUntil(
          cv_,
          std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.sync_interval_ms),
          [&]() REQUIRES(mu_) { return stopping_; });
      if (stopping_) return;
    }
    (void)Sync();
  }
}

uint64_t Wal::last_seq() const {
  MutexLock lock(mu_);
  return next_seq_ - 1;
}

uint64_t Wal::generation() const {
  MutexLock lock(mu_);
  return generation_;
}

int64_t Wal::appended_bytes() const {
  MutexLock lock(mu_);
  return appended_bytes_;
}

uint64_t Wal::durable_seq() const {
  MutexLock lock(mu_);
  return durable_seq_;
}

int64_t Wal::syncs() const {
  MutexLock lock(mu_);
  return syncs_;
}

Status Wal::DropBefore(uint64_t seq) {
  ASSIGN_OR_RETURN(std::vector<std::string> names, fs_.ListDir(dir_));
  MutexLock lock(mu_);
  // A segment can go when the next one starts at or before seq (all its records precede it).
  std::vector<uint64_t> firsts;
  for (const auto& n : names) {
    if (uint64_t f = SegmentFirst(n)) firsts.push_back(f);
  }
  bool removed = false;
  for (size_t i = 0; i + 1 < firsts.size(); ++i) {
    if (firsts[i + 1] <= seq && firsts[i] != segment_first_) {
      RETURN_IF_ERROR(fs_.Remove(dir_ + "/" + SegmentName(firsts[i])));
      removed = true;
    }
  }
  return removed ? fs_.SyncDir(dir_) : Status::Ok();
}

StatusOr<WalReadResult> ReadWal(FileSystem& fs, const std::string& dir, uint64_t from_seq,
                                const std::function<Status(uint64_t, std::string_view)>& fn,
                                WalReadResult* so_far) {
  WalReadResult local;
  WalReadResult& result = so_far ? *so_far : local;
  result = WalReadResult{};
  ASSIGN_OR_RETURN(bool exists, fs.Exists(dir));
  if (!exists) return result;
  ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(dir));
  std::vector<std::string> segments;
  for (const auto& n : names) {
    if (SegmentFirst(n)) segments.push_back(n);  // zero-padded: sorted by first sequence
  }
  uint64_t expect = 0;  // the next sequence number; 0 before the first record
  for (size_t s = 0; s < segments.size(); ++s) {
    const std::string path = dir + "/" + segments[s];
    const bool last_segment = s + 1 == segments.size();
    ASSIGN_OR_RETURN(std::string data, fs.ReadFile(path));
    auto corrupt = [&](size_t at, const std::string& what) {
      result.damaged_segment = path;
      result.damaged_offset = static_cast<int64_t>(at);
      return DataLoss("write-ahead log " + path + " is damaged at byte " + std::to_string(at) +
                      ": " + what);
    };
    const uint64_t first = SegmentFirst(segments[s]);
    if (data.size() < kHeaderBytes) {
      if (last_segment) {  // a crash while the segment was being started: nothing in it
        RETURN_IF_ERROR(fs.Remove(path));
        RETURN_IF_ERROR(fs.SyncDir(dir));
        result.torn_segment = path;
        result.torn_bytes = static_cast<int64_t>(data.size());
        break;
      }
      return corrupt(0, "header cut short");
    }
    if (std::memcmp(data.data(), kMagic, 8) != 0) return corrupt(0, "not a vecgpu log (magic)");
    if (Get<uint32_t>(data, 24) != Crc32c(std::string_view(data.data(), 24))) {
      return corrupt(24, "header CRC mismatch");
    }
    if (Get<uint32_t>(data, 8) != kVersion) {
      return corrupt(8, "format version " + std::to_string(Get<uint32_t>(data, 8)) +
                            " (this vecgpu reads version " + std::to_string(kVersion) + ")");
    }
    if (Get<uint64_t>(data, 16) != first) return corrupt(16, "first sequence number mismatch");
    if (expect != 0 && first != expect) {
      return corrupt(
          0, "starts at record " + std::to_string(first) + ", expected " + std::to_string(expect));
    }
    if (result.first_seq == 0) result.first_seq = first;
    expect = first;
    // A crash mid-append leaves the last frame short, or its bytes (or a zero-filled tail)
    // not matching its CRC; anything else wrong is damage.
    auto zero_tail = [&](size_t from) {
      return std::all_of(data.begin() + static_cast<std::ptrdiff_t>(from), data.end(),
                         [](char c) { return c == 0; });
    };
    size_t at = kHeaderBytes;
    while (at < data.size()) {
      const size_t left = data.size() - at;
      bool torn = false;
      if (left < kFrameBytes) {
        torn = true;  // the frame header itself was cut short
      } else if (Get<uint32_t>(data, at + 12) !=
                 HeaderCrc(std::string_view(data.data() + at, 12))) {
        if (!(last_segment && zero_tail(at))) return corrupt(at, "record header CRC mismatch");
        torn = true;
      } else {
        const uint32_t len = Get<uint32_t>(data, at);
        const uint64_t seq = Get<uint64_t>(data, at + 4);
        if (len > kMaxPayload) return corrupt(at, "record length " + std::to_string(len));
        if (left - kFrameBytes < len) {
          torn = true;  // a whole header, the payload cut short
        } else {
          std::string_view payload(data.data() + at + kFrameBytes, len);
          if (Get<uint32_t>(data, at + 16) != PayloadCrc(payload)) {
            // A bad payload is a crash's doing only in the last frame of the log, when its
            // end never reached the disk (zeros); otherwise the bytes rotted.
            const bool last_frame = at + kFrameBytes + len == data.size();
            if (!(last_segment &&
                  (zero_tail(at + kFrameBytes) || (last_frame && data.back() == 0)))) {
              return corrupt(at, "record CRC mismatch");
            }
            torn = true;
          } else {
            if (seq != expect) {
              return corrupt(at, "record " + std::to_string(seq) + " where " +
                                     std::to_string(expect) + " was expected");
            }
            if (seq >= from_seq) {
              RETURN_IF_ERROR(fn(seq, payload));
              ++result.records;
            }
            result.last_seq = seq;
            ++expect;
            at += kFrameBytes + len;
            continue;
          }
        }
      }
      if (torn) {
        if (!last_segment) return corrupt(at, "record cut short inside the log");
        RETURN_IF_ERROR(fs.Truncate(path, static_cast<int64_t>(at)));
        result.torn_segment = path;
        result.torn_bytes = static_cast<int64_t>(left);
        break;
      }
    }
  }
  return result;
}

Status SetAsideDamage(FileSystem& fs, const std::string& dir, const WalReadResult& so_far) {
  if (so_far.damaged_segment.empty()) return Status::Ok();
  ASSIGN_OR_RETURN(std::string damaged, fs.ReadFile(so_far.damaged_segment));
  {
    ASSIGN_OR_RETURN(auto copy, fs.OpenForAppend(so_far.damaged_segment + ".damaged", true));
    RETURN_IF_ERROR(copy->Append(damaged));
    RETURN_IF_ERROR(copy->Sync());
    RETURN_IF_ERROR(copy->Close());
  }
  RETURN_IF_ERROR(fs.Truncate(so_far.damaged_segment, so_far.damaged_offset));
  ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(dir));
  const std::string first = so_far.damaged_segment.substr(dir.size() + 1);
  for (const std::string& n : names) {
    if (SegmentFirst(n) && n > first) {
      RETURN_IF_ERROR(fs.Rename(dir + "/" + n, dir + "/" + n + ".damaged"));
    }
  }
  return fs.SyncDir(dir);
}

}  // namespace vecgpu::store
