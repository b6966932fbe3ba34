#include "server/config.h"

#include "server/config_checks.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

namespace vecgpu::server {
namespace {

std::string EnvName(const std::string& prefix, std::string option) {
  std::transform(option.begin(), option.end(), option.begin(),
                 [](char c) { return c == '-' ? '_' : static_cast<char>(std::toupper(c)); });
  return prefix + option;
}

// Appends "--name=value" for FAISSX_NAME, then VECGPU_NAME (so the latter wins), when set.
void LayerEnvironment(const std::string& name, std::vector<std::string>& layered) {
  for (const char* prefix : {"FAISSX_", "VECGPU_"}) {
    if (const char* env = std::getenv(EnvName(prefix, name).c_str()); env && *env) {
      layered.push_back("--" + name + "=" + env);
    }
  }
}

// Reads the JSON config file into "--name=value" arguments.
StatusOr<std::vector<std::string>> ConfigArgs(const std::string& path, const CLI::App& serve) {
  std::ifstream in(path);
  if (!in) return InvalidArgument("config: cannot read '" + path + "'");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    return InvalidArgument("config: '" + path + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument("config: must hold a JSON object");
  std::vector<std::string> args;
  for (auto& [raw_key, value] : j.items()) {
    std::string key = raw_key;
    std::replace(key.begin(), key.end(), '_', '-');
    if (key == "config" || !serve.get_option_no_throw("--" + key)) {
      return InvalidArgument("config: unknown setting '" + raw_key + "'");
    }
    std::string v = value.is_string() ? value.get<std::string>() : value.dump();
    args.push_back("--" + key + "=" + v);
  }
  return args;
}

}  // namespace

ParsedCommand ParseCommandLine(int argc, const char* const* argv, const std::string& version) {
  ParsedCommand result;
  ServeOptions& o = result.options;
  std::string auth_keys, auth_file, config_path;

  CLI::App app{"vecgpu: a GPU-first, FAISSx-compatible vector search server"};
  app.set_version_flag("--version", version);
  app.require_subcommand(1);
  CLI::App* serve = app.add_subcommand("serve", "Serve FAISS indexes over the FAISSx protocol");
  serve->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  serve->add_option("--config", config_path, "JSON file of settings (keys: flag names)");
  serve->add_option("--port", o.port, "FAISSx (ZeroMQ) port")->capture_default_str();
  serve->add_option("--bind-address", o.bind_address,
                    "Address to bind (default 127.0.0.1 without auth, 0.0.0.0 with auth)");
  serve->add_flag("--allow-unauthenticated-remote", o.allow_unauthenticated_remote,
                  "Allow a non-loopback bind address without --enable-auth");
  serve->add_flag("--enable-auth", o.enable_auth, "Require API keys (all actions but ping)");
  serve->add_option("--auth-keys", auth_keys, "API keys as key1:tenant1,key2:tenant2");
  serve->add_option("--auth-file", auth_file, "JSON file {\"key\": \"tenant\", \"key2\": {\"tenant\": \"ops\", \"role\": \"admin\"}}");
  serve->add_option("--log-level", o.log_level, "trace|debug|info|warning|error|critical")
      ->capture_default_str();
  serve->add_option("--log-file", o.log_file, "Also log to this file");
  serve->add_option(
      "--data-dir", o.data_dir,
      "Directory indexes persist in (write-ahead log and snapshots); none: memory only");
  serve->add_option("--durability", o.durability, "sync (fsync before acknowledging) or async")
      ->capture_default_str();
  serve->add_flag("--recover-from-last-good", o.recover_from_last_good,
                  "On damage in the data directory, serve the last good state (damaged files are "
                  "kept as *.damaged) instead of refusing to start");
  serve
      ->add_option("--sync-interval-ms", o.sync_interval_ms,
                   "With --durability async: milliseconds between fsyncs (what a crash can lose)")
      ->capture_default_str();
  serve
      ->add_option("--snapshot-log-mb", o.snapshot_log_mb,
                   "Snapshot once the write-ahead log has grown this many MiB, and as much as the "
                   "snapshots hold (0: never by size)")
      ->capture_default_str();
  serve
      ->add_option("--snapshot-interval-s", o.snapshot_interval_s,
                   "Snapshot at least this often while indexes change (0: never by time)")
      ->capture_default_str();
  serve->add_option("--gpus", o.devices.gpus, "GPUs to use: all, none, or a list such as 0,1")
      ->capture_default_str();
  serve
      ->add_option("--gpu-memory-fraction", o.devices.memory_fraction,
                   "Share of each GPU's memory collections may take (the rest is left to "
                   "FAISS's temporary memory)")
      ->capture_default_str();
  serve
      ->add_option("--gpu-reserve-mb", o.gpu_reserve_mb,
                   "MiB of each GPU's memory, as the device measures it free, that placement "
                   "leaves free")
      ->capture_default_str();
  serve
      ->add_option("--gpu-max-faults", o.devices.max_faults,
                   "Faults of a GPU (crashes, CUDA errors, hangs of its GPU host process) within "
                   "--gpu-fault-window-s that quarantine it")
      ->capture_default_str();
  serve
      ->add_option("--gpu-fault-window-s", o.devices.fault_window_s,
                   "Seconds over which a GPU's faults are counted")
      ->capture_default_str();
  serve
      ->add_option("--gpu-quarantine-s", o.devices.quarantine_s,
                   "Seconds a quarantined GPU stays out of use (0: until SIGHUP re-enables it)")
      ->capture_default_str();
  serve
      ->add_option("--fake-gpus", o.fake_gpus,
                   "Testing: GPUs that exist only in GPU host processes, MiB each (e.g. "
                   "1024,1024); their copies are CPU indexes")
      ->capture_default_str();
  serve
      ->add_option("--gpu-workers", o.scheduler.gpu_workers,
                   "Workers per GPU running the searches and adds of the collections it serves")
      ->capture_default_str();
  serve
      ->add_option("--gpu-max-copies", o.devices.copies.max_copies,
                   "Most GPU copies of one hot index, the first included: an index whose queue "
                   "stays deep gets a copy on another GPU with room (0: one per GPU; 1: none)")
      ->capture_default_str();
  serve
      ->add_option("--gpu-temp-memory-mb", o.gpu_temp_memory_mb,
                   "MiB of FAISS's temporary memory on each GPU, 0..1536 (searches needing more "
                   "allocate the rest on each call)")
      ->capture_default_str();
  serve->add_option("--io-threads", o.io_threads, "ZeroMQ I/O threads")->capture_default_str();
  serve
      ->add_option("--poll-spin-us", o.poll_spin_us,
                   "Microseconds the socket thread polls for replies before sleeping (0: never)")
      ->capture_default_str();
  serve
      ->add_option("--metrics-port", o.metrics_port,
                   "HTTP port for /metrics, /healthz and /readyz (0: off)")
      ->capture_default_str();
  serve->add_option("--metrics-address", o.metrics_address, "Address the metrics listener binds")
      ->capture_default_str();
  serve->add_option("--metrics-token", o.metrics_token,
                    "Bearer token /metrics requires (none: open; /healthz and /readyz stay open)");
  serve->add_option("--grpc-port", o.grpc_port, "gRPC port (Vald v1 API, vecgpu.v1; 0: off)")
      ->capture_default_str();
  serve
      ->add_option("--grpc-max-threads", o.grpc_max_threads,
                   "Threads serving unary gRPC calls while they work (streams hold none); past "
                   "it: RESOURCE_EXHAUSTED")
      ->capture_default_str();
  serve
      ->add_option("--grpc-max-streams", o.grpc_max_streams,
                   "gRPC streams open at once, all connections; past it: RESOURCE_EXHAUSTED")
      ->capture_default_str();
  serve
      ->add_option("--grpc-max-streams-per-connection", o.grpc_max_streams_per_connection,
                   "gRPC calls one connection may have open at once")
      ->capture_default_str();
  serve->add_option("--grpc-memory-mb", o.grpc_memory_mb, "MiB gRPC may take for its buffers")
      ->capture_default_str();
  serve->add_option("--grpc-tls-cert", o.grpc_tls_cert, "PEM certificate chain for gRPC TLS");
  serve->add_option("--grpc-tls-key", o.grpc_tls_key, "PEM private key for gRPC TLS");
  serve->add_option("--grpc-tls-client-ca", o.grpc_tls_client_ca,
                    "PEM CA: gRPC clients must present a certificate it signed");
  serve
      ->add_option("--join", o.join,
                   "etcd client URLs (comma-separated): run as a cluster agent registered there")
      ->delimiter(',');
  serve
      ->add_option("--etcd", o.etcd,
                   "etcd client URLs (comma-separated) a gateway coordinates through "
                   "(vecgpu gateway)")
      ->delimiter(',');
  serve
      ->add_option("--replication-log-mb", o.replication_log_mb,
                   "An agent's memory (MB) for records its replicas may still need; a replica "
                   "behind by more gets a whole copy")
      ->capture_default_str();
  serve
      ->add_option("--max-copies", o.max_copies,
                   "Copies at once per agent: whole copies an agent sends at once; replicas "
                   "a gateway builds at once with an agent as source or target")
      ->capture_default_str();
  serve
      ->add_option("--copy-bandwidth-mb", o.copy_bandwidth_mb,
                   "An agent's MB/s for copies and for records to replicas being built (0: no "
                   "cap)")
      ->capture_default_str();
  serve
      ->add_option("--rereplicate-after", o.rereplicate_after_s,
                   "Seconds a shard may have fewer than R in-sync replicas before the gateway "
                   "builds a new one on another agent (vecgpu gateway)")
      ->capture_default_str();
  serve
      ->add_option("--rebalance-tolerance", o.rebalance_tolerance,
                   "How uneven the agents' data may get ((max - min) / mean) before the "
                   "gateway moves replicas; 0: only drains move them (vecgpu gateway)")
      ->capture_default_str();
  serve
      ->add_option("--replicas", o.replicas,
                   "Copies of each shard of a new collection unless its create says (vecgpu "
                   "gateway)")
      ->capture_default_str();
  serve->add_flag("--allow-partial-results", o.allow_partial_results,
                  "Searches answer from the shards that can when some cannot, naming the "
                  "missing ones, instead of failing (vecgpu gateway)");
  serve->add_option("--advertise", o.advertise,
                    "HOST:PORT gateways reach this agent at (with --join)");
  serve->add_option("--agent-port", o.agent_port,
                    "Port the agent API listens on (default: the --advertise port; differs "
                    "behind a proxy or a NAT)");
  serve->add_option("--cluster-tls-cert", o.cluster_tls_cert,
                    "PEM certificate chain of this agent or gateway for mutual TLS between "
                    "gateways and agents (names the --advertise host)");
  serve->add_option("--cluster-tls-key", o.cluster_tls_key,
                    "PEM private key of --cluster-tls-cert");
  serve->add_option("--cluster-tls-ca", o.cluster_tls_ca,
                    "PEM CA every gateway's and agent's certificate must lead to");
  serve->add_option("--etcd-cacert", o.etcd_cacert,
                    "PEM CA etcd's certificate must lead to, for https:// etcd URLs (none: "
                    "the system's roots)");
  serve->add_option("--etcd-cert", o.etcd_cert,
                    "PEM client certificate presented to etcd (its --client-cert-auth)");
  serve->add_option("--etcd-key", o.etcd_key, "PEM private key of --etcd-cert");
  serve->add_option("--agent-id", o.agent_id,
                    "This agent's id in the cluster (default: the --advertise address)");
  serve
      ->add_option("--lease-ttl", o.lease_ttl_s,
                   "Seconds of the agent's etcd lease; unrenewed for this long it refuses writes")
      ->capture_default_str();
  serve
      ->add_option("--vald-collection", o.vald_collection,
                   "Collection of Vald calls without x-vecgpu-collection metadata")
      ->capture_default_str();
  serve
      ->add_option("--vald-dimension", o.vald_dimension,
                   "Dimension of a collection a Vald insert creates (0: the first vector's)")
      ->capture_default_str();
  serve
      ->add_option("--vald-index-type", o.vald_index_type,
                   "Index type of a collection a Vald insert creates (wrapped in IDMap2)")
      ->capture_default_str();
  serve->add_option("--vald-metric", o.vald_metric, "Metric of such a collection: L2 or IP")
      ->capture_default_str();
  Limits& l = o.limits;
  serve->add_option("--max-request-bytes", l.max_request_bytes, "Largest request")
      ->capture_default_str();
  serve
      ->add_option("--max-message-bytes", l.max_message_bytes,
                   "Socket hard cap; larger messages drop the connection (0: 2x request + 1 MiB)")
      ->capture_default_str();
  serve->add_option("--max-depth", l.max_depth, "Deepest msgpack nesting")->capture_default_str();
  serve
      ->add_option("--max-container-elements", l.max_container_elements,
                   "Most elements of one msgpack array or map")
      ->capture_default_str();
  serve->add_option("--max-dimension", l.max_dimension, "Largest vector dimension")
      ->capture_default_str();
  serve->add_option("--max-k", l.max_k, "Largest k")->capture_default_str();
  serve->add_option("--max-add-vectors", l.max_add_vectors, "Vectors per add")
      ->capture_default_str();
  serve->add_option("--max-query-vectors", l.max_query_vectors, "Query vectors per search")
      ->capture_default_str();
  serve
      ->add_option("--max-search-results", l.max_search_results,
                   "Results per search (queries x k, or range hits)")
      ->capture_default_str();
  serve->add_option("--max-train-vectors", l.max_train_vectors, "Vectors per train call")
      ->capture_default_str();
  serve
      ->add_option("--max-fetch-vectors", l.max_fetch_vectors,
                   "Vectors per reconstruct_n/get_vectors")
      ->capture_default_str();
  serve
      ->add_option("--max-collections-per-tenant", l.max_collections_per_tenant,
                   "Indexes one tenant may own")
      ->capture_default_str();
  serve
      ->add_option("--query-threads", o.scheduler.query_threads,
                   "Workers for searches and other short work (0: 2x cores, at least 4)")
      ->capture_default_str();
  serve
      ->add_option("--write-threads", o.scheduler.write_threads,
                   "Workers for long work: training, large adds, merges, clustering")
      ->capture_default_str();
  serve
      ->add_option("--dispatch-threads", o.scheduler.dispatch_threads,
                   "Threads decoding requests (0: cores, at least 2)")
      ->capture_default_str();
  serve
      ->add_option("--max-queued", o.scheduler.max_queued,
                   "Requests queued, all tenants, before clients get BUSY")
      ->capture_default_str();
  serve
      ->add_option("--max-queued-per-tenant", o.scheduler.max_queued_per_tenant,
                   "Requests one tenant may have queued before its clients get BUSY")
      ->capture_default_str();
  serve
      ->add_option("--max-batch-rows", o.scheduler.max_batch_rows,
                   "Query rows one batched search may gather (1: no batching)")
      ->capture_default_str();
  serve
      ->add_option("--long-add-rows", o.scheduler.long_add_rows,
                   "Adds of at least this many vectors run on the long workers")
      ->capture_default_str();
  serve
      ->add_option("--long-worker-nice", o.scheduler.long_worker_nice,
                   "Nice value of the long workers' threads, so long work yields the cores to "
                   "searches (0: none)")
      ->capture_default_str();
  serve
      ->add_option("--long-workers-per-tenant", o.scheduler.long_workers_per_tenant,
                   "Long workers one tenant may hold while another tenant's long work waits "
                   "(0: an even share)")
      ->capture_default_str();
  serve
      ->add_option("--max-work-cost", l.max_work_cost,
                   "Largest estimated cost of one clustering, training or recluster (rows x "
                   "clusters x iterations x dimension); larger requests are refused up front")
      ->capture_default_str();
  serve
      ->add_option("--tenant-max-vectors", o.default_quota.max_vectors,
                   "Vectors one tenant may store (0: no limit; the auth file may set a tenant's)")
      ->capture_default_str();
  serve
      ->add_option("--tenant-max-bytes", o.default_quota.max_bytes,
                   "Estimated index memory one tenant may hold, in bytes (0: no limit)")
      ->capture_default_str();
  serve
      ->add_option("--tenant-max-collections", o.default_quota.max_collections,
                   "Collections one tenant may own (0: --max-collections-per-tenant only)")
      ->capture_default_str();
  serve
      ->add_option("--tenant-requests-per-second", o.default_quota.requests_per_second,
                   "Requests a second per tenant, a token bucket of one second (0: no limit)")
      ->capture_default_str();
  serve
      ->add_option("--tenant-max-inflight", o.default_quota.max_inflight,
                   "Requests one tenant may have in flight (0: no limit)")
      ->capture_default_str();
  serve
      ->add_option("--max-inflight-mb", o.max_inflight_mb,
                   "MiB of requests received and not yet answered, all tenants")
      ->capture_default_str();
  serve
      ->add_option("--max-tenant-inflight-mb", o.max_tenant_inflight_mb,
                   "MiB of one tenant's requests received and not yet answered")
      ->capture_default_str();
  serve
      ->add_option("--max-connection-inflight-mb", o.max_connection_inflight_mb,
                   "MiB of one connection's requests received and not yet answered")
      ->capture_default_str();
  serve
      ->add_option("--max-unauthenticated-mb", o.max_unauthenticated_mb,
                   "MiB of requests received and not yet authenticated (messages over 64 KiB)")
      ->capture_default_str();
  serve
      ->add_option("--request-timeout-ms", o.scheduler.request_timeout_ms,
                   "Requests still queued after this long get TIMEOUT (0: never); "
                   "a request's timeout_ms overrides it")
      ->capture_default_str();

  ImportFaissxOptions& io = result.import_options;
  CLI::App* import_cmd = app.add_subcommand(
      "import-faissx", "Load a FAISSx server's data directory into vecgpu's data directory");
  import_cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  import_cmd
      ->add_option("dir", io.faissx_dir, "The FAISSx server's --data-dir (<id>.faiss, <id>.json)")
      ->required();
  import_cmd
      ->add_option("--tenant", io.tenant,
                   "Tenant that owns the imported indexes (\"default\": clients without auth)")
      ->required();
  import_cmd->add_option(
      "--data-dir", io.data_dir,
      "vecgpu's data directory, as for serve (env FAISSX_DATA_DIR, VECGPU_DATA_DIR)");

  CLI::App* cluster_cmd = app.add_subcommand("cluster", "Inspect a vecgpu cluster in etcd");
  CLI::App* status_cmd = cluster_cmd->add_subcommand(
      "status", "Agents, collections, shards, primaries and in-sync sets, from etcd");
  cluster_cmd->require_subcommand(1);
  status_cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  // One string, split below: a vector option would gather VECGPU_ETCD's URLs and the flag's.
  std::string status_etcd;
  status_cmd->add_option("--etcd", status_etcd, "etcd client URLs (comma-separated)")->required();
  status_cmd->add_flag("--json", result.cluster_json, "Print JSON");
  CLI::App* drain_cmd = cluster_cmd->add_subcommand(
      "drain", "Move every replica off an agent before maintenance (the placer does it)");
  drain_cmd->add_option("agent", result.cluster_agent, "The agent's id")->required();
  drain_cmd
      ->add_option("--etcd", result.cluster_etcd, "etcd client URLs (comma-separated)")
      ->delimiter(',')
      ->required();
  drain_cmd->add_flag("--undo", result.cluster_undo,
                      "Let the agent take replicas again (rebalancing brings some back)");
  drain_cmd
      ->add_option("--wait", result.cluster_wait_s,
                   "Wait up to this many seconds until the agent holds nothing (exit 3 if not)")
      ->capture_default_str();
  CLI::App* rebalance_cmd = cluster_cmd->add_subcommand(
      "rebalance", "Show the placer's rebalancing plan (--dry-run); the placer carries it out");
  rebalance_cmd
      ->add_option("--etcd", result.cluster_etcd, "etcd client URLs (comma-separated)")
      ->delimiter(',')
      ->required();
  rebalance_cmd->add_flag("--dry-run", result.cluster_dry_run, "Print the plan, change nothing")
      ->required();
  rebalance_cmd
      ->add_option("--tolerance", result.cluster_tolerance,
                   "The gateways' --rebalance-tolerance ((max - min) / mean)")
      ->capture_default_str();
  rebalance_cmd->add_flag("--json", result.cluster_json, "Print JSON");
  CLI::App* backup_cmd = cluster_cmd->add_subcommand(
      "backup", "Copy one collection, shard by shard, from its in-sync replicas to a file");
  backup_cmd->add_option("collection", result.cluster_collection, "The collection")->required();
  backup_cmd->add_option("--tenant", result.cluster_tenant, "The collection's tenant")->required();
  backup_cmd->add_option("--out", result.cluster_file, "The file to write (FILE.tmp, renamed)")
      ->required();
  CLI::App* restore_cmd = cluster_cmd->add_subcommand(
      "restore", "Create a collection from a `cluster backup` file (refused if it exists)");
  restore_cmd->add_option("--from", result.cluster_file, "The backup file")->required();
  restore_cmd->add_option("--tenant", result.cluster_tenant,
                          "The tenant to restore into (default: the backup's)");
  restore_cmd->add_option("--as", result.cluster_as, "Another name (default: the backup's)");
  restore_cmd
      ->add_option("--replicas", result.cluster_replicas,
                   "Replicas of each shard (default: the backup's)")
      ->check(CLI::Range(1, 64));
  restore_cmd
      ->add_option("--wait", result.cluster_restore_wait_s,
                   "Wait up to this many seconds for every shard's replicas to be in sync "
                   "(exit 3 if not)")
      ->capture_default_str();
  for (CLI::App* cmd : {backup_cmd, restore_cmd}) {
    cmd->add_option("--etcd", result.cluster_etcd, "etcd client URLs (comma-separated)")
        ->delimiter(',')
        ->required();
    cmd->add_option("--cluster-tls-cert", result.cluster_tls_cert,
                    "PEM certificate chain presented to the agents (mutual TLS, as serve's)");
    cmd->add_option("--cluster-tls-key", result.cluster_tls_key,
                    "PEM private key of --cluster-tls-cert");
    cmd->add_option("--cluster-tls-ca", result.cluster_tls_ca,
                    "PEM CA the agents' certificates must lead to");
  }
  for (CLI::App* cmd : {status_cmd, drain_cmd, rebalance_cmd, backup_cmd, restore_cmd}) {
    cmd->add_option("--etcd-cacert", result.cluster_etcd_cacert,
                    "PEM CA etcd's certificate must lead to (https:// URLs)");
    cmd->add_option("--etcd-cert", result.cluster_etcd_cert,
                    "PEM client certificate presented to etcd");
    cmd->add_option("--etcd-key", result.cluster_etcd_key, "PEM private key of --etcd-cert");
  }

  HealthcheckOptions& ho = result.healthcheck_options;
  CLI::App* health_cmd = app.add_subcommand(
      "healthcheck", "Ask a running server's HTTP listener whether it is alive (exit 0) or not");
  health_cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  health_cmd->add_flag("--ready", ho.ready, "Ask /readyz (serving) instead of /healthz (alive)");
  health_cmd
      ->add_option("--metrics-port", ho.port,
                   "The server's --metrics-port (env VECGPU_METRICS_PORT, FAISSX_METRICS_PORT)")
      ->capture_default_str();
  health_cmd
      ->add_option("--metrics-address", ho.address,
                   "The server's --metrics-address (0.0.0.0 is reached through 127.0.0.1)")
      ->capture_default_str();
  health_cmd->add_option("--timeout-ms", ho.timeout_ms, "How long to wait for the answer")
      ->check(CLI::Range(1, 600'000))
      ->capture_default_str();

  // Layer the sources: config file, then environment, then the command line (last wins).
  std::vector<std::string> cli(argv + 1, argv + argc);
  // `vecgpu gateway` is serve's front ends over the cluster: serve's flags, parsed as serve's.
  if (!cli.empty() && cli[0] == "gateway") {
    cli[0] = "serve";
    o.gateway = true;
  }
  std::vector<std::string> layered;
  const bool is_serve = !cli.empty() && cli[0] == "serve";
  const bool is_import = !cli.empty() && cli[0] == "import-faissx";
  const bool is_health = !cli.empty() && cli[0] == "healthcheck";
  // `cluster status` takes etcd's URLs and TLS files from the environment too (VECGPU_ETCD,
  // VECGPU_ETCD_CACERT, ...: a gateway's container already has them).
  const bool is_status = cli.size() >= 2 && cli[0] == "cluster" && cli[1] == "status";
  if (is_status) {
    for (const char* name : {"etcd", "etcd-cacert", "etcd-cert", "etcd-key"}) {
      LayerEnvironment(name, layered);
    }
  }
  if (is_health) {
    for (const char* name : {"metrics-port", "metrics-address"}) LayerEnvironment(name, layered);
  }
  if (is_import) LayerEnvironment("data-dir", layered);
  if (is_serve) {
    for (size_t i = 1; i < cli.size(); ++i) {
      if (cli[i] == "--config" && i + 1 < cli.size()) config_path = cli[i + 1];
      if (cli[i].rfind("--config=", 0) == 0) config_path = cli[i].substr(9);
    }
    if (config_path.empty()) {
      if (const char* env = std::getenv("VECGPU_CONFIG")) config_path = env;
    }
    if (!config_path.empty()) {
      auto args = ConfigArgs(config_path, *serve);
      if (!args.ok()) {
        result.exit_code = 2;
        result.message = args.status().message();
        return result;
      }
      layered.insert(layered.end(), args->begin(), args->end());
    }
    for (const CLI::Option* opt : serve->get_options()) {
      std::string name = opt->get_single_name();
      if (name.empty() || name == "help" || name == "config") continue;
      LayerEnvironment(name, layered);
    }
  }
  std::vector<std::string> args = {argv[0]};
  if (is_serve || is_import || is_health) {
    args.push_back(cli[0]);
    args.insert(args.end(), layered.begin(), layered.end());
    args.insert(args.end(), cli.begin() + 1, cli.end());
  } else if (is_status) {
    args.insert(args.end(), {cli[0], cli[1]});
    args.insert(args.end(), layered.begin(), layered.end());
    args.insert(args.end(), cli.begin() + 2, cli.end());
  } else {
    args.insert(args.end(), cli.begin(), cli.end());
  }
  std::vector<const char*> cargs;
  for (const auto& a : args) cargs.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(cargs.size()), cargs.data());
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    result.exit_code = app.exit(e, out, err);
    result.message = out.str() + err.str();
    if (is_import && result.exit_code != 0) result.exit_code = 2;  // usage errors exit 2
    return result;
  }
  if (status_cmd->parsed()) {
    for (size_t from = 0; from <= status_etcd.size();) {
      const size_t comma = std::min(status_etcd.find(',', from), status_etcd.size());
      if (comma > from) result.cluster_etcd.push_back(status_etcd.substr(from, comma - from));
      from = comma + 1;
    }
    Status st = CheckEtcdTls(result.cluster_etcd, result.cluster_etcd_cacert,
                             result.cluster_etcd_cert, result.cluster_etcd_key);
    if (!st.ok()) {
      result.exit_code = 2;
      result.message = "cluster status: " + st.message();
      return result;
    }
    result.cluster_status = true;
    return result;
  }
  if (drain_cmd->parsed() || rebalance_cmd->parsed()) {
    Status st = CheckEtcdTls(result.cluster_etcd, result.cluster_etcd_cacert,
                             result.cluster_etcd_cert, result.cluster_etcd_key);
    if (!st.ok()) {
      result.exit_code = 2;
      result.message = std::string("cluster ") + (drain_cmd->parsed() ? "drain" : "rebalance") +
                       ": " + st.message();
      return result;
    }
    (drain_cmd->parsed() ? result.cluster_drain : result.cluster_rebalance) = true;
    return result;
  }
  if (backup_cmd->parsed() || restore_cmd->parsed()) {
    const std::string what = backup_cmd->parsed() ? "cluster backup: " : "cluster restore: ";
    Status st = CheckEtcdTls(result.cluster_etcd, result.cluster_etcd_cacert,
                             result.cluster_etcd_cert, result.cluster_etcd_key);
    const int tls = !result.cluster_tls_cert.empty() + !result.cluster_tls_key.empty() +
                    !result.cluster_tls_ca.empty();
    if (st.ok() && tls != 0 && tls != 3) {
      st = InvalidArgument("cluster-tls-cert, cluster-tls-key, cluster-tls-ca: all three or none");
    }
    if (!st.ok()) {
      result.exit_code = 2;
      result.message = what + st.message();
      return result;
    }
    (backup_cmd->parsed() ? result.cluster_backup : result.cluster_restore) = true;
    return result;
  }
  if (health_cmd->parsed()) {
    if (ho.port < 1 || ho.port > 65535) {
      result.exit_code = 2;
      result.message = "healthcheck: --metrics-port must be within 1..65535 (0 means the "
                       "server has no HTTP listener to ask)";
      return result;
    }
    result.healthcheck = true;
    return result;
  }
  if (import_cmd->parsed()) {
    if (io.tenant.empty()) {
      result.exit_code = 2;
      result.message = "import-faissx: --tenant must not be empty";
      return result;
    }
    if (io.data_dir.empty()) {
      result.exit_code = 2;
      result.message =
          "import-faissx: --data-dir is required (or FAISSX_DATA_DIR / VECGPU_DATA_DIR)";
      return result;
    }
    result.import_faissx = true;
    return result;
  }
  Status st = FinishOptions(o, auth_keys, auth_file);
  if (!st.ok()) {
    result.exit_code = 2;
    result.message = st.message();
    return result;
  }
  result.serve = true;
  return result;
}

}  // namespace vecgpu::server
