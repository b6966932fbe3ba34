#pragma once

#include <string>
#include <vector>

#include "core/device/device_manager.h"
#include "core/options.h"
#include "core/util/status.h"
#include "core/ingress/ingress_budget.h"
#include "server/auth.h"
#include "server/http/healthcheck.h"

namespace vecgpu::server {

// Everything `vecgpu serve` is configured with, merged once at start-up from, in rising
// priority: defaults < config file (--config, JSON) < environment (FAISSX_<NAME>, then
// VECGPU_<NAME>) < command-line flags. Immutable after ParseServeOptions.
struct ServeOptions {
  // Port of the FAISSx (ZeroMQ) front end. Default: 45678.
  int port = 45678;
  // Address to bind. Default: 127.0.0.1 without auth, 0.0.0.0 with auth.
  std::string bind_address;
  // Serve on a non-loopback address without auth. Default: false.
  bool allow_unauthenticated_remote = false;
  // Require an API key on every request but ping. Default: false.
  bool enable_auth = false;
  // API key -> tenant, from --auth-keys and --auth-file.
  AuthKeys auth_keys;
  // Per-tenant quotas: the defaults (flags --tenant-*) and tenants' own from the auth file.
  Quota default_quota;
  std::map<std::string, Quota> tenant_quotas;
  // Keys with the admin role (the auth file's {"tenant": ..., "role": "admin"} entries).
  AdminKeys admin_keys;
  // trace, debug, info, warning, error, critical (FAISSx's upper-case names too). Default: info.
  std::string log_level = "info";
  // Log to this file as well as stderr. Default: none.
  std::string log_file;
  // GPUs to serve from ("all", "none" or a list "0,1") and their memory budget.
  DeviceOptions devices;
  // ZeroMQ I/O threads. Default: 1.
  int io_threads = 1;
  // How long the FAISSx socket thread polls for replies before sleeping while requests are
  // in flight (microseconds; 0: never). Default: 250.
  int poll_spin_us = 250;
  // Port of the HTTP listener for /metrics, /healthz and /readyz; 0 turns it off.
  // Default: 45679.
  int metrics_port = 45679;
  // Address the metrics listener binds. Default: 127.0.0.1 (it serves no data, but exposing it
  // is a choice to make).
  std::string metrics_address = "127.0.0.1";
  // A bearer token /metrics requires (it names tenants in labels); empty: none. /healthz and
  // /readyz stay open. Default: none.
  std::string metrics_token;
  // Where indexes persist (empty: in memory only), and when a write counts as durable:
  // "sync" (after an fsync, shared by concurrent writers) or "async" (an fsync every
  // sync_interval_ms; a crash can lose that window). Defaults: none, sync, 100.
  std::string data_dir;
  std::string durability = "sync";
  int sync_interval_ms = 100;
  // Background snapshots: after this many MiB of log (0: never by size), and at least every
  // this many seconds while anything changed (0: never by time). Defaults: 256, 600.
  int snapshot_log_mb = 256;
  int snapshot_interval_s = 600;
  // On damage inside the log, serve the state up to the last good record (setting the rest
  // aside as *.damaged) instead of refusing to start. Default: false.
  bool recover_from_last_good = false;
  // Port of the gRPC front end (the Vald v1 API and vecgpu.v1.Collections) on bind_address;
  // 0 turns it off. Ignored by builds without gRPC. Default: 8081.
  int grpc_port = 8081;
  // TLS for the gRPC port: a PEM certificate chain and its private key (both or neither), and
  // a PEM CA whose certificates clients must present (needs the first two). Default: none
  // (plaintext).
  std::string grpc_tls_cert;
  std::string grpc_tls_key;
  std::string grpc_tls_client_ca;
  // gRPC's bounds: threads serving calls (an open stream holds one), calls open on one
  // connection, and memory for its buffers. Defaults: 256, 32, 1024 MiB.
  int grpc_max_threads = 256;
  int grpc_max_streams_per_connection = 32;
  int64_t grpc_max_streams = 10'000;
  int grpc_memory_mb = 1024;
  // Cluster agent (issue [2/5]): etcd's client URLs (empty: a single node, no cluster), the
  // host:port gateways reach this agent at, its id in the cluster (default: the advertised
  // address) and its membership lease's TTL in seconds. An agent that cannot renew its lease
  // for a TTL refuses writes until it registers again. Defaults: none, none, "", 10.
  std::vector<std::string> join;
  // `vecgpu gateway`: the same front ends over the cluster's agents (no local indexes), with
  // etcd's client URLs in `etcd`.
  bool gateway = false;
  std::vector<std::string> etcd;
  // `vecgpu gateway`: replicas of each shard of a new collection unless its create says (R),
  // and whether searches answer from the shards that can when some cannot (naming the
  // missing ones) instead of failing UNAVAILABLE. Defaults: 1, false.
  int replicas = 1;
  bool allow_partial_results = false;
  std::string advertise;
  // The port the agent API listens on (on --bind); 0: the advertised one. Differs where the
  // advertised address is a proxy's, a NAT's or a Service's.
  int agent_port = 0;
  std::string agent_id;
  int lease_ttl_s = 10;
  // An agent's memory for records its replicas may still need (MB over all collections); a
  // replica behind by more gets a whole copy. Default: 256.
  int replication_log_mb = 256;
  // Issue [3/5]. Copies at once per agent: on an agent, whole copies it sends at once; on a
  // gateway (the placer), replicas being built with the agent as source or target. An
  // agent's bytes per second for copies and for records to replicas being built (MB; 0: no
  // cap). A gateway's seconds a shard may stay below R in-sync replicas before a new replica
  // is built elsewhere, and how uneven (max - min over the mean of the agents' bytes) the
  // placement may get before it moves replicas (0: never by itself; draining still moves).
  // Defaults: 2, 100, 60, 0.2.
  int max_copies = 2;
  // MiB of each GPU's measured free memory placement leaves free (DeviceOptions::reserve_bytes).
  int gpu_reserve_mb = 256;
  // Testing and demonstrations: fake GPUs of these sizes (MiB, "1024,1024"), served by GPU
  // host processes whose copies are CPU indexes. Default: none (the real GPUs).
  std::string fake_gpus;
  // MiB of FAISS's temporary memory on each GPU (DeviceOptions::temp_memory_bytes), 0..1536.
  int gpu_temp_memory_mb = 1536;
  int copy_bandwidth_mb = 100;
  double rereplicate_after_s = 60;
  double rebalance_tolerance = 0.2;
  // Mutual TLS on the cluster's links (an agent's API, gateway -> agent, agent -> agent): this
  // member's PEM certificate chain and key, and the cluster's CA (all three or none; an agent
  // or a gateway only). Read again every 2 s (cluster/security/tls.h). Default: none
  // (plaintext).
  std::string cluster_tls_cert;
  std::string cluster_tls_key;
  std::string cluster_tls_ca;
  // TLS to etcd, for https:// URLs in --join/--etcd: the CA etcd's certificate must lead to
  // (none: the system's roots) and a client certificate and key (both or neither; etcd's
  // --client-cert-auth). Default: none.
  std::string etcd_cacert;
  std::string etcd_cert;
  std::string etcd_key;
  // The collection a Vald call reaches when it names none (metadata x-vecgpu-collection).
  // Default: "default".
  std::string vald_collection = "default";
  // How a Vald Insert/Upsert creates a missing collection: dimension (0: the first vector's
  // length), index type (a FAISSx type or FAISS factory string, wrapped in an IDMap2 so string
  // ids work) and metric. Defaults: 0, "Flat", "L2".
  int vald_dimension = 0;
  std::string vald_index_type = "Flat";
  std::string vald_metric = "L2";
  // Request bytes received and not yet answered: all requests, one tenant's, one
  // connection's, and requests not yet authenticated. Defaults: 2048, 1024, 512, 256 MiB.
  int max_inflight_mb = 2048;
  int max_tenant_inflight_mb = 1024;
  int max_connection_inflight_mb = 512;
  int max_unauthenticated_mb = 256;
  Limits limits;
  SchedulerOptions scheduler;

