#include "core/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/util/interrupt.h"

namespace vecgpu {
namespace {

SchedulerOptions Options(int short_workers, int long_workers, int gpu_workers = 2) {
  SchedulerOptions o;
  o.query_threads = short_workers;
  o.write_threads = long_workers;
  o.gpu_workers = gpu_workers;
  EXPECT_TRUE(o.Validate().ok());
  return o;
}

Work Job(std::function<void()> run, WorkClass cls = WorkClass::kShort) {
  Work w;
  w.cls = cls;
  w.run = std::move(run);
  w.expire = [](const Status&) {};
  return w;
}

// Blocks until released: by Open(), at the latest when it goes (declared after the
// scheduler, so a failed assertion does not leave a worker blocked at its shutdown).
struct Gate {
  ~Gate() { Open(); }
  void Open() {
    if (!opened.exchange(true)) open.set_value();
  }
  std::promise<void> open;
  std::shared_future<void> wait = open.get_future().share();
  std::atomic<bool> opened{false};
};

// Lets n jobs wait for each other: Arrive() returns true once all n have arrived, false if
// they have not after 10 s.
struct Rendezvous {
  explicit Rendezvous(int n) : n(n) {}
  bool Arrive() {
    std::unique_lock l(mu);
    ++arrived;
    cv.notify_all();
    return cv.wait_for(l, std::chrono::seconds(10), [&] { return arrived >= n; });
  }
  std::mutex mu;
  std::condition_variable cv;
  const int n;
  int arrived = 0;
};

// The threads of GPU `gpu`'s n workers: n jobs on n queues placed on it, each held until all
// n run at once (so on n different workers).
std::set<std::thread::id> GpuWorkerThreads(Scheduler& s, int gpu, int n) {
  Rendezvous all(n);
  std::mutex mu;
  std::set<std::thread::id> ids;
  std::atomic<int> met{0};
  std::vector<std::promise<void>> done(n);
  for (int i = 0; i < n; ++i) {
    auto q = s.NewQueue("probe", nullptr);
    s.SetDevice(q, gpu);
    EXPECT_TRUE(s.Submit(q, Job([&, i] {
                           if (all.Arrive()) met++;
                           {
                             std::lock_guard l(mu);
                             ids.insert(std::this_thread::get_id());
                           }
                           done[i].set_value();
                         }))
                    .ok());
  }
  for (auto& d : done) d.get_future().wait();
  EXPECT_EQ(met.load(), n) << "GPU " << gpu << " did not run " << n << " jobs at once";
  return ids;
}

// Waits (up to 10 s) for `f` to be ready.
bool Ready(std::future<void>& f) {
  return f.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
}

TEST(SchedulerTest, OneQueueRunsInOrderOnOneWorkerAtATime) {
  Scheduler s(Options(4, 1));
  auto q = s.NewQueue("t", nullptr);
  std::mutex mu;
  std::vector<int> order;
  std::atomic<int> inside{0}, overlap{0};
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(s.Submit(q, Job([&, i] {
                           if (inside.fetch_add(1) > 0) overlap++;
                           {
                             std::lock_guard l(mu);
                             order.push_back(i);
                           }
                           inside--;
                         }))
                    .ok());
  }
  s.Shutdown();
  ASSERT_EQ(order.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(order[i], i);
  EXPECT_EQ(overlap.load(), 0);
}

// A queue stuck in a long write never holds up other queues: their work completes while it
// runs, on the other workers.
TEST(SchedulerTest, AStuckQueueDoesNotBlockFiftyOthers) {
  Scheduler s(Options(2, 1));
  Gate gate;
  auto stuck = s.NewQueue("a", nullptr);
  ASSERT_TRUE(s.Submit(stuck, Job([&] { gate.wait.wait(); }, WorkClass::kLong)).ok());
  ASSERT_TRUE(s.Submit(stuck, Job([] {})).ok());  // queued behind the long write
  std::atomic<int> done{0};
  std::vector<std::shared_ptr<Scheduler::Queue>> queues;
  for (int i = 0; i < 50; ++i) {
    queues.push_back(s.NewQueue("t" + std::to_string(i % 5), nullptr));
    for (int j = 0; j < 4; ++j) ASSERT_TRUE(s.Submit(queues.back(), Job([&] { done++; })).ok());
  }
  for (int i = 0; i < 1000 && done < 200; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(done.load(), 200);
  gate.Open();
  s.Shutdown();
}

// Long work runs only on long workers: with the long worker busy, more long work waits while
// short work still runs.
TEST(SchedulerTest, LongWorkNeverTakesTheShortWorkers) {
  Scheduler s(Options(1, 1));
  Gate gate;
  std::atomic<int> long_started{0}, short_done{0};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(s.Submit(s.NewQueue("t", nullptr), Job(
                                                       [&] {
                                                         long_started++;
                                                         gate.wait.wait();
                                                       },
                                                       WorkClass::kLong))
                    .ok());
  }
  ASSERT_TRUE(s.Submit(s.NewQueue("u", nullptr), Job([&] { short_done++; })).ok());
  // (The long worker may start its first training after the short work is done.)
  for (int i = 0; i < 400 && (short_done == 0 || long_started == 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(short_done.load(), 1);
  EXPECT_EQ(long_started.load(), 1);
  EXPECT_EQ(s.busy(WorkClass::kLong), 1);
  gate.Open();
  s.Shutdown();
  EXPECT_EQ(long_started.load(), 3);
}

// One tenant cannot keep every long worker while another tenant's long work waits: once one
// of its jobs ends, the other tenant's job goes first, though it was queued later.
TEST(SchedulerTest, ATenantGetsNoMoreThanItsShareOfLongWorkersWhenOthersWait) {
  Scheduler s(Options(1, 2));
  Gate first, rest;
  std::mutex mu;
  std::vector<std::string> order;
  std::atomic<int> started{0};
  auto job = [&](std::string who, std::shared_future<void> wait) {
    return Job(
        [&, who, wait] {
          {
            std::lock_guard l(mu);
            order.push_back(who);
          }
          started++;
          wait.wait();
        },
        WorkClass::kLong);
  };
  // Tenant a takes both long workers (an idle server lets it), then queues a third job.
  ASSERT_TRUE(s.Submit(s.NewQueue("a", nullptr), job("a1", first.wait)).ok());
  ASSERT_TRUE(s.Submit(s.NewQueue("a", nullptr), job("a2", rest.wait)).ok());
  for (int i = 0; i < 400 && started < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(started.load(), 2);
  ASSERT_TRUE(s.Submit(s.NewQueue("a", nullptr), job("a3", rest.wait)).ok());
  ASSERT_TRUE(s.Submit(s.NewQueue("b", nullptr), job("b1", rest.wait)).ok());
  first.Open();  // a1 ends: a still holds a2, its share of two workers
  for (int i = 0; i < 400 && started < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  {
    std::lock_guard l(mu);
    ASSERT_EQ(order.size(), 3u);
    EXPECT_EQ(order[2], "b1") << "tenant a took a second long worker while b's work waited";
  }
  rest.Open();
  s.Shutdown();
  EXPECT_EQ(order.size(), 4u);
}

// The deadline of the work a worker runs is what long computations check (FAISS's
// InterruptCallback asks Interrupted()).
TEST(SchedulerTest, RunningWorkSeesItsDeadline) {
  Scheduler s(Options(1, 1));
  std::promise<std::pair<bool, bool>> seen;
  Work w = Job([&] {
    const bool before = Interrupted();
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    seen.set_value({before, Interrupted()});
  });
  w.deadline = Clock::now() + std::chrono::milliseconds(60);
  ASSERT_TRUE(s.Submit(s.NewQueue("t", nullptr), std::move(w)).ok());
  auto [before, after] = seen.get_future().get();
  EXPECT_FALSE(before);
  EXPECT_TRUE(after);
  EXPECT_FALSE(Interrupted());  // not on this thread
  s.Shutdown();
}

// A tenant with a deep queue cannot starve a tenant with one request: tenants take turns.
TEST(SchedulerTest, TenantsAreServedRoundRobin) {
  Scheduler s(Options(1, 1));
  Gate gate, long_gate;
  auto blocker = s.NewQueue("x", nullptr);
  // Occupy both workers so the order below is decided by the scheduler alone; the long worker
  // stays busy, so the short worker alone runs the rest, in the order it chooses.
  ASSERT_TRUE(s.Submit(blocker, Job([&] { long_gate.wait.wait(); }, WorkClass::kLong)).ok());
  ASSERT_TRUE(s.Submit(s.NewQueue("y", nullptr), Job([&] { gate.wait.wait(); })).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::mutex mu;
  std::vector<std::string> order;
  std::promise<void> all_ran;
  auto record = [&](std::string who) {
    return Job([&, who] {
      std::lock_guard l(mu);
      order.push_back(who);
      if (order.size() == 21) all_ran.set_value();
    });
  };
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(s.Submit(s.NewQueue("heavy", nullptr), record("heavy")).ok());
  ASSERT_TRUE(s.Submit(s.NewQueue("light", nullptr), record("light")).ok());
  gate.Open();
  auto ran = all_ran.get_future();
  EXPECT_TRUE(Ready(ran));
  long_gate.Open();
  s.Shutdown();
  auto light = std::find(order.begin(), order.end(), "light") - order.begin();
  EXPECT_LE(light, 1) << "the light tenant waited behind the heavy tenant's queue";
}

TEST(SchedulerTest, BoundsAnswerBusyAndNothingIsLost) {
  SchedulerOptions o = Options(1, 1);
  o.max_queued = 6;
  o.max_queued_per_tenant = 3;
  Scheduler s(o);
  Gate gate;
  std::atomic<int> ran{0};
  ASSERT_TRUE(
      s.Submit(s.NewQueue("z", nullptr), Job([&] { gate.wait.wait(); }, WorkClass::kLong)).ok());
  ASSERT_TRUE(s.Submit(s.NewQueue("z2", nullptr), Job([&] { gate.wait.wait(); })).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto q = s.NewQueue("a", nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.Submit(q, Job([&] { ran++; })).ok());
  Status st = s.Submit(q, Job([&] { ran++; }));
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);  // BUSY: per tenant
  auto b = s.NewQueue("b", nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.Submit(b, Job([&] { ran++; })).ok());
  EXPECT_EQ(s.Submit(s.NewQueue("c", nullptr), Job([&] { ran++; })).code(),
            StatusCode::kUnavailable);  // BUSY: all tenants
  gate.Open();
  s.Shutdown();
  EXPECT_EQ(ran.load(), 6);
}

TEST(SchedulerTest, WorkPastItsDeadlineIsAnsweredNotRun) {
  Scheduler s(Options(1, 1));
  Gate gate;
  auto q = s.NewQueue("t", nullptr);
  ASSERT_TRUE(s.Submit(q, Job([&] { gate.wait.wait(); })).ok());
  std::atomic<bool> ran{false};
  std::promise<Status> answered;
  Work w = Job([&] { ran = true; });
  w.deadline = Clock::now() + std::chrono::milliseconds(20);
  w.expire = [&](const Status& st) { answered.set_value(st); };
  ASSERT_TRUE(s.Submit(q, std::move(w)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  gate.Open();
  EXPECT_EQ(answered.get_future().get().code(), StatusCode::kDeadlineExceeded);
  s.Shutdown();
  EXPECT_FALSE(ran.load());
}

// Batches form from work that queued while the queue was busy, and only then; the head
// runs alone when nothing waits behind it, and different keys never share a batch.
TEST(SchedulerTest, BatchesFormOnlyFromWorkQueuedBehindABusyQueue) {
  SchedulerOptions o = Options(2, 1);
  o.max_batch_rows = 5;
  Scheduler s(o);
  std::mutex mu;
  std::vector<std::vector<int>> batches;
  auto q = s.NewQueue("t", [&](std::vector<Work>& batch) {
    std::vector<int> ids;
    for (Work& w : batch) ids.push_back(*static_cast<int*>(w.payload.get()));
    std::lock_guard l(mu);
    batches.push_back(ids);
  });
  auto search = [&](int id, uint64_t key) {
    Work w = Job([&, id] {
      std::lock_guard l(mu);
      batches.push_back({id});
    });
    w.batch_key = key;
    w.payload = std::make_shared<int>(id);
    return w;
  };
  // Alone: runs at once, alone.
  ASSERT_TRUE(s.Submit(q, search(0, 7)).ok());
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard l(mu);
      if (!batches.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Gate gate;
  ASSERT_TRUE(s.Submit(q, Job([&] { gate.wait.wait(); })).ok());  // the queue is busy
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  for (int id = 1; id <= 7; ++id) ASSERT_TRUE(s.Submit(q, search(id, 7)).ok());
  ASSERT_TRUE(s.Submit(q, search(8, 9)).ok());  // other parameters
  gate.Open();
  s.Shutdown();
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[0], std::vector<int>({0}));
  EXPECT_EQ(batches[1], std::vector<int>({1, 2, 3, 4, 5}));  // max_batch_rows
  EXPECT_EQ(batches[2], std::vector<int>({6, 7}));
  EXPECT_EQ(batches[3], std::vector<int>({8}));
}

// A queue placed on a GPU has its short work run by that GPU's workers (never a CPU worker),
// its long work by the long workers, and moves back to the CPU workers.
TEST(SchedulerTest, GpuQueuesRunOnTheirGpuWorkers) {
  Scheduler s(Options(2, 1), nullptr, nullptr, {0, 3});
  EXPECT_EQ(s.gpu_workers(), 4);  // --gpu-workers 2 for each
  const std::set<std::thread::id> gpu3 = GpuWorkerThreads(s, 3, 2);
  EXPECT_EQ(gpu3.size(), 2u);
  auto gpu = s.NewQueue("t", nullptr);
  auto cpu = s.NewQueue("t", nullptr);
  s.SetDevice(gpu, 3);
  EXPECT_EQ(s.device(gpu), 3);
  auto other = s.NewQueue("t", nullptr);
  s.SetDevice(other, 5);  // no worker for GPU 5: the CPU's
  EXPECT_EQ(s.device(other), -1);
  std::mutex mu;
  std::set<std::thread::id> gpu_threads, cpu_threads, long_threads;
  auto record = [&](std::set<std::thread::id>* into) {
    return [&mu, into] {
      std::lock_guard l(mu);
      into->insert(std::this_thread::get_id());
    };
  };
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(s.Submit(gpu, Job(record(&gpu_threads))).ok());
    ASSERT_TRUE(s.Submit(cpu, Job(record(&cpu_threads))).ok());
  }
  ASSERT_TRUE(s.Submit(gpu, Job(record(&long_threads), WorkClass::kLong)).ok());
  // Wait for the GPU queue to drain before sending it back to the CPU.
  std::promise<void> drained;
  ASSERT_TRUE(s.Submit(gpu, Job([&] { drained.set_value(); })).ok());
  drained.get_future().wait();
  s.SetDevice(gpu, -1);
  std::set<std::thread::id> after;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(s.Submit(gpu, Job(record(&after))).ok());
  s.Shutdown();
  ASSERT_FALSE(gpu_threads.empty());
  for (auto id : gpu_threads) EXPECT_EQ(gpu3.count(id), 1u);
  EXPECT_EQ(long_threads.size(), 1u);
  for (auto id : cpu_threads) EXPECT_EQ(gpu3.count(id), 0u);
  for (auto id : long_threads) EXPECT_EQ(gpu3.count(id), 0u);
  for (auto id : after) EXPECT_EQ(gpu3.count(id), 0u);
}

// A request that waits on a GPU worker (an add waiting for its fsync, a search waiting for
// the device) holds one of that GPU's workers only: another tenant's search on the same GPU
// runs meanwhile.
TEST(SchedulerTest, AWaitingRequestOnAGpuDoesNotHoldUpAnotherTenantOnIt) {
  Scheduler s(Options(1, 1), nullptr, nullptr, {0});
  EXPECT_EQ(s.gpu_workers(), 2);
  Gate gate;
  std::promise<void> waiting;
  auto a = s.NewQueue("a", nullptr);
  s.SetDevice(a, 0);
  ASSERT_TRUE(s.Submit(a, Job([&] {
                         waiting.set_value();
                         gate.wait.wait();
                       }))
                  .ok());
  auto started = waiting.get_future();
  EXPECT_TRUE(Ready(started));
  auto b = s.NewQueue("b", nullptr);
  s.SetDevice(b, 0);
  std::promise<void> searched;
  ASSERT_TRUE(s.Submit(b, Job([&] { searched.set_value(); })).ok());
  auto done = searched.get_future();
  EXPECT_TRUE(Ready(done)) << "tenant b's search waited for tenant a's request";
  EXPECT_EQ(s.busy(WorkClass::kShort), 0);  // it ran on the GPU's other worker
  gate.Open();
  s.Shutdown();
}

// Long work and host-only work of a GPU queue go to the CPU's workers: with those busy they
// wait while the GPU's workers idle, and the GPU's own short work still runs there.
TEST(SchedulerTest, LongAndHostOnlyWorkOfAGpuQueueStayOffItsWorkers) {
  Scheduler s(Options(1, 1), nullptr, nullptr, {0});
  const std::set<std::thread::id> gpu0 = GpuWorkerThreads(s, 0, 2);
  EXPECT_EQ(gpu0.size(), 2u);
  Gate gate;
  std::atomic<int> cpu_busy{0};
  // The short worker and the long worker are both busy.
  auto hold = [&](WorkClass cls) {
    return Job(
        [&] {
          cpu_busy++;
          gate.wait.wait();
        },
        cls);
  };
  // (The long one first: a long worker with no long work to do takes short work.)
  ASSERT_TRUE(s.Submit(s.NewQueue("x", nullptr), hold(WorkClass::kLong)).ok());
  for (int i = 0; i < 2000 && cpu_busy < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(s.Submit(s.NewQueue("x", nullptr), hold(WorkClass::kShort)).ok());
  for (int i = 0; i < 2000 && cpu_busy < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(cpu_busy.load(), 2);
  std::mutex mu;
  std::map<std::string, std::thread::id> ran_on;
  auto record = [&](std::string what) {
    return [&, what] {
      std::lock_guard l(mu);
      ran_on[what] = std::this_thread::get_id();
    };
  };
  auto on_gpu = [&] {
    auto q = s.NewQueue("t", nullptr);
    s.SetDevice(q, 0);
    return q;
  };
  Work beyond_gpu = Job(record("host-only"));  // a search with k > 2048, say
  beyond_gpu.host_only = true;
  ASSERT_TRUE(s.Submit(on_gpu(), std::move(beyond_gpu)).ok());
  ASSERT_TRUE(s.Submit(on_gpu(), Job(record("long"), WorkClass::kLong)).ok());
  std::promise<void> searched;
  ASSERT_TRUE(s.Submit(on_gpu(), Job([&] {
                         record("gpu")();
                         searched.set_value();
                       }))
                  .ok());
  auto done = searched.get_future();
  EXPECT_TRUE(Ready(done));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the GPU's workers are idle
  {
    std::lock_guard l(mu);
    EXPECT_EQ(ran_on.count("host-only"), 0u) << "a GPU worker ran host-only work";
    EXPECT_EQ(ran_on.count("long"), 0u) << "a GPU worker ran long work";
  }
  gate.Open();
  s.Shutdown();
  ASSERT_EQ(ran_on.size(), 3u);
  EXPECT_EQ(gpu0.count(ran_on["gpu"]), 1u);
  EXPECT_EQ(gpu0.count(ran_on["host-only"]), 0u);
  EXPECT_EQ(gpu0.count(ran_on["long"]), 0u);
}

// Searches queued back to back on a GPU queue are batched, but host-only ones never with the
// others: those go to a CPU worker, the rest stay on the GPU's.
TEST(SchedulerTest, HostOnlySearchesNeverShareABatchWithTheGpus) {
  Scheduler s(Options(1, 1), nullptr, nullptr, {0});
  const std::set<std::thread::id> gpu0 = GpuWorkerThreads(s, 0, 2);
  std::mutex mu;
  std::vector<std::pair<std::vector<int>, bool>> batches;  // ids, and whether on GPU 0
  auto record = [&](std::vector<int> ids) {
    std::lock_guard l(mu);
    batches.push_back({ids, gpu0.count(std::this_thread::get_id()) > 0});
  };
  auto q = s.NewQueue("t", [&](std::vector<Work>& batch) {
    std::vector<int> ids;
    for (Work& w : batch) ids.push_back(*static_cast<int*>(w.payload.get()));
    record(ids);
  });
  s.SetDevice(q, 0);
  Gate gate;
  std::promise<void> busy;
  ASSERT_TRUE(s.Submit(q, Job([&] {
                         busy.set_value();
                         gate.wait.wait();
                       }))
                  .ok());
  auto started = busy.get_future();
  EXPECT_TRUE(Ready(started));
  for (int id = 1; id <= 5; ++id) {
    Work w = Job([&, id] { record({id}); });
    w.batch_key = 7;
    w.payload = std::make_shared<int>(id);
    w.host_only = id == 3 || id == 4;
    ASSERT_TRUE(s.Submit(q, std::move(w)).ok());
  }
  gate.Open();
  s.Shutdown();
  using Batch = std::pair<std::vector<int>, bool>;
  EXPECT_EQ(batches, (std::vector<Batch>{{{1, 2}, true}, {{3, 4}, false}, {{5}, true}}));
}

// A GPU's workers are shared between tenants as the long workers are: once one of tenant a's
// jobs ends, a still holds one of the two workers, its share, so tenant b's job goes next
// though a's next job was queued first.
TEST(SchedulerTest, ATenantGetsNoMoreThanItsShareOfAGpuWhenOthersWait) {
  Scheduler s(Options(1, 1), nullptr, nullptr, {0});
  Gate first, rest;
  std::mutex mu;
  std::vector<std::string> order;
  std::atomic<int> started{0};
  auto job = [&](std::string who, std::shared_future<void> wait) {
    return Job([&, who, wait] {
      {
        std::lock_guard l(mu);
        order.push_back(who);
      }
      started++;
      wait.wait();
    });
  };
  auto on_gpu = [&](std::string tenant) {
    auto q = s.NewQueue(std::move(tenant), nullptr);
    s.SetDevice(q, 0);
    return q;
  };
  // Tenant a takes both of the GPU's workers (an idle GPU lets it), then queues a third job.
  ASSERT_TRUE(s.Submit(on_gpu("a"), job("a1", first.wait)).ok());
  ASSERT_TRUE(s.Submit(on_gpu("a"), job("a2", rest.wait)).ok());
  for (int i = 0; i < 2000 && started < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(started.load(), 2);  // (goes on: the gates open below)
  EXPECT_EQ(s.busy_gpu(), 2);
  ASSERT_TRUE(s.Submit(on_gpu("a"), job("a3", rest.wait)).ok());
  ASSERT_TRUE(s.Submit(on_gpu("b"), job("b1", rest.wait)).ok());
  first.Open();  // a1 ends: a still holds a2, its share of two workers
  for (int i = 0; i < 2000 && started < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  {
    std::lock_guard l(mu);
    EXPECT_EQ(order.size(), 3u);
    if (order.size() == 3) {
      EXPECT_EQ(order[2], "b1") << "tenant a took a second GPU worker while b's work waited";
    }
  }
  rest.Open();
  s.Shutdown();
  EXPECT_EQ(order.size(), 4u);
}

// A tenant with a deep queue on a GPU cannot starve another tenant's queue on that GPU: the
// GPU's worker visits tenants in turn. (One worker, so the order of the runs is the order of
// its choices.)
TEST(SchedulerTest, TenantsOnOneGpuAreServedInTurn) {
  Scheduler s(Options(1, 1, 1), nullptr, nullptr, {0});
  Gate gate;
  std::promise<void> holding;
  auto x = s.NewQueue("x", nullptr);
  s.SetDevice(x, 0);
  ASSERT_TRUE(s.Submit(x, Job([&] {  // the GPU's worker busy, so the scheduler alone decides
                         holding.set_value();
                         gate.wait.wait();
                       }))
                  .ok());
  auto held = holding.get_future();
  EXPECT_TRUE(Ready(held));
  std::mutex mu;
  std::vector<std::string> order;
  auto record = [&](std::string who) {
    return Job([&, who] {
      std::lock_guard l(mu);
      order.push_back(who);
    });
  };
  for (int i = 0; i < 20; ++i) {
    auto q = s.NewQueue("heavy", nullptr);
    s.SetDevice(q, 0);
    ASSERT_TRUE(s.Submit(q, record("heavy")).ok());
  }
  auto light = s.NewQueue("light", nullptr);
  s.SetDevice(light, 0);
  ASSERT_TRUE(s.Submit(light, record("light")).ok());
  gate.Open();
  s.Shutdown();
  ASSERT_EQ(order.size(), 21u);
  auto at = std::find(order.begin(), order.end(), "light") - order.begin();
  EXPECT_EQ(at, 1) << "the light tenant waited behind the heavy tenant's queues";
}

// An idle CPU queue runs short work on the caller's thread; a busy queue, a GPU queue (but for
// host-only work) and long work are refused (left to the workers), and work queued behind an
// inline run is picked up by a worker afterwards, in order.
// A queue served by two GPUs (an index with a copy on each): its shared work (searches) runs
// on both GPU workers at once, never on more than one per GPU; work that is not shared (an
// add) waits for the shared work before it and holds back the shared work after it.
TEST(SchedulerTest, SharedWorkOfAQueueOnSeveralGpusRunsOnEachOfTheirWorkers) {
  Scheduler s(Options(2, 1), nullptr, nullptr, {0, 1, 2});
  auto q = s.NewQueue("t", nullptr);
  s.SetDevices(q, {0, 1, 7});  // GPU 7 has no worker: left out
  EXPECT_EQ(s.devices(q), (std::vector<int>{0, 1}));
  EXPECT_EQ(s.device(q), 0);
  std::mutex mu;
  std::vector<std::string> events;
  auto note = [&](std::string e) {
    std::lock_guard l(mu);
    events.push_back(std::move(e));
  };
  std::atomic<int> inside{0}, most{0};
  std::set<std::thread::id> threads;
  // Two searches that only finish once both run: they must run at once.
  std::promise<void> both_in;
  std::shared_future<void> both = both_in.get_future().share();
  std::atomic<int> arrived{0};
  auto search = [&](std::string name, bool wait_for_both) {
    Work w = Job([&, name, wait_for_both] {
      const int now = inside.fetch_add(1) + 1;
      for (int m = most.load(); now > m && !most.compare_exchange_weak(m, now);) {
      }
      {
        std::lock_guard l(mu);
        threads.insert(std::this_thread::get_id());
      }
      note(name + "+");
      if (wait_for_both) {
        if (arrived.fetch_add(1) + 1 == 2) both_in.set_value();
        EXPECT_EQ(both.wait_for(std::chrono::seconds(10)), std::future_status::ready);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      note(name + "-");
      inside--;
    });
    w.shared = true;
    w.batch_key = 0;  // each its own batch
    return w;
  };
  ASSERT_TRUE(s.Submit(q, search("s1", true)).ok());
  ASSERT_TRUE(s.Submit(q, search("s2", true)).ok());
  ASSERT_TRUE(s.Submit(q, Job([&] {
                         EXPECT_EQ(inside.load(), 0);  // alone
                         note("add");
                       }))
                  .ok());
  for (int i = 3; i <= 8; ++i) {
    ASSERT_TRUE(s.Submit(q, search("s" + std::to_string(i), false)).ok());
  }
  std::promise<void> done;
  ASSERT_TRUE(s.Submit(q, Job([&] { done.set_value(); })).ok());
  done.get_future().wait();
  s.Shutdown();
  EXPECT_EQ(most.load(), 2);  // one per GPU, never three
  EXPECT_LE(threads.size(), 4u);  // the two GPUs' workers (--gpu-workers 2 each), no other
  // The add ran after s1 and s2 finished and before any later search began.
  auto at = [&](const std::string& e) {
    return std::find(events.begin(), events.end(), e) - events.begin();
  };
  EXPECT_LT(at("s1-"), at("add"));
  EXPECT_LT(at("s2-"), at("add"));
  for (int i = 3; i <= 8; ++i) EXPECT_GT(at("s" + std::to_string(i) + "+"), at("add"));
  EXPECT_EQ(s.depth(q), 0);
}

// An idle CPU queue runs short work on the caller's thread; a busy queue, a GPU queue and
// long work are refused (left to the workers), and work queued behind an inline run is
// picked up by a worker afterwards, in order.
TEST(SchedulerTest, IdleQueuesRunShortWorkOnTheCallersThread) {
  Scheduler s(Options(1, 1), nullptr, nullptr, {0});
  auto q = s.NewQueue("t", nullptr);
  std::thread::id ran_on;
  Work here = Job([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_FALSE(s.TryRunHere(q, here));  // not marked as cheap
  here.may_inline = true;
  ASSERT_TRUE(s.TryRunHere(q, here));
  EXPECT_EQ(ran_on, std::this_thread::get_id());

  Work long_work = Job([] {}, WorkClass::kLong);
  long_work.may_inline = true;
  EXPECT_FALSE(s.TryRunHere(q, long_work));
  auto gpu = s.NewQueue("t", nullptr);
  s.SetDevice(gpu, 0);
  Work on_gpu = Job([] {});
  on_gpu.may_inline = true;
  EXPECT_FALSE(s.TryRunHere(gpu, on_gpu));
  on_gpu.host_only = true;  // the host's to serve: as on a CPU queue
  EXPECT_TRUE(s.TryRunHere(gpu, on_gpu));

  // While it runs inline, the queue is busy: more work waits and runs after it, in order.
  std::vector<int> order;
  std::mutex mu;
  std::promise<void> done;
  Work first = Job([&] {
    Work nested = Job([] {});
    nested.may_inline = true;
    EXPECT_FALSE(s.TryRunHere(q, nested));  // the queue is being served
    for (int i = 1; i <= 3; ++i) {
      ASSERT_TRUE(s.Submit(q, Job([&, i] {
                             std::lock_guard l(mu);
                             order.push_back(i);
                             if (i == 3) done.set_value();
                           }))
                      .ok());
    }
    std::lock_guard l(mu);
    order.push_back(0);
  });
  first.may_inline = true;
  ASSERT_TRUE(s.TryRunHere(q, first));
  done.get_future().wait();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
  s.Shutdown();
}

}  // namespace
}  // namespace vecgpu
