#include "gpu/gpu_memory_checks.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>

#include "core/device/device_manager.h"
#include "core/device/placed_backend.h"
#include "core/index_spec.h"
#include "cpu_fallback/cpu_backend_factory.h"

namespace vecgpu::gpu {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr int64_t kMiB = int64_t{1} << 20;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
double Round3(double x) { return std::round(x * 1000) / 1000; }

// n x d floats in [0, 1), a different set for each seed (splitmix64: fast for 10^8 values).
std::vector<float> RandomVectors(int64_t n, int d, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(n) * d);
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (float& v : x) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    v = static_cast<float>((z ^ (z >> 31)) >> 40) / (1 << 24);
  }
  return x;
}

std::string CudaError(const char* call, cudaError_t e) {
  return std::string(call) + ": " + cudaGetErrorString(e);
}

// A flat CPU index of n x d random vectors (seed), added in chunks.
StatusOr<std::unique_ptr<Backend>> FlatHost(int64_t n, int d, uint64_t seed) {
  ASSIGN_OR_RETURN(IndexSpec spec, ParseIndexType("Flat", d, "L2"));
  cpu::CpuBackendFactory factory;
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> host, factory.Create(spec));
  constexpr int64_t kChunk = 250'000;
  for (int64_t at = 0; at < n; at += kChunk) {
    const int64_t rows = std::min(kChunk, n - at);
    const std::vector<float> x = RandomVectors(rows, d, seed * 1000 + at / kChunk);
    RETURN_IF_ERROR(host->Add(rows, x.data()));
  }
  return host;
}

// Device memory taken with plain cudaMalloc, as another process would, freed on destruction.
class DeviceMemoryHog {
 public:
  explicit DeviceMemoryHog(int device) : device_(device) {}
  ~DeviceMemoryHog() { Release(); }

  // Takes memory until cudaMemGetInfo reports at most `leave` bytes free.
  Status TakeAllBut(int64_t leave) {
    cudaError_t e = cudaSetDevice(device_);
    if (e != cudaSuccess) return Internal(CudaError("cudaSetDevice", e));
    for (int tries = 0; tries < 100000; ++tries) {
      size_t free_bytes = 0, total = 0;
      e = cudaMemGetInfo(&free_bytes, &total);
      if (e != cudaSuccess) return Internal(CudaError("cudaMemGetInfo", e));
      const int64_t want = static_cast<int64_t>(free_bytes) - leave;
      if (want <= 2 * kMiB) return Status::Ok();
      size_t chunk = static_cast<size_t>(std::min<int64_t>(want, 1024 * kMiB));
      void* p = nullptr;
      e = cudaMalloc(&p, chunk);
      if (e != cudaSuccess) {
        cudaGetLastError();  // a failed cudaMalloc leaves its error to be read once
        if (chunk <= 4 * kMiB) return Status::Ok();  // as close as allocation granularity goes
        // Fragmented or reserved by the driver: smaller pieces.
        e = cudaMalloc(&p, chunk / 2);
        if (e != cudaSuccess) {
          cudaGetLastError();
          return Status::Ok();
        }
        chunk /= 2;
      }
      blocks_.push_back(p);
      taken_ += static_cast<int64_t>(chunk);
    }
    return Status::Ok();
  }

  void Release() {
    if (blocks_.empty()) return;
    cudaSetDevice(device_);
    for (void* p : blocks_) cudaFree(p);
    blocks_.clear();
  }

  int64_t taken() const { return taken_; }

 private:
  const int device_;
  std::vector<void*> blocks_;
  int64_t taken_ = 0;
};

// Seconds for one device-to-device copy of `bytes`: what a reallocation of a storage that
// size costs at least. 0 when the memory for it cannot be had.
double DeviceCopySeconds(int device, int64_t bytes) {
  if (cudaSetDevice(device) != cudaSuccess) return 0;
  void* a = nullptr;
  void* b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaGetLastError();
    if (a) cudaFree(a);
    return 0;
  }
  double best = 0;
  for (int i = 0; i < 4; ++i) {  // the first is a warm-up
    const auto t0 = Clock::now();
    const cudaError_t e = cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    const double s = Since(t0);
    if (e != cudaSuccess) break;
    if (i > 0) best = best == 0 ? s : std::min(best, s);
  }
  cudaFree(a);
  cudaFree(b);
  return best;
}

// Free device memory now, or -1 (the error goes to problems).
int64_t Free(DeviceProvider& provider, int device, std::vector<std::string>* problems) {
  StatusOr<int64_t> f = provider.FreeBytes(device);
  if (!f.ok()) {
    problems->push_back("FreeBytes: " + f.status().ToString());
    return -1;
  }
  return *f;
}

std::string CodeName(const Status& s) { return s.ok() ? "OK" : s.ToString(); }

}  // namespace

