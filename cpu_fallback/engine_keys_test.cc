// String ids (the Vald API) on the Engine: insert / update / upsert / remove semantics, all or
// nothing per request, the same vectors through int64 ids, timestamps, and a replay of the log
// and a snapshot that give the same keys.
#include <gtest/gtest.h>

#include "core/engine.h"
#include "core/store/memory_file_system.h"
#include "core/store/store.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

constexpr int kDim = 4;
const std::string kT = "t";

KeyedObject Obj(std::string key, float v, int64_t ts = 0) {
  return {std::move(key), {v, v + 1, v + 2, v + 3}, ts};
}

struct Fixture {
  Fixture() {
    cpu::ConfigureCpuThreads();
    cpu::UseOneThreadHere();
    EXPECT_TRUE(limits.Validate().ok());
  }
  Limits limits;
  cpu::CpuBackendFactory factory;
};

TEST(EngineKeysTest, InsertUpdateUpsertRemove) {
  Fixture f;
  Engine e(f.limits, f.factory);
  ASSERT_TRUE(e.Create(kT, {"c", "IDMap2,Flat", kDim, ""}).ok());
  ASSERT_TRUE(e.PutKeyed(kT, "c", {Obj("a", 1), Obj("b", 2)}, PutMode::kInsert, false).ok());
  // Insert of an existing key: refused, unless skip_strict; all or nothing.
  Status dup = e.PutKeyed(kT, "c", {Obj("z", 9), Obj("a", 5)}, PutMode::kInsert, false);
  EXPECT_EQ(dup.code(), StatusCode::kAlreadyExists);
  EXPECT_NE(dup.message().find("'a'"), std::string::npos);
  EXPECT_EQ(e.GetKeyed(kT, "c", "z").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e.Describe(kT, "c")->backend.ntotal, 2);
  // Update: missing key NOT_FOUND; the same vector ALREADY_EXISTS; a new one replaces it.
  EXPECT_EQ(e.PutKeyed(kT, "c", {Obj("q", 1)}, PutMode::kUpdate, false).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(e.PutKeyed(kT, "c", {Obj("a", 1)}, PutMode::kUpdate, false).code(),
            StatusCode::kAlreadyExists);
  ASSERT_TRUE(e.PutKeyed(kT, "c", {Obj("a", 7, 123)}, PutMode::kUpdate, false).ok());
  auto a = e.GetKeyed(kT, "c", "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->vector, Obj("a", 7).vector);
  EXPECT_EQ(a->timestamp, 123);
  // Upsert inserts or replaces.
  ASSERT_TRUE(e.PutKeyed(kT, "c", {Obj("a", 8), Obj("c", 3)}, PutMode::kUpsert, false).ok());
  EXPECT_EQ(e.Describe(kT, "c")->backend.ntotal, 3);
  EXPECT_GT(e.GetKeyed(kT, "c", "c")->timestamp, 1'600'000'000'000'000'000);  // now, in ns
  // skip_strict per object: only that object skips the check.
  KeyedObject again = Obj("a", 8);
  again.skip_strict = true;
  EXPECT_TRUE(e.PutKeyed(kT, "c", {again}, PutMode::kInsert, false).ok());
  EXPECT_EQ(e.PutKeyed(kT, "c", {again, Obj("c", 3)}, PutMode::kInsert, false).code(),
            StatusCode::kAlreadyExists);  // "c" does not skip
  EXPECT_EQ(*e.KeyTimestamp(kT, "c", "c"), e.GetKeyed(kT, "c", "c")->timestamp);
  EXPECT_EQ(e.KeyTimestamp(kT, "c", "nope").status().code(), StatusCode::kNotFound);
  // Bad requests change nothing.
  EXPECT_EQ(e.PutKeyed(kT, "c", {Obj("", 1)}, PutMode::kInsert, false).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(e.PutKeyed(kT, "c", {Obj("x", 1), Obj("x", 2)}, PutMode::kInsert, false).code(),
            StatusCode::kInvalidArgument);
  KeyedObject wide{"w", {1, 2, 3}, 0};
  EXPECT_EQ(e.PutKeyed(kT, "c", {wide}, PutMode::kInsert, false).code(),
            StatusCode::kInvalidArgument);
  // Remove: all or nothing.
  EXPECT_EQ(e.RemoveKeyed(kT, "c", {"a", "nope"}).code(), StatusCode::kNotFound);
  EXPECT_EQ(e.Describe(kT, "c")->backend.ntotal, 3);
  ASSERT_TRUE(e.RemoveKeyed(kT, "c", {"a"}).ok());
  EXPECT_EQ(e.GetKeyed(kT, "c", "a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*e.CountKeyed(kT, "c"), 2);
  // A collection without an id map cannot take string ids.
  ASSERT_TRUE(e.Create(kT, {"plain", "L2", kDim, ""}).ok());
  EXPECT_EQ(e.PutKeyed(kT, "plain", {Obj("a", 1)}, PutMode::kInsert, false).code(),
            StatusCode::kFailedPrecondition);
}

TEST(EngineKeysTest, KeysAreIdsBothProtocolsSee) {
  Fixture f;
  Engine e(f.limits, f.factory);
  ASSERT_TRUE(e.Create(kT, {"c", "IDMap2,Flat", kDim, ""}).ok());
  // An int64 id added without a key is skipped when keys take ids.
  FloatMatrix one{1, kDim, {10, 11, 12, 13}};
  const int64_t zero[] = {0};
  ASSERT_TRUE(e.Add(kT, "c", one, zero).ok());
  ASSERT_TRUE(e.PutKeyed(kT, "c", {Obj("a", 1), Obj("b", 2)}, PutMode::kInsert, false).ok());
  FloatMatrix q{1, kDim, {2, 3, 4, 5}};
  auto r = e.Search(kT, "c", q, 3, {});
  ASSERT_TRUE(r.ok());
  auto keys = e.KeysOf(kT, "c", r->labels);
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"b", "a", ""}));  // id 0 has no key
  // Removing by int64 id forgets the key; a reset forgets them all.
  const int64_t id_of_b[] = {r->labels[0]};
  ASSERT_EQ(*e.Remove(kT, "c", id_of_b), 1);
  EXPECT_EQ(e.GetKeyed(kT, "c", "b").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(e.Reset(kT, "c").ok());
  EXPECT_EQ(*e.CountKeyed(kT, "c"), 0);
  // A removal through the base of an IDMap view forgets the view's keys too.
  ASSERT_TRUE(e.Create(kT, {"base", "L2", kDim, ""}).ok());
  ASSERT_TRUE(e.Create(kT, {"v", "IDMap2:base", kDim, ""}).ok());
  ASSERT_TRUE(e.PutKeyed(kT, "v", {Obj("x", 1), Obj("y", 2)}, PutMode::kInsert, false).ok());
  const int64_t first_label[] = {0};
  ASSERT_EQ(*e.Remove(kT, "base", first_label), 1);
  EXPECT_EQ(e.KeyTimestamp(kT, "v", "x").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(e.GetKeyed(kT, "v", "y").ok());
  EXPECT_TRUE(e.PutKeyed(kT, "v", {Obj("x", 5)}, PutMode::kInsert, false).ok());
}

TEST(EngineKeysTest, RemoveByTimestampAndStamps) {
  Fixture f;
  Engine e(f.limits, f.factory);
  ASSERT_TRUE(e.Create(kT, {"c", "IDMap2,Flat", kDim, ""}).ok());
  ASSERT_TRUE(e.PutKeyed(kT, "c", {Obj("a", 1, 100), Obj("b", 2, 200), Obj("c", 3, 300)},
                         PutMode::kInsert, false)
                  .ok());
  EXPECT_EQ(e.StampKey(kT, "c", "a", 50, false).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(e.StampKey(kT, "c", "a", 50, true).ok());
  ASSERT_TRUE(e.StampKey(kT, "c", "c", 400, false).ok());
  auto gone =
      e.RemoveKeyedWhere(kT, "c", {{TimestampCondition::kGe, 50}, {TimestampCondition::kLt, 300}});
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(*gone, (std::vector<std::string>{"a", "b"}));
  int64_t last = 0;
  auto left = e.ListKeyed(kT, "c", -1, 10, &last);
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].key, "c");
  EXPECT_EQ((*left)[0].timestamp, 400);
}

// The log and a snapshot keep keys, ids and timestamps.
TEST(EngineKeysTest, KeysSurviveReplayAndSnapshots) {
  Fixture f;
  store::MemoryFileSystem fs;
  store::StoreOptions so;
  so.dir = "/data";
  so.snapshot_log_bytes = 0;
  so.snapshot_interval_s = 0;
  Engine a(f.limits, f.factory);
  auto sa = store::Store::Open(fs, so, a, nullptr);
  ASSERT_TRUE(sa.ok());
  a.set_log(sa->get());
  ASSERT_TRUE(a.Create(kT, {"base", "L2", kDim, ""}).ok());
  ASSERT_TRUE(a.Create(kT, {"v", "IDMap2:base", kDim, ""}).ok());
  ASSERT_TRUE(
      a.PutKeyed(kT, "v", {Obj("a", 1, 5), Obj("caf\xc3\xa9", 2, 6)}, PutMode::kInsert, false)
          .ok());
  ASSERT_TRUE((*sa)->Snapshot().ok());
  ASSERT_TRUE(
      a.PutKeyed(kT, "v", {Obj(std::string(1000, 'k'), 3, 7)}, PutMode::kUpsert, false).ok());
  ASSERT_TRUE(a.RemoveKeyed(kT, "v", {"a"}).ok());
  ASSERT_TRUE(a.StampKey(kT, "v", "caf\xc3\xa9", 66, true).ok());
  fs.Crash();
  fs.Restart();
  Engine b(f.limits, f.factory);
  store::RecoveryReport rep;
  auto sb = store::Store::Open(fs, so, b, &rep);
  ASSERT_TRUE(sb.ok()) << sb.status().message();
  EXPECT_EQ(rep.snapshots, 1);
  EXPECT_EQ(rep.records, 3);
  int64_t last_a = 0, last_b = 0;
  auto la = a.ListKeyed(kT, "v", -1, 100, &last_a);
  auto lb = b.ListKeyed(kT, "v", -1, 100, &last_b);
  ASSERT_TRUE(la.ok() && lb.ok());
  ASSERT_EQ(la->size(), 2u);
  ASSERT_EQ(lb->size(), 2u);
  for (size_t i = 0; i < la->size(); ++i) {
    EXPECT_EQ((*la)[i].key, (*lb)[i].key);
    EXPECT_EQ((*la)[i].vector, (*lb)[i].vector);
    EXPECT_EQ((*la)[i].timestamp, (*lb)[i].timestamp);
  }
  EXPECT_EQ(last_a, last_b);  // the same ids
}

}  // namespace
}  // namespace vecgpu
