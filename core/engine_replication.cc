// The Engine's side of replication (cluster/replication): applying the records another
// node's engine logged about a collection this one holds a copy of, each as that
// collection's next record, so that every copy makes the same changes in the same order;
// and copying a whole collection to a replica whose gap no kept record covers.
#include "core/engine.h"
#include "core/engine_internal.h"
#include "core/util/interrupt.h"

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
    // A replica's copy is made by its primary's create record (a copy that exists already
    // has it: the primary checks a copy's records before it sends any).
    if (registry_.Get(r.tenant, r.collection).ok()) return false;
    RETURN_IF_ERROR(ApplyRecord(r));
    return true;
  }
  ASSIGN_OR_RETURN(auto c, Find(r.tenant, r.collection));
  IndexStorage& storage = *c->storage();
  const uint64_t at = storage.log_seq();
  if (r.storage_seq <= at) return false;  // a retry: this copy has it already
  if (r.storage_seq != at + 1) {
    return FailedPrecondition("index '" + r.collection + "' (tenant '" + r.tenant +
                              "') is at record " + std::to_string(at) + ", not " +
                              std::to_string(r.storage_seq - 1) + ": records are missing");
  }
  Status st;
  if (r.type == RecordType::kPutKeys || r.type == RecordType::kRemoveKeys ||
      r.type == RecordType::kMerge) {
    // Their public calls take a client's arguments, not a record's (stamps, merged vectors):
    // logged and applied here as their calls do, under the storage's write order.
    MutexLock order(storage.write_order());
    UninterruptibleScope uninterruptible;  // logged: replay must match
    ASSIGN_OR_RETURN(const Logged logged, LogFor(storage, [&] { return r; }));
    st = Outcome(storage, logged, r.tenant, r.collection, ApplyRecord(r));
  } else {
    st = ApplyRecord(r);
  }
  const bool refusal =
      st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound ||
      st.code() == StatusCode::kAlreadyExists || st.code() == StatusCode::kUnimplemented ||
      st.code() == StatusCode::kFailedPrecondition;
  if (!st.ok() && !refusal) return st;  // a fault here (the log, memory): to be sent again
  if (storage.log_seq() < r.storage_seq) {
    // Refused before it was logged here (the primary logged it, then it failed there too:
    // the same call meets the same state). It still takes its place in the storage's order,
    // in the log as well, followed by its failure, as on the primary: replay refuses it again
    // and skips it, and the next record follows without a hole.
    MutexLock order(storage.write_order());
    UninterruptibleScope uninterruptible;
    if (storage.log_seq() < r.storage_seq) {
      ASSIGN_OR_RETURN(const Logged logged, LogFor(storage, [&] { return r; }));
      (void)Outcome(storage, logged, r.tenant, r.collection, st);
    }
  }
  return true;
}

StatusOr<store::StorageSnapshot> Engine::CaptureCopy(const std::string& tenant,
                                                     const std::string& name) const {
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  IndexStorage& storage = *c->storage();
  if (!TakeBusy(storage)) {
    return Unavailable("index '" + name + "' is busy with a long write; copying it later");
  }
  ASSIGN_OR_RETURN(StorageImage image, CaptureHeld(storage, std::nullopt));  // releases it
  if (!image.alive) return NotFound("index '" + name + "' was dropped");
  return std::move(image.snapshot);
}

Status Engine::InstallCopy(const std::string& tenant, store::StorageSnapshot snapshot) {
  const std::string name = snapshot.name;
  const uint64_t position = snapshot.storage_seq;
  if (registry_.Get(tenant, name).ok()) {
    RETURN_IF_ERROR(Drop(tenant, name));  // the old copy, behind or diverged
  }
  RETURN_IF_ERROR(Import(tenant, std::move(snapshot)).status());
  ASSIGN_OR_RETURN(auto c, Find(tenant, name));
  c->storage()->set_log_seq(position);
  return Status::Ok();
}

}  // namespace vecgpu
