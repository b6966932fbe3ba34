#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/util/mutex.h"
#include "core/util/status.h"

namespace vecgpu {

// A fixed set of threads draining one bounded FIFO of tasks.
// Thread-safe. Tasks must not throw.
class WorkerPool {
 public:
  // `on_start`, if set, runs first on each worker thread (e.g. to set per-thread library state).
  WorkerPool(std::string name, int threads, int max_queued,
             std::function<void()> on_start = nullptr);
  ~WorkerPool();  // Shutdown()

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; Unavailable ("server busy", retryable) when max_queued tasks already wait
  // or after Shutdown.
  Status Submit(std::function<void()> task);

  // Stops taking tasks, runs those already queued, and joins the threads.
  void Shutdown();

  const std::string& name() const { return name_; }
  int threads() const { return thread_count_; }
  // Tasks waiting for a thread, and threads running a task, now.
  int queued() const;
  int busy() const { return busy_.load(std::memory_order_relaxed); }

 private:
  void Run();

  const std::string name_;
  const int max_queued_;
  const int thread_count_;
  mutable Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_ GUARDED_BY(mu_);
  std::atomic<int> busy_{0};
  bool stopping_ GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace vecgpu
