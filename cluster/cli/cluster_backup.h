#pragma once

// `vecgpu cluster backup` and `vecgpu cluster restore`: one collection of a running cluster to
// a file and back (the file: cluster/cli/backup_file.h, core/store/FORMAT.md).
//
// Backup reads the collection's shard map from etcd and asks, for each shard, a live in-sync
// replica (the primary first) for its copy (the agent API's Export), then writes the file
// (`FILE`.tmp, synced, renamed). Each shard is copied as it is when its turn comes: writes
// made meanwhile may be in some shards and not in others (stop writing for a backup of one
// moment).
//
// Restore checks the whole file first (nothing changes for a file that is damaged, cut short
// or not a backup), refuses a collection that exists (ALREADY_EXISTS), then:
//   1. places the collection as a gateway's create does (FirstPlacement over the live,
//      non-draining agents) and writes its map with each shard's primary as its only replica
//      (ShardMapStore::Create: create-if-absent, as every gateway's create writes it);
//   2. installs each shard's copy on its primary (the agent API's Restore: taken only by the
//      primary of that epoch, only while it holds no copy);
//   3. adds the shard's other R-1 replicas to the map (outside the in-sync set), so that the
//      primary sends them its copy whole, and the placer puts them in the in-sync set once
//      they hold it;
//   4. waits until every shard has R in-sync replicas.
// A failure in 1-2 removes what it made (the copies restored, the map). Replicas are added
// only after the copies are in (3), so that a primary never sends them records of an earlier
// collection of the same name that it may still keep, nor reports them in sync while it
// holds nothing itself.

#include <ostream>
#include <string>
#include <vector>

#include "cluster/security/tls.h"

namespace vecgpu::cluster {

struct ClusterBackupOptions {
  std::vector<std::string> etcd;
  TlsFiles etcd_tls;     // for https:// URLs
  TlsFiles cluster_tls;  // mutual TLS to the agents (--cluster-tls-*); empty: plaintext
  // backup: the collection's tenant (required); restore: the tenant to restore into (empty:
  // the file's).
  std::string tenant;
  std::string collection;    // backup: the collection
  std::string file;          // backup: --out; restore: --from
  std::string as;            // restore: another name (empty: the file's)
  int replicas = 0;          // restore: R (0: the file's)
  double wait_s = 300;       // restore: how long to wait for R in-sync replicas per shard
  int timeout_ms = 5000;     // each etcd call
  int copy_timeout_s = 600;  // each Export or Restore call
};

// 0 written; 1 nothing written (no such collection, no live in-sync replica of a shard,
// etcd or the file system failed).
int RunClusterBackup(const ClusterBackupOptions& options, std::ostream& out, std::ostream& err);
// 0 restored with R in-sync replicas per shard; 1 nothing restored (a bad file, the name
// taken, too few agents, an agent refused: what was made is removed again); 3 restored on
// the primaries, but not every shard had R in-sync replicas when the wait ended.
int RunClusterRestore(const ClusterBackupOptions& options, std::ostream& out, std::ostream& err);

}  // namespace vecgpu::cluster
