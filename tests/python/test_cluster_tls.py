"""Encrypted and authenticated cluster links (issue [3/5]): a real etcd (Debian's etcd-server)
with TLS and client-certificate authentication, two agents and a gateway with mutual TLS
between them, every certificate made here with `openssl` (the commands README.md gives).

- A replicated collection (R=2) is created, filled and searched through the gateway with the
  faissx client; `cluster status` reads etcd over TLS.
- The agent API refuses a client without a certificate, with one from another CA, and a
  plaintext one; a certificate of the cluster's CA gets through.
- An agent whose certificate does not name its --advertise host is refused by the gateway.
- The cluster's CA is rolled (old + new CA, then every member's certificate from the new CA,
  then the new CA only) by replacing files, restarting nothing: each agent's port presents
  its new certificate and refuses the old CA's; an agent started afresh (new connections
  from the gateway and from the other agent, which present their reloaded certificates) is
  caught up and takes replicated writes.
- An agent without etcd's client certificate, or trusting another CA than etcd's, does not
  start: the error names the TLS handshake.
"""
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import numpy as np
import pytest

from conftest import BINARY, Server, call, fail, free_port, ok, rand, rows, uid
from test_cluster_agent import Etcd, joins, wait_until

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None or shutil.which("openssl") is None,
                                reason="etcd (Debian's etcd-server) or openssl is not installed")

TTL = 2
RELOAD_S = 2  # how often a member reads its certificate files again (cluster/security/tls.h)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


class Pki:
    """CAs and certificates in a directory, made with the openssl commands of README.md."""

    def __init__(self, root):
        self.root = root

    def ca(self, name):
        cert, key = f"{self.root}/{name}.pem", f"{self.root}/{name}.key"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", key, "-out", cert)
        return cert, key

    def issue(self, ca, name, cert, key, sans="IP:127.0.0.1"):
        """A certificate `name` signed by `ca` ((cert, key)) for `sans`, written to `cert` and
        `key` each by a rename (a reader never sees half a file)."""
        tmp = tempfile.mkdtemp(dir=self.root)
        ext = f"{tmp}/ext"
        with open(ext, "w") as f:
            f.write(f"subjectAltName = {sans}\nextendedKeyUsage = serverAuth, clientAuth\n"
                    "basicConstraints = CA:FALSE\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-subj", f"/CN={name}", "-keyout", f"{tmp}/key", "-out", f"{tmp}/csr")
        openssl("x509", "-req", "-in", f"{tmp}/csr", "-CA", ca[0], "-CAkey", ca[1],
                "-set_serial", str(secrets.randbits(63)), "-days", "2", "-extfile", ext,
                "-out", f"{tmp}/cert")
        os.makedirs(os.path.dirname(cert), exist_ok=True)
        os.replace(f"{tmp}/key", key)
        os.replace(f"{tmp}/cert", cert)
        shutil.rmtree(tmp)
        return cert, key

    @staticmethod
    def bundle(path, *cas):
        """Writes the CA certificates `cas` into one file at `path`, by a rename."""
        with open(path + ".new", "w") as out:
            for ca in cas:
                with open(ca[0]) as f:
                    out.write(f.read())
        os.replace(path + ".new", path)


