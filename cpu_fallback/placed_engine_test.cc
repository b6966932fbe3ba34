// The Engine with a DeviceManager over fake GPUs whose "device copies" are CPU indexes: copies
// built after writes, searches served from them, failures answered from the host with no
// request lost, out-of-memory, removal rebuilds and growth that moves a collection.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "core/device/fake_device_provider.h"
#include "core/device/placed_backend.h"
#include "core/engine.h"
#include "core/metrics/metrics.h"
#include "core/store/memory_file_system.h"
#include "core/store/store.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/test_data.h"

namespace vecgpu {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::Rows;

constexpr int kDim = 16;
constexpr int64_t kMiB = int64_t{1} << 20;

// A CPU index playing a GPU copy: counts its searches and fails on demand.
class FakeCopy final : public Backend {
 public:
  FakeCopy(std::unique_ptr<Backend> index, std::string device, std::atomic<int>* searches,
           std::atomic<int>* fail_at)
      : index_(std::move(index)),
        device_(std::move(device)),
        searches_(searches),
        fail_at_(fail_at) {}

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
    return index_->Add(n, x);
  }
  StatusOr<int64_t> RemoveLabels(std::span<const int64_t>) override {
    return Unimplemented("copy");
  }
  Status Reset() override { return Unimplemented("copy"); }
  Status Search(int64_t n, const float* x, int k, const SearchParams& params, float* distances,
                int64_t* labels) const override {
    const int done = searches_->fetch_add(1) + 1;
    int fail = fail_at_->load();
    // Fails once, at the fail_at-th search (a copy built after a restart serves again).
    if (fail > 0 && done >= fail && fail_at_->compare_exchange_strong(fail, 0)) {
      return Internal("CUDA error 700: an illegal memory access");
    }
    return index_->Search(n, x, k, params, distances, labels);
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

 private:
  std::unique_ptr<Backend> index_;
  std::string device_;
  std::atomic<int>* searches_;
  std::atomic<int>* fail_at_;
};

// An Engine with a scheduler (two workers per fake GPU) and a DeviceManager.
struct PlacedEngine {
  explicit PlacedEngine(std::vector<int64_t> memory, DeviceOptions o = Slow())
      : provider(std::move(memory)) {
    provider.make_replica =
        [this](const Backend& host,
               const std::vector<int>& devices) -> StatusOr<std::unique_ptr<Backend>> {
      // Flat kinds: the copy holds the host's vectors in storage order.
      ASSIGN_OR_RETURN(auto index, factory.Create(host.spec()));
      std::vector<float> x(host.ntotal() * host.spec().dim);
      if (host.ntotal() > 0) {
        RETURN_IF_ERROR(host.ReconstructN(0, host.ntotal(), x.data()));
        RETURN_IF_ERROR(index->Add(host.ntotal(), x.data()));
      }
      return std::unique_ptr<Backend>(std::make_unique<FakeCopy>(
          std::move(index), "gpu:" + std::to_string(devices[0]), &copy_searches, &fail_at));
    };
    o.memory_fraction = 1.0;
    devices = std::make_unique<DeviceManager>(&provider, o, nullptr, &metrics);
    SchedulerOptions so;
    so.query_threads = 2;
    so.write_threads = 1;
    EXPECT_TRUE(so.Validate().ok());
    scheduler = std::make_unique<Scheduler>(so, nullptr, &metrics, devices->gpus());
    EXPECT_TRUE(limits.Validate().ok());
    engine = std::make_unique<Engine>(limits, factory, &metrics, scheduler.get(), devices.get());
  }
  ~PlacedEngine() { scheduler->Shutdown(); }
  // A failed GPU is not restarted within a test unless it asks.
  static DeviceOptions Slow() {
    DeviceOptions o;
    o.restart_backoff_s = 3600;
    return o;
  }

