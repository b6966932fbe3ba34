#pragma once

// What a shard's primary says of each of its replicas (issue [2/5], items 5 and 8), in etcd
// under `<prefix><tenant>/<collection>/<shard>/<replica>` (names escaped as in the shard map):
// how far the replica has applied the shard's records, and whether it holds every record the
// primary acknowledged ("in-sync"), is catching up ("catching-up") or has been behind for
// longer than the primary waits ("lagging"). The placer reads it to take silent replicas out
// of the in-sync set and to put caught-up ones back, each by a fenced change of the map;
// `vecgpu cluster status` shows the lag. Only a status written by the shard's primary in the
// map's current epoch counts.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "core/util/status.h"

namespace vecgpu::cluster {

struct ReplicaStatus {
  std::string primary;  // who wrote it
  int64_t epoch = 0;    // the epoch it was primary in
  // "in-sync", "catching-up", "lagging"; "handed-over" (in sync, and the primary handing the
  // shard over to it has no write left in flight); "primary" (the primary's own copy)
  std::string state;
  uint64_t acked = 0;   // the replica's position: the last record it holds
  uint64_t last = 0;    // the primary's position then
  int64_t bytes = -1;   // the primary's copy's size then (-1: not known)

  bool operator==(const ReplicaStatus&) const = default;
};

inline constexpr const char* kReplicationPrefix = "/vecgpu/replication/";

std::string EncodeReplicaStatus(const ReplicaStatus& status);
StatusOr<ReplicaStatus> DecodeReplicaStatus(std::string_view json);
// `<prefix><tenant>/<collection>/<shard>/` and that plus the replica's id.
std::string ReplicaStatusPrefix(const std::string& prefix, const std::string& tenant,
                                const std::string& collection);
std::string ReplicaStatusKey(const std::string& prefix, const std::string& tenant,
                             const std::string& collection, int shard, const std::string& replica);

// A shard's size as its primaries reported it (`reported`: status values by key): the
// latest epoch's report that says (a primary's own, or one about a replica), -1 when none
// does. Sizes survive a change of primary this way, until the new one reports.
int64_t ReportedShardBytes(const std::map<std::string, ReplicaStatus>& reported,
                           const std::string& prefix, const std::string& tenant,
                           const std::string& collection, int shard);

}  // namespace vecgpu::cluster
