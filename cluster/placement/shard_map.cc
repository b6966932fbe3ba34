#include "cluster/placement/shard_map.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace vecgpu::cluster {
namespace {

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

std::string EscapeKeyPart(const std::string& name) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : name) {
    if (std::isalnum(c) || c == '_' || c == '-' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

namespace {
std::string Escape(const std::string& name) { return EscapeKeyPart(name); }
}  // namespace

std::string ShardCollectionName(const std::string& name, int shard, int shards) {
  return shards <= 1 ? name : name + "#" + std::to_string(shard);
}

std::string EncodeCollectionMap(const CollectionMap& map) {
  nlohmann::json j;
  j["tenant"] = map.tenant;
  j["name"] = map.name;
  j["replication"] = map.replication;
  if (map.inner_product) j["metric"] = "inner_product";
  j["shards"] = nlohmann::json::array();
  for (const ShardState& s : map.shards) {
    nlohmann::json shard = {{"replicas", s.replicas},
                            {"primary", s.primary},
                            {"in_sync", s.in_sync},
                            {"epoch", s.epoch}};
    if (!s.leaving.empty()) shard["leaving"] = s.leaving;
    if (!s.handover.empty()) shard["handover"] = s.handover;
    j["shards"].push_back(std::move(shard));
  }
  return j.dump();
}

StatusOr<CollectionMap> DecodeCollectionMap(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("shard map: not a JSON object");
  CollectionMap m;
  try {
    m.tenant = j.at("tenant").get<std::string>();
    m.name = j.at("name").get<std::string>();
    m.replication = j.at("replication").get<int>();
    m.inner_product = j.value("metric", std::string("l2")) == "inner_product";
    for (const auto& s : j.at("shards")) {
      ShardState st;
      st.replicas = s.at("replicas").get<std::vector<std::string>>();
      st.primary = s.at("primary").get<std::string>();
      st.in_sync = s.at("in_sync").get<std::vector<std::string>>();
      st.epoch = s.at("epoch").get<int64_t>();
      st.leaving = s.value("leaving", std::string());
      st.handover = s.value("handover", std::string());
      m.shards.push_back(std::move(st));
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("shard map: ") + e.what());
  }
  if (m.name.empty()) return InvalidArgument("shard map: no collection name");
  if (m.shards.empty()) return InvalidArgument("shard map of '" + m.name + "': no shards");
  if (m.replication < 1) return InvalidArgument("shard map of '" + m.name + "': replication < 1");
  for (size_t i = 0; i < m.shards.size(); ++i) {
    const ShardState& s = m.shards[i];
    const std::string where = "shard map of '" + m.name + "', shard " + std::to_string(i);
    if (s.epoch < 1) return InvalidArgument(where + ": epoch < 1");
    if (!Contains(s.replicas, s.primary)) {
      return InvalidArgument(where + ": primary '" + s.primary + "' is not a replica");
    }
    for (const std::string& r : s.in_sync) {
      if (!Contains(s.replicas, r)) {
        return InvalidArgument(where + ": in-sync '" + r + "' is not a replica");
      }
    }
    if (!s.leaving.empty() && !Contains(s.replicas, s.leaving)) {
      return InvalidArgument(where + ": leaving '" + s.leaving + "' is not a replica");
    }
    if (!s.handover.empty() && (!Contains(s.in_sync, s.handover) || s.handover == s.primary)) {
      return InvalidArgument(where + ": handover to '" + s.handover +
                             "', which is not another in-sync replica");
    }
  }
  return m;
}

StatusOr<CollectionMap> FirstPlacement(const std::string& tenant, const std::string& name,
                                       int shards, int replication,
                                       const std::vector<Candidate>& agents,
                                       const std::map<std::string, int>& primaries) {
  std::map<std::string, int> leads = primaries;
  if (shards < 1 || replication < 1) {
    return InvalidArgument("placement: shards and replicas must be at least 1");
  }
  CollectionMap m;
  m.tenant = tenant;
  m.name = name;
  m.replication = replication;
  for (int i = 0; i < shards; ++i) {
    std::vector<std::string> owners =
        Rendezvous(tenant + "/" + name + "/" + std::to_string(i), agents, replication);
    if (static_cast<int>(owners.size()) < replication) {
      return FailedPrecondition("placement of '" + name + "': " + std::to_string(owners.size()) +
                                " live agents with room, " + std::to_string(replication) +
                                " replicas wanted");
    }
    // The primary: the owner leading the fewest shards (of this collection, and of the
    // others when given), so that one agent does not order every write; ties go to the
    // rendezvous order. It is listed first.
    size_t best = 0;
    for (size_t j = 1; j < owners.size(); ++j) {
      if (leads[owners[j]] < leads[owners[best]]) best = j;
    }
    std::rotate(owners.begin(), owners.begin() + static_cast<std::ptrdiff_t>(best),
                owners.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    ++leads[owners.front()];
    ShardState s;
    s.replicas = owners;
    s.primary = owners.front();
    s.in_sync = owners;
    s.epoch = 1;
    m.shards.push_back(std::move(s));
  }
  return m;
}

PlacerElection::PlacerElection(EtcdClient& etcd, std::string id, std::string key,
                               int64_t ttl_seconds)
    : etcd_(etcd), id_(std::move(id)), key_(std::move(key)), ttl_seconds_(ttl_seconds) {
  thread_ = std::thread([this] { Loop(); });
}

PlacerElection::~PlacerElection() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  fence_.store(0);
  if (const int64_t l = lease_.exchange(0); l != 0) (void)etcd_.RevokeLease(l);  // resign
}

bool PlacerElection::WaitForLeadership(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return fence_.load() != 0; });
}

