// The data directory end to end over the crash-modelling MemoryFileSystem: snapshots plus the
// log rebuild every index exactly; a crash at any I/O step of a snapshot (its files, the
// manifest switch, the removal of what it replaces) loses nothing; writes racing a snapshot
// are kept; a full or failing disk refuses writes and keeps serving; damage is named.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/store/memory_file_system.h"
#include "core/store/store.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "cpu_fallback/engine_state.h"

namespace vecgpu::store {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::CreateEveryKind;
using vecgpu::testing::EveryKindOnce;
using vecgpu::testing::ExpectSame;
using vecgpu::testing::kStateDim;
using vecgpu::testing::RandomOps;
using vecgpu::testing::Rows;

constexpr char kDir[] = "/data";
const std::string kTenant = "t";

// An engine and the store it logs to, over `fs`.
struct Node {
  explicit Node(FileSystem& fs, StoreOptions options = Options()) {
    cpu::ConfigureCpuThreads();
    cpu::UseOneThreadHere();
    EXPECT_TRUE(limits.Validate().ok());
    engine = std::make_unique<Engine>(limits, factory);
    auto opened = Store::Open(fs, options, *engine, &report);
    status = opened.status();
    if (opened.ok()) {
      store = std::move(*opened);
      engine->set_log(store.get());
    }
  }
  static StoreOptions Options() {
    StoreOptions o;
    o.dir = kDir;
    o.segment_bytes = 4096;  // many segments, so snapshots have some to remove
    o.snapshot_log_bytes = 0;
    o.snapshot_interval_s = 0;
    return o;
  }
  Limits limits;
  cpu::CpuBackendFactory factory;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Store> store;
  RecoveryReport report;
  Status status;
};

// The same state, made by the same deterministic calls, on an engine with no data directory.
std::unique_ptr<Engine> Reference(Node& like, int phase) {
  auto e = std::make_unique<Engine>(like.limits, like.factory);
  CreateEveryKind(*e, kTenant);
  RandomOps(*e, kTenant, 150, 1);
  if (phase > 0) {
    RandomOps(*e, kTenant, 150, 2);
    EveryKindOnce(*e, kTenant);
  }
  return e;
}

// A base dropped while its view lives on: the view keeps the storage.
void ViewOutlivesItsBase(Engine& e) {
  ASSERT_TRUE(e.Create(kTenant, {"b2", "L2", kStateDim, ""}).ok());
  ASSERT_TRUE(e.Create(kTenant, {"v2", "IDMap2:b2", kStateDim, ""}).ok());
  const int64_t ids[] = {7, 9};
  ASSERT_TRUE(e.Add(kTenant, "v2", Rows(Clustered(50, kStateDim), 3, 2), ids).ok());
  ASSERT_TRUE(e.Drop(kTenant, "b2").ok());
}

TEST(StoreRecoveryTest, SnapshotsAndTheLogRebuildEveryIndex) {
  MemoryFileSystem fs;
  Node a(fs);
  ASSERT_TRUE(a.status.ok()) << a.status.message();
  CreateEveryKind(*a.engine, kTenant);
  RandomOps(*a.engine, kTenant, 150, 1);
  auto first = a.store->Snapshot();
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_EQ(first->written, 5);  // every storage; the views share theirs
  RandomOps(*a.engine, kTenant, 150, 2);
  EveryKindOnce(*a.engine, kTenant);
  ViewOutlivesItsBase(*a.engine);
  fs.Crash();
  fs.Restart();
  {
    Node b(fs);
    ASSERT_TRUE(b.status.ok()) << b.status.message();
    EXPECT_EQ(b.report.snapshots, 5);
    EXPECT_GT(b.report.records, 100);
    ExpectSame(*a.engine, *b.engine, kTenant);
    // Snapshot again: the replayed changes are written, and the next start replays nothing.
    auto second = b.store->Snapshot();
    ASSERT_TRUE(second.ok()) << second.status().message();
    EXPECT_GT(second->written, 0);
    EXPECT_GT(second->removed, 0);  // the old files and log segments
  }
  fs.Crash();
  fs.Restart();
  Node c(fs);
  ASSERT_TRUE(c.status.ok()) << c.status.message();
  EXPECT_EQ(c.report.records, 0);
  ExpectSame(*a.engine, *c.engine, kTenant);
  EXPECT_TRUE(c.engine->Describe(kTenant, "v2").ok());
  EXPECT_FALSE(c.engine->Describe(kTenant, "b2").ok());
  // An unchanged storage is not written again.
  auto third = c.store->Snapshot();
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->written, 0);
  EXPECT_GT(third->unchanged, 0);
}

