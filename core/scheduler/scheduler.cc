#include "core/scheduler/scheduler.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "core/util/interrupt.h"

namespace vecgpu {

struct Scheduler::Tenant {
  std::string name;
  int long_running = 0;                      // long workers running its long work
  std::map<int, int> gpu_running;            // by GPU: its workers running this tenant's work
  std::deque<std::shared_ptr<Queue>> ready;  // runnable queues, oldest first
  int64_t queued = 0;                        // work items queued, all queues
  bool listed = false;                       // in ready_
};

Scheduler::Scheduler(const SchedulerOptions& options, std::function<void()> on_worker_start,
                     ServerMetrics* metrics, std::vector<int> gpus)
    : options_(options), metrics_(metrics), gpus_(std::move(gpus)) {
  thread_count_[0] = options.query_threads;
  thread_count_[1] = options.write_threads;
  thread_count_[kGpuKind] = static_cast<int>(gpus_.size()) * options.gpu_workers;
  for (int kind : {0, 1}) {
    for (int i = 0; i < thread_count_[kind]; ++i) {
      threads_.emplace_back([this, kind, on_worker_start] {
        if (on_worker_start) on_worker_start();
        if (kind == 1 && options_.long_worker_nice > 0) {
          // Best effort: long work yields the cores to searches when both want them.
          (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)),
                            options_.long_worker_nice);
        }
        Run(kind, -1);
      });
    }
  }
  for (int gpu : gpus_) {
    for (int i = 0; i < options.gpu_workers; ++i) {
      threads_.emplace_back([this, gpu, on_worker_start] {
        if (on_worker_start) on_worker_start();
        Run(kGpuKind, gpu);
      });
    }
  }
}

Scheduler::~Scheduler() { Shutdown(); }

std::shared_ptr<Scheduler::Queue> Scheduler::NewQueue(std::string tenant, BatchRunner batch) {
  return std::shared_ptr<Queue>(new Queue(std::move(tenant), std::move(batch)));
}

Status Scheduler::Submit(const std::shared_ptr<Queue>& q, Work work) {
  {
    MutexLock lock(mu_);
    if (stopping_) return Unavailable("server is shutting down");
    if (queued_ >= options_.max_queued) {
      return Unavailable("server busy: " + std::to_string(queued_) +
                         " requests already queued; retry later");
    }
    auto& t = tenants_[q->tenant()];
    if (!t) {
      t = std::make_unique<Tenant>();
      t->name = q->tenant();
    }
    if (t->queued >= options_.max_queued_per_tenant) {
      return Unavailable("server busy: tenant has " + std::to_string(t->queued) +
                         " requests queued (max_queued_per_tenant); retry later");
    }
    ++t->queued;
    ++queued_;
    work.queued_at = Clock::now();
    q->work_.push_back(std::move(work));
    if (!q->ready_ && (!q->serving_ || Joinable(*q))) MakeReady(q);
  }
  cv_.notify_all();
  return Status::Ok();
}

void Scheduler::MakeReady(const std::shared_ptr<Queue>& q) {
  auto& entry = tenants_[q->tenant()];
  if (!entry) {
    entry = std::make_unique<Tenant>();
    entry->name = q->tenant();
  }
  Tenant& t = *entry;
  q->ready_ = true;
  t.ready.push_back(q);
  if (!t.listed) {
    t.listed = true;
    ready_.push_back(&t);
  }
}

void Scheduler::SetDevice(const std::shared_ptr<Queue>& q, int device) {
  SetDevices(q, device < 0 ? std::vector<int>{} : std::vector<int>{device});
}

void Scheduler::SetDevices(const std::shared_ptr<Queue>& q, std::vector<int> devices) {
  std::erase_if(devices,
                [this](int d) { return std::find(gpus_.begin(), gpus_.end(), d) == gpus_.end(); });
  {
    MutexLock lock(mu_);
    if (q->devices_ == devices) return;
    q->devices_ = std::move(devices);
    // More GPUs: a queue being served may take another worker now.
    if (!q->ready_ && !q->work_.empty() && q->serving_ && Joinable(*q)) MakeReady(q);
  }
  cv_.notify_all();
}

int Scheduler::device(const std::shared_ptr<Queue>& q) const {
  MutexLock lock(mu_);
  return q->devices_.empty() ? -1 : q->devices_[0];
}

std::vector<int> Scheduler::devices(const std::shared_ptr<Queue>& q) const {
  MutexLock lock(mu_);
  return q->devices_;
}

int64_t Scheduler::depth(const std::shared_ptr<Queue>& q) const {
  MutexLock lock(mu_);
  return static_cast<int64_t>(q->work_.size());
}

bool Scheduler::Joinable(const Queue& q) const {
  return q.running_ > 0 && !q.exclusive_ && !q.work_.empty() && q.work_.front().shared &&
         q.running_ < static_cast<int>(q.devices_.size());
}

