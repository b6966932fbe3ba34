#include "cluster/replication/replica_status.h"

#include <nlohmann/json.hpp>

#include "cluster/placement/shard_map.h"

namespace vecgpu::cluster {

std::string EncodeReplicaStatus(const ReplicaStatus& s) {
  nlohmann::json j{{"primary", s.primary},
                   {"epoch", s.epoch},
                   {"state", s.state},
                   {"acked", s.acked},
                   {"last", s.last}};
  if (s.bytes >= 0) j["bytes"] = s.bytes;
  return j.dump();
}

StatusOr<ReplicaStatus> DecodeReplicaStatus(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("replica status: not JSON");
  ReplicaStatus s;
  try {
    s.primary = j.at("primary").get<std::string>();
    s.epoch = j.at("epoch").get<int64_t>();
    s.state = j.at("state").get<std::string>();
    s.acked = j.at("acked").get<uint64_t>();
    s.last = j.at("last").get<uint64_t>();
    s.bytes = j.value("bytes", int64_t{-1});
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("replica status: ") + e.what());
  }
  return s;
}

std::string ReplicaStatusPrefix(const std::string& prefix, const std::string& tenant,
                                const std::string& collection) {
  return prefix + EscapeKeyPart(tenant) + "/" + EscapeKeyPart(collection) + "/";
}

std::string ReplicaStatusKey(const std::string& prefix, const std::string& tenant,
                             const std::string& collection, int shard, const std::string& replica) {
  return ReplicaStatusPrefix(prefix, tenant, collection) + std::to_string(shard) + "/" +
         EscapeKeyPart(replica);
}

int64_t ReportedShardBytes(const std::map<std::string, ReplicaStatus>& reported,
                           const std::string& prefix, const std::string& tenant,
                           const std::string& collection, int shard) {
  const std::string under =
      ReplicaStatusPrefix(prefix, tenant, collection) + std::to_string(shard) + "/";
  int64_t bytes = -1, epoch = -1;
  for (auto it = reported.lower_bound(under);
       it != reported.end() && it->first.compare(0, under.size(), under) == 0; ++it) {
    const ReplicaStatus& st = it->second;
    if (st.bytes < 0) continue;
    // The latest epoch; in one epoch, the primary's own word first.
    if (st.epoch > epoch || (st.epoch == epoch && st.state == "primary")) {
      bytes = st.bytes;
      epoch = st.epoch;
    }
  }
  return bytes;
}

}  // namespace vecgpu::cluster
