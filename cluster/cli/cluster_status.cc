#include "cluster/cli/cluster_status.h"

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cluster/etcd/etcd_client.h"
#include "cluster/membership/agent_registration.h"
#include "cluster/placement/shard_map.h"
#include "cluster/replication/replica_status.h"

namespace vecgpu::cluster {
namespace {

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s.empty() ? "-" : s;
}

std::string GiB(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", bytes / double(int64_t{1} << 30));
  return buf;
}

}  // namespace

int RunClusterStatus(const ClusterStatusOptions& options, std::ostream& out, std::ostream& err) {
  auto client = EtcdClient::Connect(
      {options.etcd, std::chrono::milliseconds(options.timeout_ms), options.etcd_tls});
  if (!client.ok()) {
    err << "cluster status: " << client.status().message() << "\n";
    return 1;
  }
  auto agents = (*client)->GetPrefix("/vecgpu/agents/");
  if (!agents.ok()) {
    err << "cluster status: " << agents.status().message() << "\n";
    return 1;
  }
  std::map<std::string, AgentInfo> members;
  for (const KeyValue& kv : agents->kvs) {
    auto info = DecodeAgentInfo(kv.value);
    if (info.ok()) members[info->id] = *info;
  }
  ShardMapStore store(**client);
  int64_t revision = 0, malformed = 0;
  auto maps = store.List(&revision, &malformed);
  if (revision == 0) {
    err << "cluster status: etcd: the shard maps cannot be read\n";
    return 1;
  }
  // What each shard's primary says of its replicas (cluster/replication/replica_status.h):
  // only what the primary of the map's epoch wrote counts.
  std::map<std::string, ReplicaStatus> reported;
  if (auto st = (*client)->GetPrefix(kReplicationPrefix); st.ok()) {
    for (const KeyValue& kv : st->kvs) {
      if (auto r = DecodeReplicaStatus(kv.value); r.ok()) reported[kv.key] = *r;
    }
  }
  auto status_of = [&](const CollectionMap& m, size_t shard,
                       const std::string& replica) -> const ReplicaStatus* {
    auto it = reported.find(
        ReplicaStatusKey(kReplicationPrefix, m.tenant, m.name, static_cast<int>(shard), replica));
    const ShardState& s = m.shards[shard];
    if (it == reported.end() || it->second.primary != s.primary || it->second.epoch != s.epoch) {
      return nullptr;
    }
    return &it->second;
  };
  // "a2 in-sync lag 0, a3 lagging lag 120" for the replicas other than the primary.
  auto lag_text = [&](const CollectionMap& m, size_t shard) {
    std::string out;
    for (const std::string& r : m.shards[shard].replicas) {
      if (r == m.shards[shard].primary) continue;
      const ReplicaStatus* st = status_of(m, shard, r);
      out += (out.empty() ? "" : ", ") + r + " " +
             (st ? st->state + " lag " + std::to_string(st->last - std::min(st->last, st->acked))
                 : std::string("unknown"));
    }
    return out;
  };
  int unhealthy = 0;
  auto shard_ok = [&](const CollectionMap& m, const ShardState& s) {
    return members.count(s.primary) && static_cast<int>(s.in_sync.size()) >= m.replication;
  };
  for (const auto& r : maps) {
    for (const ShardState& s : r.map.shards) unhealthy += !shard_ok(r.map, s);
  }
  if (options.json) {
    nlohmann::json j;
    j["revision"] = revision;
    j["members"] = nlohmann::json::array();
    for (const auto& [id, a] : members)
      j["members"].push_back(nlohmann::json::parse(EncodeAgentInfo(a)));
    j["collections"] = nlohmann::json::array();
    for (const auto& r : maps) {
      auto c = nlohmann::json::parse(EncodeCollectionMap(r.map));
      for (size_t i = 0; i < r.map.shards.size(); ++i) {
        c["shards"][i]["healthy"] = shard_ok(r.map, r.map.shards[i]);
        c["shards"][i]["primary_live"] = members.count(r.map.shards[i].primary) > 0;
        nlohmann::json replicas = nlohmann::json::object();
        for (const std::string& id : r.map.shards[i].replicas) {
          if (id == r.map.shards[i].primary) continue;
          const ReplicaStatus* st = status_of(r.map, i, id);
          if (!st) continue;
          replicas[id] = {{"state", st->state},
                          {"position", st->acked},
                          {"lag", st->last - std::min(st->last, st->acked)}};
        }
        c["shards"][i]["replica_lag"] = std::move(replicas);
      }
      j["collections"].push_back(std::move(c));
    }
    j["unhealthy_shards"] = unhealthy;
    j["malformed_maps"] = malformed;
    out << j.dump(2) << "\n";
    return unhealthy ? 3 : 0;
  }
  out << "etcd revision " << revision << "\n\nagents (" << members.size() << " live):\n";
  char line[512];
  std::snprintf(line, sizeof(line), "  %-24s %-24s %-12s %-10s %-6s %s\n", "ID", "ADDRESS",
                "DEVICES", "FREE", "LOAD", "VERSION");
  out << line;
  for (const auto& [id, a] : members) {
    std::snprintf(line, sizeof(line), "  %-24s %-24s %-12s %-10s %-6.2f %s\n", id.c_str(),
                  a.address.c_str(), Join(a.devices).c_str(), GiB(a.free_memory_bytes).c_str(),
                  a.load, a.version.c_str());
    out << line;
  }
  out << "\ncollections (" << maps.size() << "):\n";
  std::snprintf(line, sizeof(line), "  %-12s %-20s %-5s %-24s %-6s %-5s %s\n", "TENANT",
                "COLLECTION", "SHARD", "PRIMARY", "EPOCH", "R", "IN-SYNC / REPLICAS");
  out << line;
  for (const auto& r : maps) {
    for (size_t i = 0; i < r.map.shards.size(); ++i) {
      const ShardState& s = r.map.shards[i];
      const std::string primary = s.primary + (members.count(s.primary) ? "" : " (down)");
      std::snprintf(line, sizeof(line), "  %-12s %-20s %-5zu %-24s %-6lld %-5d %s / %s%s\n",
                    r.map.tenant.c_str(), r.map.name.c_str(), i, primary.c_str(),
                    static_cast<long long>(s.epoch), r.map.replication, Join(s.in_sync).c_str(),
                    Join(s.replicas).c_str(), shard_ok(r.map, s) ? "" : "  UNDER-REPLICATED");
      out << line;
      if (s.replicas.size() > 1) out << "        replicas: " << lag_text(r.map, i) << "\n";
    }
  }
  if (malformed) out << "\n" << malformed << " keys under /vecgpu/collections/ are not maps\n";
  out << "\n"
      << unhealthy << " shard(s) with fewer in-sync replicas than wanted or no live primary\n";
  return unhealthy ? 3 : 0;
}

}  // namespace vecgpu::cluster