void PlacerElection::Loop() {
  const auto period = std::chrono::milliseconds(ttl_seconds_ * 1000 / 3);
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    auto wait = period;
    int64_t lease = lease_.load();
    if (lease != 0 && !etcd_.KeepAliveOnce(lease).ok()) {
      // Lost (expired) or unreachable: no longer believe it leads; campaign afresh.
      fence_.store(0);
      lease_.store(0);
      lease = 0;
    }
    if (lease == 0) {
      auto granted = etcd_.GrantLease(ttl_seconds_);
      if (granted.ok()) {
        lease = granted->id;
        lease_.store(lease);
      } else {
        wait = std::chrono::milliseconds(500);
      }
    }
    if (lease != 0 && fence_.load() != 0) {
      // Still ours? (Deleted by hand, or replaced: then it leads no more.)
      auto held = etcd_.Get(key_);
      if (!held.ok() || held->kvs.empty() || held->kvs[0].create_revision != fence_.load()) {
        fence_.store(0);
      }
    }
    if (lease != 0 && fence_.load() == 0) {
      // Campaign: the key if it is free; else see who holds it.
      auto t = etcd_.Txn({Compare::Absent(key_)}, {TxnOp::Put(key_, id_, lease), TxnOp::Get(key_)},
                         {TxnOp::Get(key_)});
      if (t.ok() && !t->reads.empty() && !t->reads[0].kvs.empty()) {
        const KeyValue& kv = t->reads[0].kvs[0];
        if (kv.lease == lease) {
          fence_.store(kv.create_revision);
          cv_.notify_all();
        } else {
          wait = std::min(wait, std::chrono::milliseconds(500));  // another leads: ask again
        }
      } else {
        wait = std::chrono::milliseconds(500);
      }
    }
    lock.lock();
    cv_.notify_all();
    cv_.wait_for(lock, wait, [&] { return stopping_; });
  }
}

ShardMapStore::ShardMapStore(EtcdClient& etcd, std::string prefix)
    : etcd_(etcd), prefix_(std::move(prefix)) {}

