#include "core/scheduler/scheduler.h"

namespace vecgpu {

Scheduler::Scheduler(const SchedulerOptions& options, std::function<void()> on_query_thread_start,
                     ServerMetrics* metrics)
    : query_("query", options.query_threads, options.max_queued, std::move(on_query_thread_start),
             metrics ? &metrics->queue_wait_seconds.With({"query"}) : nullptr),
      write_("write", options.write_threads, options.max_queued, nullptr,
             metrics ? &metrics->queue_wait_seconds.With({"write"}) : nullptr) {}

Status Scheduler::Submit(Lane lane, std::function<void()> task) {
  return (lane == Lane::kQuery ? query_ : write_).Submit(std::move(task));
}

void Scheduler::Shutdown() {
  query_.Shutdown();
  write_.Shutdown();
}

}  // namespace vecgpu
