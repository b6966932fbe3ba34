// GpuHostProvider with real GPU host processes (`vecgpu gpu-host --provider fake`): copies
// built and searched in the child, equal to the host; a crash, a hang and a device error
// reported as a lost device, every later call to the old copies Unavailable; a restart serving
// again; the wire's reader refusing malformed bodies. The vecgpu binary is the child.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/test_data.h"
#include "gpu_host/host_provider.h"
#include "gpu_host/wire.h"

namespace vecgpu::gpu_host {
namespace {

using vecgpu::testing::Clustered;
using vecgpu::testing::Rows;

constexpr int kDim = 16;

class Watcher final : public DeviceWatcher {
 public:
  void DeviceLost(int device, const std::string& why) override {
    std::lock_guard<std::mutex> lock(mu_);
    lost_.push_back(std::to_string(device) + ": " + why);
    cv_.notify_all();
  }
  // Waits (up to 20 s) for the n-th loss; returns its text.
  std::string WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(20), [&] { return lost_.size() >= n; });
    return lost_.size() >= n ? lost_[n - 1] : "";
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return lost_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lost_;
};

GpuHostOptions FakeOptions(double timeout_s = 30) {
  GpuHostOptions o;
  o.exe = VECGPU_BINARY;
  o.provider_args = {"--provider", "fake", "--fake-gpus", "256,256"};
  o.call_timeout_s = timeout_s;
  return o;
}

struct Fixture {
  explicit Fixture(double timeout_s = 30) : provider(FakeOptions(timeout_s)) {
    provider.Watch(&watcher);
    auto spec = ParseIndexType("L2", kDim);
    auto created = cpu.Create(*spec);
    host = std::move(*created);
    x = Clustered(500, kDim);
    EXPECT_TRUE(host->Add(x.rows, x.data.data()).ok());
  }
  ~Fixture() { provider.Watch(nullptr); }
  SearchResult Search(const Backend& b, const FloatMatrix& q, int k, Status* st) {
    SearchResult r{q.rows, k, std::vector<float>(q.rows * k), std::vector<int64_t>(q.rows * k)};
    *st = b.Search(q.rows, q.data.data(), k, {}, r.distances.data(), r.labels.data());
    return r;
  }
  cpu::CpuBackendFactory cpu;
  Watcher watcher;
  GpuHostProvider provider;
  std::unique_ptr<Backend> host;
  FloatMatrix x;
};

TEST(GpuHost, CountsPropertiesAndFreeMemoryComeFromTheProcess) {
  Fixture f;
  ASSERT_EQ(*f.provider.Count(), 2);
  auto props = f.provider.Properties(1);
  ASSERT_TRUE(props.ok()) << props.status().ToString();
  EXPECT_EQ(props->total_bytes, int64_t{256} << 20);
  EXPECT_GT(f.provider.pid(1), 0);
  EXPECT_EQ(*f.provider.FreeBytes(1), int64_t{256} << 20);
  auto copy = f.provider.BuildReplica(*f.host, {1});
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  // The fake counts its copies' memory as used.
  EXPECT_LT(*f.provider.FreeBytes(1), int64_t{256} << 20);
}

TEST(GpuHost, TheCopyInTheProcessAnswersAsTheHostDoes) {
  Fixture f;
  auto copy = f.provider.BuildReplica(*f.host, {0});
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  EXPECT_EQ((*copy)->ntotal(), 500);
  const FloatMatrix q = Rows(f.x, 10, 20);
  Status st;
  SearchResult got = f.Search(**copy, q, 5, &st);
  ASSERT_TRUE(st.ok()) << st.ToString();
  SearchResult want = f.Search(*f.host, q, 5, &st);
  EXPECT_EQ(got.labels, want.labels);
  ASSERT_EQ(got.distances.size(), want.distances.size());
  for (size_t i = 0; i < got.distances.size(); ++i) {  // BLAS may sum in another order there
    EXPECT_NEAR(got.distances[i], want.distances[i], 1e-3 * (1 + want.distances[i]));
  }
  // Adds reach the copy with the host's labels.
  const FloatMatrix more = Clustered(50, kDim, 10, 99);
  ASSERT_TRUE(f.host->Add(more.rows, more.data.data()).ok());
  std::vector<int64_t> labels(50);
  for (int i = 0; i < 50; ++i) labels[i] = 500 + i;
  ASSERT_TRUE((*copy)->AddLabeled(50, more.data.data(), labels.data(), 550).ok());
  EXPECT_EQ((*copy)->ntotal(), 550);
  got = f.Search(**copy, Rows(more, 0, 5), 1, &st);
  ASSERT_TRUE(st.ok());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got.labels[i], 500 + i);
  // A request the copy refuses comes back as its error, and the process goes on.
  std::vector<float> d(1), one(kDim);
  std::vector<int64_t> l(1);
  EXPECT_EQ((*copy)->Search(1, one.data(), 0, {}, d.data(), l.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(f.watcher.count(), 0u);
}

TEST(GpuHost, ACrashIsALostDeviceAndARestartServesAgain) {
  Fixture f;
  auto copy = f.provider.BuildReplica(*f.host, {0});
  ASSERT_TRUE(copy.ok());
  const int pid = f.provider.pid(0);
  ASSERT_TRUE(f.provider.Crash(0).ok());
  const std::string why = f.watcher.WaitFor(1);
  EXPECT_NE(why.find("0: its GPU host process killed by signal 6"), std::string::npos) << why;
  Status st;
  f.Search(**copy, Rows(f.x, 0, 1), 1, &st);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("pid " + std::to_string(pid)), std::string::npos) << st.message();
  EXPECT_EQ(f.provider.pid(0), 0);
  EXPECT_EQ(f.provider.BuildReplica(*f.host, {0}).status().code(), StatusCode::kUnavailable);
  // The other GPU's process is untouched.
  EXPECT_TRUE(f.provider.BuildReplica(*f.host, {1}).ok());
  ASSERT_TRUE(f.provider.Restart(0).ok());
  EXPECT_NE(f.provider.pid(0), pid);
  auto again = f.provider.BuildReplica(*f.host, {0});
  ASSERT_TRUE(again.ok());
  SearchResult r = f.Search(**again, Rows(f.x, 3, 1), 1, &st);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(r.labels[0], 3);
  // The old copy stays dead: it never reaches the new process.
  f.Search(**copy, Rows(f.x, 0, 1), 1, &st);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_EQ(f.watcher.count(), 1u);  // a restart is not a loss
}

TEST(GpuHost, AHungProcessIsKilledAfterTheCallTimeout) {
  Fixture f(/*timeout_s=*/1.0);
  auto copy = f.provider.BuildReplica(*f.host, {0});
  ASSERT_TRUE(copy.ok());
  ASSERT_EQ(::kill(f.provider.pid(0), SIGSTOP), 0);  // a device that stops answering
  Status st;
  const auto start = std::chrono::steady_clock::now();
  f.Search(**copy, Rows(f.x, 0, 1), 1, &st);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("did not answer a search within 1 s"), std::string::npos)
      << st.message();
  EXPECT_NE(f.watcher.WaitFor(1).find("killed by signal 9"), std::string::npos);
}

