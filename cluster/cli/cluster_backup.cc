#include "cluster/cli/cluster_backup.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "cluster/agent/agent_codec.h"
#include "cluster/agent/agent_server.h"
#include "cluster/cli/backup_file.h"
#include "cluster/etcd/etcd_client.h"
#include "cluster/membership/agent_registration.h"
#include "cluster/placement/rebalance.h"
#include "cluster/placement/shard_map.h"
#include "cluster/replication/replica_status.h"
#include "core/options.h"
#include "core/store/posix_file_system.h"
#include "core/util/utf8.h"

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too.
#include <grpcpp/grpcpp.h>

#include "vecgpu/agent/v1/agent.grpc.pb.h"

namespace vecgpu::cluster {
namespace {

static_assert(kMaxBackupShardBytes == kMaxCopyMessageBytes,
              "a backed-up shard must fit one agent API message");

using Clock = std::chrono::steady_clock;

std::string Mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string ShardOf(const std::string& name, int shard) {
  return "shard " + std::to_string(shard) + " of '" + name + "'";
}

Status FromGrpc(const grpc::Status& st, const std::string& agent) {
  if (st.ok()) return Status::Ok();
  std::string message = st.error_message();
  if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    message = "it does not take backups (" + message + "): upgrade it";
  }
  return Status(static_cast<StatusCode>(st.error_code()), "agent '" + agent + "': " + message);
}

// Agent API stubs, one per address, with the cluster's TLS when given.
class Agents {
 public:
  Agents(std::shared_ptr<const TlsCredentials> tls, int copy_timeout_s)
      : tls_(std::move(tls)), copy_timeout_s_(copy_timeout_s) {}

  StatusOr<ExportedCopy> Export(const AgentInfo& agent, const std::string& tenant,
                                const std::string& collection) {
    apb::ExportRequest request;
    request.set_api_version(kAgentApiVersion);
    request.set_tenant(tenant);
    request.set_collection(collection);
    apb::ExportReply reply;
    grpc::ClientContext context;
    Deadline(context);
    RETURN_IF_ERROR(FromGrpc(StubOf(agent.address).Export(&context, request, &reply), agent.id));
    ExportedCopy copy;
    copy.snapshot = std::move(*reply.mutable_snapshot());
    copy.position = reply.position();
    return copy;
  }

  StatusOr<uint64_t> Restore(const AgentInfo& agent, const std::string& tenant,
                             const std::string& collection, int64_t epoch,
                             const std::string& snapshot) {
    apb::RestoreRequest request;
    request.set_api_version(kAgentApiVersion);
    request.set_tenant(tenant);
    request.set_collection(collection);
    request.set_primary(agent.id);
    request.set_epoch(epoch);
    request.set_snapshot(snapshot);
    apb::ReplicateReply reply;
    grpc::ClientContext context;
    Deadline(context);
    RETURN_IF_ERROR(FromGrpc(StubOf(agent.address).Restore(&context, request, &reply), agent.id));
    return reply.position();
  }

  // Drops a copy a failed restore made (as a write routed in `epoch`).
  Status Drop(const AgentInfo& agent, const std::string& tenant, const std::string& collection,
              int64_t epoch) {
    apb::NameRequest request;
    request.mutable_context()->set_tenant(tenant);
    request.mutable_context()->set_admin(true);
    request.mutable_context()->set_api_version(kAgentApiVersion);
    request.mutable_context()->set_deadline_ms(10'000);
    request.mutable_context()->set_shard_epoch(epoch);
    request.set_collection(collection);
    apb::Empty reply;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return FromGrpc(StubOf(agent.address).Drop(&context, request, &reply), agent.id);
  }

 private:
  void Deadline(grpc::ClientContext& context) const {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(copy_timeout_s_));
  }
  apb::Agent::Stub& StubOf(const std::string& address) {
    auto& stub = stubs_[address];
    if (!stub) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(INT32_MAX);
      args.SetMaxSendMessageSize(INT32_MAX);
      stub = apb::Agent::NewStub(MakeChannel(address, args, tls_.get()));
    }
    return *stub;
  }

  std::shared_ptr<const TlsCredentials> tls_;
  const int copy_timeout_s_;
  std::map<std::string, std::unique_ptr<apb::Agent::Stub>> stubs_;
};

