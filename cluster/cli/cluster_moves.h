#pragma once

// `vecgpu cluster drain AGENT [--undo] [--wait S]` and `vecgpu cluster rebalance --dry-run`
// (issue [3/5], item 2). A drain is a key in etcd (/vecgpu/drain/<agent>) that the placer
// reads: it moves every replica off the agent (add elsewhere, catch up, drop; the primary
// handed over first) and places nothing new there until the drain is undone. The dry run
// prints the plan the placer computes (PlanRebalance) from what etcd says now.

#include <ostream>
#include <string>
#include <vector>

#include "cluster/security/tls.h"

namespace vecgpu::cluster {

struct ClusterMovesOptions {
  std::vector<std::string> etcd;
  bool json = false;
  std::string agent;  // drain
  bool undo = false;  // drain: let it take replicas again
  double wait_s = 0;  // drain: wait until it holds nothing (0: do not wait)
  double tolerance = 0.2;  // rebalance: the gateways' --rebalance-tolerance
  int timeout_ms = 5000;
  TlsFiles etcd_tls;  // for https:// URLs (cluster/security/tls.h)
};

// 0 done (or, with --wait, the agent holds nothing), 1 etcd unreachable or an unknown agent,
// 3 still holding replicas when the wait ends.
int RunClusterDrain(const ClusterMovesOptions& options, std::ostream& out, std::ostream& err);
// 0, or 1 when etcd cannot be read.
int RunClusterRebalance(const ClusterMovesOptions& options, std::ostream& out, std::ostream& err);

}  // namespace vecgpu::cluster
