"""The crash test: several clients add, remove, replace and delete on several index kinds
(float and binary, an IDMap2 view over a shared base, IVF) while the server is killed with
SIGKILL at random moments, many times, with snapshots (asked for, and by log size) running
into the kills. After each restart every acknowledged operation is there, an operation in
flight at the kill is there whole or not at all, and everything equals a server that never
crashed: a reference server without --data-dir that is sent exactly the acknowledged
operations, in each client's order.

Each client owns its collections, so a collection's operations arrive in its client's order
on both servers; a client has at most one operation in flight when the server dies."""
import os
import random
import threading
import time

import msgpack
import numpy as np
import zmq

from conftest import Server, kill9, ok, raw_call, start_persistent as start

CLIENTS = 3
ROUNDS = 8
DIM = 16  # float collections
BITS = 64  # the binary collection
NLIST = 8
REPLY_TIMEOUT_S = 20  # no reply this long from a live server is a failure
SEED = int(os.environ.get("VECGPU_CRASH_SEED", "20240611"))


def manifest_files(data_dir):
    """The snapshot files DIR/MANIFEST names (core/store/manifest.cc: magic, version, flags,
    cut, entry count, then storage id, seq and a u32-length file name per entry, CRC)."""
    path = data_dir / "MANIFEST"
    if not path.exists():
        return set()
    b = path.read_bytes()
    assert b[:8] == b"VECGPUMF", b[:8]
    count = int.from_bytes(b[24:28], "little")
    at, files = 28, set()
    for _ in range(count):
        n = int.from_bytes(b[at + 16:at + 20], "little")
        files.add(b[at + 20:at + 20 + n].decode())
        at += 20 + n
    return files


def snapshot_debris(data_dir):
    """Snapshot files the manifest does not name: what a kill during a snapshot leaves."""
    named = manifest_files(data_dir)
    tenants = data_dir / "tenants"
    return sorted(str(p.relative_to(data_dir)) for p in tenants.rglob("*")
                  if p.is_file() and p.name.endswith((".snap", ".snap.tmp"))
                  and str(p.relative_to(data_dir)) not in named) if tenants.exists() else []


def f32(x):
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


class Gone(Exception):
    """The server was killed before this request's reply came."""


def send(endpoint, request, killed):
    """One round trip to the server under test. Raises Gone when `killed` is set before a
    reply arrives (the request may or may not have reached the server)."""
    if killed.is_set():
        raise Gone
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send(msgpack.packb(request))
        deadline = time.time() + REPLY_TIMEOUT_S
        while True:
            if s.poll(20):
                return msgpack.unpackb(s.recv(), raw=False)
            if killed.is_set():
                raise Gone
            if time.time() > deadline:
                raise AssertionError(f"no reply in {REPLY_TIMEOUT_S} s from a live server: "
                                     f"{request['action']}")
    finally:
        s.close()


def ref_call(srv, request):
    return raw_call(srv.endpoint, request, timeout_ms=REPLY_TIMEOUT_S * 1000)


def same_outcome(a, b):
    """The fields by which two servers' replies to one write must agree."""
    keys = ("success", "error_code", "count", "total", "ntotal", "is_trained")
    return {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}