// What both commands start from: etcd, the live agents of this API version, the agents' TLS.
struct Session {
  std::unique_ptr<EtcdClient> etcd;
  std::map<std::string, AgentInfo> live;
  std::unique_ptr<Agents> agents;
};

bool Open(const ClusterBackupOptions& o, const char* what, Session& s, std::ostream& err) {
  std::shared_ptr<const TlsCredentials> tls;
  if (!o.cluster_tls.empty()) {
    auto made = TlsCredentials::ForCluster(o.cluster_tls);
    if (!made.ok()) {
      err << "cluster " << what << ": " << made.status().message() << "\n";
      return false;
    }
    tls = *made;
  }
  auto client = EtcdClient::Connect({o.etcd, std::chrono::milliseconds(o.timeout_ms), o.etcd_tls});
  if (!client.ok()) {
    err << "cluster " << what << ": " << client.status().message() << "\n";
    return false;
  }
  s.etcd = std::move(*client);
  auto kvs = s.etcd->GetPrefix("/vecgpu/agents/");
  if (!kvs.ok()) {
    err << "cluster " << what << ": etcd: " << kvs.status().message() << "\n";
    return false;
  }
  for (const KeyValue& kv : kvs->kvs) {
    auto info = DecodeAgentInfo(kv.value);
    if (info.ok() && info->api_version == kAgentApiVersion) s.live[info->id] = *info;
  }
  s.agents = std::make_unique<Agents>(std::move(tls), o.copy_timeout_s);
  return true;
}

// Reads and checks every part of the backup at `path`: its header, then each shard's copy
// (decoded, then let go). `visit` gets each shard and its decoded copy.
StatusOr<BackupHeader> ReadBackup(
    const std::string& path,
    const std::function<Status(const BackupShard&, store::StorageSnapshot&)>& visit) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return NotFound("backup " + path + ": " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("backup " + path + ": cannot be opened");
  ASSIGN_OR_RETURN(auto reader, BackupReader::Open(in, size, path));
  for (int i = 0; i < reader->header().shards; ++i) {
    ASSIGN_OR_RETURN(BackupShard shard, reader->Next());
    ASSIGN_OR_RETURN(store::StorageSnapshot copy, DecodeBackupShard(reader->header(), shard, path));
    RETURN_IF_ERROR(visit(shard, copy));
  }
  RETURN_IF_ERROR(reader->Finish());
  return reader->header();
}

Status CheckName(const std::string& name) {
  if (name.empty()) return InvalidArgument("the collection name is empty");
  if (name.find('#') != std::string::npos) {
    return InvalidArgument("'" + name + "': '#' is reserved in a cluster (it names shards)");
  }
  if (static_cast<int>(name.size()) > Limits{}.max_index_id_length || !IsPrintableUtf8(name)) {
    return InvalidArgument("'" + name + "' is not a collection name (printable UTF-8, at most " +
                           std::to_string(Limits{}.max_index_id_length) + " bytes)");
  }
  return Status::Ok();
}

}  // namespace