// Builds phase 0, snapshots, then phase 1: the state a second snapshot captures.
void BuildTwoPhases(Node& n) {
  CreateEveryKind(*n.engine, kTenant);
  RandomOps(*n.engine, kTenant, 150, 1);
  ASSERT_TRUE(n.store->Snapshot().ok());
  RandomOps(*n.engine, kTenant, 150, 2);
  EveryKindOnce(*n.engine, kTenant);
}

TEST(StoreRecoveryTest, ACrashAtAnyStepOfASnapshotLosesNothing) {
  int64_t steps = 0;
  {
    MemoryFileSystem fs;
    Node n(fs);
    BuildTwoPhases(n);
    const int64_t before = fs.steps();
    auto rep = n.store->Snapshot();
    ASSERT_TRUE(rep.ok());
    ASSERT_GT(rep->removed, 3);
    steps = fs.steps() - before;
  }
  ASSERT_GT(steps, 20);  // files of 5 storages, the manifest switch, the removals
  std::unique_ptr<Engine> want;
  for (int64_t step = 1; step <= steps + 1; ++step) {
    SCOPED_TRACE("crash before step " + std::to_string(step) + " of " + std::to_string(steps));
    MemoryFileSystem fs;
    {
      Node n(fs);
      BuildTwoPhases(n);
      if (!want) want = Reference(n, 1);
      fs.FailAt(fs.steps() + step, Unavailable("crashed"), /*crash=*/true);
      (void)n.store->Snapshot();
      if (step > steps) fs.Crash();  // after the whole snapshot
    }
    fs.Restart();
    Node back(fs);
    ASSERT_TRUE(back.status.ok()) << back.status.message();
    ExpectSame(*want, *back.engine, kTenant);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(StoreRecoveryTest, WritesRacingSnapshotsAreKept) {
  MemoryFileSystem fs;
  Node a(fs);
  for (const char* name : {"x", "y"}) {
    ASSERT_TRUE(a.engine->Create(kTenant, {name, "L2", kStateDim, ""}).ok());
  }
  ASSERT_TRUE(a.engine->Create(kTenant, {"vx", "IDMap2:x", kStateDim, ""}).ok());
  const FloatMatrix data = Clustered(2000, kStateDim);
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 3; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < 300; ++i) {
        const FloatMatrix row = Rows(data, (w * 300 + i) % 2000, 1);
        if (w == 2) {
          const int64_t id[] = {i};
          ASSERT_TRUE(a.engine->Add(kTenant, "vx", row, id).ok());
        } else {
          ASSERT_TRUE(a.engine->Add(kTenant, w == 0 ? "x" : "y", row, {}).ok());
        }
      }
    });
  }
  std::atomic<int> taken{0};
  std::thread snapshots([&] {
    while (!stop || taken < 3) {
      ASSERT_TRUE(a.store->Snapshot().ok());
      ++taken;
    }
  });
  for (auto& t : writers) t.join();
  stop = true;
  snapshots.join();
  fs.Crash();
  fs.Restart();
  Node b(fs);
  ASSERT_TRUE(b.status.ok()) << b.status.message();
  EXPECT_EQ(b.engine->Describe(kTenant, "y")->backend.ntotal, 300);
  EXPECT_EQ(b.engine->Describe(kTenant, "vx")->backend.ntotal, 300);
  EXPECT_EQ(b.engine->Describe(kTenant, "x")->backend.ntotal, 600);  // its own and the view's
  ExpectSame(*a.engine, *b.engine, kTenant);
}

