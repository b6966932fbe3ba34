#include "core/store/file_system.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/store/memory_file_system.h"
#include "core/store/posix_file_system.h"

namespace vecgpu::store {
namespace {

// The file system under test and a directory of its own to work in.
struct PosixEnv {
  PosixFileSystem fs;
  std::string root;
  PosixEnv() {
    std::string tmpl = testing::TempDir() + "/vecgpu_fs_test_XXXXXX";
    char* dir = ::mkdtemp(tmpl.data());
    EXPECT_NE(dir, nullptr);
    root = tmpl;
  }
  ~PosixEnv() { std::filesystem::remove_all(root); }
};

struct MemoryEnv {
  MemoryFileSystem fs;
  std::string root = "/db";
  MemoryEnv() { EXPECT_TRUE(fs.CreateDirs(root).ok()); }
};

template <typename Env>
class FileSystemTest : public testing::Test {
 protected:
  FileSystem& fs() { return env_.fs; }
  std::string Path(const std::string& name) { return env_.root + "/" + name; }

  void Write(const std::string& name, std::string_view data) {
    auto file = fs().OpenForAppend(Path(name), /*truncate=*/true);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    ASSERT_TRUE((*file)->Append(data).ok());
    ASSERT_TRUE((*file)->Sync().ok());
    ASSERT_TRUE((*file)->Close().ok());
  }
  std::string Read(const std::string& name) {
    auto data = fs().ReadFile(Path(name));
    EXPECT_TRUE(data.ok()) << data.status().ToString();
    return data.ok() ? *data : "<error>";
  }
  bool Exists(const std::string& name) {
    auto exists = fs().Exists(Path(name));
    EXPECT_TRUE(exists.ok());
    return exists.ok() && *exists;
  }

  Env env_;
};

using Envs = testing::Types<PosixEnv, MemoryEnv>;
class EnvNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, PosixEnv> ? "Posix" : "Memory";
  }
};
TYPED_TEST_SUITE(FileSystemTest, Envs, EnvNames);

TYPED_TEST(FileSystemTest, AppendsAndReadsBack) {
  auto file = this->fs().OpenForAppend(this->Path("log"), false);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->size(), 0);
  ASSERT_TRUE((*file)->Append("hello").ok());
  ASSERT_TRUE((*file)->Append("").ok());
  ASSERT_TRUE((*file)->Append(" world").ok());
  EXPECT_EQ((*file)->size(), 11);
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->Close().ok());
  EXPECT_EQ(this->Read("log"), "hello world");

  auto again = this->fs().OpenForAppend(this->Path("log"), false);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->size(), 11);
  ASSERT_TRUE((*again)->Append("!").ok());
  EXPECT_EQ(this->Read("log"), "hello world!");

  auto emptied = this->fs().OpenForAppend(this->Path("log"), true);
  ASSERT_TRUE(emptied.ok());
  EXPECT_EQ((*emptied)->size(), 0);
  EXPECT_EQ(this->Read("log"), "");
}

TYPED_TEST(FileSystemTest, Truncates) {
  this->Write("log", "abcdef");
  ASSERT_TRUE(this->fs().Truncate(this->Path("log"), 3).ok());
  EXPECT_EQ(this->Read("log"), "abc");
  EXPECT_EQ(this->fs().Truncate(this->Path("missing"), 0).code(), StatusCode::kNotFound);
}

TYPED_TEST(FileSystemTest, RenameReplaces) {
  this->Write("a", "A");
  this->Write("b", "B");
  ASSERT_TRUE(this->fs().Rename(this->Path("a"), this->Path("b")).ok());
  EXPECT_EQ(this->Read("b"), "A");
  EXPECT_FALSE(this->Exists("a"));
  EXPECT_EQ(this->fs().Rename(this->Path("a"), this->Path("c")).code(), StatusCode::kNotFound);
}

TYPED_TEST(FileSystemTest, OpenFileFollowsRename) {
  auto file = this->fs().OpenForAppend(this->Path("tmp"), true);
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->Append("x").ok());
  ASSERT_TRUE(this->fs().Rename(this->Path("tmp"), this->Path("final")).ok());
  ASSERT_TRUE((*file)->Append("y").ok());
  EXPECT_EQ(this->Read("final"), "xy");
}