bool Scheduler::Takes(int kind, int gpu, WorkClass want, const Queue& q) const {
  const Work& head = q.work_.front();
  if (head.cls != want) return false;
  if (q.serving_ && !Joinable(q)) return false;  // its head waits for the running work
  if (want == WorkClass::kLong) return true;     // long work: any queue's, on the long workers
  // Short work: a GPU's workers take that of the queues placed on it (a queue may be served
  // by several GPUs: SetDevices); the CPU's workers take that of the other queues, and
  // host-only work of any queue.
  const bool on_gpus = !q.devices_.empty();
  if (kind == kGpuKind) {
    return !head.host_only &&
           std::find(q.devices_.begin(), q.devices_.end(), gpu) != q.devices_.end();
  }
  return !on_gpus || head.host_only;
}

int Scheduler::Running(const Tenant& t, int kind, int gpu) const {
  if (kind != kGpuKind) return t.long_running;
  auto it = t.gpu_running.find(gpu);
  return it == t.gpu_running.end() ? 0 : it->second;
}

bool Scheduler::Take(int kind, int gpu, std::shared_ptr<Queue>* out, std::vector<Work>* batch) {
  // Long workers look for long work (of any queue) first, then take the CPU's short work
  // rather than idle; short workers take the CPU's short work; a GPU's workers take the short
  // work of that GPU's queues (Takes). Tenants are visited round-robin.
  constexpr int kLongKind = static_cast<int>(WorkClass::kLong);
  const int passes = kind == kLongKind ? 2 : 1;
  for (int pass = 0; pass < passes; ++pass) {
    const WorkClass want = pass == 0 && kind == kLongKind ? WorkClass::kLong : WorkClass::kShort;
    auto takes = [&](const std::shared_ptr<Queue>& q) REQUIRES(mu_) {
      return Takes(kind, gpu, want, *q);
    };
    // The long workers, and each GPU's workers, are shared out: while another tenant's work
    // for them waits, a tenant holds no more than its share (an idle server still lets it use
    // every one). Tenants under their share are served first; the others only when no tenant
    // under its share has work waiting.
    const bool shared = want == WorkClass::kLong || kind == kGpuKind;
    int share = -1;  // counted once there is work to take
    auto under_share = [&](const Tenant& t) REQUIRES(mu_) {
      if (share < 0) {
        int tenants = 0;  // tenants running or waiting for this kind of worker
        for (const auto& [name, other] : tenants_) {
          if (Running(*other, kind, gpu) > 0 ||
              (other->listed && std::any_of(other->ready.begin(), other->ready.end(), takes))) {
            ++tenants;
          }
        }
        const int pool = kind == kGpuKind ? options_.gpu_workers : thread_count_[kLongKind];
        share = kind != kGpuKind && options_.long_workers_per_tenant > 0
                    ? options_.long_workers_per_tenant
                    : std::max(1, pool / std::max(1, tenants));
      }
      return Running(t, kind, gpu) < share;
    };
    for (int over = 0; over < (shared ? 2 : 1); ++over) {
      for (size_t i = 0; i < ready_.size(); ++i) {
        Tenant* t = ready_[i];
        auto it = std::find_if(t->ready.begin(), t->ready.end(), takes);
        if (it == t->ready.end()) continue;
        if (shared && under_share(*t) != (over == 0)) continue;
        std::shared_ptr<Queue> q = *it;
        t->ready.erase(it);
        q->ready_ = false;
        q->serving_ = true;
        ++q->running_;
        ready_.erase(ready_.begin() + static_cast<std::ptrdiff_t>(i));
        if (t->ready.empty()) {
          t->listed = false;
        } else {
          ready_.push_back(t);  // served: to the back of the round
        }
        // The head, and with it the searches of the same kind queued right behind it (all
        // host-only or none: a GPU batch never carries the host's work).
        batch->clear();
        int64_t rows = 0;
        const uint64_t key = q->work_.front().batch_key;
        const bool host_only = q->work_.front().host_only;
        do {
          rows += q->work_.front().rows;
          batch->push_back(std::move(q->work_.front()));
          q->work_.pop_front();
        } while (key != 0 && q->batch_ && !q->work_.empty() &&
                 q->work_.front().batch_key == key && q->work_.front().host_only == host_only &&
                 rows + q->work_.front().rows <= options_.max_batch_rows);
        queued_ -= static_cast<int64_t>(batch->size());
        t->queued -= static_cast<int64_t>(batch->size());
        if (want == WorkClass::kLong) {
          ++t->long_running;
        } else if (kind == kGpuKind) {
          ++t->gpu_running[gpu];
        }
        if (!batch->front().shared) q->exclusive_ = true;
        // Shared work left behind it may go to another of the queue's GPU workers now.
        if (Joinable(*q)) MakeReady(q);
        *out = std::move(q);
        return true;
      }
    }
  }
  return false;
}

