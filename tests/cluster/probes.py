"""Probes of a cluster under faults: background writers and searchers that record every
call with its time and reply, and the checks made once the faults are over (every
acknowledged id readable, replicas identical, one primary per epoch in etcd's history).

Used by tests/python/test_cluster_network_faults.py and tests/cluster/chaos.py.
"""
import base64
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from harness import now, raw_call, shard_name


@dataclass
class Call:
    """One request: when it was sent and answered (monotonic seconds), the reply (None:
    no answer within the timeout), the ids it wrote or looked for."""
    sent: float
    answered: float
    reply: dict = None
    ids: list = field(default_factory=list)
    found: bool = None  # searches: the id came back first

    @property
    def ok(self):
        return bool(self.reply and self.reply.get("success"))

    @property
    def error(self):
        if self.reply is None:
            return "no answer"
        return None if self.ok else f"{self.reply.get('error_code')}: {self.reply.get('error')}"

    def describe(self, t0):
        return f"sent at t0{self.sent - t0:+.2f}s, {self.answered - self.sent:.2f}s: " + (
            "ok" if self.ok else self.error)


class Writes(threading.Thread):
    """Adds `batch` vectors under fresh ids (from `first_id` up) to `name` through
    `endpoint` every `period` seconds until stop(). `calls` is its record; only its thread
    appends to it."""

    def __init__(self, endpoint, name, first_id, dim=8, batch=5, period=0.05, timeout_ms=3000,
                 seed=0):
        super().__init__(daemon=True, name=f"writes->{endpoint}")
        self.endpoint, self.name, self.next_id = endpoint, name, first_id
        self.dim, self.batch, self.period, self.timeout_ms = dim, batch, period, timeout_ms
        self.rng = np.random.default_rng(seed or first_id % 100003)
        self.vectors = {}  # id -> vector, every id ever sent
        self.calls = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            ids = list(range(self.next_id, self.next_id + self.batch))
            self.next_id += self.batch
            x = self.rng.standard_normal((self.batch, self.dim)).astype(np.float32)
            self.vectors.update(zip(ids, x))
            sent = now()
            reply = raw_call(self.endpoint, {"action": "add_with_ids", "index_id": self.name,
                                             "vectors": x.tolist(), "ids": ids},
                             self.timeout_ms)
            self.calls.append(Call(sent, now(), reply, ids))
            self._halt.wait(self.period)

    def stop(self):
        self._halt.set()
        self.join(self.timeout_ms / 1000 + 5)
        return self

    def acked(self, sent_after=-np.inf, sent_before=np.inf):
        return [c for c in self.calls if c.ok and sent_after <= c.sent < sent_before]

    def acked_ids(self):
        return {i: self.vectors[i] for c in self.acked() for i in c.ids}


class Searches(threading.Thread):
    """k=1 searches through `endpoint` for vectors known to be stored (`known`: id ->
    vector), every `period` seconds until stop(); a search answered OK whose first id is
    not the one looked for has found=False."""

    def __init__(self, endpoint, name, known, period=0.05, timeout_ms=3000, seed=1):
        super().__init__(daemon=True, name=f"searches->{endpoint}")
        self.endpoint, self.name, self.period, self.timeout_ms = endpoint, name, period, timeout_ms
        self.items = list(known.items())
        self.rng = np.random.default_rng(seed)
        self.calls = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            want, v = self.items[self.rng.integers(len(self.items))]
            sent = now()
            reply = raw_call(self.endpoint, {"action": "search", "index_id": self.name,
                                             "query_vectors": [v.tolist()], "k": 1},
                             self.timeout_ms)
            call = Call(sent, now(), reply, [want])
            if call.ok:
                top = (reply.get("results") or [{}])[0].get("indices") or [-1]
                call.found = int(top[0]) == want
            self.calls.append(call)
            self._halt.wait(self.period)

    def stop(self):
        self._halt.set()
        self.join(self.timeout_ms / 1000 + 5)
        return self

    def bad(self, sent_after=-np.inf, sent_before=np.inf):
        """Searches that failed or answered without the id."""
        return [c for c in self.calls if sent_after <= c.sent < sent_before and
                not (c.ok and c.found)]


# ----------------------------------------------------------------------------- checks

def unreadable(endpoint, name, stored, timeout_ms=10000, attempts=20):
    """Ids of `stored` (id -> vector) that a k=1 search through `endpoint` does not return
    at distance ~0 (each chunk retried while the endpoint fails). []: all readable."""
    missing = []
    items = list(stored.items())
    for lo in range(0, len(items), 500):
        chunk = items[lo:lo + 500]
        q = [v.tolist() for _, v in chunk]
        reply = None
        for _ in range(attempts):
            reply = raw_call(endpoint, {"action": "search", "index_id": name,
                                        "query_vectors": q, "k": 1}, timeout_ms)
            if reply and reply.get("success"):
                break
            time.sleep(0.5)
        if not (reply and reply.get("success")):
            raise RuntimeError(f"searches of {name} through {endpoint} keep failing: {reply}")
        for (want, v), r in zip(chunk, reply["results"]):
            top, dist = (r.get("indices") or [-1])[0], (r.get("distances") or [np.inf])[0]
            if int(top) != want or dist > 1e-4 * (1.0 + float(v @ v)):
                missing.append(want)
    return missing


