"""What the cluster scripts (kill_loop.py, chaos.py) and the network-fault tests share: child
processes on free loopback ports (etcd members, `vecgpu serve --join` agents, gateways),
`vecgpu cluster status --json`, faissx client threads that write and search while faults
happen, and the final check of every acknowledged id.

Everything runs the binary named by VECGPU_BIN (default build/vecgpu) and Debian's `etcd`.
"""
import base64
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import zmq

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("VECGPU_BIN", ROOT / "build" / "vecgpu"))
INDEX_TYPE = "IDMap,Flat"  # ids chosen by the clients (PROTOCOL.md: plain factory strings)
now = time.monotonic


def logger(tag):
    def log(msg):
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    return log


# ----------------------------------------------------------------------------- processes

_given_ports = set()


def _ephemeral_range():
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A free loopback port never handed out before by this process, below the kernel's
    ephemeral range where it can: a restarted agent takes its ports again, and a port the
    kernel may give to any client's connection meanwhile would be taken."""
    lo, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, lo) if lo > 21000 else 0
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no fresh free port")


class Children:
    """Every process a script or test started. kill_all() may run from several places
    (finally, atexit, a watchdog); it is idempotent (SIGKILL ends a SIGSTOPped child too).
    Thread-safe."""

    def __init__(self):
        self._procs = []
        self._lock = threading.Lock()

    def start(self, args, log_path):
        with open(log_path, "ab") as out:
            proc = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        with self._lock:
            self._procs.append(proc)
        return proc

    def pids(self):
        with self._lock:
            return [p.pid for p in self._procs if p.poll() is None]

    def kill_all(self):
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


