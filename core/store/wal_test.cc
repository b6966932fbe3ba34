#include "core/store/wal.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "core/store/memory_file_system.h"
#include "core/store/wal_record.h"

namespace vecgpu::store {
namespace {

const std::string kDir = "/data/wal";

std::vector<std::pair<uint64_t, std::string>> ReadAll(FileSystem& fs, uint64_t from = 1,
                                                      WalReadResult* result = nullptr) {
  std::vector<std::pair<uint64_t, std::string>> out;
  auto r = ReadWal(fs, kDir, from, [&](uint64_t seq, std::string_view payload) {
    out.emplace_back(seq, std::string(payload));
    return Status::Ok();
  });
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (result && r.ok()) *result = *r;
  return out;
}

StatusOr<Wal::Position> AppendDurably(Wal& wal, std::string_view payload) {
  ASSIGN_OR_RETURN(Wal::Position pos, wal.Append(payload));
  RETURN_IF_ERROR(wal.WaitDurable(pos));
  return pos;
}

TEST(WalRecordTest, EveryTypeRoundTrips) {
  std::vector<WalRecord> all;
  WalRecord create{.type = RecordType::kCreate, .tenant = "t", .collection = "c"};
  create.index_type = "IVF16,PQ8";
  create.dim = 64;
  create.metric = "IP";
  create.device = "gpu:1";
  all.push_back(create);
  WalRecord add{.type = RecordType::kAdd, .tenant = "t", .collection = "c"};
  add.vectors = {2, 3, {1, 2, 3, 4, 5, -6.5f}};
  add.ids = {7, 9};
  all.push_back(add);
  WalRecord numbered = add;
  numbered.ids.clear();  // numbered by the index
  all.push_back(numbered);
  WalRecord remove{.type = RecordType::kRemove, .tenant = "", .collection = "a/../b"};
  remove.ids = {1, -1, INT64_MAX};
  all.push_back(remove);
  WalRecord replace{.type = RecordType::kReplace, .tenant = "t", .collection = "c"};
  replace.vectors = {1, 2, {0.5f, 1e30f}};
  replace.ids = {42};
  all.push_back(replace);
  WalRecord train{.type = RecordType::kTrain, .tenant = "t", .collection = "c"};
  train.vectors = {1, 1, {3}};
  all.push_back(train);
  all.push_back({.type = RecordType::kReset, .tenant = "t", .collection = "c"});
  all.push_back({.type = RecordType::kDrop, .tenant = "t", .collection = std::string(10000, 'x')});
  WalRecord merge{.type = RecordType::kMerge, .tenant = "t", .collection = "c"};
  merge.sources = {"a", "", "\xff\xfe"};
  merge.vectors = {2, 1, {0.25f, -1}};
  merge.ids = {5, 6};
  all.push_back(merge);
  WalRecord recluster{.type = RecordType::kRecluster, .tenant = "t", .collection = "c"};
  recluster.n_clusters = 64;
  recluster.sample_ratio = 0.25;
  all.push_back(recluster);
  WalRecord param{.type = RecordType::kSetParameter, .tenant = "t", .collection = "c"};
  param.name = "nprobe";
  param.value = 12;
  all.push_back(param);
  WalRecord put{.type = RecordType::kPutKeys, .tenant = "t", .collection = "c"};
  put.keys = {"a", "caf\xc3\xa9", std::string(1000, 'k')};
  put.timestamps = {1, 1732950000000000000, 0};
  put.vectors = {3, 2, {1, 2, 3, 4, 5, 6}};
  all.push_back(put);
  WalRecord unput{.type = RecordType::kRemoveKeys, .tenant = "t", .collection = "c"};
  unput.keys = {"a", "b"};
  all.push_back(unput);
  WalRecord stamp{.type = RecordType::kStampKey, .tenant = "t", .collection = "c"};
  stamp.keys = {"a"};
  stamp.timestamps = {99};
  all.push_back(stamp);
  // Format 1 payloads (no storage, no artefact) still read as they were written.
  const size_t format2 = all.size();
  for (size_t i = 0; i < format2; ++i) {
    WalRecord legacy = all[i];
    legacy.has_storage = false;
    all.push_back(legacy);
    all[i].storage_id = 1000 + i;
    all[i].storage_seq = 7 + i;
  }
  WalRecord trained{.type = RecordType::kTrain, .tenant = "t", .collection = "c"};
  trained.storage_id = 3;
  trained.storage_seq = 2;
  trained.vectors.cols = 16;
  trained.artefact = std::string("IwFl\0\x01" "centroids", 15);
  all.push_back(trained);
  WalRecord reclustered = recluster;
  reclustered.artefact = std::string(5000, '\x7f');
  all.push_back(reclustered);
  WalRecord failed{.type = RecordType::kFailed, .tenant = "t", .collection = "c"};
  failed.storage_id = 3;
  failed.storage_seq = 4;
  failed.error = "index 'c' cannot remove vectors";
  all.push_back(failed);
  for (const WalRecord& r : all) {
    const std::string bytes = EncodeRecord(r);
    EXPECT_EQ((static_cast<uint8_t>(bytes[0]) & kStorageHeaderBit) != 0, r.has_storage);
    auto back = DecodeRecord(bytes);
    ASSERT_TRUE(back.ok()) << RecordTypeName(r.type) << ": " << back.status().message();
    EXPECT_TRUE(*back == r) << RecordTypeName(r.type);
    // Every strict prefix, and any trailing byte, is refused as DataLoss.
    for (size_t cut = 0; cut < bytes.size(); cut += 1 + bytes.size() / 64) {
      EXPECT_EQ(DecodeRecord(bytes.substr(0, cut)).status().code(), StatusCode::kDataLoss)
          << RecordTypeName(r.type) << " cut at " << cut;
    }
    EXPECT_EQ(DecodeRecord(bytes + "x").status().code(), StatusCode::kDataLoss);
  }
  EXPECT_EQ(DecodeRecord(std::string(1, '\x63')).status().code(), StatusCode::kDataLoss);
  // kFailed exists only in format 2.
  std::string old_failed = EncodeRecord(failed);
  old_failed = static_cast<char>(RecordType::kFailed) + old_failed.substr(17);
  EXPECT_EQ(DecodeRecord(old_failed).status().code(), StatusCode::kDataLoss);
}

TEST(WalRecordTest, HugeDeclaredCountsAreRefusedWithoutAllocating) {
  for (bool has_storage : {false, true}) {
    WalRecord add{.type = RecordType::kAdd, .tenant = "t", .collection = "c"};
    add.has_storage = has_storage;
    add.vectors = {1, 1, {1}};
    std::string bytes = EncodeRecord(add);
    // rows (u64) sits after type (1), storage id and seq (8 each, format 2) and two strings
    // (4 + 1 each).
    const uint64_t huge = uint64_t{1} << 60;
    std::memcpy(bytes.data() + (has_storage ? 27 : 11), &huge, 8);
    EXPECT_EQ(DecodeRecord(bytes).status().code(), StatusCode::kDataLoss);
    auto rows = [&] {
      std::memcpy(bytes.data() + (has_storage ? 27 : 11), &add.vectors.rows, 8);
      return DecodeRecord(bytes);
    }();
    EXPECT_TRUE(rows.ok()) << rows.status().message();  // the offset above was the row count
  }
}

TEST(WalTest, AppendsAreReadBackInOrderAcrossSegments) {
  MemoryFileSystem fs;
  {
    auto wal = Wal::Open(fs, kDir, 1, {.segment_bytes = 200});
    ASSERT_TRUE(wal.ok()) << wal.status().message();
    for (int i = 1; i <= 50; ++i) {
      auto pos = AppendDurably(**wal, "record " + std::to_string(i));
      ASSERT_TRUE(pos.ok());
      EXPECT_EQ(pos->seq, static_cast<uint64_t>(i));
    }
  }
  EXPECT_GT(fs.ListDir(kDir)->size(), 3u);  // several segments
  auto all = ReadAll(fs);
  ASSERT_EQ(all.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(all[i].first, static_cast<uint64_t>(i + 1));
    EXPECT_EQ(all[i].second, "record " + std::to_string(i + 1));
  }
  EXPECT_EQ(ReadAll(fs, 45).size(), 6u);  // from a sequence number on
  // A reopened log continues the numbering in a new segment.
  auto wal = Wal::Open(fs, kDir, 51, {});
  ASSERT_TRUE(wal.ok());
  EXPECT_EQ(AppendDurably(**wal, "more")->seq, 51u);
  wal->reset();
  EXPECT_EQ(ReadAll(fs).size(), 51u);
}

TEST(WalTest, DropBeforeRemovesOnlyWholeSegmentsBeforeTheSnapshot) {
  MemoryFileSystem fs;
  auto wal = Wal::Open(fs, kDir, 1, {.segment_bytes = 100});
  ASSERT_TRUE(wal.ok());
  for (int i = 1; i <= 30; ++i) ASSERT_TRUE(AppendDurably(**wal, "0123456789").ok());
  ASSERT_TRUE((*wal)->DropBefore(17).ok());
  auto rest = ReadAll(fs, 17);
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.front().first, 17u);
  EXPECT_EQ(rest.back().first, 30u);
  WalReadResult r;
  auto all = ReadAll(fs, 1, &r);
  EXPECT_LE(all.front().first, 17u);  // the segment holding 17 stays
  EXPECT_GT(all.front().first, 1u);   // earlier ones are gone
}

TEST(WalTest, ConcurrentWritersShareFsyncs) {
  MemoryFileSystem fs;
  auto wal = Wal::Open(fs, kDir, 1, {});
  ASSERT_TRUE(wal.ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 8; ++t) {
    writers.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (!AppendDurably(**wal, std::string(100, 'x')).ok()) failures++;
      }
    });
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ((*wal)->durable_seq(), 1600u);
  EXPECT_LE((*wal)->syncs(), 1600);  // never more than one per record; usually far fewer
  EXPECT_EQ(ReadAll(fs).size(), 1600u);
}