def copy_summary(endpoint, collection, stored, timeout_ms=10000):
    """What one agent's copy holds: (ntotal, sorted ids of `stored` it returns at ~0), or
    (None, error text)."""
    st = raw_call(endpoint, {"action": "get_index_stats", "index_id": collection}, timeout_ms)
    if not (st and st.get("success")):
        return None, f"stats: {st}"
    ntotal = st["stats"]["vector_count"]
    found = []
    items = list(stored.items())
    for lo in range(0, len(items), 500):
        chunk = items[lo:lo + 500]
        r = raw_call(endpoint, {"action": "search", "index_id": collection,
                                "query_vectors": [v.tolist() for _, v in chunk], "k": 1},
                     timeout_ms)
        if not (r and r.get("success")):
            return None, f"search: {r}"
        for (want, v), res in zip(chunk, r["results"]):
            top, dist = (res.get("indices") or [-1])[0], (res.get("distances") or [np.inf])[0]
            if int(top) == want and dist <= 1e-4 * (1.0 + float(v @ v)):
                found.append(want)
    return ntotal, sorted(found)


def replica_differences(cmap, endpoints, stored):
    """For each shard of the map `cmap` (as in etcd), its replicas' copies compared on each
    agent's own FAISSx port (`endpoints`: agent id -> endpoint): their ntotal and which of
    `stored` (id -> vector) they hold must be equal. Returns a list of differences ([]:
    identical), plus per-shard ntotal."""
    diffs, totals = [], []
    shards = len(cmap["shards"])
    for i, s in enumerate(cmap["shards"]):
        coll = shard_name(cmap["name"], i, shards)
        seen = {}
        for a in s["replicas"]:
            seen[a] = copy_summary(endpoints[a], coll, stored)
        values = {(n, tuple(f) if isinstance(f, list) else f) for n, f in seen.values()}
        if len(values) != 1 or None in {n for n, _ in seen.values()}:
            diffs.append(f"{coll}: " + "; ".join(
                f"{a}: ntotal {n}, holds {len(f) if isinstance(f, list) else f}"
                for a, (n, f) in seen.items()))
        totals.append({a: n for a, (n, _) in seen.items()})
    return diffs, totals


def map_history(etcd_endpoints, timeout=4.0):
    """Every version of every shard map in etcd since revision 1 (etcd keeps them until a
    compaction): a list of (revision, map) in order. `etcdctl watch --rev 1` prints the
    history and then waits; it is stopped after `timeout` seconds."""
    try:
        out = subprocess.run(["etcdctl", "--endpoints", etcd_endpoints, "watch", "--prefix",
                              "/vecgpu/collections/", "--rev", "1", "-w", "json"],
                             env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL).stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
    history = []
    dec = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(out) and out[pos].isspace():
            pos += 1
        if pos >= len(out):
            break
        try:
            obj, pos = dec.raw_decode(out, pos)
        except ValueError:
            break
        for ev in obj.get("Events") or []:
            kv = ev.get("kv") or {}
            if ev.get("type") == "DELETE" or "value" not in kv:
                continue
            try:
                history.append((int(kv["mod_revision"]),
                                json.loads(base64.b64decode(kv["value"]))))
            except ValueError:
                pass
    return history


def epoch_violations(history, name):
    """In etcd's history of collection `name`'s map: an epoch that names two primaries for
    one shard, or an epoch going back. []: one primary per epoch, epochs only grow."""
    bad, seen, last = [], {}, {}
    for rev, m in history:
        if m.get("name") != name:
            continue
        for i, s in enumerate(m["shards"]):
            e, p = s["epoch"], s["primary"]
            if seen.setdefault((i, e), p) != p:
                bad.append(f"shard {i} epoch {e}: primaries {seen[(i, e)]} and {p} "
                           f"(revision {rev})")
            if e < last.get(i, 0):
                bad.append(f"shard {i}: epoch {last[i]} -> {e} (revision {rev})")
            last[i] = max(last.get(i, 0), e)
    return bad


def primaries_by_epoch(history, name, shard=0):
    """[(epoch, primary, revision first seen)] of one shard, in order."""
    out = []
    for rev, m in history:
        if m.get("name") == name:
            s = m["shards"][shard]
            if not out or out[-1][:2] != (s["epoch"], s["primary"]):
                out.append((s["epoch"], s["primary"], rev))
    return out
