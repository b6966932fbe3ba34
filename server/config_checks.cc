#include "server/config_checks.h"

#include <algorithm>
#include <fstream>

namespace vecgpu::server {
namespace {

// A file given to --flag that this process cannot open is a start-up error naming both.
Status CheckReadable(const std::string& flag, const std::string& path) {
  if (path.empty() || std::ifstream(path, std::ios::binary)) return Status::Ok();
  return InvalidArgument(flag + ": cannot read '" + path + "'");
}

}  // namespace

Status CheckEtcdTls(const std::vector<std::string>& urls, const std::string& cacert,
                    const std::string& cert, const std::string& key) {
  const auto https = std::count_if(
      urls.begin(), urls.end(), [](const std::string& u) { return u.rfind("https://", 0) == 0; });
  if (https != 0 && static_cast<size_t>(https) != urls.size()) {
    return InvalidArgument("etcd: give every etcd URL as https:// or none of them");
  }
  if (cert.empty() != key.empty()) {
    return InvalidArgument(std::string(cert.empty() ? "etcd-cert" : "etcd-key") +
                           ": missing (--etcd-cert and --etcd-key go together)");
  }
  if (https == 0 && !(cacert.empty() && cert.empty())) {
    return InvalidArgument(
        "etcd-cacert, etcd-cert, etcd-key: TLS to etcd needs https:// etcd URLs");
  }
  RETURN_IF_ERROR(CheckReadable("etcd-cacert", cacert));
  RETURN_IF_ERROR(CheckReadable("etcd-cert", cert));
  return CheckReadable("etcd-key", key);
}

namespace {

// The cluster's mutual TLS: all three files or none, only on a cluster member.
Status CheckClusterTls(const ServeOptions& o) {
  const bool any =
      !o.cluster_tls_cert.empty() || !o.cluster_tls_key.empty() || !o.cluster_tls_ca.empty();
  if (!any) return Status::Ok();
  for (const auto& [value, flag] : {std::pair{&o.cluster_tls_cert, "cluster-tls-cert"},
                                    std::pair{&o.cluster_tls_key, "cluster-tls-key"},
                                    std::pair{&o.cluster_tls_ca, "cluster-tls-ca"}}) {
    if (value->empty()) {
      return InvalidArgument(std::string(flag) +
                             ": missing (cluster TLS needs --cluster-tls-cert, "
                             "--cluster-tls-key and --cluster-tls-ca)");
    }
  }
  if (o.join.empty() && !o.gateway) {
    return InvalidArgument(
        "cluster-tls-cert, cluster-tls-key, cluster-tls-ca: for a cluster "
        "agent (--join) or a gateway (vecgpu gateway)");
  }
  RETURN_IF_ERROR(CheckReadable("cluster-tls-cert", o.cluster_tls_cert));
  RETURN_IF_ERROR(CheckReadable("cluster-tls-key", o.cluster_tls_key));
  return CheckReadable("cluster-tls-ca", o.cluster_tls_ca);
}

}  // namespace

StatusOr<std::vector<int64_t>> ParseFakeGpus(const std::string& spec) {
  std::vector<int64_t> out;
  for (size_t at = 0; at <= spec.size();) {
    size_t comma = spec.find(',', at);
    if (comma == std::string::npos) comma = spec.size();
    const std::string part = spec.substr(at, comma - at);
    if (part.empty() || part.size() > 9 ||
        part.find_first_not_of("0123456789") != std::string::npos || std::stoll(part) <= 0) {
      return InvalidArgument("fake-gpus: '" + spec +
                             "' is not a list of MiB per fake GPU such as 1024,1024");
    }
    out.push_back(std::stoll(part) << 20);
    at = comma + 1;
  }
  return out;
}

Status FinishOptions(ServeOptions& o, const std::string& auth_keys, const std::string& auth_file) {
  if (o.durability != "sync" && o.durability != "async") {
    return InvalidArgument("durability: '" + o.durability + "' is not sync or async");
  }
  if (o.snapshot_log_mb < 0 || o.snapshot_log_mb > 1'048'576) {
    return InvalidArgument("snapshot-log-mb: must be within 0..1048576");
  }
  if (o.snapshot_interval_s < 0 || o.snapshot_interval_s > 31'536'000) {
    return InvalidArgument("snapshot-interval-s: must be within 0..31536000");
  }
  if (o.sync_interval_ms < 1 || o.sync_interval_ms > 60'000) {
    return InvalidArgument("sync-interval-ms: within 1..60000");
  }
  if (!auth_keys.empty() && !auth_file.empty()) {
    return InvalidArgument("auth-keys and auth-file: give one or the other");
  }
  if (!auth_keys.empty()) {
    ASSIGN_OR_RETURN(o.auth_keys, ParseAuthKeys(auth_keys));
  }
  if (!auth_file.empty()) {
    RETURN_IF_ERROR(o.default_quota.Validate("tenant quotas"));
    ASSIGN_OR_RETURN(o.auth_keys,
                     LoadAuthFile(auth_file, &o.admin_keys, &o.tenant_quotas, o.default_quota));
  }
  if (o.enable_auth && o.auth_keys.empty()) {
    return InvalidArgument(
        "enable-auth: authentication is enabled but no API keys are "
        "configured (use --auth-keys or --auth-file)");
  }
  if (o.bind_address.empty()) o.bind_address = o.enable_auth ? "0.0.0.0" : "127.0.0.1";
  if (o.port < 1 || o.port > 65535) return InvalidArgument("port: must be within 1..65535");
  std::string level = o.log_level;
  std::transform(level.begin(), level.end(), level.begin(), ::tolower);
  if (level == "warn") level = "warning";
  static const char* kLevels[] = {"trace", "debug", "info", "warning", "error", "critical", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), level) == std::end(kLevels)) {
    return InvalidArgument("log-level: unknown level '" + o.log_level + "'");
  }
  o.log_level = level;
  if (o.io_threads < 1 || o.io_threads > 64) return InvalidArgument("io-threads: within 1..64");
  if (o.poll_spin_us < 0 || o.poll_spin_us > 10'000) {
    return InvalidArgument("poll-spin-us: within 0..10000");
  }
  if (o.metrics_port < 0 || o.metrics_port > 65535) {
    return InvalidArgument("metrics-port: within 0..65535 (0 turns the listener off)");
  }
  if (o.metrics_port != 0 && o.metrics_port == o.port) {
    return InvalidArgument("metrics-port: must differ from --port");
  }
  if (o.grpc_port < 0 || o.grpc_port > 65535) {
    return InvalidArgument("grpc-port: within 0..65535 (0 turns gRPC off)");
  }
  if (o.grpc_port != 0 && (o.grpc_port == o.port || o.grpc_port == o.metrics_port)) {
    return InvalidArgument("grpc-port: must differ from --port and --metrics-port");
  }
  if (o.grpc_tls_cert.empty() != o.grpc_tls_key.empty()) {
    return InvalidArgument("grpc-tls-cert and grpc-tls-key: give both or neither");
  }
  if (!o.grpc_tls_client_ca.empty() && o.grpc_tls_cert.empty()) {
    return InvalidArgument("grpc-tls-client-ca: needs --grpc-tls-cert and --grpc-tls-key");
  }
  if (o.vald_collection.empty()) return InvalidArgument("vald-collection: must not be empty");
  if (o.vald_dimension < 0) return InvalidArgument("vald-dimension: must be 0 or more");
  RETURN_IF_ERROR(o.limits.Validate());
  if (o.vald_dimension > o.limits.max_dimension) {
    return InvalidArgument("vald-dimension: above --max-dimension");
  }
  RETURN_IF_ERROR(o.scheduler.Validate());
  RETURN_IF_ERROR(o.default_quota.Validate("tenant quotas"));
  if (o.grpc_max_threads < 8 || o.grpc_max_threads > 100'000) {
    return InvalidArgument("grpc-max-threads: must be within 8..100000");
  }
  if (o.grpc_max_streams_per_connection < 1 || o.grpc_max_streams_per_connection > 100'000) {
    return InvalidArgument("grpc-max-streams-per-connection: must be within 1..100000");
  }
  if (o.gateway && o.etcd.empty()) {
    return InvalidArgument("etcd: vecgpu gateway needs --etcd URL[,URL] (etcd's client URLs)");
  }
  if (!o.gateway && !o.etcd.empty()) {
    return InvalidArgument("etcd: --etcd is the gateway's (vecgpu gateway); an agent joins "
                           "with --join");
  }
  if (o.gateway && (!o.join.empty() || !o.data_dir.empty())) {
    return InvalidArgument("gateway: --join and --data-dir are an agent's (vecgpu serve); a "
                           "gateway keeps no indexes");
  }
  if (!o.join.empty() && o.advertise.empty()) {
    return InvalidArgument("advertise: --join needs --advertise HOST:PORT (where gateways reach "
                           "this agent)");
  }
  if (o.agent_port < 0 || o.agent_port > 65535) {
    return InvalidArgument("agent-port: expected 0..65535, got " + std::to_string(o.agent_port));
  }
  if (!o.advertise.empty() && o.advertise.find(':') == std::string::npos) {
    return InvalidArgument("advertise: expected HOST:PORT, got '" + o.advertise + "'");
  }
  if (o.gpu_reserve_mb < 0) return InvalidArgument("gpu-reserve-mb: must be >= 0");
  if (!o.fake_gpus.empty()) RETURN_IF_ERROR(ParseFakeGpus(o.fake_gpus).status());
  o.devices.reserve_bytes = static_cast<int64_t>(o.gpu_reserve_mb) << 20;
  if (o.gpu_temp_memory_mb < 0 || o.gpu_temp_memory_mb > 1536) {
    return InvalidArgument(
        "gpu-temp-memory-mb: must be within 0..1536 (FAISS 1.7.3 takes at most 1.5 GiB)");
  }
  o.devices.temp_memory_bytes = static_cast<int64_t>(o.gpu_temp_memory_mb) << 20;
  if (o.max_copies < 1 || o.max_copies > 64) {
    return InvalidArgument("max-copies: must be within 1..64");
  }
  if (o.copy_bandwidth_mb < 0) return InvalidArgument("copy-bandwidth-mb: must be >= 0");
  if (!(o.rereplicate_after_s >= 0) || o.rereplicate_after_s > 86400 * 30) {
    return InvalidArgument("rereplicate-after: must be within 0..2592000 seconds");
  }
  if (!(o.rebalance_tolerance >= 0) || o.rebalance_tolerance > 100) {
    return InvalidArgument("rebalance-tolerance: must be within 0..100");
  }
  RETURN_IF_ERROR(CheckClusterTls(o));
  if (o.join.empty() && !o.gateway &&
      !(o.etcd_cacert.empty() && o.etcd_cert.empty() && o.etcd_key.empty())) {
    return InvalidArgument(
        "etcd-cacert, etcd-cert, etcd-key: for a cluster agent (--join) or "
        "a gateway (vecgpu gateway)");
  }
  RETURN_IF_ERROR(
      CheckEtcdTls(o.gateway ? o.etcd : o.join, o.etcd_cacert, o.etcd_cert, o.etcd_key));
  if (o.replication_log_mb < 1 || o.replication_log_mb > 1'048'576) {
    return InvalidArgument("replication-log-mb: must be within 1..1048576");
  }
  if (o.replicas < 1 || o.replicas > 64) {
    return InvalidArgument("replicas: must be within 1..64");
  }
  if (o.lease_ttl_s < 2 || o.lease_ttl_s > 3600) {
    return InvalidArgument("lease-ttl: must be within 2..3600 seconds");
  }
  if (o.grpc_max_streams < 1 || o.grpc_max_streams > 10'000'000) {
    return InvalidArgument("grpc-max-streams: must be within 1..10000000");
  }
  if (o.grpc_memory_mb < 64 || o.grpc_memory_mb > 1'048'576) {
    return InvalidArgument("grpc-memory-mb: must be within 64..1048576");
  }
  for (int mb : {o.max_inflight_mb, o.max_tenant_inflight_mb, o.max_connection_inflight_mb,
                 o.max_unauthenticated_mb}) {
    if (mb < 1 || mb > 1'048'576) {
      return InvalidArgument(
          "max-inflight-mb, max-tenant-inflight-mb, max-connection-inflight-mb, "
          "max-unauthenticated-mb: each within 1..1048576");
    }
  }
  RETURN_IF_ERROR(o.devices.Validate());
  return Status::Ok();
}

}  // namespace vecgpu::server
