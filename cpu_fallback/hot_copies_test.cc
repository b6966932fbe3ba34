// Hot indexes on several fake GPUs: a copy added on another GPU when the queue stays deep,
// searches answered by both copies (equal to one copy's answers), adds reaching both in
// order, and the extra copy given back when another collection needs its room or when the
// load falls. The fake GPUs' copies are CPU indexes.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <thread>

#include "core/device/fake_device_provider.h"
#include "core/device/placed_backend.h"
#include "core/engine.h"
#include "core/metrics/metrics.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::Rows;

constexpr int kDim = 16;
constexpr int64_t kMiB = int64_t{1} << 20;

// What the copies on one fake GPU did.
struct GpuLog {
  std::atomic<int> searches{0};
  std::atomic<bool> fail_adds{false};      // adds answer out of memory
  std::atomic<bool> fail_searches{false};  // searches answer a CUDA error
  Mutex mu;
  std::vector<int64_t> adds GUARDED_BY(mu);  // first label of each add, in order
  std::vector<int64_t> Adds() {
    MutexLock lock(mu);
    return adds;
  }
};

// A CPU flat index playing a GPU copy: counts its searches (each takes `delay`), logs its
// adds and refuses one out of order.
class CountingCopy final : public Backend {
 public:
  CountingCopy(std::unique_ptr<Backend> index, std::string device, GpuLog* log,
               std::atomic<int>* delay_us, std::atomic<int>* most_inside)
      : index_(std::move(index)),
        device_(std::move(device)),
        log_(log),
        delay_us_(delay_us),
        most_inside_(most_inside) {}

  const IndexSpec& spec() const override { return index_->spec(); }
  BackendInfo Info() const override {
    BackendInfo info = index_->Info();
    info.device = device_;
    return info;
  }
  int64_t ntotal() const override { return index_->ntotal(); }
  bool is_trained() const override { return true; }
  int64_t next_label() const override { return index_->next_label(); }
  bool labels_shift_on_remove() const override { return true; }
  bool can_remove() const override { return false; }
  Status Train(int64_t, const float*) override { return Unimplemented("copy"); }
  Status Add(int64_t, const float*) override { return Unimplemented("copy"); }
  Status AddLabeled(int64_t n, const float* x, const int64_t* labels, int64_t) override {
    if (labels[0] != index_->ntotal()) return FailedPrecondition("labels out of order");
    if (log_->fail_adds) return ResourceExhausted("cudaMalloc: out of memory");
    {
      MutexLock lock(log_->mu);
      log_->adds.push_back(labels[0]);
    }
    return index_->Add(n, x);
  }
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t>) override {
    return Unimplemented("copy");
  }
  Status Reset() override { return Unimplemented("copy"); }
  Status Search(int64_t n, const float* x, int k, const SearchParams& params, float* distances,
                int64_t* labels) const override {
    // Searches running on all fake GPUs together.
    const int now = total_inside_.fetch_add(1) + 1;
    for (int m = most_inside_->load(); now > m && !most_inside_->compare_exchange_weak(m, now);) {
    }
    log_->searches++;
    if (log_->fail_searches) {
      total_inside_--;
      return Internal("CUDA error 700: an illegal memory access");
    }
    if (const int us = delay_us_->load(); us > 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(us));
    }
    Status st = index_->Search(n, x, k, params, distances, labels);
    total_inside_--;
    return st;
  }
  StatusOr<RangeResult> RangeSearch(int64_t, const float*, float,
                                    const SearchParams&) const override {
    return Unimplemented("copy");
  }
  Status Reconstruct(int64_t, float*) const override { return Unimplemented("copy"); }
  Status ReconstructN(int64_t, int64_t, float*) const override { return Unimplemented("copy"); }
  std::vector<TransformStep> Transforms() const override { return {}; }
  StatusOr<FloatMatrix> ApplyTransform(int64_t, const float*) const override {
    return Unimplemented("copy");
  }
  Status SetParameter(std::string_view, double) override { return Unimplemented("copy"); }
  StatusOr<double> GetParameter(std::string_view) const override { return Unimplemented("copy"); }
  StatusOr<std::vector<uint8_t>> Serialize() const override { return Unimplemented("copy"); }

  static inline std::atomic<int> total_inside_{0};

 private:
  std::unique_ptr<Backend> index_;
  std::string device_;
  GpuLog* log_;
  std::atomic<int>* delay_us_;
  std::atomic<int>* most_inside_;
};

