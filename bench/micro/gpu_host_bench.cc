// Google Benchmark: what the GPU host process costs a search. The same flat index searched in
// process, and through a GPU host process (`vecgpu gpu-host --provider fake`: its "GPU copy"
// is a CPU index, so the difference is the socket, the framing and the hand-offs on both
// sides). Args: {queries per search, vectors in the index}.
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <random>

#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "gpu_host/host_provider.h"

namespace vecgpu::bench {
namespace {

constexpr int kDim = 128;
constexpr int kK = 10;

struct Index {
  explicit Index(int64_t rows) {
    cpu::UseOneThreadHere();
    auto created = factory.Create(*ParseIndexType("L2", kDim));
    host = std::move(*created);
    std::mt19937 rng(1);
    std::normal_distribution<float> g;
    x.resize(rows * kDim);
    for (auto& v : x) v = g(rng);
    (void)host->Add(rows, x.data());
  }
  cpu::CpuBackendFactory factory;
  std::unique_ptr<Backend> host;
  std::vector<float> x;
};

Index& Shared(int64_t rows) {
  static auto* indexes = new std::map<int64_t, std::unique_ptr<Index>>();
  auto& index = (*indexes)[rows];
  if (!index) index = std::make_unique<Index>(rows);
  return *index;
}

void Search(benchmark::State& state, const Backend& b) {
  const int64_t nq = state.range(0);
  const std::vector<float>& x = Shared(state.range(1)).x;
  std::vector<float> d(nq * kK);
  std::vector<int64_t> l(nq * kK);
  for (auto _ : state) {
    Status st = b.Search(nq, x.data(), kK, {}, d.data(), l.data());
    if (!st.ok()) state.SkipWithError(st.message().c_str());
    benchmark::DoNotOptimize(l.data());
  }
  state.SetItemsProcessed(state.iterations() * nq);
}

void Args(benchmark::internal::Benchmark* b) {
  for (int64_t rows : {100, 10000}) {
    for (int64_t nq : {1, 16, 256}) b->Args({nq, rows});
  }
  b->UseRealTime();
}

void BM_SearchInProcess(benchmark::State& state) {
  Search(state, *Shared(state.range(1)).host);
}
BENCHMARK(BM_SearchInProcess)->Apply(Args);

void BM_SearchInGpuHostProcess(benchmark::State& state) {
  gpu_host::GpuHostOptions o;
  o.exe = VECGPU_BINARY;
  o.provider_args = {"--provider", "fake", "--fake-gpus", "1024"};
  gpu_host::GpuHostProvider provider(o);
  auto copy = provider.BuildReplica(*Shared(state.range(1)).host, {0});
  if (!copy.ok()) {
    state.SkipWithError(copy.status().message().c_str());
    return;
  }
  Search(state, **copy);
}
BENCHMARK(BM_SearchInGpuHostProcess)->Apply(Args);

}  // namespace
}  // namespace vecgpu::bench
