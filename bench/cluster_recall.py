#!/usr/bin/env python3
"""Recall of a sharded, replicated collection against one node on the same data.

Starts, on free loopback ports with temporary directories, etcd (Debian's etcd-server), three
`vecgpu serve --join` agents (each with a data directory), one `vecgpu gateway --replicas 2`,
and one plain `vecgpu serve`. Generates one seeded dataset (Gaussian clusters) with random
distinct int64 ids, and for each index type (exact "IDMap,Flat" and approximate
"IDMap,IVF64,Flat") creates an S=3, R=2 collection through the gateway and the same collection
on the single node, trains both (IVF: `train_index` on the whole base, then `set_parameter`
nprobe on both), adds the base with `add_with_ids`, and searches every query on both.

Reports recall@k of each against exact ground truth computed in numpy, the overlap of the
cluster's and the single node's results, how the rows spread over the shards (vector_count of
`<name>#<i>` read from every replica's agent directly) and the nprobe each replica holds.
It exits 1 when exact flat does not give the single node's answer (the same ids, distances
equal up to float rounding), when a shard is empty or its replicas disagree on their count or
nprobe, or when a count is not n. Writes bench/results/<UTC time>-<commit>-cluster-recall.json
(figures, config, timestamp, commit, warning lines from the servers' logs, violations).

  .venv/bin/python bench/cluster_recall.py [--n 20000] [--dim 64] [--queries 200] [--k 10]
      [--seed 1] [--nlist 64] [--nprobe 8] [--sigma 1.5] [--json OUT]
"""
import argparse
import base64
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import zmq

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
# The test harness's helpers: the binary, free ports, one msgpack round trip, etcd.
from conftest import BINARY, free_port, has_grpc_flag, raw_call  # noqa: E402
from test_cluster_agent import Etcd, joins, wait_until  # noqa: E402

SHARDS = 3
REPLICAS = 2
AGENTS = 3
ADD_BATCH = 5000   # under the 10,000-vector add limit
SEARCH_BATCH = 50
SIGMA = 1.5        # cluster spread: IVF64 at nprobe 8 then misses about one neighbour in 9


class Node:
    """One `vecgpu serve` or `vecgpu gateway` child process logging to a file (a pipe nobody
    reads would stall it); stop() sends SIGTERM, then SIGKILL after 10 s."""

    def __init__(self, log_path, *args, command="serve"):
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        args = [*args, "--metrics-port", str(free_port())]
        if has_grpc_flag():
            args += ["--grpc-port", str(free_port())]
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([str(BINARY), command, "--port", str(self.port), *args],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vecgpu {command} exited with {self.proc.returncode}:\n"
                                   + pathlib.Path(log_path).read_text()[-2000:])
            try:
                if raw_call(self.endpoint, {"action": "ping"}, timeout_ms=300).get("success"):
                    return
            except zmq.Again:
                pass
        self.stop()
        raise RuntimeError(f"vecgpu {command} did not answer ping")

    def call(self, timeout_ms=120000, **request):
        return raw_call(self.endpoint, request, timeout_ms=timeout_ms)

    def ok(self, **request):
        r = self.call(**request)
        if not (isinstance(r, dict) and r.get("success") is True):
            raise RuntimeError(f"{request.get('action')} on {self.endpoint}: {r}")
        return r

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def problems(self):
        """Log lines at warning level or above."""
        text = pathlib.Path(self.log_path).read_text(errors="replace")
        return [line for line in text.splitlines()
                if any(f"[{lvl}]" in line for lvl in ("warning", "error", "critical"))]


