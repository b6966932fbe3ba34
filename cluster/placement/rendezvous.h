#pragma once

// Placement by weighted rendezvous hashing (highest random weight), as CLUSTER.md section 5
// recommends for tens of agents: every (key, agent) pair gets a score from a stable hash, and
// a key's owners are the R agents with the highest scores. Deterministic across processes and
// builds (the hash is vecgpu's own, not std::hash); the R owners are distinct; removing an
// agent moves only the keys that had it among their owners, and adding one takes only the keys
// it now outranks. A weight (free capacity) biases the share: score = -weight / ln(u), u in
// (0, 1) from the hash, so an agent of weight 2w gets about twice the keys of one of weight w.
//
// Rendezvous decides a collection's *first* placement only: the shard map in etcd is the
// authority afterwards, so a membership blip never moves data.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vecgpu::cluster {

struct Candidate {
  std::string id;
  double weight = 1;  // > 0; e.g. free memory in GiB
};

// A stable 64-bit hash of `data` (FNV-1a, then a SplitMix64 finaliser).
uint64_t StableHash(std::string_view data);

// The ids of the (up to) `r` candidates that own `key`, best first. Candidates of weight <= 0
// are never chosen.
std::vector<std::string> Rendezvous(std::string_view key, const std::vector<Candidate>& candidates,
                                    int r);

// The shard of a client-chosen id among `shards` (>= 1): a stable hash, so every gateway
// routes an id to the same shard.
int ShardOfId(int64_t id, int shards);
int ShardOfKey(std::string_view key, int shards);

}  // namespace vecgpu::cluster
