// The Engine's mutation log: every mutation is recorded before it applies, and replaying the
// records (through their bytes) into a fresh engine rebuilds the same indexes, ids and answers.
#include <gtest/gtest.h>

#include <random>

#include "core/engine.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::Rows;

constexpr int kDim = 8;

// Keeps every record as the log would store it (encoded, then decoded back).
class RecordingLog final : public MutationLog {
 public:
  StatusOr<Ticket> Append(const store::WalRecord& r) override {
    if (!fail.ok() && r.type == fail_type) return fail;
    auto back = store::DecodeRecord(store::EncodeRecord(r));
    if (!back.ok()) return back.status();
    records.push_back(*back);
    return Ticket{records.size(), 0};
  }
  Status WaitDurable(const Ticket&) override { return Status::Ok(); }
  uint64_t LastSeq() const override { return records.size(); }
  std::vector<store::WalRecord> records;
  Status fail;
  store::RecordType fail_type = store::RecordType::kAdd;
};

struct Fixture {
  Fixture() {
    cpu::ConfigureCpuThreads();
    cpu::UseOneThreadHere();
    EXPECT_TRUE(limits.Validate().ok());
  }
  Limits limits;
  cpu::CpuBackendFactory factory;
};

FloatMatrix Bits(int64_t rows, int dim, unsigned seed) {
  std::mt19937 rng(seed);
  FloatMatrix m{rows, dim, std::vector<float>(rows * dim)};
  for (auto& v : m.data) v = static_cast<float>(rng() % 2);
  return m;
}

// Everything a client can read of a collection: its vectors with their ids, and the answers
// to a few searches.
void ExpectSame(Engine& a, Engine& b, const std::string& tenant) {
  auto la = a.List(tenant), lb = b.List(tenant);
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) {
    const std::string& name = la[i].name;
    SCOPED_TRACE(name);
    ASSERT_EQ(name, lb[i].name);
    EXPECT_EQ(la[i].backend.ntotal, lb[i].backend.ntotal);
    EXPECT_EQ(la[i].backend.is_trained, lb[i].backend.is_trained);
    std::vector<int64_t> ia, ib;
    auto va = a.ReconstructRange(tenant, name, 0, 100000, &ia);
    auto vb = b.ReconstructRange(tenant, name, 0, 100000, &ib);
    ASSERT_EQ(va.ok(), vb.ok());
    if (va.ok()) {
      EXPECT_EQ(ia, ib);
      EXPECT_EQ(va->data, vb->data);
    }
    auto layout = a.Layout(tenant, name);
    const FloatMatrix q = layout->binary ? Bits(5, layout->dim, 99) : Clustered(5, kDim, 3, 99);
    auto sa = a.Search(tenant, name, q, 4, {});
    auto sb = b.Search(tenant, name, q, 4, {});
    ASSERT_EQ(sa.ok(), sb.ok());
    if (sa.ok()) {
      EXPECT_EQ(sa->labels, sb->labels);
      EXPECT_EQ(sa->distances, sb->distances);
    }
  }
}

