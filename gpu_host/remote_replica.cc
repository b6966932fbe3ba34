#include "gpu_host/remote_replica.h"

#include <cstring>
#include <numeric>
#include <vector>

namespace vecgpu::gpu_host {
namespace {
constexpr const char* kOnlySearchAndAdd = "the GPU copy answers searches and adds only";
}  // namespace

RemoteReplica::RemoteReplica(std::shared_ptr<HostProcess> host, uint64_t id, IndexSpec spec,
                             bool labels_shift, int64_t ntotal, int64_t next_label,
                             int64_t memory, double call_timeout_s)
    : host_(std::move(host)),
      id_(id),
      spec_(std::move(spec)),
      labels_shift_(labels_shift),
      timeout_(call_timeout_s),
      ntotal_(ntotal),
      next_label_(next_label),
      memory_(memory) {}

RemoteReplica::~RemoteReplica() {
  host_->Send(Op::kDrop, Writer().I64(static_cast<int64_t>(id_)).Take());
}

BackendInfo RemoteReplica::Info() const {
  BackendInfo info;
  info.ntotal = ntotal_.load();
  info.is_trained = true;
  info.device = "gpu:" + std::to_string(host_->device());
  info.memory_bytes = memory_.load();
  return info;
}

Status RemoteReplica::TakeSizes(const StatusOr<std::string>& reply) {
  if (!reply.ok()) return reply.status();
  Reader r(*reply);
  const int64_t ntotal = r.I64();
  const int64_t memory = r.I64();
  if (!r.done()) return Internal("GPU host: malformed reply to an add");
  ntotal_.store(ntotal);
  memory_.store(memory);
  return Status::Ok();
}

Status RemoteReplica::Add(int64_t n, const float* x) {
  std::vector<int64_t> labels(static_cast<size_t>(n));
  std::iota(labels.begin(), labels.end(), next_label_.load());
  return AddLabeled(n, x, labels.data(), next_label_.load() + n);
}

Status RemoteReplica::AddLabeled(int64_t n, const float* x, const int64_t* labels,
                                 int64_t next_label) {
  Writer w;
  w.I64(static_cast<int64_t>(id_)).I64(n).I64(next_label).Array(labels, n);
  w.Array(x, n * spec_.dim);
  RETURN_IF_ERROR(TakeSizes(host_->Call(Op::kAdd, w.Take(), timeout_)));
  next_label_.store(std::max(next_label_.load(), next_label));
  return Status::Ok();
}

Status RemoteReplica::ReserveCapacity(int64_t n) {
  ASSIGN_OR_RETURN(std::string reply,
                   host_->Call(Op::kReserve, Writer().I64(static_cast<int64_t>(id_)).I64(n).Take(),
                               timeout_));
  Reader r(reply);
  const int64_t memory = r.I64();
  if (!r.done()) return Internal("GPU host: malformed reply to a reserve");
  memory_.store(memory);
  return Status::Ok();
}

Status RemoteReplica::Search(int64_t n, const float* x, int k, const SearchParams& params,
                             float* distances, int64_t* labels) const {
  Writer w;
  w.I64(static_cast<int64_t>(id_)).I64(n).I32(k).Params(params).Array(x, n * spec_.dim);
  ASSIGN_OR_RETURN(std::string reply, host_->Call(Op::kSearch, w.Take(), timeout_));
  Reader r(reply);
  const std::string_view d = r.Bytes(sizeof(float));
  const std::string_view l = r.Bytes(sizeof(int64_t));
  const size_t want = static_cast<size_t>(n) * static_cast<size_t>(k);
  if (!r.done() || d.size() != want * sizeof(float) || l.size() != want * sizeof(int64_t)) {
    return Internal("GPU host: malformed reply to a search");
  }
  std::memcpy(distances, d.data(), d.size());
  std::memcpy(labels, l.data(), l.size());
  return Status::Ok();
}

Status RemoteReplica::Train(int64_t, const float*) { return Unimplemented(kOnlySearchAndAdd); }
StatusOr<int64_t> RemoteReplica::RemoveLabels(std::span<const int64_t>) {
  return Unimplemented(kOnlySearchAndAdd);
}
Status RemoteReplica::Reset() { return Unimplemented(kOnlySearchAndAdd); }
StatusOr<RangeResult> RemoteReplica::RangeSearch(int64_t, const float*, float,
                                                 const SearchParams&) const {
  return Unimplemented(kOnlySearchAndAdd);
}
Status RemoteReplica::Reconstruct(int64_t, float*) const {
  return Unimplemented(kOnlySearchAndAdd);
}
Status RemoteReplica::ReconstructN(int64_t, int64_t, float*) const {
  return Unimplemented(kOnlySearchAndAdd);
}
StatusOr<FloatMatrix> RemoteReplica::ApplyTransform(int64_t, const float*) const {
  return Unimplemented(kOnlySearchAndAdd);
}
Status RemoteReplica::SetParameter(std::string_view, double) {
  return Unimplemented(kOnlySearchAndAdd);
}
StatusOr<double> RemoteReplica::GetParameter(std::string_view) const {
  return Unimplemented(kOnlySearchAndAdd);
}
StatusOr<std::vector<uint8_t>> RemoteReplica::Serialize() const {
  return Unimplemented(kOnlySearchAndAdd);
}

}  // namespace vecgpu::gpu_host
