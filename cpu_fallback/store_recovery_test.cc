// The data directory end to end over the crash-modelling MemoryFileSystem: snapshots plus the
// log rebuild every index exactly; a crash at any I/O step of a snapshot (its files, the
// manifest switch, the removal of what it replaces) loses nothing; writes racing a snapshot
// are kept; a full or failing disk refuses writes and keeps serving; damage is named.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/store/memory_file_system.h"
#include "core/store/store.h"
#include "core/store/wal.h"
#include "core/util/interrupt.h"
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
  explicit Node(FileSystem& fs, StoreOptions options = Options(), Limits l = Limits())
      : limits(l) {
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

// Every record of the log, decoded, in order.
std::vector<std::pair<uint64_t, WalRecord>> LogOf(FileSystem& fs) {
  std::vector<std::pair<uint64_t, WalRecord>> out;
  auto read = ReadWal(fs, std::string(kDir) + "/wal", 1, [&](uint64_t seq, std::string_view p) {
    ASSIGN_OR_RETURN(WalRecord r, DecodeRecord(p));
    out.emplace_back(seq, std::move(r));
    return Status::Ok();
  });
  EXPECT_TRUE(read.ok()) << read.status().message();
  return out;
}

TEST(StoreRecoveryTest, EveryRecordNamesItsStorageInItsOwnOrder) {
  MemoryFileSystem fs;
  Node a(fs);
  const FloatMatrix data = Clustered(100, kStateDim);
  ASSERT_TRUE(a.engine->Create(kTenant, {"x", "L2", kStateDim, ""}).ok());
  ASSERT_TRUE(a.engine->Create(kTenant, {"y", "IDMap2,Flat", kStateDim, ""}).ok());
  ASSERT_TRUE(a.engine->Create(kTenant, {"v", "IDMap2:x", kStateDim, ""}).ok());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(a.engine->Add(kTenant, "x", Rows(data, i * 5, 5), {}).ok());
    const int64_t ids[] = {100 + i};
    ASSERT_TRUE(a.engine->Add(kTenant, i % 2 ? "v" : "y", Rows(data, 50 + i, 1), ids).ok());
  }
  ASSERT_TRUE(a.engine->Drop(kTenant, "v").ok());
  std::map<uint64_t, uint64_t> last;  // storage id -> its last record
  std::map<uint64_t, std::string> creator;
  for (const auto& [seq, r] : LogOf(fs)) {
    ASSERT_TRUE(r.has_storage);
    const uint64_t storage = r.storage_id ? r.storage_id : seq;
    if (r.storage_id == 0) {
      EXPECT_EQ(r.type, RecordType::kCreate);
      creator[storage] = r.collection;
    }
    EXPECT_EQ(r.storage_seq, last[storage] + 1) << "record " << seq;
    last[storage] = r.storage_seq;
  }
  ASSERT_EQ(creator.size(), 2u);  // x (with its view v) and y
  for (const auto& [id, name] : creator) {
    // x: its create, the view's create, 4 adds, 2 through v, the drop of v; y: create, 2 adds
    EXPECT_EQ(last[id], name == "x" ? 9u : 3u) << name;
  }
}

TEST(StoreRecoveryTest, ABusyStorageKeepsItsImageThoughOtherIndexesWereDropped) {
  // CI's noisy-neighbour run: one index trains (its write order held) while another tenant
  // creates and drops indexes; a snapshot must not give up.
  MemoryFileSystem fs;
  Node a(fs);
  const FloatMatrix data = Clustered(200, kStateDim);
  ASSERT_TRUE(a.engine->Create(kTenant, {"x", "L2", kStateDim, ""}).ok());
  ASSERT_TRUE(a.engine->Add(kTenant, "x", Rows(data, 0, 10), {}).ok());
  ASSERT_TRUE(a.store->Snapshot().ok());
  ASSERT_TRUE(a.engine->Add(kTenant, "x", Rows(data, 10, 10), {}).ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a.engine->Create("u", {"tmp", "L2", kStateDim, ""}).ok());
    ASSERT_TRUE(a.engine->Add("u", "tmp", Rows(data, 20 + i, 1), {}).ok());
    ASSERT_TRUE(a.engine->Drop("u", "tmp").ok());
  }
  ASSERT_TRUE(a.engine->Create("u", {"tmp", "L2", kStateDim, ""}).ok());  // the name again
  ASSERT_TRUE(a.engine->Add("u", "tmp", Rows(data, 30, 4), {}).ok());
  auto x = StorageOf(*a.engine, "x");
  auto writing = std::make_unique<Writing>(x->write_order());
  auto rep = a.store->Snapshot();
  writing.reset();
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep->busy, 1);
  ASSERT_TRUE(a.engine->Add(kTenant, "x", Rows(data, 40, 5), {}).ok());
  ASSERT_TRUE(a.engine->Add("u", "tmp", Rows(data, 50, 2), {}).ok());
  fs.Crash();
  fs.Restart();
  Node b(fs);
  ASSERT_TRUE(b.status.ok()) << b.status.message();
  EXPECT_EQ(b.engine->Describe(kTenant, "x")->backend.ntotal, 25);
  EXPECT_EQ(b.engine->Describe("u", "tmp")->backend.ntotal, 6);
  EXPECT_EQ(b.report.refused, 0);
  ExpectSame(*a.engine, *b.engine, kTenant);
  ExpectSame(*a.engine, *b.engine, "u");
}

