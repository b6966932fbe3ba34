// Replication at the engine (core/engine_replication.cc): a replica that applies a primary's
// log records, in order, holds the same collections (same ids, vectors and answers) for every
// kind of write, including keyed ones, training and reclustering; a record sent again is
// skipped; a gap is refused naming the position; a whole copy installed elsewhere answers the
// same and takes the primary's position.
#include <gtest/gtest.h>

#include <random>

#include "core/engine.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "cpu_fallback/engine_state.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::ExpectSame;
using vecgpu::testing::Rows;

constexpr int kDim = vecgpu::testing::kStateDim;

// Keeps every record as the log stores it (encoded, then decoded back).
class RecordingLog final : public MutationLog {
 public:
  StatusOr<Ticket> Append(const store::WalRecord& r) override {
    auto back = store::DecodeRecord(store::EncodeRecord(r));
    if (!back.ok()) return back.status();
    records.push_back(*back);
    return Ticket{records.size(), 0};
  }
  Status WaitDurable(const Ticket&) override { return Status::Ok(); }
  uint64_t LastSeq() const override { return records.size(); }
  std::vector<store::WalRecord> records;
};

struct Node {
  explicit Node(const Limits& limits, BackendFactory& factory) : engine(limits, factory) {
    engine.set_log(&log);
  }
  RecordingLog log;
  Engine engine;
};

KeyedObject Obj(const std::string& key, const FloatMatrix& x, int64_t row) {
  return {key, std::vector<float>(x.row(row), x.row(row) + x.cols), 0};
}

// Collections of every kind a cluster replicates, and writes of every kind to them.
void Workload(Engine& e, const std::string& t, unsigned seed) {
  const FloatMatrix x = Clustered(400, kDim);
  ASSERT_TRUE(e.Create(t, {"flat", "L2", kDim, ""}).ok());
  ASSERT_TRUE(e.Create(t, {"ivf", "IVF4", kDim, ""}).ok());
  ASSERT_TRUE(e.Train(t, "ivf", x).ok());
  ASSERT_TRUE(e.Create(t, {"ids", "IDMap2,Flat", kDim, ""}).ok());
  ASSERT_TRUE(e.Create(t, {"hnsw", "HNSW8", kDim, ""}).ok());
  CreateCollectionRequest keyed{"keyed", "Flat", kDim, ""};
  keyed.keyed = true;
  ASSERT_TRUE(e.Create(t, keyed).ok());
  std::mt19937 rng(seed);
  for (int op = 0; op < 300; ++op) {
    const int64_t n = 1 + rng() % 6;
    const FloatMatrix rows = Rows(x, rng() % (x.rows - n), n);
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int64_t>(rng() % 80));
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    const std::string key = "k" + std::to_string(rng() % 40);
    switch (rng() % 11) {
      case 0:
        (void)e.Add(t, op % 2 ? "flat" : "hnsw", rows, {});
        break;
      case 1:
        (void)e.Add(t, "ivf", rows, {});
        break;
      case 2:
        (void)e.Add(t, "ids", Rows(rows, 0, static_cast<int64_t>(ids.size())), ids);
        break;
      case 3:
        (void)e.Remove(t, op % 2 ? "ids" : "flat", ids);
        break;
      case 4:
        (void)e.Replace(t, "ids", ids[0], Rows(rows, 0, 1));
        break;
      case 5:
        (void)e.PutKeyed(t, "keyed", {Obj(key, rows, 0)}, PutMode::kUpsert, false);
        break;
      case 6:
        (void)e.RemoveKeyed(t, "keyed", {key});
        break;
      case 7:
        (void)e.StampKey(t, "keyed", key, 1000 + op, false);
        break;
      case 8:
        (void)e.SetParameter(t, "ivf", "nprobe", 1 + rng() % 4);
        break;
      case 9:
        if (rng() % 10 == 0) (void)e.Recluster(t, "ivf", 3 + rng() % 2, 0.5);
        break;
      case 10:
        if (rng() % 10 == 0) (void)e.Reset(t, "hnsw");
        break;
    }
  }
  ASSERT_TRUE(e.Merge(t, "flat", {"hnsw"}).ok());
}

// Sends every record of `from` to `to` as a primary does (creates included, failed ones not
// needed), returning how many were applied.
int64_t Ship(const RecordingLog& from, Engine& to, size_t begin = 0) {
  int64_t applied = 0;
  for (size_t i = begin; i < from.records.size(); ++i) {
    auto done = to.ApplyReplicated(from.records[i]);
    EXPECT_TRUE(done.ok()) << i << ": " << done.status().message();
    applied += done.ok() && *done;
  }
  return applied;
}

class EngineReplicationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cpu::ConfigureCpuThreads();
    cpu::UseOneThreadHere();
    ASSERT_TRUE(limits.Validate().ok());
  }
  Limits limits;
  cpu::CpuBackendFactory factory;
};

TEST_F(EngineReplicationTest, AReplicaApplyingThePrimarysRecordsHoldsTheSameCollections) {
  Node primary(limits, factory), replica(limits, factory);
  Workload(primary.engine, "t", 11);
  ASSERT_GT(primary.log.records.size(), 120u);
  EXPECT_GT(Ship(primary.log, replica.engine), 120);
  ExpectSame(primary.engine, replica.engine, "t");
  for (const char* name : {"flat", "ivf", "ids", "hnsw", "keyed"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(*primary.engine.LogPosition("t", name), *replica.engine.LogPosition("t", name));
    EXPECT_EQ(*primary.engine.CountKeyed("t", "keyed"), *replica.engine.CountKeyed("t", "keyed"));
  }
  // The replica logged what it applied, record for record: the same digests, so a primary
  // can tell a copy that is only behind from one that holds other records.
  auto digests = [](const RecordingLog& log) {
    std::map<std::pair<std::string, uint64_t>, uint64_t> out;
    for (const auto& r : log.records) {
      if (r.type != store::RecordType::kFailed) {
        out[{r.collection, r.storage_seq}] = store::RecordDigest(r);
      }
    }
    return out;
  };
  EXPECT_EQ(digests(primary.log), digests(replica.log));
  // Trained once: the replica installed the primary's artefacts, never ran k-means itself.
  for (const auto& r : replica.log.records) {
    if (r.type == store::RecordType::kTrain || r.type == store::RecordType::kRecluster) {
      EXPECT_FALSE(r.artefact.empty());
    }
  }
}

TEST_F(EngineReplicationTest, ARecordSentAgainIsSkippedAndAGapIsRefused) {
  Node primary(limits, factory), replica(limits, factory);
  Workload(primary.engine, "t", 5);
  Ship(primary.log, replica.engine);
  const size_t before = replica.log.records.size();
  // A retried request: every record is at or before the copy's position.
  EXPECT_EQ(Ship(primary.log, replica.engine), 0);
  EXPECT_EQ(replica.log.records.size(), before);
  ExpectSame(primary.engine, replica.engine, "t");

  const FloatMatrix x = Clustered(10, kDim);
  ASSERT_TRUE(primary.engine.Add("t", "flat", Rows(x, 0, 2), {}).ok());
  ASSERT_TRUE(primary.engine.Add("t", "flat", Rows(x, 2, 2), {}).ok());
  const store::WalRecord& last = primary.log.records.back();
  auto gap = replica.engine.ApplyReplicated(last);
  ASSERT_EQ(gap.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(gap.status().message().find("records are missing"), std::string::npos);
  EXPECT_EQ(*replica.engine.LogPosition("t", "flat"), last.storage_seq - 2);
  EXPECT_EQ(Ship(primary.log, replica.engine, primary.log.records.size() - 2), 2);
  ExpectSame(primary.engine, replica.engine, "t");
}

TEST_F(EngineReplicationTest, AWholeCopyReplacesADivergedOneAtThePrimarysPosition) {
  Node primary(limits, factory), replica(limits, factory);
  Workload(primary.engine, "t", 7);
  Ship(primary.log, replica.engine);
  // The replica's copy takes writes the primary never had (a former primary's).
  const FloatMatrix x = Clustered(20, kDim);
  ASSERT_TRUE(replica.engine.Add("t", "ids", Rows(x, 0, 2), std::vector<int64_t>{900, 901}).ok());
  ASSERT_TRUE(primary.engine.Add("t", "ids", Rows(x, 5, 1), std::vector<int64_t>{902}).ok());
  auto copy = primary.engine.CaptureCopy("t", "ids");
  ASSERT_TRUE(copy.ok()) << copy.status().message();
  auto bytes = store::EncodeSnapshot(*copy);
  auto decoded = store::DecodeSnapshot(bytes, "test");
  ASSERT_TRUE(decoded.ok());
  ASSERT_TRUE(replica.engine.InstallCopy("t", *decoded).ok());
  EXPECT_EQ(*replica.engine.LogPosition("t", "ids"), *primary.engine.LogPosition("t", "ids"));
  ExpectSame(primary.engine, replica.engine, "t");
  // Records after the copy apply on top of it.
  const size_t mark = primary.log.records.size();
  ASSERT_TRUE(primary.engine.Add("t", "ids", Rows(x, 9, 1), std::vector<int64_t>{903}).ok());
  EXPECT_EQ(Ship(primary.log, replica.engine, mark), 1);
  ExpectSame(primary.engine, replica.engine, "t");
}

}  // namespace
}  // namespace vecgpu
