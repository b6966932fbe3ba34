#include "bench/load.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

namespace vecgpu::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Shared {
  Shared(const LoadSpec& s, const VectorSource& q, const VectorSource& a)
      : spec(s), queries(q), adds(a) {}
  const LoadSpec& spec;
  const VectorSource& queries;
  const VectorSource& adds;
  Clock::time_point start;          // schedule origin (open loop) / run start
  Clock::time_point measure_from;   // end of the warm-up
  Clock::time_point measure_until;  // end of the measured window
  std::atomic<int64_t> next{0};     // request numbers, shared by all clients
  std::atomic<int64_t> measured{0};
  std::mutex mu;
  LoadResult total;
};

// One client thread: its own connection, its own histogram, merged at the end.
void Client(Target& target, Shared& s, int client_id) {
  LoadResult mine;
  auto conn = target.Connect();
  if (!conn.ok()) {
    std::lock_guard lock(s.mu);
    s.total.errors++;
    s.total.errors_by_kind["CONNECT"]++;
    return;
  }
  std::mt19937_64 rng(client_id * 7919 + 1);
  std::uniform_real_distribution<double> coin(0, 1);
  const LoadSpec& spec = s.spec;
  const bool open = spec.mode == LoadMode::kOpen;
  for (;;) {
    const int64_t i = s.next.fetch_add(1);
    Clock::time_point intended;
    if (open) {
      intended =
          s.start + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(ScheduledOffsetSeconds(i, spec.rate_rps)));
      if (intended >= s.measure_until) break;
      std::this_thread::sleep_until(intended);
    } else {
      intended = Clock::now();
      if (intended >= s.measure_until) break;
    }
    const bool measured = intended >= s.measure_from;
    if (measured && spec.max_requests > 0 && s.measured.fetch_add(1) >= spec.max_requests) break;
    const bool add = spec.op == Operation::kAdd ||
                     (spec.op == Operation::kMixed && coin(rng) < spec.write_fraction);
    const Clock::time_point sent = Clock::now();
    Status st = add ? (*conn)->Add(s.adds(i), spec.batch)
                    : (*conn)->Search(s.queries(i), spec.batch, spec.k, nullptr);
    const Clock::time_point done = Clock::now();
    if (!measured) continue;
    mine.requests++;
    if (open && sent - intended > std::chrono::milliseconds(1)) mine.late_starts++;
    if (!st.ok()) {
      mine.errors++;
      mine.errors_by_kind[ErrorKind(st)]++;
      continue;
    }
    mine.latency.Record(
        std::chrono::duration_cast<std::chrono::nanoseconds>(done - intended).count());
  }
  std::lock_guard lock(s.mu);
  s.total.latency.Merge(mine.latency);
  s.total.requests += mine.requests;
  s.total.errors += mine.errors;
  s.total.late_starts += mine.late_starts;
  for (auto& [k, v] : mine.errors_by_kind) s.total.errors_by_kind[k] += v;
}

}  // namespace

LoadResult RunLoad(Target& target, const LoadSpec& spec, const VectorSource& queries,
                   const VectorSource& adds) {
  Shared s(spec, queries, adds);
  s.start = Clock::now();
  auto secs = [](double x) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(x));
  };
  s.measure_from = s.start + secs(spec.warmup_s);
  s.measure_until = s.measure_from + secs(spec.duration_s);
  std::vector<std::thread> threads;
  for (int c = 0; c < spec.clients; ++c) {
    threads.emplace_back([&, c] { Client(target, s, c); });
  }
  for (auto& t : threads) t.join();
  const double measured_end =
      std::chrono::duration<double>(std::min(Clock::now(), s.measure_until) - s.measure_from)
          .count();
  s.total.elapsed_s = std::max(measured_end, 1e-9);
  return std::move(s.total);
}

}  // namespace vecgpu::bench