class TlsEtcd(Etcd):
    """One etcd member serving clients over TLS and requiring a client certificate its CA
    signed (--client-cert-auth --trusted-ca-file)."""

    def __init__(self, ca, server, client):
        self.ca, self.server_cert, self.client_cert = ca, server, client
        super().__init__()

    def start(self):
        url = "https://" + self.client
        self.proc = subprocess.Popen(
            ["etcd", "--name", "m", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
             "--initial-cluster", "m=" + self.peer, "--unsafe-no-fsync",
             "--cert-file", self.server_cert[0], "--key-file", self.server_cert[1],
             "--client-cert-auth", "--trusted-ca-file", self.ca[0]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.ctl("endpoint", "health", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("etcd did not come up")

    def ctl(self, *args, check=True):
        return subprocess.run(
            ["etcdctl", "--endpoints", "https://" + self.client, "--cacert", self.ca[0],
             "--cert", self.client_cert[0], "--key", self.client_cert[1],
             "--dial-timeout", "1s", "--command-timeout", "2s", *args],
            env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, timeout=10,
            check=check)


def handshake(port, ca, cert=None, check_hostname=True):
    """A TLS connection to 127.0.0.1:port offering h2, trusting `ca`, presenting `cert`
    ((cert, key)) if given. Returns the server's certificate (DER) once the server has spoken
    (gRPC's SETTINGS frame); raises ssl.SSLError or OSError when either side refuses. (With
    TLS 1.3 a server refuses a client's certificate after the client's handshake is done: the
    refusal is an alert on the first read.)"""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = check_hostname
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            der = s.getpeercert(binary_form=True)
            if not s.recv(1):
                raise ConnectionError("closed by the server")
            return der


def refused(port, ca, cert=None):
    try:
        handshake(port, ca, cert)
        return False
    except (ssl.SSLError, OSError):
        return True


def der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class TlsCluster:
    """etcd with TLS, agents and a gateway with mutual TLS; each member's certificate files
    at <root>/<member>/{cert,key}.pem, the cluster's CA file shared at <root>/cluster-ca.pem."""

    def __init__(self, root):
        self.root = root
        self.pki = Pki(root)
        self.etcd_ca = self.pki.ca("etcd-ca")
        self.etcd_client = self.pki.issue(self.etcd_ca, "member", f"{root}/etcd-client.pem",
                                          f"{root}/etcd-client.key")
        self.etcd = TlsEtcd(self.etcd_ca,
                            self.pki.issue(self.etcd_ca, "etcd", f"{root}/etcd.pem",
                                           f"{root}/etcd.key", "IP:127.0.0.1, DNS:localhost"),
                            self.etcd_client)
        self.url = "https://" + self.etcd.client
        self.ca = self.pki.ca("cluster-ca")
        self.ca_file = f"{root}/cluster-ca.pem"
        self.pki.bundle(self.ca_file, self.ca)
        self.agents, self.args = {}, {}
        self.gateway = None

    def files(self, member):
        return f"{self.root}/{member}/cert.pem", f"{self.root}/{member}/key.pem"

    def issue(self, member, ca, sans="IP:127.0.0.1"):
        return self.pki.issue(ca, member, *self.files(member), sans=sans)

    def tls_args(self, member):
        cert, key = self.files(member)
        return ("--cluster-tls-cert", cert, "--cluster-tls-key", key,
                "--cluster-tls-ca", self.ca_file, "--etcd-cacert", self.etcd_ca[0],
                "--etcd-cert", self.etcd_client[0], "--etcd-key", self.etcd_client[1])

    def start_agent(self, name, sans="IP:127.0.0.1"):
        if name not in self.args:
            self.issue(name, self.ca, sans)
            self.args[name] = ("--join", self.url, "--advertise", f"127.0.0.1:{free_port()}",
                               "--agent-id", name, "--lease-ttl", str(TTL),
                               "--data-dir", f"{self.root}/{name}/data",
                               "--log-level", "info", *self.tls_args(name))
        self.agents[name] = Server(*self.args[name])
        return self.agents[name]

    def agent_port(self, name):
        return int(self.args[name][self.args[name].index("--advertise") + 1].rsplit(":", 1)[1])

    def start_gateway(self):
        self.issue("gateway", self.ca)
        self.gateway = Server("--etcd", self.url, "--replicas", "2", "--log-level", "info",
                              *self.tls_args("gateway"), command="gateway")

    def live(self):
        return set(self.etcd.agents())

    def map(self, name):
        import base64
        import json
        out = self.etcd.ctl("get", "--prefix", "/vecgpu/collections/", "-w", "json").stdout
        for kv in json.loads(out).get("kvs", []):
            m = json.loads(base64.b64decode(kv["value"]))
            if m["name"] == name:
                return m
        return None

    def close(self):
        if self.gateway:
            self.gateway.stop()
        for a in self.agents.values():
            a.stop()
        self.etcd.close()


@pytest.fixture(scope="module")
def cluster():
    if not joins():
        pytest.skip("built without the etcd client")
    root = tempfile.mkdtemp(prefix="vecgpu-tls-")
    c = TlsCluster(root)
    try:
        c.start_agent("a1")
        c.start_agent("a2")
        c.start_gateway()
        assert wait_until(lambda: len(c.live()) == 2, 15), c.live()
        yield c
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)


def faissx_client(srv):
    from faissx.client.client import FaissXClient
    client = FaissXClient()
    client.configure(server=srv.endpoint, timeout=20)
    return client


def create(srv, name, dim=8, index_type="IDMap,Flat", **extra):
    return wait_until(lambda: call(srv, action="create_index", index_id=name, dimension=dim,
                                   index_type=index_type, **extra).get("success"), 15)


def add_ids(srv, name, x, ids):
    return call(srv, action="add_with_ids", index_id=name, vectors=rows(x),
                ids=[int(i) for i in ids])


def count(srv, name):
    return ok(call(srv, action="get_index_stats", index_id=name))["stats"]["vector_count"]


def test_a_replicated_collection_over_mutual_tls(cluster):
    c = cluster
    fx = faissx_client(c.gateway)
    name = uid("tls")
    assert wait_until(lambda: _try(lambda: fx.create_index(name, 8, "L2")), 15)
    m = c.map(name)
    assert sorted(m["shards"][0]["replicas"]) == ["a1", "a2"], m
    x = rand(200, 8, 1)
    fx.add_vectors(name, x)
    r = fx.search(name, x[[7, 150]], k=1)
    assert [q["indices"][0] for q in r["results"]] == [7, 150]
    # Acknowledged only once on both replicas: gateway -> primary -> replica, all over TLS.
    for a in ("a1", "a2"):
        assert count(c.agents[a], name) == 200
    # `cluster status` over TLS to etcd.
    st = subprocess.run([str(BINARY), "cluster", "status", "--etcd", c.url, "--json",
                         "--etcd-cacert", c.etcd_ca[0], "--etcd-cert", c.etcd_client[0],
                         "--etcd-key", c.etcd_client[1]], capture_output=True, text=True,
                        timeout=30)
    assert st.returncode == 0, st.stderr
    assert "a1" in st.stdout and "a2" in st.stdout and name in st.stdout


def _try(fn):
    try:
        fn()
        return True
    except Exception:
        return False


def test_the_agent_api_refuses_clients_without_a_certificate_of_the_cluster(cluster):
    import grpc
    c = cluster
    port = c.agent_port("a1")
    target = f"127.0.0.1:{port}"
    rogue = c.pki.ca("rogue-ca")
    rogue_cert = c.pki.issue(rogue, "rogue", f"{c.root}/rogue.pem", f"{c.root}/rogue.key")
    with open(c.ca_file, "rb") as f:
        ca = f.read()

    def list_call(creds):
        """The agent API's List with an empty request: a handler answers FAILED_PRECONDITION
        (API version 0); a refused connection is UNAVAILABLE."""
        if creds is None:
            channel = grpc.insecure_channel(target)
        else:
            channel = grpc.secure_channel(target, creds)
        with channel:
            try:
                channel.unary_unary("/vecgpu.agent.v1.Agent/List")(b"", timeout=5)
                return grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                return e.code(), e.details()

    def creds(cert=None):
        if cert is None:
            return grpc.ssl_channel_credentials(root_certificates=ca)
        with open(cert[0], "rb") as f, open(cert[1], "rb") as k:
            return grpc.ssl_channel_credentials(root_certificates=ca, private_key=k.read(),
                                                certificate_chain=f.read())

    assert list_call(None)[0] == grpc.StatusCode.UNAVAILABLE           # plaintext
    assert list_call(creds())[0] == grpc.StatusCode.UNAVAILABLE        # no certificate
    assert list_call(creds(rogue_cert))[0] == grpc.StatusCode.UNAVAILABLE  # another CA
    code, details = list_call(creds(c.files("gateway")))               # the cluster's CA
    assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, details)
    # The same at the TLS level, for both agents.
    for a in ("a1", "a2"):
        p = c.agent_port(a)
        assert refused(p, c.ca_file)
        assert refused(p, c.ca_file, rogue_cert)
        assert handshake(p, c.ca_file, c.files("gateway")) == der(c.files(a)[0])


def test_an_agent_whose_certificate_does_not_name_its_address_is_refused(cluster):
    c = cluster
    # At start: the agent checks its own certificate against its --advertise host.
    c.issue("a3", c.ca, sans="DNS:elsewhere.example")
    code, out = run_agent(c, *c.tls_args("a3"))
    assert code == 1 and "does not name '127.0.0.1'" in out and "cluster-tls-cert" in out, out

    # Replaced while it runs: the gateway checks the name on each new connection.
    a3 = c.start_agent("a3")
    try:
        assert wait_until(lambda: "/vecgpu/agents/a3" in c.live(), 15), c.live()
        c.issue("a3", c.ca, sans="DNS:elsewhere.example")
        want = der(c.files("a3")[0])
        assert wait_until(lambda: _handshake_or_none(c.agent_port("a3"), c.ca_file,
                                                     c.files("gateway"), False) == want,
                          4 * RELOAD_S)
        # With a1 and a2 draining, a new collection goes to a3 alone, which the gateway has
        # not called yet: the gateway's handshake refuses it, and the create fails naming it.
        etcd_tls = ("--etcd-cacert", c.etcd_ca[0], "--etcd-cert", c.etcd_client[0],
                    "--etcd-key", c.etcd_client[1])
        for a in ("a1", "a2"):
            d = subprocess.run([str(BINARY), "cluster", "drain", a, "--etcd", c.url, *etcd_tls],
                               capture_output=True, text=True, timeout=30)
            assert d.returncode == 0, d.stdout + d.stderr
        try:
            r = call(c.gateway, action="create_index", index_id=uid("tls-name"), dimension=8,
                     index_type="IDMap,Flat", replicas=1)
            fail(r, c.args["a3"][c.args["a3"].index("--advertise") + 1])
        finally:
            for a in ("a1", "a2"):
                subprocess.run([str(BINARY), "cluster", "drain", a, "--undo", "--etcd", c.url,
                                *etcd_tls], capture_output=True, text=True, timeout=30)
    finally:
        a3.stop()
        del c.agents["a3"]
        assert wait_until(lambda: "/vecgpu/agents/a3" not in c.live(), 10)


def test_certificates_and_the_ca_roll_without_restarts(cluster):
    c = cluster
    name = uid("tls-roll")
    assert create(c.gateway, name, replicas=2)
    x = rand(300, 8, 2)
    ok(add_ids(c.gateway, name, x[:100], range(100)))
    new_ca = c.pki.ca("cluster-ca-2")

    # 1. Every member trusts both CAs: a client of the new CA gets through.
    c.pki.bundle(c.ca_file, c.ca, new_ca)
    probe = c.pki.issue(new_ca, "probe", f"{c.root}/probe.pem", f"{c.root}/probe.key")
    for a in ("a1", "a2"):
        assert wait_until(lambda: not refused(c.agent_port(a), c.ca_file, probe),
                          4 * RELOAD_S), a
    # 2. Every member's certificate from the new CA: the ports present them.
    for member in ("a1", "a2", "gateway"):
        c.issue(member, new_ca)
    for a in ("a1", "a2"):
        want = der(c.files(a)[0])
        assert wait_until(lambda: _handshake_or_none(c.agent_port(a), c.ca_file, probe) == want,
                          4 * RELOAD_S), a
    # 3. The new CA only: a certificate of the old one is refused.
    old = c.pki.issue(c.ca, "old", f"{c.root}/old.pem", f"{c.root}/old.key")
    c.pki.bundle(c.ca_file, new_ca)
    for a in ("a1", "a2"):
        assert wait_until(lambda: refused(c.agent_port(a), c.ca_file, old), 4 * RELOAD_S), a
        assert not refused(c.agent_port(a), c.ca_file, probe)
    # Connections open before go on.
    ok(add_ids(c.gateway, name, x[100:150], range(100, 150)))

    # 4. New connections, made with the reloaded certificates and checked against the new CA
    # only: the replica stops, misses writes, and returns on its data; the primary sends it
    # what it missed and the placer puts it back in the in-sync set.
    m = c.map(name)["shards"][0]
    primary = m["primary"]
    replica = [r for r in m["replicas"] if r != primary][0]
    c.agents[replica].stop()
    assert wait_until(lambda: c.map(name)["shards"][0]["in_sync"] == [primary], 10), c.map(name)
    ok(add_ids(c.gateway, name, x[150:200], range(150, 200)))
    c.start_agent(replica)
    back = wait_until(lambda: sorted(c.map(name)["shards"][0]["in_sync"]) == ["a1", "a2"], 30)
    assert back, c.map(name)
    assert count(c.agents[replica], name) == 200
    ok(add_ids(c.gateway, name, x[200:300], range(200, 300)))
    assert count(c.agents[replica], name) == 300
    # A collection created now: the gateway creates each copy itself, on both agents.
    other = uid("tls-roll")
    assert create(c.gateway, other, replicas=2)
    assert sorted(c.map(other)["shards"][0]["replicas"]) == ["a1", "a2"]
    ok(add_ids(c.gateway, other, x[:10], range(10)))
    r = ok(call(c.gateway, action="search", index_id=other, query_vectors=rows(x[3:4]), k=1))
    assert r["results"][0]["indices"][0] == 3


def _handshake_or_none(port, ca, cert, check_hostname=True):
    try:
        return handshake(port, ca, cert, check_hostname)
    except (ssl.SSLError, OSError):
        return None


def run_agent(c, *tls):
    """`vecgpu serve --join` with the given TLS flags, expected to exit: (code, output)."""
    p = subprocess.run(
        [str(BINARY), "serve", "--port", str(free_port()), "--grpc-port", str(free_port()),
         "--metrics-port", str(free_port()), "--join", c.url,
         "--advertise", f"127.0.0.1:{free_port()}", *tls], capture_output=True, text=True,
        timeout=60)
    return p.returncode, p.stdout + p.stderr


def test_an_agent_without_etcds_client_certificate_cannot_join(cluster):
    c = cluster
    code, out = run_agent(c, "--etcd-cacert", c.etcd_ca[0])
    assert code != 0 and "TLS handshake" in out and c.url in out, out
    # Trusting another CA than etcd's own (here: the system's roots).
    code, out = run_agent(c, "--etcd-cert", c.etcd_client[0], "--etcd-key", c.etcd_client[1])
    assert code != 0 and "TLS handshake" in out, out
    # Flags that do not go together are refused before anything starts.
    code, out = run_agent(c, "--etcd-cert", c.etcd_client[0])
    assert code == 2 and "etcd-key" in out, out
    code, out = run_agent(c, "--etcd-cacert", f"{c.root}/no-such.pem")
    assert code == 2 and "no-such.pem" in out, out
    assert set(c.live()) == {"/vecgpu/agents/a1", "/vecgpu/agents/a2"}
