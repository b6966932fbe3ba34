#include "cluster/security/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

// After vecgpu's headers: abseil (under gRPC) defines GUARDED_BY too.
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

namespace vecgpu::cluster {
namespace {

namespace gx = grpc::experimental;

template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* p) const { Free(p); }
};
using X509Ptr = std::unique_ptr<X509, Freer<X509, X509_free>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Freer<EVP_PKEY, EVP_PKEY_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Freer<X509_STORE, X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Freer<X509_STORE_CTX, X509_STORE_CTX_free>>;
using StackPtr = std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)>;

// The text of the file `path` given to `--flag`, which must hold a PEM block of `kind`
// ("CERTIFICATE" or "PRIVATE KEY"): what gRPC's watcher would otherwise only log, once per
// reload, while every handshake fails.
StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path,
                              const std::string& kind) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return InvalidArgument(flag + ": cannot read '" + path + "'" +
                           (errno != 0 ? std::string(" (") + std::strerror(errno) + ")" : ""));
  }
  std::ostringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  if (text.find("-----BEGIN ") == std::string::npos ||
      text.find(kind + "-----") == std::string::npos) {
    return InvalidArgument(flag + ": '" + path + "' holds no PEM " + kind);
  }
  return text;
}

// Every certificate in `pem`, in order.
std::vector<X509Ptr> Certificates(const std::string& pem) {
  std::vector<X509Ptr> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.emplace_back(x);
  BIO_free(bio);
  ERR_clear_error();  // the end of the file reads as an error
  return out;
}