  void Create(const std::string& name, const std::string& hint = "") {
    CreateCollectionRequest r{name, "L2", kDim, ""};
    r.device = hint;
    ASSERT_TRUE(engine->Create("t", r).ok());
  }
  StatusOr<AddResult> Add(const std::string& name, const FloatMatrix& x,
                          const std::string& tenant = "t") {
    std::promise<StatusOr<AddResult>> p;
    Status st = engine->SubmitAdd(tenant, name, x, {}, WorkClass::kShort, Clock::time_point::max(),
                                  [&](StatusOr<AddResult> r) { p.set_value(std::move(r)); });
    if (!st.ok()) return st;
    return p.get_future().get();
  }
  StatusOr<SearchResult> Search(const std::string& name, const FloatMatrix& q, int k,
                                const std::string& tenant = "t") {
    std::promise<StatusOr<SearchResult>> p;
    Status st = engine->SubmitSearch(tenant, name, q, k, {}, Clock::time_point::max(),
                                     [&](StatusOr<SearchResult> r) { p.set_value(std::move(r)); });
    if (!st.ok()) return st;
    return p.get_future().get();
  }
  BackendInfo Info(const std::string& name, const std::string& tenant = "t") {
    return engine->Describe(tenant, name)->backend;
  }
  // Waits (up to 10 s) until the collection's device copy is current, in its description and
  // in listings (which read a cache that follows the copy under the same lock hold).
  bool WaitForCopy(const std::string& name, const std::string& tenant = "t") {
    for (int i = 0; i < 1000; ++i) {
      const auto listed = engine->List(tenant);
      const bool in_listing = std::any_of(listed.begin(), listed.end(), [&](const auto& c) {
        return c.name == name && c.backend.replica == "current";
      });
      if (Info(name, tenant).replica == "current" && in_listing) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  Limits limits;
  cpu::CpuBackendFactory factory;
  MetricsRegistry registry;
  ServerMetrics metrics{registry};
  FakeDeviceProvider provider;
  std::atomic<int> copy_searches{0};
  std::atomic<int> fail_at{0};
  std::unique_ptr<DeviceManager> devices;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Engine> engine;
};

// The exact answer, from a CPU-only engine holding the same vectors.
SearchResult Expected(const FloatMatrix& data, const FloatMatrix& q, int k) {
  Limits limits;
  EXPECT_TRUE(limits.Validate().ok());
  cpu::CpuBackendFactory factory;
  Engine plain(limits, factory);
  EXPECT_TRUE(plain.Create("t", {"c", "L2", kDim, ""}).ok());
  EXPECT_TRUE(plain.Add("t", "c", data, {}).ok());
  return *plain.Search("t", "c", q, k, {});
}

TEST(PlacedEngineTest, SearchesRunOnTheDeviceCopyOnceItIsBuilt) {
  PlacedEngine e({kMiB * 64});
  e.Create("c");
  const FloatMatrix x = Clustered(500, kDim);
  ASSERT_TRUE(e.Add("c", x).ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  BackendInfo info = e.Info("c");
  EXPECT_EQ(info.device, "gpu:0");
  EXPECT_NE(info.placement.find("on GPU 0"), std::string::npos) << info.placement;
  EXPECT_EQ(e.engine->List("t")[0].backend.device, "gpu:0");  // listings see the copy too
  // Adds after the copy was built reach it too.
  const FloatMatrix more = Clustered(100, kDim, 10, 9);
  ASSERT_TRUE(e.Add("c", more).ok());
  FloatMatrix all = x;
  all.rows += more.rows;
  all.data.insert(all.data.end(), more.data.begin(), more.data.end());
  EXPECT_EQ(e.provider.builds.load(), 1);
  const FloatMatrix q = Rows(all, 550, 20);
  const int before = e.copy_searches.load();
  auto r = e.Search("c", q, 7);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(e.copy_searches.load(), before);
  // ... on the GPU's own worker: its queue follows the copy.
  auto& gpu_waits = e.metrics.queue_wait_seconds.With({"gpu"});
  EXPECT_GT(gpu_waits.CumulativeCount(gpu_waits.bounds().size()), 0u);
  const SearchResult want = Expected(all, q, 7);
  EXPECT_EQ(r->labels, want.labels);
  EXPECT_EQ(r->distances, want.distances);
  // k above what FAISS's GPU selection handles: answered by the host.
  const int copy = e.copy_searches.load();
  ASSERT_TRUE(e.Search("c", Rows(all, 0, 1), 2049).ok());
  EXPECT_EQ(e.copy_searches.load(), copy);
}

TEST(PlacedEngineTest, AFailingDeviceLosesNoRequestAndItsCollectionsReturnToIt) {
  DeviceOptions o;
  o.max_faults = 1;     // the first fault quarantines it ...
  o.quarantine_s = 0;   // ... until Enable()
  o.restart_backoff_s = 0.01;
  PlacedEngine e({kMiB * 64}, o);
  e.Create("c");
  e.Create("b");  // another collection on the same GPU
  const FloatMatrix x = Clustered(1000, kDim);
  ASSERT_TRUE(e.Add("c", x).ok());
  ASSERT_TRUE(e.Add("b", x).ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  ASSERT_TRUE(e.WaitForCopy("b"));
  e.fail_at = e.copy_searches.load() + 15;  // the device fails mid-load
  const FloatMatrix q = Rows(x, 0, 40);
  const SearchResult want = Expected(x, q, 5);
  std::atomic<int> ok{0}, wrong{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        const int row = (t * 40 + i) % 40;
        auto r = e.Search("c", Rows(q, row, 1), 5);
        if (!r.ok()) continue;
        ok++;
        for (int j = 0; j < 5; ++j) {
          if (r->labels[j] != want.labels[row * 5 + j]) wrong++;
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok.load(), 160);  // every request answered
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_FALSE(e.devices->healthy(0));
  BackendInfo info = e.Info("c");
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.replica, "waiting for the GPU");
  EXPECT_NE(info.placement.find("GPU 0 failed (CUDA error 700"), std::string::npos)
      << info.placement;
  EXPECT_NE(info.placement.find("quarantined"), std::string::npos) << info.placement;
  EXPECT_EQ(e.metrics.gpu_fallbacks.With({kFallbackDeviceFailed}).value(), 1);
  // The other collection on that GPU is answered by the host from its next search on.
  auto other = e.Search("b", Rows(x, 7, 1), 1);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->labels[0], 7);
  EXPECT_EQ(e.Info("b").device, "cpu");
  EXPECT_EQ(e.devices->Devices()[0].collections, 2);  // both keep their place on the GPU
  // A new collection avoids the failed GPU.
  e.Create("d");
  EXPECT_NE(e.Info("d").placement.find("every GPU in use has failed"), std::string::npos);
  // Re-enabled, the GPU restarts, and the next searches rebuild both copies there.
  EXPECT_EQ(e.devices->Enable(0), 1);
  for (int i = 0; i < 1000 && !e.devices->healthy(0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(e.devices->healthy(0));
  for (const char* name : {"c", "b"}) {
    ASSERT_TRUE(e.Search(name, Rows(x, 3, 1), 1).ok());
    ASSERT_TRUE(e.WaitForCopy(name)) << name;
    EXPECT_EQ(e.Info(name).device, "gpu:0");
  }
  const int before = e.copy_searches.load();
  auto r = e.Search("c", q, 5);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->labels, want.labels);
  EXPECT_GT(e.copy_searches.load(), before);  // from the rebuilt copy
}

TEST(PlacedEngineTest, OutOfMemoryWhileBuildingServesFromTheHost) {
  PlacedEngine e({kMiB * 64});
  e.provider.build_error = ResourceExhausted("cudaMalloc of 512 MiB: out of memory");
  e.Create("c");
  const FloatMatrix x = Clustered(300, kDim);
  ASSERT_TRUE(e.Add("c", x).ok());
  for (int i = 0; i < 500 && e.Info("c").placement.find("out of memory") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  BackendInfo info = e.Info("c");
  EXPECT_EQ(info.device, "cpu");
  EXPECT_NE(info.placement.find("ran out of memory"), std::string::npos) << info.placement;
  EXPECT_TRUE(e.devices->healthy(0));  // only this collection left the GPU
  auto r = e.Search("c", Rows(x, 3, 1), 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->labels[0], 3);
}

TEST(PlacedEngineTest, ARemovalRebuildsTheCopy) {
  PlacedEngine e({kMiB * 64});
  e.Create("c");
  const FloatMatrix x = Clustered(400, kDim);
  ASSERT_TRUE(e.Add("c", x).ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  const int64_t ids[] = {0, 1, 2, 3, 4};
  ASSERT_EQ(*e.engine->Remove("t", "c", ids), 5);
  ASSERT_TRUE(e.WaitForCopy("c"));
  EXPECT_EQ(e.provider.builds.load(), 2);
  const FloatMatrix rest = Rows(x, 5, 395);
  const FloatMatrix q = Rows(x, 0, 10);
  auto r = e.Search("c", q, 3);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->labels, Expected(rest, q, 3).labels);
}

TEST(PlacedEngineTest, GrowthMovesTheCollectionToAGpuWithRoom) {
  PlacedEngine e({4 * kMiB, 4 * kMiB});
  e.Create("a");           // GPU 0: 1.25 MiB reserved
  e.Create("f", "gpu:0");  // pinned to GPU 0 as well: 2.5 MiB reserved there
  ASSERT_EQ(e.devices->Devices()[0].collections, 2);
  const FloatMatrix x = Clustered(10000, kDim);
  ASSERT_TRUE(e.Add("a", x).ok());  // 1 MiB + 680 kB: fits on GPU 0 still
  ASSERT_TRUE(e.WaitForCopy("a"));
  EXPECT_EQ(e.Info("a").device, "gpu:0");
  ASSERT_TRUE(e.Add("a", x).ok());  // 1 MiB + 1.36 MB, with headroom: no room on GPU 0
  ASSERT_TRUE(e.WaitForCopy("a"));
  EXPECT_EQ(e.Info("a").device, "gpu:1");
  EXPECT_EQ(e.provider.last_devices, std::vector<int>{1});
  EXPECT_EQ(e.devices->Devices()[0].collections, 1);
  auto r = e.Search("a", Rows(x, 42, 1), 2);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((r->labels[0] == 42 && r->labels[1] == 10042) ||
              (r->labels[0] == 10042 && r->labels[1] == 42));
}

TEST(PlacedEngineTest, KindsWithoutAGpuIndexStayOnTheCpu) {
  PlacedEngine e({kMiB * 64});
  ASSERT_TRUE(e.engine->Create("t", {"h", "HNSW16", kDim, ""}).ok());
  BackendInfo info = e.Info("h");
  EXPECT_EQ(info.device, "cpu");
  EXPECT_NE(info.placement.find("FAISS runs only Flat"), std::string::npos) << info.placement;
  CreateCollectionRequest bad{"x", "L2", kDim, ""};
  bad.device = "tpu:0";
  EXPECT_EQ(e.engine->Create("t", bad).status().code(), StatusCode::kInvalidArgument);
}

// Holds n jobs on n workers until released (at the latest when it goes): each job notes its
// thread and waits for all n to arrive (so they run at once, on n workers), then for the
// release.
class Holds {
 public:
  explicit Holds(int n) : state_(std::make_shared<State>(n)) {}
  ~Holds() { Release(); }

  std::function<void()> Job() {
    return [s = state_] {
      std::unique_lock l(s->mu);
      s->threads.insert(std::this_thread::get_id());
      s->cv.notify_all();
      s->cv.wait(l, [&] { return s->released; });
    };
  }
  // Waits (up to 10 s) until all n jobs run.
  bool AllHeld() {
    std::unique_lock l(state_->mu);
    return state_->cv.wait_for(l, std::chrono::seconds(10), [&] {
      return static_cast<int>(state_->threads.size()) >= state_->n;
    });
  }
  void Release() {
    std::lock_guard l(state_->mu);
    state_->released = true;
    state_->cv.notify_all();
  }
  // Whether one of the held jobs ran on `thread`.
  bool Held(std::thread::id thread) {
    std::lock_guard l(state_->mu);
    return state_->threads.count(thread) > 0;
  }

 private:
  struct State {
    explicit State(int n) : n(n) {}
    const int n;
    std::mutex mu;
    std::condition_variable cv;
    std::set<std::thread::id> threads;
    bool released = false;
  };
  std::shared_ptr<State> state_;
};

// A request stuck on one of a GPU's workers (an add waiting for its fsync, a describe behind a
// lock) holds that worker only: another tenant's search of a collection on the same GPU is
// served by its device copy meanwhile, on the GPU's other worker.
TEST(PlacedEngineTest, AStuckRequestOnAGpuDoesNotDelayAnotherTenantsSearch) {
  PlacedEngine e({kMiB * 64});
  EXPECT_EQ(e.scheduler->gpu_workers(), 2);
  e.Create("c");
  ASSERT_TRUE(e.engine->Create("b", {"c", "L2", kDim, ""}).ok());
  const FloatMatrix x = Clustered(500, kDim);
  ASSERT_TRUE(e.Add("c", x).ok());
  ASSERT_TRUE(e.Add("c", x, "b").ok());
  ASSERT_TRUE(e.WaitForCopy("c"));
  ASSERT_TRUE(e.WaitForCopy("c", "b"));
  ASSERT_EQ(e.Info("c", "b").device, "gpu:0");
  Holds stuck(1);
  ASSERT_TRUE(e.engine
                  ->Submit("t", "c", WorkClass::kShort, Clock::time_point::max(), stuck.Job(),
                           [](const Status&) {})
                  .ok());
  ASSERT_TRUE(stuck.AllHeld());
  const int before = e.copy_searches.load();
  auto search =
      std::async(std::launch::async, [&] { return e.Search("c", Rows(x, 3, 1), 2, "b"); });
  const bool answered = search.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  stuck.Release();
  EXPECT_TRUE(answered) << "tenant b's search waited for tenant t's stuck request";
  auto r = search.get();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->labels[0], 3);
  EXPECT_GT(e.copy_searches.load(), before);  // served by the device copy
}

// A search beyond FAISS's GPU limits (k > 2048) is the host's: it runs off the GPU's workers,
// so it is answered while both of them are held, and holds neither; a search within the
// limits waits for them.
TEST(PlacedEngineTest, SearchesBeyondTheGpuLimitsRunOffTheGpuWorkers) {
  PlacedEngine e({kMiB * 64});
  const FloatMatrix x = Clustered(500, kDim);
  for (const char* name : {"c", "d", "e"}) {
    e.Create(name);
    ASSERT_TRUE(e.Add(name, x).ok());
    ASSERT_TRUE(e.WaitForCopy(name));
  }
  Holds gpu(2);  // GPU 0's two workers, held by work of c's and d's queues
  for (const char* name : {"c", "d"}) {
    ASSERT_TRUE(e.engine
                    ->Submit("t", name, WorkClass::kShort, Clock::time_point::max(), gpu.Job(),
                             [](const Status&) {})
                    .ok());
  }
  ASSERT_TRUE(gpu.AllHeld());
  struct Answer {
    std::promise<StatusOr<SearchResult>> result;
    std::thread::id thread;
  };
  auto search = [&](int k, Answer* a) {
    return e.engine->SubmitSearch("t", "e", Rows(x, 5, 1), k, {}, Clock::time_point::max(),
                                  [a](StatusOr<SearchResult> r) {
                                    a->thread = std::this_thread::get_id();
                                    a->result.set_value(std::move(r));
                                  });
  };
  const int copy = e.copy_searches.load();
  Answer wide;
  ASSERT_TRUE(search(PlacedBackend::kMaxGpuK + 1, &wide).ok());
  auto wide_result = wide.result.get_future();
  const bool wide_answered =
      wide_result.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  Answer narrow;
  ASSERT_TRUE(search(7, &narrow).ok());
  auto narrow_result = narrow.result.get_future();
  const bool narrow_waited =
      narrow_result.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout;
  gpu.Release();
  EXPECT_TRUE(wide_answered) << "the k > 2048 search waited for the GPU's workers";
  EXPECT_TRUE(narrow_waited) << "a search within the GPU's limits ran off its workers";
  auto w = wide_result.get();
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ(w->labels[0], 5);
  EXPECT_EQ(w->labels[500], -1);  // 500 vectors: the rest of the k results are empty
  EXPECT_FALSE(gpu.Held(wide.thread));
  auto n = narrow_result.get();
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(n->labels[0], 5);
  EXPECT_TRUE(gpu.Held(narrow.thread));
  EXPECT_EQ(e.copy_searches.load(), copy + 1);  // the narrow one only, on the device copy
}

// After a restart, an index loaded from its snapshot (and the log after it) is placed again and
// its GPU copy rebuilt from the host data.
TEST(PlacedEngineTest, RecoveryRebuildsTheDeviceCopy) {
  store::MemoryFileSystem fs;
  store::StoreOptions so;
  so.dir = "/data";
  so.snapshot_log_bytes = 0;
  so.snapshot_interval_s = 0;
  const FloatMatrix x = Clustered(300, kDim);
  {
    PlacedEngine e({kMiB * 64});
    auto st = store::Store::Open(fs, so, *e.engine, nullptr);
    ASSERT_TRUE(st.ok()) << st.status().message();
    e.engine->set_log(st->get());
    e.Create("c");
    ASSERT_TRUE(e.Add("c", Rows(x, 0, 200)).ok());
    ASSERT_TRUE((*st)->Snapshot().ok());
    ASSERT_TRUE(e.Add("c", Rows(x, 200, 100)).ok());  // in the log only
    fs.Crash();
  }
  fs.Restart();
  PlacedEngine e({kMiB * 64});
  store::RecoveryReport report;
  auto st = store::Store::Open(fs, so, *e.engine, &report);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(report.snapshots, 1);
  EXPECT_EQ(report.records, 1);
  ASSERT_TRUE(e.WaitForCopy("c"));
  EXPECT_EQ(e.Info("c").device, "gpu:0");
  EXPECT_EQ(e.Info("c").ntotal, 300);
  const FloatMatrix q = Rows(x, 250, 5);
  const int before = e.copy_searches.load();
  auto r = e.Search("c", q, 4);
  ASSERT_TRUE(r.ok());
  EXPECT_GT(e.copy_searches.load(), before);
  const SearchResult want = Expected(x, q, 4);
  EXPECT_EQ(r->labels, want.labels);
}

}  // namespace
}  // namespace vecgpu
