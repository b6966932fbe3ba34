#!/usr/bin/env python3
"""Rebalancing when an agent joins: how long until the data is even, how even, and whether
searches were served throughout (issue [3/5]).

Starts, on free loopback ports in a temporary directory, etcd (Debian's etcd-server), two
`vecgpu serve --join` agents and one `vecgpu gateway --replicas R --rebalance-tolerance T`.
Creates --collections "IDMap,Flat" collections through the gateway (sizes --n, or growing
from n/2 to 3n/2 with --vary), waits until the placement is settled, then starts a third
agent while --clients threads search through the gateway (k=10 for a vector each added, which
must come back first). It polls `vecgpu cluster rebalance --dry-run --json` and the shard maps
until no move is left and every shard is settled, and reports: the seconds that took, the
moves made, each agent's bytes before and after (as the primaries report them) and the spread
((max - min) / mean), and the searches sent meanwhile, failed, and their latency (p50, p99).

Exit status 1 when the data did not settle within --timeout, a search failed, or the third
agent holds nothing. Writes bench/results/<UTC time>-<commit>-cluster-rebalance.json.

  .venv/bin/python bench/cluster_rebalance.py [--collections 6] [--n 20000] [--dim 64]
      [--replicas 1] [--tolerance 0.2] [--vary] [--clients 2] [--json OUT]
"""
import argparse
import datetime
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
sys.path.insert(0, str(ROOT / "tests" / "python"))
import harness as kl  # noqa: E402  (processes: etcd, agents, gateways, free ports)
from conftest import call, rows  # noqa: E402


def dry_run(etcd_url):
    r = subprocess.run([str(kl.BINARY), "cluster", "rebalance", "--dry-run", "--json",
                        "--etcd", etcd_url], capture_output=True, text=True, timeout=20)
    return json.loads(r.stdout) if r.returncode == 0 else None


def settled(status):
    for col in status["collections"]:
        for s in col["shards"]:
            if sorted(s["in_sync"]) != sorted(s["replicas"]) or len(s["replicas"]) != col["replication"]:
                return False
            if s.get("leaving") or s.get("handover"):
                return False
    return True


