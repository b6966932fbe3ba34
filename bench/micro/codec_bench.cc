// Google Benchmark: request decoding and reply encoding, nested lists against binary float32,
// and the whole service path on a tiny index (the per-search overhead above FAISS).
#include <benchmark/benchmark.h>

#include <random>

#include "bench/faissx_client.h"
#include "core/engine.h"
#include "core/service/local_service.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "server/auth.h"
#include "server/faissx/request.h"
#include "server/faissx/service.h"

namespace vecgpu::bench {
namespace {

constexpr int kDim = 128;

std::vector<float> Random(int64_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> g;
  std::vector<float> v(n * kDim);
  for (auto& x : v) x = g(rng);
  return v;
}

Limits BenchLimits() {
  Limits l;
  (void)l.Validate();
  return l;
}

// Decoding a search request of range(0) queries: args {queries, binary}.
void BM_DecodeSearch(benchmark::State& state) {
  const int64_t nq = state.range(0);
  const Encoding enc = state.range(1) ? Encoding::kBinary : Encoding::kList;
  const std::vector<float> q = Random(nq);
  const std::string req = FaissxClient::SearchRequest("docs", q.data(), nq, kDim, 10, enc, {});
  const Limits limits = BenchLimits();
  for (auto _ : state) {
    auto r = server::Request::Decode(req, limits);
    auto m = r->Vectors("query_vectors", {kDim, false}, 100'000);
    benchmark::DoNotOptimize(m->data.data());
  }
  state.SetBytesProcessed(state.iterations() * req.size());
  state.counters["request_bytes"] = static_cast<double>(req.size());
}
BENCHMARK(BM_DecodeSearch)->ArgsProduct({{1, 100, 1000}, {0, 1}});

// Encoding a search request (the client side of the same trade).
void BM_EncodeSearch(benchmark::State& state) {
  const int64_t nq = state.range(0);
  const Encoding enc = state.range(1) ? Encoding::kBinary : Encoding::kList;
  const std::vector<float> q = Random(nq);
  for (auto _ : state) {
    benchmark::DoNotOptimize(FaissxClient::SearchRequest("docs", q.data(), nq, kDim, 10, enc, {}));
  }
}
BENCHMARK(BM_EncodeSearch)->ArgsProduct({{1, 100, 1000}, {0, 1}});

// One search through FaissxService::Handle on a 100-vector flat index: decode, engine,
// FAISS, encode. args {queries, binary}.
void BM_ServiceSearch(benchmark::State& state) {
  const Limits limits = BenchLimits();
  auto auth = server::Authenticator::Create(false, {});
  cpu::CpuBackendFactory factory;
  Engine engine(limits, factory);
  (void)engine.Create("default", {"docs", "L2", kDim, ""});
  FloatMatrix base{100, kDim, Random(100)};
  (void)engine.Add("default", "docs", base, {});
  LocalCollectionService collections(engine, {});
  server::FaissxService service(collections, *auth, limits);
  const int64_t nq = state.range(0);
  const Encoding enc = state.range(1) ? Encoding::kBinary : Encoding::kList;
  const std::vector<float> q = Random(nq);
  const std::string req = FaissxClient::SearchRequest("docs", q.data(), nq, kDim, 10, enc, {});
  for (auto _ : state) benchmark::DoNotOptimize(service.Handle(req));
}
BENCHMARK(BM_ServiceSearch)->ArgsProduct({{1, 100}, {0, 1}});

// Engine::Search alone on the same tiny index: the engine's overhead over FAISS.
void BM_EngineSearch(benchmark::State& state) {
  const Limits limits = BenchLimits();
  cpu::CpuBackendFactory factory;
  Engine engine(limits, factory);
  (void)engine.Create("default", {"docs", "L2", kDim, ""});
  FloatMatrix base{100, kDim, Random(100)};
  (void)engine.Add("default", "docs", base, {});
  FloatMatrix q{1, kDim, Random(1)};
  for (auto _ : state) benchmark::DoNotOptimize(engine.Search("default", "docs", q, 10, {}));
}
BENCHMARK(BM_EngineSearch);

}  // namespace
}  // namespace vecgpu::bench

BENCHMARK_MAIN();