std::string ShardMapStore::KeyOf(const std::string& tenant, const std::string& name) const {
  return prefix_ + Escape(tenant) + "/" + Escape(name);
}

StatusOr<ShardMapStore::Read> ShardMapStore::Get(const std::string& tenant,
                                                 const std::string& name) {
  ASSIGN_OR_RETURN(RangeResult r, etcd_.Get(KeyOf(tenant, name)));
  if (r.kvs.empty()) return NotFound("collection '" + name + "' has no shard map");
  ASSIGN_OR_RETURN(CollectionMap m, DecodeCollectionMap(r.kvs[0].value));
  return Read{std::move(m), r.kvs[0].mod_revision};
}

std::vector<ShardMapStore::Read> ShardMapStore::List(int64_t* revision, int64_t* malformed,
                                                     const std::string& tenant) {
  std::vector<Read> out;
  auto r = etcd_.GetPrefix(tenant.empty() ? prefix_ : prefix_ + Escape(tenant) + "/");
  if (!r.ok()) return out;
  if (revision) *revision = r->revision;
  for (const KeyValue& kv : r->kvs) {
    auto m = DecodeCollectionMap(kv.value);
    if (!m.ok()) {
      if (malformed) ++*malformed;
      continue;
    }
    out.push_back({std::move(*m), kv.mod_revision});
  }
  return out;
}

StatusOr<int64_t> ShardMapStore::Fenced(const std::vector<Compare>& extra, const TxnOp& op,
                                        const std::string& placer_key, int64_t leader,
                                        const std::string& what) {
  std::vector<Compare> conditions = extra;
  if (leader != 0) {
    conditions.push_back(
        {placer_key, Compare::Target::kCreateRevision, Compare::Op::kEqual, leader, ""});
  }
  std::vector<TxnOp> reads = {TxnOp::Get(op.key)};
  if (leader != 0) reads.push_back(TxnOp::Get(placer_key));
  ASSIGN_OR_RETURN(TxnResult t, etcd_.Txn(conditions, {op}, reads));
  if (t.succeeded) return t.revision;
  // Which condition failed: the leadership, or the map.
  if (leader != 0 && t.reads.size() > 1 &&
      (t.reads[1].kvs.empty() || t.reads[1].kvs[0].create_revision != leader)) {
    return Aborted(what + ": no longer the placer (its leadership at revision " +
                   std::to_string(leader) + " is gone); nothing changed");
  }
  return Aborted(what + ": the shard map changed meanwhile; read it again");
}

StatusOr<int64_t> ShardMapStore::Create(const CollectionMap& map, const std::string& placer_key,
                                        int64_t leader) {
  const std::string key = KeyOf(map.tenant, map.name);
  auto r = Fenced({Compare::Absent(key)}, TxnOp::Put(key, EncodeCollectionMap(map)), placer_key,
                  leader, "create of the shard map of '" + map.name + "'");
  if (!r.ok() && r.status().message().find("changed meanwhile") != std::string::npos) {
    return AlreadyExists("collection '" + map.name + "' already has a shard map");
  }
  return r;
}

StatusOr<int64_t> ShardMapStore::Update(const CollectionMap& map, int64_t read_revision,
                                        const std::string& placer_key, int64_t leader) {
  const std::string key = KeyOf(map.tenant, map.name);
  return Fenced({Compare::ModRevisionIs(key, read_revision)},
                TxnOp::Put(key, EncodeCollectionMap(map)), placer_key, leader,
                "update of the shard map of '" + map.name + "'");
}

Status ShardMapStore::Delete(const std::string& tenant, const std::string& name,
                             int64_t read_revision, const std::string& placer_key,
                             int64_t leader) {
  const std::string key = KeyOf(tenant, name);
  return Fenced({Compare::ModRevisionIs(key, read_revision)}, TxnOp::Delete(key), placer_key,
                leader, "delete of the shard map of '" + name + "'")
      .status();
}

}  // namespace vecgpu::cluster