def quiet(etcd_url):
    """(settled, plan): no move in the plan (taken first: it leaves moves in progress out)
    and every shard settled."""
    plan = dry_run(etcd_url)
    status = kl.cluster_status(etcd_url)
    return plan is not None and status is not None and not plan["moves"] and settled(status), plan


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--collections", type=int, default=6)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=0.2)
    ap.add_argument("--vary", action="store_true", help="collection sizes from n/2 to 3n/2")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args(argv)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="vecgpu-rebalance-"))
    children = kl.Children()
    result = {"config": vars(args) | {"json": str(args.json) if args.json else None}}
    try:
        etcd = kl.EtcdCluster(children, workdir)
        etcd.wait_healthy()
        etcd.client_url = etcd.url
        agents = [kl.Agent(children, workdir, i, etcd.url, "3", grpc=True) for i in (1, 2, 3)]
        for a in agents[:2]:
            a.start()
        gateway = kl.Gateway(children, workdir, 1, etcd.url, grpc=True,
                             extra=["--replicas", args.replicas,
                                    "--rebalance-tolerance", args.tolerance])
        gateway.start()
        gateway.wait_ready()
        endpoint = gateway.endpoint
        rng = np.random.default_rng(1)
        names, probes = [], []
        for c in range(args.collections):
            name = f"reb{c}"
            n = args.n if not args.vary else int(args.n * (0.5 + c / max(1, args.collections - 1)))
            deadline = time.monotonic() + 30
            while not call_ok(endpoint, action="create_index", index_id=name,
                              dimension=args.dim, index_type="IDMap,Flat"):
                if time.monotonic() > deadline:
                    raise RuntimeError("create_index did not succeed")
                time.sleep(0.2)
            x = rng.standard_normal((n, args.dim)).astype(np.float32)
            for lo in range(0, n, 5000):
                r = call(kl_server(endpoint), action="add_with_ids", index_id=name,
                         vectors=rows(x[lo:lo + 5000]), ids=list(range(lo, min(n, lo + 5000))))
                assert r.get("success"), r
            names.append(name)
            probes.append((name, x[:50], list(range(50))))
        time.sleep(3)  # the primaries report their copies' sizes every 2 s
        t = time.monotonic()
        while not quiet(etcd.client_url)[0]:
            if time.monotonic() - t > args.timeout:
                raise RuntimeError("the first two agents did not settle")
            time.sleep(0.5)
        before = dry_run(etcd.client_url)

        stop = threading.Event()
        lat, failures = [], []

        def searcher(seed):
            r2 = np.random.default_rng(seed)
            while not stop.is_set():
                name, x, ids = probes[r2.integers(len(probes))]
                j = int(r2.integers(len(ids)))
                t0 = time.perf_counter()
                try:
                    r = call(kl_server(endpoint), action="search", index_id=name,
                             query_vectors=rows(x[j:j + 1]), k=10)
                except Exception as e:  # noqa: BLE001 (a timeout counts as a failure)
                    r = {"success": False, "error": repr(e)}
                lat.append(time.perf_counter() - t0)
                if not r.get("success") or r["results"][0]["indices"][0] != ids[j]:
                    failures.append(r.get("error") or "wrong first result")
        threads = [threading.Thread(target=searcher, args=(s,), daemon=True)
                   for s in range(args.clients)]
        for th in threads:
            th.start()
        time.sleep(1)
        moving = lambda: sum(1 for line in gateway.log_path.read_text().splitlines()  # noqa: E731
                             if "placer:" in line and ": moving from '" in line)
        moves_before = moving()
        joined = time.monotonic()
        agents[2].start()
        took, plan = None, None
        time.sleep(1)
        while time.monotonic() - joined < args.timeout:
            ok_now, plan = quiet(etcd.client_url)
            if ok_now:
                took = time.monotonic() - joined
                break
            time.sleep(0.5)
        time.sleep(1)
        stop.set()
        for th in threads:
            th.join(10)
        after = dry_run(etcd.client_url) or {}
        moves = moving() - moves_before
        total = sum(after.get("bytes_before", {}).values()) or 1
        result.update({
            "seconds_to_even": took,
            "moves_after_join": moves,
            "bytes_before_join": before["bytes_before"],
            "bytes_after": after.get("bytes_before"),
            "share_after": {a: b / total for a, b in after.get("bytes_before", {}).items()},
            "spread_before_join": before["spread_before"],
            "spread_after": after.get("spread_before"),
            "searches": len(lat),
            "failed_searches": len(failures),
            "failures_sample": failures[:5],
            "search_ms_p50": 1000 * statistics.median(lat) if lat else None,
            "search_ms_p99": 1000 * float(np.percentile(lat, 99)) if lat else None,
        })
    finally:
        children.kill_all()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result["commit"] = commit
    result["timestamp"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    out = args.json or (ROOT / "bench" / "results" /
                        f"{datetime.datetime.utcnow():%Y%m%dT%H%M%SZ}-{commit}-cluster-rebalance.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    share = (result.get("share_after") or {}).get("agent3", 0)
    bad = result.get("seconds_to_even") is None or result["failed_searches"] or share == 0
    return 1 if bad else 0


class _Endpoint:
    def __init__(self, endpoint):
        self.endpoint = endpoint


def kl_server(endpoint):
    """What conftest.call takes: anything with an `endpoint`."""
    return _Endpoint(endpoint)


def call_ok(endpoint, **request):
    try:
        return call(kl_server(endpoint), **request).get("success", False)
    except Exception:  # noqa: BLE001 (the gateway may not listen yet)
        return False


if __name__ == "__main__":
    sys.exit(main())
