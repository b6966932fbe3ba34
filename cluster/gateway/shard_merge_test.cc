// The gateway's shard arithmetic (cluster/gateway/shard_merge.h): k-NN and range merges
// (ties, duplicates across shards, empty slots, inner product, keys and vectors carried, and a
// sharded brute-force search against an unsharded one), write and read splits with their
// round trips, and list pages across shards whose ids overlap.
#include "cluster/gateway/shard_merge.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "cluster/placement/rendezvous.h"

namespace vecgpu::cluster {
namespace {

constexpr float kMax = std::numeric_limits<float>::max();
using Op = WriteRequest::Op;

SearchReply Knn(int64_t nq, int k, std::vector<float> distances, std::vector<int64_t> labels) {
  SearchReply r;
  r.knn = {nq, k, std::move(distances), std::move(labels)};
  return r;
}

// One-component rows holding their id, for the neighbours of a part's one query.
FloatMatrix IdRows(const std::vector<int64_t>& ids) {
  FloatMatrix m{0, 1, {}};
  for (int64_t id : ids) {
    if (id < 0) continue;
    m.data.push_back(static_cast<float>(id));
    ++m.rows;
  }
  return m;
}

TEST(MergeKnnTest, PicksTheKBestOfEveryQuery) {
  // Two queries, two shards with k = 3.
  auto a = Knn(2, 3, {0.1f, 0.4f, 0.9f, 2, 3, 4}, {10, 11, 12, 20, 21, 22});
  auto b = Knn(2, 3, {0.2f, 0.3f, 5, 1, 6, 7}, {30, 31, 32, 40, 41, 42});
  SearchReply m = MergeKnn({a, b}, 2, 3, false);
  EXPECT_EQ(m.knn.nq, 2);
  EXPECT_EQ(m.knn.k, 3);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>{10, 30, 31, 40, 20, 21}));
  EXPECT_EQ(m.knn.distances, (std::vector<float>{0.1f, 0.2f, 0.3f, 1, 2, 3}));
  EXPECT_TRUE(m.keys.empty());
  EXPECT_TRUE(m.vectors.empty());
}

TEST(MergeKnnTest, TiesGoToTheSmallerId) {
  auto a = Knn(1, 2, {1, 1}, {7, 9});
  auto b = Knn(1, 2, {1, 2}, {3, 1});
  SearchReply m = MergeKnn({a, b}, 1, 3, false);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>{3, 7, 9}));
  // The order of the parts does not matter.
  EXPECT_EQ(MergeKnn({b, a}, 1, 3, false).knn.labels, m.knn.labels);
}

TEST(MergeKnnTest, AnIdInSeveralPartsIsKeptOnceAtItsBest) {
  auto a = Knn(1, 3, {0.5f, 0.6f, 0.7f}, {5, 6, 7});
  auto b = Knn(1, 3, {0.2f, 0.6f, 0.8f}, {6, 5, 8});
  SearchReply m = MergeKnn({a, b}, 1, 4, false);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>{6, 5, 7, 8}));
  EXPECT_EQ(m.knn.distances, (std::vector<float>{0.2f, 0.5f, 0.7f, 0.8f}));
}

TEST(MergeKnnTest, EmptySlotsComeLastWhateverTheirDistance) {
  // The engine's IDMap-view padding and empty indexes say +FLT_MAX even for inner product,
  // and a malformed -1 slot may say anything: only the label counts.
  auto a = Knn(1, 3, {9, kMax, 0}, {1, -1, -1});
  auto b = Knn(1, 2, {kMax, kMax}, {-1, -1});
  SearchReply l2 = MergeKnn({a, b}, 1, 3, false);
  EXPECT_EQ(l2.knn.labels, (std::vector<int64_t>{1, -1, -1}));
  EXPECT_EQ(l2.knn.distances, (std::vector<float>{9, kMax, kMax}));

  auto c = Knn(1, 3, {-2, kMax, kMax}, {4, -1, -1});
  SearchReply ip = MergeKnn({c, b}, 1, 3, true);
  EXPECT_EQ(ip.knn.labels, (std::vector<int64_t>{4, -1, -1}));
  EXPECT_EQ(ip.knn.distances, (std::vector<float>{-2, -kMax, -kMax}));
}