// The storage of `name`, found through the engine's listing.
std::shared_ptr<IndexStorage> StorageOf(Engine& e, const std::string& name) {
  Engine::Frozen f = e.Freeze();
  std::shared_ptr<IndexStorage> out;
  for (auto& s : f.held) {
    if (s->origin().name == name) out = s;
    Engine::ReleaseHeld(*s);
  }
  for (auto& s : f.busy) {
    if (s->origin().name == name) out = s;
  }
  return out;
}

// Holds a storage's write order for its lifetime, as a long write (a training run) does.
class Writing {
 public:
  explicit Writing(Mutex& mu) NO_THREAD_SAFETY_ANALYSIS : mu_(mu) { mu_.Lock(); }
  ~Writing() NO_THREAD_SAFETY_ANALYSIS { mu_.Unlock(); }

 private:
  Mutex& mu_;
};

TEST(StoreRecoveryTest, ASnapshotNeverWaitsForAStorageBeingWritten) {
  MemoryFileSystem fs;
  Node a(fs);
  for (const char* name : {"x", "y"}) {
    ASSERT_TRUE(a.engine->Create(kTenant, {name, "L2", kStateDim, ""}).ok());
  }
  const FloatMatrix data = Clustered(400, kStateDim);
  ASSERT_TRUE(a.engine->Add(kTenant, "x", Rows(data, 0, 10), {}).ok());
  ASSERT_TRUE(a.store->Snapshot().ok());
  ASSERT_TRUE(a.engine->Add(kTenant, "x", Rows(data, 10, 10), {}).ok());
  ASSERT_TRUE(a.engine->Create(kTenant, {"z", "L2", kStateDim, ""}).ok());  // never snapshotted
  ASSERT_TRUE(a.engine->Add(kTenant, "z", Rows(data, 20, 5), {}).ok());
  // x and z are being written (as by a training run): their write orders are held.
  auto x = StorageOf(*a.engine, "x");
  auto z = StorageOf(*a.engine, "z");
  auto writing_x = std::make_unique<Writing>(x->write_order());
  auto writing_z = std::make_unique<Writing>(z->write_order());
  ASSERT_TRUE(a.engine->Add(kTenant, "y", Rows(data, 30, 7), {}).ok());
  ASSERT_TRUE(a.engine->Create(kTenant, {"w", "L2", kStateDim, ""}).ok());  // no catalog wait
  auto rep = a.store->Snapshot();  // returns with x and z held
  writing_x.reset();
  writing_z.reset();
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep->busy, 2);
  EXPECT_EQ(rep->written, 2);  // y and w
  ASSERT_TRUE(a.engine->Add(kTenant, "x", Rows(data, 40, 3), {}).ok());
  ASSERT_TRUE(a.engine->Add(kTenant, "z", Rows(data, 50, 3), {}).ok());
  fs.Crash();
  fs.Restart();
  Node b(fs);
  ASSERT_TRUE(b.status.ok()) << b.status.message();
  EXPECT_EQ(b.engine->Describe(kTenant, "x")->backend.ntotal, 23);
  EXPECT_EQ(b.engine->Describe(kTenant, "z")->backend.ntotal, 8);
  ExpectSame(*a.engine, *b.engine, kTenant);
}