class Client:
    def __init__(self, k):
        self.k = k
        self.rng = random.Random(SEED * 100 + k)
        self.np = np.random.default_rng(SEED * 100 + k)
        self.flat, self.view = f"c{k}-flat", f"c{k}-view"
        self.bin, self.ivf, self.scratch = f"c{k}-bin", f"c{k}-ivf", f"c{k}-scratch"
        self.names = [self.flat, self.view, self.bin, self.ivf, self.scratch]
        self.acked = []  # every acknowledged write, in order
        self.inflight = None  # the write in flight when the server died
        self.next_id = 1_000_000 * (k + 1)
        self.sent = 0
        self.errors = []
        self.big = False  # larger adds, so that the log passes --snapshot-log-mb within a round

    def rows(self, n, d=DIM):
        return f32(self.np.standard_normal((n, d)))

    def setup_ops(self):
        train = f32(np.random.default_rng(SEED + self.k).standard_normal((40 * NLIST, DIM)))
        return [
            {"action": "create_index", "index_id": self.flat, "dimension": DIM,
             "index_type": "L2"},
            {"action": "create_index", "index_id": self.view, "dimension": DIM,
             "index_type": f"IDMap2:{self.flat}"},
            {"action": "create_index", "index_id": self.bin, "dimension": BITS,
             "index_type": "BINARY_FLAT"},
            {"action": "create_index", "index_id": self.ivf, "dimension": DIM,
             "index_type": f"IVF{NLIST}"},
            {"action": "train_index", "index_id": self.ivf, "training_vectors": train},
        ]

    def next_op(self, ref):
        """A random write, chosen from the reference's state (which equals the server's)."""
        r = self.rng.random()
        if r < 0.20:
            n = self.rng.randint(1, 300 if self.big else 40)
            return {"action": "add_vectors", "index_id": self.flat, "vectors": self.rows(n)}
        if r < 0.30:
            ntotal = ok(ref_call(ref, {"action": "get_index_stats",
                                       "index_id": self.flat}))["ntotal"]
            ids = self.rng.sample(range(ntotal), min(ntotal, self.rng.randint(1, 3)))
            if self.rng.random() < 0.2:
                ids.append(ntotal + 7)  # not there: removes nothing
            return {"action": "remove_ids", "index_id": self.flat, "ids": ids or [0]}
        view_ids = None
        if r < 0.62:
            view_ids = ok(ref_call(ref, {"action": "get_vectors", "index_id": self.view,
                                         "binary": True}))["ids"]
        if r < 0.45 or (r < 0.62 and not view_ids):
            n = self.rng.randint(1, 12)
            ids = set()
            while len(ids) < n:
                if view_ids and self.rng.random() < 0.3:
                    ids.add(self.rng.choice(view_ids))  # an upsert
                else:
                    ids.add(self.next_id)
                    self.next_id += 1
            return {"action": "add_with_ids", "index_id": self.view, "vectors": self.rows(n),
                    "ids": sorted(ids, key=lambda _: self.rng.random())}
        if r < 0.55:
            return {"action": "replace_vector", "index_id": self.view,
                    "id": self.rng.choice(view_ids),
                    "vector": np.frombuffer(self.rows(1), "<f4").tolist()}
        if r < 0.62:
            return {"action": "remove_ids", "index_id": self.view,
                    "ids": self.rng.sample(view_ids, min(len(view_ids), self.rng.randint(1, 3)))}
        if r < 0.76:
            n = self.rng.randint(1, 40)
            return {"action": "add_vectors", "index_id": self.bin,
                    "vectors": self.np.integers(0, 2, (n, BITS)).tolist()}
        if r < 0.90:
            n = self.rng.randint(1, 300 if self.big else 40)
            return {"action": "add_vectors", "index_id": self.ivf, "vectors": self.rows(n)}
        exists = ref_call(ref, {"action": "get_index_stats", "index_id": self.scratch})
        if not exists.get("success"):
            return {"action": "create_index", "index_id": self.scratch, "dimension": DIM,
                    "index_type": self.rng.choice(["L2", "IP", "HNSW8"])}
        if self.rng.random() < 0.5:
            return {"action": "delete_index", "index_id": self.scratch}
        return {"action": "add_vectors", "index_id": self.scratch,
                "vectors": self.rows(self.rng.randint(1, 10))}

    def apply(self, srv_endpoint, ref, op, killed):
        """Sends op to the server under test; an acknowledged one goes to the reference."""
        try:
            self.sent += 1
            got = send(srv_endpoint, op, killed)
        except Gone:
            self.inflight = op
            raise
        want = ref_call(ref, op)
        if not same_outcome(got, want):
            self.errors.append(("replies differ", op["action"], op["index_id"], got, want))
        if got.get("success"):
            self.acked.append(op)
        return got

    def run(self, srv_endpoint, ref, killed):
        try:
            while True:
                self.apply(srv_endpoint, ref, self.next_op(ref), killed)
        except Gone:
            pass
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            self.errors.append(("client raised", repr(e)))

    def queries(self):
        q = np.random.default_rng(SEED + 7 + self.k)
        return f32(q.standard_normal((5, DIM))), q.integers(0, 2, (5, BITS)).tolist()


