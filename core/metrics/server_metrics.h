#pragma once

#include "core/metrics/metrics.h"

namespace vecgpu {

// The metric families the request path observes, registered once in a MetricsRegistry that
// outlives this. Gauges read at scrape time (queue depth, busy workers, collections and
// vectors per tenant) are registered by whoever owns what they read (server/main.cc).
struct ServerMetrics {
  explicit ServerMetrics(MetricsRegistry& registry);

  // vecgpu_requests_total{action, tenant, outcome}: outcome "ok" or the wire error code.
  CounterFamily& requests;
  // vecgpu_request_duration_seconds{action}: decode to encoded reply.
  HistogramFamily& request_seconds;
  // vecgpu_queue_wait_seconds{class}: time a request waited for a worker ("short"/"long").
  HistogramFamily& queue_wait_seconds;
  // vecgpu_batch_rows / vecgpu_batch_requests: query rows and requests per backend search call.
  HistogramFamily& batch_rows;
  HistogramFamily& batch_requests;
  // vecgpu_gpu_fallbacks_total{reason}: collections served from the CPU though GPUs are in
  // use: "hint", "unsupported_kind", "no_budget", "out_of_memory", "device_failed".
  CounterFamily& gpu_fallbacks;
};

}  // namespace vecgpu