TEST(WalTest, OnlyDurableRecordsSurviveACrash) {
  MemoryFileSystem fs;
  auto wal = Wal::Open(fs, kDir, 1, {});
  ASSERT_TRUE(wal.ok());
  ASSERT_TRUE(AppendDurably(**wal, "one").ok());
  ASSERT_TRUE(AppendDurably(**wal, "two").ok());
  ASSERT_TRUE((*wal)->Append("three, never synced").ok());
  fs.Crash();
  wal->reset();
  fs.Restart();
  auto all = ReadAll(fs);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].second, "two");
}

TEST(WalTest, ATornLastRecordIsCutOffAndReported) {
  MemoryFileSystem fs;
  std::string segment;
  {
    auto wal = Wal::Open(fs, kDir, 1, {});
    ASSERT_TRUE(wal.ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(AppendDurably(**wal, "abcdefgh").ok());
    segment = kDir + "/" + fs.ListDir(kDir)->back();
  }
  const std::string whole = *fs.ReadFile(segment);
  // Cut the last record anywhere: it is dropped, the others stay.
  for (size_t cut = whole.size() - 1; cut > whole.size() - 28; --cut) {
    MemoryFileSystem copy;
    ASSERT_TRUE(copy.CreateDirs(kDir).ok());
    auto f = copy.OpenForAppend(segment, true);
    ASSERT_TRUE((*f)->Append(whole.substr(0, cut)).ok());
    WalReadResult r;
    auto all = ReadAll(copy, 1, &r);
    EXPECT_EQ(all.size(), 2u) << cut;
    EXPECT_EQ(r.torn_segment, segment);
    EXPECT_EQ(copy.ReadFile(segment)->size(), whole.size() - 28);  // cut back to record 2
  }
  // The last record's bytes zeroed (the file grew, its data never reached the disk): torn.
  MemoryFileSystem zeroed;
  ASSERT_TRUE(zeroed.CreateDirs(kDir).ok());
  ASSERT_TRUE((*zeroed.OpenForAppend(segment, true))
                  ->Append(whole.substr(0, whole.size() - 8) + std::string(8, '\0'))
                  .ok());
  EXPECT_EQ(ReadAll(zeroed).size(), 2u);
  // A zero-filled tail (a crash after the file grew) is torn too.
  MemoryFileSystem zeros;
  ASSERT_TRUE(zeros.CreateDirs(kDir).ok());
  ASSERT_TRUE((*zeros.OpenForAppend(segment, true))->Append(whole + std::string(100, '\0')).ok());
  EXPECT_EQ(ReadAll(zeros).size(), 3u);
}

TEST(WalTest, DamageInsideTheLogIsRefusedAndNamed) {
  MemoryFileSystem fs;
  std::string segment;
  {
    auto wal = Wal::Open(fs, kDir, 1, {});
    ASSERT_TRUE(wal.ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(AppendDurably(**wal, "abcdefgh").ok());
    segment = kDir + "/" + fs.ListDir(kDir)->back();
  }
  const std::string whole = *fs.ReadFile(segment);
  // The magic; a record's length; its header CRC; a payload inside the log; the payload of
  // the last record (complete on disk, so not a torn write).
  for (size_t at : {size_t{3}, size_t{30}, size_t{40}, whole.size() - 30, whole.size() - 1}) {
    MemoryFileSystem copy;
    ASSERT_TRUE(copy.CreateDirs(kDir).ok());
    std::string bad = whole;
    bad[at] ^= 0x40;
    ASSERT_TRUE((*copy.OpenForAppend(segment, true))->Append(bad).ok());
    auto r = ReadWal(copy, kDir, 1, [](uint64_t, std::string_view) { return Status::Ok(); });
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << "flipped byte " << at;
    EXPECT_NE(r.status().message().find(segment), std::string::npos) << r.status().message();
  }
}

TEST(WalTest, AFailedFsyncRefusesTheWriteAndTheLogHeals) {
  MemoryFileSystem fs;
  auto wal = Wal::Open(fs, kDir, 1, {});
  ASSERT_TRUE(wal.ok());
  ASSERT_TRUE(AppendDurably(**wal, "kept").ok());
  fs.FailSyncs(Internal("fsync /data/wal/x: Input/output error"));
  auto lost = (*wal)->Append("refused");
  ASSERT_TRUE(lost.ok());  // written, not yet durable
  Status st = (*wal)->WaitDurable(*lost);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("Input/output error"), std::string::npos) << st.message();
  // While the disk fails, writes are refused.
  EXPECT_FALSE((*wal)->Append("also refused").ok());
  fs.FailSyncs(Status::Ok());
  // Healthy again: the next write heals the log (the refused record is cut off).
  auto next = AppendDurably(**wal, "after");
  ASSERT_TRUE(next.ok()) << next.status().message();
  EXPECT_EQ(next->seq, 2u);
  EXPECT_FALSE((*wal)->WaitDurable(*lost).ok());  // never acknowledged later either
  wal->reset();
  auto all = ReadAll(fs);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].second, "kept");
  EXPECT_EQ(all[1].second, "after");
}