TEST(MergeKnnTest, InnerProductRanksLargerFirst) {
  auto a = Knn(1, 2, {0.9f, 0.1f}, {1, 2});
  auto b = Knn(1, 2, {0.95f, 0.9f}, {3, 0});
  SearchReply m = MergeKnn({a, b}, 1, 3, true);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>{3, 0, 1}));
  EXPECT_EQ(m.knn.distances, (std::vector<float>{0.95f, 0.9f, 0.9f}));
}

TEST(MergeKnnTest, KLargerThanTheResultsAndPartsOfSmallerK) {
  auto a = Knn(2, 1, {1, 2}, {1, 2});
  auto b = Knn(2, 2, {3, kMax, 0.5f, 4}, {3, -1, 4, 5});
  SearchReply m = MergeKnn({a, b}, 2, 4, false);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>{1, 3, -1, -1, 4, 2, 5, -1}));
  EXPECT_EQ(m.knn.distances, (std::vector<float>{1, 3, kMax, kMax, 0.5f, 2, 4, kMax}));
}

TEST(MergeKnnTest, NoPartsIsAllEmpty) {
  SearchReply m = MergeKnn({}, 2, 2, false);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>(4, -1)));
  EXPECT_EQ(m.knn.distances, (std::vector<float>(4, kMax)));
}

TEST(MergeKnnTest, CarriesKeysOnePerSlot) {
  auto a = Knn(1, 2, {1, kMax}, {1, -1});
  a.keys = {"one", ""};
  auto b = Knn(1, 2, {0.5f, 2}, {2, 3});
  b.keys = {"two", "three"};
  SearchReply m = MergeKnn({a, b}, 1, 4, false);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>{2, 1, 3, -1}));
  EXPECT_EQ(m.keys, (std::vector<std::string>{"two", "one", "three", ""}));
  // Not carried when one part lacks them.
  b.keys.clear();
  EXPECT_TRUE(MergeKnn({a, b}, 1, 4, false).keys.empty());
}

TEST(MergeKnnTest, OneIdUnderTwoKeysIsTwoObjects) {
  // Keyed objects take ids from their shard's own counter: id 0 on two shards is two keys.
  auto a = Knn(1, 1, {1}, {0});
  a.keys = {"a"};
  auto b = Knn(1, 1, {2}, {0});
  b.keys = {"b"};
  auto c = Knn(1, 1, {3}, {0});
  c.keys = {"a"};  // the same object again: once
  SearchReply m = MergeKnn({a, b, c}, 1, 3, false);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>{0, 0, -1}));
  EXPECT_EQ(m.keys, (std::vector<std::string>{"a", "b", ""}));
}

TEST(MergeKnnTest, CarriesVectorsInResultOrderWithoutRowsForEmptySlots) {
  // As Engine::SearchAndReconstruct: per query, one row per found neighbour.
  auto a = Knn(2, 2, {1, kMax, 4, 5}, {1, -1, 4, 5});
  a.vectors = {IdRows({1}), IdRows({4, 5})};
  auto b = Knn(2, 2, {0.5f, 3, kMax, kMax}, {2, 3, -1, -1});
  b.vectors = {IdRows({2, 3}), IdRows({})};
  SearchReply m = MergeKnn({a, b}, 2, 3, false);
  EXPECT_EQ(m.knn.labels, (std::vector<int64_t>{2, 1, 3, 4, 5, -1}));
  ASSERT_EQ(m.vectors.size(), 2u);
  EXPECT_EQ(m.vectors[0].rows, 3);
  EXPECT_EQ(m.vectors[0].cols, 1);
  EXPECT_EQ(m.vectors[0].data, (std::vector<float>{2, 1, 3}));
  EXPECT_EQ(m.vectors[1].rows, 2);
  EXPECT_EQ(m.vectors[1].data, (std::vector<float>{4, 5}));
  // A part whose rows do not match its found neighbours is not misread.
  b.vectors[0] = IdRows({2});
  EXPECT_TRUE(MergeKnn({a, b}, 2, 3, false).vectors.empty());
}