TEST(StoreRecoveryTest, AWriteThatFailedWhenMadeIsSkippedAtReplay) {
  // A reset of an IDMap view over an HNSW base fails after it is logged (HNSW cannot remove):
  // a kFailed record follows it, and replay skips it instead of meeting the failure again.
  MemoryFileSystem fs;
  Node a(fs);
  const FloatMatrix data = Clustered(100, kStateDim);
  ASSERT_TRUE(a.engine->Create(kTenant, {"h", "HNSW8", kStateDim, ""}).ok());
  ASSERT_TRUE(a.engine->Create(kTenant, {"hv", "IDMap2:h", kStateDim, ""}).ok());
  ASSERT_TRUE(a.engine->Add(kTenant, "h", Rows(data, 0, 10), {}).ok());
  const int64_t ids[] = {5, 6};
  ASSERT_TRUE(a.engine->Add(kTenant, "hv", Rows(data, 10, 2), ids).ok());
  const Status reset = a.engine->Reset(kTenant, "hv");
  ASSERT_FALSE(reset.ok());
  const int64_t more[] = {8};
  ASSERT_TRUE(a.engine->Add(kTenant, "hv", Rows(data, 20, 1), more).ok());
  int failed = 0;
  for (const auto& [seq, r] : LogOf(fs)) {
    if (r.type != RecordType::kFailed) continue;
    ++failed;
    EXPECT_EQ(r.storage_seq, 5u);  // create h, create hv, add, add, reset
    EXPECT_EQ(r.error, reset.message());
  }
  EXPECT_EQ(failed, 1);
  fs.Crash();
  fs.Restart();
  Node b(fs);
  ASSERT_TRUE(b.status.ok()) << b.status.message();
  EXPECT_EQ(b.report.refused, 0);  // the reset was not tried again
  EXPECT_EQ(b.report.skipped, 2);  // the reset and its kFailed record
  EXPECT_EQ(b.engine->Describe(kTenant, "hv")->backend.ntotal, 3);
  ExpectSame(*a.engine, *b.engine, kTenant);
}

TEST(StoreRecoveryTest, TrainingIsLoggedAsItsResultAndNeverRepeated) {
  MemoryFileSystem fs;
  Node a(fs);
  const FloatMatrix data = Clustered(700, kStateDim);
  for (const char* kind : {"IVF8,PQ4", "SQ8", "OPQ4,IVF4,Flat"}) {
    ASSERT_TRUE(a.engine->Create(kTenant, {kind, kind, kStateDim, ""}).ok());
    auto tr = a.engine->Train(kTenant, kind, Rows(data, 0, 400));
    ASSERT_TRUE(tr.ok()) << kind << ": " << tr.status().message();
    ASSERT_TRUE(a.engine->Add(kTenant, kind, Rows(data, 400, 300), {}).ok());
  }
  ASSERT_TRUE(a.engine->Recluster(kTenant, "IVF8,PQ4", 4, 1.0).ok());
  int trained = 0;
  for (const auto& [seq, r] : LogOf(fs)) {
    if (r.type != RecordType::kTrain && r.type != RecordType::kRecluster) continue;
    ++trained;
    EXPECT_FALSE(r.artefact.empty()) << r.collection;
    EXPECT_EQ(r.vectors.rows, 0) << r.collection;  // the result, not the training set
  }
  EXPECT_EQ(trained, 4);
  fs.Crash();
  fs.Restart();
  // A cost limit no training passes: replay installs what was trained, never trains again.
  Limits tight;
  tight.max_work_cost = 1;
  Node b(fs, Node::Options(), tight);
  ASSERT_TRUE(b.status.ok()) << b.status.message();
  EXPECT_EQ(b.report.refused, 0);
  EXPECT_EQ(b.engine->Describe(kTenant, "IVF8,PQ4")->backend.ntotal, 300);
  ExpectSame(*a.engine, *b.engine, kTenant);
}

