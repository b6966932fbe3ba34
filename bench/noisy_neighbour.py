#!/usr/bin/env python3
"""Noisy neighbour: tenant B's one-query search latency (p50/p99/max) and create_index
latency, alone and while tenant A (or a client without a key) does each of the things that
used to hold up everyone (issue [1/5]):

  train+snapshot   A trains IVF1024 on 100,000 x 64 and asks for snapshots meanwhile
  big-snapshot     A's index of --snapshot-mb MB is snapshotted (and changed meanwhile)
  clustering       A runs four long compute_clustering jobs at once (beyond its share)
  flood            clients without a key send 99 MB messages in a loop
  idle-streams     A opens --idle-streams gRPC StreamSearch calls and leaves them idle
  grpc-insert      A bulk-inserts over gRPC (Vald MultiInsert) while B searches over gRPC

Each row also records the server's peak RSS and thread count. Targets (2 cores): B's p99
within 2x of alone, its max under max(10x alone p99, 250 ms), RSS within the configured
bounds plus the data, threads bounded.

  .venv/bin/python bench/noisy_neighbour.py [--seconds 8] [--snapshot-mb 1536] \
      [--idle-streams 3000] [--flood-clients 3] [--out bench/results/noisy.json] \
      [--plot bench/results/noisy.png] [--rows flood,...]
"""
import argparse
import itertools
import json
import multiprocessing
import pathlib
import shutil
import sys
import tempfile
import threading
import time

import msgpack
import numpy as np
import zmq

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Server, raw_call  # noqa: E402  (the test harness's server launcher)

KEYS = "key-a:A,key-b:B"
ROWS = ["train+snapshot", "big-snapshot", "clustering", "flood", "idle-streams", "grpc-insert"]


def req(srv, key, timeout_ms=120_000, **fields):
    try:
        return raw_call(srv.endpoint, {"api_key": key, **fields}, timeout_ms=timeout_ms)
    except zmq.Again:
        return {"success": False, "error": "no reply within the client's timeout"}


def f4(x):
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return int(out["VmRSS"].split()[0]) / 1024, int(out["Threads"])


