#!/usr/bin/env python3
"""kill -9 loop for a vecgpu cluster: acknowledged writes survive, searches fail over.

Starts, on free 127.0.0.1 ports and in a temporary directory, a real etcd (Debian's
etcd-server), --agents `vecgpu serve --join` agents (each with its own data directory) and one
`vecgpu gateway` (with --replicas R when the gateway knows the flag). Through the gateway, with
the real faissx client (one FaissXClient per client thread), it creates "IDMap,Flat"
collections until every agent leads one (or --collections of them), then --clients threads each
add batches under ids of their own (the `add_with_ids` request faissx's IndexIDMap sends) and
search for vectors they added, round robin over the collections. Each round kill -9s a random
agent, lets the clients go on for --down-seconds, restarts the agent on the same data directory
and ports, and waits (at most --recovery-timeout) until `vecgpu cluster status --json` shows
every agent live and every shard's in-sync set equal to its replica set.

At the end every acknowledged id is looked up through the gateway: a k=1 search for its exact
vector must return the id at distance ~0 (else `reconstruct` must return the vector). The JSON
summary (stdout, and --json FILE) has, per round and in total: acknowledged and failed writes,
failed searches, how long after the kill the last failed search was sent, and the recovery
time. Exit status 0 only when no acknowledged id is lost (nor left unverified), every round
recovered, and -- where the collections are replicated (R >= 2) -- no search sent later than
one lease TTL after a kill failed. With R = 1 a killed agent's collections are unavailable until
it is back, so the late-failure check does not apply (the summary says so); losing
acknowledged writes is still a failure (they are on the agent's data directory).

  .venv/bin/python tests/cluster/kill_loop.py --rounds 50
  .venv/bin/python tests/cluster/kill_loop.py --replicas 1 --rounds 3 --json /tmp/kill.json

--max-seconds bounds the whole run (start-up, rounds, verification): rounds stop early when
the next one would not fit, and a watchdog kills everything at the bound. Every process it
started is killed on exit (finally, atexit, SIGTERM, SIGHUP).
"""
import argparse
import atexit
import bisect
import json
import logging
import os
import pathlib
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from faissx.client.client import FaissXClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("VECGPU_BIN", ROOT / "build" / "vecgpu"))
INDEX_TYPE = "IDMap,Flat"  # ids chosen by the clients (PROTOCOL.md: plain factory strings)
now = time.monotonic


