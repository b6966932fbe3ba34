#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/metrics/server_metrics.h"
#include "core/options.h"
#include "core/util/mutex.h"
#include "core/util/status.h"

namespace vecgpu {

// Which worker pool may run a piece of work. Long work (training, large adds, merges,
// reclustering, clustering) runs only on the long pool, so it never takes every worker that
// searches need. Long workers also take short work when no long work waits.
enum class WorkClass { kShort, kLong };

using Clock = std::chrono::steady_clock;

// One queued unit of work. Exactly one of run / expire is called, exactly once.
struct Work {
  WorkClass cls = WorkClass::kShort;
  // Searches with the same non-zero batch_key queued back to back are handed to run_batch
  // together, up to max_batch_rows rows; 0: never batched.
  uint64_t batch_key = 0;
  int64_t rows = 1;  // query rows, for the batch bound
  // May run on the submitting thread when its queue is idle (TryRunHere): only for cheap
  // reads, never for work that can wait on a lock.
  bool may_inline = false;
  // Short work the host must serve though its queue is placed on a GPU (a search beyond the
  // GPU's limits): the CPU's workers take it, never a GPU worker. Never batched with work
  // that lacks the flag.
  bool host_only = false;
  // A read that may run beside other such reads of its queue (searches): on a queue served
  // by several GPUs (SetDevices), each of their workers may take a batch of them at once.
  // Work that is not shared runs alone, after the shared work before it and before the work
  // after it, as on any queue.
  bool shared = false;
  Clock::time_point deadline = Clock::time_point::max();
  // Runs the work alone.
  std::function<void()> run;
  // Answers the work with an error instead (deadline passed, shutting down).
  std::function<void(const Status&)> expire;
  // What the queue's BatchRunner needs of a batchable item.
  std::shared_ptr<void> payload;
  Clock::time_point queued_at;  // set by Submit
};

// Runs a batch: the work items (same batch_key), in queue order. Set per queue by its owner.
using BatchRunner = std::function<void(std::vector<Work>&)>;

// The execution model of DESIGN.md: work is queued per queue (one per index storage, so an
// index and its IDMap views share one), in order; a worker takes a queue that has work and no
// worker, so no worker ever waits on a lock another holds, and operations on one queue keep
// their order while different queues only share workers. Searches queued back to back on one
// queue run as one batch (continuous batching: an idle worker starts at once, batches form
// only from work that arrived while the queue was busy). Queues are served round-robin across
// tenants; a tenant holds no more than its share of the long workers, or of one GPU's
// workers, while another tenant's work for them waits. Bounded: past max_queued (all tenants)
// or max_queued_per_tenant, Submit answers Unavailable ("busy", retryable). Thread-safe.
class Scheduler {
 public:
  // One per index storage (or one-off, for work bound to no index). Hold it as shared_ptr;
  // it lives while work is queued.
  class Queue;

  // `on_worker_start` runs first on every worker thread. `gpus`: options.gpu_workers more
  // workers for each, which run the short work (searches, adds) of the queues placed on that
  // GPU (SetDevice), a batch each at a time: each batch is one set of GPU kernels, and several
  // are in flight so that one waiting request (an fsync, the device busy with a rebuild) does
  // not hold up the GPU's other queues. A GPU worker never runs long work (training, large
  // adds, rebuilding a device copy: the long workers do, as for any queue) nor host-only work
  // (Work::host_only: the CPU's workers do).
  Scheduler(const SchedulerOptions& options, std::function<void()> on_worker_start = nullptr,
            ServerMetrics* metrics = nullptr, std::vector<int> gpus = {});
  ~Scheduler();

  // A queue for `tenant`; `batch` runs batched searches (may be null: nothing batches).
  std::shared_ptr<Queue> NewQueue(std::string tenant, BatchRunner batch);

  // Queues `work`; Unavailable when the bounds are reached or after Shutdown (work untouched).
  Status Submit(const std::shared_ptr<Queue>& queue, Work work);

  // Runs short `work` that may run inline on the calling thread at once, as a short worker
  // would, when its queue is idle (nothing queued, no worker), served by the CPU (placed on no
  // GPU, or the work is host-only), and a short worker's share of concurrency is free: a lone
  // request skips the handoff to a worker (tens of microseconds of thread wake-up). Returns
  // false, with `work` untouched, otherwise.
  bool TryRunHere(const std::shared_ptr<Queue>& queue, Work& work);

