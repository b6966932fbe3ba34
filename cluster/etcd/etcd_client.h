#pragma once

// A client of etcd's v3 API (etcd 3.4, Debian's etcd-server) over gRPC, generated from etcd's
// own .proto files (CMakeLists.txt, cluster/etcd/strip_proto.sh). What the cluster needs of
// etcd: reads at a revision, puts with leases, transactions that compare revisions (every
// shard-map change is fenced by one), leases with keep-alive, and watches that resume from a
// revision and report compaction. See ../shared/CLUSTER.md section 1 for etcd's semantics.
//
// Every call has a deadline (EtcdOptions::timeout) and maps etcd's gRPC status to a Status:
// UNAVAILABLE when no endpoint answers (the call may or may not have happened: etcd sends no
// abort), OUT_OF_RANGE for a compacted revision, NOT_FOUND for an unknown lease. With several
// endpoints, a call that finds one unreachable tries the next. Thread-safe.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/security/tls.h"
#include "core/util/status.h"

namespace vecgpu::cluster {

struct EtcdOptions {
  // "http://host:port" or "host:port", one per etcd member; "https://host:port" for TLS (all
  // or none of them).
  std::vector<std::string> endpoints;
  // Deadline of each unary call.
  std::chrono::milliseconds timeout{5000};
  // With https:// endpoints: the CA etcd's certificate must lead to (empty: the system's
  // roots) and the client certificate to present (etcd's --client-cert-auth), reloaded as
  // cluster/security/tls.h says. Given with plaintext endpoints: INVALID_ARGUMENT.
  TlsFiles tls;
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;  // 0: the key does not exist (a delete resets it)
  int64_t lease = 0;
};

struct RangeResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;  // the store's revision the read saw
};

// One condition of a transaction; all of a transaction's conditions must hold.
struct Compare {
  enum class Target { kVersion, kCreateRevision, kModRevision, kValue };
  enum class Op { kEqual, kNotEqual, kLess, kGreater };
  std::string key;
  Target target = Target::kModRevision;
  Op op = Op::kEqual;
  int64_t number = 0;  // kVersion, kCreateRevision, kModRevision
  std::string value;   // kValue

  // The key does not exist (create-if-absent).
  static Compare Absent(std::string key);
  // The key was last changed at `revision` (compare-and-swap on what was read).
  static Compare ModRevisionIs(std::string key, int64_t revision);
  static Compare ValueIs(std::string key, std::string value);
};

// One operation of a transaction's branch.
struct TxnOp {
  enum class Kind { kPut, kDelete, kGet };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;    // kPut
  int64_t lease = 0;    // kPut
  bool prefix = false;  // kDelete, kGet: every key under `key`

  static TxnOp Put(std::string key, std::string value, int64_t lease = 0);
  static TxnOp Delete(std::string key, bool prefix = false);
  static TxnOp Get(std::string key, bool prefix = false);
};

struct TxnResult {
  bool succeeded = false;          // the conditions held: the success branch ran
  int64_t revision = 0;            // the store's revision after it
  std::vector<RangeResult> reads;  // the kGet operations of the branch that ran, in order
};

struct Lease {
  int64_t id = 0;
  int64_t ttl_seconds = 0;  // as granted (etcd rounds small TTLs up)
};

struct WatchEvent {
  bool deleted = false;  // else a put
  KeyValue kv;           // for a delete: the key and the revision of the delete
};

// The first key after every key that starts with `prefix` (etcd's range_end of a prefix).
std::string PrefixEnd(const std::string& prefix);

class EtcdWatch;

class EtcdClient {
 public:
  // Calls no member, except with TLS: then each member is asked once (up to 2 s), and a
  // handshake either side refuses (no or a wrong client certificate, a server certificate
  // the CA did not sign or that does not name the host) is UNAUTHENTICATED naming the member
  // and gRPC's reason. A member that does not answer at all is not an error: etcd may come
  // later.
  static StatusOr<std::unique_ptr<EtcdClient>> Connect(EtcdOptions options);
  ~EtcdClient();

  StatusOr<RangeResult> Get(const std::string& key, int64_t revision = 0);
  // Every key under `prefix`, in key order, at `revision` (0: now).
  StatusOr<RangeResult> GetPrefix(const std::string& prefix, int64_t revision = 0);
  // Returns the store's revision after the put.
  StatusOr<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);
  // Returns how many keys were deleted.
  StatusOr<int64_t> Delete(const std::string& key, bool prefix = false);
  StatusOr<TxnResult> Txn(const std::vector<Compare>& conditions,
                          const std::vector<TxnOp>& success,
                          const std::vector<TxnOp>& failure = {});

  StatusOr<Lease> GrantLease(int64_t ttl_seconds);
  // Renews the lease once; returns its TTL, NOT_FOUND when it has expired or was revoked.
  // `per_try` (when > 0) bounds each member's try instead of the client's share of its
  // timeout, so that a member that holds the call without answering is left sooner.
  StatusOr<int64_t> KeepAliveOnce(int64_t lease,
                                  std::chrono::milliseconds per_try = std::chrono::milliseconds(0));
  Status RevokeLease(int64_t lease);

  // Watches every key under `prefix` from `start_revision` (inclusive; 0: from now). `on_events`
  // gets each revision's events in order, with that revision, on the watch's own thread. When
  // the watch ends for good (compacted start: OUT_OF_RANGE naming the compaction revision, so
  // the caller lists again and watches from there; etcd unreachable past the deadline:
  // UNAVAILABLE), `on_end` gets why, once. Destroying the watch stops it without calling
  // on_end.
  StatusOr<std::unique_ptr<EtcdWatch>> WatchPrefix(
      const std::string& prefix, int64_t start_revision,
      std::function<void(const std::vector<WatchEvent>&, int64_t revision)> on_events,
      std::function<void(const Status&)> on_end);

  // The endpoint calls go to now.
  std::string endpoint() const;

 private:
  struct Impl;
  explicit EtcdClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class EtcdWatch {
 public:
  ~EtcdWatch();  // stops the watch and joins its thread
  EtcdWatch(const EtcdWatch&) = delete;
  EtcdWatch& operator=(const EtcdWatch&) = delete;

 private:
  friend class EtcdClient;
  struct State;
  explicit EtcdWatch(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace vecgpu::cluster
