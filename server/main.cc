// vecgpu: serves FAISS indexes over the FAISSx protocol and the Vald v1 gRPC API. See README.md.
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <fstream>
#include <chrono>
#include <cstdio>
#include <future>
#include <iostream>

#if VECGPU_HAVE_ETCD
#include "cluster/agent/agent_codec.h"
#include "cluster/agent/agent_server.h"
#include "cluster/cli/cluster_backup.h"
#include "cluster/cli/cluster_moves.h"
#include "cluster/cli/cluster_status.h"
#include "cluster/gateway/cluster_service.h"
#include "cluster/membership/agent_registration.h"
#include "cluster/replication/replicated_service.h"
#include "cluster/replication/replicator.h"
#include "cluster/security/tls.h"
#include "core/store/wal.h"
#include "core/store/wal_record.h"
#endif
#include "core/device/device_manager.h"
#include "core/engine.h"
#include "core/scheduler/scheduler.h"
#include "core/service/local_service.h"
#include "core/store/posix_file_system.h"
#include "core/store/store.h"
#include "core/util/interrupt.h"
#include "cpu_fallback/cpu_backend_factory.h"
#include "cpu_fallback/cpu_threads.h"
#include "server/auth.h"
#include "server/build_info.h"
#include "server/config.h"
#include "server/gpu_host_command.h"
#include "server/faissx/service.h"
#include "server/http/metrics_server.h"
#include "server/import_faissx.h"
#include "server/zmq/router_frontend.h"
#if VECGPU_HAVE_GRPC
#include <unistd.h>

#include "server/grpc/grpc_server.h"
#endif