TEST(StoreRecoveryTest, NamesMovingBetweenStoragesDuringSnapshotsAreKept) {
  // Creates and drops no longer wait for snapshots: a name dropped from one storage and
  // created on another while storages are captured one by one must not come back twice, and
  // writes through either incarnation must survive.
  MemoryFileSystem fs;
  Node a(fs);
  for (const char* name : {"x", "y"}) {
    ASSERT_TRUE(a.engine->Create(kTenant, {name, "L2", kStateDim, ""}).ok());
  }
  const FloatMatrix data = Clustered(2000, kStateDim);
  std::atomic<bool> stop{false};
  std::thread mover([&] {
    for (int i = 0; i < 150; ++i) {
      const std::string base = i % 2 ? "x" : "y";
      ASSERT_TRUE(a.engine->Create(kTenant, {"n", "IDMap2:" + base, kStateDim, ""}).ok());
      const int64_t id[] = {i};
      ASSERT_TRUE(a.engine->Add(kTenant, "n", Rows(data, i, 1), id).ok());
      ASSERT_TRUE(a.engine->Add(kTenant, base, Rows(data, 1000 + i, 1), {}).ok());
      ASSERT_TRUE(a.engine->Drop(kTenant, "n").ok());
      if (i % 10 == 0) {
        ASSERT_TRUE(a.engine->Create(kTenant, {"f", "L2", kStateDim, ""}).ok());
        ASSERT_TRUE(a.engine->Add(kTenant, "f", Rows(data, i, 2), {}).ok());
        ASSERT_TRUE(a.engine->Drop(kTenant, "f").ok());
      }
    }
    ASSERT_TRUE(a.engine->Create(kTenant, {"n", "IDMap2:x", kStateDim, ""}).ok());
    stop = true;
  });
  int taken = 0;
  while (!stop || taken < 3) {
    auto rep = a.store->Snapshot();
    // Under this churn a snapshot may be abandoned (a storage busy while a collection was
    // dropped); it never records a state the log cannot complete.
    if (!rep.ok()) {
      ASSERT_EQ(rep.status().code(), StatusCode::kUnavailable) << rep.status().message();
      continue;
    }
    ++taken;
  }
  mover.join();
  fs.Crash();
  fs.Restart();
  Node b(fs);
  ASSERT_TRUE(b.status.ok()) << b.status.message();
  EXPECT_EQ(b.engine->Describe(kTenant, "x")->backend.ntotal, 150);  // 75 + 75 through views
  EXPECT_EQ(b.engine->Describe(kTenant, "y")->backend.ntotal, 150);
  EXPECT_FALSE(b.engine->Describe(kTenant, "f").ok());
  ExpectSame(*a.engine, *b.engine, kTenant);
}

TEST(StoreRecoveryTest, ATenantsSnapshotCoversOnlyItsOwnIndexes) {
  MemoryFileSystem fs;
  Node a(fs);
  const FloatMatrix data = Clustered(400, kStateDim);
  for (const std::string t : {"t", "u"}) {
    ASSERT_TRUE(a.engine->Create(t, {"docs", "L2", kStateDim, ""}).ok());
    ASSERT_TRUE(a.engine->Add(t, "docs", Rows(data, 0, 10), {}).ok());
  }
  auto rep = a.store->Snapshot("t");
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep->written, 1);
  EXPECT_EQ(rep->out_of_scope, 1);
  ASSERT_TRUE(a.engine->Add("u", "docs", Rows(data, 10, 5), {}).ok());
  fs.Crash();
  fs.Restart();
  Node b(fs);
  ASSERT_TRUE(b.status.ok()) << b.status.message();
  EXPECT_EQ(b.engine->Describe("t", "docs")->backend.ntotal, 10);
  EXPECT_EQ(b.engine->Describe("u", "docs")->backend.ntotal, 15);  // from the log
  EXPECT_GT(b.report.records, 0);
  ExpectSame(*a.engine, *b.engine, "t");
  ExpectSame(*a.engine, *b.engine, "u");
}