// Two fake GPUs of 64 MiB whose copies are CountingCopy, a DeviceManager with `policy`, and
// (for the engine tests) a scheduler with one worker per GPU and small batches, so a burst
// of searches keeps the queue deep.
struct Gpus {
  explicit Gpus(HotCopyPolicy policy) : provider({64 * kMiB, 64 * kMiB}) {
    provider.make_replica =
        [this](const Backend& host,
               const std::vector<int>& devices) -> StatusOr<std::unique_ptr<Backend>> {
      ASSIGN_OR_RETURN(auto index, factory.Create(host.spec()));
      std::vector<float> x(host.ntotal() * host.spec().dim);
      if (host.ntotal() > 0) {
        RETURN_IF_ERROR(host.ReconstructN(0, host.ntotal(), x.data()));
        RETURN_IF_ERROR(index->Add(host.ntotal(), x.data()));
      }
      return std::unique_ptr<Backend>(
          std::make_unique<CountingCopy>(std::move(index), "gpu:" + std::to_string(devices[0]),
                                         &gpu[devices[0]], &delay_us, &most_inside));
    };
    DeviceOptions o;
    o.memory_fraction = 1.0;
    o.copies = policy;
    EXPECT_TRUE(o.Validate().ok());
    devices = std::make_unique<DeviceManager>(
        &provider, o,
        [this](const std::string& line) {
          MutexLock lock(log_mu);
          log += line + "\n";
        },
        &metrics);
  }
  std::string Log() {
    MutexLock lock(log_mu);
    return log;
  }
  int extra_copies(int g) { return devices->Devices()[g].extra_copies; }

  cpu::CpuBackendFactory factory;
  MetricsRegistry registry;
  ServerMetrics metrics{registry};
  FakeDeviceProvider provider;
  GpuLog gpu[2];
  std::atomic<int> delay_us{0};
  std::atomic<int> most_inside{0};
  std::unique_ptr<DeviceManager> devices;
  Mutex log_mu;
  std::string log GUARDED_BY(log_mu);
};

// The exact answers, from a CPU-only engine holding the same vectors.
SearchResult Expected(const FloatMatrix& data, const FloatMatrix& q, int k) {
  Limits limits;
  EXPECT_TRUE(limits.Validate().ok());
  cpu::CpuBackendFactory factory;
  Engine plain(limits, factory);
  EXPECT_TRUE(plain.Create("t", {"c", "L2", kDim, ""}).ok());
  EXPECT_TRUE(plain.Add("t", "c", data, {}).ok());
  return *plain.Search("t", "c", q, k, {});
}

FloatMatrix Concat(FloatMatrix a, const FloatMatrix& b) {
  a.rows += b.rows;
  a.data.insert(a.data.end(), b.data.begin(), b.data.end());
  return a;
}

struct HotEngine : Gpus {
  explicit HotEngine(HotCopyPolicy policy) : Gpus(policy) {
    SchedulerOptions so;
    so.query_threads = 2;
    so.write_threads = 1;
    so.max_batch_rows = 2;  // small batches: a burst stays queued
    EXPECT_TRUE(so.Validate().ok());
    scheduler = std::make_unique<Scheduler>(so, nullptr, &metrics, devices->gpus());
    EXPECT_TRUE(limits.Validate().ok());
    engine = std::make_unique<Engine>(limits, factory, &metrics, scheduler.get(), devices.get());
  }
  ~HotEngine() { scheduler->Shutdown(); }

