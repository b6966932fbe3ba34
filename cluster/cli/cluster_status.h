#pragma once

// `vecgpu cluster status --etcd URL[,URL] [--json]`: what etcd says of the cluster now:
// its agents (address, devices, free memory, load, version) and every collection's shards
// (primary, in-sync set, replicas, epoch), with the shards that have fewer in-sync replicas
// than wanted, or a primary that is not live, called out.

#include <ostream>
#include <string>
#include <vector>

#include "cluster/security/tls.h"

namespace vecgpu::cluster {

struct ClusterStatusOptions {
  std::vector<std::string> etcd;
  TlsFiles etcd_tls;  // for https:// URLs (cluster/security/tls.h)
  bool json = false;
  int timeout_ms = 5000;
};

// Prints the status to `out` (errors to `err`); returns the exit code: 0, 1 when etcd cannot
// be read, 3 when some shard is under-replicated or has no live primary.
int RunClusterStatus(const ClusterStatusOptions& options, std::ostream& out, std::ostream& err);

}  // namespace vecgpu::cluster
