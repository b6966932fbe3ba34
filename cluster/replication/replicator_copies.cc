// The replicator's whole copies (issue [3/5]): captured and sent in chunks by the copy
// threads at the copies' rate, and gathered and installed on the replica's side.
#include <algorithm>

#include "cluster/agent/agent_codec.h"
#include "cluster/replication/replicator.h"
#include "cluster/replication/throttle.h"
#include "core/engine.h"
#include "core/store/snapshot.h"
#include "cluster/replication/replicator_peers.h"

namespace vecgpu::cluster {

using SteadyClock = std::chrono::steady_clock;

StatusOr<ReplicaPosition> Replicator::Install(const std::string& tenant,
                                              const std::string& collection,
                                              const std::string& primary, int64_t epoch,
                                              uint64_t offset, uint64_t total,
                                              std::string_view chunk) {
  ASSIGN_OR_RETURN(auto apply_mu, Admit(tenant, collection, primary, epoch));
  std::lock_guard order(*apply_mu);
  if (total == 0) return InvalidArgument("install: a copy of index '" + collection + "' of 0 bytes");
  std::string snapshot;
  {
    std::lock_guard lock(mu_);
    const auto now = SteadyClock::now();
    std::erase_if(incoming_, [&](const auto& kv) {
      return now - kv.second.touched > std::chrono::minutes(2);  // abandoned copies
    });
    const ShardKey key{tenant, collection};
    const std::string what =
        "install: the copy of index '" + collection + "' from agent '" + primary + "'";
    Incoming& in = incoming_[key];
    if (offset == 0) {
      in = Incoming{primary, epoch, total, {}, now};
    } else if (in.primary != primary || in.epoch != epoch || in.total != total ||
               in.data.size() != offset) {
      const size_t have = in.data.size();
      incoming_.erase(key);
      return FailedPrecondition(what + ": a chunk at byte " + std::to_string(offset) + " of " +
                                std::to_string(total) + ", expected byte " +
                                std::to_string(have) + " (a copy starts at byte 0)");
    }
    if (chunk.size() > total - offset) {
      incoming_.erase(key);
      return InvalidArgument(what + ": a chunk of " + std::to_string(chunk.size()) +
                             " bytes at byte " + std::to_string(offset) + " runs past its " +
                             std::to_string(total) + " bytes");
    }
    in.data.append(chunk);
    in.touched = now;
    if (in.data.size() == total) {
      snapshot = std::move(in.data);
      incoming_.erase(key);
    }
  }
  if (snapshot.empty()) return PositionOf(tenant, collection);  // more to come
  ASSIGN_OR_RETURN(store::StorageSnapshot copy,
                   store::DecodeSnapshot(snapshot, "the copy of index '" + collection +
                                                       "' from agent '" + primary + "'"));
  if (copy.name != collection) {
    return InvalidArgument("install: a copy of index '" + copy.name + "' for '" + collection + "'");
  }
  const uint64_t position = copy.storage_seq;
  RETURN_IF_ERROR(engine_.InstallCopy(tenant, std::move(copy)));
  Installed({tenant, collection}, position);
  if (options_.make_durable) RETURN_IF_ERROR(options_.make_durable(tenant));
  if (options_.log) {
    options_.log("installed a copy of index '" + collection + "' (tenant '" + tenant +
                 "') from primary '" + primary + "' at record " + std::to_string(position));
  }
  return PositionOf(tenant, collection);
}

void Replicator::CopyLoop() {
  while (true) {
    InstallJob job;
    {
      std::unique_lock lock(mu_);
      copy_cv_.wait(lock, [&] { return stopping_ || !installs_.empty(); });
      if (stopping_) return;
      job = std::move(installs_.front());
      installs_.pop_front();
    }
    SendInstall(job);
  }
}

bool Replicator::StillPrimary(const InstallJob& job) {
  std::lock_guard lock(mu_);
  auto it = shards_.find(job.key);
  return !stopping_ && it != shards_.end() && it->second.state.primary == options_.agent_id &&
         it->second.state.epoch == job.epoch && it->second.followers.count(job.replica);
}

void Replicator::SendInstall(const InstallJob& job) {
  ReplicateOutcome outcome;
  outcome.installed = true;
  uint64_t position = 0;
  std::string bytes;
  {
    auto copy = engine_.CaptureCopy(job.key.first, job.key.second);
    if (!copy.ok()) {
      outcome.status = copy.status();
      return Answered(job.key, job.replica, job.epoch, std::move(outcome));
    }
    position = copy->storage_seq;
    bytes = store::EncodeSnapshot(*copy);
  }
  if (options_.log) {
    options_.log("sending a copy of index '" + job.key.second + "' (tenant '" + job.key.first +
                 "') at record " + std::to_string(position) + " to replica '" + job.replica +
                 "': " + std::to_string(bytes.size()) + " bytes");
  }
  // In chunks, one at a time, at the copies' rate; given up once this agent is not the
  // shard's primary in this epoch any more.
  apb::Agent::Stub& stub = peers_->StubOf(job.address);
  const size_t chunk = std::max<size_t>(1, options_.copy_chunk_bytes);
  size_t offset = 0;
  apb::ReplicateReply reply;
  grpc::Status st;
  while (offset < bytes.size()) {
    if (!StillPrimary(job)) {
      outcome.status = Aborted("the copy of index '" + job.key.second + "' for replica '" +
                               job.replica + "' was given up: this agent is not its primary in " +
                               "epoch " + std::to_string(job.epoch) + " any more");
      break;
    }
    const size_t n = std::min(chunk, bytes.size() - offset);
    throttle_->Acquire(static_cast<int64_t>(n));
    apb::InstallRequest request;
    request.set_api_version(kAgentApiVersion);
    request.set_tenant(job.key.first);
    request.set_collection(job.key.second);
    request.set_primary(options_.agent_id);
    request.set_epoch(job.epoch);
    request.set_offset(offset);
    request.set_total(bytes.size());
    request.set_snapshot(bytes.data() + offset, n);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!peers_->Started(&context, nullptr)) {
      outcome.status = Unavailable("the agent is shutting down");
      break;
    }
    st = stub.Install(&context, request, &reply);
    peers_->Finished(&context);
    if (!st.ok()) break;
    offset += n;
  }
  if (outcome.status.ok()) outcome = OutcomeOf(st, reply, /*installed=*/true);
  if (outcome.status.ok() && offset < bytes.size()) outcome.status = Aborted("copy not finished");
  Answered(job.key, job.replica, job.epoch, std::move(outcome));
}

}  // namespace vecgpu::cluster
