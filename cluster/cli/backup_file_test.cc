// The backup file of one cluster collection (cluster/cli/backup_file.h): written and read
// back whole; every kind of damage (a bad magic, a version from the future, a flipped byte,
// a cut, huge declared lengths, bytes after the end, a copy of another shard) is refused with
// a message naming it, before anything is allocated for a declared length.
#include "cluster/cli/backup_file.h"

#include <gtest/gtest.h>

#include <sstream>

#include "core/store/memory_file_system.h"

namespace vecgpu::cluster {
namespace {

store::StorageSnapshot Copy(const std::string& name, uint64_t position) {
  store::StorageSnapshot s;
  s.seq = 40;
  s.storage_id = 3;
  s.storage_seq = position;
  s.tenant = "t";
  s.name = name;
  s.index_type = "IDMap,Flat";
  s.dim = 4;
  s.metric = "L2";
  s.factory = "Flat";
  s.names = {{name, "IDMap,Flat", 0}};
  s.index = {1, 2, 3, 4, 5};
  return s;
}

BackupHeader Header(int shards = 2) {
  BackupHeader h;
  h.tenant = "t";
  h.name = "c";
  h.shards = shards;
  h.replication = 2;
  h.inner_product = true;
  h.index_type = "IDMap,Flat";
  h.dim = 4;
  h.created = "2024-01-02T03:04:05Z";
  return h;
}

// A backup of "c" with two shards, as bytes.
std::string Written() {
  store::MemoryFileSystem fs;
  EXPECT_TRUE(fs.CreateDirs("/b").ok());
  auto w = BackupWriter::Create(fs, "/b/c.backup", Header());
  EXPECT_TRUE(w.ok()) << w.status().message();
  EXPECT_TRUE((*w)->Add(0, 7, store::EncodeSnapshot(Copy("c#0", 7))).ok());
  EXPECT_TRUE((*w)->Add(1, 9, store::EncodeSnapshot(Copy("c#1", 9))).ok());
  EXPECT_TRUE((*w)->Finish().ok());
  auto bytes = fs.ReadFile("/b/c.backup");
  EXPECT_TRUE(bytes.ok());
  EXPECT_FALSE(fs.Exists("/b/c.backup.tmp").value());
  return bytes.ok() ? *bytes : "";
}

// Reads `bytes` through: the first error, or OK.
Status ReadAll(const std::string& bytes) {
  std::istringstream in(bytes);
  ASSIGN_OR_RETURN(auto r, BackupReader::Open(in, bytes.size(), "f"));
  for (int i = 0; i < r->header().shards; ++i) {
    ASSIGN_OR_RETURN(BackupShard s, r->Next());
    RETURN_IF_ERROR(DecodeBackupShard(r->header(), s, "f").status());
  }
  return r->Finish();
}

void PutU64At(std::string& bytes, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes[at + i] = static_cast<char>(v >> (8 * i));
}

TEST(ClusterBackupFileTest, WritesAndReadsBackEveryShard) {
  const std::string bytes = Written();
  std::istringstream in(bytes);
  auto r = BackupReader::Open(in, bytes.size(), "f");
  ASSERT_TRUE(r.ok()) << r.status().message();
  const BackupHeader& h = (*r)->header();
  EXPECT_EQ(h.tenant, "t");
  EXPECT_EQ(h.name, "c");
  EXPECT_EQ(h.shards, 2);
  EXPECT_EQ(h.replication, 2);
  EXPECT_TRUE(h.inner_product);
  EXPECT_EQ(h.index_type, "IDMap,Flat");
  EXPECT_EQ(h.dim, 4);
  for (int i = 0; i < 2; ++i) {
    auto s = (*r)->Next();
    ASSERT_TRUE(s.ok()) << s.status().message();
    EXPECT_EQ(s->shard, i);
    EXPECT_EQ(s->position, i == 0 ? 7u : 9u);
    auto copy = DecodeBackupShard(h, *s, "f");
    ASSERT_TRUE(copy.ok()) << copy.status().message();
    EXPECT_EQ(*copy, Copy("c#" + std::to_string(i), s->position));
  }
  EXPECT_TRUE((*r)->Finish().ok());
}

TEST(ClusterBackupFileTest, DamageIsRefusedNamingWhatIsWrong) {
  const std::string good = Written();
  ASSERT_TRUE(ReadAll(good).ok());
  auto refused = [](const std::string& bytes, const std::string& needle) {
    Status st = ReadAll(bytes);
    EXPECT_FALSE(st.ok()) << needle;
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  };
  std::string bad = good;
  bad[0] = 'X';
  refused(bad, "bad magic");
  refused("", "truncated");
  refused(good.substr(0, 10), "truncated");
  bad = good;
  bad[8] = 9;  // the version
  refused(bad, "format version 9");
  bad = good;
  bad[30] ^= 1;  // inside the JSON header
  refused(bad, "header's CRC");
  // Every cut is refused, and so is every flipped byte past the header.
  for (size_t n = 0; n < good.size(); n += 7) refused(good.substr(0, n), "");
  for (size_t at = 40; at < good.size(); at += 5) {
    bad = good;
    bad[at] ^= 0x40;
    EXPECT_FALSE(ReadAll(bad).ok()) << "byte " << at;
  }
  refused(good + "x", "1 bytes after the last shard");
}

TEST(ClusterBackupFileTest, HugeDeclaredLengthsAreRefusedBeforeAllocating) {
  const std::string good = Written();
  // The header length (after the magic, version and flags).
  std::string bad = good;
  bad[16] = bad[17] = bad[18] = bad[19] = '\xff';
  Status st = ReadAll(bad);
  EXPECT_NE(st.message().find("a header of 4294967295 bytes"), std::string::npos) << st.message();
  // Shard 0's length: after the fixed header, the JSON, its CRC, the shard and position.
  const uint32_t json = static_cast<uint8_t>(good[16]) | static_cast<uint8_t>(good[17]) << 8;
  const size_t length_at = 20 + json + 4 + 4 + 8;
  bad = good;
  PutU64At(bad, length_at, ~uint64_t{0});
  st = ReadAll(bad);
  EXPECT_NE(st.message().find("shard 0 declares 18446744073709551615 bytes"), std::string::npos)
      << st.message();
  bad = good;
  PutU64At(bad, length_at, uint64_t{1} << 30);  // allowed, but past the file's end
  st = ReadAll(bad);
  EXPECT_NE(st.message().find("truncated: shard 0 declares 1073741824 bytes"), std::string::npos)
      << st.message();
}

TEST(ClusterBackupFileTest, ACopyOfAnotherShardOrWithViewsIsRefused) {
  store::MemoryFileSystem fs;
  ASSERT_TRUE(fs.CreateDirs("/b").ok());
  {
    auto w = BackupWriter::Create(fs, "/b/x", Header(1));
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Add(0, 7, store::EncodeSnapshot(Copy("other", 7))).ok());
    ASSERT_TRUE((*w)->Finish().ok());
  }
  Status st = ReadAll(*fs.ReadFile("/b/x"));
  EXPECT_NE(st.message().find("a copy of index 'other'"), std::string::npos) << st.message();
  {
    auto w = BackupWriter::Create(fs, "/b/y", Header(1));
    ASSERT_TRUE(w.ok());
    store::StorageSnapshot views = Copy("c", 7);
    views.names.push_back({"v", "IDMap:c", 1});
    ASSERT_TRUE((*w)->Add(0, 7, store::EncodeSnapshot(views)).ok());
    ASSERT_TRUE((*w)->Finish().ok());
  }
  st = ReadAll(*fs.ReadFile("/b/y"));
  EXPECT_NE(st.message().find("2 collections"), std::string::npos) << st.message();
}

TEST(ClusterBackupFileTest, AWriterLeavesNothingBehindUnlessFinishedAndChecksItsInput) {
  store::MemoryFileSystem fs;
  ASSERT_TRUE(fs.CreateDirs("/b").ok());
  {
    auto w = BackupWriter::Create(fs, "/b/z", Header());
    ASSERT_TRUE(w.ok());
    EXPECT_FALSE((*w)->Add(1, 7, "x").ok());  // out of order
    ASSERT_TRUE((*w)->Add(0, 7, "x").ok());
    EXPECT_FALSE((*w)->Finish().ok());  // shard 1 missing
  }
  EXPECT_FALSE(fs.Exists("/b/z").value());
  EXPECT_FALSE(fs.Exists("/b/z.tmp").value());
  BackupHeader h = Header();
  h.name = "a#b";
  EXPECT_FALSE(BackupWriter::Create(fs, "/b/z", h).ok());
  h = Header(0);
  EXPECT_FALSE(BackupWriter::Create(fs, "/b/z", h).ok());
}

}  // namespace
}  // namespace vecgpu::cluster