json SingleAdds(DeviceProvider& provider, const SingleAddsOptions& o,
                std::vector<std::string>* problems) {
  json r{{"device", o.device}, {"n", o.n}, {"d", o.dim}, {"adds", o.adds}};
  const int64_t index_bytes = o.n * o.dim * static_cast<int64_t>(sizeof(float));
  r["index_bytes"] = index_bytes;
  auto t0 = Clock::now();
  StatusOr<std::unique_ptr<Backend>> made = FlatHost(o.n, o.dim, 1);
  if (!made.ok()) {
    problems->push_back("host index: " + made.status().ToString());
    return r;
  }
  std::unique_ptr<Backend> host = std::move(*made);
  r["host_seconds"] = Round3(Since(t0));

  // What one reallocation costs at least: a device-to-device copy of the storage.
  const double copy_s = DeviceCopySeconds(o.device, index_bytes);
  r["storage_copy_ms"] = Round3(copy_s * 1000);

  // Placed as the server places a collection: the DeviceManager decides how much room the
  // copy reserves ahead of its adds (PlacedBackend::NextCapacity).
  std::vector<std::string> log;
  std::mutex log_mu;
  DeviceOptions dopts;
  dopts.gpus = std::to_string(o.device);
  DeviceManager devices(&provider, dopts, [&](const std::string& line) {
    std::lock_guard g(log_mu);
    log.push_back(line);
  });
  const int64_t free_before = Free(provider, o.device, problems);
  t0 = Clock::now();
  StatusOr<std::unique_ptr<PlacedBackend>> made_placed = PlacedBackend::Create(
      std::move(host), devices, "gpu:" + std::to_string(o.device), "single-adds");
  if (!made_placed.ok()) {
    problems->push_back("PlacedBackend::Create: " + made_placed.status().ToString());
    return r;
  }
  PlacedBackend& placed = **made_placed;
  if (placed.TakeRefresh()) placed.Refresh();
  r["copy_build_seconds"] = Round3(Since(t0));
  if (placed.Info().replica != "current") {
    problems->push_back("no current GPU copy: " + placed.Info().placement);
    return r;
  }
  const int64_t free_with_copy = Free(provider, o.device, problems);

  // A thread samples free memory during the adds: a reallocation holds both storages.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> min_free{free_with_copy};
  std::atomic<int64_t> samples{0};
  std::thread sampler([&] {
    do {  // at least once, however quickly the adds end
      StatusOr<int64_t> f = provider.FreeBytes(o.device);
      if (f.ok()) {
        int64_t seen = min_free.load();
        while (*f < seen && !min_free.compare_exchange_weak(seen, *f)) {
        }
        ++samples;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    } while (!stop);
  });

  const std::vector<float> x = RandomVectors(o.adds, o.dim, 77);
  std::vector<double> add_ms;
  add_ms.reserve(o.adds);
  t0 = Clock::now();
  for (int64_t i = 0; i < o.adds; ++i) {
    if (Since(t0) > o.seconds) {
      problems->push_back("only " + std::to_string(i) + " adds within " +
                          std::to_string(o.seconds) + " s");
      break;
    }
    const auto a0 = Clock::now();
    Status st = placed.Add(1, x.data() + i * o.dim);
    add_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a0).count());
    if (!st.ok()) {
      problems->push_back("add " + std::to_string(i) + ": " + st.ToString());
      break;
    }
  }
  const double adds_s = Since(t0);
  stop = true;
  sampler.join();
  const int64_t free_after = Free(provider, o.device, problems);

  const int64_t done = static_cast<int64_t>(add_ms.size());
  r["adds_done"] = done;
  r["adds_seconds"] = Round3(adds_s);
  r["adds_per_second"] = adds_s > 0 ? std::round(done / adds_s) : 0;
  double p50_ms = 0;
  if (done > 0) {
    std::vector<double> sorted = add_ms;
    std::sort(sorted.begin(), sorted.end());
    p50_ms = sorted[sorted.size() / 2];
    r["add_ms_p50"] = Round3(p50_ms);
    r["add_ms_p99"] = Round3(sorted[std::min(sorted.size() - 1, sorted.size() * 99 / 100)]);
    r["add_ms_max"] = Round3(sorted.back());
  }
  // An add that reallocated the storage copied all of it: it took at least one copy's time,
  // and far longer than the typical add. (Where every add reallocates, the typical add itself
  // takes a copy's time: see below.)
  const double copy_ms = copy_s * 1000;
  const double slow_ms = std::max(copy_ms, 4 * p50_ms);
  int64_t slow = 0;
  for (double ms : add_ms) slow += copy_s > 0 && ms > slow_ms;
  r["slow_add_threshold_ms"] = Round3(slow_ms);
  r["slow_adds"] = copy_s > 0 ? json(slow) : json();
  r["free_bytes_before_copy"] = free_before;
  r["free_bytes_with_copy"] = free_with_copy;
  r["free_bytes_after_adds"] = free_after;
  r["min_free_bytes_during_adds"] = min_free.load();
  r["free_samples"] = samples.load();
  r["copy_bytes"] = free_before - free_with_copy;
  r["growth_bytes"] = free_with_copy - free_after;
  r["peak_extra_bytes"] = free_with_copy - min_free.load();
  if (copy_s > 0 && done > 0 && p50_ms >= copy_ms / 2) {
    problems->push_back("the typical single add took " + std::to_string(p50_ms) +
                        " ms, as long as copying the whole storage (" + std::to_string(copy_ms) +
                        " ms): the storage is reallocated by every add");
  } else if (copy_s > 0 && slow > o.max_slow_adds) {
    problems->push_back(std::to_string(slow) + " of " + std::to_string(done) +
                        " single adds took over " + std::to_string(slow_ms) +
                        " ms (a copy of the whole storage, and 4 times the typical add): "
                        "the storage is reallocated too often");
  }

  // The copy is still current, on the device, and finds the last vector added first.
  const BackendInfo info = placed.Info();
  r["after"] = {{"device", info.device},
                {"gpu_copy", info.replica},
                {"ntotal", info.ntotal},
                {"gpu_memory_bytes", info.gpu_memory_bytes},
                {"placement", info.placement}};
  if (info.replica != "current" || info.device != "gpu:" + std::to_string(o.device)) {
    problems->push_back("after the adds the collection is served from " + info.device +
                        " (copy: " + info.replica + "; " + info.placement + ")");
  }
  if (info.ntotal != o.n + done) problems->push_back("ntotal " + std::to_string(info.ntotal));
  if (done > 0) {
    float dist = 0;
    int64_t label = -1;
    Status st = placed.Search(1, x.data() + (done - 1) * o.dim, 1, {}, &dist, &label);
    if (!st.ok()) {
      problems->push_back("search after the adds: " + st.ToString());
    } else if (label != o.n + done - 1) {
      problems->push_back("the last vector added is not found first (got label " +
                          std::to_string(label) + ")");
    }
  }
  {
    std::lock_guard g(log_mu);
    const size_t from = log.size() > 8 ? log.size() - 8 : 0;
    r["device_manager_log"] = std::vector<std::string>(log.begin() + from, log.end());
  }
  return r;
}

