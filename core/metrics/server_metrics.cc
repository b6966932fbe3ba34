#include "core/metrics/server_metrics.h"

namespace vecgpu {

ServerMetrics::ServerMetrics(MetricsRegistry& r)
    : requests(r.AddCounter("vecgpu_requests_total", "Requests served, by action, tenant and outcome",
                            {"action", "tenant", "outcome"})),
      request_seconds(r.AddHistogram("vecgpu_request_duration_seconds",
                                     "Time from decoding a request to its encoded reply",
                                     {"action"}, MetricsRegistry::LatencyBuckets())),
      queue_wait_seconds(r.AddHistogram("vecgpu_queue_wait_seconds",
                                        "Time a request waited in its index's queue for a worker",
                                        {"class"}, MetricsRegistry::LatencyBuckets())),
      batch_rows(r.AddHistogram("vecgpu_batch_rows", "Query rows per backend search call", {},
                                MetricsRegistry::PowersOfTwo(14))),
      batch_requests(r.AddHistogram("vecgpu_batch_requests",
                                    "Client requests served by one backend search call", {},
                                    MetricsRegistry::PowersOfTwo(10))),
      gpu_fallbacks(r.AddCounter("vecgpu_gpu_fallbacks_total",
                                 "Collections placed on (or sent back to) the CPU while GPUs are "
                                 "in use, by reason",
                                 {"reason"})) {}

}  // namespace vecgpu
