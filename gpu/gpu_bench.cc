// vecgpu-gpu-bench: the FAISS GPU copy of a flat index against the CPU host holding the same
// vectors: queries/s of batched searches, and the latency of one-query searches. Prints one
// JSON object on stdout; without a GPU, {"skipped": "<why>"} (exit 0).
//
//   vecgpu-gpu-bench [--n 1000000] [--d 128] [--batch 1024] [--k 10] [--seconds 10]
//                    [--cpu-batches 2] [--single-queries 200] [--cpu-single-queries 20]
//                    [--device 0]
// One-query searches run one after another, each its own call; none starts after 5 seconds
// (GPU) or 10 seconds (CPU).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/index_spec.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "gpu/cuda_device_provider.h"

namespace vecgpu::gpu {
namespace {

using Seconds = std::chrono::duration<double>;

struct Options {
  int64_t n = 1'000'000;
  int d = 128;
  int64_t batch = 1024;
  int k = 10;
  double seconds = 10;
  int cpu_batches = 2;
  int single_queries = 200;
  int cpu_single_queries = 20;
  int device = 0;
};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

int Fail(const std::string& why) {
  std::printf("{\"error\": \"%s\"}\n", Escape(why).c_str());
  return 1;
}

bool Parse(int argc, char** argv, Options* o, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      *error =
          "usage: vecgpu-gpu-bench [--n N] [--d D] [--batch B] [--k K] [--seconds S] "
          "[--cpu-batches C] [--single-queries Q] [--cpu-single-queries Q] [--device ID]";
      return false;
    }
    if (i + 1 >= argc) {
      *error = a + " needs a value";
      return false;
    }
    const char* v = argv[++i];
    char* end = nullptr;
    const double x = std::strtod(v, &end);
    if (end == v || *end != '\0' || x < 0) {
      *error = a + ": '" + v + "' is not a non-negative number";
      return false;
    }
    if (a == "--n") {
      o->n = static_cast<int64_t>(x);
    } else if (a == "--d") {
      o->d = static_cast<int>(x);
    } else if (a == "--batch") {
      o->batch = static_cast<int64_t>(x);
    } else if (a == "--k") {
      o->k = static_cast<int>(x);
    } else if (a == "--seconds") {
      o->seconds = x;
    } else if (a == "--cpu-batches") {
      o->cpu_batches = static_cast<int>(x);
    } else if (a == "--single-queries") {
      o->single_queries = static_cast<int>(x);
    } else if (a == "--cpu-single-queries") {
      o->cpu_single_queries = static_cast<int>(x);
    } else if (a == "--device") {
      o->device = static_cast<int>(x);
    } else {
      *error = "unknown option " + a;
      return false;
    }
  }
  if (o->n < 1 || o->d < 1 || o->batch < 1 || o->k < 1 || o->k > 2048) {
    *error = "need n, d, batch >= 1 and k within 1..2048";
    return false;
  }
  return true;
}

// Milliseconds of one-query searches on `b`: at most `count` of them, and none started after
// `max_seconds`; p50 and p99 of those run.
struct OneQuery {
  int64_t count = 0;
  double p50_ms = 0, p99_ms = 0;
};
StatusOr<OneQuery> OneQueryLatency(const Backend& b, const std::vector<float>& queries, int d,
                                   int k, int count, double max_seconds) {
  const int64_t available = static_cast<int64_t>(queries.size()) / d;
  std::vector<float> dist(k);
  std::vector<int64_t> labels(k);
  std::vector<double> ms;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < count; ++i) {
    if (Seconds(std::chrono::steady_clock::now() - t0).count() > max_seconds) break;
    const auto q0 = std::chrono::steady_clock::now();
    Status st =
        b.Search(1, queries.data() + (i % available) * d, k, {}, dist.data(), labels.data());
    if (!st.ok()) return st;
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - q0).count());
  }
  OneQuery r;
  r.count = static_cast<int64_t>(ms.size());
  if (ms.empty()) return r;
  std::sort(ms.begin(), ms.end());
  r.p50_ms = ms[ms.size() / 2];
  r.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  return r;
}

std::vector<float> Random(int64_t n, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n) * d);
  for (float& v : x) v = u(rng);
  return x;
}

