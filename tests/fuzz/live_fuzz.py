#!/usr/bin/env python3
"""Bounded live fuzzer for the vecgpu server (FAISSx protocol: ZeroMQ REQ/ROUTER + msgpack).

Starts `BINARY serve` on a free port, creates one index of every kind in a few tenants, then
lets --clients threads send valid-then-mutated requests for every action of PROTOCOL.md while a
probe checks every ~2 s that the server still answers. Exits 1 on a crash, a stall, a reply that
is not a msgpack map with `success` (or has invalid UTF-8), a sanitizer report, or an unclean
SIGTERM shutdown; exits 0 otherwise. Each client i draws from random.Random(seed + i).

  .venv/bin/python tests/fuzz/live_fuzz.py --binary build/vecgpu --seconds 60 --clients 4
"""
import argparse, collections, os, random, signal, socket, struct, subprocess, sys, tempfile
import threading, time, urllib.request
from collections import namedtuple

import msgpack
import zmq

NAN, INF = float("nan"), float("inf")
BAD_UTF8 = b"idx\xff\xfe".decode("utf-8", "surrogateescape")  # packs as a str of invalid UTF-8
PACK = dict(use_bin_type=True, unicode_errors="surrogateescape")

# One index of every kind per tenant; a wrapper's type names its base, which comes before it.
Spec = namedtuple("Spec", "name type dim binary train ids")
KINDS = [Spec(*k) for k in [
    ("flat", "L2", 16, False, False, False), ("ip", "IP", 8, False, False, False),
    ("ivf", "IVF4", 16, False, True, False), ("ivfpq", "IVF4,PQ2x4", 8, False, True, False),
    ("ivfsq", "IVF4_SQ8", 16, False, True, False), ("hnsw", "HNSW8", 16, False, False, False),
    ("pq", "PQ2x4", 8, False, True, False), ("sq", "SQ8", 64, False, True, False),
    ("idmap", "IDMap:flat", 16, False, False, True), ("idmap2", "IDMap2:ivf", 16, False, False, True),
    ("fidmap", "IDMap2,Flat", 8, False, False, True), ("bflat", "BINARY_FLAT", 64, True, False, False),
    ("bivf", "BINARY_IVF4", 64, True, True, False), ("bhash", "BINARY_HASH8", 64, True, False, False),
    ("pca", "PCA4,HNSW8", 8, False, True, False)]]
BY_NAME = {s.name: s for s in KINDS}
TENANTS = ["t0", "t1", "t2"]
PROBE_TENANT, PROBE_INDEX, PROBE_DIM = "probe", "probe-flat", 8  # never touched by the clients

EXTRA_TYPES = ["Flat", "IVF", "HNSW", "PQ", "IVF2_IP", "IVF4_SQ4", "HNSW4_IP", "SQfp16", "LSH",
               "IVF4,Flat", "OPQ2,IVF4,PQ2", "PCA4,Flat", "IDMap,Flat", "BINARY_IVF", "BINARY_HASH4"]
BAD_TYPES = ["IVF0", "IVF100000", "PQ3x4", "PQ2x64", "HNSW0", "HNSW100000", "BINARY_IVF0",
             "BINARY_HASH0", "BINARY_HASH64", "PCA100,Flat", "IDMap:", "IDMap:idmap",
             "IDMap2:IDMap:flat", "IDMap:nope", "SQ3", "IVF4,PQ0", "Flat,Flat", "", "x" * 300]
BAD_IDS = [BAD_UTF8, "a\x00b", "flat\x00", "", "x" * 300, "x" * 5000, b"flat", "../flat", "é\u2028",
           "IDMap:flat", 0, None, ["flat"]]
