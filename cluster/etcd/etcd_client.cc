#include "cluster/etcd/etcd_client.h"

#include <algorithm>
#include <cctype>

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too.
#include <grpcpp/grpcpp.h>

#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace vecgpu::cluster {
namespace {

namespace pb = ::etcdserverpb;

Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  // vecgpu's codes are numbered as gRPC's.
  return Status(static_cast<StatusCode>(s.error_code()), "etcd " + what + ": " + s.error_message());
}

bool Unreachable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

bool IsHttps(const std::string& endpoint) { return endpoint.rfind("https://", 0) == 0; }

std::string Target(std::string endpoint) {
  for (const char* scheme : {"http://", "https://"}) {
    if (endpoint.rfind(scheme, 0) == 0) endpoint = endpoint.substr(std::string(scheme).size());
  }
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  return endpoint;
}

KeyValue FromPb(const ::mvccpb::KeyValue& kv) {
  return {kv.key(), kv.value(), kv.create_revision(), kv.mod_revision(), kv.version(),
          kv.lease()};
}

RangeResult FromPb(const pb::RangeResponse& r) {
  RangeResult out;
  out.revision = r.header().revision();
  out.kvs.reserve(r.kvs_size());
  for (const auto& kv : r.kvs()) out.kvs.push_back(FromPb(kv));
  return out;
}

void ToPb(const TxnOp& op, pb::RequestOp* out) {
  switch (op.kind) {
    case TxnOp::Kind::kPut: {
      auto* p = out->mutable_request_put();
      p->set_key(op.key);
      p->set_value(op.value);
      p->set_lease(op.lease);
      return;
    }
    case TxnOp::Kind::kDelete: {
      auto* d = out->mutable_request_delete_range();
      d->set_key(op.key);
      if (op.prefix) d->set_range_end(PrefixEnd(op.key));
      return;
    }
    case TxnOp::Kind::kGet: {
      auto* g = out->mutable_request_range();
      g->set_key(op.key);
      if (op.prefix) g->set_range_end(PrefixEnd(op.key));
      return;
    }
  }
}

void ToPb(const Compare& c, pb::Compare* out) {
  out->set_key(c.key);
  switch (c.op) {
    case Compare::Op::kEqual:
      out->set_result(pb::Compare::EQUAL);
      break;
    case Compare::Op::kNotEqual:
      out->set_result(pb::Compare::NOT_EQUAL);
      break;
    case Compare::Op::kLess:
      out->set_result(pb::Compare::LESS);
      break;
    case Compare::Op::kGreater:
      out->set_result(pb::Compare::GREATER);
      break;
  }
  switch (c.target) {
    case Compare::Target::kVersion:
      out->set_target(pb::Compare::VERSION);
      out->set_version(c.number);
      break;
    case Compare::Target::kCreateRevision:
      out->set_target(pb::Compare::CREATE);
      out->set_create_revision(c.number);
      break;
    case Compare::Target::kModRevision:
      out->set_target(pb::Compare::MOD);
      out->set_mod_revision(c.number);
      break;
    case Compare::Target::kValue:
      out->set_target(pb::Compare::VALUE);
      out->set_value(c.value);
      break;
  }
}

}  // namespace

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Compare Compare::Absent(std::string key) {
  return {std::move(key), Target::kCreateRevision, Op::kEqual, 0, ""};
}
Compare Compare::ModRevisionIs(std::string key, int64_t revision) {
  return {std::move(key), Target::kModRevision, Op::kEqual, revision, ""};
}
Compare Compare::ValueIs(std::string key, std::string value) {
  return {std::move(key), Target::kValue, Op::kEqual, 0, std::move(value)};
}

TxnOp TxnOp::Put(std::string key, std::string value, int64_t lease) {
  return {Kind::kPut, std::move(key), std::move(value), lease, false};
}
TxnOp TxnOp::Delete(std::string key, bool prefix) {
  return {Kind::kDelete, std::move(key), "", 0, prefix};
}
TxnOp TxnOp::Get(std::string key, bool prefix) {
  return {Kind::kGet, std::move(key), "", 0, prefix};
}

