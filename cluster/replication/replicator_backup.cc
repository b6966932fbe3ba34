// The replicator's side of backing up and restoring one collection (`vecgpu cluster backup` and
// `vecgpu cluster restore`, cluster/cli/cluster_backup.h): a copy of a shard captured as a
// whole copy for a replica is, and a backed-up copy installed on a shard's primary, from which
// the shard's other replicas get it as a whole copy through the usual catch-up.
#include <algorithm>

#include "cluster/replication/replicator.h"
#include "core/engine.h"
#include "core/store/snapshot.h"

namespace vecgpu::cluster {

StatusOr<ExportedCopy> Replicator::Export(const std::string& tenant,
                                          const std::string& collection) {
  ASSIGN_OR_RETURN(store::StorageSnapshot copy, engine_.CaptureCopy(tenant, collection));
  ExportedCopy out;
  out.position = copy.storage_seq;
  out.snapshot = store::EncodeSnapshot(copy);
  if (out.snapshot.size() > kMaxCopyMessageBytes) {
    return ResourceExhausted("the copy of index '" + collection + "' on agent '" +
                             options_.agent_id + "' is " + std::to_string(out.snapshot.size()) +
                             " bytes: over the " + std::to_string(kMaxCopyMessageBytes) +
                             " bytes one agent API message carries");
  }
  if (options_.log) {
    options_.log("exported a copy of index '" + collection + "' (tenant '" + tenant +
                 "') at record " + std::to_string(out.position) + ": " +
                 std::to_string(out.snapshot.size()) + " bytes");
  }
  return out;
}

StatusOr<ReplicaPosition> Replicator::Restore(const std::string& tenant,
                                              const std::string& collection,
                                              const std::string& primary, int64_t epoch,
                                              std::string_view snapshot) {
  // Only the shard's primary in the caller's epoch, by this agent's maps (epochs compared as
  // writes compare them: older is over, newer not seen yet).
  std::shared_ptr<std::mutex> apply_mu;
  {
    std::lock_guard lock(mu_);
    auto it = shards_.find({tenant, collection});
    if (it == shards_.end() || it->second.map_key.empty()) {
      return Unavailable("agent '" + options_.agent_id + "' has not seen a shard map naming it " +
                         "a replica of index '" + collection + "' (yet)");
    }
    const Shard& s = it->second;
    const std::string where = "shard " + std::to_string(s.index) + " of index '" + s.name + "'";
    if (epoch < s.state.epoch) {
      return Aborted("restore in epoch " + std::to_string(epoch) + " refused: " + where +
                     " is in epoch " + std::to_string(s.state.epoch));
    }
    if (epoch > s.state.epoch) {
      return Unavailable("agent '" + options_.agent_id + "' has not seen epoch " +
                         std::to_string(epoch) + " of " + where + " yet");
    }
    if (s.state.primary != options_.agent_id || primary != options_.agent_id) {
      return FailedPrecondition("restore refused: agent '" + options_.agent_id +
                                "' is not the primary of " + where + " ('" + s.state.primary +
                                "' is, in epoch " + std::to_string(s.state.epoch) + ")");
    }
    apply_mu = s.apply_mu;
  }
  std::lock_guard order(*apply_mu);
  // Into an empty place only: a restore never replaces data.
  if (auto at = engine_.LogPosition(tenant, collection); at.ok() && *at > 0) {
    return FailedPrecondition("index '" + collection + "' already holds data on agent '" +
                              options_.agent_id + "' (at record " + std::to_string(*at) +
                              "): a restore only fills a collection that has no copy yet");
  }
  const std::string what = "the restored copy of index '" + collection + "'";
  ASSIGN_OR_RETURN(store::StorageSnapshot copy, store::DecodeSnapshot(snapshot, what));
  if (copy.name != collection || copy.names.size() != 1 || copy.names[0].name != collection) {
    std::string names;
    for (const auto& n : copy.names) names += (names.empty() ? "'" : ", '") + n.name + "'";
    return InvalidArgument("restore: " + what + " is a copy of index '" + copy.name +
                           "' with the collections " + names + ": it must hold '" + collection +
                           "' alone");
  }
  if (copy.storage_seq == 0) {
    return InvalidArgument("restore: " + what + " has no position (an old snapshot format)");
  }
  const uint64_t position = copy.storage_seq;
  RETURN_IF_ERROR(engine_.InstallCopy(tenant, std::move(copy)));
  Installed({tenant, collection}, position);
  {
    // Every other replica gets this copy whole, whatever it holds now.
    std::lock_guard lock(mu_);
    Shard& s = shards_[{tenant, collection}];
    s.restored_epoch = s.state.epoch;
    for (auto& [id, f] : s.followers) f.diverged = true;
  }
  if (options_.make_durable) RETURN_IF_ERROR(options_.make_durable(tenant));
  if (options_.log) {
    options_.log("restored a backed-up copy of index '" + collection + "' (tenant '" + tenant +
                 "') at record " + std::to_string(position) + ": " +
                 std::to_string(snapshot.size()) + " bytes");
  }
  return PositionOf(tenant, collection);
}

void Replicator::Installed(const ShardKey& key, uint64_t position) {
  {
    std::lock_guard lock(mu_);
    Shard& s = shards_[key];
    while (!s.ring.empty() && s.ring.front().seq <= position) {
      s.ring_bytes -= s.ring.front().payload.size();
      ring_bytes_ -= s.ring.front().payload.size();
      s.ring.pop_front();
    }
    s.last = std::max(s.last, position);
    dirty_ = true;
  }
  cv_.notify_all();
}

}  // namespace vecgpu::cluster
