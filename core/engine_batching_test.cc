// The Engine's queued, batched searches over a fake backend that records every call.
#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <thread>

#include "core/engine.h"

namespace vecgpu {
namespace {

constexpr int kDim = 4;

// A flat-storage backend whose search answers query row r, column j with label
// 100 * x[r][0] + j and distance ntotal (so a search shows which adds it saw). It can hold
// its first search until released, and records each call's (n, k).
class FakeBackend final : public Backend {
 public:
  explicit FakeBackend(IndexSpec spec) : spec_(std::move(spec)) {}
  std::shared_future<void> hold;  // when valid, the next search waits for it
  mutable std::mutex mu;
  mutable std::vector<std::pair<int64_t, int>> calls;

  const IndexSpec& spec() const override { return spec_; }
  BackendInfo Info() const override { return {ntotal_, true, "fake"}; }
  int64_t ntotal() const override { return ntotal_; }
  bool is_trained() const override { return true; }
  int64_t next_label() const override { return ntotal_; }
  bool labels_shift_on_remove() const override { return true; }
  bool can_remove() const override { return false; }
  Status Train(int64_t, const float*) override { return Status::Ok(); }
  Status Add(int64_t n, const float*) override {
    std::lock_guard g(mu);
    adds.push_back(n);
    ntotal_ += n;
    return Status::Ok();
  }
  std::vector<int64_t> adds;  // rows of each Add call
  Status AddLabeled(int64_t, const float*, const int64_t*, int64_t) override {
    return Unimplemented("fake");
  }
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t>) override {
    return Unimplemented("fake");
  }
  Status Reset() override { return Status::Ok(); }
  Status Search(int64_t n, const float* x, int k, const SearchParams&, float* d,
                int64_t* l) const override {
    std::shared_future<void> wait;
    {
      std::lock_guard g(mu);
      calls.push_back({n, k});
      wait = hold;
    }
    if (wait.valid()) wait.wait();
    for (int64_t r = 0; r < n; ++r) {
      for (int j = 0; j < k; ++j) {
        l[r * k + j] = static_cast<int64_t>(x[r * kDim]) * 100 + j;
        d[r * k + j] = static_cast<float>(ntotal_);
      }
    }
    return Status::Ok();
  }
  StatusOr<RangeResult> RangeSearch(int64_t, const float*, float,
                                    const SearchParams&) const override {
    return Unimplemented("fake");
  }
  Status Reconstruct(int64_t, float*) const override { return Unimplemented("fake"); }
  Status ReconstructN(int64_t, int64_t, float*) const override { return Unimplemented("fake"); }
  std::vector<TransformStep> Transforms() const override { return {}; }
  StatusOr<FloatMatrix> ApplyTransform(int64_t, const float*) const override {
    return Unimplemented("fake");
  }
  Status SetParameter(std::string_view, double) override { return Unimplemented("fake"); }
  StatusOr<double> GetParameter(std::string_view) const override { return Unimplemented("fake"); }
  StatusOr<std::vector<uint8_t>> Serialize() const override { return Unimplemented("fake"); }

