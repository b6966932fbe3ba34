#include "core/util/interrupt.h"

#include <atomic>

namespace vecgpu {
namespace {
using TimePoint = std::chrono::steady_clock::time_point;
std::atomic<bool> g_stop_all{false};
thread_local TimePoint t_deadline = TimePoint::max();
thread_local bool t_uninterruptible = false;
thread_local const std::atomic<bool>* t_cancelled = nullptr;
}  // namespace

bool Interrupted() {
  if (t_uninterruptible) return false;
  if (g_stop_all.load(std::memory_order_relaxed)) return true;
  if (t_cancelled && t_cancelled->load(std::memory_order_relaxed)) return true;
  return t_deadline != TimePoint::max() && std::chrono::steady_clock::now() >= t_deadline;
}

void InterruptAll() { g_stop_all.store(true); }

InterruptScope::InterruptScope(TimePoint deadline) : previous_(t_deadline) {
  t_deadline = deadline;
}
InterruptScope::~InterruptScope() { t_deadline = previous_; }

CancelScope::CancelScope(const std::atomic<bool>* cancelled) : previous_(t_cancelled) {
  t_cancelled = cancelled;
}
CancelScope::~CancelScope() { t_cancelled = previous_; }

UninterruptibleScope::UninterruptibleScope() : previous_(t_uninterruptible) {
  t_uninterruptible = true;
}
UninterruptibleScope::~UninterruptibleScope() { t_uninterruptible = previous_; }

}  // namespace vecgpu