  StatusOr<AddResult> Add(const std::string& name, const FloatMatrix& x) {
    std::promise<StatusOr<AddResult>> p;
    Status st = engine->SubmitAdd("t", name, x, {}, WorkClass::kShort, Clock::time_point::max(),
                                  [&](StatusOr<AddResult> r) { p.set_value(std::move(r)); });
    if (!st.ok()) return st;
    return p.get_future().get();
  }
  // Searches every row of `q` as its own request, all queued at once; the answers in order.
  std::vector<StatusOr<SearchResult>> Burst(const FloatMatrix& q, int k) {
    std::vector<std::promise<StatusOr<SearchResult>>> done(q.rows);
    std::vector<StatusOr<SearchResult>> out;
    for (int64_t i = 0; i < q.rows; ++i) {
      Status st = engine->SubmitSearch(
          "t", "c", Rows(q, i, 1), k, {}, Clock::time_point::max(),
          [&done, i](StatusOr<SearchResult> r) { done[i].set_value(std::move(r)); });
      if (!st.ok()) done[i].set_value(st);
    }
    for (auto& d : done) out.push_back(d.get_future().get());
    return out;
  }
  BackendInfo Info(const std::string& name) { return engine->Describe("t", name)->backend; }

  Limits limits;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Engine> engine;
};

// Checks each answer of a burst against the exact one.
void ExpectExact(const std::vector<StatusOr<SearchResult>>& got, const FloatMatrix& data,
                 const FloatMatrix& q, int k) {
  const SearchResult want = Expected(data, q, k);
  ASSERT_EQ(static_cast<int64_t>(got.size()), q.rows);
  for (int64_t i = 0; i < q.rows; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status().message();
    EXPECT_TRUE(
        std::equal(got[i]->labels.begin(), got[i]->labels.end(), want.labels.begin() + i * k))
        << "query " << i;
  }
}

TEST(HotCopiesTest, AHotIndexIsServedByCopiesOnTwoGpusUntilAnotherIndexNeedsTheRoom) {
  HotCopyPolicy policy;
  policy.add_depth = 2;
  policy.add_after = std::chrono::milliseconds(20);
  policy.drop_after = std::chrono::hours(1);  // (the load falling is the next test's)
  HotEngine e(policy);
  ASSERT_TRUE(e.engine->Create("t", {"c", "L2", kDim, ""}).ok());
  FloatMatrix data = Clustered(2000, kDim);
  ASSERT_TRUE(e.Add("c", data).ok());
  const FloatMatrix q = Rows(Clustered(400, kDim, 10, 3), 0, 400);
  e.delay_us = 500;
  // Bursts until the copy on GPU 1 is built and has served.
  bool both = false;
  for (int round = 0; round < 100 && !both; ++round) {
    ExpectExact(e.Burst(q, 5), data, q, 5);
    both = e.gpu[0].searches > 0 && e.gpu[1].searches > 0 && e.most_inside >= 2;
  }
  ASSERT_TRUE(both) << "GPU 0 searches " << e.gpu[0].searches << ", GPU 1 " << e.gpu[1].searches
                    << ", at once " << e.most_inside << "\n"
                    << e.Log();
  EXPECT_EQ(e.provider.builds.load(), 2);  // the first copy, then the extra one
  EXPECT_EQ(e.extra_copies(1), 1);
  BackendInfo info = e.Info("c");
  EXPECT_EQ(info.device, "gpu:0+gpu:1");
  // Why: a deep queue, or (whichever rule sees it first) copies busy nearly all the time.
  EXPECT_TRUE(info.placement.find("; copy on gpu:1: queue deep on gpu:0 for") !=
                  std::string::npos ||
              info.placement.find("; copy on gpu:1: busy ") != std::string::npos)
      << info.placement;
  EXPECT_NE(e.Log().find("t/c copy on gpu:1: "), std::string::npos) << e.Log();

  // Adds reach the host, then both copies, in order; answers stay exact and both copies
  // keep answering (one search at a time: the copies take turns).
  e.delay_us = 0;
  for (int i = 0; i < 5; ++i) {
    const FloatMatrix more = Clustered(50, kDim, 10, 20 + i);
    ASSERT_TRUE(e.Add("c", more).ok());
    data = Concat(data, more);
  }
  EXPECT_EQ(e.gpu[0].Adds(), (std::vector<int64_t>{2000, 2050, 2100, 2150, 2200}));
  EXPECT_EQ(e.gpu[1].Adds(), e.gpu[0].Adds());
  EXPECT_EQ(e.Info("c").device, "gpu:0+gpu:1");  // neither copy was dropped
  const int before0 = e.gpu[0].searches, before1 = e.gpu[1].searches;
  const FloatMatrix q2 = Rows(data, 2190, 20);
  for (int64_t i = 0; i < q2.rows; ++i) {
    ExpectExact(e.Burst(Rows(q2, i, 1), 3), data, Rows(q2, i, 1), 3);
  }
  EXPECT_GT(e.gpu[0].searches, before0);
  EXPECT_GT(e.gpu[1].searches, before1);

  // Memory pressure: both GPUs report little free memory, and a new collection needs 1 MiB.
  // GPU 1 has room for it only once the copy gives its room back: it does, instead of the new
  // collection going to the CPU.
  e.provider.free[0] = 0;
  e.provider.free[1] = kMiB / 2;
  ASSERT_TRUE(e.engine->Create("t", {"other", "L2", kDim, ""}).ok());
  EXPECT_NE(e.Info("other").placement.find("on GPU 1"), std::string::npos)
      << e.Info("other").placement;
  EXPECT_EQ(e.extra_copies(1), 0);
  EXPECT_NE(e.Log().find("t/c copy on gpu:1 reclaimed: t/other needs the room"), std::string::npos)
      << e.Log();
  EXPECT_EQ(e.Info("c").device, "gpu:0");
  EXPECT_EQ(e.Info("c").placement.find("copy on gpu:1"), std::string::npos);
  // Still hot, but no GPU has room for another copy: served by GPU 0 alone, exactly.
  e.delay_us = 200;
  const int gpu1 = e.gpu[1].searches;
  ExpectExact(e.Burst(q, 5), data, q, 5);
  ExpectExact(e.Burst(q, 5), data, q, 5);
  EXPECT_EQ(e.gpu[1].searches, gpu1);
  EXPECT_EQ(e.extra_copies(1), 0);
}