// A brute-force k-NN of `points` (id -> vector), padded as FAISS pads; `sloppy_ip` pads inner
// product with +FLT_MAX, as an empty index does.
SearchReply BruteForce(const std::map<int64_t, std::vector<float>>& points,
                       const FloatMatrix& queries, int k, bool ip, bool sloppy_ip) {
  const int64_t nq = queries.rows;
  const float pad = ip && !sloppy_ip ? -kMax : kMax;
  SearchReply r = Knn(nq, k, std::vector<float>(nq * k, pad), std::vector<int64_t>(nq * k, -1));
  r.vectors.resize(nq);
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<std::pair<float, int64_t>> all;
    for (const auto& [id, v] : points) {
      float d = 0;
      for (int64_t c = 0; c < queries.cols; ++c) {
        const float x = queries.row(q)[c];
        d += ip ? x * v[c] : (x - v[c]) * (x - v[c]);
      }
      all.emplace_back(ip ? -d : d, id);  // ascending (-ip, id): larger product first
    }
    std::sort(all.begin(), all.end());
    r.vectors[q].cols = queries.cols;
    for (int j = 0; j < k && j < static_cast<int>(all.size()); ++j) {
      r.knn.distances[q * k + j] = ip ? -all[j].first : all[j].first;
      r.knn.labels[q * k + j] = all[j].second;
      const auto& v = points.at(all[j].second);
      r.vectors[q].data.insert(r.vectors[q].data.end(), v.begin(), v.end());
      ++r.vectors[q].rows;
    }
  }
  return r;
}

TEST(MergeKnnTest, ShardedSearchEqualsUnsharded) {
  std::mt19937 rng(7);
  // Small integer components, so equal distances (ties) are common.
  std::uniform_int_distribution<int> component(-3, 3);
  const int d = 3, shards = 4, k = 12;
  std::map<int64_t, std::vector<float>> all;
  std::vector<std::map<int64_t, std::vector<float>>> by_shard(shards);
  for (int i = 0; i < 40; ++i) {
    const int64_t id = i * 37 + 5;
    std::vector<float> v(d);
    for (float& c : v) c = static_cast<float>(component(rng));
    all[id] = v;
    by_shard[ShardOfId(id, shards)][id] = v;
  }
  FloatMatrix queries{5, d, {}};
  for (int i = 0; i < 5 * d; ++i) queries.data.push_back(static_cast<float>(component(rng)));
  for (bool ip : {false, true}) {
    std::vector<SearchReply> parts;
    for (int s = 0; s < shards; ++s)
      parts.push_back(BruteForce(by_shard[s], queries, k, ip, s == 0));
    SearchReply merged = MergeKnn(parts, queries.rows, k, ip);
    SearchReply expected = BruteForce(all, queries, k, ip, false);
    EXPECT_EQ(merged.knn.labels, expected.knn.labels) << "ip " << ip;
    EXPECT_EQ(merged.knn.distances, expected.knn.distances) << "ip " << ip;
    for (int64_t q = 0; q < queries.rows; ++q) {
      EXPECT_EQ(merged.vectors[q].data, expected.vectors[q].data) << "ip " << ip << " q " << q;
    }
  }
}

RangeResult Range(std::vector<int64_t> lims, std::vector<float> distances,
                  std::vector<int64_t> labels) {
  return {std::move(lims), std::move(distances), std::move(labels)};
}

TEST(MergeRangeTest, UnionDeduplicatedAndSorted) {
  auto a = Range({0, 3, 3, 4}, {0.5f, 0.1f, 0.3f, 2}, {5, 1, 3, 9});
  auto b = Range({0, 2, 2, 4}, {0.3f, 0.2f, 1, 2}, {2, 5, 8, 9});
  RangeResult m = MergeRange({a, b}, 3, false);
  EXPECT_EQ(m.lims, (std::vector<int64_t>{0, 4, 4, 6}));
  EXPECT_EQ(m.labels, (std::vector<int64_t>{1, 5, 2, 3, 8, 9}));
  EXPECT_EQ(m.distances, (std::vector<float>{0.1f, 0.2f, 0.3f, 0.3f, 1, 2}));
}

