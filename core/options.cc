#include "core/options.h"

#include <algorithm>
#include <string>
#include <thread>

namespace vecgpu {
namespace {

Status Positive(const char* name, int64_t v) {
  if (v <= 0)
    return InvalidArgument(std::string(name) + ": must be positive, got " + std::to_string(v));
  return Status::Ok();
}

}  // namespace

Status Limits::Validate() {
  RETURN_IF_ERROR(Positive("max_request_bytes", max_request_bytes));
  if (max_message_bytes == 0) max_message_bytes = 2 * max_request_bytes + (1 << 20);
  if (!(max_work_cost >= 1)) return InvalidArgument("max_work_cost: must be at least 1");
  if (max_message_bytes < max_request_bytes) {
    return InvalidArgument("max_message_bytes: must be at least max_request_bytes");
  }
  if (max_depth < 3 || max_depth > 64) {
    return InvalidArgument("max_depth: must be within 3..64, got " + std::to_string(max_depth));
  }
  RETURN_IF_ERROR(Positive("max_container_elements", max_container_elements));
  RETURN_IF_ERROR(Positive("max_dimension", max_dimension));
  RETURN_IF_ERROR(Positive("max_k", max_k));
  RETURN_IF_ERROR(Positive("max_add_vectors", max_add_vectors));
  RETURN_IF_ERROR(Positive("max_query_vectors", max_query_vectors));
  RETURN_IF_ERROR(Positive("max_search_results", max_search_results));
  RETURN_IF_ERROR(Positive("max_train_vectors", max_train_vectors));
  RETURN_IF_ERROR(Positive("max_fetch_vectors", max_fetch_vectors));
  RETURN_IF_ERROR(Positive("max_index_id_length", max_index_id_length));
  RETURN_IF_ERROR(Positive("max_object_id_length", max_object_id_length));
  RETURN_IF_ERROR(Positive("max_api_key_length", max_api_key_length));
  RETURN_IF_ERROR(Positive("max_tenant_id_length", max_tenant_id_length));
  RETURN_IF_ERROR(Positive("max_collections_per_tenant", max_collections_per_tenant));
  return Status::Ok();
}

Status SchedulerOptions::Validate() {
  if (long_worker_nice < 0 || long_worker_nice > 19) {
    return InvalidArgument("long_worker_nice: must be within 0..19");
  }
  if (long_workers_per_tenant < 0) {
    return InvalidArgument("long_workers_per_tenant: must not be negative");
  }
  if (query_threads == 0) {
    query_threads = std::max(4, 2 * static_cast<int>(std::thread::hardware_concurrency()));
  }
  if (dispatch_threads == 0) {
    dispatch_threads = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  }
  RETURN_IF_ERROR(Positive("query_threads", query_threads));
  RETURN_IF_ERROR(Positive("write_threads", write_threads));
  RETURN_IF_ERROR(Positive("gpu_workers", gpu_workers));
  RETURN_IF_ERROR(Positive("dispatch_threads", dispatch_threads));
  RETURN_IF_ERROR(Positive("max_queued", max_queued));
  RETURN_IF_ERROR(Positive("max_queued_per_tenant", max_queued_per_tenant));
  RETURN_IF_ERROR(Positive("max_batch_rows", max_batch_rows));
  RETURN_IF_ERROR(Positive("long_add_rows", long_add_rows));
  if (request_timeout_ms < 0) return InvalidArgument("request_timeout_ms: must be >= 0");
  return Status::Ok();
}

}  // namespace vecgpu