def state(srv, c, listed=None):
    """Everything observable about client c's collections, as bytes where the wire allows."""
    if listed is None:
        listed = {i["index_id"] for i in ok(ref_call(srv, {"action": "list_indexes"}))["indexes"]}
    fq, bq = c.queries()
    out = {}
    for name in c.names:
        if name not in listed:
            out[name] = None
            continue
        got = ok(ref_call(srv, {"action": "get_vectors", "index_id": name, "binary": True}))
        req = {"action": "search", "index_id": name, "k": 20, "binary": True,
               "query_vectors": bq if name == c.bin else fq}
        if name == c.ivf:
            req["params"] = {"nprobe": NLIST}
        elif name == c.scratch:
            req["params"] = {"efSearch": 512}  # exact on so few vectors, if it is HNSW
        s = ok(ref_call(srv, req))
        out[name] = (got["ntotal"], got["ids"], got["vectors"], s["indices"], s["distances"])
    return out


def describe(mine, want):
    diffs = []
    for name in want:
        a, b = mine.get(name), want[name]
        if a == b:
            continue
        if a is None or b is None:
            diffs.append(f"{name}: {'missing' if a is None else 'present'} on the server, "
                         f"{'missing' if b is None else 'present'} on the reference")
            continue
        what = [f for f, x, y in zip(("ntotal", "ids", "vectors", "indices", "distances"), a, b)
                if x != y]
        diffs.append(f"{name}: {what} differ (ntotal {a[0]} vs {b[0]}; ids only on the server "
                     f"{sorted(set(a[1]) - set(b[1]))[:10]}, only on the reference "
                     f"{sorted(set(b[1]) - set(a[1]))[:10]})")
    return "; ".join(diffs)


def reconcile(srv, ref, clients, where):
    """After a restart: each client's in-flight write is whole or absent (then counted as
    acknowledged or dropped), and every collection equals the reference."""
    listed = {i["index_id"] for i in ok(ref_call(srv, {"action": "list_indexes"}))["indexes"]}
    ref_listed = {i["index_id"] for i in ok(ref_call(ref, {"action": "list_indexes"}))["indexes"]}
    applied = 0
    for c in clients:
        mine, want = state(srv, c, listed), state(ref, c, ref_listed)
        if mine != want and c.inflight is not None:
            op, c.inflight = c.inflight, None
            r = ref_call(ref, op)
            ref_listed = {i["index_id"]
                          for i in ok(ref_call(ref, {"action": "list_indexes"}))["indexes"]}
            want = state(ref, c, ref_listed)
            assert mine == want, (
                f"{where}: client {c.k}'s in-flight {op['action']} on {op['index_id']} is "
                f"half applied, or an acknowledged write is missing: {describe(mine, want)}")
            if r.get("success"):
                c.acked.append(op)
                applied += 1
        c.inflight = None
        assert mine == want, (f"{where}: client {c.k}: an acknowledged write is missing or "
                              f"changed: {describe(mine, want)}")
    return applied