TEST(MergeRangeTest, InnerProductLargerFirst) {
  auto a = Range({0, 2}, {0.7f, 0.9f}, {1, 2});
  auto b = Range({0, 2}, {0.8f, 0.9f}, {3, 0});
  RangeResult m = MergeRange({a, b}, 1, true);
  EXPECT_EQ(m.labels, (std::vector<int64_t>{0, 2, 3, 1}));
  EXPECT_EQ(MergeRange({}, 2, true).lims, (std::vector<int64_t>{0, 0, 0}));
}

WriteRequest Add(const std::vector<int64_t>& ids) {
  WriteRequest w;
  w.op = Op::kAdd;
  w.collection = "c";
  w.vectors.cols = 2;
  for (int64_t id : ids) {  // row i is (id, -id)
    w.vectors.data.push_back(static_cast<float>(id));
    w.vectors.data.push_back(static_cast<float>(-id));
    ++w.vectors.rows;
  }
  w.ids = ids;
  return w;
}

TEST(SplitWriteTest, AddRowsGoToTheirIdsShardInOrder) {
  std::vector<int64_t> ids;
  for (int64_t i = 99; i >= 0; --i) ids.push_back(i * 3);
  auto parts = SplitWrite(Add(ids), 4);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 4u);
  std::vector<int64_t> seen;
  for (size_t p = 0; p < parts->size(); ++p) {
    const ShardWrite& s = (*parts)[p];
    EXPECT_EQ(s.shard, static_cast<int>(p));
    EXPECT_EQ(s.request.op, Op::kAdd);
    EXPECT_EQ(s.request.collection, "c");
    ASSERT_EQ(s.request.vectors.rows, static_cast<int64_t>(s.request.ids.size()));
    EXPECT_EQ(s.request.vectors.cols, 2);
    for (size_t i = 0; i < s.request.ids.size(); ++i) {
      const int64_t id = s.request.ids[i];
      EXPECT_EQ(ShardOfId(id, 4), s.shard);
      EXPECT_EQ(s.request.vectors.row(i)[0], static_cast<float>(id));
      EXPECT_EQ(s.request.vectors.row(i)[1], static_cast<float>(-id));
      if (i > 0) {
        EXPECT_LT(id, s.request.ids[i - 1]);  // the caller's (descending) order
      }
      seen.push_back(id);
    }
  }
  std::sort(seen.begin(), seen.end());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(seen, ids);
}

TEST(SplitWriteTest, OnlyShardsThatGetSomethingAppear) {
  const int64_t id = 42;
  auto parts = SplitWrite(Add({id}), 8);
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].shard, ShardOfId(id, 8));
}

