#include "core/util/worker_pool.h"

namespace vecgpu {

WorkerPool::WorkerPool(std::string name, int threads, int max_queued,
                       std::function<void()> on_start)
    : name_(std::move(name)), max_queued_(max_queued), thread_count_(threads) {
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this, on_start] {
      if (on_start) on_start();
      Run();
    });
  }
}

WorkerPool::~WorkerPool() { Shutdown(); }

Status WorkerPool::Submit(std::function<void()> task) {
  {
    MutexLock lock(mu_);
    if (stopping_) return Unavailable("server is shutting down");
    if (static_cast<int>(queue_.size()) >= max_queued_) {
      return Unavailable("server busy: " + std::to_string(queue_.size()) + " " + name_ +
                         " requests already queued; retry later");
    }
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return Status::Ok();
}

void WorkerPool::Shutdown() {
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

int WorkerPool::queued() const {
  MutexLock lock(mu_);
  return static_cast<int>(queue_.size());
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      MutexLock lock(mu_);
      mu_.Await(cv_, [&]() REQUIRES(mu_) { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      busy_.fetch_add(1, std::memory_order_relaxed);
    }
    task();
    busy_.fetch_sub(1, std::memory_order_relaxed);
  }
}

}  // namespace vecgpu