TEST(StoreRecoveryTest, TrainingStoppedByItsDeadlineLogsAndChangesNothing) {
  MemoryFileSystem fs;
  Node a(fs);
  const FloatMatrix data = Clustered(2000, kStateDim);
  ASSERT_TRUE(a.engine->Create(kTenant, {"ivf", "IVF64,Flat", kStateDim, ""}).ok());
  const size_t before = LogOf(fs).size();
  {
    InterruptScope passed(std::chrono::steady_clock::now() - std::chrono::seconds(1));
    auto tr = a.engine->Train(kTenant, "ivf", data);
    ASSERT_FALSE(tr.ok());
    EXPECT_EQ(tr.status().code(), StatusCode::kDeadlineExceeded) << tr.status().message();
  }
  EXPECT_EQ(LogOf(fs).size(), before);
  EXPECT_FALSE(a.engine->Describe(kTenant, "ivf")->backend.is_trained);
  ASSERT_TRUE(a.engine->Train(kTenant, "ivf", data).ok());  // without a deadline it trains
  EXPECT_TRUE(a.engine->Describe(kTenant, "ivf")->backend.is_trained);
}

TEST(StoreRecoveryTest, Format1LogsStillRecoverAndGoOnInFormat2) {
  // A data directory written before records named their storage: its records replay by
  // collection name, and what is written after the upgrade is format 2.
  MemoryFileSystem fs;
  const FloatMatrix data = Clustered(100, kStateDim);
  {
    ASSERT_TRUE(fs.CreateDirs(std::string(kDir) + "/wal").ok());
    auto wal = Wal::Open(fs, std::string(kDir) + "/wal", 1, {});
    ASSERT_TRUE(wal.ok()) << wal.status().message();
    auto append = [&](WalRecord r) {
      r.has_storage = false;
      auto pos = (*wal)->Append(EncodeRecord(r));
      ASSERT_TRUE(pos.ok());
      ASSERT_TRUE((*wal)->WaitDurable(*pos).ok());
    };
    WalRecord create{.type = RecordType::kCreate, .tenant = kTenant, .collection = "old"};
    create.index_type = "IVF4,Flat";
    create.dim = kStateDim;
    append(create);
    WalRecord train{.type = RecordType::kTrain, .tenant = kTenant, .collection = "old"};
    train.vectors = Rows(data, 0, 60);
    append(train);
    WalRecord add{.type = RecordType::kAdd, .tenant = kTenant, .collection = "old"};
    add.vectors = Rows(data, 0, 30);
    append(add);
  }
  {
    Node a(fs);
    ASSERT_TRUE(a.status.ok()) << a.status.message();
    EXPECT_EQ(a.report.records, 3);
    EXPECT_EQ(a.engine->Describe(kTenant, "old")->backend.ntotal, 30);
    ASSERT_TRUE(a.engine->Add(kTenant, "old", Rows(data, 30, 10), {}).ok());
    fs.Crash();
  }
  fs.Restart();
  {
    Node b(fs);
    ASSERT_TRUE(b.status.ok()) << b.status.message();
    EXPECT_EQ(b.engine->Describe(kTenant, "old")->backend.ntotal, 40);
    ASSERT_TRUE(b.store->Snapshot().ok());
    ASSERT_TRUE(b.engine->Add(kTenant, "old", Rows(data, 40, 10), {}).ok());
    fs.Crash();
  }
  fs.Restart();
  Node c(fs);
  ASSERT_TRUE(c.status.ok()) << c.status.message();
  EXPECT_EQ(c.engine->Describe(kTenant, "old")->backend.ntotal, 50);
  auto log = LogOf(fs);
  ASSERT_FALSE(log.empty());
  EXPECT_TRUE(log.back().second.has_storage);
  EXPECT_EQ(log.back().second.storage_seq, 5u);  // create, train, 3 adds: counted across formats
}

}  // namespace
}  // namespace vecgpu::store