 private:
  IndexSpec spec_;
  int64_t ntotal_ = 0;
};

class FakeFactory final : public BackendFactory {
 public:
  std::string name() const override { return "fake"; }
  StatusOr<std::unique_ptr<Backend>> Load(const IndexSpec&, std::string_view, int64_t) override {
    return Unimplemented("fake");
  }
  StatusOr<std::unique_ptr<Backend>> Create(const IndexSpec& spec) override {
    auto b = std::make_unique<FakeBackend>(spec);
    last = b.get();
    return std::unique_ptr<Backend>(std::move(b));
  }
  StatusOr<ClusteringResult> Cluster(int64_t, int, const float*, int, Metric, int) override {
    return Unimplemented("fake");
  }
  FakeBackend* last = nullptr;
};

FloatMatrix Query(int id, int rows = 1) {
  FloatMatrix m;
  m.rows = rows;
  m.cols = kDim;
  m.data.assign(rows * kDim, 0.f);
  for (int r = 0; r < rows; ++r) m.data[r * kDim] = static_cast<float>(id + r);
  return m;
}

struct Fixture {
  Fixture() {
    SchedulerOptions o;
    o.query_threads = 2;
    o.write_threads = 1;
    EXPECT_TRUE(o.Validate().ok());
    scheduler = std::make_unique<Scheduler>(o);
    EXPECT_TRUE(limits.Validate().ok());
    engine = std::make_unique<Engine>(limits, factory, nullptr, scheduler.get());
    EXPECT_TRUE(engine->Create("t", {"i", "L2", kDim, ""}).ok());
    backend = factory.last;
  }
  ~Fixture() { scheduler->Shutdown(); }
  // Until the backend has seen a search (it is then held, and the index busy).
  void WaitForFirstSearch() {
    for (int i = 0; i < 1000; ++i) {
      {
        std::lock_guard g(backend->mu);
        if (!backend->calls.empty()) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  Limits limits;
  FakeFactory factory;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Engine> engine;
  FakeBackend* backend = nullptr;
};

TEST(EngineBatchingTest, QueuedSearchesShareOneCallAndEachGetsItsOwnRowsAndK) {
  Fixture f;
  std::promise<void> release;
  f.backend->hold = release.get_future().share();
  // The first search runs alone and holds the index; the next ones queue behind it.
  std::promise<StatusOr<SearchResult>> first;
  // From another thread: an idle index runs a search on the submitting thread, which the
  // held backend would then block.
  std::thread holder([&] {
    ASSERT_TRUE(f.engine
                    ->SubmitSearch("t", "i", Query(1), 2, {}, Clock::time_point::max(),
                                   [&](StatusOr<SearchResult> r) { first.set_value(r); })
                    .ok());
  });
  f.WaitForFirstSearch();
  std::vector<std::promise<StatusOr<SearchResult>>> results(6);
  const int ks[] = {1, 5, 3, 2, 4, 5};
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(f.engine
                    ->SubmitSearch("t", "i", Query(10 * (i + 1), i % 2 + 1), ks[i], {},
                                   Clock::time_point::max(),
                                   [&, i](StatusOr<SearchResult> r) { results[i].set_value(r); })
                    .ok());
  }
  {
    std::lock_guard g(f.backend->mu);
    f.backend->hold = {};
  }
  release.set_value();
  holder.join();
  ASSERT_TRUE(first.get_future().get().ok());
  for (int i = 0; i < 6; ++i) {
    auto r = results[i].get_future().get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->k, ks[i]);
    ASSERT_EQ(r->nq, i % 2 + 1);
    for (int64_t q = 0; q < r->nq; ++q) {
      for (int j = 0; j < ks[i]; ++j) {
        EXPECT_EQ(r->labels[q * ks[i] + j], (10 * (i + 1) + q) * 100 + j) << i;
      }
    }
  }
  std::lock_guard g(f.backend->mu);
  ASSERT_EQ(f.backend->calls.size(), 2u) << "the six queued searches did not share one call";
  EXPECT_EQ(f.backend->calls[0], std::make_pair(int64_t{1}, 2));
  EXPECT_EQ(f.backend->calls[1], std::make_pair(int64_t{9}, 5));  // all rows, at the largest k
}

TEST(EngineBatchingTest, QueuedAddsAreMergedIntoOneAdd) {
  Fixture f;
  std::promise<void> release;
  f.backend->hold = release.get_future().share();
  std::promise<StatusOr<SearchResult>> first;  // holds the index while the adds queue
  // From another thread: an idle index runs a search on the submitting thread, which the
  // held backend would then block.
  std::thread holder([&] {
    ASSERT_TRUE(f.engine
                    ->SubmitSearch("t", "i", Query(1), 1, {}, Clock::time_point::max(),
                                   [&](StatusOr<SearchResult> r) { first.set_value(r); })
                    .ok());
  });
  f.WaitForFirstSearch();
  std::vector<std::promise<StatusOr<AddResult>>> added(5);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(f.engine
                    ->SubmitAdd("t", "i", Query(0, i + 1), {}, WorkClass::kShort,
                                Clock::time_point::max(),
                                [&, i](StatusOr<AddResult> r) { added[i].set_value(r); })
                    .ok());
  }
  {
    std::lock_guard g(f.backend->mu);
    f.backend->hold = {};
  }
  release.set_value();
  holder.join();
  ASSERT_TRUE(first.get_future().get().ok());
  for (int i = 0; i < 5; ++i) {
    auto r = added[i].get_future().get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->count, i + 1);  // its own rows
    EXPECT_EQ(r->ntotal, 15);    // the collection after the merged add
  }
  std::lock_guard g(f.backend->mu);
  EXPECT_EQ(f.backend->adds, std::vector<int64_t>({15})) << "the five adds were not merged";
}

TEST(EngineBatchingTest, ASearchSeesEveryAddAcknowledgedBeforeIt) {
  Fixture f;
  for (int i = 1; i <= 20; ++i) {
    std::promise<Status> added;
    ASSERT_TRUE(f.engine
                    ->Submit(
                        "t", "i", WorkClass::kShort, Clock::time_point::max(),
                        [&] { added.set_value(f.engine->Add("t", "i", Query(0), {}).status()); },
                        [&](const Status& st) { added.set_value(st); })
                    .ok());
    ASSERT_TRUE(added.get_future().get().ok());  // acknowledged
    std::promise<StatusOr<SearchResult>> found;
    ASSERT_TRUE(f.engine
                    ->SubmitSearch("t", "i", Query(1), 1, {}, Clock::time_point::max(),
                                   [&](StatusOr<SearchResult> r) { found.set_value(r); })
                    .ok());
    auto r = found.get_future().get();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->distances[0], i);  // the fake reports the ntotal it searched
  }
}

TEST(EngineBatchingTest, SearchArgumentsAreCheckedBeforeQueuing) {
  Fixture f;
  auto never = [](StatusOr<SearchResult>) { FAIL() << "a refused search was answered later"; };
  EXPECT_EQ(
      f.engine->SubmitSearch("t", "nope", Query(1), 1, {}, Clock::time_point::max(), never).code(),
      StatusCode::kNotFound);
  EXPECT_EQ(
      f.engine->SubmitSearch("u", "i", Query(1), 1, {}, Clock::time_point::max(), never).code(),
      StatusCode::kNotFound);  // another tenant's index
  EXPECT_EQ(
      f.engine->SubmitSearch("t", "i", Query(1), 0, {}, Clock::time_point::max(), never).code(),
      StatusCode::kInvalidArgument);
  FloatMatrix wrong = Query(1);
  wrong.cols = 3;
  wrong.data.resize(3);
  EXPECT_EQ(f.engine->SubmitSearch("t", "i", wrong, 1, {}, Clock::time_point::max(), never).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vecgpu
