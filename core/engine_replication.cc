// The Engine's side of replication (cluster/replication): applying the records another
// node's engine logged about a collection this one holds a copy of, each as that
// collection's next record, so that every copy makes the same changes in the same order.
#include "core/engine.h"

namespace vecgpu {

StatusOr<uint64_t> Engine::LogPosition(const std::string& tenant, const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  return c->storage()->log_seq();
}

StatusOr<bool> Engine::ApplyReplicated(const store::WalRecord& r) {
  using store::RecordType;
  if (!r.has_storage || r.storage_seq < 1) {
    return InvalidArgument("replicated record: it names no place in its storage's order");
  }
  if (r.type == RecordType::kFailed) return false;  // the record it names changed nothing
  if (r.type == RecordType::kCreate && r.storage_seq == 1) {
    // Every copy is created by its own create (the gateway asks each): the storage exists.
    if (registry_.Get(r.tenant, r.collection).ok()) return false;
    RETURN_IF_ERROR(ApplyRecord(r));
    return true;
  }
  ASSIGN_OR_RETURN(auto c, Find(r.tenant, r.collection));
  const uint64_t at = c->storage()->log_seq();
  if (r.storage_seq <= at) return false;  // a retry: this copy has it already
  if (r.storage_seq != at + 1) {
    return FailedPrecondition("index '" + r.collection + "' (tenant '" + r.tenant +
                              "') is at record " + std::to_string(at) + ", not " +
                              std::to_string(r.storage_seq - 1) + ": records are missing");
  }
  const Status st = ApplyRecord(r);
  const bool refusal = st.code() == StatusCode::kInvalidArgument ||
                       st.code() == StatusCode::kNotFound ||
                       st.code() == StatusCode::kAlreadyExists ||
                       st.code() == StatusCode::kUnimplemented ||
                       st.code() == StatusCode::kFailedPrecondition;
  if (!st.ok() && !refusal) return st;  // a fault here (the log, memory): to be sent again
  // A record refused here (as it was on the primary, which logged it before applying it: the
  // same call meets the same state) still takes its place in the storage's order.
  if (c->storage()->log_seq() < r.storage_seq) c->storage()->set_log_seq(r.storage_seq);
  return true;
}

}  // namespace vecgpu
