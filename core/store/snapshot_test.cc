#include "core/store/snapshot.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/store/crc32c.h"
#include "core/store/memory_file_system.h"

namespace vecgpu::store {
namespace {

StorageSnapshot Sample(uint64_t seq) {
  StorageSnapshot s;
  s.seq = seq;
  s.storage_id = 7;
  s.storage_seq = 31;
  s.tenant = "acme";
  s.name = "docs";
  s.index_type = "IVF16,Flat";
  s.dim = 64;
  s.metric = "L2";
  s.device = "gpu:1";
  s.factory = "IVF32,Flat";
  s.next_label = 1234;
  s.names = {{"docs", "IVF16,Flat", 0}, {"ids", "IDMap:docs", 1}, {"ids2", "IDMap2:docs", 2}};
  s.labels = std::string(300, '\x01');
  s.keys = "k";
  s.index.assign(5000, 0x7f);
  s.index.push_back(static_cast<uint8_t>(seq));
  return s;
}

TEST(SnapshotTest, RoundTrips) {
  const StorageSnapshot s = Sample(42);
  auto back = DecodeSnapshot(EncodeSnapshot(s), "x");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_TRUE(*back == s);
}

TEST(SnapshotTest, AFormat1FileStillReads) {
  // Format 1 had no storage seq (after magic 8, version 4, flags 4, seq 8, storage id 8).
  StorageSnapshot s = Sample(42);
  std::string bytes = EncodeSnapshot(s);
  bytes.erase(32, 8);
  const uint32_t one = 1;
  std::memcpy(bytes.data() + 8, &one, 4);
  bytes.resize(bytes.size() - 4);
  const uint32_t crc = Crc32c(bytes);
  bytes.append(reinterpret_cast<const char*>(&crc), 4);
  auto back = DecodeSnapshot(bytes, "x");
  ASSERT_TRUE(back.ok()) << back.status().message();
  s.storage_seq = 0;  // not counted then
  EXPECT_TRUE(*back == s);
  // A version from the future is refused by name.
  const uint32_t three = 3;
  std::memcpy(bytes.data() + 8, &three, 4);
  bytes.resize(bytes.size() - 4);
  const uint32_t crc3 = Crc32c(bytes);
  bytes.append(reinterpret_cast<const char*>(&crc3), 4);
  auto future = DecodeSnapshot(bytes, "x");
  EXPECT_EQ(future.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(future.status().message().find("format version 3"), std::string::npos);
}

TEST(SnapshotTest, TheWrittenFileIsTheEncoding) {
  MemoryFileSystem fs;
  ASSERT_TRUE(fs.CreateDirs("/data").ok());
  const StorageSnapshot s = Sample(9);
  ASSERT_TRUE(WriteSnapshot(fs, "/data/s.snap", s).ok());
  EXPECT_EQ(*fs.ReadFile("/data/s.snap"), EncodeSnapshot(s));
  EXPECT_TRUE(*ReadSnapshot(fs, "/data/s.snap") == s);
}

TEST(SnapshotTest, AnyDamageIsNamed) {
  const std::string bytes = EncodeSnapshot(Sample(1));
  for (size_t at = 0; at < bytes.size(); at += 97) {
    std::string bad = bytes;
    bad[at] ^= 0x10;
    auto r = DecodeSnapshot(bad, "/d/s.snap");
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << at;
    EXPECT_NE(r.status().message().find("/d/s.snap"), std::string::npos);
  }
  for (size_t cut : {size_t{0}, size_t{10}, bytes.size() / 2, bytes.size() - 1}) {
    EXPECT_EQ(DecodeSnapshot(bytes.substr(0, cut), "s").status().code(), StatusCode::kDataLoss);
  }
}

// A crash before any I/O step of writing a new snapshot over an old one leaves the old one
// or the new one, whole.
TEST(SnapshotTest, ACrashAtAnyStepLeavesTheOldOrTheNewSnapshot) {
  const std::string path = "/data/s.snap";
  int64_t steps = 0;
  {
    MemoryFileSystem fs;
    ASSERT_TRUE(fs.CreateDirs("/data").ok());
    ASSERT_TRUE(WriteSnapshot(fs, path, Sample(1)).ok());
    const int64_t before = fs.steps();
    ASSERT_TRUE(WriteSnapshot(fs, path, Sample(2)).ok());
    steps = fs.steps() - before;
  }
  ASSERT_GE(steps, 5);
  for (int64_t step = 1; step <= steps; ++step) {
    MemoryFileSystem fs;
    ASSERT_TRUE(fs.CreateDirs("/data").ok());
    ASSERT_TRUE(WriteSnapshot(fs, path, Sample(1)).ok());
    fs.FailAt(fs.steps() + step, Unavailable("crashed"), /*crash=*/true);
    const bool written = WriteSnapshot(fs, path, Sample(2)).ok();
    fs.Restart();
    auto r = ReadSnapshot(fs, path);
    ASSERT_TRUE(r.ok()) << "crash at step " << step << ": " << r.status().message();
    EXPECT_TRUE(r->seq == 1 || r->seq == 2) << step;
    if (written) EXPECT_EQ(r->seq, 2u) << step;
  }
  // After the whole write, a crash keeps the new one.
  MemoryFileSystem fs;
  ASSERT_TRUE(fs.CreateDirs("/data").ok());
  ASSERT_TRUE(WriteSnapshot(fs, path, Sample(2)).ok());
  fs.Crash();
  fs.Restart();
  EXPECT_EQ(ReadSnapshot(fs, path)->seq, 2u);
}

}  // namespace
}  // namespace vecgpu::store