  IngressOptions ingress() const {
    IngressOptions i;
    i.max_inflight_bytes = int64_t{max_inflight_mb} << 20;
    i.max_tenant_inflight_bytes = int64_t{max_tenant_inflight_mb} << 20;
    i.max_connection_inflight_bytes = int64_t{max_connection_inflight_mb} << 20;
    i.max_unauthenticated_bytes = int64_t{max_unauthenticated_mb} << 20;
    return i;
  }
};

// What `vecgpu import-faissx` is given (server/import_faissx.h).
struct ImportFaissxOptions {
  // The FAISSx server's data directory (its --data-dir): <id>.faiss and <id>.json files.
  std::string faissx_dir;
  // The tenant that owns the imported indexes ("default": what clients get without auth).
  std::string tenant;
  // vecgpu's data directory (as `serve --data-dir`); from FAISSX_DATA_DIR / VECGPU_DATA_DIR
  // when not given.
  std::string data_dir;
};

// Result of parsing the command line: options to serve with, options to import with, or a
// message to print and an exit code (help, version, or an error).
struct ParsedCommand {
  bool serve = false;
  ServeOptions options;
  bool import_faissx = false;
  ImportFaissxOptions import_options;
  bool healthcheck = false;
  HealthcheckOptions healthcheck_options;
  // `vecgpu cluster status --etcd URL[,URL] [--json]`, with etcd's TLS as serve's
  // --etcd-cacert, --etcd-cert and --etcd-key.
  bool cluster_status = false;
  std::vector<std::string> cluster_etcd;
  std::string cluster_etcd_cacert;
  std::string cluster_etcd_cert;
  std::string cluster_etcd_key;
  bool cluster_json = false;
  // `vecgpu cluster drain AGENT [--undo] [--wait S]`, `vecgpu cluster rebalance --dry-run
  // [--tolerance X]` (issue [3/5]).
  bool cluster_drain = false;
  bool cluster_rebalance = false;
  std::string cluster_agent;
  bool cluster_undo = false;
  double cluster_wait_s = 0;
  bool cluster_dry_run = false;
  double cluster_tolerance = 0.2;
  // `vecgpu cluster backup COLLECTION --tenant T --out FILE` and `vecgpu cluster restore
  // --from FILE [--tenant T] [--as NAME] [--replicas R] [--wait S]`
  // (cluster/cli/cluster_backup.h), reaching the agents with --cluster-tls-cert, -key and -ca
  // (all three or none).
  bool cluster_backup = false;
  bool cluster_restore = false;
  std::string cluster_tenant;
  std::string cluster_collection;
  std::string cluster_file;
  std::string cluster_as;
  int cluster_replicas = 0;
  double cluster_restore_wait_s = 300;
  std::string cluster_tls_cert;
  std::string cluster_tls_key;
  std::string cluster_tls_ca;
  int exit_code = 0;
  std::string message;
};

// Parses `vecgpu [--version] serve [flags]` (or `gateway [flags]`: serve's flags plus --etcd) with the environment and config file merged in, or
// `vecgpu import-faissx DIR --tenant T [--data-dir D]`, or `vecgpu healthcheck [--ready]`.
// `version`: what --version prints.
ParsedCommand ParseCommandLine(int argc, const char* const* argv,
                               const std::string& version = "vecgpu 0.1.0");

}  // namespace vecgpu::server