TYPED_TEST(FileSystemTest, Removes) {
  this->Write("a", "A");
  ASSERT_TRUE(this->fs().Remove(this->Path("a")).ok());
  EXPECT_FALSE(this->Exists("a"));
  EXPECT_EQ(this->fs().ReadFile(this->Path("a")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(this->fs().Remove(this->Path("a")).code(), StatusCode::kNotFound);
}

TYPED_TEST(FileSystemTest, ListsSorted) {
  this->Write("b", "");
  this->Write("c", "");
  this->Write("a", "");
  ASSERT_TRUE(this->fs().CreateDirs(this->Path("d/e")).ok());
  this->Write("d/f", "");
  auto names = this->fs().ListDir(this->env_.root);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b", "c", "d"}));
  auto sub = this->fs().ListDir(this->Path("d"));
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(*sub, (std::vector<std::string>{"e", "f"}));
  EXPECT_EQ(this->fs().ListDir(this->Path("nope")).status().code(), StatusCode::kNotFound);
}

TYPED_TEST(FileSystemTest, CreatesDirs) {
  ASSERT_TRUE(this->fs().CreateDirs(this->Path("x/y/z")).ok());
  ASSERT_TRUE(this->fs().CreateDirs(this->Path("x/y/z")).ok());  // exists: fine
  ASSERT_TRUE(this->fs().CreateDirs(this->Path("x//y/z/")).ok());
  EXPECT_TRUE(this->Exists("x"));
  EXPECT_TRUE(this->Exists("x/y/z"));
  EXPECT_FALSE(this->Exists("x/q"));
  EXPECT_FALSE(this->Exists("nothing/below"));
  this->Write("x/file", "");
  EXPECT_FALSE(this->fs().CreateDirs(this->Path("x/file")).ok());
  EXPECT_FALSE(this->fs().CreateDirs(this->Path("x/file/sub")).ok());
  EXPECT_TRUE(this->fs().SyncDir(this->Path("x/y")).ok());
  EXPECT_TRUE(this->fs().SyncDir(this->env_.root).ok());
  EXPECT_EQ(this->fs().SyncDir(this->Path("none")).code(), StatusCode::kNotFound);
}

TYPED_TEST(FileSystemTest, MissingThingsAreNotFound) {
  EXPECT_EQ(this->fs().ReadFile(this->Path("missing")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(this->fs().OpenForAppend(this->Path("no/dir"), false).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(this->fs().Lock(this->Path("no/LOCK")).status().code(), StatusCode::kNotFound);
}

TYPED_TEST(FileSystemTest, LockExcludes) {
  auto first = this->fs().Lock(this->Path("LOCK"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(this->Exists("LOCK"));
  auto second = this->fs().Lock(this->Path("LOCK"));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(second.status().message(), "data directory " + this->env_.root +
                                           " is in use by another process (lock " +
                                           this->Path("LOCK") + ")");
  first->reset();
  auto third = this->fs().Lock(this->Path("LOCK"));
  EXPECT_TRUE(third.ok()) << third.status().ToString();
}

// A full disk is ResourceExhausted, named by path and cause (/dev/full fails every write
// with ENOSPC).
TEST(PosixFileSystemTest, FullDiskIsResourceExhausted) {
  PosixFileSystem fs;
  if (!*fs.Exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  auto file = fs.OpenForAppend("/dev/full", false);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  Status full = (*file)->Append("data");
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(full.message(), "append /dev/full: No space left on device");
  EXPECT_EQ((*file)->size(), 0);
}

// The crash model of MemoryFileSystem.
class MemoryFileSystemTest : public testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fs_.CreateDirs("/db").ok()); }

  std::unique_ptr<WritableFile> Open(const std::string& path, bool truncate = false) {
    auto file = fs_.OpenForAppend(path, truncate);
    EXPECT_TRUE(file.ok()) << file.status().ToString();
    return file.ok() ? std::move(*file) : nullptr;
  }
  // Writes `data` to `path`, syncs it and its directory.
  void WriteDurably(const std::string& path, std::string_view data) {
    auto file = Open(path, true);
    ASSERT_TRUE(file->Append(data).ok());
    ASSERT_TRUE(file->Sync().ok());
    ASSERT_TRUE(file->Close().ok());
    ASSERT_TRUE(fs_.SyncDir("/db").ok());
  }
  std::string Read(const std::string& path) {
    auto data = fs_.ReadFile(path);
    return data.ok() ? *data : "<" + data.status().ToString() + ">";
  }
  bool Exists(const std::string& path) { return *fs_.Exists(path); }

  MemoryFileSystem fs_;
};

TEST_F(MemoryFileSystemTest, UnsyncedAppendsVanishOnCrash) {
  auto file = Open("/db/log");
  ASSERT_TRUE(fs_.SyncDir("/db").ok());
  ASSERT_TRUE(file->Append("synced").ok());
  ASSERT_TRUE(file->Sync().ok());
  ASSERT_TRUE(file->Append("+lost").ok());
  EXPECT_EQ(Read("/db/log"), "synced+lost");
  fs_.Crash();
  EXPECT_EQ(Read("/db/log"), "synced");
  EXPECT_EQ(file->Append("x").code(), StatusCode::kUnavailable);
  EXPECT_EQ(file->Sync().code(), StatusCode::kUnavailable);
  // The file system itself works on after Crash().
  auto reopened = Open("/db/log");
  EXPECT_EQ(reopened->size(), 6);
  EXPECT_TRUE(reopened->Append("more").ok());
}

TEST_F(MemoryFileSystemTest, UnsyncedTruncationReverts) {
  WriteDurably("/db/log", "abc");
  auto file = Open("/db/log", /*truncate=*/true);
  EXPECT_EQ(Read("/db/log"), "");
  fs_.Crash();
  EXPECT_EQ(Read("/db/log"), "abc");
}

TEST_F(MemoryFileSystemTest, FileInUnsyncedDirectoryVanishes) {
  auto file = Open("/db/new");
  ASSERT_TRUE(file->Append("data").ok());
  ASSERT_TRUE(file->Sync().ok());
  fs_.Crash();
  EXPECT_FALSE(Exists("/db/new"));

  // A new directory must itself be synced into its parent.
  ASSERT_TRUE(fs_.CreateDirs("/db/c1").ok());
  WriteDurably("/db/c1/x", "x");  // syncs /db after the file: /db/c1 is in it now
  ASSERT_TRUE(fs_.CreateDirs("/db/c2").ok());
  auto y = Open("/db/c2/y");
  ASSERT_TRUE(y->Sync().ok());
  ASSERT_TRUE(fs_.SyncDir("/db/c2").ok());  // but /db is not synced again
  fs_.Crash();
  EXPECT_TRUE(Exists("/db/c1"));
  EXPECT_FALSE(Exists("/db/c1/x"));  // /db/c1 itself was never synced
  EXPECT_FALSE(Exists("/db/c2"));
  EXPECT_FALSE(Exists("/db/c2/y"));
  EXPECT_TRUE(Exists("/db"));  // directories under the root are durable when made
}

TEST_F(MemoryFileSystemTest, RenameIsDurableOnceTheDirectoryIsSynced) {
  WriteDurably("/db/CURRENT", "old");
  WriteDurably("/db/tmp", "new");
  ASSERT_TRUE(fs_.Rename("/db/tmp", "/db/CURRENT").ok());
  fs_.Crash();
  EXPECT_EQ(Read("/db/CURRENT"), "old");
  EXPECT_EQ(Read("/db/tmp"), "new");

  ASSERT_TRUE(fs_.Rename("/db/tmp", "/db/CURRENT").ok());
  ASSERT_TRUE(fs_.SyncDir("/db").ok());
  fs_.Crash();
  EXPECT_EQ(Read("/db/CURRENT"), "new");
  EXPECT_FALSE(Exists("/db/tmp"));
}

TEST_F(MemoryFileSystemTest, UnsyncedRemoveBringsBackTheDurableBytes) {
  WriteDurably("/db/log", "kept");
  auto file = Open("/db/log");
  ASSERT_TRUE(file->Append("+unsynced").ok());
  ASSERT_TRUE(fs_.Remove("/db/log").ok());
  EXPECT_FALSE(Exists("/db/log"));
  fs_.Crash();
  EXPECT_EQ(Read("/db/log"), "kept");

  ASSERT_TRUE(fs_.Remove("/db/log").ok());
  ASSERT_TRUE(fs_.SyncDir("/db").ok());
  fs_.Crash();
  EXPECT_FALSE(Exists("/db/log"));
}

TEST_F(MemoryFileSystemTest, CrashReleasesLocks) {
  auto lock = fs_.Lock("/db/LOCK");
  ASSERT_TRUE(lock.ok());
  EXPECT_FALSE(fs_.Lock("/db/LOCK").ok());
  fs_.Crash();
  auto after = fs_.Lock("/db/LOCK");
  ASSERT_TRUE(after.ok());
  lock->reset();  // the stale lock going away does not release the new one
  EXPECT_FALSE(fs_.Lock("/db/LOCK").ok());
}

TEST_F(MemoryFileSystemTest, FailAtFailsOneStepWithoutEffect) {
  auto file = Open("/db/log");
  fs_.FailAt(fs_.steps() + 2, Internal("injected"), /*crash=*/false);
  ASSERT_TRUE(file->Append("a").ok());
  Status failed = file->Append("b");
  EXPECT_EQ(failed.code(), StatusCode::kInternal);
  EXPECT_EQ(failed.message(), "injected");
  EXPECT_TRUE(file->Append("c").ok());
  EXPECT_EQ(Read("/db/log"), "ac");
  EXPECT_EQ(file->size(), 2);
}

TEST_F(MemoryFileSystemTest, FailAtCrashesBeforeTheStep) {
  WriteDurably("/db/tmp", "new");
  auto unsynced = Open("/db/unsynced");
  int64_t rename_step = fs_.steps() + 1;
  fs_.FailAt(rename_step, Unavailable("power cut"), /*crash=*/true);
  Status failed = fs_.Rename("/db/tmp", "/db/CURRENT");
  EXPECT_EQ(failed.message(), "power cut");
  EXPECT_EQ(fs_.steps(), rename_step);
  EXPECT_FALSE(Exists("/db/CURRENT"));   // the rename never happened
  EXPECT_FALSE(Exists("/db/unsynced"));  // and the crash came first
  EXPECT_EQ(Read("/db/tmp"), "new");     // reads still work
  EXPECT_EQ(fs_.Rename("/db/tmp", "/db/CURRENT").code(), StatusCode::kUnavailable);
  EXPECT_EQ(fs_.OpenForAppend("/db/x", false).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(fs_.steps(), rename_step);  // refused calls are not counted
  fs_.Restart();
  EXPECT_TRUE(fs_.Rename("/db/tmp", "/db/CURRENT").ok());
  EXPECT_EQ(Read("/db/CURRENT"), "new");
}

TEST_F(MemoryFileSystemTest, FailAtCrashDropsUnsyncedWrites) {
  auto file = Open("/db/log");
  ASSERT_TRUE(fs_.SyncDir("/db").ok());
  ASSERT_TRUE(file->Append("one").ok());
  ASSERT_TRUE(file->Sync().ok());
  ASSERT_TRUE(file->Append("two").ok());
  fs_.FailAt(fs_.steps() + 1, Internal("crash at sync"), /*crash=*/true);
  EXPECT_FALSE(file->Sync().ok());
  fs_.Restart();
  EXPECT_EQ(Read("/db/log"), "one");
  EXPECT_EQ(file->Append("x").code(), StatusCode::kUnavailable);
}

TEST_F(MemoryFileSystemTest, SpaceLimitMakesAShortWrite) {
  WriteDurably("/db/a", "1234");
  fs_.SetSpaceLimit(10);
  auto file = Open("/db/log");
  ASSERT_TRUE(file->Append("abc").ok());
  Status full = file->Append("defghij");
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(full.message(), "append /db/log: No space left on device");
  EXPECT_EQ(file->size(), 6);
  EXPECT_EQ(Read("/db/log"), "abcdef");
  EXPECT_EQ(file->Append("k").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(file->size(), 6);
  ASSERT_TRUE(fs_.Remove("/db/a").ok());  // frees space
  EXPECT_TRUE(file->Append("k").ok());
  fs_.SetSpaceLimit(-1);
  EXPECT_TRUE(file->Append(std::string(100, 'z')).ok());
}

TEST_F(MemoryFileSystemTest, FailedSyncsMakeNothingDurable) {
  auto file = Open("/db/log");
  ASSERT_TRUE(fs_.SyncDir("/db").ok());
  ASSERT_TRUE(file->Append("data").ok());
  fs_.FailSyncs(Internal("sync /db/log: Input/output error"));
  EXPECT_EQ(file->Sync().code(), StatusCode::kInternal);
  auto other = Open("/db/other");
  EXPECT_EQ(fs_.SyncDir("/db").code(), StatusCode::kInternal);
  fs_.Crash();
  EXPECT_EQ(Read("/db/log"), "");
  EXPECT_FALSE(Exists("/db/other"));

  fs_.FailSyncs(Status::Ok());
  auto again = Open("/db/log");
  ASSERT_TRUE(again->Append("data").ok());
  EXPECT_TRUE(again->Sync().ok());
  fs_.Crash();
  EXPECT_EQ(Read("/db/log"), "data");
}

TEST_F(MemoryFileSystemTest, CountsEveryMutatingCall) {
  int64_t start = fs_.steps();
  auto file = Open("/db/log");                       // 1
  ASSERT_TRUE(file->Append("a").ok());               // 2
  ASSERT_TRUE(file->Sync().ok());                    // 3
  ASSERT_TRUE(file->Close().ok());                   // 4
  ASSERT_TRUE(fs_.Rename("/db/log", "/db/x").ok());  // 5
  ASSERT_TRUE(fs_.Truncate("/db/x", 0).ok());        // 6
  ASSERT_TRUE(fs_.Remove("/db/x").ok());             // 7
  ASSERT_TRUE(fs_.CreateDirs("/db/d").ok());         // 8
  ASSERT_TRUE(fs_.SyncDir("/db").ok());              // 9
  EXPECT_FALSE(fs_.Remove("/db/x").ok());            // 10: failures count too
  EXPECT_TRUE(fs_.ReadFile("/db/d").status().code() != StatusCode::kOk);
  EXPECT_TRUE(fs_.ListDir("/db").ok());
  EXPECT_TRUE(fs_.Exists("/db").ok());
  EXPECT_EQ(fs_.steps() - start, 10);
}

}  // namespace
}  // namespace vecgpu::store