int Main(int argc, char** argv) {
  Options o;
  std::string error;
  if (!Parse(argc, argv, &o, &error)) return Fail(error);

  std::unique_ptr<DeviceProvider> provider = MakeCudaDeviceProvider();
  StatusOr<int> count = provider->Count();
  if (!count.ok()) {
    std::printf("{\"skipped\": \"%s\"}\n", Escape(count.status().message()).c_str());
    return 0;
  }
  StatusOr<GpuProperties> props = provider->Properties(o.device);
  if (!props.ok()) return Fail(props.status().ToString());

  StatusOr<IndexSpec> spec = ParseIndexType("Flat", o.d);
  if (!spec.ok()) return Fail(spec.status().ToString());
  cpu::CpuBackendFactory factory;
  StatusOr<std::unique_ptr<Backend>> made = factory.Create(*spec);
  if (!made.ok()) return Fail(made.status().ToString());
  std::unique_ptr<Backend> host = std::move(*made);
  {
    constexpr int64_t kChunk = 100'000;
    for (int64_t at = 0; at < o.n; at += kChunk) {
      const int64_t rows = std::min(kChunk, o.n - at);
      const std::vector<float> x = Random(rows, o.d, static_cast<uint32_t>(1 + at / kChunk));
      Status st = host->Add(rows, x.data());
      if (!st.ok()) return Fail(st.ToString());
    }
  }

  auto t0 = std::chrono::steady_clock::now();
  StatusOr<std::unique_ptr<Backend>> built = provider->BuildReplica(*host, {o.device});
  const double build_s = Seconds(std::chrono::steady_clock::now() - t0).count();
  if (!built.ok()) return Fail(built.status().ToString());
  const Backend& gpu = **built;

  // A few distinct query batches, reused round-robin.
  constexpr int kQuerySets = 4;
  std::vector<std::vector<float>> queries;
  for (int i = 0; i < kQuerySets; ++i) queries.push_back(Random(o.batch, o.d, 1000 + i));
  const size_t out = static_cast<size_t>(o.batch) * o.k;
  std::vector<float> dist(out);
  std::vector<int64_t> gpu_labels(out), cpu_labels(out);

  // Warm-up: the first search allocates FAISS's temporary memory and cuBLAS state.
  Status st = gpu.Search(o.batch, queries[0].data(), o.k, {}, dist.data(), gpu_labels.data());
  if (!st.ok()) return Fail(st.ToString());

  std::vector<double> batch_ms;
  t0 = std::chrono::steady_clock::now();
  double gpu_s = 0;
  for (int64_t i = 0; gpu_s < o.seconds || i == 0; ++i) {
    const auto b0 = std::chrono::steady_clock::now();
    st = gpu.Search(o.batch, queries[i % kQuerySets].data(), o.k, {}, dist.data(),
                    gpu_labels.data());
    if (!st.ok()) return Fail(st.ToString());
    const auto b1 = std::chrono::steady_clock::now();
    batch_ms.push_back(std::chrono::duration<double, std::milli>(b1 - b0).count());
    gpu_s = Seconds(b1 - t0).count();
  }
  const double gpu_qps = static_cast<double>(batch_ms.size()) * o.batch / gpu_s;
  std::sort(batch_ms.begin(), batch_ms.end());
  const double p50 = batch_ms[batch_ms.size() / 2];
  const double p99 = batch_ms[std::min(batch_ms.size() - 1, batch_ms.size() * 99 / 100)];

  // The CPU host: a few batches only (slow); the last one's results against the GPU's.
  double cpu_s = 0;
  int cpu_batches = std::max(1, o.cpu_batches);
  for (int i = 0; i < cpu_batches; ++i) {
    const auto b0 = std::chrono::steady_clock::now();
    st = host->Search(o.batch, queries[i % kQuerySets].data(), o.k, {}, dist.data(),
                      cpu_labels.data());
    if (!st.ok()) return Fail(st.ToString());
    cpu_s += Seconds(std::chrono::steady_clock::now() - b0).count();
  }
  const double cpu_qps = static_cast<double>(cpu_batches) * o.batch / cpu_s;
  const int last = (cpu_batches - 1) % kQuerySets;
  st = gpu.Search(o.batch, queries[last].data(), o.k, {}, dist.data(), gpu_labels.data());
  if (!st.ok()) return Fail(st.ToString());
  int64_t same = 0;
  for (int64_t q = 0; q < o.batch; ++q) {
    const std::set<int64_t> g(gpu_labels.begin() + q * o.k, gpu_labels.begin() + (q + 1) * o.k);
    for (int j = 0; j < o.k; ++j) same += g.count(cpu_labels[q * o.k + j]);
  }

  // One query at a time: latency, GPU then CPU, on the same queries.
  StatusOr<OneQuery> gpu_one = OneQueryLatency(gpu, queries[0], o.d, o.k, o.single_queries, 5);
  if (!gpu_one.ok()) return Fail(gpu_one.status().ToString());
  StatusOr<OneQuery> cpu_one =
      OneQueryLatency(*host, queries[0], o.d, o.k, o.cpu_single_queries, 10);
  if (!cpu_one.ok()) return Fail(cpu_one.status().ToString());

  std::printf(
      "{\"device\": \"%s\", \"gpu_id\": %d, \"index\": \"Flat\", \"n\": %lld, \"d\": %d, "
      "\"batch\": %lld, \"k\": %d, \"build_seconds\": %.3f, \"gpu_batches\": %zu, "
      "\"gpu_qps\": %.1f, \"gpu_batch_ms_p50\": %.3f, \"gpu_batch_ms_p99\": %.3f, "
      "\"gpu_memory_bytes\": %lld, \"cpu_batches\": %d, \"cpu_qps\": %.1f, "
      "\"speedup\": %.2f, \"agreement_at_k\": %.4f, "
      "\"gpu_one_query_count\": %lld, \"gpu_one_query_ms_p50\": %.3f, "
      "\"gpu_one_query_ms_p99\": %.3f, \"cpu_one_query_count\": %lld, "
      "\"cpu_one_query_ms_p50\": %.3f, \"cpu_one_query_ms_p99\": %.3f, "
      "\"one_query_speedup\": %.2f}\n",
      Escape(props->name).c_str(), o.device, static_cast<long long>(o.n), o.d,
      static_cast<long long>(o.batch), o.k, build_s, batch_ms.size(), gpu_qps, p50, p99,
      static_cast<long long>(gpu.Info().memory_bytes), cpu_batches, cpu_qps, gpu_qps / cpu_qps,
      static_cast<double>(same) / static_cast<double>(out), static_cast<long long>(gpu_one->count),
      gpu_one->p50_ms, gpu_one->p99_ms, static_cast<long long>(cpu_one->count), cpu_one->p50_ms,
      cpu_one->p99_ms, gpu_one->p50_ms > 0 ? cpu_one->p50_ms / gpu_one->p50_ms : 0.0);
  return 0;
}

}  // namespace
}  // namespace vecgpu::gpu

int main(int argc, char** argv) { return vecgpu::gpu::Main(argc, argv); }