TEST(WalTest, AFullDiskRefusesTheWriteClearly) {
  MemoryFileSystem fs;
  auto wal = Wal::Open(fs, kDir, 1, {});
  ASSERT_TRUE(wal.ok());
  ASSERT_TRUE(AppendDurably(**wal, "kept").ok());
  fs.SetSpaceLimit(fs.ReadFile(kDir + "/" + fs.ListDir(kDir)->back())->size() + 20);
  auto full = (*wal)->Append(std::string(100, 'x'));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("No space left"), std::string::npos);
  fs.SetSpaceLimit(-1);
  ASSERT_TRUE(AppendDurably(**wal, "after").ok());
  wal->reset();
  auto all = ReadAll(fs);  // the short write was cut off: no torn record inside the log
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].second, "after");
}

// A crash before any one I/O step of opening the log and appending: afterwards the log reads
// back cleanly and holds every record that was acknowledged (and none that was not).
TEST(WalTest, ACrashBeforeAnyStepLosesNothingAcknowledged) {
  int64_t total_steps = 0;
  {
    MemoryFileSystem fs;
    auto wal = Wal::Open(fs, kDir, 1, {.segment_bytes = 120});
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(AppendDurably(**wal, "record").ok());
    total_steps = fs.steps();
  }
  ASSERT_GT(total_steps, 10);
  for (int64_t step = 1; step <= total_steps; ++step) {
    MemoryFileSystem fs;
    fs.FailAt(step, Unavailable("crashed"), /*crash=*/true);
    int acknowledged = 0;
    {
      auto wal = Wal::Open(fs, kDir, 1, {.segment_bytes = 120});
      if (wal.ok()) {
        for (int i = 0; i < 6; ++i) {
          if (AppendDurably(**wal, "record").ok()) acknowledged++;
        }
      }
    }
    fs.Restart();
    WalReadResult r;
    auto read = ReadWal(fs, kDir, 1, [](uint64_t, std::string_view) { return Status::Ok(); });
    ASSERT_TRUE(read.ok()) << "crash at step " << step << ": " << read.status().message();
    // Exactly the acknowledged records: one whose fsync did not finish was never acknowledged.
    EXPECT_EQ(read->last_seq, static_cast<uint64_t>(acknowledged)) << "crash at step " << step;
  }
}