int RunClusterBackup(const ClusterBackupOptions& o, std::ostream& out, std::ostream& err) {
  Session s;
  if (!Open(o, "backup", s, err)) return 1;
  ShardMapStore store(*s.etcd);
  auto read = store.Get(o.tenant, o.collection);
  if (!read.ok()) {
    err << "cluster backup: "
        << (read.status().code() == StatusCode::kNotFound
                ? "no collection '" + o.collection + "' in tenant '" + o.tenant + "'"
                : read.status().message())
        << "\n";
    return 1;
  }
  const CollectionMap& map = read->map;
  const int n = static_cast<int>(map.shards.size());
  BackupHeader header;
  header.tenant = map.tenant;
  header.name = map.name;
  header.shards = n;
  header.replication = map.replication;
  header.inner_product = map.inner_product;
  header.created = UtcNow();
  store::PosixFileSystem fs;
  std::unique_ptr<BackupWriter> writer;
  for (int i = 0; i < n; ++i) {
    const ShardState& shard = map.shards[i];
    const std::string collection = ShardCollectionName(map.name, i, n);
    // A live in-sync replica: the primary first.
    std::vector<std::string> order = {shard.primary};
    for (const std::string& r : shard.in_sync) {
      if (r != shard.primary) order.push_back(r);
    }
    std::string tried;
    std::optional<ExportedCopy> copy;
    std::string from;
    for (const std::string& id : order) {
      if (std::find(shard.in_sync.begin(), shard.in_sync.end(), id) == shard.in_sync.end()) {
        continue;
      }
      auto agent = s.live.find(id);
      if (agent == s.live.end()) {
        tried += "; '" + id + "' is not live";
        continue;
      }
      auto exported = s.agents->Export(agent->second, map.tenant, collection);
      if (!exported.ok()) {
        tried += "; " + exported.status().message();
        continue;
      }
      copy = std::move(*exported);
      from = id;
      break;
    }
    if (!copy) {
      err << "cluster backup: " << ShardOf(map.name, i) << ": no live in-sync replica could copy it"
          << tried << "\n";
      return 1;
    }
    BackupShard frame{i, copy->position, std::move(copy->snapshot)};
    if (i == 0) {
      // The index type and dimension, from the first copy (every shard has the same).
      auto decoded = store::DecodeSnapshot(frame.snapshot, "the copy of " + ShardOf(map.name, 0));
      if (!decoded.ok()) {
        err << "cluster backup: " << decoded.status().message() << "\n";
        return 1;
      }
      header.index_type = decoded->index_type;
      header.dim = decoded->dim;
    }
    if (auto checked = DecodeBackupShard(header, frame, "from agent '" + from + "'");
        !checked.ok()) {
      err << "cluster backup: " << checked.status().message() << "\n";
      return 1;
    }
    if (i == 0) {
      auto made = BackupWriter::Create(fs, o.file, header);
      if (!made.ok()) {
        err << "cluster backup: " << o.file << ": " << made.status().message() << "\n";
        return 1;
      }
      writer = std::move(*made);
    }
    if (Status st = writer->Add(i, frame.position, frame.snapshot); !st.ok()) {
      err << "cluster backup: " << o.file << ": " << st.message() << "\n";
      return 1;
    }
    out << ShardOf(map.name, i) << ": copied from '" << from << "' at record " << frame.position
        << " (" << Mib(frame.snapshot.size()) << ")\n";
  }
  if (Status st = writer->Finish(); !st.ok()) {
    err << "cluster backup: " << o.file << ": " << st.message() << "\n";
    return 1;
  }
  out << "backed up '" << map.name << "' (tenant '" << map.tenant << "'): " << n << " shard(s), "
      << header.index_type << ", dimension " << header.dim << ", to " << o.file << " ("
      << Mib(writer->size()) << ")\n";
  return 0;
}

namespace {

// One restore's steps (RunClusterRestore), in order; each says what went wrong on `err`.
class CollectionRestore {
 public:
  CollectionRestore(const ClusterBackupOptions& o, const BackupHeader& header, Session& s,
                    std::ostream& out, std::ostream& err)
      : o_(o),
        header_(header),
        s_(s),
        store_(*s.etcd),
        out_(out),
        err_(err),
        tenant_(o.tenant.empty() ? header.tenant : o.tenant),
        name_(o.as.empty() ? header.name : o.as),
        shards_(header.shards),
        replicas_(o.replicas > 0 ? o.replicas : header.replication),
        what_("'" + name_ + "' (tenant '" + tenant_ + "')") {}

  // 1. Placed as a gateway's create places it (the same S, R replicas on live agents that are
  // not draining), its map written with each shard's primary as its only replica.
  bool Place() {
    if (auto existing = store_.Get(tenant_, name_); existing.ok()) {
      err_ << "cluster restore: collection " << what_
           << " already exists (ALREADY_EXISTS): drop it first, or restore under another name "
              "with --as\n";
      return false;
    } else if (existing.status().code() != StatusCode::kNotFound) {
      err_ << "cluster restore: " << existing.status().message() << "\n";
      return false;
    }
    std::vector<Candidate> candidates;
    const std::set<std::string> draining = Draining(*s_.etcd);
    for (const auto& [id, info] : s_.live) {
      if (!draining.count(id)) {
        candidates.push_back({id, std::max(0.1, info.free_memory_bytes / double(1 << 30))});
      }
    }
    std::map<std::string, int> leads;  // shards each agent leads now
    for (const auto& read : store_.List()) {
      for (const ShardState& st : read.map.shards) ++leads[st.primary];
    }
    auto placed = FirstPlacement(tenant_, name_, shards_, replicas_, candidates, leads);
    if (!placed.ok()) {
      err_ << "cluster restore: " << placed.status().message() << "\n";
      return false;
    }
    plan_ = *placed;
    first_ = plan_;
    first_.inner_product = header_.inner_product;
    for (ShardState& st : first_.shards) {
      st.replicas = {st.primary};
      st.in_sync = {st.primary};
    }
    // Create-if-absent, without the placer's fence, as every gateway's create: no placer
    // decision can concern a map that does not exist, and every later change (ours and the
    // placer's) compares the map's revision.
    if (auto created = store_.Create(first_, "", 0); !created.ok()) {
      err_ << "cluster restore: " << created.status().message() << "\n";
      return false;
    }
    // Reports about an earlier collection of this name (its drop removes them; a drop that
    // failed half-way may not have): the placer must not take them for this one's.
    (void)s_.etcd->Delete(ReplicaStatusPrefix(kReplicationPrefix, tenant_, name_), true);
    out_ << "placed " << what_ << ":";
    for (int i = 0; i < shards_; ++i) {
      out_ << (i ? ", " : " ") << "shard " << i << " on '" << first_.shards[i].primary << "'";
    }
    out_ << "\n";
    return true;
  }