namespace vecgpu::server {
namespace {

// MemAvailable of /proc/meminfo, in bytes (0 when unreadable): what an agent reports as free.
int64_t AvailableMemoryBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

bool IsLoopback(const std::string& address) {
  return address.rfind("127.", 0) == 0 || address == "localhost" || address == "::1" ||
         address == "[::1]";
}

void SetUpLogging(const ServeOptions& o) {
  std::vector<spdlog::sink_ptr> sinks{std::make_shared<spdlog::sinks::stderr_color_sink_mt>()};
  if (!o.log_file.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(o.log_file));
  }
  auto logger = std::make_shared<spdlog::logger>("vecgpu", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::from_str(o.log_level == "warning" ? "warn" : o.log_level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

// Per-GPU gauges: memory budget and reserved, collections, health; CPU-placed collections.
void RegisterDeviceGauges(MetricsRegistry& registry, const DeviceManager& devices) {
  auto per_gpu = [&devices](auto field) {
    return [&devices, field] {
      std::vector<GaugeSample> out;
      for (const auto& d : devices.Devices()) {
        out.push_back({{std::to_string(d.id)}, static_cast<double>(field(d))});
      }
      return out;
    };
  };
  using D = DeviceManager::DeviceState;
  registry.AddGauge("vecgpu_gpu_memory_budget_bytes",
                    "GPU memory placed collections may reserve (--gpu-memory-fraction)", {"gpu"},
                    per_gpu([](const D& d) { return d.budget_bytes; }));
  registry.AddGauge("vecgpu_gpu_memory_reserved_bytes",
                    "GPU memory reserved by the collections placed there", {"gpu"},
                    per_gpu([](const D& d) { return d.reserved_bytes; }));
  registry.AddGauge("vecgpu_gpu_extra_copies",
                    "Extra copies of hot indexes on the GPU (given back when the load falls or "
                    "the room is needed)",
                    {"gpu"}, per_gpu([](const D& d) { return d.extra_copies; }));
  registry.AddGauge("vecgpu_gpu_healthy", "1 while the GPU serves, 0 while it is down", {"gpu"},
                    per_gpu([](const D& d) { return d.healthy ? 1 : 0; }));
  registry.AddGauge("vecgpu_gpu_quarantined",
                    "1 while the GPU is quarantined after repeated faults", {"gpu"},
                    per_gpu([](const D& d) { return d.quarantined ? 1 : 0; }));
  registry.AddGauge("vecgpu_gpu_faults_total",
                    "Faults of the GPU: crashes, device errors and hangs of its GPU host process",
                    {"gpu"}, per_gpu([](const D& d) { return d.faults; }));
  registry.AddGauge("vecgpu_gpu_host_restarts_total",
                    "Restarts of the GPU's host process that brought it back", {"gpu"},
                    per_gpu([](const D& d) { return d.restarts; }));
  registry.AddGauge(
      "vecgpu_device_collections", "Collections placed per device", {"device"}, [&devices] {
        std::vector<GaugeSample> out{{{"cpu"}, static_cast<double>(devices.cpu_collections())}};
        for (const auto& d : devices.Devices()) {
          out.push_back({{"gpu:" + std::to_string(d.id)}, static_cast<double>(d.collections)});
        }
        return out;
      });
}

// The thread that waits for the stop signals (Serve).
pthread_t g_main_thread;

// Runs on a thread that does not block the stop signals: hands the signal to the main thread,
// which blocks it and takes it with sigwait. Async-signal-safe.
void ForwardStopSignal(int sig) { pthread_kill(g_main_thread, sig); }

// The data directory's log and snapshots, read at scrape time.
void RegisterStoreGauges(MetricsRegistry& registry, const store::Store& st) {
  auto one = [&st](auto field) {
    return [&st, field] {
      return std::vector<GaugeSample>{{{}, static_cast<double>(field(st.Stats()))}};
    };
  };
  using S = store::StoreStats;
  registry.AddGauge("vecgpu_snapshots_total", "Snapshots of the data directory completed", {},
                    one([](const S& s) { return s.snapshots; }));
  registry.AddGauge("vecgpu_snapshot_failures_total", "Background snapshots that failed", {},
                    one([](const S& s) { return s.snapshot_failures; }));
  registry.AddGauge("vecgpu_snapshot_last_seconds", "Duration of the last snapshot", {},
                    one([](const S& s) { return s.last_snapshot_seconds; }));
  registry.AddGauge("vecgpu_snapshot_max_write_pause_seconds",
                    "Longest time one index's writes waited on a snapshot's copy of it", {},
                    one([](const S& s) { return s.max_pause_seconds; }));
  registry.AddGauge("vecgpu_wal_bytes_since_snapshot", "Log bytes written since the last snapshot",
                    {}, one([](const S& s) { return s.log_bytes_since_snapshot; }));
  registry.AddGauge("vecgpu_wal_last_seq", "Sequence number of the last log record", {},
                    one([](const S& s) { return s.last_seq; }));
  registry.AddGauge("vecgpu_wal_durable_seq", "Sequence number of the last durable log record", {},
                    one([](const S& s) { return s.durable_seq; }));
  registry.AddGauge("vecgpu_wal_fsyncs_total", "fsyncs of the log (group commit shares them)", {},
                    one([](const S& s) { return s.syncs; }));
}

// Gauges read at scrape time: queued work, busy and total workers by class, and per-tenant
// collections and vectors. None waits on a collection's lock.
void RegisterGauges(MetricsRegistry& registry, const Scheduler& scheduler,
                    const WorkerPool& dispatch, const Engine& engine, const Quotas& quotas) {
  registry.AddGauge("vecgpu_queue_depth",
                    "Requests waiting: for a dispatch thread, or queued "
                    "on an index for a worker",
                    {"queue"}, [&scheduler, &dispatch] {
                      return std::vector<GaugeSample>{
                          {{"dispatch"}, static_cast<double>(dispatch.queued())},
                          {{"index"}, static_cast<double>(scheduler.queued())}};
                    });
  auto by_class = [&scheduler, &dispatch](bool busy) {
    return [&scheduler, &dispatch, busy] {
      std::vector<GaugeSample> out;
      for (WorkClass c : {WorkClass::kShort, WorkClass::kLong}) {
        out.push_back({{c == WorkClass::kShort ? "short" : "long"},
                       static_cast<double>(busy ? scheduler.busy(c) : scheduler.workers(c))});
      }
      out.push_back(
          {{"gpu"}, static_cast<double>(busy ? scheduler.busy_gpu() : scheduler.gpu_workers())});
      out.push_back(
          {{"dispatch"}, static_cast<double>(busy ? dispatch.busy() : dispatch.threads())});
      return out;
    };
  };
  registry.AddGauge("vecgpu_busy_workers", "Workers running a request, by class", {"class"},
                    by_class(true));
  registry.AddGauge("vecgpu_workers", "Worker threads, by class", {"class"}, by_class(false));
  auto usage = [&engine](bool vectors) {
    return [&engine, vectors] {
      std::vector<GaugeSample> out;
      for (const auto& u : engine.Usage()) {
        out.push_back({{u.tenant}, static_cast<double>(vectors ? u.vectors : u.collections)});
      }
      return out;
    };
  };
  registry.AddGauge("vecgpu_collections", "Collections (indexes), by tenant", {"tenant"},
                    usage(false));
  registry.AddGauge("vecgpu_vectors", "Vectors stored, by tenant", {"tenant"}, usage(true));
  registry.AddGauge("vecgpu_tenant_bytes", "Estimated memory of a tenant's indexes", {"tenant"},
                    [&engine] {
                      std::vector<GaugeSample> out;
                      for (const auto& u : engine.Usage()) {
                        out.push_back({{u.tenant},
                                       static_cast<double>(engine.UseOf(u.tenant).bytes)});
                      }
                      return out;
                    });
  registry.AddGauge("vecgpu_tenant_inflight", "A tenant's requests received and not answered",
                    {"tenant"}, [&engine, &quotas] {
                      std::vector<GaugeSample> out;
                      for (const auto& u : engine.Usage()) {
                        out.push_back({{u.tenant}, static_cast<double>(quotas.inflight(u.tenant))});
                      }
                      return out;
                    });
  registry.AddGauge("vecgpu_build_info", "The vecgpu build serving", {"version"}, [] {
    return std::vector<GaugeSample>{{{"0.1.0"}, 1}};
  });
}

int Serve(const ServeOptions& o) {
  SetUpLogging(o);
  if (!o.enable_auth && !IsLoopback(o.bind_address)) {
    if (!o.allow_unauthenticated_remote) {
      spdlog::critical(
          "refusing to serve {} without authentication: use --enable-auth with "
          "API keys, or --allow-unauthenticated-remote to accept the risk",
          o.bind_address);
      return 2;
    }
    spdlog::warn(
        "serving {} WITHOUT authentication: anyone who can reach this port can read "
        "and change every index",
        o.bind_address);
  }
  auto auth = Authenticator::Create(o.enable_auth, o.auth_keys, o.admin_keys);
  if (!auth.ok()) {
    spdlog::critical("{}", auth.status().message());
    return 2;
  }

  // Block the stop signals in every thread started from here; this one waits for them below.
  // Threads libraries started before main (OpenBLAS's) do not block them: a stop signal
  // delivered to one of those is forwarded here rather than killing the process.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);  // not a stop: re-enables quarantined GPUs
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  g_main_thread = pthread_self();
  struct sigaction forward = {};
  forward.sa_handler = ForwardStopSignal;
  sigemptyset(&forward.sa_mask);
  sigaction(SIGINT, &forward, nullptr);
  sigaction(SIGTERM, &forward, nullptr);
  sigaction(SIGHUP, &forward, nullptr);

  {
    std::string info = BuildInfo();
    for (size_t at = 0, nl; at < info.size(); at = nl + 1) {
      nl = info.find('\n', at);
      if (nl == std::string::npos) nl = info.size();
      spdlog::info("{}", info.substr(at, nl - at));
    }
  }
  cpu::ConfigureCpuThreads();
  cpu::CpuBackendFactory cpu_factory;
  MetricsRegistry registry;
  ServerMetrics metrics(registry);
  std::unique_ptr<DeviceProvider> provider = MakeDeviceProvider(o);
  DeviceManager devices(
      provider.get(), o.devices, [](const std::string& line) { spdlog::info("{}", line); },
      &metrics);
  // Workers run FAISS single-threaded for small calls; large batches take OpenMP threads.
  // One more worker per GPU in use runs the searches of the collections placed there.
  auto scheduler =
      std::make_unique<Scheduler>(o.scheduler, cpu::UseOneThreadHere, &metrics, devices.gpus());
  Engine engine(o.limits, cpu_factory, &metrics, scheduler.get(), &devices);
  Quotas quotas(o.default_quota, o.tenant_quotas);
  // Persistence: replay the data directory's log, then log every mutation from now on.
  store::PosixFileSystem fs;
  std::unique_ptr<store::Store> persisted;
  if (!o.data_dir.empty()) {
    store::StoreOptions so;
    so.dir = o.data_dir;
    so.durability = o.durability == "async" ? store::Durability::kAsync : store::Durability::kSync;
    so.sync_interval_ms = o.sync_interval_ms;
    so.recover_from_last_good = o.recover_from_last_good;
    so.snapshot_log_bytes = int64_t{o.snapshot_log_mb} << 20;
    so.snapshot_interval_s = o.snapshot_interval_s;
    so.log = [dir = o.data_dir](const std::string& line) {
      spdlog::info("data-dir {}: {}", dir, line);
    };
    store::RecoveryReport report;
    auto opened = store::Store::Open(fs, so, engine, &report);
    if (!opened.ok()) {
      spdlog::critical("data-dir {}: {}", o.data_dir, opened.status().message());
      return 1;
    }
    persisted = std::move(*opened);
    if (!report.damage.empty()) {
      spdlog::warn(
          "data-dir {}: --recover-from-last-good: serving the last good state; damaged "
          "files are set aside as *.damaged: {}",
          o.data_dir, report.damage);
    }
    if (!report.torn_segment.empty()) {
      spdlog::warn(
          "data-dir {}: cut off a torn last log record in {} (a crash during a write "
          "that was never acknowledged)",
          o.data_dir, report.torn_segment);
    }
    spdlog::info(
        "data-dir {}: loaded {} index snapshots ({:.1f} MB) in {:.3f} s, then replayed {} log "
        "records ({} refused again, as they were; {} already in the snapshots) up to record "
        "{}; recovered in {:.3f} s; durability {}",
        o.data_dir, report.snapshots, report.snapshot_bytes / 1e6, report.snapshot_seconds,
        report.records, report.refused, report.skipped, report.last_seq, report.seconds,
        o.durability == "async" ? "async (a crash can lose the last " +
                                      std::to_string(o.sync_interval_ms) + " ms of writes)"
                                : std::string("sync"));
    engine.set_log(persisted.get());
    persisted->StartBackground();
  }
  // The one service contract every front end calls (core/service/collection_service.h).
  LocalServiceOptions local_options;
  local_options.long_add_rows = o.scheduler.long_add_rows;
  if (persisted) {
    local_options.snapshot = [&persisted](const std::string& tenant) {
      return persisted->Snapshot(tenant);
    };
  }
  local_options.quotas = &quotas;
#if VECGPU_HAVE_ETCD
  // A cluster agent (--join) accepts writes only while it holds its etcd lease (registered
  // below, once it serves): it fences itself when it cannot renew for a TTL.
  std::unique_ptr<cluster::EtcdClient> etcd;
  std::atomic<cluster::AgentRegistration*> membership{nullptr};
  // Replication (cluster/replication): every record the engine logs is also handed to the
  // replicator, which forwards the shards this agent is primary of to their replicas.
  std::unique_ptr<cluster::Replicator> replicator;
  // Mutual TLS on the cluster's links (--cluster-tls-*): one set of credentials, its files
  // watched, for the agent API and every client to an agent; TLS to etcd for https:// URLs.
  std::shared_ptr<const cluster::TlsCredentials> cluster_tls;
  if (!o.cluster_tls_cert.empty()) {
    // An agent's certificate must name the host it is dialled at (its --advertise host).
    std::string host = o.advertise.substr(0, o.advertise.rfind(':'));
    if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
    auto tls = cluster::TlsCredentials::ForCluster(
        {o.cluster_tls_cert, o.cluster_tls_key, o.cluster_tls_ca}, o.join.empty() ? "" : host);
    if (!tls.ok()) {
      spdlog::critical("{}", tls.status().message());
      return 1;
    }
    cluster_tls = *tls;
  }
  const cluster::TlsFiles etcd_tls{o.etcd_cert, o.etcd_key, o.etcd_cacert};
  if (!o.join.empty()) {
    auto client = cluster::EtcdClient::Connect({o.join, std::chrono::milliseconds(5000), etcd_tls});
    if (!client.ok()) {
      spdlog::critical("join: {}", client.status().message());
      return 1;
    }
    etcd = std::move(*client);
    cluster::ReplicatorOptions ro;
    ro.agent_id = o.agent_id.empty() ? o.advertise : o.agent_id;
    ro.log = [](const std::string& line) { spdlog::info("replication: {}", line); };
    ro.ring_bytes = static_cast<size_t>(o.replication_log_mb) << 20;
    ro.max_copies = o.max_copies;
    ro.copy_bytes_per_second = static_cast<int64_t>(o.copy_bandwidth_mb) << 20;
    ro.tls = cluster_tls;
    if (persisted) {
      // A copy installed from a primary is durable once snapshotted.
      ro.make_durable = [&persisted](const std::string& tenant) -> Status {
        return persisted->Snapshot(tenant).status();
      };
    }
    replicator = std::make_unique<cluster::Replicator>(*etcd, engine, ro);
    if (persisted) {
      // The records the log still holds, for replicas that come back behind.
      int64_t kept = 0;
      auto read = store::ReadWal(fs, o.data_dir + "/wal", 0,
                                 [&](uint64_t, std::string_view payload) -> Status {
                                   auto r = store::DecodeRecord(payload);
                                   if (r.ok()) {
                                     replicator->Preload(*r);
                                     ++kept;
                                   }
                                   return Status::Ok();
                                 });
      if (!read.ok()) spdlog::warn("replication: reading the log: {}", read.status().message());
      spdlog::info("replication: {} logged records kept for replicas that fall behind", kept);
    }
    engine.set_log(replicator->Wrap(persisted.get()));
    replicator->Start();
    local_options.admit_writes = [&membership]() -> Status {
      const cluster::AgentRegistration* m = membership.load();
      if (!m) return Unavailable("this agent is not registered in etcd yet: no writes until it is");
      return m->WriteAdmission();
    };
  }
#endif
  engine.set_quotas(&quotas);  // after recovery: a replay never meets a quota
  LocalCollectionService collections(engine, local_options);
  // What the front ends call: this node's collections, or, for `vecgpu gateway`, the
  // cluster's (the same contract over the agents the shard maps in etcd name).
  CollectionService* front = &collections;
#if VECGPU_HAVE_ETCD
  // An agent's writes to the shards it holds: admitted on the primary only, acknowledged once
  // replicated.
  std::unique_ptr<cluster::ReplicatedCollectionService> replicated;
  if (replicator) {
    replicated = std::make_unique<cluster::ReplicatedCollectionService>(collections, *replicator);
    front = replicated.get();
  }
  std::unique_ptr<cluster::EtcdClient> gateway_etcd;
  std::unique_ptr<cluster::ClusterCollectionService> gateway;
  if (o.gateway) {
    auto client = cluster::EtcdClient::Connect({o.etcd, std::chrono::milliseconds(5000), etcd_tls});
    if (!client.ok()) {
      spdlog::critical("etcd: {}", client.status().message());
      return 1;
    }
    gateway_etcd = std::move(*client);
    cluster::ClusterServiceOptions co;
    co.replicas = o.replicas;
    co.allow_partial = o.allow_partial_results;
    co.tls = cluster_tls;
    co.id = "gateway-" + std::to_string(getpid()) + "@" + o.bind_address + ":" +
            std::to_string(o.port);
    co.log = [](const std::string& line) { spdlog::warn("gateway: {}", line); };
    co.rereplicate_after = std::chrono::milliseconds(
        static_cast<int64_t>(o.rereplicate_after_s * 1000));
    co.max_copies = o.max_copies;
    co.rebalance_tolerance = o.rebalance_tolerance;
    gateway = std::make_unique<cluster::ClusterCollectionService>(*gateway_etcd, co);
    registry.AddGauge("vecgpu_cluster_unserved_shards",
                      "Shards whose agent is not live (their calls answer UNAVAILABLE)", {},
                      [g = gateway.get()] {
                        return std::vector<GaugeSample>{
                            {{}, static_cast<double>(g->UnservedShards().size())}};
                      });
    registry.AddGauge("vecgpu_cluster_replicas_building",
                      "Replicas being built (re-replication or a move): live, not in sync yet",
                      {}, [g = gateway.get()] {
                        return std::vector<GaugeSample>{
                            {{}, static_cast<double>(g->HealingNow().building)}};
                      });
    registry.AddGauge("vecgpu_cluster_moves_in_progress",
                      "Shards with a move (drain or rebalancing) under way", {},
                      [g = gateway.get()] {
                        return std::vector<GaugeSample>{
                            {{}, static_cast<double>(g->HealingNow().moving)}};
                      });
    registry.AddGauge("vecgpu_cluster_handovers_in_progress",
                      "Shards whose primary is being handed over to another replica", {},
                      [g = gateway.get()] {
                        return std::vector<GaugeSample>{
                            {{}, static_cast<double>(g->HealingNow().handovers)}};
                      });
    registry.AddGauge("vecgpu_cluster_under_replicated_shards",
                      "Shards with fewer live in-sync replicas than their collection wants", {},
                      [g = gateway.get()] {
                        return std::vector<GaugeSample>{
                            {{}, static_cast<double>(g->UnderReplicatedShards())}};
                      });
    if (!gateway->WaitReady(std::chrono::seconds(10))) {
      spdlog::warn("gateway: etcd {} has not answered yet; serving, and routing once it does",
                   o.etcd.front());
    }
    spdlog::info("vecgpu gateway over the agents registered in etcd {} ({} live now)",
                 o.etcd.front(), gateway->members().members().size());
    front = gateway.get();
  }
#else
  if (o.gateway) {
    spdlog::critical("gateway: this build has no etcd client (install golang-etcd-server-dev "
                     "and rebuild: scripts/setup.sh)");
    return 1;
  }
#endif
  ServiceOptions service_options{o.scheduler.request_timeout_ms};
  service_options.quotas = &quotas;
  FaissxService service(*front, *auth, o.limits, &metrics, service_options);
  auto dispatch = std::make_unique<WorkerPool>("dispatch", o.scheduler.dispatch_threads,
                                               o.scheduler.max_queued, cpu::UseOneThreadHere);
  RegisterGauges(registry, *scheduler, *dispatch, engine, quotas);
  RegisterDeviceGauges(registry, devices);
  if (persisted) RegisterStoreGauges(registry, *persisted);
  std::atomic<bool> ready{false};
  // An agent is ready once it serves and every shard copy it holds caught up (in the
  // in-sync set), once after each start: later copies being built do not take it out.
  std::atomic<bool> caught_up{false};
  MetricsServer metrics_server(
      registry,
      [&] {
        if (!ready.load()) return false;
#if VECGPU_HAVE_ETCD
        if (caught_up.load() || !replicator) return true;
        if (replicator->CaughtUp()) caught_up = true;
#else
        caught_up = true;
#endif
        return caught_up.load();
      },
      o.metrics_token, [&devices] { return devices.QuarantineDetail(); });
  if (o.metrics_port != 0) {
    if (Status st = metrics_server.Start(o.metrics_address, o.metrics_port); !st.ok()) {
      spdlog::critical("{}", st.message());
      return 1;
    }
    spdlog::info("metrics on http://{}:{}/metrics (also /healthz, /readyz)", o.metrics_address,
                 metrics_server.port());
  }
  IngressBudget ingress(o.ingress());  // outlives the front end and every reply
  FrontendOptions fo{"tcp://" + o.bind_address + ":" + std::to_string(o.port),
                     o.limits.max_message_bytes, o.io_threads, o.poll_spin_us, &ingress};
  // Large requests (adds, training sets, keyless floods) are decoded on a pool of their own, so
  // that small ones never wait behind them.
  auto bulk = std::make_unique<WorkerPool>("bulk", 1, o.scheduler.max_queued,
                                           cpu::UseOneThreadHere);
  RouterFrontend frontend(service, *dispatch, fo, bulk.get());
  if (Status st = frontend.Start(); !st.ok()) {
    spdlog::critical("{}", st.message());
    return 1;
  }
  spdlog::info(
      "vecgpu serving FAISSx on {} (auth {}, {} API keys; {} dispatch, {} short, {} long and "
      "{} GPU workers; batches up to {} rows)",
      fo.endpoint, o.enable_auth ? "on" : "off", o.auth_keys.size(), o.scheduler.dispatch_threads,
      o.scheduler.query_threads, o.scheduler.write_threads, scheduler->gpu_workers(),
      o.scheduler.max_batch_rows);
#if VECGPU_HAVE_GRPC
  std::unique_ptr<GrpcServer> grpc_server;
  if (o.grpc_port != 0) {
    GrpcEnv env;
    env.service = front;
    env.auth = &*auth;
    env.limits = o.limits;
    env.default_collection = o.vald_collection;
    env.vald_dimension = o.vald_dimension;
    env.vald_index_type = o.vald_index_type;
    env.vald_metric = o.vald_metric;
    env.request_timeout_ms = o.scheduler.request_timeout_ms;
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') env.server_name = host;
    env.quotas = &quotas;
    env.metrics = &metrics;
    GrpcServerOptions go{o.bind_address, o.grpc_port, o.limits.max_message_bytes,
                         o.limits.max_request_bytes, o.grpc_tls_cert, o.grpc_tls_key,
                         o.grpc_tls_client_ca, o.grpc_max_threads,
                         o.grpc_max_streams_per_connection, int64_t{o.grpc_memory_mb} << 20};
    go.max_streams = o.grpc_max_streams;
    grpc_server = std::make_unique<GrpcServer>(std::move(env), go);
    if (Status st = grpc_server->Start(); !st.ok()) {
      spdlog::critical("{}", st.message());
      (void)frontend.Stop(std::chrono::milliseconds(0));
      return 1;
    }
    spdlog::info(
        "vecgpu serving gRPC (Vald v1 API, vecgpu.v1.Collections, health, reflection) on {}{} "
        "(Vald collection '{}' unless x-vecgpu-collection names one)",
        grpc_server->endpoint(), grpc_server->tls() ? " with TLS" : "", o.vald_collection);
  }
#else
  if (o.grpc_port != 0) {
    spdlog::info("this build has no gRPC front end (built without VECGPU_WITH_GRPC)");
  }
#endif
#if !VECGPU_HAVE_ETCD
  if (!o.join.empty()) {
    spdlog::critical("join: this build has no etcd client (install golang-etcd-server-dev and "
                     "rebuild: scripts/setup.sh)");
    return 1;
  }
#else
  std::unique_ptr<cluster::AgentServer> agent_api;
  std::unique_ptr<cluster::AgentRegistration> registration;
  if (!o.join.empty()) {
    // The agent API (gateways call the service contract here) on --agent-port, else the
    // advertised port.
    const int agent_port =
        o.agent_port > 0 ? o.agent_port
                         : std::atoi(o.advertise.substr(o.advertise.rfind(':') + 1).c_str());
    agent_api = std::make_unique<cluster::AgentServer>(*front, o.bind_address, agent_port,
                                                       replicator.get(), cluster_tls);
    if (Status st = agent_api->Start(); !st.ok()) {
      spdlog::critical("advertise: {}", st.message());
      return 1;
    }
    cluster::RegistrationOptions ro;
    ro.ttl_seconds = o.lease_ttl_s;
    const std::string id = o.agent_id.empty() ? o.advertise : o.agent_id;
    registration = std::make_unique<cluster::AgentRegistration>(
        *etcd, ro, [&, id] {
          cluster::AgentInfo info;
          info.id = id;
          info.address = o.advertise;
          info.devices.push_back("cpu");
          for (int g : devices.gpus()) info.devices.push_back("gpu:" + std::to_string(g));
          info.free_memory_bytes = AvailableMemoryBytes();
          const int workers = scheduler->workers(WorkClass::kShort) +
                              scheduler->workers(WorkClass::kLong);
          info.load = workers > 0 ? static_cast<double>(scheduler->queued()) / workers : 0;
          info.version = "vecgpu-0.1.0";
          info.api_version = cluster::kAgentApiVersion;
          return info;
        });
    membership.store(registration.get());
    spdlog::info("cluster agent '{}' at {}{}: registering in etcd {} (lease TTL {} s)", id,
                 o.advertise, cluster_tls ? " (mutual TLS)" : "",
                 o.join.front() + (o.join.size() > 1 ? ",..." : ""), o.lease_ttl_s);
  }
#endif
  ready = true;

  int sig = 0;
  for (;;) {
    sigwait(&stop_signals, &sig);
    if (sig != SIGHUP) break;
    const int enabled = devices.Enable(-1);
    spdlog::info("received SIGHUP: {} quarantined GPU(s) re-enabled", enabled);
  }
  spdlog::info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
  const auto start = std::chrono::steady_clock::now();
  ready = false;
  // Long computations stop at their next cancellation point (k-means iterations, IVF scans);
  // queued work is answered "shutting down" instead of run; the front end reads no more
  // requests and sends the answers still due for up to 4 s (a k-means iteration or a
  // search ends well within it; a logged training run may not).
  InterruptAll();
  scheduler->Cancel();
  int abandoned = frontend.Stop(std::chrono::milliseconds(4000));
#if VECGPU_HAVE_GRPC
  // Before the scheduler: running gRPC searches wait on it.
  if (grpc_server) grpc_server->Stop(std::chrono::milliseconds(1000));
#endif
  metrics_server.Stop();  // its gauges read the scheduler, which goes next
#if VECGPU_HAVE_ETCD
  // Leave the cluster now (the lease is revoked: gateways see it at once), after the front
  // ends stopped taking requests; writes still due are refused from here.
  membership.store(nullptr);
  registration.reset();
  if (agent_api) agent_api->Stop(std::chrono::milliseconds(1000));  // before the scheduler
#endif
  // Workers still running a long call (a large train) are not waited for past the deadline:
  // every acknowledged write is in the log already (with --data-dir), and a write still
  // running was never acknowledged.
  auto done = std::async(std::launch::async, [&] {
    dispatch->Shutdown();
    bulk->Shutdown();
    scheduler->Shutdown();
  });
  if (persisted) {
    // Every acknowledged write is in the log. A logged write still running (training is not
    // interrupted: replay must make the same change) gets until 7 s after the signal; the
    // log is synced either way, and a final snapshot, which leaves nothing for the next start
    // to replay, is taken only when the workers are done.
    if (done.wait_until(start + std::chrono::seconds(7)) != std::future_status::ready) {
      Status synced = persisted->Sync();
      spdlog::warn("exiting with long writes still running (never acknowledged; the log {})",
                   synced.ok() ? "is synced" : "failed to sync: " + synced.message());
      spdlog::shutdown();
      std::_Exit(0);
    }
    auto snap = persisted->Snapshot();
    if (snap.ok()) {
      spdlog::info("data-dir {}: final snapshot: {} written, {} unchanged, {:.1f} MB in {:.3f} s",
                   o.data_dir, snap->written, snap->unchanged, snap->bytes / 1e6, snap->seconds);
    } else {
      spdlog::error("data-dir {}: final snapshot failed ({}); the log keeps every write",
                    o.data_dir, snap.status().message());
    }
    persisted.reset();
  } else if (done.wait_for(std::chrono::milliseconds(400)) != std::future_status::ready) {
    spdlog::warn("exiting with requests still running");
    spdlog::shutdown();
    std::_Exit(0);
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start);
  spdlog::info("stopped in {} ms ({} requests abandoned)", ms.count(), abandoned);
  spdlog::shutdown();
  return 0;
}

}  // namespace
}  // namespace vecgpu::server

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "gpu-host") {
    return vecgpu::server::RunGpuHostCommand(argc, argv);
  }
  auto parsed = vecgpu::server::ParseCommandLine(argc, argv, vecgpu::server::BuildInfo());
  if (parsed.healthcheck) {
    return vecgpu::server::RunHealthcheck(parsed.healthcheck_options, std::cout, std::cerr);
  }
  if (parsed.cluster_status) {
#if VECGPU_HAVE_ETCD
    vecgpu::cluster::ClusterStatusOptions co;
    co.etcd = parsed.cluster_etcd;
    co.json = parsed.cluster_json;
    co.etcd_tls = {parsed.cluster_etcd_cert, parsed.cluster_etcd_key, parsed.cluster_etcd_cacert};
    return vecgpu::cluster::RunClusterStatus(co, std::cout, std::cerr);
#else
    std::cerr << "cluster status: this build has no etcd client\n";
    return 1;
#endif
  }
  if (parsed.cluster_drain || parsed.cluster_rebalance) {
#if VECGPU_HAVE_ETCD
    vecgpu::cluster::ClusterMovesOptions mo;
    mo.etcd = parsed.cluster_etcd;
    mo.json = parsed.cluster_json;
    mo.agent = parsed.cluster_agent;
    mo.undo = parsed.cluster_undo;
    mo.wait_s = parsed.cluster_wait_s;
    mo.tolerance = parsed.cluster_tolerance;
    mo.etcd_tls = {parsed.cluster_etcd_cert, parsed.cluster_etcd_key, parsed.cluster_etcd_cacert};
    return parsed.cluster_drain ? vecgpu::cluster::RunClusterDrain(mo, std::cout, std::cerr)
                                : vecgpu::cluster::RunClusterRebalance(mo, std::cout, std::cerr);
#else
    std::cerr << "cluster: this build has no etcd client\n";
    return 1;
#endif
  }
  if (parsed.cluster_backup || parsed.cluster_restore) {
#if VECGPU_HAVE_ETCD
    vecgpu::cluster::ClusterBackupOptions bo;
    bo.etcd = parsed.cluster_etcd;
    bo.etcd_tls = {parsed.cluster_etcd_cert, parsed.cluster_etcd_key, parsed.cluster_etcd_cacert};
    bo.cluster_tls = {parsed.cluster_tls_cert, parsed.cluster_tls_key, parsed.cluster_tls_ca};
    bo.tenant = parsed.cluster_tenant;
    bo.collection = parsed.cluster_collection;
    bo.file = parsed.cluster_file;
    bo.as = parsed.cluster_as;
    bo.replicas = parsed.cluster_replicas;
    bo.wait_s = parsed.cluster_restore_wait_s;
    return parsed.cluster_backup ? vecgpu::cluster::RunClusterBackup(bo, std::cout, std::cerr)
                                 : vecgpu::cluster::RunClusterRestore(bo, std::cout, std::cerr);
#else
    std::cerr << "cluster: this build has no etcd client\n";
    return 1;
#endif
  }
  if (parsed.import_faissx) {
    return vecgpu::server::RunImportFaissx(parsed.import_options, std::cout, std::cerr);
  }
  if (!parsed.serve) {
    if (!parsed.message.empty()) {
      (parsed.exit_code == 0 ? std::cout : std::cerr)
          << parsed.message << (parsed.message.back() == '\n' ? "" : "\n");
    }
    return parsed.exit_code;
  }
  return vecgpu::server::Serve(parsed.options);
}
