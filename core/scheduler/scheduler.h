#pragma once

#include <functional>

#include "core/metrics/server_metrics.h"
#include "core/options.h"
#include "core/scheduler/worker_pool.h"

namespace vecgpu {

// Which pool a request runs on. Reads never queue behind writes: a tenant's long training
// run or bulk add occupies a write thread, while searches keep their own threads.
enum class Lane { kQuery, kWrite };

// Runs front-end requests on per-lane worker pools with bounded queues (beyond them the client
// gets a "busy" error). The GPU issue adds one worker per device here, which merges queued
// compatible searches into batches. Thread-safe.
class Scheduler {
 public:
  // `on_query_thread_start` runs first on each query thread (see WorkerPool). `metrics`, if
  // set, gets each lane's queue wait.
  explicit Scheduler(const SchedulerOptions& options,
                     std::function<void()> on_query_thread_start = nullptr,
                     ServerMetrics* metrics = nullptr);

  Status Submit(Lane lane, std::function<void()> task);
  // Finishes queued work and joins all threads.
  void Shutdown();

  // The lanes, for metrics: name ("query", "write"), threads, queued and busy now.
  const WorkerPool& lane(Lane lane) const { return lane == Lane::kQuery ? query_ : write_; }

 private:
  WorkerPool query_;
  WorkerPool write_;
};

}  // namespace vecgpu
