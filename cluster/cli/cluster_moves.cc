#include "cluster/cli/cluster_moves.h"

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster/agent/agent_codec.h"
#include "cluster/etcd/etcd_client.h"
#include "cluster/membership/agent_registration.h"
#include "cluster/placement/rebalance.h"
#include "cluster/placement/shard_map.h"
#include "cluster/replication/replica_status.h"

namespace vecgpu::cluster {
namespace {

std::string Mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

std::unique_ptr<EtcdClient> Connect(const ClusterMovesOptions& o, const char* what,
                                    std::ostream& err) {
  auto client =
      EtcdClient::Connect({o.etcd, std::chrono::milliseconds(o.timeout_ms), o.etcd_tls});
  if (!client.ok()) {
    err << "cluster " << what << ": " << client.status().message() << "\n";
    return nullptr;
  }
  return std::move(*client);
}

std::map<std::string, AgentInfo> Agents(EtcdClient& etcd) {
  std::map<std::string, AgentInfo> out;
  if (auto kvs = etcd.GetPrefix("/vecgpu/agents/"); kvs.ok()) {
    for (const KeyValue& kv : kvs->kvs) {
      if (auto info = DecodeAgentInfo(kv.value); info.ok()) out[info->id] = *info;
    }
  }
  return out;
}

// Shards naming `agent` among their replicas ("tenant/name#shard"), or -1 when the maps
// cannot be read.
int Holding(EtcdClient& etcd, const std::string& agent, std::vector<std::string>* which) {
  ShardMapStore store(etcd);
  int64_t revision = 0;
  auto maps = store.List(&revision);
  if (revision == 0) return -1;
  int n = 0;
  for (const auto& read : maps) {
    for (size_t i = 0; i < read.map.shards.size(); ++i) {
      const auto& r = read.map.shards[i].replicas;
      if (std::find(r.begin(), r.end(), agent) == r.end()) continue;
      ++n;
      if (which) which->push_back(read.map.tenant + "/" + read.map.name + "#" + std::to_string(i));
    }
  }
  return n;
}

}  // namespace

int RunClusterDrain(const ClusterMovesOptions& o, std::ostream& out, std::ostream& err) {
  auto etcd = Connect(o, "drain", err);
  if (!etcd) return 1;
  const auto agents = Agents(*etcd);
  std::vector<std::string> held;
  const int holding = Holding(*etcd, o.agent, &held);
  if (holding < 0) {
    err << "cluster drain: etcd: the shard maps cannot be read\n";
    return 1;
  }
  if (!agents.count(o.agent) && holding == 0 && !o.undo) {
    err << "cluster drain: agent '" << o.agent
        << "' is not registered and holds no replica (see `vecgpu cluster status`)\n";
    return 1;
  }
  if (o.undo) {
    if (auto st = etcd->Delete(DrainKey(o.agent)); !st.ok()) {
      err << "cluster drain: " << st.status().message() << "\n";
      return 1;
    }
    out << "agent '" << o.agent << "' takes replicas again (rebalancing may move some back)\n";
    return 0;
  }
  if (auto st = etcd->Put(DrainKey(o.agent), o.agent); !st.ok()) {
    err << "cluster drain: " << st.status().message() << "\n";
    return 1;
  }
  out << "agent '" << o.agent << "' is draining: " << holding
      << " shard replica(s) to move off; the placer moves them (add elsewhere, catch up, drop)\n";
  if (o.wait_s <= 0) return 0;
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(o.wait_s * 1000));
  int last = holding;
  while (true) {
    held.clear();
    const int now = Holding(*etcd, o.agent, &held);
    if (now == 0) {
      out << "agent '" << o.agent << "' holds no replica: it can be stopped\n";
      return 0;
    }
    if (now > 0 && now != last) {
      out << "agent '" << o.agent << "': " << now << " shard replica(s) left\n";
      last = now;
    }
    if (std::chrono::steady_clock::now() >= until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  err << "cluster drain: agent '" << o.agent << "' still holds " << held.size()
      << " shard replica(s) after " << o.wait_s << " s:";
  for (const std::string& s : held) err << " " << s;
  err << " (is a gateway running? are there enough other agents for R?)\n";
  return 3;
}

int RunClusterRebalance(const ClusterMovesOptions& o, std::ostream& out, std::ostream& err) {
  auto etcd = Connect(o, "rebalance", err);
  if (!etcd) return 1;
  ShardMapStore store(*etcd);
  int64_t revision = 0;
  auto maps = store.List(&revision);
  if (revision == 0) {
    err << "cluster rebalance: etcd: the shard maps cannot be read\n";
    return 1;
  }
  const std::set<std::string> draining = Draining(*etcd);
  RebalanceInput in;
  in.tolerance = o.tolerance;
  for (const auto& [id, info] : Agents(*etcd)) {
    if (info.api_version == kAgentApiVersion) {
      in.agents.push_back({id, draining.count(id) > 0, info.free_memory_bytes});
    }
  }
  std::map<std::string, ReplicaStatus> reported;
  if (auto st = etcd->GetPrefix(kReplicationPrefix); st.ok()) {
    for (const KeyValue& kv : st->kvs) {
      if (auto r = DecodeReplicaStatus(kv.value); r.ok()) reported[kv.key] = *r;
    }
  }
  for (const auto& read : maps) {
    in.maps.push_back(read.map);
    for (int i = 0; i < static_cast<int>(read.map.shards.size()); ++i) {
      const int64_t bytes =
          ReportedShardBytes(reported, kReplicationPrefix, read.map.tenant, read.map.name, i);
      if (bytes >= 0) in.bytes[{read.map.tenant, read.map.name, i}] = bytes;
    }
  }
  const RebalancePlan plan = PlanRebalance(in);
  if (o.json) {
    nlohmann::json j;
    j["tolerance"] = o.tolerance;
    j["spread_before"] = plan.spread_before;
    j["spread_after"] = plan.spread_after;
    j["bytes_before"] = plan.before;
    j["bytes_after"] = plan.after;
    j["draining"] = std::vector<std::string>(draining.begin(), draining.end());
    j["moves"] = nlohmann::json::array();
    for (const Move& m : plan.moves) {
      j["moves"].push_back({{"tenant", m.shard.tenant},
                            {"collection", m.shard.name},
                            {"shard", m.shard.shard},
                            {"from", m.from},
                            {"to", m.to},
                            {"bytes", m.bytes},
                            {"why", m.why}});
    }
    out << j.dump(2) << "\n";
    return 0;
  }
  out << "rebalance plan (dry run; tolerance " << o.tolerance << "): " << plan.moves.size()
      << " move(s), spread " << plan.spread_before << " -> " << plan.spread_after << "\n";
  for (const Move& m : plan.moves) {
    out << "  " << m.shard.tenant << "/" << m.shard.name << "#" << m.shard.shard << ": " << m.from
        << " -> " << m.to << " (" << m.why << ", " << Mib(m.bytes) << ")\n";
  }
  out << "agents (bytes now -> after):\n";
  for (const auto& [id, bytes] : plan.before) {
    out << "  " << id << ": " << Mib(bytes) << " -> " << Mib(plan.after.at(id)) << "\n";
  }
  for (const std::string& id : draining) out << "  " << id << ": draining\n";
  return 0;
}

}  // namespace vecgpu::cluster
