#include "bench/ground_truth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace vecgpu::bench {
namespace {

// Base points 0..n-1 on the x axis (y = 0); queries at the given x positions.
Dataset Line(int n, const std::vector<float>& query_x, Metric metric = Metric::kL2) {
  Dataset d;
  d.metric = metric;
  d.base = {n, 2, std::vector<float>(2 * n, 0.0f)};
  for (int i = 0; i < n; ++i) d.base.data[2 * i] = static_cast<float>(i);
  const int64_t nq = static_cast<int64_t>(query_x.size());
  d.queries = {nq, 2, std::vector<float>(2 * nq, 0.0f)};
  for (int64_t i = 0; i < nq; ++i) d.queries.data[2 * i] = query_x[i];
  return d;
}

std::string CachePath(const std::string& name) {
  const std::string path = ::testing::TempDir() + name;
  std::filesystem::remove(path);
  return path;
}

TEST(ExactNeighborsTest, PointsOnALineL2) {
  const Dataset d = Line(10, {2.2f, 7.9f, -3});
  const std::vector<int32_t> nn = ExactNeighbors(d, 5);
  EXPECT_EQ(nn, (std::vector<int32_t>{2, 3, 1, 4, 0,  //
                                      8, 7, 9, 6, 5,  //
                                      0, 1, 2, 3, 4}));
}

TEST(ExactNeighborsTest, InnerProductPrefersLargestProjection) {
  const Dataset d = Line(10, {1, -1}, Metric::kInnerProduct);
  EXPECT_EQ(ExactNeighbors(d, 3), (std::vector<int32_t>{9, 8, 7, 0, 1, 2}));
}

TEST(ExactNeighborsTest, ManyQueriesSpanBlocks) {
  // More queries than one FAISS block, so every block's output lands in the right rows.
  std::vector<float> xs;
  for (int i = 0; i < 9000; ++i) xs.push_back(static_cast<float>(i % 100) + 0.1f);
  const std::vector<int32_t> nn = ExactNeighbors(Line(100, xs), 2);
  ASSERT_EQ(nn.size(), 18000u);
  for (int i = 0; i < 9000; ++i) {
    ASSERT_EQ(nn[2 * i], i % 100) << i;
    ASSERT_EQ(nn[2 * i + 1], i % 100 == 99 ? 98 : i % 100 + 1) << i;
  }
}

TEST(ExactNeighborsTest, BadArgumentsGiveNothing) {
  EXPECT_TRUE(ExactNeighbors(Line(3, {1}), 0).empty());
  EXPECT_TRUE(ExactNeighbors(Line(3, {1}), 4).empty());
  Dataset d = Line(3, {1});
  d.queries.cols = 3;
  EXPECT_TRUE(ExactNeighbors(d, 1).empty());
}

TEST(RecallTest, KnownValues) {
  const std::vector<int32_t> truth = {2, 3, 1, 4,  //
                                      8, 7, 9, 6};
  // Query 0 finds 2 of its top 3; query 1 finds all 3 in another order.
  const std::vector<int64_t> found = {2, 9, 3,  //
                                      9, 8, 7};
  EXPECT_DOUBLE_EQ(RecallAtK(found, 3, truth, 4, 2, 3), (2.0 + 3.0) / 6.0);
  EXPECT_DOUBLE_EQ(RecallAtK(found, 3, truth, 4, 2, 1), 0.5);  // 2 == 2; 9 != 8
  EXPECT_DOUBLE_EQ(RecallAtK(found, 3, truth, 4, 1, 3), 2.0 / 3.0);
}

TEST(RecallTest, DuplicatesAndMissingDoNotCount) {
  const std::vector<int32_t> truth = {2, 3, 1};
  EXPECT_DOUBLE_EQ(RecallAtK({2, 2, -1}, 3, truth, 3, 1, 3), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(RecallAtK({-1, -1, -1}, 3, truth, 3, 1, 3), 0.0);
  EXPECT_DOUBLE_EQ(RecallAtK({1, 2, 3}, 3, truth, 3, 1, 3), 1.0);
}

TEST(RecallTest, BrokenPreconditionsGiveNaN) {
  const std::vector<int32_t> truth = {2, 3, 1};
  EXPECT_TRUE(std::isnan(RecallAtK({1, 2}, 2, truth, 3, 1, 3)));     // k > found_k
  EXPECT_TRUE(std::isnan(RecallAtK({1, 2, 3}, 3, truth, 3, 2, 3)));  // too few rows
  EXPECT_TRUE(std::isnan(RecallAtK({}, 3, {}, 3, 0, 3)));            // no queries
}

TEST(EnsureGroundTruthTest, KeepsTheDatasetsOwn) {
  Dataset d = Line(10, {2.2f});
  d.neighbors = {9, 9, 9, 9};  // deliberately not the true answer: it must not be replaced
  d.gt_k = 4;
  const std::string cache = CachePath("own.ivecs");
  ASSERT_TRUE(EnsureGroundTruth(d, 3, cache).ok());
  EXPECT_EQ(d.neighbors, (std::vector<int32_t>{9, 9, 9, 9}));
  EXPECT_FALSE(std::filesystem::exists(cache));

  // Too few columns of its own: computed.
  ASSERT_TRUE(EnsureGroundTruth(d, 5, "").ok());
  EXPECT_EQ(d.gt_k, 5);
  EXPECT_EQ(d.neighbors, (std::vector<int32_t>{2, 3, 1, 4, 0}));
}

TEST(EnsureGroundTruthTest, CacheWrittenThenReused) {
  const std::string cache = CachePath("line.ivecs");
  Dataset first = Line(10, {2.2f, 7.9f});
  ASSERT_TRUE(EnsureGroundTruth(first, 4, cache).ok());
  EXPECT_EQ(first.gt_k, 4);
  EXPECT_EQ(first.neighbors, (std::vector<int32_t>{2, 3, 1, 4, 8, 7, 9, 6}));
  int cols = 0;
  StatusOr<std::vector<int32_t>> written = ReadIvecs(cache, &cols);
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  EXPECT_EQ(cols, 4);
  EXPECT_EQ(*written, first.neighbors);

  // A smaller k is served from the cache: all 4 cached columns come back (a recomputation
  // would give 2).
  Dataset second = Line(10, {2.2f, 7.9f});
  ASSERT_TRUE(EnsureGroundTruth(second, 2, cache).ok());
  EXPECT_EQ(second.gt_k, 4);
  EXPECT_EQ(second.neighbors, first.neighbors);
}

TEST(EnsureGroundTruthTest, CacheAcceptsTiesInAnotherOrder) {
  // Query at 2.5 is equidistant from 2 and 3: a cache listing them in either order is valid.
  const std::string cache = CachePath("ties.ivecs");
  ASSERT_TRUE(WriteIvecs(cache, {3, 2, 4, 1}, 4).ok());
  Dataset d = Line(10, {2.5f});
  ASSERT_TRUE(EnsureGroundTruth(d, 4, cache).ok());
  EXPECT_EQ(d.neighbors, (std::vector<int32_t>{3, 2, 4, 1}));
}

TEST(EnsureGroundTruthTest, MismatchedCacheRecomputed) {
  const std::string cache = CachePath("mismatch.ivecs");
  const std::vector<int32_t> truth = {2, 3, 1, 8, 7, 9};
  auto expect_recomputed = [&](const char* why) {
    Dataset d = Line(10, {2.2f, 7.9f});
    ASSERT_TRUE(EnsureGroundTruth(d, 3, cache).ok()) << why;
    EXPECT_EQ(d.gt_k, 3) << why;
    EXPECT_EQ(d.neighbors, truth) << why;
    int cols = 0;
    StatusOr<std::vector<int32_t>> rewritten = ReadIvecs(cache, &cols);
    ASSERT_TRUE(rewritten.ok()) << why;
    EXPECT_EQ(*rewritten, truth) << why;
  };
  ASSERT_TRUE(WriteIvecs(cache, {2, 3, 1}, 3).ok());
  expect_recomputed("one row for two queries");
  ASSERT_TRUE(WriteIvecs(cache, {2, 3, 8, 7}, 2).ok());
  expect_recomputed("two columns for k = 3");
  ASSERT_TRUE(WriteIvecs(cache, {2, 3, 1, 8, 7, 10}, 3).ok());
  expect_recomputed("id outside the base");
  ASSERT_TRUE(WriteIvecs(cache, {5, 4, 6, 1, 0, 2}, 3).ok());
  expect_recomputed("right shape, another dataset's neighbours");
  std::ofstream(cache, std::ios::binary | std::ios::trunc) << "garbage";
  expect_recomputed("corrupt file");
}

TEST(EnsureGroundTruthTest, BadArgumentsRefused) {
  Dataset d = Line(3, {1});
  EXPECT_EQ(EnsureGroundTruth(d, 0, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EnsureGroundTruth(d, 4, "").code(), StatusCode::kInvalidArgument);
  const std::string dir_as_file = ::testing::TempDir() + "no-such-dir/gt.ivecs";
  EXPECT_FALSE(EnsureGroundTruth(d, 1, dir_as_file).ok());
  EXPECT_EQ(d.neighbors, (std::vector<int32_t>{1}));  // computed even though not cached
}

}  // namespace
}  // namespace vecgpu::bench