struct EtcdClient::Impl {
  struct Endpoint {
    std::string target;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<pb::KV::Stub> kv;
    std::unique_ptr<pb::Lease::Stub> lease;
    std::unique_ptr<pb::Watch::Stub> watch;
  };
  EtcdOptions options;
  std::shared_ptr<const TlsCredentials> tls;  // null: plaintext
  std::vector<Endpoint> endpoints;
  std::atomic<size_t> current{0};

  // Each try gets its share of the timeout, so a dead member leaves time for the next. A try
  // waits for its member's connection (a fail-fast call on a channel that failed to connect
  // keeps failing without reconnecting, here: gRPC 1.51).
  std::chrono::milliseconds PerTry() const {
    return std::max<std::chrono::milliseconds>(
        options.timeout / static_cast<int>(endpoints.size()), std::chrono::milliseconds(250));
  }
  void Deadline(grpc::ClientContext& c, std::chrono::milliseconds per_try = {}) const {
    c.set_deadline(std::chrono::system_clock::now() +
                   (per_try.count() > 0 ? per_try : PerTry()));
    c.set_wait_for_ready(true);
  }
  // Runs `call` on the current endpoint; when that one is unreachable and `retry` (the call
  // is safe to repeat), on the others in turn. An unreachable endpoint stops being current.
  template <typename Call>
  grpc::Status Run(bool retry, Call call, std::chrono::milliseconds per_try = {}) {
    grpc::Status s;
    const size_t n = endpoints.size();
    for (size_t tried = 0; tried < n; ++tried) {
      size_t seen = current.load();
      grpc::ClientContext c;
      Deadline(c, per_try);
      s = call(endpoints[seen % n], c);
      if (!Unreachable(s)) return s;
      current.compare_exchange_strong(seen, seen + 1);
      if (!retry) return s;
    }
    return s;
  }
};

struct EtcdWatch::State {
  std::mutex mu;
  std::unique_ptr<grpc::ClientContext> context;  // of the stream now open (guarded by mu)
  std::atomic<bool> stopping{false};
  std::thread thread;
};

EtcdClient::EtcdClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EtcdClient::~EtcdClient() = default;

namespace {

bool Mentions(std::string message, const char* word) {
  std::transform(message.begin(), message.end(), message.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return message.find(word) != std::string::npos;
}

// One fail-fast read on a channel of its own (not sharing the client's subchannel, whose
// reconnection a fail-fast call can stall): whether the TLS handshake with `target` works.
// gRPC 1.51 says "Endpoint read failed" when etcd closes the connection right after the
// handshake (TLS 1.3: the server judges the client's certificate last), and names the
// handshake or the certificate when this side refuses etcd's.
Status ProbeTls(const std::string& endpoint, const std::string& target, const TlsFiles& files,
                const TlsCredentials& tls) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto kv = pb::KV::NewStub(MakeChannel(target, args, &tls));
  grpc::ClientContext c;
  c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  pb::RangeRequest req;
  req.set_key("/");
  req.set_count_only(true);
  pb::RangeResponse resp;
  const grpc::Status s = kv->Range(&c, req, &resp);
  if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return Status::Ok();
  const std::string& m = s.error_message();
  if (Mentions(m, "failed to create security handshaker")) {
    return Unauthenticated("etcd " + endpoint +
                           ": no TLS session could be made from "
                           "--etcd-cacert, --etcd-cert and --etcd-key (" +
                           m + ")");
  }
  if (Mentions(m, "endpoint read failed")) {
    return Unauthenticated(
        "etcd " + endpoint + " closed the connection after the TLS handshake: " +
        (files.cert_file.empty()
             ? std::string("it wants a client certificate (--etcd-cert, --etcd-key)")
             : "it does not accept --etcd-cert '" + files.cert_file +
                   "' (not signed by a CA of its --trusted-ca-file?)") +
        " (" + m + ")");
  }
  for (const char* word : {"handshake", "ssl", "tls", "certificate"}) {
    if (Mentions(m, word)) {
      return Unauthenticated("etcd " + endpoint +
                             ": the TLS handshake failed: etcd's certificate does not lead "
                             "to " +
                             (files.ca_file.empty()
                                  ? std::string("the system's roots (no --etcd-cacert)")
                                  : "--etcd-cacert '" + files.ca_file + "'") +
                             " or does not name the URL's host (" + m + ")");
    }
  }
  return Status::Ok();  // not answering at all: etcd may come later
}

}  // namespace

StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Connect(EtcdOptions options) {
  if (options.endpoints.empty()) return InvalidArgument("etcd: no endpoint given");
  const size_t https = static_cast<size_t>(
      std::count_if(options.endpoints.begin(), options.endpoints.end(), IsHttps));
  if (https != 0 && https != options.endpoints.size()) {
    return InvalidArgument("etcd: give every endpoint as https:// or none of them");
  }
  if (https == 0 && !options.tls.empty()) {
    return InvalidArgument(
        "etcd: TLS files (--etcd-cacert, --etcd-cert, --etcd-key) need "
        "https:// endpoints");
  }
  std::shared_ptr<const TlsCredentials> tls;
  if (https != 0) {
    ASSIGN_OR_RETURN(tls, TlsCredentials::ForEtcdClient(options.tls));
    for (const std::string& e : options.endpoints) {
      RETURN_IF_ERROR(ProbeTls(e, Target(e), options.tls, *tls));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->tls = tls;
  for (const std::string& e : options.endpoints) {
    const std::string target = Target(e);
    if (target.empty()) return InvalidArgument("etcd: empty endpoint");
    grpc::ChannelArguments args;
    // Notice a dead member within seconds, not at the next call's deadline.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
    // Reconnect to a member that comes back within a second, not gRPC's up to two minutes.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    Impl::Endpoint ep;
    ep.target = target;
    ep.channel = MakeChannel(target, args, tls.get());
    ep.kv = pb::KV::NewStub(ep.channel);
    ep.lease = pb::Lease::NewStub(ep.channel);
    ep.watch = pb::Watch::NewStub(ep.channel);
    impl->endpoints.push_back(std::move(ep));
  }
  impl->options = std::move(options);
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(impl)));
}

std::string EtcdClient::endpoint() const {
  return impl_->endpoints[impl_->current.load() % impl_->endpoints.size()].target;
}

StatusOr<RangeResult> EtcdClient::Get(const std::string& key, int64_t revision) {
  pb::RangeRequest req;
  req.set_key(key);
  req.set_revision(revision);
  pb::RangeResponse resp;
  grpc::Status s = impl_->Run(true, [&](Impl::Endpoint& e, grpc::ClientContext& c) {
    return e.kv->Range(&c, req, &resp);
  });
  RETURN_IF_ERROR(FromGrpc(s, "range '" + key + "'"));
  return FromPb(resp);
}

StatusOr<RangeResult> EtcdClient::GetPrefix(const std::string& prefix, int64_t revision) {
  pb::RangeRequest req;
  req.set_key(prefix.empty() ? std::string(1, '\0') : prefix);
  req.set_range_end(PrefixEnd(prefix));
  req.set_revision(revision);
  pb::RangeResponse resp;
  grpc::Status s = impl_->Run(true, [&](Impl::Endpoint& e, grpc::ClientContext& c) {
    return e.kv->Range(&c, req, &resp);
  });
  RETURN_IF_ERROR(FromGrpc(s, "range of prefix '" + prefix + "'"));
  return FromPb(resp);
}

StatusOr<int64_t> EtcdClient::Put(const std::string& key, const std::string& value,
                                  int64_t lease) {
  pb::PutRequest req;
  req.set_key(key);
  req.set_value(value);
  req.set_lease(lease);
  pb::PutResponse resp;
  grpc::Status s = impl_->Run(false, [&](Impl::Endpoint& e, grpc::ClientContext& c) {
    return e.kv->Put(&c, req, &resp);
  });
  RETURN_IF_ERROR(FromGrpc(s, "put '" + key + "'"));
  return resp.header().revision();
}