  // Sends the queue's short work (but host-only work) to the workers of GPU `device` from now
  // on; -1 (or a GPU without workers): to the CPU's short workers.
  void SetDevice(const std::shared_ptr<Queue>& queue, int device);
  // As SetDevice, with the queue served by the workers of every GPU of `devices` (those
  // without a worker left out; none: the CPU's): the GPUs holding copies of its index. Each
  // takes its short work; shared work (searches) runs on up to one worker per GPU at once.
  void SetDevices(const std::shared_ptr<Queue>& queue, std::vector<int> devices);
  // The first of the queue's GPUs; -1: the CPU's workers.
  int device(const std::shared_ptr<Queue>& queue) const;
  std::vector<int> devices(const std::shared_ptr<Queue>& queue) const;
  // Work items waiting in `queue` (not those running): how deep its queue is.
  int64_t depth(const std::shared_ptr<Queue>& queue) const;

  // Stops taking work, runs what is queued (expired work is expired), joins the workers.
  void Shutdown();
  // Stops taking work and answers everything queued with Unavailable ("shutting down")
  // instead of running it; running work goes on (long computations stop at their next
  // cancellation point once InterruptAll is called). Shutdown then only joins.
  void Cancel();

  // For metrics: queued work, and workers busy, by class ("short", "long"), and GPU workers
  // (all GPUs together).
  int64_t queued() const;
  int busy(WorkClass cls) const;
  int workers(WorkClass cls) const;
  int busy_gpu() const;
  int gpu_workers() const { return thread_count_[kGpuKind]; }
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Tenant;
  // Worker kinds: kShort and kLong as WorkClass, and GPU workers.
  static constexpr int kGpuKind = 2;
  // `kind`: a WorkClass or kGpuKind; `gpu`: the GPU of a GPU worker, else -1.
  void Run(int kind, int gpu);
  // Takes the next runnable queue for a worker and its work, or false.
  bool Take(int kind, int gpu, std::shared_ptr<Queue>* queue, std::vector<Work>* batch)
      REQUIRES(mu_);
  // Whether a worker of `kind` (of GPU `gpu`) looking for `want` work may take runnable q.
  bool Takes(int kind, int gpu, WorkClass want, const Queue& q) const REQUIRES(mu_);
  // Workers of `kind` (of GPU `gpu`) running t's work, for the shares of long and GPU workers.
  int Running(const Tenant& t, int kind, int gpu) const REQUIRES(mu_);
  void MakeReady(const std::shared_ptr<Queue>& q) REQUIRES(mu_);
  // Whether another worker may take q's head while q is being served: shared work beside
  // shared work, fewer workers on it than it has GPUs.
  bool Joinable(const Queue& q) const REQUIRES(mu_);
  // After a worker (or TryRunHere) served q: frees it, and lists it again if work came in.
  // `shared`: the batch it ran was shared work.
  void Release(std::shared_ptr<Queue>& q, int kind, bool shared) REQUIRES(mu_);

  const SchedulerOptions options_;
  ServerMetrics* const metrics_;
  mutable Mutex mu_;
  std::condition_variable cv_;
  bool stopping_ GUARDED_BY(mu_) = false;
  bool cancelling_ GUARDED_BY(mu_) = false;
  int64_t queued_ GUARDED_BY(mu_) = 0;
  int busy_[3] GUARDED_BY(mu_) = {0, 0, 0};
  // Tenants with runnable queues, in round-robin order; each holds its runnable queues.
  std::map<std::string, std::unique_ptr<Tenant>> tenants_ GUARDED_BY(mu_);
  std::deque<Tenant*> ready_ GUARDED_BY(mu_);
  const std::vector<int> gpus_;
  std::vector<std::thread> threads_;
  int thread_count_[3] = {0, 0, 0};
};

class Scheduler::Queue {
 public:
  const std::string& tenant() const { return tenant_; }

 private:
  friend class Scheduler;
  Queue(std::string tenant, BatchRunner batch)
      : tenant_(std::move(tenant)), batch_(std::move(batch)) {}
  const std::string tenant_;
  const BatchRunner batch_;
  // Guarded by the scheduler's mu_.
  std::deque<Work> work_;
  bool serving_ = false;  // a worker runs this queue's work now
  bool ready_ = false;    // listed in its tenant's ready queues
  int running_ = 0;       // workers running its work now (several: shared work only)
  bool exclusive_ = false;    // one of them runs work that is not shared
  std::vector<int> devices_;  // the GPUs whose workers take its short work; none: CPU workers
};

}  // namespace vecgpu