void Scheduler::Run(int kind, int gpu) {
  const int c = kind;
  static const char* const kKindNames[] = {"short", "long", "gpu"};
  std::shared_ptr<Queue> q;
  std::vector<Work> batch;
  bool cancelled = false;
  for (;;) {
    {
      MutexLock lock(mu_);
      mu_.Await(cv_, [&]() REQUIRES(mu_) {
        return Take(kind, gpu, &q, &batch) || (stopping_ && queued_ == 0);
      });
      if (!q) return;  // stopping and drained
      ++busy_[c];
      cancelled = cancelling_;
    }
    const bool long_work = batch.front().cls == WorkClass::kLong;
    const bool shared = batch.front().shared;
    // Work whose client deadline passed while it waited is answered, not run.
    const auto now = Clock::now();
    std::vector<Work> live;
    for (Work& w : batch) {
      if (metrics_) {
        metrics_->queue_wait_seconds.With({kKindNames[kind]})
            .Observe(std::chrono::duration<double>(now - w.queued_at).count());
      }
      if (cancelled) {
        w.expire(Unavailable("server is shutting down; the request was not run"));
      } else if (w.deadline <= now) {
        w.expire(DeadlineExceeded("the request's deadline passed while it waited in the queue"));
      } else {
        live.push_back(std::move(w));
      }
    }
    {
      // Long computations (k-means, training, IVF scans) check this deadline through FAISS's
      // InterruptCallback (core/util/interrupt.h); a batch stops at its latest deadline.
      Clock::time_point deadline = Clock::time_point::min();
      for (const Work& w : live) deadline = std::max(deadline, w.deadline);
      InterruptScope interruptible(deadline);
      if (live.size() > 1) {
        q->batch_(live);
      } else if (live.size() == 1) {
        live[0].run();
      }
    }
    {
      MutexLock lock(mu_);
      // (The tenant is kept while it has running work: Release.)
      if (auto it = tenants_.find(q->tenant()); it != tenants_.end()) {
        Tenant& t = *it->second;
        if (long_work) {
          --t.long_running;
        } else if (kind == kGpuKind) {
          if (auto g = t.gpu_running.find(gpu); g != t.gpu_running.end() && --g->second == 0) {
            t.gpu_running.erase(g);
          }
        }
      }
      Release(q, c, shared);
    }
    cv_.notify_all();
  }
}

void Scheduler::Release(std::shared_ptr<Queue>& q, int kind, bool shared) {
  --busy_[kind];
  --q->running_;
  if (!shared) q->exclusive_ = false;
  q->serving_ = q->running_ > 0;
  if (!q->work_.empty()) {
    // Submit keeps the tenant's entry while it has queued work.
    if (!q->ready_ && (!q->serving_ || Joinable(*q))) MakeReady(q);
  } else if (auto it = tenants_.find(q->tenant());
             it != tenants_.end() && it->second->queued == 0 && !it->second->listed &&
             it->second->long_running == 0 && it->second->gpu_running.empty()) {
    tenants_.erase(it);  // (another worker may have erased it already)
  }
  q.reset();
}

bool Scheduler::TryRunHere(const std::shared_ptr<Queue>& queue, Work& work) {
  constexpr int kShortKind = static_cast<int>(WorkClass::kShort);
  {
    MutexLock lock(mu_);
    if (stopping_ || !work.may_inline || work.cls != WorkClass::kShort ||
        (!queue->devices_.empty() && !work.host_only) || queue->serving_ ||
        !queue->work_.empty() ||
        busy_[kShortKind] >= thread_count_[kShortKind]) {
      return false;
    }
    queue->serving_ = true;
    ++queue->running_;
    queue->exclusive_ = true;
    ++busy_[kShortKind];
  }
  if (metrics_) metrics_->queue_wait_seconds.With({"short"}).Observe(0);
  work.run();
  std::shared_ptr<Queue> q = queue;
  {
    MutexLock lock(mu_);
    Release(q, kShortKind, /*shared=*/false);
  }
  cv_.notify_all();
  return true;
}

void Scheduler::Cancel() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
    cancelling_ = true;
  }
  cv_.notify_all();
}

void Scheduler::Shutdown() {
  {
    MutexLock lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

int64_t Scheduler::queued() const {
  MutexLock lock(mu_);
  return queued_;
}

int Scheduler::busy(WorkClass cls) const {
  MutexLock lock(mu_);
  return busy_[static_cast<int>(cls)];
}

int Scheduler::workers(WorkClass cls) const { return thread_count_[static_cast<int>(cls)]; }

int Scheduler::busy_gpu() const {
  MutexLock lock(mu_);
  return busy_[kGpuKind];
}

}  // namespace vecgpu