// A PlacedBackend driven with made-up times: the copy comes after the queue stays deep for
// add_after, searches spread over both copies, and the copy goes once a window passes with
// little search time.
TEST(HotCopiesTest, TheExtraCopyIsGivenBackWhenTheLoadFalls) {
  Gpus g(HotCopyPolicy{});  // 8 per copy for 2 s; under half of one copy for 30 s
  auto host = g.factory.Create(*ParseIndexType("L2", kDim));
  ASSERT_TRUE(host.ok());
  const FloatMatrix data = Clustered(500, kDim);
  ASSERT_TRUE((*host)->Add(data.rows, data.data.data()).ok());
  auto placed = PlacedBackend::Create(std::move(*host), *g.devices, "", "t/c");
  ASSERT_TRUE(placed.ok()) << placed.status().message();
  PlacedBackend& b = **placed;
  ASSERT_TRUE(b.TakeRefresh());
  b.Refresh();
  EXPECT_EQ(b.serving_gpus(), std::vector<int>{0});

  const auto t0 = std::chrono::steady_clock::now();
  auto at = [&](double s) {
    return t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(s));
  };
  b.SampleLoad(at(0), 30);
  b.SampleLoad(at(1.9), 30);
  EXPECT_FALSE(b.TakeRefresh());  // not yet
  b.SampleLoad(at(2.0), 30);
  EXPECT_EQ(g.extra_copies(1), 1);
  EXPECT_EQ(b.serving_gpus(), std::vector<int>{0});  // being built
  ASSERT_TRUE(b.TakeRefresh());
  b.Refresh();
  EXPECT_EQ(b.serving_gpus(), (std::vector<int>{0, 1}));
  EXPECT_EQ(b.Info().device, "gpu:0+gpu:1");
  EXPECT_NE(b.Info().placement.find("copy on gpu:1: queue deep on gpu:0 for 2.0 s (30 requests"),
            std::string::npos)
      << b.Info().placement;
  // One search at a time alternates between the copies; every answer is the first copy's.
  const FloatMatrix q = Rows(data, 100, 1);
  std::vector<int64_t> first_labels(10);
  std::vector<float> first_distances(10);
  for (int i = 0; i < 10; ++i) {
    std::vector<int64_t> labels(10);
    std::vector<float> distances(10);
    ASSERT_TRUE(b.Search(1, q.data.data(), 10, {}, distances.data(), labels.data()).ok());
    if (i == 0) {
      first_labels = labels;
      first_distances = distances;
    }
    EXPECT_EQ(labels, first_labels);
    EXPECT_EQ(distances, first_distances);
  }
  EXPECT_EQ(g.gpu[0].searches, 5);
  EXPECT_EQ(g.gpu[1].searches, 5);

  // Still busy at 31 s (a deep queue): both stay. Then a whole window with ten quick
  // searches: one copy would have been nearly idle, so the extra one goes.
  b.SampleLoad(at(31), 30);
  EXPECT_EQ(g.extra_copies(1), 1);
  b.SampleLoad(at(62), 0);
  EXPECT_EQ(g.extra_copies(1), 0);
  EXPECT_EQ(b.serving_gpus(), std::vector<int>{0});
  EXPECT_EQ(b.Info().device, "gpu:0");
  EXPECT_NE(g.Log().find("t/c copy on gpu:1 dropped: the load fell"), std::string::npos) << g.Log();
  ASSERT_TRUE(b.Search(1, q.data.data(), 10, {}, first_distances.data(), first_labels.data()).ok());
  EXPECT_EQ(g.gpu[0].searches, 6);
  EXPECT_EQ(g.gpu[1].searches, 5);
}