TEST(EngineReplayTest, ReplayingTheLogRebuildsEveryIndex) {
  Fixture f;
  RecordingLog log;
  Engine a(f.limits, f.factory);
  a.set_log(&log);
  const std::string t = "t";
  const FloatMatrix x = Clustered(400, kDim);
  ASSERT_TRUE(a.Create(t, {"flat", "L2", kDim, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"ivf", "IVF4", kDim, ""}).ok());
  ASSERT_TRUE(a.Train(t, "ivf", x).ok());
  ASSERT_TRUE(a.Create(t, {"ids", "IDMap:ivf", kDim, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"ids2", "IDMap2:flat", kDim, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"hnsw", "HNSW8", kDim, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"bin", "BINARY_FLAT", 16, ""}).ok());
  ASSERT_TRUE(a.Create(t, {"gone", "L2", kDim, ""}).ok());
  std::mt19937 rng(5);
  const char* names[] = {"flat", "ivf", "ids", "ids2", "hnsw"};
  for (int op = 0; op < 600; ++op) {
    const std::string name = names[rng() % 5];
    const bool with_ids = name == "ids" || name == "ids2";
    const int64_t n = 1 + rng() % 8;
    const FloatMatrix rows = Rows(x, rng() % (x.rows - n), n);
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int64_t>(rng() % 60));
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2:
        (void)a.Add(t, name, Rows(rows, 0, with_ids ? static_cast<int64_t>(ids.size()) : n),
                    with_ids ? std::span<const int64_t>(ids) : std::span<const int64_t>());
        break;
      case 3:
      case 4:
        (void)a.Remove(t, name, ids);  // refused on HNSW: logged, and refused again in replay
        break;
      case 5:
        (void)a.Replace(t, name, ids[0], Rows(rows, 0, 1));
        break;
      case 6:
        if (rng() % 8 == 0) (void)a.Reset(t, name);
        break;
      case 7:
        (void)a.SetParameter(t, name, "nprobe", 1 + rng() % 4);
        break;
      case 8:
        (void)a.Add(t, "bin", Bits(n, 16, static_cast<unsigned>(op)), {});
        break;
      case 9:
        if (rng() % 20 == 0) (void)a.Recluster(t, "ivf", 4, 0.5);
        break;
    }
  }
  // Every kind of mutation at least once, whatever the random ops did.
  const int64_t fresh[] = {1000, 1001, 1002};
  ASSERT_TRUE(a.Add(t, "ids2", Rows(x, 10, 3), fresh).ok());
  ASSERT_TRUE(a.Replace(t, "ids2", 1001, Rows(x, 399, 1)).ok());
  ASSERT_TRUE(a.Add(t, "ids", Rows(x, 20, 3), fresh).ok());
  const int64_t remove[] = {1000};
  ASSERT_TRUE(a.Remove(t, "ids", remove).ok());
  ASSERT_TRUE(a.Recluster(t, "ivf", 3, 1.0).ok());
  ASSERT_TRUE(a.SetParameter(t, "ivf", "nprobe", 2).ok());
  ASSERT_TRUE(a.Add(t, "gone", Rows(x, 100, 7), {}).ok());
  ASSERT_TRUE(a.Create(t, {"merged", "IDMap2:gone", kDim, ""}).ok());
  ASSERT_TRUE(a.Merge(t, "flat", {"gone"}).ok());
  const int64_t view_ids[] = {500, 501};
  ASSERT_TRUE(a.Add(t, "merged", Rows(x, 200, 2), view_ids).ok());
  ASSERT_TRUE(a.Merge(t, "ids2", {"merged"}).ok());
  ASSERT_TRUE(a.Drop(t, "merged").ok());
  ASSERT_TRUE(a.Drop(t, "gone").ok());
  ASSERT_GT(log.records.size(), 400u);

  Engine b(f.limits, f.factory);
  for (const store::WalRecord& r : log.records) (void)b.Apply(r);
  ExpectSame(a, b, t);
  EXPECT_FALSE(b.Describe(t, "gone").ok());  // dropped in both
}

TEST(EngineReplayTest, AMutationTheLogRefusesChangesNothing) {
  Fixture f;
  RecordingLog log;
  Engine e(f.limits, f.factory);
  e.set_log(&log);
  ASSERT_TRUE(e.Create("t", {"c", "L2", kDim, ""}).ok());
  const FloatMatrix x = Clustered(10, kDim);
  ASSERT_TRUE(e.Add("t", "c", x, {}).ok());
  log.fail = Unavailable("write-ahead log: No space left on device; the write is refused");
  for (store::RecordType type : {store::RecordType::kAdd, store::RecordType::kRemove,
                                 store::RecordType::kReset, store::RecordType::kDrop}) {
    log.fail_type = type;
    Status st;
    switch (type) {
      case store::RecordType::kAdd:
        st = e.Add("t", "c", x, {}).status();
        break;
      case store::RecordType::kRemove: {
        const int64_t ids[] = {0, 1};
        st = e.Remove("t", "c", ids).status();
        break;
      }
      case store::RecordType::kReset:
        st = e.Reset("t", "c");
        break;
      default:
        st = e.Drop("t", "c");
        break;
    }
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << store::RecordTypeName(type);
    EXPECT_NE(st.message().find("No space left"), std::string::npos);
    ASSERT_TRUE(e.Describe("t", "c").ok());
    EXPECT_EQ(e.Describe("t", "c")->backend.ntotal, 10) << store::RecordTypeName(type);
  }
  // Queued adds (merged on a worker) are logged one by one the same way.
  log.fail_type = store::RecordType::kAdd;
  Status queued;
  ASSERT_TRUE(e.SubmitAdd("t", "c", x, {}, WorkClass::kShort, Clock::time_point::max(),
                          [&](StatusOr<AddResult> r) { queued = r.status(); })
                  .ok());
  EXPECT_EQ(queued.code(), StatusCode::kUnavailable);
  EXPECT_EQ(e.Describe("t", "c")->backend.ntotal, 10);
  log.fail = Status::Ok();
  ASSERT_TRUE(e.SubmitAdd("t", "c", x, {}, WorkClass::kShort, Clock::time_point::max(),
                          [&](StatusOr<AddResult> r) { queued = r.status(); })
                  .ok());
  EXPECT_TRUE(queued.ok());
  EXPECT_EQ(log.records.size(), 3u);  // the create, the first add and the last queued add
  EXPECT_EQ(log.records.back().type, store::RecordType::kAdd);
}

}  // namespace
}  // namespace vecgpu