StatusOr<int64_t> EtcdClient::Delete(const std::string& key, bool prefix) {
  pb::DeleteRangeRequest req;
  req.set_key(key);
  if (prefix) req.set_range_end(PrefixEnd(key));
  pb::DeleteRangeResponse resp;
  grpc::Status s = impl_->Run(false, [&](Impl::Endpoint& e, grpc::ClientContext& c) {
    return e.kv->DeleteRange(&c, req, &resp);
  });
  RETURN_IF_ERROR(FromGrpc(s, "delete '" + key + "'"));
  return resp.deleted();
}

StatusOr<TxnResult> EtcdClient::Txn(const std::vector<Compare>& conditions,
                                    const std::vector<TxnOp>& success,
                                    const std::vector<TxnOp>& failure) {
  pb::TxnRequest req;
  for (const Compare& c : conditions) ToPb(c, req.add_compare());
  for (const TxnOp& op : success) ToPb(op, req.add_success());
  for (const TxnOp& op : failure) ToPb(op, req.add_failure());
  pb::TxnResponse resp;
  // Never repeated: a transaction whose answer was lost may have happened.
  grpc::Status s = impl_->Run(false, [&](Impl::Endpoint& e, grpc::ClientContext& c) {
    return e.kv->Txn(&c, req, &resp);
  });
  RETURN_IF_ERROR(FromGrpc(s, "txn"));
  TxnResult out;
  out.succeeded = resp.succeeded();
  out.revision = resp.header().revision();
  for (const auto& r : resp.responses()) {
    if (r.has_response_range()) out.reads.push_back(FromPb(r.response_range()));
  }
  return out;
}

StatusOr<Lease> EtcdClient::GrantLease(int64_t ttl_seconds) {
  if (ttl_seconds < 1) return InvalidArgument("etcd lease: TTL must be at least 1 s");
  pb::LeaseGrantRequest req;
  req.set_ttl(ttl_seconds);
  pb::LeaseGrantResponse resp;
  grpc::Status s = impl_->Run(false, [&](Impl::Endpoint& e, grpc::ClientContext& c) {
    return e.lease->LeaseGrant(&c, req, &resp);
  });
  RETURN_IF_ERROR(FromGrpc(s, "lease grant"));
  if (!resp.error().empty()) return Unavailable("etcd lease grant: " + resp.error());
  return Lease{resp.id(), resp.ttl()};
}

StatusOr<int64_t> EtcdClient::KeepAliveOnce(int64_t lease, std::chrono::milliseconds per_try) {
  pb::LeaseKeepAliveResponse resp;
  bool answered = false;
  grpc::Status s = impl_->Run(true, [&](Impl::Endpoint& e, grpc::ClientContext& c) {
    auto stream = e.lease->LeaseKeepAlive(&c);
    pb::LeaseKeepAliveRequest req;
    req.set_id(lease);
    answered = stream->Write(req) && stream->Read(&resp);
    stream->WritesDone();
    if (answered) c.TryCancel();  // the one answer is in: end the stream
    grpc::Status st = stream->Finish();
    return answered ? grpc::Status::OK : st;
  }, per_try);
  RETURN_IF_ERROR(FromGrpc(s, "lease keep-alive"));
  if (!answered) return Unavailable("etcd lease keep-alive: no answer");
  if (resp.ttl() <= 0) {
    return NotFound("etcd lease " + std::to_string(lease) + ": expired or revoked");
  }
  return resp.ttl();
}

Status EtcdClient::RevokeLease(int64_t lease) {
  pb::LeaseRevokeRequest req;
  req.set_id(lease);
  pb::LeaseRevokeResponse resp;
  grpc::Status s = impl_->Run(false, [&](Impl::Endpoint& e, grpc::ClientContext& c) {
    return e.lease->LeaseRevoke(&c, req, &resp);
  });
  return FromGrpc(s, "lease revoke");
}