ACTIONS = {  # action -> weight; destructive actions are rarer so indexes keep their data
    "ping": 1, "create_index": 2, "add_vectors": 3, "add_with_ids": 2, "batch_add_with_ids": 2,
    "search": 4, "hybrid_search": 2, "search_and_reconstruct": 3, "range_search": 3,
    "train_index": 2, "reconstruct": 3, "reconstruct_n": 3, "get_vectors": 3, "remove_ids": 2,
    "replace_vector": 2, "get_index_stats": 1, "get_index_status": 1, "get_index_info": 1,
    "list_indexes": 1, "list_indices": 1, "delete_index": 0.3, "reset": 0.3, "clear": 0.3,
    "set_parameter": 2, "get_parameter": 1, "merge_indices": 2, "compute_clustering": 1,
    "optimize_index": 1, "recluster_index": 1, "apply_transform": 2, "get_transform_info": 1,
    "snapshot": 0.3}
DESTRUCTIVE = {"delete_index", "reset", "clear", "remove_ids", "recluster_index", "merge_indices"}
NO_INDEX = {"ping", "list_indexes", "list_indices", "compute_clustering", "create_index",
            "merge_indices", "snapshot"}
VEC_KEYS = ("vectors", "query_vectors", "training_vectors", "vector")
NUM_KEYS = ("k", "start_idx", "num_vectors", "limit", "n_clusters", "niter", "radius", "dimension",
            "batch_size", "optimization_level", "sample_ratio", "value", "id", "idx", "params")
NAME_KEYS = ("index_id", "target_index_id", "tenant_id", "index_type", "parameter", "metric_type",
             "source_index_ids")
PARAMS = ("nprobe", "efSearch", "ef_search", "ef", "efConstruction", "bogus")
HUGE = [0, -1, -2**63, 2**31 - 1, 2**31, 2**32 + 1, 2**53 + 1, 2**63 - 1, 2**64 - 1, 1e18, 1e300,
        -1e300, NAN, INF, -INF, 0.5]
BAD_COMPONENTS = [NAN, INF, -INF, "1", None, True, 2**64 - 1, -2**63, 1e20, [1.0], {}]
WEIRD = ["x", "", "1", 0, -7, 2**64 - 1, -2**63, 3.25, NAN, INF, -INF, None, True, False, [],
         [1, "a"], [[1.0, 2.0], [3.0]], {"k": 1}, {}, b"", b"\x00\xff", BAD_UTF8]


# ---------------------------------------------------------------- valid requests
def rows(rng, spec, n):
    if spec.binary:  # binary indexes take one 0/1 float per bit
        return [[float(rng.getrandbits(1)) for _ in range(spec.dim)] for _ in range(n)]
    return [[round(rng.uniform(-1, 1), 3) for _ in range(spec.dim)] for _ in range(n)]