TEST(GpuHost, ConcurrentCallsAreMatchedToTheirReplies) {
  Fixture f;
  auto copy = f.provider.BuildReplica(*f.host, {0});
  ASSERT_TRUE(copy.ok());
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const int row = (t * 50 + i) % 500;
        Status st;
        SearchResult r = f.Search(**copy, Rows(f.x, row, 1), 1, &st);
        if (!st.ok() || r.labels[0] != row) wrong++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(GpuHostWire, AReaderRefusesMalformedBodies) {
  std::string body = Writer().I64(3).Take();
  Reader r(body);
  EXPECT_EQ(r.I64(), 3);
  EXPECT_TRUE(r.done());
  r.I64();  // past the end
  EXPECT_FALSE(r.ok());
  // A declared length far beyond the body.
  std::string huge = Writer().I64(int64_t{1} << 40).Take();
  Reader h(huge);
  EXPECT_TRUE(h.Bytes(4).empty());
  EXPECT_FALSE(h.ok());
  std::string negative = Writer().I64(-5).Take();
  Reader n(negative);
  n.Array<float>();
  EXPECT_FALSE(n.ok());
  // Specs and parameters survive the trip.
  IndexSpec spec = *ParseIndexType("IVF16,PQ4x8", 32);
  SearchParams p;
  p.nprobe = 7;
  std::string s = Writer().Spec(spec).Params(p).Take();
  Reader back(s);
  IndexSpec got = back.Spec();
  SearchParams gp = back.Params();
  EXPECT_TRUE(back.done());
  EXPECT_EQ(got.factory, spec.factory);
  EXPECT_EQ(got.dim, 32);
  EXPECT_EQ(got.pq_m, spec.pq_m);
  EXPECT_EQ(gp.nprobe.value_or(0), 7);
  EXPECT_FALSE(gp.ef_search.has_value());
}

}  // namespace
}  // namespace vecgpu::gpu_host