TEST(SplitWriteTest, AddWithoutIdsIsRefusedWhenSharded) {
  WriteRequest w = Add({1, 2});
  w.ids.clear();
  auto parts = SplitWrite(w, 3);
  ASSERT_FALSE(parts.ok());
  EXPECT_EQ(parts.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parts.status().message(),
            "ids: the collection is sharded by id (S=3), so an add needs ids (add_with_ids)");
  // Ids that do not match the rows, and no shards.
  w.ids = {1};
  EXPECT_EQ(SplitWrite(w, 3).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitWrite(Add({1}), 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(SplitWriteTest, OneShardPassesEveryRequestUnchanged) {
  WriteRequest add = Add({1, 2});
  add.ids.clear();  // numbered by the index: fine on one shard
  WriteRequest put;
  put.op = Op::kPutKeyed;
  put.objects = {{"a", {1, 2}, 5, true}};
  put.mode = PutMode::kUpsert;
  WriteRequest where;
  where.op = Op::kRemoveKeyedWhere;
  where.conditions = {{TimestampCondition::kLt, 9}};
  for (const WriteRequest& w : {add, put, where}) {
    auto parts = SplitWrite(w, 1);
    ASSERT_TRUE(parts.ok());
    ASSERT_EQ(parts->size(), 1u);
    const WriteRequest& r = (*parts)[0].request;
    EXPECT_EQ((*parts)[0].shard, 0);
    EXPECT_EQ(r.op, w.op);
    EXPECT_EQ(r.vectors.data, w.vectors.data);
    EXPECT_EQ(r.ids, w.ids);
    EXPECT_EQ(r.objects.size(), w.objects.size());
    EXPECT_EQ(r.mode, w.mode);
    EXPECT_EQ(r.conditions.size(), w.conditions.size());
  }
}

TEST(SplitWriteTest, RemoveIdsByShard) {
  WriteRequest w;
  w.op = Op::kRemove;
  for (int64_t id = 0; id < 50; ++id) w.ids.push_back(id);
  auto parts = SplitWrite(w, 3);
  ASSERT_TRUE(parts.ok());
  size_t total = 0;
  for (const ShardWrite& p : *parts) {
    for (int64_t id : p.request.ids) EXPECT_EQ(ShardOfId(id, 3), p.shard);
    total += p.request.ids.size();
  }
  EXPECT_EQ(total, 50u);
  // Nothing to remove: every shard still answers (and reports its size).
  w.ids.clear();
  EXPECT_EQ(SplitWrite(w, 3)->size(), 3u);
}

TEST(SplitWriteTest, ReplaceAndStampGoToOneShardWhole) {
  WriteRequest replace = Add({77});
  replace.op = Op::kReplace;
  auto parts = SplitWrite(replace, 5);
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].shard, ShardOfId(77, 5));
  EXPECT_EQ((*parts)[0].request.vectors.data, replace.vectors.data);

  WriteRequest stamp;
  stamp.op = Op::kStampKey;
  stamp.keys = {"k"};
  stamp.timestamp = 123;
  stamp.force = true;
  parts = SplitWrite(stamp, 5);
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].shard, ShardOfKey("k", 5));
  EXPECT_EQ((*parts)[0].request.timestamp, 123);
  EXPECT_TRUE((*parts)[0].request.force);

  stamp.keys.clear();
  EXPECT_EQ(SplitWrite(stamp, 5).status().code(), StatusCode::kInvalidArgument);
}

TEST(SplitWriteTest, KeyedObjectsAndKeysByShardOfKey) {
  WriteRequest put;
  put.op = Op::kPutKeyed;
  put.mode = PutMode::kUpdate;
  put.skip_strict = true;
  WriteRequest remove;
  remove.op = Op::kRemoveKeyed;
  for (int i = 0; i < 30; ++i) {
    const std::string key = "key-" + std::to_string(i);
    put.objects.push_back({key, {static_cast<float>(i)}, i});
    remove.keys.push_back(key);
  }
  auto puts = SplitWrite(put, 4);
  auto removes = SplitWrite(remove, 4);
  ASSERT_TRUE(puts.ok());
  ASSERT_TRUE(removes.ok());
  size_t objects = 0, keys = 0;
  for (const ShardWrite& p : *puts) {
    EXPECT_EQ(p.request.mode, PutMode::kUpdate);
    EXPECT_TRUE(p.request.skip_strict);
    for (const KeyedObject& o : p.request.objects) {
      EXPECT_EQ(ShardOfKey(o.key, 4), p.shard);
      EXPECT_EQ(o.key, "key-" + std::to_string(static_cast<int>(o.vector[0])));
    }
    objects += p.request.objects.size();
  }
  for (const ShardWrite& p : *removes) {
    for (const std::string& k : p.request.keys) EXPECT_EQ(ShardOfKey(k, 4), p.shard);
    keys += p.request.keys.size();
  }
  EXPECT_EQ(objects, 30u);
  EXPECT_EQ(keys, 30u);
}

TEST(SplitWriteTest, ResetAndRemoveWhereGoToEveryShardWhole) {
  WriteRequest where;
  where.op = Op::kRemoveKeyedWhere;
  where.conditions = {{TimestampCondition::kGe, 1}, {TimestampCondition::kLt, 5}};
  WriteRequest reset;
  reset.op = Op::kReset;
  for (const WriteRequest& w : {where, reset}) {
    auto parts = SplitWrite(w, 3);
    ASSERT_TRUE(parts.ok());
    ASSERT_EQ(parts->size(), 3u);
    for (int s = 0; s < 3; ++s) {
      EXPECT_EQ((*parts)[s].shard, s);
      EXPECT_EQ((*parts)[s].request.op, w.op);
      EXPECT_EQ((*parts)[s].request.conditions.size(), w.conditions.size());
    }
  }
}