StatusOr<std::unique_ptr<EtcdWatch>> EtcdClient::WatchPrefix(
    const std::string& prefix, int64_t start_revision,
    std::function<void(const std::vector<WatchEvent>&, int64_t)> on_events,
    std::function<void(const Status&)> on_end) {
  auto state = std::make_shared<EtcdWatch::State>();
  Impl* impl = impl_.get();
  state->thread = std::thread([impl, state, prefix, start_revision, on_events = std::move(on_events),
                               on_end = std::move(on_end)] {
    // The next revision to see: after a broken stream the watch resumes there, on whichever
    // endpoint answers, until etcd has been unreachable for a whole timeout.
    int64_t next = start_revision;
    // When a stream was last open (or the watch began).
    auto last_open = std::chrono::steady_clock::now();
    while (!state->stopping.load()) {
      const size_t n = impl->endpoints.size();
      Impl::Endpoint& e = impl->endpoints[impl->current.load() % n];
      auto context = std::make_unique<grpc::ClientContext>();
      grpc::ClientContext* c = context.get();
      {
        std::lock_guard lock(state->mu);
        if (state->stopping.load()) return;
        state->context = std::move(context);
      }
      std::unique_ptr<grpc::ClientReaderWriter<pb::WatchRequest, pb::WatchResponse>> stream;
      if (e.channel->WaitForConnected(std::chrono::system_clock::now() + impl->PerTry())) {
        stream = e.watch->Watch(c);
      }
      pb::WatchRequest req;
      auto* create = req.mutable_create_request();
      create->set_key(prefix.empty() ? std::string(1, '\0') : prefix);
      create->set_range_end(PrefixEnd(prefix));
      create->set_start_revision(next);
      pb::WatchResponse resp;
      if (stream && stream->Write(req)) {
        while (stream->Read(&resp)) {
          last_open = std::chrono::steady_clock::now();
          // Watching "from now": resume after what the watch started at.
          if (resp.created() && next == 0) next = resp.header().revision() + 1;
          if (resp.canceled()) {
            state->stopping.store(true);
            c->TryCancel();
            (void)stream->Finish();
            if (resp.compact_revision() > 0) {
              on_end(OutOfRange("etcd watch of '" + prefix + "': revision " +
                                std::to_string(next) + " is compacted (compaction at " +
                                std::to_string(resp.compact_revision()) +
                                "); list again and watch from there"));
            } else {
              on_end(Unavailable("etcd watch of '" + prefix + "' canceled: " +
                                 resp.cancel_reason()));
            }
            return;
          }
          if (resp.events_size() == 0) continue;
          // One response carries whole revisions, in order.
          std::vector<WatchEvent> events;
          int64_t revision = 0;
          for (const auto& ev : resp.events()) {
            WatchEvent w;
            w.deleted = ev.type() == ::mvccpb::Event::DELETE;
            w.kv = FromPb(ev.kv());
            if (revision != 0 && w.kv.mod_revision != revision) {
              on_events(events, revision);
              events.clear();
            }
            revision = w.kv.mod_revision;
            events.push_back(std::move(w));
          }
          on_events(events, revision);
          next = revision + 1;
        }
      }
      if (stream) (void)stream->Finish();
      if (state->stopping.load()) return;
      // Broken: another endpoint, then again after a pause, within the timeout.
      size_t seen = impl->current.load();
      impl->current.compare_exchange_strong(seen, seen + 1);
      if (std::chrono::steady_clock::now() - last_open > impl->options.timeout) {
        state->stopping.store(true);
        on_end(Unavailable("etcd watch of '" + prefix + "': etcd unreachable for " +
                           std::to_string(impl->options.timeout.count()) + " ms"));
        return;
      }
      for (int t = 0; t < 10 && !state->stopping.load(); ++t) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  });
  return std::unique_ptr<EtcdWatch>(new EtcdWatch(std::move(state)));
}

EtcdWatch::EtcdWatch(std::shared_ptr<State> state) : state_(std::move(state)) {}

EtcdWatch::~EtcdWatch() {
  {
    std::lock_guard lock(state_->mu);
    state_->stopping.store(true);
    if (state_->context) state_->context->TryCancel();
  }
  if (state_->thread.joinable()) state_->thread.join();
}

}  // namespace vecgpu::cluster