TEST(WalTest, DamageCanBeSetAsideToServeTheLastGoodState) {
  MemoryFileSystem fs;
  {
    auto wal = Wal::Open(fs, kDir, 1, {.segment_bytes = 150});
    ASSERT_TRUE(wal.ok());
    for (int i = 1; i <= 12; ++i) {
      ASSERT_TRUE(AppendDurably(**wal, "record " + std::to_string(i)).ok());
    }
  }
  auto names = *fs.ListDir(kDir);
  ASSERT_GE(names.size(), 3u);
  // Damage the second segment's second record.
  const std::string second = kDir + "/" + names[1];
  std::string bytes = *fs.ReadFile(second);
  bytes[28 + 20 + 8 + 20 + 2] ^= 1;
  ASSERT_TRUE((*fs.OpenForAppend(second, true))->Append(bytes).ok());
  WalReadResult so_far;
  std::vector<uint64_t> seen;
  auto r = ReadWal(
      fs, kDir, 1,
      [&](uint64_t seq, std::string_view) {
        seen.push_back(seq);
        return Status::Ok();
      },
      &so_far);
  ASSERT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(so_far.damaged_segment, second);
  EXPECT_EQ(so_far.last_seq, seen.back());
  ASSERT_TRUE(SetAsideDamage(fs, kDir, so_far).ok());
  // The log now reads cleanly up to the last good record, and keeps the rest aside.
  auto clean = ReadAll(fs);
  ASSERT_FALSE(clean.empty());
  EXPECT_EQ(clean.back().first, so_far.last_seq);
  EXPECT_TRUE(*fs.Exists(second + ".damaged"));
  EXPECT_TRUE(*fs.Exists(kDir + "/" + names[2] + ".damaged"));
  // ... and takes new records after it.
  auto wal = Wal::Open(fs, kDir, so_far.last_seq + 1, {});
  ASSERT_TRUE(AppendDurably(**wal, "after").ok());
  wal->reset();
  EXPECT_EQ(ReadAll(fs).back().second, "after");
}

}  // namespace
}  // namespace vecgpu::store