def log(msg):
    print(f"[kill-loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
    """Every process this script started. kill_all() may run from several places (finally,
    atexit, the watchdog); it is idempotent. Thread-safe."""

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


class Etcd:
    """One etcd member on free loopback ports, its data under `workdir`."""

    def __init__(self, children, workdir):
        self.client_url = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        self.proc = children.start(
            ["etcd", "--name", "m", "--data-dir", workdir / "etcd",
             "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "m=" + peer, "--unsafe-no-fsync"], workdir / "etcd.log")

    def wait_healthy(self, timeout=20.0):
        deadline = now() + timeout
        while now() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.client_url + "/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("etcd did not come up")


class Agent:
    """`vecgpu serve --join`: restarts reuse its data directory, ports and id."""

    def __init__(self, children, workdir, index, etcd_url, lease_ttl, grpc):
        self.children, self.id = children, f"agent{index}"
        self.data_dir = workdir / self.id
        self.log_path = workdir / f"{self.id}.log"
        self.advertise = f"127.0.0.1:{free_port()}"
        self.args = ["serve", "--join", etcd_url, "--advertise", self.advertise,
                     "--agent-id", self.id, "--lease-ttl", lease_ttl, "--data-dir", self.data_dir,
                     "--port", free_port(), "--metrics-port", free_port(), "--log-level", "info"]
        if grpc:
            self.args += ["--grpc-port", free_port()]
        self.proc = None
        self.starts = 0

    def start(self):
        self.proc = self.children.start([BINARY, *self.args], self.log_path)
        self.starts += 1

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


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
    leads (role "primary")."""
    held = {}
    for c in (status or {}).get("collections", []):
        if c["name"] in collections:
            for s in c["shards"]:
                for a in (s["replicas"] if role == "replicas" else [s["primary"]]):
                    held.setdefault(a, []).append(c["name"])
    return held


# ----------------------------------------------------------------------------- clients

def connect(endpoint, timeout):
    """A FaissXClient of its own (zmq sockets are per thread), connected and pinged."""
    client = FaissXClient()
    client.configure(server=endpoint, timeout=timeout)
    return client


def add_with_ids(client, collection, vectors, ids):
    """The request faissx's IndexIDMap.add_with_ids sends (its _add_with_ids_remote_batch);
    raises unless the server acknowledged it."""
    client._send_request({"action": "add_with_ids", "index_id": collection,
                          "vectors": vectors.tolist(), "ids": ids.tolist()})


class ClientWorker(threading.Thread):
    """One client: adds a batch under fresh ids, then searches for a vector it added, over
    and over, round robin over the collections. Records every call; keeps the acknowledged
    ids and vectors. Only its own thread writes its fields until stop is set and it is
    joined."""

    def __init__(self, index, endpoint, collections, args, stop):
        super().__init__(name=f"client{index}", daemon=True)
        self.index, self.endpoint, self.collections = index, endpoint, collections
        self.args, self.stop = args, stop
        self.writes = []    # (sent, answered, ok, n ids)
        self.searches = []  # (sent, answered, ok, found the id or None)
        self.acked = {c: ([], []) for c in collections}  # name -> ([ids], [vectors])
        self._pool = []     # (collection, batch number) of acknowledged batches
        self.error = None   # what stopped the thread early

    def run(self):
        try:
            self._loop()
        except Exception as e:  # a bug here, not in the cluster: fails the run, loudly
            self.error = f"{self.name}: {e!r}"
            log(self.error)

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
            ok = client is not None and self._call(lambda: add_with_ids(client, name, x, ids))
            self.writes.append((sent, now(), ok, a.batch))
            if ok:
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
                ok = client is not None and self._call(
                    lambda: got.append(client.search(qname, q, k=5)))
                found = None
                if ok:
                    top = (got[0].get("results") or [{}])[0].get("indices") or [-1]
                    found = int(top[0]) == want
                else:
                    client = None
                self.searches.append((sent, now(), ok, found))
            time.sleep(a.pause_ms / 1000)

    @staticmethod
    def _call(fn):
        try:
            fn()
            return True
        except Exception:  # faissx raises RuntimeError/TimeoutError and drops its socket
            return False

    def _reconnect(self):
        try:
            return connect(self.endpoint, self.args.client_timeout)
        except Exception:
            time.sleep(0.2)
            return None


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


def summarize(args, meta, rounds, workers, lost, unverified, elapsed):
    writes = sorted(w for c in workers for w in c.writes)
    searches = sorted(s for c in workers for s in c.searches)
    kills = [r["killed_at"] for r in rounds]
    ttl = args.lease_ttl

    def window(t):
        """Index of the round whose kill came last at or before t; -1 before the first."""
        return bisect.bisect_right(kills, t) - 1

    per = [{"acked_writes": 0, "acked_ids": 0, "failed_writes": 0, "searches": 0,
            "failed_searches": 0, "late_failed_searches": 0, "late_failed_writes": 0,
            "last_failed_search_after_kill_s": None} for _ in range(len(rounds) + 1)]
    for sent, _, ok, n in writes:
        i = window(sent)
        p = per[i + 1]
        if ok:
            p["acked_writes"] += 1
            p["acked_ids"] += n
        else:
            p["failed_writes"] += 1
            if i < 0 or sent - kills[i] > ttl:
                p["late_failed_writes"] += 1
    stale = 0
    for sent, _, ok, found in searches:
        i = window(sent)
        p = per[i + 1]
        p["searches"] += 1
        stale += found is False
        if ok:
            continue
        p["failed_searches"] += 1
        if i < 0 or sent - kills[i] > ttl:
            p["late_failed_searches"] += 1
        if i >= 0:
            after = round(sent - kills[i], 3)
            last = p["last_failed_search_after_kill_s"]
            p["last_failed_search_after_kill_s"] = after if last is None else max(last, after)
    per_round = []
    for r, p in zip(rounds, per[1:]):
        per_round.append({k: v for k, v in r.items() if k != "killed_at"} | p)
    recov = [r["recovery_s"] for r in rounds if r["recovered"]]
    from_kill = [r["kill_to_in_sync_s"] for r in rounds if r["recovered"]]

    def spread(xs):
        if not xs:
            return {"p50": None, "max": None}
        return {"p50": round(statistics.median(xs), 3), "max": round(max(xs), 3)}

    late = sum(p["late_failed_searches"] for p in per)
    applies = meta["replication"] >= 2
    total = {k: sum(p[k] for p in per) for k in ("acked_writes", "acked_ids", "failed_writes",
                                                   "searches", "failed_searches",
                                                   "late_failed_writes")}
    reasons = []
    if lost:
        reasons.append(f"{len(lost)} acknowledged ids lost")
    if unverified:
        reasons.append(f"{unverified} acknowledged ids could not be checked (requests failed)")
    if applies and late:
        reasons.append(f"{late} searches failed later than the lease TTL ({ttl} s) after a kill")
    unrecovered = [r["round"] for r in rounds if not r["recovered"]]
    if unrecovered:
        reasons.append(f"rounds {unrecovered} did not get back to full in-sync sets")
    if args.rounds and not rounds:
        reasons.append("no round ran")
    if not total["acked_ids"]:
        reasons.append("no write was acknowledged")
    reasons += [f"client thread died: {c.error}" for c in workers if c.error]
    note = ("late search failures checked: the collections are replicated (R >= 2)" if applies
            else f"late search failures NOT checked: replication {meta['replication']} (R = 1) "
                 "leaves a killed agent's collections unavailable until it is back")
    return {
        "verdict": "fail" if reasons else "pass",
        "reasons": reasons,
        "rounds": len(rounds),
        "rounds_requested": args.rounds,
        "stopped_early": meta["stopped_early"],
        "agents": args.agents,
        "clients": args.clients,
        "lease_ttl_s": ttl,
        "replicas_requested": args.replicas,
        "replicas_flag_supported": meta["replicas_flag"],
        "replication": meta["replication"],
        "late_check_applies": applies,
        "late_check_note": note,
        "collections": meta["collections"],
        "acked_writes": total["acked_writes"],
        "acked_ids": total["acked_ids"],
        "failed_writes": total["failed_writes"],
        "searches": total["searches"],
        "failed_searches": total["failed_searches"],
        "lost_writes": len(lost),
        "lost_ids_sample": [f"{n}:{i}" for n, i in lost[:20]],
        "unverified_ids": unverified,
        "late_search_failures": late,
        "late_write_failures": total["late_failed_writes"],
        "searches_missing_an_acked_id": stale,
        "failures_before_the_first_kill": {"writes": per[0]["failed_writes"],
                                           "searches": per[0]["failed_searches"]},
        "recovery_s": spread(recov),
        "kill_to_in_sync_s": spread(from_kill),
        "per_round": per_round,
        "seed": args.seed,
        "elapsed_s": round(elapsed, 1),
    }


# ----------------------------------------------------------------------------- the loop

def create_collections(args, endpoint, etcd_url, agent_ids):
    """--collections of them, or (0) until every agent leads at least one (so that each
    kill hits a primary; at most 8 per agent). Returns (names, their cluster status)."""
    collections, client = [], None
    limit = args.collections or 8 * args.agents
    while True:
        name = f"kill-loop-{len(collections)}"
        for _ in range(50):
            try:
                if client is None:
                    client = connect(endpoint, args.client_timeout)
                client.create_index(name, args.dim, INDEX_TYPE)
                break
            except Exception:
                client = None
                time.sleep(0.2)
        else:
            raise RuntimeError(f"could not create {name} through the gateway")
        collections.append(name)
        for _ in range(50):
            status = cluster_status(etcd_url)
            if status and {c["name"] for c in status["collections"]} >= set(collections):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("`vecgpu cluster status` does not show the collections")
        led = set(holders(status, collections, "primary"))
        if len(collections) >= limit or (not args.collections and led >= set(agent_ids)):
            return collections, status


def run(args, children, workdir, t0, deadline):
    reserve = min(120.0, max(10.0, 0.15 * args.max_seconds))  # verification, teardown
    replicas_flag = "--replicas" in help_of("gateway")
    grpc = "--grpc-port" in help_of("serve")
    if args.replicas > 1 and not replicas_flag:
        log(f"WARNING: `vecgpu gateway` has no --replicas yet: running with R = 1, "
            f"not {args.replicas}")

    etcd = Etcd(children, workdir)
    etcd.wait_healthy()
    agents = [Agent(children, workdir, i + 1, etcd.client_url, args.lease_ttl, grpc)
              for i in range(args.agents)]
    for a in agents:
        a.start()
    ids = [a.id for a in agents]
    while not fully_in_sync(cluster_status(etcd.client_url), ids, []):
        if now() > t0 + 30 or any(not a.alive() for a in agents):
            raise RuntimeError("the agents did not all register (see their logs)")
        time.sleep(0.2)
    gw_args = ["gateway", "--etcd", etcd.client_url, "--port", free_port(),
               "--metrics-port", free_port(), "--log-level", "info"]
    if grpc:
        gw_args += ["--grpc-port", free_port()]
    if replicas_flag:
        gw_args += ["--replicas", args.replicas]
    endpoint = f"tcp://127.0.0.1:{gw_args[gw_args.index('--port') + 1]}"
    gateway = children.start([BINARY, *gw_args], workdir / "gateway.log")
    client = None
    while client is None:
        if gateway.poll() is not None or now() > t0 + 45:
            raise RuntimeError("the gateway did not answer (see gateway.log)")
        try:
            client = connect(endpoint, 1.0)
        except Exception:
            time.sleep(0.2)
    time.sleep(0.5)  # the gateway's member directory catches up with etcd

    collections, status = create_collections(args, endpoint, etcd.client_url, ids)
    replication = min(c["replication"] for c in status["collections"]
                      if c["name"] in collections)
    log(f"{args.agents} agents, gateway {endpoint} (R = {replication}"
        f"{'' if replicas_flag else ', no --replicas flag'}), primaries "
        + ", ".join(f"{a}: {sorted(h)}" for a, h in
                    sorted(holders(status, collections, "primary").items())))

    stop = threading.Event()
    workers = [ClientWorker(i, endpoint, collections, args, stop) for i in range(args.clients)]
    for w in workers:
        w.start()
    rounds, stopped_early = [], None
    pick = random.Random(args.seed)
    try:
        time.sleep(args.warmup)
        for n in range(1, args.rounds + 1):
            recent = [r["recovery_s"] for r in rounds if r["recovered"]]
            guess = args.down_seconds + args.settle + (max(recent) if recent else
                                                       2 * args.lease_ttl + 2)
            if now() + guess > deadline - reserve:
                stopped_early = (f"--max-seconds {args.max_seconds}: stopped after "
                                 f"{len(rounds)} of {args.rounds} rounds")
                log(stopped_early)
                break
            victim = pick.choice(agents)
            before = cluster_status(etcd.client_url)
            held = holders(before, collections).get(victim.id, [])
            led = holders(before, collections, "primary").get(victim.id, [])
            starts = victim.starts
            killed = now()
            victim.kill9()
            time.sleep(args.down_seconds)
            restarted = now()
            victim.start()
            limit_at = min(restarted + args.recovery_timeout, deadline - reserve)
            recovered = False
            while now() < limit_at:
                if not victim.alive():  # died on start (a port taken?): try again
                    time.sleep(0.5)
                    victim.start()
                if fully_in_sync(cluster_status(etcd.client_url), ids, collections):
                    recovered = True
                    break
                time.sleep(0.2)
            done = now()
            rounds.append({"round": n, "agent": victim.id, "held": sorted(held),
                           "led": sorted(led),
                           "killed_at": killed, "down_s": round(restarted - killed, 3),
                           "recovered": recovered,
                           "recovery_s": round(done - restarted, 3),
                           "kill_to_in_sync_s": round(done - killed, 3),
                           "start_attempts": victim.starts - starts})
            log(f"round {n}/{args.rounds}: kill -9 {victim.id} (primary of {len(led)}, "
                f"replica of {len(held)} of {len(collections)} collections), restarted after "
                f"{restarted - killed:.1f} s, "
                + (f"in sync {done - restarted:.1f} s later" if recovered else
                   f"NOT in sync after {done - restarted:.1f} s"))
            if not recovered:
                stopped_early = f"round {n}: the cluster did not get back in sync"
                break
            time.sleep(args.settle)
    finally:
        stop.set()
        for w in workers:
            w.join(args.client_timeout + 5)

    acked = {c: ([], []) for c in collections}
    for w in workers:
        for c, (i, v) in w.acked.items():
            acked[c][0].extend(i)
            acked[c][1].extend(v)
    n_acked = sum(len(batch) for batches, _ in acked.values() for batch in batches)
    log(f"verifying {n_acked} acknowledged ids through the gateway")
    lost, unverified = verify(endpoint, acked, args.client_timeout, deadline - 2)
    meta = {"replicas_flag": replicas_flag, "replication": replication,
            "collections": len(collections), "stopped_early": stopped_early}
    return summarize(args, meta, rounds, workers, lost, unverified, now() - t0)


def tail(path, lines=15):
    try:
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="kill -9 rounds (default 10)")
    p.add_argument("--max-seconds", type=float, default=900,
                   help="hard bound on the whole run (default 900)")
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--replicas", type=int, default=2, help="gateway --replicas (default 2)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--lease-ttl", type=int, default=3, help="agents' --lease-ttl (default 3)")
    p.add_argument("--json", type=pathlib.Path, help="also write the summary here")
    p.add_argument("--collections", type=int, default=0,
                   help="collections to create (0: until every agent leads one)")
    p.add_argument("--down-seconds", type=float,
                   help="how long a killed agent stays down (default 2 lease TTLs)")
    p.add_argument("--recovery-timeout", type=float, default=60,
                   help="longest wait for full in-sync sets after a restart (default 60)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between rounds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before the first kill")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--batch", type=int, default=10, help="vectors per add")
    p.add_argument("--pause-ms", type=float, default=20, help="each client's pause per op")
    p.add_argument("--client-timeout", type=float, default=5.0, help="faissx client timeout")
    p.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    p.add_argument("--keep-dir", action="store_true", help="keep the data dirs and logs")
    args = p.parse_args(argv)
    if args.down_seconds is None:
        args.down_seconds = 2.0 * args.lease_ttl
    if not 1 <= args.replicas <= args.agents:
        p.error("--replicas must be between 1 and --agents")
    if shutil.which("etcd") is None:
        p.error("etcd is not installed (Debian's etcd-server)")
    if not BINARY.exists():
        p.error(f"{BINARY} is not built (or set VECGPU_BIN)")
    logging.getLogger("faissx").setLevel(logging.CRITICAL + 1)  # it logs every failure

    t0 = now()
    deadline = t0 + args.max_seconds
    children = Children()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="vecgpu-kill-loop-"))
    atexit.register(children.kill_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))

    def hard_stop():
        log(f"hard bound --max-seconds {args.max_seconds} reached: killing everything")
        children.kill_all()
        if args.json:
            args.json.write_text(json.dumps({"verdict": "fail",
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
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    log(f"{summary['verdict']}: {summary['rounds']} rounds, {summary['acked_ids']} acknowledged "
        f"ids, {summary['lost_writes']} lost, {summary['late_search_failures']} late search "
        f"failures ({'checked' if summary['late_check_applies'] else 'not checked, R = 1'}), "
        f"recovery p50 {summary['recovery_s']['p50']} s max {summary['recovery_s']['max']} s")
    return 0 if summary["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