json ForcedOom(DeviceProvider& provider, const OomOptions& o, std::vector<std::string>* problems) {
  json r{{"device", o.device}, {"copy_mb", o.copy_mb}, {"free_mb", o.free_mb}};
  const int copy_dim = 128;
  const int64_t copy_rows = o.copy_mb * kMiB / (copy_dim * static_cast<int64_t>(sizeof(float)));

  // 1. A small copy first: FAISS takes its temporary memory and cuBLAS state on first use.
  StatusOr<std::unique_ptr<Backend>> small_host = FlatHost(1000, 64, 2);
  if (!small_host.ok()) {
    problems->push_back("small host: " + small_host.status().ToString());
    return r;
  }
  StatusOr<std::unique_ptr<Backend>> small = provider.BuildReplica(**small_host, {o.device});
  if (!small.ok()) {
    problems->push_back("small GPU copy (before any pressure): " + small.status().ToString());
    return r;
  }
  {
    std::vector<float> q = RandomVectors(1, 64, 3), d(1);
    std::vector<int64_t> l(1);
    if (Status st = (*small)->Search(1, q.data(), 1, {}, d.data(), l.data()); !st.ok()) {
      problems->push_back("small GPU copy search: " + st.ToString());
    }
  }

  // 2. A collection placed by the DeviceManager on the device, its copy current; an unplaced
  //    CPU index with the same vectors is the oracle.
  std::vector<std::string> log;
  std::mutex log_mu;
  DeviceOptions dopts;
  dopts.gpus = std::to_string(o.device);
  DeviceManager devices(&provider, dopts, [&](const std::string& line) {
    std::lock_guard g(log_mu);
    log.push_back(line);
  });
  StatusOr<std::unique_ptr<Backend>> placed_host = FlatHost(100'000, copy_dim, 4);
  StatusOr<std::unique_ptr<Backend>> oracle = FlatHost(100'000, copy_dim, 4);
  if (!placed_host.ok() || !oracle.ok()) {
    problems->push_back("placed host index could not be made");
    return r;
  }
  StatusOr<std::unique_ptr<PlacedBackend>> made = PlacedBackend::Create(
      std::move(*placed_host), devices, "gpu:" + std::to_string(o.device), "oom-check");
  if (!made.ok()) {
    problems->push_back("PlacedBackend::Create: " + made.status().ToString());
    return r;
  }
  PlacedBackend& placed = **made;
  if (placed.TakeRefresh()) placed.Refresh();
  r["placed_before"] = {{"device", placed.Info().device}, {"gpu_copy", placed.Info().replica}};
  if (placed.Info().replica != "current") {
    problems->push_back("the placed collection has no current GPU copy before the pressure (" +
                        placed.Info().placement + ")");
  }

  // 3. Everything but free_mb taken.
  StatusOr<std::unique_ptr<Backend>> big_host = FlatHost(copy_rows, copy_dim, 5);
  if (!big_host.ok()) {
    problems->push_back("big host: " + big_host.status().ToString());
    return r;
  }
  r["free_bytes_before"] = Free(provider, o.device, problems);
  DeviceMemoryHog hog(o.device);
  if (Status st = hog.TakeAllBut(o.free_mb * kMiB); !st.ok()) {
    problems->push_back("taking device memory: " + st.ToString());
    return r;
  }
  r["hog_bytes"] = hog.taken();
  r["free_bytes_under_pressure"] = Free(provider, o.device, problems);

  // 4a. A new copy that cannot fit.
  auto t0 = Clock::now();
  StatusOr<std::unique_ptr<Backend>> big = provider.BuildReplica(**big_host, {o.device});
  r["build"] = {{"status", CodeName(big.status())}, {"seconds", Round3(Since(t0))}};
  if (big.ok()) {
    problems->push_back("a " + std::to_string(o.copy_mb) + " MiB copy was built with " +
                        std::to_string(o.free_mb) + " MiB free");
    big->reset();
  } else if (big.status().code() != StatusCode::kResourceExhausted) {
    problems->push_back("building a copy too large: " + big.status().ToString() +
                        " (expected ResourceExhausted)");
  }

  // 4b. An add that cannot fit, to an existing copy.
  {
    const int64_t rows = o.copy_mb * kMiB / (64 * static_cast<int64_t>(sizeof(float)));
    const std::vector<float> x = RandomVectors(rows, 64, 6);
    std::vector<int64_t> labels(rows);
    for (int64_t i = 0; i < rows; ++i) labels[i] = (*small)->ntotal() + i;
    Status st = (*small)->AddLabeled(rows, x.data(), labels.data(), labels.back() + 1);
    r["add"] = {{"status", CodeName(st)}, {"rows", rows}};
    if (st.ok()) {
      problems->push_back("an add of " + std::to_string(o.copy_mb) + " MiB fit in " +
                          std::to_string(o.free_mb) + " MiB");
    } else if (st.code() != StatusCode::kResourceExhausted) {
      problems->push_back("adding too much: " + st.ToString() + " (expected ResourceExhausted)");
    }
  }

  // 4c. The placed collection grows past the device: still served, by its host copy.
  {
    const int64_t rows = copy_rows;
    const std::vector<float> x = RandomVectors(rows, copy_dim, 7);
    Status st = placed.Add(rows, x.data());
    Status oracle_st = (*oracle)->Add(rows, x.data());
    const BackendInfo info = placed.Info();
    r["placed_add"] = {{"status", CodeName(st)},
                       {"rows", rows},
                       {"device", info.device},
                       {"gpu_copy", info.replica},
                       {"placement", info.placement}};
    if (!st.ok() || !oracle_st.ok()) {
      problems->push_back("the placed collection refused an add under memory pressure: " +
                          CodeName(st));
    }
    if (info.device != "cpu" && info.replica == "current") {
      problems->push_back("the placed collection still claims a current GPU copy on " +
                          info.device);
    }
    const int64_t nq = 50;
    const int k = 10;
    const std::vector<float> q = RandomVectors(nq, copy_dim, 8);
    std::vector<float> d1(nq * k), d2(nq * k);
    std::vector<int64_t> l1(nq * k), l2(nq * k);
    Status s1 = placed.Search(nq, q.data(), k, {}, d1.data(), l1.data());
    Status s2 = (*oracle)->Search(nq, q.data(), k, {}, d2.data(), l2.data());
    const bool same = s1.ok() && s2.ok() && l1 == l2;
    r["placed_search"] = {{"status", CodeName(s1)}, {"same_as_cpu", same}};
    if (!same) problems->push_back("searches under memory pressure differ from the CPU's");
  }
  hog.Release();
  r["free_bytes_after"] = Free(provider, o.device, problems);
  {
    std::lock_guard g(log_mu);
    const size_t from = log.size() > 12 ? log.size() - 12 : 0;
    r["device_manager_log"] = std::vector<std::string>(log.begin() + from, log.end());
  }
  return r;
}

}  // namespace vecgpu::gpu
