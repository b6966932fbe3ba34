#pragma once

#include <atomic>
#include <chrono>

namespace vecgpu {

// Cancellation points for long computations. The scheduler records the deadline of the work
// a thread runs (InterruptScope); FAISS's InterruptCallback (cpu_fallback/interrupt.cc), which
// k-means, training and IVF scans check, asks Interrupted() and stops the computation when
// the deadline has passed or the server is stopping.
//
// What runs after its record is logged (applying an add or merge, installing a trained index)
// is never interrupted (UninterruptibleScope): the log says it happened, and replay must make
// the same change. Training and recluster train before they log, so they can be stopped.

// True when the work running on this thread should stop.
bool Interrupted();
// From now on every interruptible computation stops (shutdown). Irreversible.
void InterruptAll();

// Sets this thread's deadline for its scope.
class InterruptScope {
 public:
  explicit InterruptScope(std::chrono::steady_clock::time_point deadline);
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  std::chrono::steady_clock::time_point previous_;
};

// Work on this thread stops when `*cancelled` becomes true (a caller taking its call back),
// within its scope. Null: no flag.
class CancelScope {
 public:
  explicit CancelScope(const std::atomic<bool>* cancelled);
  ~CancelScope();
  CancelScope(const CancelScope&) = delete;
  CancelScope& operator=(const CancelScope&) = delete;

 private:
  const std::atomic<bool>* previous_;
};

// Nothing on this thread is interrupted within its scope.
class UninterruptibleScope {
 public:
  UninterruptibleScope();
  ~UninterruptibleScope();
  UninterruptibleScope(const UninterruptibleScope&) = delete;
  UninterruptibleScope& operator=(const UninterruptibleScope&) = delete;

 private:
  bool previous_;
};

}  // namespace vecgpu