class Watch(threading.Thread):
    """Peak RSS (MB) and threads of the server while running."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.stop, self.rss, self.threads = pid, False, 0.0, 0
        self.start()

    def run(self):
        while not self.stop:
            try:
                rss, threads = proc_status(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.rss, self.threads = max(self.rss, rss), max(self.threads, threads)
            time.sleep(0.05)


def measure_b(srv, seconds, grpc_stub=None):
    """B's one-query searches (ZeroMQ, or gRPC when a stub is given) and create_index calls,
    for `seconds`: their latencies in ms."""
    rng = np.random.default_rng(1)
    search, create = [], []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        q = rng.standard_normal((1, 64)).astype(np.float32)
        t = time.perf_counter()
        if grpc_stub is not None:
            grpc_stub(q[0])
        else:
            r = req(srv, "key-b", action="search", index_id="small", query_vectors=f4(q),
                    dimension=64, k=10)
            assert r["success"], r
        search.append((time.perf_counter() - t) * 1000)
        i += 1
        if i % 20 == 0:
            name = f"tmp{i}"
            t = time.perf_counter()
            r = req(srv, "key-b", action="create_index", index_id=name, dimension=8,
                    index_type="L2")
            create.append((time.perf_counter() - t) * 1000)
            assert r["success"], r
            req(srv, "key-b", action="delete_index", index_id=name)
    return search, create


def summary(search, create):
    a = np.array(search)
    c = np.array(create) if create else np.array([0.0])
    return {"n": len(search), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
            "create_p50_ms": float(np.percentile(c, 50)), "create_max_ms": float(c.max())}


class Background:
    """Runs fn(stop) in a process of its own until told to stop: the aggressor is another
    client process, as a tenant is (in this process it would share the interpreter's lock with
    tenant B's measurements). Forked before this process uses gRPC; `go=False` holds it until
    start_work()."""

    def __init__(self, fn, go=True):
        ctx = multiprocessing.get_context("fork")
        self.stop_ev, self.go_ev, self.errors = ctx.Event(), ctx.Event(), ctx.Queue()
        self.error = None
        if go:
            self.go_ev.set()
        self.proc = ctx.Process(target=self._run, args=(fn,), daemon=True)
        self.proc.start()

    def _run(self, fn):
        self.go_ev.wait()
        try:
            fn(self.stop_ev.is_set)
        except Exception as e:  # noqa: BLE001  (reported with the row)
            self.errors.put(repr(e))

    def start_work(self):
        self.go_ev.set()

    def halt(self, timeout=120):
        self.go_ev.set()
        self.stop_ev.set()
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()
        if not self.errors.empty():
            self.error = self.errors.get()


def row_train_snapshot(srv, args):
    def work(stop):
        rng = np.random.default_rng(2)
        n = 0
        while not stop():
            name = f"ivf{n}"
            n += 1
            req(srv, "key-a", action="create_index", index_id=name, dimension=64,
                index_type="IVF1024,Flat")
            train = threading.Thread(target=req, args=(srv, "key-a"), kwargs=dict(
                action="train_index", index_id=name, dimension=64, timeout_ms=0,
                training_vectors=f4(rng.standard_normal((100_000, 64)))), daemon=True)
            train.start()
            while train.is_alive() and not stop():
                req(srv, "key-a", action="snapshot")
                time.sleep(0.2)
            train.join()
    return work


def row_big_snapshot(srv, args):
    # Fill A's index to --snapshot-mb first (not measured), then snapshot it repeatedly while
    # adding to it, so every snapshot rewrites it.
    rng = np.random.default_rng(3)
    req(srv, "key-a", action="create_index", index_id="big", dimension=64, index_type="L2")
    rows = args.snapshot_mb * (1 << 20) // (64 * 4)
    block = 10_000
    x = rng.standard_normal((block, 64)).astype(np.float32)
    for _ in range(0, rows, block):
        r = req(srv, "key-a", action="add_vectors", index_id="big", vectors=f4(x), dimension=64)
        assert r["success"], r

    def work(stop):
        while not stop():
            req(srv, "key-a", action="add_vectors", index_id="big", vectors=f4(x[:10]),
                dimension=64)
            r = req(srv, "key-a", action="snapshot")
            assert r["success"], r
    return work


def row_clustering(srv, args):
    def one(stop, seed):
        x = np.random.default_rng(seed).standard_normal((60_000, 64)).astype(np.float32)
        while not stop():
            req(srv, "key-a", action="compute_clustering", vectors=f4(x), dimension=64,
                n_clusters=2000, niter=100, timeout_ms=int(args.seconds * 1000))

    return lambda stop: in_threads(4, lambda i: one(stop, i))


def in_threads(n, fn):
    """fn(0..n-1), each on a thread of its own; returns when all have."""
    ts = [threading.Thread(target=fn, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def row_flood(srv, args):
    payload = msgpack.packb({"action": "add_vectors", "index_id": "x",
                             "vectors": [[0.5] * 64] * 190_000})  # 99 MB of float64 lists
    assert len(payload) > 95_000_000

    def one(stop):
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(srv.endpoint)
        inflight = 0
        while not stop():
            while inflight < 4:
                s.send_multipart([b"", payload])
                inflight += 1
            if s.poll(200):
                s.recv_multipart()
                inflight -= 1
        s.close()

    return lambda stop: in_threads(args.flood_clients, lambda i: one(stop))


def vald(srv, key, own_connection=False):
    import grpc
    from vald.v1.payload import payload_pb2 as pb
    from vald.v1.vald import insert_pb2_grpc, search_pb2_grpc
    # Channels to one target share one connection unless each has a subchannel pool of its own.
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
    ch = grpc.insecure_channel(srv.grpc_target, options=options)
    grpc.channel_ready_future(ch).result(timeout=30)
    md = (("authorization", f"Bearer {key}"), ("x-vecgpu-collection", "vald"))
    return ch, pb, insert_pb2_grpc.InsertStub(ch), search_pb2_grpc.SearchStub(ch), md


def row_idle_streams(srv, args):
    def work(stop):
        import grpc
        calls = []
        refused = 0
        chans = []
        for i in range(args.idle_streams):
            if stop():
                break
            if i % 30 == 0:  # HTTP/2 caps streams per connection: spread over channels
                chans.append(vald(srv, "key-a", own_connection=True))
            ch, pb, _, search, md = chans[-1]
            gate = threading.Event()

            def idle(gate=gate):
                gate.wait()
                return
                yield  # noqa: unreachable  (a request iterator that sends nothing)
            try:
                calls.append((search.StreamSearch(idle(), metadata=md), gate))
            except grpc.RpcError:
                refused += 1
        while not stop():
            time.sleep(0.1)
        for c, gate in calls:
            gate.set()
            c.cancel()
        for ch, *_ in chans:
            ch.close()
    return work


INSERTED = itertools.count()


def row_grpc_insert(srv, args):
    def work(stop):
        ch, pb, insert, _, md = vald(srv, "key-a")
        rng = np.random.default_rng(5)
        while not stop():
            x = rng.standard_normal((500, 64)).astype(np.float32)
            reqs = [pb.Insert.Request(vector=pb.Object.Vector(id=f"a{next(INSERTED)}",
                                                              vector=list(v))) for v in x]
            insert.MultiInsert(pb.Insert.MultiRequest(requests=reqs), metadata=md, timeout=60)
        ch.close()
    return work


MAKERS = {"train+snapshot": row_train_snapshot, "big-snapshot": row_big_snapshot,
          "clustering": row_clustering, "flood": row_flood, "idle-streams": row_idle_streams,
          "grpc-insert": row_grpc_insert}


def b_grpc(srv):
    ch, pb, insert, search, md = vald(srv, "key-b")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    for i in range(0, 2000, 500):
        insert.MultiInsert(pb.Insert.MultiRequest(requests=[
            pb.Insert.Request(vector=pb.Object.Vector(id=f"b{i + j}", vector=list(v)))
            for j, v in enumerate(x[i:i + 500])]), metadata=md, timeout=60)

    def one(q):
        search.Search(pb.Search.Request(vector=list(q), config=pb.Search.Config(num=10, radius=-1.0, epsilon=0.01)),
                      metadata=md, timeout=30)
    return ch, one


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--snapshot-mb", type=int, default=1536)
    ap.add_argument("--idle-streams", type=int, default=3000)
    ap.add_argument("--flood-clients", type=int, default=3)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--out", default="")
    ap.add_argument("--plot", default="")
    ap.add_argument("--server-args", default="")
    args = ap.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    data = tempfile.mkdtemp(prefix="vecgpu-noisy-")
    srv = Server("--enable-auth", "--auth-keys", KEYS, "--bind-address", "127.0.0.1",
                 "--data-dir", data, "--snapshot-interval-s", "0", "--snapshot-log-mb", "0",
                 "--log-level", "warning", *args.server_args.split())
    report = {"seconds": args.seconds, "rows": {}}
    try:
        rng = np.random.default_rng(0)
        req(srv, "key-b", action="create_index", index_id="small", dimension=64, index_type="L2")
        req(srv, "key-b", action="add_vectors", index_id="small", dimension=64,
            vectors=f4(rng.standard_normal((10_000, 64))))
        watch = Watch(srv.proc.pid)
        alone = summary(*measure_b(srv, args.seconds))
        alone.update(rss_mb=watch.rss, threads=watch.threads)
        watch.stop = True
        report["rows"]["alone"] = alone
        print(f"{'alone':16s} p50 {alone['p50_ms']:7.2f}  p99 {alone['p99_ms']:7.2f}  max "
              f"{alone['max_ms']:8.2f} ms  create p50 {alone['create_p50_ms']:6.2f} max "
              f"{alone['create_max_ms']:7.2f} ms  rss {alone['rss_mb']:6.0f} MB  threads "
              f"{alone['threads']}", flush=True)
        grpc_alone = None
        for name in rows:
            work = MAKERS[name](srv, args)
            if name == "grpc-insert":
                # B over gRPC, alone and then beside A's inserts (A's process is forked first).
                bg = Background(work, go=False)
                ch, one = b_grpc(srv)
                grpc_alone = summary(*measure_b(srv, args.seconds, one))
                report["rows"]["alone (gRPC)"] = grpc_alone
                watch = Watch(srv.proc.pid)
                bg.start_work()
                time.sleep(1.0)
                s = summary(*measure_b(srv, args.seconds, one))
                ch.close()
            else:
                watch = Watch(srv.proc.pid)
                bg = Background(work)
                time.sleep(1.0)  # let it start
                s = summary(*measure_b(srv, args.seconds))
            bg.halt()
            watch.stop = True
            base = grpc_alone if name == "grpc-insert" else alone
            s.update(rss_mb=watch.rss, threads=watch.threads, error=bg.error,
                     p99_ratio=s["p99_ms"] / base["p99_ms"],
                     max_bound_ms=max(10 * base["p99_ms"], 250.0))
            s["meets_target"] = s["p99_ratio"] <= 2 and s["max_ms"] <= s["max_bound_ms"]
            report["rows"][name] = s
            print(f"{name:16s} p50 {s['p50_ms']:7.2f}  p99 {s['p99_ms']:7.2f}  max "
                  f"{s['max_ms']:8.2f} ms  create p50 {s['create_p50_ms']:6.2f} max "
                  f"{s['create_max_ms']:7.2f} ms  rss {s['rss_mb']:6.0f} MB  threads "
                  f"{s['threads']}  p99 x{s['p99_ratio']:.2f}  "
                  f"{'ok' if s['meets_target'] else 'MISSES TARGET'}"
                  f"{'  (aggressor error: ' + s['error'] + ')' if s['error'] else ''}",
                  flush=True)
    finally:
        srv.stop(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(report["rows"])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    w = 0.27
    xs = np.arange(len(names))
    for i, (key, label) in enumerate([("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")]):
        ax.bar(xs + (i - 1) * w, [report["rows"][n][key] for n in names], w, label=label)
    ax.set_yscale("log")
    ax.set_xticks(xs, names, rotation=20, ha="right")
    ax.set_ylabel("tenant B one-query search latency (ms)")
    ax.set_title("Noisy neighbour: tenant B while tenant A (or a keyless client) does each row")
    ax.axhline(250, color="grey", linestyle=":", linewidth=1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