class Deployment:
    """etcd, the agents, the gateway and the single node; close() stops them all (the gateway
    and the agents before etcd) and removes the temporary directory."""

    def __init__(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="vecgpu-cluster-recall-"))
        self.etcd = None
        self.agents = {}
        self.gateway = None
        self.single = None
        try:
            self.etcd = Etcd()
            url = "http://" + self.etcd.client
            for i in range(AGENTS):
                name = f"a{i + 1}"
                adv = f"127.0.0.1:{free_port()}"
                self.agents[name] = Node(self.tmp / f"{name}.log", "--join", url,
                                         "--advertise", adv, "--agent-id", name,
                                         "--data-dir", str(self.tmp / name),
                                         "--log-level", "info")
            if not wait_until(lambda: len(self.etcd.agents()) == AGENTS, 30):
                raise RuntimeError(f"etcd lists {len(self.etcd.agents())} of {AGENTS} agents")
            self.gateway = Node(self.tmp / "gateway.log", "--etcd", url,
                                "--replicas", str(REPLICAS), "--log-level", "info",
                                command="gateway")
            self.single = Node(self.tmp / "single.log", "--log-level", "info")
        except BaseException:
            self.close()
            raise

    def map(self, name):
        """The collection's shard map as the gateway stored it in etcd."""
        out = self.etcd.ctl("get", "--prefix", "/vecgpu/collections/", "-w", "json").stdout
        for kv in json.loads(out).get("kvs", []):
            m = json.loads(base64.b64decode(kv["value"]))
            if m["name"] == name:
                return m
        return None

    def problems(self):
        nodes = {**self.agents, "gateway": self.gateway, "single": self.single}
        return {k: n.problems() for k, n in nodes.items() if n is not None and n.problems()}

    def close(self):
        for n in [self.single, self.gateway, *self.agents.values()]:
            if n is not None:
                n.stop()
        if self.etcd is not None:
            self.etcd.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def dataset(n, dim, nq, seed, sigma):
    """Base and queries from the same mixture of 100 Gaussian clusters (unit-normal centres,
    each cluster's spread `sigma` per component); ids random, distinct, non-negative int64."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)

    def draw(m):
        return (centres[rng.integers(0, 100, m)] +
                sigma * rng.standard_normal((m, dim))).astype(np.float32)
    x, q = draw(n), draw(nq)
    ids = np.unique(rng.integers(0, 2**62, n + n // 10 + 10, dtype=np.int64))
    ids = rng.permutation(ids)[:n]
    assert len(ids) == n
    return x, q, ids


def ground_truth(x, q, ids, k):
    """Exact k nearest ids (squared L2 in float64), one row per query."""
    xd, qd = x.astype(np.float64), q.astype(np.float64)
    d = (qd ** 2).sum(1)[:, None] - 2 * qd @ xd.T + (xd ** 2).sum(1)[None, :]
    top = np.argpartition(d, k, axis=1)[:, :k]
    order = np.take_along_axis(d, top, 1).argsort(1)
    return ids[np.take_along_axis(top, order, 1)]


def search(node, name, q, k):
    """All queries in batches; (ids nq x k int64, distances nq x k float64, seconds)."""
    ids, dist = [], []
    t = time.perf_counter()
    for lo in range(0, len(q), SEARCH_BATCH):
        r = node.ok(action="search", index_id=name, query_vectors=q[lo:lo + SEARCH_BATCH].tolist(),
                    k=k)
        for res in r["results"]:
            ids.append(res["indices"])
            dist.append(res["distances"])
    return np.asarray(ids, np.int64), np.asarray(dist, np.float64), time.perf_counter() - t


def recall(found, truth):
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))


def run_index(dep, kind, index_type, x, q, ids, truth, args):
    name = f"recall-{kind}"
    gw, single = dep.gateway, dep.single
    ok = wait_until(lambda: gw.call(action="create_index", index_id=name, dimension=x.shape[1],
                                    index_type=index_type, shards=SHARDS,
                                    replicas=REPLICAS).get("success"), 30)
    if not ok:
        raise RuntimeError(f"the gateway did not create {name}")
    single.ok(action="create_index", index_id=name, dimension=x.shape[1], index_type=index_type)
    # The placer may be moving a replica for balance (a shard shows three replicas, one
    # leaving, until the move ends): wait for the map to settle.
    def settled():
        m = dep.map(name)
        return len(m["shards"]) == SHARDS and all(
            len(s["replicas"]) == REPLICAS and not s.get("leaving") and not s.get("handover")
            for s in m["shards"])
    if not wait_until(settled, 60):
        raise RuntimeError(f"{name}: shard map is not {SHARDS} x {REPLICAS}: {dep.map(name)}")
    m = dep.map(name)
    timings = {}
    if kind == "ivf":
        for node, who in ((gw, "cluster"), (single, "single")):
            t = time.perf_counter()
            node.ok(action="train_index", index_id=name, training_vectors=x.tolist(),
                    timeout_ms=600000)
            timings[f"{who}_train_s"] = time.perf_counter() - t
            node.ok(action="set_parameter", index_id=name, parameter="nprobe", value=args.nprobe)
    for node, who in ((gw, "cluster"), (single, "single")):
        t = time.perf_counter()
        for lo in range(0, len(x), ADD_BATCH):
            node.ok(action="add_with_ids", index_id=name, vectors=x[lo:lo + ADD_BATCH].tolist(),
                    ids=[int(i) for i in ids[lo:lo + ADD_BATCH]])
        timings[f"{who}_add_s"] = time.perf_counter() - t

    # The spread: every replica of every shard, read from its agent directly (once no replica
    # is moving: the adds may have made the placer balance the agents again).
    if not wait_until(settled, 60):
        raise RuntimeError(f"{name}: shard map did not settle: {dep.map(name)}")
    m = dep.map(name)
    shards = []
    for i, s in enumerate(m["shards"]):
        part = f"{name}#{i}"
        per = {}
        for a in s["replicas"]:
            agent = dep.agents[a]
            st = agent.ok(action="get_index_stats", index_id=part)["stats"]
            entry = {"vector_count": st["vector_count"]}
            if kind == "ivf":
                p = agent.call(action="get_parameter", index_id=part, parameter="nprobe")
                entry["nprobe"] = p.get("param_value") if p.get("success") else p.get("error")
            per[a] = entry
        shards.append({"shard": i, "primary": s["primary"], "replicas": per})
    total_gw = gw.ok(action="get_index_stats", index_id=name)["stats"]["vector_count"]
    total_single = single.ok(action="get_index_stats", index_id=name)["stats"]["vector_count"]

    c_ids, c_dist, c_s = search(gw, name, q, args.k)
    s_ids, s_dist, s_s = search(single, name, q, args.k)
    timings.update(cluster_search_s=c_s, single_search_s=s_s)
    same_ids = int(sum((a == b).all() for a, b in zip(c_ids, s_ids)))
    overlap = recall(c_ids, s_ids)
    close = bool(np.allclose(c_dist, s_dist, rtol=1e-5, atol=1e-5))
    out = {
        "index_type": index_type,
        "recall_cluster": recall(c_ids, truth),
        "recall_single": recall(s_ids, truth),
        "overlap": overlap,
        "queries_identical": same_ids,
        "distances_close": close,
        "max_abs_distance_diff": float(np.abs(c_dist - s_dist).max()),
        "vector_count_cluster": total_gw,
        "vector_count_single": total_single,
        "shards": shards,
        "timings_s": timings,
    }
    if kind == "ivf":
        out["nprobe"] = args.nprobe
        out["nlist"] = args.nlist
    for node in (gw, single):
        node.call(action="delete_index", index_id=name)
    return out


def check(kind, r, n):
    """What must hold; a list of violations."""
    bad = []
    counts = [list(s["replicas"].values()) for s in r["shards"]]
    held = [c[0]["vector_count"] for c in counts]
    if sum(held) != n or min(held) == 0:
        bad.append(f"{kind}: shards hold {held} of {n}")
    for s, c in zip(r["shards"], counts):
        if len({e["vector_count"] for e in c}) != 1:
            bad.append(f"{kind}: shard {s['shard']}'s replicas disagree: {s['replicas']}")
        if kind == "ivf" and any(e.get("nprobe") != r["nprobe"] for e in c):
            bad.append(f"{kind}: shard {s['shard']}'s nprobe is not {r['nprobe']}: "
                       f"{s['replicas']}")
    if r["vector_count_cluster"] != n or r["vector_count_single"] != n:
        bad.append(f"{kind}: vector_count cluster {r['vector_count_cluster']}, "
                   f"single {r['vector_count_single']}, expected {n}")
    if kind == "flat" and not (r["queries_identical"] == r["queries"] and r["distances_close"]):
        bad.append(f"flat: the cluster's results differ from the single node's "
                   f"({r['queries_identical']} of {r['queries']} queries identical, "
                   f"max distance difference {r['max_abs_distance_diff']:.3g})")
    return bad


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="base vectors (default 20000)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nlist", type=int, default=64, help="IVF lists (IDMap,IVF{nlist},Flat)")
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--sigma", type=float, default=SIGMA,
                    help=f"spread of each of the 100 clusters (default {SIGMA})")
    ap.add_argument("--json", help="report path (default bench/results/<time>-<commit>-"
                                   "cluster-recall.json)")
    args = ap.parse_args()
    if shutil.which("etcd") is None:
        sys.exit("etcd (Debian's etcd-server) is not installed")
    if not joins():
        sys.exit(f"{BINARY} was built without the etcd client (no --join)")
    # SIGTERM/SIGHUP end the run like Ctrl-C does, so the finally below stops everything.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    started = datetime.datetime.now(datetime.timezone.utc)
    load = [round(v, 2) for v in os.getloadavg()]
    commit = git("rev-parse", "--short", "HEAD") or "nogit"
    x, q, ids = dataset(args.n, args.dim, args.queries, args.seed, args.sigma)
    truth = ground_truth(x, q, ids, args.k)
    results, violations = {}, []
    dep = Deployment()
    try:
        for kind, index_type in (("flat", "IDMap,Flat"),
                                 ("ivf", f"IDMap,IVF{args.nlist},Flat")):
            r = run_index(dep, kind, index_type, x, q, ids, truth, args)
            r["queries"] = args.queries
            results[kind] = r
            violations += check(kind, r, args.n)
        problems = dep.problems()
    finally:
        dep.close()

    print(f"cluster: {AGENTS} agents, S={SHARDS} R={REPLICAS}, via vecgpu gateway; single: one "
          f"vecgpu serve. {args.n} x {args.dim}, {args.queries} queries, k={args.k}")
    print(f"{'index':<20} {'recall cluster':>14} {'recall single':>13} {'overlap':>8} "
          f"{'identical':>10} {'max |d diff|':>12}  rows per shard (primary agent)")
    for kind, r in results.items():
        held = " ".join(f'{s["replicas"][s["primary"]]["vector_count"]}({s["primary"]})'
                        for s in r["shards"])
        print(f"{r['index_type']:<20} {r['recall_cluster']:>14.4f} {r['recall_single']:>13.4f} "
              f"{r['overlap']:>8.4f} {r['queries_identical']:>6}/{r['queries']:<3} "
              f"{r['max_abs_distance_diff']:>12.3g}  {held}")
    for kind, r in results.items():
        t = r["timings_s"]
        print(f"{r['index_type']:<20} {args.queries} queries in batches of {SEARCH_BATCH}: "
              f"cluster {t['cluster_search_s'] * 1e3:.1f} ms, "
              f"single {t['single_search_s'] * 1e3:.1f} ms; add: cluster {t['cluster_add_s']:.2f} s, single {t['single_add_s']:.2f} s")
    for node, lines in problems.items():
        print(f"{node}: {len(lines)} warning/error log lines, e.g. {lines[:3]}")
    for v in violations:
        print("VIOLATION:", v)

    report = {
        "benchmark": "cluster-recall",
        "timestamp": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "config": {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k,
                   "seed": args.seed, "nlist": args.nlist, "nprobe": args.nprobe,
                   "agents": AGENTS, "shards": SHARDS, "replicas": REPLICAS,
                   "add_batch": ADD_BATCH, "search_batch": SEARCH_BATCH,
                   "dataset": f"100 Gaussian clusters, sigma {args.sigma}", "binary": str(BINARY),
                   "cpus": os.cpu_count(), "load_average_at_start": load},
        "results": results,
        "log_problems": problems,
        "violations": violations,
    }
    out = pathlib.Path(args.json) if args.json else (
        ROOT / "bench" / "results" /
        f"{started.strftime('%Y%m%dT%H%M%SZ')}-{commit}-cluster-recall.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}")
    return 1 if violations else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        sys.exit(f"interrupted ({e or 'Ctrl-C'}); everything started was stopped")