TEST(StoreRecoveryTest, AFullOrFailingDiskRefusesWritesAndKeepsServing) {
  MemoryFileSystem fs;
  Node a(fs);
  ASSERT_TRUE(a.engine->Create(kTenant, {"c", "L2", kStateDim, ""}).ok());
  const FloatMatrix x = Clustered(100, kStateDim);
  ASSERT_TRUE(a.engine->Add(kTenant, "c", Rows(x, 0, 10), {}).ok());
  fs.SetSpaceLimit(0);
  Status full = a.engine->Add(kTenant, "c", Rows(x, 10, 10), {}).status();
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted) << full.message();
  EXPECT_NE(full.message().find("refused"), std::string::npos) << full.message();
  EXPECT_FALSE(a.engine->Create(kTenant, {"d", "L2", kStateDim, ""}).ok());
  EXPECT_TRUE(a.engine->Search(kTenant, "c", Rows(x, 0, 2), 3, {}).ok());  // still served
  EXPECT_EQ(a.engine->Describe(kTenant, "c")->backend.ntotal, 10);
  fs.SetSpaceLimit(-1);
  ASSERT_TRUE(a.engine->Add(kTenant, "c", Rows(x, 20, 10), {}).ok());  // healthy again
  fs.FailSyncs(Internal("/data/wal: Input/output error"));
  Status eio = a.engine->Add(kTenant, "c", Rows(x, 30, 10), {}).status();
  EXPECT_FALSE(eio.ok());
  EXPECT_NE(eio.message().find("Input/output error"), std::string::npos) << eio.message();
  EXPECT_FALSE(a.store->Snapshot().ok());  // a snapshot cannot be made durable either
  EXPECT_TRUE(a.engine->Search(kTenant, "c", Rows(x, 0, 2), 3, {}).ok());
  fs.FailSyncs(Status::Ok());
  ASSERT_TRUE(a.engine->Add(kTenant, "c", Rows(x, 40, 10), {}).ok());
  EXPECT_EQ(a.engine->Describe(kTenant, "c")->backend.ntotal, 30);
  fs.Crash();
  fs.Restart();
  Node b(fs);
  ASSERT_TRUE(b.status.ok()) << b.status.message();
  ExpectSame(*a.engine, *b.engine, kTenant);
}

// Flips one byte of the only snapshot file under /data/tenants.
std::string DamageASnapshot(MemoryFileSystem& fs) {
  auto tenants = fs.ListDir("/data/tenants");
  EXPECT_TRUE(tenants.ok());
  const std::string dir = "/data/tenants/" + tenants->front();
  auto files = fs.ListDir(dir);
  EXPECT_EQ(files->size(), 1u);
  const std::string path = dir + "/" + files->front();
  std::string bytes = *fs.ReadFile(path);
  bytes[bytes.size() / 2] ^= 0x40;
  auto f = fs.OpenForAppend(path, /*truncate=*/true);
  EXPECT_TRUE((*f)->Append(bytes).ok());
  EXPECT_TRUE((*f)->Sync().ok());
  return path;
}

TEST(StoreRecoveryTest, ADamagedOrMissingSnapshotIsNamed) {
  for (bool missing : {false, true}) {
    MemoryFileSystem fs;
    {
      Node a(fs);
      ASSERT_TRUE(a.engine->Create(kTenant, {"c", "L2", kStateDim, ""}).ok());
      ASSERT_TRUE(a.engine->Add(kTenant, "c", Clustered(10, kStateDim), {}).ok());
      ASSERT_TRUE(a.store->Snapshot().ok());
      ASSERT_TRUE(a.engine->Create(kTenant, {"later", "L2", kStateDim, ""}).ok());
    }
    std::string path = DamageASnapshot(fs);
    if (missing) ASSERT_TRUE(fs.Remove(path).ok());
    Node refused(fs);
    EXPECT_EQ(refused.status.code(), StatusCode::kDataLoss);
    EXPECT_NE(refused.status.message().find(path), std::string::npos) << refused.status.message();
    EXPECT_NE(refused.status.message().find(missing ? "missing" : "CRC"), std::string::npos)
        << refused.status.message();
    refused.store.reset();
    StoreOptions o = Node::Options();
    o.recover_from_last_good = true;
    Node served(fs, o);
    ASSERT_TRUE(served.status.ok()) << served.status.message();
    EXPECT_NE(served.report.damage.find(path), std::string::npos);
    EXPECT_FALSE(served.engine->Describe(kTenant, "c").ok());     // set aside
    EXPECT_TRUE(served.engine->Describe(kTenant, "later").ok());  // from the log
    if (!missing) EXPECT_TRUE(*fs.Exists(path + ".damaged"));
    served.store.reset();
    // What was set aside stays aside: a crash, then a start without the flag, serves the rest.
    fs.Crash();
    fs.Restart();
    Node again(fs);
    ASSERT_TRUE(again.status.ok()) << again.status.message();
    EXPECT_TRUE(again.engine->Describe(kTenant, "later").ok());
  }
}

}  // namespace
}  // namespace vecgpu::store
