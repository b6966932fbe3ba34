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
  std::deque<std::shared_ptr<Queue>> ready;  // runnable queues, oldest first
  int64_t queued = 0;                        // work items queued, all queues
  bool listed = false;                       // in ready_
};

Scheduler::Scheduler(const SchedulerOptions& options, std::function<void()> on_worker_start,
                     ServerMetrics* metrics, std::vector<int> gpus)
    : options_(options), metrics_(metrics), gpus_(std::move(gpus)) {
  thread_count_[0] = options.query_threads;
  thread_count_[1] = options.write_threads;
  thread_count_[kGpuKind] = static_cast<int>(gpus_.size());
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
    threads_.emplace_back([this, gpu, on_worker_start] {
      if (on_worker_start) on_worker_start();
      Run(kGpuKind, gpu);
    });
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

bool Scheduler::Take(int kind, int gpu, std::shared_ptr<Queue>* out, std::vector<Work>* batch) {
  // Long workers look for long work (of any queue) first, then take short work of CPU queues
  // rather than idle; short workers take short work of CPU queues; a GPU worker takes short
  // work of its GPU's queues only. Tenants are visited round-robin.
  const int passes = kind == static_cast<int>(WorkClass::kLong) ? 2 : 1;
  auto has_long = [](const Tenant* t) {
    return std::any_of(t->ready.begin(), t->ready.end(),
                       [](const auto& q) { return q->work_.front().cls == WorkClass::kLong; });
  };
  // A tenant's share of the long workers while other tenants' long work waits: one tenant
  // cannot pin them all (an idle server still lets it use every one).
  int share = thread_count_[1];
  if (kind == static_cast<int>(WorkClass::kLong)) {
    int tenants_with_long = 0;
    for (const auto& [name, t] : tenants_) {
      if (t->long_running > 0 || (t->listed && has_long(t.get()))) ++tenants_with_long;
    }
    share = options_.long_workers_per_tenant > 0
                ? options_.long_workers_per_tenant
                : std::max(1, thread_count_[1] / std::max(1, tenants_with_long));
  }
  for (int pass = 0; pass < passes; ++pass) {
    const WorkClass want = pass == 0 && kind == 1 ? WorkClass::kLong : WorkClass::kShort;
    // Long work: first the tenants under their share; then, when no tenant under its share
    // has long work waiting, anyone's.
    for (int over = 0; over < (want == WorkClass::kLong ? 2 : 1); ++over) {
    for (size_t i = 0; i < ready_.size(); ++i) {
      Tenant* t = ready_[i];
      if (want == WorkClass::kLong) {
        const bool under = t->long_running < share;
        if (over == 0 && !under) continue;
        if (over == 1 && under) continue;
      }
      auto it = std::find_if(t->ready.begin(), t->ready.end(), [&](const auto& q) REQUIRES(mu_) {
        if (q->work_.front().cls != want) return false;
        if (q->serving_ && !Joinable(*q)) return false;  // its head waits for the running work
        if (want == WorkClass::kLong) return true;
        return gpu < 0
                   ? q->devices_.empty()
                   : std::find(q->devices_.begin(), q->devices_.end(), gpu) != q->devices_.end();
      });
      if (it == t->ready.end()) continue;
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
      // The head, and with it the searches of the same kind queued right behind it.
      batch->clear();
      int64_t rows = 0;
      const uint64_t key = q->work_.front().batch_key;
      do {
        rows += q->work_.front().rows;
        batch->push_back(std::move(q->work_.front()));
        q->work_.pop_front();
      } while (key != 0 && q->batch_ && !q->work_.empty() && q->work_.front().batch_key == key &&
               rows + q->work_.front().rows <= options_.max_batch_rows);
      queued_ -= static_cast<int64_t>(batch->size());
      t->queued -= static_cast<int64_t>(batch->size());
      if (want == WorkClass::kLong) ++t->long_running;
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
      if (long_work) {
        auto it = tenants_.find(q->tenant());
        if (it != tenants_.end()) --it->second->long_running;
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
             it->second->long_running == 0) {
    tenants_.erase(it);  // (another worker may have erased it already)
  }
  q.reset();
}

bool Scheduler::TryRunHere(const std::shared_ptr<Queue>& queue, Work& work) {
  constexpr int kShortKind = static_cast<int>(WorkClass::kShort);
  {
    MutexLock lock(mu_);
    if (stopping_ || !work.may_inline || work.cls != WorkClass::kShort ||
        !queue->devices_.empty() || queue->serving_ || !queue->work_.empty() ||
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