TEST(CombineWritesTest, SumsCountsAndSizesAndConcatenatesKeys) {
  WriteReply a{2, 10, {"x"}};
  WriteReply b{3, 7, {"y", "z"}};
  WriteReply m = CombineWrites(Op::kRemoveKeyedWhere, {a, b});
  EXPECT_EQ(m.count, 5);
  EXPECT_EQ(m.ntotal, 17);
  EXPECT_EQ(m.keys, (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(CombineWrites(Op::kAdd, {}).count, 0);
}

// What a shard answers for a split read: vector (id, 2 id), key "key<id>".
ReadReply Answer(const ReadRequest& r) {
  ReadReply out;
  out.vectors.cols = 2;
  for (int64_t id : r.ids) {
    out.vectors.data.push_back(static_cast<float>(id));
    out.vectors.data.push_back(static_cast<float>(2 * id));
    ++out.vectors.rows;
    out.keys.push_back("key" + std::to_string(id));
  }
  return out;
}

TEST(ReadByIdTest, SplitAndReassembleInTheCallersOrder) {
  ReadRequest r;
  r.collection = "c";
  r.ids = {90, 3, 55, 3, 1000, 7, 12, 41, 0};  // unordered, with a repeat
  for (auto op : {ReadRequest::Op::kReconstruct, ReadRequest::Op::kKeysOf}) {
    r.op = op;
    for (int shards : {1, 3, 7}) {
      std::vector<ShardRead> split = SplitReadById(r, shards);
      std::vector<ReadReply> replies;
      for (size_t i = 0; i < split.size(); ++i) {
        EXPECT_EQ(split[i].request.op, op);
        EXPECT_EQ(split[i].request.collection, "c");
        if (i > 0) {
          EXPECT_LT(split[i - 1].shard, split[i].shard);
        }
        for (int64_t id : split[i].request.ids) EXPECT_EQ(ShardOfId(id, shards), split[i].shard);
        replies.push_back(Answer(split[i].request));
      }
      if (shards == 1) {
        EXPECT_EQ(split.size(), 1u);
      }
      auto m = CombineReadById(r, split, std::move(replies));
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      ReadReply whole = Answer(r);
      if (op == ReadRequest::Op::kKeysOf) {
        EXPECT_EQ(m->keys, whole.keys) << shards;
      } else {
        EXPECT_EQ(m->vectors.rows, whole.vectors.rows);
        EXPECT_EQ(m->vectors.cols, 2);
        EXPECT_EQ(m->vectors.data, whole.vectors.data) << shards;
      }
    }
  }
}

TEST(ReadByIdTest, NoIdsAsksShardZeroWhole) {
  ReadRequest r;
  r.op = ReadRequest::Op::kReconstruct;
  std::vector<ShardRead> split = SplitReadById(r, 4);
  ASSERT_EQ(split.size(), 1u);
  EXPECT_EQ(split[0].shard, 0);
  ReadReply empty;
  empty.vectors.cols = 8;
  auto m = CombineReadById(r, split, {empty});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->vectors.rows, 0);
  EXPECT_EQ(m->vectors.cols, 8);
}

TEST(ReadByIdTest, AShortReplyIsAnInternalError) {
  ReadRequest r;
  r.op = ReadRequest::Op::kKeysOf;
  r.ids = {1, 2, 3, 4, 5, 6};
  std::vector<ShardRead> split = SplitReadById(r, 2);
  std::vector<ReadReply> replies;
  for (const ShardRead& p : split) replies.push_back(Answer(p.request));
  replies.back().keys.pop_back();
  EXPECT_EQ(CombineReadById(r, split, replies).status().code(), StatusCode::kInternal);
  r.op = ReadRequest::Op::kReconstruct;
  replies.back().vectors.rows--;
  EXPECT_EQ(CombineReadById(r, split, replies).status().code(), StatusCode::kInternal);
  replies.pop_back();
  EXPECT_EQ(CombineReadById(r, split, replies).status().code(), StatusCode::kInternal);
  r.op = ReadRequest::Op::kLayout;
  EXPECT_EQ(CombineReadById(r, split, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(ReadRoutingTest, KeyedReadsGoToTheKeysShardAndCountsAdd) {
  ReadRequest r;
  r.op = ReadRequest::Op::kGetKeyed;
  r.keys = {"some-key"};
  EXPECT_EQ(ShardOfRead(r, 6), ShardOfKey("some-key", 6));
  EXPECT_EQ(ShardOfRead(r, 1), 0);
  r.keys.clear();
  EXPECT_EQ(ShardOfRead(r, 6), 0);
  ReadReply a, b;
  a.count = 4;
  b.count = 9;
  EXPECT_EQ(CombineCountKeyed({a, b}).count, 13);
}

// A shard of keyed objects for list pages: ids from its own counter, as the engine gives them.
struct ListShard {
  std::vector<std::pair<int64_t, std::string>> objects;  // by ascending id
  ReadReply List(int64_t after, int64_t count) const {
    ReadReply r;
    r.last_id = after;
    for (const auto& [id, key] : objects) {
      if (id <= after) continue;
      if (static_cast<int64_t>(r.objects.size()) >= count) break;
      r.objects.push_back({key, {static_cast<float>(id)}, 0});
      r.ids.push_back(id);
      r.last_id = id;
    }
    return r;
  }
};

TEST(MergeListKeyedTest, PagesVisitEveryObjectOnceAcrossOverlappingIds) {
  // Three shards whose ids overlap (each numbers its own keys from 0), some with gaps.
  std::vector<ListShard> shards(3);
  std::set<std::string> keys;
  for (int s = 0; s < 3; ++s) {
    for (int64_t id = 0; id < 10 + 3 * s; id += 1 + (s == 2)) {
      const std::string key = "shard" + std::to_string(s) + "-" + std::to_string(id);
      shards[s].objects.push_back({id, key});
      keys.insert(key);
    }
  }
  for (int64_t count : {1, 2, 4, 7, 100}) {
    std::set<std::string> listed;
    int64_t after = -1, previous = -1;
    for (int pages = 0; pages < 1000; ++pages) {
      std::vector<ReadReply> replies;
      for (const ListShard& s : shards) replies.push_back(s.List(after, count));
      auto page = MergeListKeyed(std::move(replies), count);
      ASSERT_TRUE(page.ok());
      ASSERT_EQ(page->ids.size(), page->objects.size());
      for (size_t i = 0; i < page->objects.size(); ++i) {
        EXPECT_GE(page->ids[i], previous);  // ascending id
        previous = page->ids[i];
        EXPECT_TRUE(listed.insert(page->objects[i].key).second) << page->objects[i].key;
      }
      // Over `count` only to finish an id that several shards hold.
      EXPECT_LE(static_cast<int64_t>(page->objects.size()), count + 2);
      if (static_cast<int64_t>(page->objects.size()) < count) break;  // the front end's rule
      ASSERT_GT(page->last_id, after);
      after = page->last_id;
    }
    EXPECT_EQ(listed, keys) << "count " << count;
  }
}

TEST(MergeListKeyedTest, EmptyPagesAndMissingIds) {
  ReadReply empty;
  auto page = MergeListKeyed({empty, empty}, 5);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->objects.empty());
  EXPECT_EQ(page->last_id, -1);
  ReadReply no_ids;
  no_ids.objects.push_back({"a", {1}, 0});
  EXPECT_EQ(MergeListKeyed({no_ids, empty}, 5).status().code(), StatusCode::kInternal);
  // One shard: its page as it is, ids or not.
  no_ids.last_id = 12;
  page = MergeListKeyed({no_ids}, 5);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->objects.size(), 1u);
  EXPECT_EQ(page->last_id, 12);
}

}  // namespace
}  // namespace vecgpu::cluster
