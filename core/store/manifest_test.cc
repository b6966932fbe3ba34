#include "core/store/manifest.h"

#include <gtest/gtest.h>

#include <set>

#include "core/store/memory_file_system.h"

namespace vecgpu::store {
namespace {

Manifest Sample() {
  Manifest m;
  m.cut = 977;
  m.entries = {{3, 980, "tenants/acme/docs@00000000000000000003.00000000000000000980.snap"},
               {41, 977, "tenants/~/x@00000000000000000041.00000000000000000977.snap"}};
  return m;
}

TEST(ManifestTest, RoundTripsAndSwitchesAtomically) {
  EXPECT_TRUE(*DecodeManifest(EncodeManifest(Sample()), "m") == Sample());
  MemoryFileSystem fs;
  ASSERT_TRUE(fs.CreateDirs("/data").ok());
  EXPECT_FALSE(ReadManifest(fs, "/data")->has_value());  // none yet
  ASSERT_TRUE(WriteManifest(fs, "/data", Sample()).ok());
  Manifest next = Sample();
  next.cut = 2000;
  next.entries.pop_back();
  // A crash before any step of the switch leaves the old manifest or the new one, whole.
  const int64_t before = fs.steps();
  ASSERT_TRUE(WriteManifest(fs, "/data", next).ok());
  const int64_t steps = fs.steps() - before;
  for (int64_t step = 1; step <= steps; ++step) {
    MemoryFileSystem f;
    ASSERT_TRUE(f.CreateDirs("/data").ok());
    ASSERT_TRUE(WriteManifest(f, "/data", Sample()).ok());
    f.FailAt(f.steps() + step, Unavailable("crashed"), /*crash=*/true);
    (void)WriteManifest(f, "/data", next);
    f.Restart();
    auto m = ReadManifest(f, "/data");
    ASSERT_TRUE(m.ok() && m->has_value()) << step;
    EXPECT_TRUE(**m == Sample() || **m == next) << step;
  }
}

TEST(ManifestTest, DamageAndEscapingFileNamesAreRefused) {
  const std::string bytes = EncodeManifest(Sample());
  for (size_t at = 0; at < bytes.size(); at += 7) {
    std::string bad = bytes;
    bad[at] ^= 0x04;
    auto r = DecodeManifest(bad, "/d/MANIFEST");
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << at;
    EXPECT_NE(r.status().message().find("/d/MANIFEST"), std::string::npos);
  }
  EXPECT_FALSE(DecodeManifest(bytes.substr(0, bytes.size() - 1), "m").ok());
  for (const char* file : {"/etc/passwd", "../x.snap", "tenants/../../x", ""}) {
    Manifest m;
    m.entries = {{1, 1, file}};
    auto r = DecodeManifest(EncodeManifest(m), "m");
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << file;
  }
}

// Index ids that must each get a file name of their own, inside their directory.
TEST(ManifestTest, EncodedNamesAreSafeAndDistinct) {
  const std::string long_id(10'000, 'a');
  std::string long_id2 = long_id;
  long_id2.back() = 'b';  // differs only past the kept prefix
  const std::vector<std::string> ids = {"",
                                        ".",
                                        "..",
                                        "a/b",
                                        "a.b",
                                        "a.c",
                                        "a%2Eb",
                                        "A",
                                        "a",
                                        "~",
                                        long_id,
                                        long_id2,
                                        std::string("\xff\xfe\x00z", 4),
                                        "/",
                                        "a\\b",
                                        "caf\xc3\xa9"};
  std::set<std::string> names;
  for (const std::string& id : ids) {
    const std::string n = EncodeName(id);
    SCOPED_TRACE(n);
    EXPECT_TRUE(names.insert(n).second) << "collides";
    EXPECT_NE(n, ".");
    EXPECT_NE(n, "..");
    EXPECT_FALSE(n.empty());
    EXPECT_LE(n.size(), 100u);
    for (char c : n) {
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '%' ||
                  c == '~')
          << int(c);
    }
  }
  EXPECT_EQ(EncodeName("docs-1_v2"), "docs-1_v2");  // readable when it can be
  EXPECT_EQ(EncodeName("a.b"), "a%2Eb");
}

}  // namespace
}  // namespace vecgpu::store