KeyPtr PrivateKey(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  KeyPtr key(PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  ERR_clear_error();
  return key;
}

// The flags a set of files came from, for errors.
struct Flags {
  std::string cert, key, ca;
};

// What a handshake would find wrong with this process's own files, said at start: a key that
// is not the certificate's, and (with `ca_pem`) a chain that does not lead to the CA or has
// expired, and (with `server_name`) a certificate that does not name the host peers dial.
Status CheckIdentity(const TlsFiles& f, const Flags& flags, const std::string& cert_pem,
                     const std::string& key_pem, const std::string* ca_pem,
                     const std::string& server_name) {
  std::vector<X509Ptr> chain = Certificates(cert_pem);
  if (chain.empty()) {
    return InvalidArgument(flags.cert + ": '" + f.cert_file + "' holds no readable certificate");
  }
  KeyPtr key = PrivateKey(key_pem);
  if (!key) return InvalidArgument(flags.key + ": '" + f.key_file + "' holds no readable key");
  if (X509_check_private_key(chain[0].get(), key.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument(flags.key + ": '" + f.key_file + "' is not the key of " + flags.cert +
                           " '" + f.cert_file + "'");
  }
  if (ca_pem) {
    StorePtr store(X509_STORE_new());
    for (X509Ptr& ca : Certificates(*ca_pem)) X509_STORE_add_cert(store.get(), ca.get());
    StackPtr intermediates(sk_X509_new_null(), [](STACK_OF(X509) * s) { sk_X509_free(s); });
    for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(intermediates.get(), chain[i].get());
    StoreCtxPtr ctx(X509_STORE_CTX_new());
    X509_STORE_CTX_init(ctx.get(), store.get(), chain[0].get(), intermediates.get());
    if (X509_verify_cert(ctx.get()) != 1) {
      const std::string why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
      ERR_clear_error();
      return InvalidArgument(flags.cert + ": '" + f.cert_file + "' does not verify against " +
                             flags.ca + " '" + f.ca_file + "': " + why);
    }
  }
  if (!server_name.empty()) {
    const bool named =
        X509_check_ip_asc(chain[0].get(), server_name.c_str(), 0) == 1 ||
        X509_check_host(chain[0].get(), server_name.data(), server_name.size(), 0, nullptr) == 1;
    ERR_clear_error();
    if (!named) {
      return InvalidArgument(flags.cert + ": '" + f.cert_file + "' does not name '" + server_name +
                             "' in its subjectAltName: gateways and agents dial this agent "
                             "there (--advertise) and check that its certificate names it");
    }
  }
  return Status::Ok();
}

// Reads and checks the files of `f` (a certificate with its key, or neither; a CA if given).
Status CheckFiles(const TlsFiles& f, const Flags& flags, bool verify_chain,
                  const std::string& server_name) {
  if (f.cert_file.empty() != f.key_file.empty()) {
    return InvalidArgument(flags.cert + " and " + flags.key + ": give both or neither (" +
                           (f.cert_file.empty() ? flags.cert : flags.key) + " is missing)");
  }
  if (f.reload_interval_s < 1) return InvalidArgument("TLS: reload interval must be >= 1 s");
  std::string ca;
  if (!f.ca_file.empty()) {
    ASSIGN_OR_RETURN(ca, ReadPem(flags.ca, f.ca_file, "CERTIFICATE"));
  }
  if (f.cert_file.empty()) return Status::Ok();
  ASSIGN_OR_RETURN(std::string cert, ReadPem(flags.cert, f.cert_file, "CERTIFICATE"));
  ASSIGN_OR_RETURN(std::string key, ReadPem(flags.key, f.key_file, "PRIVATE KEY"));
  return CheckIdentity(f, flags, cert, key, verify_chain && !ca.empty() ? &ca : nullptr,
                       server_name);
}

}  // namespace

struct TlsCredentials::Impl {
  std::shared_ptr<gx::CertificateProviderInterface> provider;  // null: nothing to watch
  std::shared_ptr<grpc::ServerCredentials> server;             // null: a client only
  std::shared_ptr<grpc::ChannelCredentials> channel;
};

TlsCredentials::TlsCredentials(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsCredentials::~TlsCredentials() = default;

StatusOr<std::shared_ptr<const TlsCredentials>> TlsCredentials::ForCluster(
    const TlsFiles& f, const std::string& server_name) {
  for (const auto& [value, flag] :
       {std::pair{f.cert_file, "cluster-tls-cert"}, std::pair{f.key_file, "cluster-tls-key"},
        std::pair{f.ca_file, "cluster-tls-ca"}}) {
    if (value.empty()) {
      return InvalidArgument(std::string(flag) +
                             ": missing (cluster TLS needs --cluster-tls-cert, "
                             "--cluster-tls-key and --cluster-tls-ca)");
    }
  }
  RETURN_IF_ERROR(CheckFiles(f, {"cluster-tls-cert", "cluster-tls-key", "cluster-tls-ca"},
                             /*verify_chain=*/true, server_name));
  auto impl = std::make_unique<Impl>();
  impl->provider = std::make_shared<gx::FileWatcherCertificateProvider>(
      f.key_file, f.cert_file, f.ca_file, static_cast<unsigned>(f.reload_interval_s));

  gx::TlsServerCredentialsOptions server(impl->provider);
  server.watch_root_certs();
  server.watch_identity_key_cert_pairs();
  server.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  impl->server = gx::TlsServerCredentials(server);

  // The default verifier: the chain against the CA, and the name dialled against the
  // certificate's subjectAltName.
  gx::TlsChannelCredentialsOptions channel;
  channel.set_certificate_provider(impl->provider);
  channel.watch_root_certs();
  channel.watch_identity_key_cert_pairs();
  impl->channel = gx::TlsCredentials(channel);
  if (!impl->server || !impl->channel) {
    return Internal("cluster TLS: gRPC made no credentials from the given files");
  }
  return std::shared_ptr<const TlsCredentials>(new TlsCredentials(std::move(impl)));
}

StatusOr<std::shared_ptr<const TlsCredentials>> TlsCredentials::ForEtcdClient(const TlsFiles& f) {
  // etcd checks the client certificate against its own --trusted-ca-file, which need not be
  // the CA that signed etcd's certificate: only the key is checked here.
  RETURN_IF_ERROR(CheckFiles(f, {"etcd-cert", "etcd-key", "etcd-cacert"},
                             /*verify_chain=*/false, ""));
  auto impl = std::make_unique<Impl>();
  if (f.empty()) {
    impl->channel = grpc::SslCredentials(grpc::SslCredentialsOptions());  // the system's roots
  } else {
    if (f.cert_file.empty()) {
      impl->provider = std::make_shared<gx::FileWatcherCertificateProvider>(
          f.ca_file, static_cast<unsigned>(f.reload_interval_s));
    } else {
      impl->provider = std::make_shared<gx::FileWatcherCertificateProvider>(
          f.key_file, f.cert_file, f.ca_file, static_cast<unsigned>(f.reload_interval_s));
    }
    gx::TlsChannelCredentialsOptions channel;
    channel.set_certificate_provider(impl->provider);
    if (!f.ca_file.empty()) channel.watch_root_certs();  // else: the system's roots
    if (!f.cert_file.empty()) channel.watch_identity_key_cert_pairs();
    impl->channel = gx::TlsCredentials(channel);
  }
  if (!impl->channel) return Internal("etcd TLS: gRPC made no credentials from the given files");
  return std::shared_ptr<const TlsCredentials>(new TlsCredentials(std::move(impl)));
}

std::shared_ptr<grpc::ServerCredentials> TlsCredentials::Server() const { return impl_->server; }

std::shared_ptr<grpc::ChannelCredentials> TlsCredentials::Channel() const { return impl_->channel; }

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const grpc::ChannelArguments& args,
                                           const TlsCredentials* tls) {
  return grpc::CreateCustomChannel(target,
                                   tls ? tls->Channel() : grpc::InsecureChannelCredentials(), args);
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsCredentials* tls) {
  return tls ? tls->Server() : grpc::InsecureServerCredentials();
}

}  // namespace vecgpu::cluster