def as_bin(spec, m):
    """The vecgpu `bin` form: packed bits (LSB first) for binary indexes, else float32 LE."""
    if spec.binary:
        return bytes(sum(int(r[8 * j + b]) << b for b in range(8))
                     for r in m for j in range(len(r) // 8))
    return struct.pack(f"<{sum(map(len, m))}f", *[x for r in m for x in r])


def template(rng, action, tenant, spec):
    """A valid request of `action` for index `spec` of `tenant`."""
    r = {"action": action, "tenant_id": tenant}
    if rng.random() < 0.1:
        r["request_id"] = rng.choice([rng.randrange(1000), "req-%d" % rng.randrange(1000)])
    if action not in NO_INDEX:
        r["index_id"] = spec.name
    vec = lambda lo, hi: rows(rng, spec, rng.randint(lo, hi))
    if action == "create_index":
        s = rng.choice(KINDS)
        r.update(index_id="tmp%d" % rng.randrange(6), dimension=s.dim,
                 index_type=rng.choice([s.type, s.type, rng.choice(EXTRA_TYPES)]))
        if rng.random() < 0.2:
            r["metadata"] = {"owner": "fuzz", "n": rng.randrange(9)}
    elif action in ("add_vectors", "add_with_ids", "batch_add_with_ids"):
        r["vectors"] = vec(1, 8)
        if action != "add_vectors" or spec.ids:
            r["ids"] = [rng.randrange(200) for _ in r["vectors"]]
        if action == "batch_add_with_ids":
            r["batch_size"] = rng.randint(1, 8)
    elif action in ("search", "hybrid_search", "search_and_reconstruct", "range_search"):
        r["query_vectors"] = vec(1, 3)
        if action == "range_search":
            r["radius"] = rng.randint(0, 32) if spec.binary else round(rng.uniform(0, 6), 2)
        else:
            r["k"] = rng.randint(1, 12)
        if rng.random() < 0.3:
            r["params"] = {rng.choice(PARAMS[:4]): rng.randint(1, 64)}
        if action != "search_and_reconstruct" and rng.random() < 0.2:
            r["binary"] = True
        if action == "hybrid_search" and rng.random() < 0.2:
            r["metadata_filter"] = {"owner": "fuzz"}
    elif action == "train_index":
        r["training_vectors"] = vec(32, 64)
    elif action == "reconstruct":
        r.update({rng.choice(["id", "idx"]): rng.randrange(40), "binary": rng.random() < 0.2})
    elif action in ("reconstruct_n", "get_vectors"):
        r.update({"start_idx": rng.randrange(40), "binary": rng.random() < 0.2,
                  "num_vectors" if action == "reconstruct_n" else "limit": rng.randint(0, 20)})
    elif action == "remove_ids":
        r["ids"] = [rng.randrange(200) for _ in range(rng.randint(1, 4))]
    elif action == "replace_vector":
        r.update(id=rng.randrange(200), vector=vec(1, 1)[0])
    elif action in ("set_parameter", "get_parameter"):
        r["parameter"] = rng.choice(PARAMS[:2] + PARAMS[4:])
        if action == "set_parameter":
            r["value"] = rng.randint(1, 64)
    elif action == "merge_indices":
        same = [s.name for s in KINDS if s.dim == spec.dim and s.binary == spec.binary]
        r.update(target_index_id=spec.name, source_index_ids=rng.sample(same, min(2, len(same))))
    elif action == "compute_clustering":
        r.update(vectors=rows(rng, BY_NAME["ip"], rng.randint(16, 48)), dimension=8,
                 n_clusters=rng.randint(2, 6), metric_type=rng.choice(["L2", "IP"]),
                 niter=rng.randint(1, 5))
    elif action == "optimize_index":
        r["optimization_level"] = rng.randint(1, 3)
    elif action == "recluster_index":
        r.update(n_clusters=rng.randint(2, 8), sample_ratio=rng.choice([0.5, 1.0]))
    elif action == "apply_transform":
        r["vectors"] = vec(1, 4)
    for k in VEC_KEYS[:3]:  # the vecgpu extension: vector fields as float32 / packed-bit `bin`
        if k in r and rng.random() < 0.2:
            r[k] = as_bin(BY_NAME["ip"] if action == "compute_clustering" else spec, r[k])
    return r


def recreate(rng, tenant, spec):
    """Valid requests that (re)build `spec` in `tenant`: its base first, create, train, add."""
    out = recreate(rng, tenant, BY_NAME[spec.type.split(":")[1]]) if ":" in spec.type else []
    base = {"tenant_id": tenant, "index_id": spec.name}
    out.append(dict(base, action="create_index", dimension=spec.dim, index_type=spec.type))
    if spec.train:
        out.append(dict(base, action="train_index", training_vectors=rows(rng, spec, 64)))
    out.append(dict(base, action="add_vectors", vectors=rows(rng, spec, 20)))
    if spec.ids:
        out[-1]["ids"] = rng.sample(range(200), 20)
    return out


# ---------------------------------------------------------------- mutations
def m_shape(rng, r):
    """Ragged / short / long / empty / deeper / repeated vectors, bad components, cut `bin`s."""
    k = rng.choice([k for k in VEC_KEYS if k in r] or [None])
    v = r.get(k)
    if isinstance(v, bytes):
        r[k] = v[:rng.randrange(len(v) + 1)] if rng.random() < 0.5 else v + bytes(rng.randint(1, 7))
    if not isinstance(v, list) or not v:
        return
    m = v if isinstance(v[0], list) else [v]  # a 1-D `vector` is one row
    row, op = m[rng.randrange(len(m))], rng.randrange(7)
    if op == 0 and row:
        row.pop()
    elif op == 1:
        row.append(1.0)
    elif op == 4 and row:
        row[rng.randrange(len(row))] = rng.choice(BAD_COMPONENTS)
    elif op in (2, 3, 5, 6):
        r[k] = {2: lambda: rng.choice([[], [[]], [[], []]]), 3: lambda: [m],
                5: lambda: [x + x for x in m], 6: lambda: m * rng.choice([0, 50])}[op]()


def m_ids(rng, r):
    """Negative / huge / duplicated / non-integer ids, one id too many or too few."""
    ids, bad = r.get("ids"), [-1, -2**63, 2**63 - 1, 2**64 - 1, 2**40, 1.5, "3", None, NAN, [1]]
    if not (isinstance(ids, list) and ids):
        r[rng.choice(["id", "idx"])] = rng.choice(bad)
    else:
        [lambda: ids.__setitem__(rng.randrange(len(ids)), rng.choice(bad)),
         lambda: ids.__setitem__(slice(None), [ids[0]] * len(ids)),
         lambda: ids.append(rng.randrange(200)), ids.pop][rng.randrange(4)]()


def m_name(rng, r):  # bad index ids / tenants / types: non-UTF-8, NUL, long, not strings
    k = rng.choice(NAME_KEYS)
    r[k] = ([rng.choice(BAD_IDS) for _ in range(rng.randint(0, 3))] if k == "source_index_ids"
            else rng.choice(BAD_IDS + BAD_TYPES if k == "index_type" else BAD_IDS))


def m_huge(rng, r):  # huge / negative / non-finite k, start_idx, nprobe, efSearch, radius, ...
    k = rng.choice(NUM_KEYS)
    r[k] = {rng.choice(PARAMS): rng.choice(HUGE)} if k == "params" else rng.choice(HUGE)


MUTATIONS = [
    lambda rng, r: r and r.pop(rng.choice(list(r))),  # drop a field
    lambda rng, r: r and r.__setitem__(rng.choice(list(r)), rng.choice(WEIRD)),  # retype one
    m_shape, m_shape, m_ids, m_huge, m_huge, m_name, m_name,
    lambda rng, r: r.__setitem__(  # a `bin` vector field of a random length
        rng.choice([k for k in VEC_KEYS if k in r] or list(VEC_KEYS)),
        rng.randbytes(rng.randrange(300))),
    lambda rng, r: r.__setitem__("action", rng.choice(
        ["", "nope", "ping\x00", "Search", BAD_UTF8, "search ", 7, None])),
    lambda rng, r: r.__setitem__("binary", rng.choice([True, 1, "yes", None, 2**64 - 1])),
]


def raw_mutate(rng, b):
    """Byte-level damage to a packed request."""
    b, op = bytearray(b), rng.randrange(7)
    if op == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncation
        del b[rng.randrange(len(b)):]
    elif op in (2, 3):  # junk appended or inserted
        p = len(b) if op == 2 else rng.randrange(len(b) + 1)
        b[p:p] = rng.randbytes(rng.randint(1, 16))
    elif op == 4:
        b = rng.randbytes(rng.randrange(64))
    elif op == 5:  # valid msgpack that is not a map
        b = msgpack.packb(rng.choice([[1, 2], 5, "search", None, [{"action": "ping"}]]))
    else:  # deep nesting, or containers that claim far more elements than they hold
        b = rng.choice([b"\x91" * rng.randint(100, 5000) + b"\xc0", b"\xdf\xff\xff\xff\xff",
                        b"\x81\xa6action\xdd\xff\xff\xff\xff"])
    return bytes(b)


# ---------------------------------------------------------------- transport and checks
def new_socket(ctx, endpoint):
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def call(ctx, endpoint, req, timeout_s):
    """One round trip on a fresh socket; returns the decoded reply or None on timeout."""
    s = new_socket(ctx, endpoint)
    try:
        s.send(msgpack.packb(req, **PACK))
        return msgpack.unpackb(s.recv(), raw=False) if s.poll(timeout_s * 1000) else None
    finally:
        s.close()


class Fuzz:
    def __init__(self, args, endpoint, proc):
        self.args, self.endpoint, self.proc = args, endpoint, proc
        self.ctx = zmq.Context.instance()
        self.lock = threading.Lock()
        self.stop, self.abort = threading.Event(), threading.Event()  # abort: the server is gone
        self.sent, self.codes = 0, collections.Counter()
        self.findings = collections.defaultdict(list)  # kind -> [description]
        self.history = [collections.deque(maxlen=20) for _ in range(args.clients)]
        self.in_flight = [False] * args.clients

    def finding(self, kind, text):
        with self.lock:
            self.findings[kind].append(text)
        if kind in ("crash", "stall"):
            self.stop.set()

    def next_request(self, rng, pending):
        if pending:  # rebuild what a destructive request may have emptied or deleted
            return pending.popleft()
        action = rng.choices(list(ACTIONS), list(ACTIONS.values()))[0]
        tenant, spec = rng.choice(TENANTS), rng.choice(KINDS)
        req = template(rng, action, tenant, spec)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            rng.choice(MUTATIONS)(rng, req)
        if action in DESTRUCTIVE or (action == "create_index" and rng.random() < 0.05):
            pending.extend(recreate(rng, tenant, spec))
        return req

    def client(self, i):
        rng, packer = random.Random(self.args.seed + i), msgpack.Packer(**PACK)
        sock, pending = new_socket(self.ctx, self.endpoint), collections.deque()
        while not self.stop.is_set():
            with self.lock:
                if self.sent >= self.args.max_requests:
                    self.stop.set()
                    break
                self.sent += 1
            req = self.next_request(rng, pending)
            payload, desc = packer.pack(req), repr(req)
            if rng.random() < 0.05:
                payload = raw_mutate(rng, payload)
                desc = "RAW " + repr(payload)
            self.history[i].append(desc[:400])
            self.in_flight[i] = True
            sock.send(payload)
            deadline = time.time() + self.args.rcvtimeo
            while not sock.poll(200):
                if self.abort.is_set():
                    return
                if time.time() > deadline:
                    break
            else:
                self.in_flight[i] = False
                self.check(sock.recv(), desc)
                continue
            if self.proc.poll() is None:  # if the server died, the watchdog reports that
                self.finding("stall", f"client {i}: no reply in {self.args.rcvtimeo} s to "
                                      f"{desc[:400]}")
            sock.close()  # a REQ socket cannot send again before it has a reply
            sock = new_socket(self.ctx, self.endpoint)
        sock.close()

    def check(self, raw, desc):
        try:
            msg = msgpack.unpackb(raw, raw=False)  # fails on e.g. invalid UTF-8 in a string
            if not (isinstance(msg, dict) and "success" in msg):
                raise ValueError("the reply is not a map with `success`")
        except Exception as e:
            return self.finding("undecodable", f"{type(e).__name__}: {e}\n    request: "
                                               f"{desc[:400]}\n    reply: {raw[:300]!r}")
        with self.lock:
            self.codes["ok" if msg["success"] is True else str(msg.get("error_code"))] += 1

    def probe(self):
        """Every ~2 s: ping within 5 s and a correct search on the probe index within 10 s."""
        j = 0
        while not self.stop.wait(2.0):
            q = [10.0 if d == j else 0.1 for d in range(PROBE_DIM)]
            search = {"action": "search", "tenant_id": PROBE_TENANT, "index_id": PROBE_INDEX,
                      "query_vectors": [q], "k": 1}
            try:
                if not call(self.ctx, self.endpoint, {"action": "ping"}, 5):
                    return self.finding("stall", "probe: ping got no reply within 5 s")
                rep = call(self.ctx, self.endpoint, search, 10)
            except Exception as e:
                return self.finding("stall", f"probe: {type(e).__name__}: {e}")
            if rep is None:
                return self.finding("stall", "probe: search got no reply within 10 s")
            try:  # the metrics listener must keep answering too
                with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=5) as r:
                    if b"vecgpu_requests_total" not in r.read():
                        self.finding("probe-wrong", "probe: /metrics lacks vecgpu_requests_total")
            except Exception as e:
                return self.finding("stall", f"probe: /metrics: {type(e).__name__}: {e}")
            if not rep.get("success") or rep["results"][0]["indices"][0] != j:
                self.finding("probe-wrong", f"probe search for {j} answered {repr(rep)[:300]}")
            j = (j + 1) % PROBE_DIM


def setup(fz):
    """Creates the probe index and every kind in every tenant; prints failed setup steps."""
    eye = [[10.0 if d == i else 0.0 for d in range(PROBE_DIM)] for i in range(PROBE_DIM)]
    probe = {"tenant_id": PROBE_TENANT, "index_id": PROBE_INDEX}
    steps = [dict(probe, action="create_index", dimension=PROBE_DIM, index_type="L2"),
             dict(probe, action="add_vectors", vectors=eye)]
    rng = random.Random(fz.args.seed - 1)
    for tenant in TENANTS:
        for spec in KINDS:  # bases come first, so only the kind's own steps
            steps += recreate(rng, tenant, spec)[-3 if spec.train else -2:]
    for req in steps:
        rep = call(fz.ctx, fz.endpoint, req, 30)
        if not rep or not rep.get("success"):
            print(f"live-fuzz: setup step failed: {req['action']} {req['tenant_id']}/"
                  f"{req['index_id']} ({req.get('index_type', '')}): {rep}", file=sys.stderr)
            if req["tenant_id"] == PROBE_TENANT:
                raise SystemExit("live-fuzz: cannot create the probe index")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True)
    for name, kind, default in (("--seconds", float, 60), ("--max-requests", int, 200000),
                                ("--clients", int, 4), ("--seed", int, None)):
        ap.add_argument(name, type=kind, default=default)
    ap.add_argument("--log", help="server log file (default: a temporary file)")
    ap.add_argument("--artifacts", help="directory for the report and server log on failure")
    ap.add_argument("--rcvtimeo", type=float, default=20.0, help="per-request reply timeout, s")
    ap.add_argument("--data-dir", help="serve with this --data-dir; after the run the server is "
                    "started again on it and must replay its log and answer")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = args.log or tempfile.mkstemp(prefix="live_fuzz_", suffix=".log")[1]
    log = open(log_path, "wb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    persist = ["--data-dir", args.data_dir] if args.data_dir else []
    proc = subprocess.Popen([args.binary, "serve", "--port", str(port), "--bind-address",
                             "127.0.0.1", "--metrics-port", str(metrics_port), "--grpc-port", "0",
                             "--log-level", "warning", *persist], stdout=log, stderr=subprocess.STDOUT)
    fz = Fuzz(args, f"tcp://127.0.0.1:{port}", proc)
    fz.metrics_url = f"http://127.0.0.1:{metrics_port}"
    deadline = time.time() + 20
    while not (proc.poll() is None and call(fz.ctx, fz.endpoint, {"action": "ping"}, 0.3)):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit(f"live-fuzz: server did not start:\n{open(log_path, errors='replace').read()}")
    print(f"live-fuzz: seed {args.seed}, server pid {proc.pid} on port {port}, log {log_path}")
    setup(fz)

    start = time.time()
    threads = [threading.Thread(target=fz.client, args=(i,), daemon=True)
               for i in range(args.clients)] + [threading.Thread(target=fz.probe, daemon=True)]
    for t in threads:
        t.start()
    while not fz.stop.is_set() and time.time() - start < args.seconds:  # the watchdog
        if proc.poll() is not None:
            rc = proc.returncode
            fz.finding("crash", "server exited with %s during fuzzing"
                       % (signal.Signals(-rc).name if rc < 0 else rc))
        time.sleep(0.1)
    fz.stop.set()
    if proc.poll() is not None:
        fz.abort.set()  # nobody will answer the requests in flight
    for t in threads:
        t.join(args.rcvtimeo + 2)
    elapsed = time.time() - start
    if proc.poll() is None:  # a clean shutdown is part of the contract
        proc.send_signal(signal.SIGTERM)
        try:
            if proc.wait(10) != 0:
                fz.finding("crash", f"server exited with {proc.returncode} on SIGTERM")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            fz.finding("stall", "server did not exit within 10 s of SIGTERM")
    if args.data_dir and not any(fz.findings.values()):
        # Everything the fuzzers wrote must replay: the server starts again on the directory.
        again = subprocess.Popen([args.binary, "serve", "--port", str(port), "--bind-address",
                                  "127.0.0.1", "--metrics-port", "0", "--log-level", "info",
                                  *persist], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while not (again.poll() is None and call(fz.ctx, fz.endpoint, {"action": "ping"}, 0.3)):
            if again.poll() is not None or time.time() > deadline:
                fz.finding("crash", "the server did not start again on its data directory "
                           f"(exit {again.poll()})")
                break
        if again.poll() is None:
            again.send_signal(signal.SIGTERM)
            try:
                if again.wait(10) != 0:
                    fz.finding("crash", f"the restarted server exited with {again.returncode}")
            except subprocess.TimeoutExpired:
                again.kill()
                again.wait()
                fz.finding("stall", "the restarted server did not exit within 10 s of SIGTERM")
    log.close()
    lines = open(log_path, "rb").read().decode("utf-8", "replace").splitlines()
    fz.findings["sanitizer"] += [x for x in lines if any(p in x for p in (
        "ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
        "WARNING: ThreadSanitizer"))]

    f = fz.findings
    print(f"live-fuzz: {fz.sent} requests in {elapsed:.1f} s from {args.clients} clients, "
          f"{len(f['crash'])} crashes, {len(f['stall'])} stalls, {len(f['undecodable'])} "
          f"undecodable replies; errors by code: {dict(fz.codes.most_common())}")
    if not any(f.values()):
        if not args.log:
            os.unlink(log_path)  # nothing to look at
        return 0
    report = []
    for kind, items in [(k, v) for k, v in f.items() if v]:
        report += [f"== {kind}: {len(items)} (first 5)"] + ["  " + x for x in items[:5]]
    report.append(f"== last 60 lines of the server log {log_path} (without FAISS's "
                  "'WARNING clustering' lines)")
    report += [x for x in lines if not x.startswith("WARNING clustering")][-60:]
    for i, h in enumerate(fz.history):
        report.append(f"== client {i} (seed {args.seed + i}): last {len(h)} requests, oldest "
                      "first" + (" - the last one got no reply" if fz.in_flight[i] else ""))
        report += ["  " + x for x in h]
    print("\n".join(report))
    if args.artifacts:
        os.makedirs(args.artifacts, exist_ok=True)
        for name, text in (("live_fuzz_report.txt", report), ("server.log", lines)):
            with open(os.path.join(args.artifacts, name), "w") as out:
                out.write("\n".join(text) + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