def help_of(command):
    return subprocess.run([str(BINARY), command, "--help"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=20).stdout


def tail(path, lines=15):
    try:
        return "".join(pathlib.Path(path).read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


class EtcdCluster:
    """`members` etcd members on free loopback ports (one cluster: --initial-cluster names
    them all), each with its own data directory under `workdir`. A member killed keeps its
    data and rejoins on start(i). `client_urls` are the members' own client URLs (the
    tests' view, never through a proxy)."""

    def __init__(self, children, workdir, members=1):
        self.children, self.workdir = children, pathlib.Path(workdir)
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_urls = [f"http://127.0.0.1:{free_port()}" for _ in self.names]
        self.procs = [None] * members
        self.cluster = ",".join(f"{n}={u}" for n, u in zip(self.names, self.peer_urls))
        for i in range(members):
            self.start(i)

    @property
    def client_urls(self):
        return [f"http://127.0.0.1:{p}" for p in self.client_ports]

    @property
    def url(self):
        """Every member, comma-separated (what --etcd and --join take)."""
        return ",".join(self.client_urls)

    def start(self, i):
        url = self.client_urls[i]
        self.procs[i] = self.children.start(
            ["etcd", "--name", self.names[i], "--data-dir", self.workdir / f"etcd-{self.names[i]}",
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", self.peer_urls[i],
             "--initial-advertise-peer-urls", self.peer_urls[i],
             "--initial-cluster", self.cluster, "--initial-cluster-state", "new",
             "--initial-cluster-token", f"vecgpu-{os.getpid()}-{self.client_ports[0]}",
             "--unsafe-no-fsync"], self.workdir / f"etcd-{self.names[i]}.log")

    def kill(self, i):
        """kill -9 of member i (its data stays)."""
        if self.procs[i] is not None and self.procs[i].poll() is None:
            self.procs[i].kill()
            self.procs[i].wait()

    def stop_all(self):
        for i in range(len(self.names)):
            self.kill(i)

    def start_all(self):
        for i in range(len(self.names)):
            if self.procs[i] is None or self.procs[i].poll() is not None:
                self.start(i)

    def alive(self, i):
        return self.procs[i] is not None and self.procs[i].poll() is None

    def healthy(self, i):
        """Member i answers /health with true (it has a leader and serves)."""
        try:
            with socket.create_connection(("127.0.0.1", self.client_ports[i]), timeout=1):
                pass
            import urllib.request
            with urllib.request.urlopen(self.client_urls[i] + "/health", timeout=1) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout=30.0, members=None):
        deadline = now() + timeout
        members = range(len(self.names)) if members is None else members
        while now() < deadline:
            for i in members:
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"etcd member {self.names[i]} exited with "
                                       f"{self.procs[i].returncode}")
            if all(self.healthy(i) for i in members):
                return
            time.sleep(0.1)
        raise RuntimeError("etcd did not come up")

    def ctl(self, *args, timeout=10):
        return subprocess.run(["etcdctl", "--endpoints", ",".join(
            u[len("http://"):] for u in self.client_urls), "--dial-timeout", "1s",
            "--command-timeout", "3s", *args], env={**os.environ, "ETCDCTL_API": "3"},
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def _endpoint_status(self, i):
        r = subprocess.run(["etcdctl", "--endpoints", self.client_urls[i][len("http://"):],
                            "--dial-timeout", "1s", "--command-timeout", "2s", "endpoint",
                            "status", "-w", "json"], env={**os.environ, "ETCDCTL_API": "3"},
                           capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        try:
            return json.loads(r.stdout)[0]["Status"]
        except (ValueError, IndexError, KeyError):
            return None

    def leader(self):
        """The index of the member that leads the raft group now, or None."""
        for i in range(len(self.names)):
            st = self.alive(i) and self._endpoint_status(i)
            if st and st["leader"] == st["header"]["member_id"]:
                return i
        return None

    def move_leader(self, i):
        """Makes member i the leader (etcdctl move-leader); True when it is."""
        if self.leader() == i:
            return True
        st = self._endpoint_status(i)
        if not st:
            return False
        self.ctl("move-leader", format(st["header"]["member_id"], "x"))
        deadline = now() + 10
        while now() < deadline:
            if self.leader() == i:
                return True
            time.sleep(0.2)
        return False

    def get_prefix(self, prefix):
        """key -> decoded JSON value under `prefix` (None when etcd did not answer)."""
        r = self.ctl("get", "--prefix", prefix, "-w", "json")
        if r.returncode != 0:
            return None
        out = {}
        for kv in json.loads(r.stdout).get("kvs", []):
            try:
                out[base64.b64decode(kv["key"]).decode()] = json.loads(
                    base64.b64decode(kv["value"]))
            except ValueError:
                pass
        return out


class Agent:
    """`vecgpu serve --join`: restarts reuse its data directory, ports and id. `advertise`
    is what gateways and peers dial (a proxy's port where there is one); `agent_port` is
    where its agent API listens when that differs."""

    def __init__(self, children, workdir, index, join_url, lease_ttl, grpc, advertise=None,
                 agent_port=None, extra=()):
        self.children, self.id = children, f"agent{index}"
        self.data_dir = pathlib.Path(workdir) / self.id
        self.log_path = pathlib.Path(workdir) / f"{self.id}.log"
        self.advertise = advertise or f"127.0.0.1:{free_port()}"
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"  # its own FAISSx front end
        self.args = ["serve", "--join", join_url, "--advertise", self.advertise,
                     "--agent-id", self.id, "--lease-ttl", lease_ttl, "--data-dir", self.data_dir,
                     "--port", self.port, "--metrics-port", free_port(), "--log-level", "info"]
        if agent_port:
            self.args += ["--agent-port", agent_port]
        if grpc:
            self.args += ["--grpc-port", free_port()]
        self.args += list(extra)
        self.proc = None
        self.starts = 0
        self.stopped = False  # SIGSTOPped

    def start(self):
        self.proc = self.children.start([BINARY, *self.args], self.log_path)
        self.starts += 1
        self.stopped = False

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def sigstop(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def sigcont(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.alive() else None


class Gateway:
    """`vecgpu gateway --etcd URL` with its own FAISSx (and gRPC) ports."""

    def __init__(self, children, workdir, index, etcd_url, grpc, extra=()):
        self.children, self.id = children, f"gateway{index}"
        self.log_path = pathlib.Path(workdir) / f"{self.id}.log"
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.args = ["gateway", "--etcd", etcd_url, "--port", self.port,
                     "--metrics-port", free_port(), "--log-level", "info"]
        self.grpc_target = None  # "127.0.0.1:port" of its gRPC front end (Vald, vecgpu.v1)
        if grpc:
            grpc_port = free_port()
            self.args += ["--grpc-port", grpc_port]
            self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.args += list(extra)
        self.proc = None

    def start(self):
        self.proc = self.children.start([BINARY, *self.args], self.log_path)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.alive() else None

    def wait_ready(self, timeout=30.0):
        deadline = now() + timeout
        while now() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.id} exited (see {self.log_path.name}):\n"
                                   + tail(self.log_path))
            if (raw_call(self.endpoint, {"action": "ping"}, 500) or {}).get("success"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.id} did not answer ping")


# ----------------------------------------------------------------------------- cluster state

def cluster_status(etcd_url):
    """`vecgpu cluster status --json` (exit 3 only means unhealthy shards), or None."""
    try:
        r = subprocess.run([str(BINARY), "cluster", "status", "--etcd", etcd_url, "--json"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode not in (0, 3):
        return None
    try:
        return json.loads(r.stdout)
    except ValueError:
        return None


def fully_in_sync(status, agent_ids, collections):
    """Every agent registered, and every shard of our collections with a live primary and
    an in-sync set that is its whole replica set (at least `replication` of them)."""
    if status is None:
        return False
    if not set(agent_ids) <= {m["id"] for m in status["members"]}:
        return False
    maps = {c["name"]: c for c in status["collections"]}
    for name in collections:
        c = maps.get(name)
        if c is None:
            return False
        for s in c["shards"]:
            if not s["primary_live"] or set(s["in_sync"]) != set(s["replicas"]):
                return False
            if len(s["in_sync"]) < c["replication"]:
                return False
    return True


def holders(status, collections, role="replicas"):
    """agent id -> names of our collections whose shards it holds (role "replicas") or
    leads (role "primary"); a name once per shard."""
    held = {}
    for c in (status or {}).get("collections", []):
        if c["name"] in collections:
            for s in c["shards"]:
                for a in (s["replicas"] if role == "replicas" else [s["primary"]]):
                    held.setdefault(a, []).append(c["name"])
    return held


def shard_name(name, shard, shards):
    """The agents' collection of shard `shard` (ARCHITECTURE.md: `c#i` when S > 1)."""
    return name if shards == 1 else f"{name}#{shard}"


# ----------------------------------------------------------------------------- clients

def raw_call(endpoint, request, timeout_ms=10000):
    """One FAISSx request (msgpack over a ZeroMQ REQ socket); None when no answer came."""
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(timeout_ms))
    s.setsockopt(zmq.SNDTIMEO, int(timeout_ms))
    s.connect(endpoint)
    try:
        s.send(msgpack.packb(request))
        return msgpack.unpackb(s.recv(), raw=False)
    except zmq.Again:
        return None
    finally:
        s.close()


def connect(endpoint, timeout):
    """A FaissXClient of its own (zmq sockets are per thread), connected and pinged."""
    from faissx.client.client import FaissXClient
    client = FaissXClient()
    client.configure(server=endpoint, timeout=timeout)
    return client


def add_with_ids(client, collection, vectors, ids):
    """The request faissx's IndexIDMap.add_with_ids sends (its _add_with_ids_remote_batch);
    raises unless the server acknowledged it."""
    client._send_request({"action": "add_with_ids", "index_id": collection,
                          "vectors": vectors.tolist(), "ids": ids.tolist()})


class ClientWorker(threading.Thread):
    """One client: adds a batch under fresh ids, then searches for a vector it added (k of
    `args.k`, default 5), over and over, round robin over the collections. Records every
    call; keeps the acknowledged ids and vectors. Only its own thread writes its fields until
    stop is set and it is joined. `args` needs seed, batch, dim, pause_ms, client_timeout."""

    def __init__(self, index, endpoint, collections, args, stop, log=None):
        super().__init__(name=f"client{index}", daemon=True)
        self.index, self.endpoint, self.collections = index, endpoint, collections
        self.args, self.stop, self.log = args, stop, log or logger("client")
        self.k = getattr(args, "k", 5)
        self.writes = []    # (sent, answered, ok, n ids, error text or None)
        self.searches = []  # (sent, answered, ok, found the id or None, error text or None)
        self.acked = {c: ([], []) for c in collections}  # name -> ([ids], [vectors])
        self._pool = []     # (collection, batch number) of acknowledged batches
        self.error = None   # what stopped the thread early

    def run(self):
        try:
            self._loop()
        except Exception as e:  # a bug here, not in the cluster: fails the run, loudly
            self.error = f"{self.name}: {e!r}"
            self.log(self.error)

    def _loop(self):
        a = self.args
        rng = np.random.default_rng(a.seed * 1000 + self.index)
        pick = random.Random(a.seed * 1000 + self.index)
        next_id = (self.index + 1) * 10**12
        client, op = None, 0
        while not self.stop.is_set():
            name = self.collections[(op + self.index) % len(self.collections)]
            op += 1
            if client is None:
                client = self._reconnect()
            ids = np.arange(next_id, next_id + a.batch, dtype=np.int64)
            next_id += a.batch
            x = rng.standard_normal((a.batch, a.dim)).astype(np.float32)
            sent = now()
            err = self._call(client, lambda: add_with_ids(client, name, x, ids))
            self.writes.append((sent, now(), err is None, a.batch, err))
            if err is None:
                self.acked[name][0].append(ids)
                self.acked[name][1].append(x)
                self._pool.append((name, len(self.acked[name][0]) - 1))
            else:
                client = None
            if self._pool:
                qname, b = pick.choice(self._pool)
                row = pick.randrange(a.batch)
                want = int(self.acked[qname][0][b][row])
                q = self.acked[qname][1][b][row:row + 1]
                if client is None:
                    client = self._reconnect()
                sent = now()
                got = []
                err = self._call(client, lambda: got.append(client.search(qname, q, k=self.k)))
                found = None
                if err is None:
                    top = (got[0].get("results") or [{}])[0].get("indices") or [-1]
                    found = int(top[0]) == want
                else:
                    client = None
                self.searches.append((sent, now(), err is None, found, err))
            time.sleep(a.pause_ms / 1000)

    @staticmethod
    def _call(client, fn):
        """None when it succeeded, else the error's text."""
        if client is None:
            return "not connected"
        try:
            fn()
            return None
        except Exception as e:  # faissx raises RuntimeError/TimeoutError and drops its socket
            return str(e)[:300] or type(e).__name__

    def _reconnect(self):
        try:
            return connect(self.endpoint, self.args.client_timeout)
        except Exception:
            time.sleep(0.2)
            return None


def merge_acked(workers, collections):
    """name -> (ids, vectors) of every acknowledged write of every worker."""
    acked = {c: ([], []) for c in collections}
    for w in workers:
        for c, (i, v) in w.acked.items():
            acked[c][0].extend(i)
            acked[c][1].extend(v)
    return acked


# ----------------------------------------------------------------------------- checks

def verify(endpoint, acked, timeout, deadline):
    """Looks every acknowledged id up through the gateway. Returns (lost ids, unverified)."""
    lost, unverified = [], 0
    client = None

    def retry(fn):
        nonlocal client
        while now() < deadline:
            try:
                if client is None:
                    client = connect(endpoint, timeout)
                return fn(client)
            except Exception:
                client = None
                time.sleep(0.5)
        return None

    for name, (ids, vecs) in acked.items():
        if not ids:
            continue
        ids, vecs = np.concatenate(ids), np.concatenate(vecs)
        for start in range(0, len(ids), 500):
            qi, qv = ids[start:start + 500], vecs[start:start + 500]
            r = retry(lambda c: c.search(name, qv, k=1))
            if r is None:
                unverified += len(qi)
                continue
            results = r.get("results") or []
            for j in range(len(qi)):
                res = results[j] if j < len(results) else {}
                want, v = int(qi[j]), qv[j]
                tol = 1e-4 * (1.0 + float(v @ v))
                top, dist = res.get("indices") or [-1], res.get("distances") or [np.inf]
                if int(top[0]) == want and dist[0] <= tol:
                    continue
                # Not the nearest at ~0: is it stored at all?
                if now() > deadline:
                    unverified += 1
                    continue
                try:
                    if client is None:
                        client = connect(endpoint, timeout)
                    got = np.asarray(client.reconstruct(name, want)["vector"], dtype=np.float32)
                    if np.array_equal(got, v):
                        continue
                except Exception:
                    client = None
                lost.append((name, want))
    return lost, unverified


def run_bounded(args, prefix, run, headline):
    """A harness's main after its arguments: `run(args, children, workdir, t0, deadline)` in a
    fresh work directory (`prefix`), every process it starts killed on exit (finally, atexit,
    SIGTERM, SIGHUP) and at --max-seconds by a watchdog (exit 3, a failing JSON); the JSON
    summary printed (and written to --json), `headline(summary)` logged; 0 when it passed."""
    import atexit
    import json as json_
    import shutil
    import tempfile
    log = logger(prefix.strip("-").split("-", 1)[-1])
    t0 = now()
    deadline = t0 + args.max_seconds
    children = Children()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(children.kill_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))

    def hard_stop():
        log(f"hard bound --max-seconds {args.max_seconds} reached: killing everything")
        children.kill_all()
        if args.json:
            args.json.write_text(json_.dumps({"verdict": "fail",
                                              "reasons": ["--max-seconds reached"]}) + "\n")
        if not args.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
        os._exit(3)

    watchdog = threading.Timer(args.max_seconds, hard_stop)
    watchdog.daemon = True
    watchdog.start()
    summary = None
    try:
        log(f"work directory {workdir}, seed {args.seed}")
        summary = run(args, children, workdir, t0, deadline)
    finally:
        watchdog.cancel()
        children.kill_all()
        if summary is None or summary["verdict"] != "pass":
            for f in sorted(workdir.glob("*.log")):
                log(f"--- last lines of {f.name}:\n{tail(f)}")
        if args.keep_dir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = json_.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    log(headline(summary))
    return 0 if summary["verdict"] == "pass" else 1