def test_acknowledged_writes_survive_sigkill_during_load_and_snapshots(tmp_path):
    t0 = time.time()
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    clients = [Client(k) for k in range(CLIENTS)]
    ref = Server("--log-level", "warning")  # the server that never crashes
    srv = None
    stats = {"kills": 0, "snapshots": 0, "snapshot_kills": 0, "inflight_applied": 0,
             "background_snapshots": 0, "kills_mid_snapshot": 0}
    try:
        srv = start(data_dir)
        never = threading.Event()
        for c in clients:
            for op in c.setup_ops():
                assert c.apply(srv.endpoint, ref, op, never).get("success"), op
        for rnd in range(ROUNDS):
            big = rnd % 2 == 1
            for c in clients:
                c.big = big
            if rnd > 0:
                # Every other round snapshots by log size too (1 MiB: a few times a round).
                args = ("--snapshot-log-mb", "1") if big else ()
                debris = snapshot_debris(data_dir)
                stats["kills_mid_snapshot"] += bool(debris)
                srv = start(data_dir, *args)
                # A start removes what a snapshot cut short, and loads every file named.
                assert snapshot_debris(data_dir) == [], snapshot_debris(data_dir)
                assert all((data_dir / f).exists() for f in manifest_files(data_dir))
                stats["inflight_applied"] += reconcile(srv, ref, clients, f"round {rnd}")
            killed, snapshot_sent = threading.Event(), threading.Event()
            snap_errors = []

            def snapshotter(seed):
                r = random.Random(seed)
                try:
                    while not killed.is_set():
                        # Fewer in the rounds that snapshot by size (each one resets the count).
                        time.sleep(r.uniform(0.2, 0.6) if big else r.uniform(0.02, 0.25))
                        snapshot_sent.set()
                        rep = send(srv.endpoint, {"action": "snapshot"}, killed)
                        snapshot_sent.clear()
                        if not rep.get("success"):
                            snap_errors.append(rep)
                        stats["snapshots"] += 1
                except Gone:
                    pass
                except Exception as e:  # noqa: BLE001
                    snap_errors.append(repr(e))

            threads = [threading.Thread(target=c.run, args=(srv.endpoint, ref, killed))
                       for c in clients]
            threads.append(threading.Thread(target=snapshotter, args=(rng.random(),)))
            for t in threads:
                t.start()
            load = rng.uniform(0.3, 1.5)
            time.sleep(load)
            if rnd % 3 == 2:
                # Aim at a snapshot: kill just after one was asked for.
                snapshot_sent.clear()
                if snapshot_sent.wait(1.0):
                    time.sleep(rng.uniform(0, 0.003))
                    stats["snapshot_kills"] += 1
            kill9(srv)
            killed.set()
            stats["kills"] += 1
            for t in threads:
                t.join(timeout=REPLY_TIMEOUT_S + 10)
                assert not t.is_alive()
            stats["background_snapshots"] += srv.output.count("snapshot (log size)")
            for c in clients:
                assert not c.errors, (rnd, c.k, c.errors[:3])
            assert not snap_errors, snap_errors[:3]
            assert "critical" not in srv.output.lower(), srv.output

        # The last restart, then a graceful stop (its final snapshot) and one more start.
        stats["kills_mid_snapshot"] += bool(snapshot_debris(data_dir))
        srv = start(data_dir)
        assert snapshot_debris(data_dir) == []
        stats["inflight_applied"] += reconcile(srv, ref, clients, "after the last kill")
        assert srv.stop() == 0
        assert "final snapshot" in srv.output, srv.output
        srv = start(data_dir)
        reconcile(srv, ref, clients, "after the graceful stop")

        # A second reference, sent only the acknowledged writes (each client's in order) from
        # nothing: equal to the live reference and to the server that crashed.
        fresh = Server("--log-level", "warning")
        try:
            for c in clients:
                for op in c.acked:
                    assert ok(ref_call(fresh, op)), op
            fresh_listed = {i["index_id"]
                            for i in ok(ref_call(fresh, {"action": "list_indexes"}))["indexes"]}
            listed = {i["index_id"]
                      for i in ok(ref_call(srv, {"action": "list_indexes"}))["indexes"]}
            assert listed == fresh_listed
            for c in clients:
                want = state(fresh, c, fresh_listed)
                assert state(srv, c, listed) == want, describe(state(srv, c, listed), want)
                assert state(ref, c) == want
        finally:
            assert fresh.stop() == 0
        assert srv.stop() == 0
        assert "then replayed 0 log records" in srv.output, srv.output
        # What is left: the lock, the manifest, the snapshots it names and the log after them.
        assert snapshot_debris(data_dir) == []
        assert all((data_dir / f).exists() for f in manifest_files(data_dir))
        assert len(list((data_dir / "wal").glob("*.log"))) <= 2
        assert not list(data_dir.rglob("*.damaged"))
    finally:
        if srv is not None and srv.proc.poll() is None:
            kill9(srv)
        ref.stop()
    acked = sum(len(c.acked) for c in clients)
    elapsed = time.time() - t0
    print(f"\ncrash test: {stats['kills']} kills ({stats['snapshot_kills']} aimed at a "
          f"snapshot), {stats['snapshots']} snapshot actions, {stats['background_snapshots']} "
          f"background snapshots, {stats['kills_mid_snapshot']} kills that left a snapshot "
          f"cut short, {acked} acknowledged writes, "
          f"{stats['inflight_applied']} in-flight writes found applied, {elapsed:.1f} s")
    assert acked > 30 * CLIENTS
    assert stats["snapshots"] >= ROUNDS // 2
