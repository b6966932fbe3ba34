#pragma once

// TLS for the cluster's gRPC links (issue [3/5]): gateway -> agent and agent -> agent with
// mutual TLS, and the etcd client with TLS and, when given, a client certificate.
//
// Certificates come from PEM files, read again every `TlsFiles::reload_interval_s` (gRPC's
// file watcher): a changed file applies to the connections made after it; connections already
// open keep the certificates they were made with. A certificate and key that do not match
// (one file replaced, the other not yet) make new handshakes fail until both are read again.
//
// Who checks what (ARCHITECTURE.md, "Encrypted links"):
// - every client (a gateway or an agent calling an agent; the etcd client) checks that the
//   server's chain leads to the CA and that the server's certificate names the host it dialled
//   (subjectAltName: the agent's --advertise host, a DNS name or an IP address; for etcd, its
//   URL's host);
// - an agent's API requires every client to present a certificate whose chain leads to the
//   CA. It checks no name: a certificate the cluster's CA signed is a member of the cluster.
//
// No gRPC headers here: callers that hold the options structs need only this.

#include <memory>
#include <string>

#include "core/util/status.h"

namespace grpc {
class Channel;
class ChannelArguments;
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace vecgpu::cluster {

// The PEM files of one TLS identity and the CA it trusts.
struct TlsFiles {
  // The certificate chain this process presents, and its private key: both or neither.
  std::string cert_file;
  std::string key_file;
  // The CA certificates (one or more, concatenated) a peer's chain must lead to. Empty: a
  // client trusts the system's roots; a server may not leave it empty.
  std::string ca_file;
  // Seconds between reads of the files. Default: 2.
  int reload_interval_s = 2;

  bool empty() const { return cert_file.empty() && key_file.empty() && ca_file.empty(); }
};

// The credentials of one kind of link, made once per process and shared by its servers and
// channels (one file watcher, one reload thread). Immutable and thread-safe; channels and
// servers made from it keep what they need alive.
class TlsCredentials {
 public:
  // Mutual TLS among the cluster's members (--cluster-tls-cert, --cluster-tls-key,
  // --cluster-tls-ca): all three files. INVALID_ARGUMENT, naming the flag, when one is
  // missing or cannot be read, the key is not the certificate's, or the certificate does not
  // verify against the CA (expired, another CA); with `server_name` (an agent's --advertise
  // host), also when the certificate does not name it. Checked once, here: files replaced
  // later are taken as they are.
  static StatusOr<std::shared_ptr<const TlsCredentials>> ForCluster(
      const TlsFiles& files, const std::string& server_name = "");
  // A client of etcd (--etcd-cacert, --etcd-cert, --etcd-key): the CA (none: the system's
  // roots) and a client certificate when given. Errors as ForCluster's, but the client
  // certificate is not verified here (etcd's own CA judges it).
  static StatusOr<std::shared_ptr<const TlsCredentials>> ForEtcdClient(const TlsFiles& files);

  ~TlsCredentials();

  // A server's side: its certificate, and a client certificate required of every caller and
  // checked against the CA. REQUIRES: made by ForCluster.
  std::shared_ptr<grpc::ServerCredentials> Server() const;
  // A client's side: the server checked against the CA (or the system's roots) and the host
  // dialled; this process's certificate presented when it has one.
  std::shared_ptr<grpc::ChannelCredentials> Channel() const;

 private:
  struct Impl;
  explicit TlsCredentials(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A channel to `target` (host:port) with `tls`'s client credentials; plaintext when `tls` is
// null (no TLS configured: what the cluster did before).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const grpc::ChannelArguments& args,
                                           const TlsCredentials* tls);
// A listening port's credentials: mutual TLS with `tls`; plaintext when null.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsCredentials* tls);

}  // namespace vecgpu::cluster