// Writes reach every copy or rebuild them all; a copy that fails an add or a search is dropped
// (the request answered from the other copy or the host), never serving stale results.
TEST(HotCopiesTest, CopiesFollowWritesAndAFailingCopyIsDropped) {
  Gpus g(HotCopyPolicy{});
  auto host = g.factory.Create(*ParseIndexType("L2", kDim));
  ASSERT_TRUE(host.ok());
  FloatMatrix data = Clustered(500, kDim);
  auto placed = PlacedBackend::Create(std::move(*host), *g.devices, "", "t/c");
  ASSERT_TRUE(placed.ok());
  PlacedBackend& b = **placed;
  ASSERT_TRUE(b.Add(data.rows, data.data.data()).ok());
  const auto t0 = std::chrono::steady_clock::now();
  int64_t second = 0;
  auto make_hot = [&] {  // 2 s of a deep queue, then the copy is built
    b.SampleLoad(t0 + std::chrono::seconds(second), 100);
    b.SampleLoad(t0 + std::chrono::seconds(second + 2), 100);
    second += 3;
    if (b.TakeRefresh()) b.Refresh();
  };
  ASSERT_TRUE(b.TakeRefresh());
  b.Refresh();
  make_hot();
  ASSERT_EQ(b.serving_gpus(), (std::vector<int>{0, 1}));
  EXPECT_EQ(g.provider.builds.load(), 2);
  auto search = [&](int64_t row, std::vector<int64_t>* labels) {
    std::vector<float> d(5);
    labels->assign(5, -1);
    return b.Search(1, data.data.data() + row * kDim, 5, {}, d.data(), labels->data());
  };
  // A removal the copies cannot apply: both are rebuilt, the first first.
  const int64_t first = 0;
  ASSERT_EQ(*b.RemoveLabels({&first, 1}), 1);
  data.data.erase(data.data.begin(), data.data.begin() + kDim);
  data.rows--;
  EXPECT_TRUE(b.serving_gpus().empty());
  ASSERT_TRUE(b.TakeRefresh());
  b.Refresh();
  EXPECT_EQ(g.provider.builds.load(), 4);
  ASSERT_EQ(b.serving_gpus(), (std::vector<int>{0, 1}));
  // GPU 1's copy runs out of memory in an add: it is dropped, GPU 1 stays healthy, and the
  // new vectors are found (by GPU 0's copy).
  g.gpu[1].fail_adds = true;
  const FloatMatrix more = Clustered(10, kDim, 10, 11);
  ASSERT_TRUE(b.Add(more.rows, more.data.data()).ok());
  data = Concat(data, more);
  EXPECT_EQ(b.serving_gpus(), std::vector<int>{0});
  EXPECT_EQ(g.extra_copies(1), 0);
  EXPECT_TRUE(g.devices->healthy(1));
  EXPECT_NE(g.Log().find("t/c copy on gpu:1 dropped: it failed (cudaMalloc: out of memory)"),
            std::string::npos)
      << g.Log();
  std::vector<int64_t> labels;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(search(data.rows - 1, &labels).ok());
    EXPECT_EQ(labels[0], data.rows - 1);
  }
  // A copy again; its search fails with a CUDA error: answered from GPU 0's copy or the host,
  // the copy dropped and its GPU marked unhealthy.
  g.gpu[1].fail_adds = false;
  make_hot();
  ASSERT_EQ(b.serving_gpus(), (std::vector<int>{0, 1}));
  g.gpu[1].fail_searches = true;
  const int failed_before = g.gpu[1].searches;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(search(data.rows - 2, &labels).ok());
    EXPECT_EQ(labels[0], data.rows - 2);
  }
  EXPECT_EQ(g.gpu[1].searches, failed_before + 1);  // tried once, then dropped
  EXPECT_EQ(b.serving_gpus(), std::vector<int>{0});
  EXPECT_FALSE(g.devices->healthy(1));
  EXPECT_EQ(g.extra_copies(1), 0);
}