  // 2. Each shard's copy onto its primary (renamed for --as), the file read a second time.
  bool LoadCopies() {
    int shard = 0;
    auto read = ReadBackup(o_.file, [&](const BackupShard& frame, store::StorageSnapshot& copy) {
      shard = frame.shard;
      const std::string collection = ShardCollectionName(name_, shard, shards_);
      std::string renamed;
      if (copy.name != collection) {
        copy.name = collection;
        copy.names[0].name = collection;
        renamed = store::EncodeSnapshot(copy);
      }
      const std::string& bytes = renamed.empty() ? frame.snapshot : renamed;
      const std::string& primary = first_.shards[shard].primary;
      auto agent = s_.live.find(primary);
      StatusOr<uint64_t> at = Unavailable("agent '" + primary + "' is not live");
      // The agent says UNAVAILABLE until it has seen the new map: asked again, briefly.
      const auto until = Clock::now() + std::chrono::seconds(30);
      while (agent != s_.live.end()) {
        at = s_.agents->Restore(agent->second, tenant_, collection, first_.shards[shard].epoch,
                                bytes);
        if (at.ok() || at.status().code() != StatusCode::kUnavailable || Clock::now() >= until) {
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      if (!at.ok()) return at.status();
      restored_.push_back(shard);
      out_ << ShardOf(name_, shard) << ": restored on '" << primary << "' at record " << *at << " ("
           << Mib(bytes.size()) << ")\n";
      return Status::Ok();
    });
    if (read.ok()) return true;
    Undo(ShardOf(name_, shard) + ": " + read.status().message());
    return false;
  }

  // 3. The other replicas, outside the in-sync set: each primary sends them its copy whole.
  bool AddReplicas() {
    for (int attempt = 0; replicas_ > 1; ++attempt) {
      auto read = store_.Get(tenant_, name_);
      if (!read.ok()) {
        return Unfinished("its map cannot be read to add its other replicas (" +
                          read.status().message() + ")");
      }
      CollectionMap m = read->map;
      bool changed = false;
      for (int i = 0; i < shards_ && i < static_cast<int>(m.shards.size()); ++i) {
        ShardState& st = m.shards[i];
        for (const std::string& r : plan_.shards[i].replicas) {
          if (static_cast<int>(st.replicas.size()) >= replicas_) break;
          if (std::find(st.replicas.begin(), st.replicas.end(), r) != st.replicas.end()) continue;
          st.replicas.push_back(r);
          changed = true;
        }
      }
      if (!changed) return true;
      // Compared on the revision read, as the placer's changes are: of two, one wins and the
      // other reads again.
      auto updated = store_.Update(m, read->mod_revision, "", 0);
      if (updated.ok()) return true;
      if (updated.status().code() != StatusCode::kAborted || attempt >= 20) {
        return Unfinished("its other replicas could not be added to its map (" +
                          updated.status().message() + ")");
      }
    }
    return true;
  }

  // 4. Until every shard has R in-sync replicas, or the wait ends.
  bool AwaitInSync() {
    const auto until =
        Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o_.wait_s * 1000));
    std::vector<int> reported(shards_, -1);
    while (true) {
      auto read = store_.Get(tenant_, name_);
      int done = 0;
      for (int i = 0; read.ok() && i < static_cast<int>(read->map.shards.size()); ++i) {
        const int in_sync = static_cast<int>(read->map.shards[i].in_sync.size());
        if (in_sync != reported[i]) {
          out_ << ShardOf(name_, i) << ": " << in_sync << " of " << replicas_
               << " replicas in sync\n";
          reported[i] = in_sync;
        }
        if (in_sync >= replicas_) ++done;
      }
      if (done == shards_) break;
      if (Clock::now() >= until) {
        err_ << "cluster restore: " << what_ << " is restored on its primaries, but "
             << shards_ - done << " shard(s) had fewer than " << replicas_
             << " in-sync replicas after " << o_.wait_s
             << " s (is a gateway running? `vecgpu cluster status` shows the replicas; their "
                "primaries keep sending them the copy)\n";
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    out_ << "restored " << what_ << " from " << o_.file << ": " << shards_ << " shard(s), "
         << replicas_ << " in-sync replica(s) each\n";
    return true;
  }

 private:
  // A failure in step 2: the copies restored so far dropped, the map removed.
  void Undo(const std::string& why) {
    for (int i : restored_) {
      auto agent = s_.live.find(first_.shards[i].primary);
      if (agent == s_.live.end()) continue;
      if (Status st =
              s_.agents->Drop(agent->second, tenant_, ShardCollectionName(name_, i, shards_),
                              first_.shards[i].epoch);
          !st.ok()) {
        err_ << "cluster restore: could not drop the restored copy of " << ShardOf(name_, i) << ": "
             << st.message() << "\n";
      }
    }
    Status gone = Unavailable("etcd");
    if (auto read = store_.Get(tenant_, name_); read.ok()) {
      gone = store_.Delete(tenant_, name_, read->mod_revision, "", 0);
    }
    (void)s_.etcd->Delete(ReplicaStatusPrefix(kReplicationPrefix, tenant_, name_), true);
    err_ << "cluster restore: " << why << "; "
         << (gone.ok() ? "the collection's map was removed again"
                       : "the collection's map could not be removed (" + gone.message() +
                             "): drop " + what_ + " through a gateway")
         << "\n";
  }
  // Restored on the primaries, short of its replicas.
  bool Unfinished(const std::string& why) {
    err_ << "cluster restore: " << what_ << " is restored on its primaries, but " << why
         << ": the placer adds replicas after its --rereplicate-after\n";
    return false;
  }

  const ClusterBackupOptions& o_;
  const BackupHeader& header_;
  Session& s_;
  ShardMapStore store_;
  std::ostream& out_;
  std::ostream& err_;
  const std::string tenant_;
  const std::string name_;
  const int shards_;
  const int replicas_;
  const std::string what_;     // for messages
  CollectionMap plan_;         // FirstPlacement's: R replicas per shard
  CollectionMap first_;        // the map written first: each shard's primary alone
  std::vector<int> restored_;  // shards whose copy is on their primary
};

}  // namespace

int RunClusterRestore(const ClusterBackupOptions& o, std::ostream& out, std::ostream& err) {
  // The whole file checked before anything changes.
  auto header =
      ReadBackup(o.file, [](const BackupShard&, store::StorageSnapshot&) { return Status::Ok(); });
  if (!header.ok()) {
    err << "cluster restore: " << header.status().message() << "; nothing was changed\n";
    return 1;
  }
  if (Status st = CheckName(o.as.empty() ? header->name : o.as); !st.ok()) {
    err << "cluster restore: --as " << st.message() << "\n";
    return 1;
  }
  if (o.replicas > kMaxBackupShards) {
    err << "cluster restore: --replicas " << o.replicas << " is above the limit of "
        << kMaxBackupShards << "\n";
    return 1;
  }
  out << "backup " << o.file << ": '" << header->name << "' (tenant '" << header->tenant << "'), "
      << header->shards << " shard(s), " << header->index_type << ", dimension " << header->dim
      << ", taken " << header->created << ": checked\n";
  Session s;
  if (!Open(o, "restore", s, err)) return 1;
  CollectionRestore restore(o, *header, s, out, err);
  if (!restore.Place() || !restore.LoadCopies()) return 1;
  if (!restore.AddReplicas() || !restore.AwaitInSync()) return 3;
  return 0;
}

}  // namespace vecgpu::cluster