// With --gpu-max-copies 1, or an index sharded over GPUs, no copy is added however deep.
TEST(HotCopiesTest, NoExtraCopyPastTheCapOrForAShardedIndex) {
  HotCopyPolicy one;
  one.max_copies = 1;
  Gpus g(one);
  auto host = g.factory.Create(*ParseIndexType("L2", kDim));
  ASSERT_TRUE(host.ok());
  auto placed = PlacedBackend::Create(std::move(*host), *g.devices, "", "t/c");
  ASSERT_TRUE(placed.ok());
  PlacedBackend& b = **placed;
  const FloatMatrix data = Clustered(100, kDim);
  ASSERT_TRUE(b.Add(data.rows, data.data.data()).ok());
  ASSERT_TRUE(b.TakeRefresh());
  b.Refresh();
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s <= 10; ++s) b.SampleLoad(t0 + std::chrono::seconds(s), 1000);
  EXPECT_EQ(g.extra_copies(1), 0);
  EXPECT_FALSE(b.TakeRefresh());

  Gpus two(HotCopyPolicy{});
  two.provider.free[0] = 4 * kMiB;  // 80,000 vectors (6 MiB) need both GPUs
  two.provider.free[1] = 4 * kMiB;
  auto big_host = two.factory.Create(*ParseIndexType("L2", kDim));
  ASSERT_TRUE(big_host.ok());
  auto sharded = PlacedBackend::Create(std::move(*big_host), *two.devices, "", "t/big");
  ASSERT_TRUE(sharded.ok());
  const FloatMatrix many = Clustered(80'000, kDim);
  ASSERT_TRUE((*sharded)->Add(many.rows, many.data.data()).ok());  // grows past one GPU
  ASSERT_EQ((*sharded)->placement().gpus.size(), 2u) << (*sharded)->placement().reason;
  ASSERT_TRUE((*sharded)->TakeRefresh());
  (*sharded)->Refresh();
  ASSERT_EQ((*sharded)->serving_gpus(), std::vector<int>{0});
  for (int s = 0; s <= 10; ++s) (*sharded)->SampleLoad(t0 + std::chrono::seconds(s), 1000);
  EXPECT_FALSE((*sharded)->TakeRefresh());
  EXPECT_EQ(two.extra_copies(0) + two.extra_copies(1), 0);
}

}  // namespace
}  // namespace vecgpu
