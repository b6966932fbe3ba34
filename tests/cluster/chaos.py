#!/usr/bin/env python3
"""Chaos loop for a vecgpu cluster: crashes, pauses and network faults while clients write
and search; nothing acknowledged is lost, no search is answered without a shard, every shard
gets back to R in-sync replicas, and the replicas end identical.

Starts, on free 127.0.0.1 ports and in a temporary directory, etcd as --etcd-members members
(Debian's etcd-server), --agents `vecgpu serve --join` agents (each with its own data
directory) and one `vecgpu gateway --replicas R`, with a netfault proxy on every link
(tests/cluster/faulty_cluster.py): in front of each agent's API, and between each agent (and
the gateway) and each etcd member. Through the gateway it creates "IDMap,Flat" collections
of --shards shards until every agent leads a shard (or --collections of them); then --clients
faissx clients each add batches under ids of their own and search (k=1) for vectors they
added. Each round applies one fault for --fault-seconds, then heals it:

  kill9              kill -9 of a random agent, restarted on its data directory
  stop               SIGSTOP of a random agent, then SIGCONT
  blackhole-agent    a random agent's API blackholed: the gateway and its peers cannot reach
                     it nor it them (connections hang); it still reaches etcd (stays "live")
  blackhole-primary  the primary of a random shard blackholed from everything, etcd included
  etcd-member        one etcd member killed with SIGKILL (then restarted) or its client port
                     blackholed for everyone (a coin toss)
  delay              every link of a random agent delays each chunk by 200 ms each way

The first rounds take each kind of --faults once, in an order drawn from --seed; later
rounds draw kinds at random. After each fault it waits until every etcd member is healthy,
every agent is registered, and every shard has a live primary and an in-sync set equal to
its replica set of at least R live agents (`vecgpu cluster status --json`), at most
--rereplicate-after (when the gateway knows that flag) + --catch-up-seconds, and records how
long that took.

At the end: every acknowledged id is looked up through the gateway (k=1 search at distance
~0, else reconstruct); each shard's replicas, read on each agent's own FAISSx port, must
hold the same ntotal and return the same ids for a sample of the acknowledged vectors; and no
epoch in etcd's history of the shard maps may name two primaries. The JSON summary (stdout,
and --json FILE) has totals, per kind and per round figures. Exit status 0 only when: 0
acknowledged writes lost (or left unverified), 0 searches answered OK without the id looked
for (a missing shard or a replica without an acknowledged write), every round back to R in
sync within the bound, replicas identical, one primary per epoch.

  .venv/bin/python tests/cluster/chaos.py --rounds 50 --json /tmp/chaos.json
  .venv/bin/python tests/cluster/chaos.py --rounds 6 --lease-ttl 2 --fault-seconds 3

--max-seconds bounds the whole run: rounds stop early when the next would not fit, and a
watchdog kills everything at the bound. Every process it started is killed on exit.
"""
import argparse
import collections
import logging
import pathlib
import random
import re
import shutil
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from faulty_cluster import FaultyCluster  # noqa: E402
from harness import (run_bounded, BINARY, INDEX_TYPE, Children, ClientWorker, help_of, holders,  # noqa: E402
                     logger, merge_acked, now, raw_call, tail, verify)
from probes import epoch_violations, map_history, replica_differences  # noqa: E402

log = logger("chaos")
KINDS = ("kill9", "stop", "blackhole-agent", "blackhole-primary", "etcd-member", "delay")


# ----------------------------------------------------------------------------- state

def recovered(c, collections):
    """Every etcd member healthy, every agent registered, every shard of `collections` with
    a live primary and an in-sync set equal to its replicas, R or more, all live."""
    if not all(c.etcd.alive(i) and c.etcd.healthy(i) for i in range(len(c.etcd.names))):
        return False
    st = c.status()
    if not st:
        return False
    live = {m["id"] for m in st["members"]}
    if not set(c.agents) <= live:
        return False
    maps = {x["name"]: x for x in st["collections"]}
    for name in collections:
        m = maps.get(name)
        if m is None:
            return False
        for s in m["shards"]:
            if not s["primary_live"] or set(s["in_sync"]) != set(s["replicas"]):
                return False
            if len(s["in_sync"]) < m["replication"] or not set(s["in_sync"]) <= live:
                return False
    return True


def shard_keys(status, collections):
    """(collection, shard index) -> (primary, epoch) for our collections."""
    out = {}
    for col in (status or {}).get("collections", []):
        if col["name"] in collections:
            for i, s in enumerate(col["shards"]):
                out[(col["name"], i)] = (s["primary"], s["epoch"])
    return out


def create_collections(args, c, log):
    """--collections of them, or (0) until every agent leads a shard (at most 8 per agent)."""
    collections = []
    limit = args.collections or 8 * args.agents
    endpoint = c.gateways[0].endpoint
    while True:
        name = f"chaos-{len(collections)}"
        for _ in range(50):
            r = raw_call(endpoint, {"action": "create_index", "index_id": name,
                                    "dimension": args.dim, "index_type": INDEX_TYPE,
                                    "shards": args.shards}, 5000)
            if r and r.get("success"):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"could not create {name} through the gateway: {r}")
        collections.append(name)
        status = c.wait(lambda: (st := c.status()) and {x["name"] for x in st["collections"]}
                        >= set(collections) and st, 10, "the collections in the shard maps")
        led = set(holders(status, collections, "primary"))
        if len(collections) >= limit or (not args.collections and led >= set(c.agents)):
            return collections, status


# ----------------------------------------------------------------------------- faults

class Round:
    """One fault: apply() starts it, heal() ends it; `what` describes it."""

    def __init__(self, kind, c, collections, rng, args):
        self.kind, self.c, self.args = kind, c, args
        status = c.status()
        agents = sorted(c.agents)
        self.target = rng.choice(agents)
        self.what = ""
        if kind == "blackhole-primary":
            shards = sorted(shard_keys(status, collections).items())
            (coll, shard), (primary, epoch) = rng.choice(shards)
            self.target = primary if primary in c.agents else self.target
            self.what = f"primary of {coll} shard {shard} (epoch {epoch})"
        elif kind == "etcd-member":
            self.member = rng.randrange(len(c.etcd.names))
            self.mode = rng.choice(["kill", "blackhole"])
            self.target = f"etcd {c.etcd.names[self.member]}"
            leader = c.etcd.leader()
            self.what = (f"{self.mode} of member {c.etcd.names[self.member]}"
                         + (" (the leader)" if leader == self.member else ""))
        # Shards (one name per shard) the target leads and holds.
        self.led = holders(status, collections, "primary").get(self.target, [])
        self.held = holders(status, collections).get(self.target, [])

    def apply(self):
        c, k, a = self.c, self.kind, self.target
        if k == "kill9":
            c.agents[a].kill9()
        elif k == "stop":
            c.agents[a].sigstop()
        elif k == "blackhole-agent":
            c.cut_api(a)
        elif k == "blackhole-primary":
            c.partition(a)
        elif k == "etcd-member":
            if self.mode == "kill":
                c.etcd.kill(self.member)
            else:
                c.cut_etcd_member(self.member)
        elif k == "delay":
            c.slow(a, self.args.delay_ms)

    def heal(self):
        c, k, a = self.c, self.kind, self.target
        if k == "kill9":
            c.agents[a].start()
        elif k == "stop":
            c.agents[a].sigcont()
        elif k == "etcd-member" and self.mode == "kill":
            c.etcd.start(self.member)
        else:
            c.heal()

    def restart_if_dead(self):
        """An agent restarted after a kill that died at once (a port taken?) gets another."""
        if self.kind == "kill9" and not self.c.agents[self.target].alive():
            self.c.agents[self.target].start()


def schedule(args, rng):
    kinds = list(args.faults)
    rng.shuffle(kinds)
    while True:
        yield from kinds
        kinds = [rng.choice(args.faults)]


# ----------------------------------------------------------------------------- the loop

def run(args, children, workdir, t0, deadline):
    reserve = min(120.0, max(15.0, 0.2 * args.max_seconds))  # verification, teardown
    gateway_help = help_of("gateway")
    rerep_flag = "--rereplicate-after" in gateway_help
    gateway_args = ["--rereplicate-after", args.rereplicate_after] if rerep_flag else []
    if not rerep_flag:
        log("`vecgpu gateway` has no --rereplicate-after yet: a shard short of a replica waits "
            "for its agent; the recovery bound is --catch-up-seconds alone")
    bound = (args.rereplicate_after if rerep_flag else 0) + args.catch_up_seconds
    c = FaultyCluster(workdir, agents=args.agents, gateways=1, etcd_members=args.etcd_members,
                      lease_ttl=args.lease_ttl, replicas=args.replicas,
                      gateway_args=gateway_args, children=children)
    collections, status = create_collections(args, c, log)
    replication = min(x["replication"] for x in status["collections"] if x["name"] in collections)
    endpoint = c.gateways[0].endpoint
    log(f"{args.agents} agents, {args.etcd_members} etcd members, gateway {endpoint}, "
        f"{len(collections)} collections of {args.shards} shards, R = {replication}; primaries "
        + ", ".join(f"{a}: {len(h)}" for a, h in sorted(holders(status, collections,
                                                                 "primary").items())))

    stop = threading.Event()
    workers = [ClientWorker(i, endpoint, collections, args, stop, log)
               for i in range(args.clients)]
    for w in workers:
        w.start()
    rounds, stopped_early = [], None
    rng = random.Random(args.seed)
    kinds = schedule(args, rng)
    try:
        time.sleep(args.warmup)
        for n in range(1, args.rounds + 1):
            recent = [r["heal_to_in_sync_s"] for r in rounds if r["recovered"]]
            guess = args.fault_seconds + args.settle + (max(recent) if recent else
                                                        2 * args.lease_ttl + 3)
            if now() + guess > deadline - reserve:
                stopped_early = (f"--max-seconds {args.max_seconds}: stopped after "
                                 f"{len(rounds)} of {args.rounds} rounds")
                log(stopped_early)
                break
            kind = next(kinds)
            rd = Round(kind, c, collections, rng, args)
            before = shard_keys(c.status(), collections)
            started = now()
            rd.apply()
            time.sleep(args.fault_seconds)
            healed = now()
            rd.heal()
            limit_at = min(healed + bound, deadline - reserve)
            ok = False
            while now() < limit_at:
                rd.restart_if_dead()
                if recovered(c, collections):
                    ok = True
                    break
                time.sleep(0.3)
            done = now()
            after = shard_keys(c.status(), collections)
            promotions = sum(1 for k, v in after.items() if k in before and v[0] != before[k][0])
            rounds.append({"round": n, "fault": kind, "target": rd.target, "what": rd.what,
                           "primary_of_shards": len(rd.led),
                           "replica_of_shards": len(rd.held),
                           "started_at": started, "healed_at": healed,
                           "fault_s": round(healed - started, 3), "recovered": ok,
                           "heal_to_in_sync_s": round(done - healed, 3),
                           "fault_to_in_sync_s": round(done - started, 3),
                           "promotions": promotions})
            log(f"round {n}/{args.rounds}: {kind} {rd.target} {rd.what}".rstrip()
                + f" for {healed - started:.1f} s; "
                + (f"back at R in sync {done - healed:.1f} s after the heal" if ok else
                   f"NOT back at R in sync {done - healed:.1f} s after the heal")
                + (f", {promotions} promotions" if promotions else ""))
            if not ok:
                stopped_early = f"round {n} ({kind}): not back at R in-sync replicas"
                break
            time.sleep(args.settle)
    finally:
        stop.set()
        for w in workers:
            w.join(args.client_timeout + 5)
        c.heal()  # whatever happens, the checks see a whole network

    acked = merge_acked(workers, collections)
    n_acked = sum(len(b) for batches, _ in acked.values() for b in batches)
    log(f"verifying {n_acked} acknowledged ids through the gateway")
    lost, unverified = verify(endpoint, acked, args.client_timeout, deadline - reserve / 2)
    log("comparing the replicas")
    diffs, ntotals = compare_replicas(c, collections, acked, args)
    history = map_history(",".join(u[len("http://"):] for u in c.etcd.client_urls))
    violations = [f"{name}: {v}" for name in collections for v in epoch_violations(history, name)]
    meta = {"rereplicate_flag": rerep_flag, "bound_s": bound, "replication": replication,
            "collections": len(collections), "stopped_early": stopped_early}
    return summarize(args, meta, rounds, workers, lost, unverified, diffs, violations, ntotals,
                     now() - t0)


def compare_replicas(c, collections, acked, args):
    """Differences between the replicas of each shard (see probes.replica_differences),
    over a sample of --verify-sample acknowledged ids per collection."""
    endpoints = {a: x.endpoint for a, x in c.agents.items()}
    rng = np.random.default_rng(args.seed)
    diffs, ntotals = [], {}
    for name in collections:
        ids, vecs = acked[name]
        if not ids:
            continue
        ids, vecs = np.concatenate(ids), np.concatenate(vecs)
        pick = rng.choice(len(ids), size=min(len(ids), args.verify_sample), replace=False)
        cmap = c.map(name)
        if cmap is None:
            diffs.append(f"{name}: no shard map could be read")
            continue
        d, totals = replica_differences(cmap, endpoints,
                                        {int(ids[i]): vecs[i] for i in pick})
        diffs += d
        ntotals[name] = totals
    return diffs, ntotals


def summarize(args, meta, rounds, workers, lost, unverified, diffs, violations, ntotals,
              elapsed):
    writes = [w for c in workers for w in c.writes]
    searches = [s for c in workers for s in c.searches]
    starts = [(r["started_at"], r["healed_at"], r) for r in rounds]

    def during(t):
        for s, h, r in starts:
            if s <= t < h + max(2.0, r["heal_to_in_sync_s"]):
                return r
        return None

    def kind_of(err):
        return re.sub(r"\d+", "N", err)[:160]  # "127.0.0.1:N", "for N ms": one kind

    for r in rounds:
        r.update(acked_writes=0, failed_writes=0, searches=0, failed_searches=0,
                 searches_ok_without_the_id=0, errors=collections.Counter())
    quiet = {"failed_writes": 0, "failed_searches": 0, "searches_ok_without_the_id": 0}
    for sent, _, ok, _, err in writes:
        r = during(sent)
        if r is not None:
            r["acked_writes" if ok else "failed_writes"] += 1
        elif not ok:
            quiet["failed_writes"] += 1
        if r is not None and err:
            r["errors"]["write: " + kind_of(err)] += 1
    for sent, _, ok, found, err in searches:
        r = during(sent)
        if r is not None:
            r["searches"] += 1
            r["failed_searches"] += not ok
            r["searches_ok_without_the_id"] += found is False
            if err:
                r["errors"]["search: " + kind_of(err)] += 1
        else:
            quiet["failed_searches"] += not ok
            quiet["searches_ok_without_the_id"] += found is False
    for r in rounds:
        r["errors"] = dict(r["errors"].most_common(3))
    errors = collections.Counter(kind_of(err) for *_, err in writes + searches if err)

    def spread(xs):
        if not xs:
            return {"p50": None, "max": None}
        return {"p50": round(statistics.median(xs), 3), "max": round(max(xs), 3)}

    by_kind = {}
    for r in rounds:
        k = by_kind.setdefault(r["fault"], {"rounds": 0, "heal_to_in_sync": [],
                                           "failed_writes": 0, "failed_searches": 0})
        k["rounds"] += 1
        k["heal_to_in_sync"].append(r["heal_to_in_sync_s"])
        k["failed_writes"] += r["failed_writes"]
        k["failed_searches"] += r["failed_searches"]
    for k in by_kind.values():
        k["heal_to_in_sync_s"] = spread(k.pop("heal_to_in_sync"))
    missing = sum(1 for s in searches if s[3] is False)
    acked_ids = sum(w[3] for w in writes if w[2])
    reasons = []
    if lost:
        reasons.append(f"{len(lost)} acknowledged ids lost")
    if unverified:
        reasons.append(f"{unverified} acknowledged ids could not be checked (requests failed)")
    if missing:
        reasons.append(f"{missing} searches answered OK without the id looked for")
    late = [r["round"] for r in rounds if not r["recovered"]]
    if late:
        reasons.append(f"rounds {late} not back at R in-sync replicas within {meta['bound_s']} s")
    if diffs:
        reasons.append(f"replicas differ: {diffs[:5]}")
    if violations:
        reasons.append(f"two primaries in one epoch: {violations[:5]}")
    if args.rounds and not rounds:
        reasons.append("no round ran")
    if not acked_ids:
        reasons.append("no write was acknowledged")
    reasons += [f"client thread died: {c.error}" for c in workers if c.error]
    per_round = [{k: v for k, v in r.items() if k not in ("started_at", "healed_at")}
                 for r in rounds]
    return {
        "verdict": "fail" if reasons else "pass",
        "reasons": reasons,
        "rounds": len(rounds),
        "rounds_requested": args.rounds,
        "stopped_early": meta["stopped_early"],
        "faults": {k: by_kind.get(k, {"rounds": 0})["rounds"] for k in args.faults},
        "agents": args.agents,
        "etcd_members": args.etcd_members,
        "clients": args.clients,
        "lease_ttl_s": args.lease_ttl,
        "fault_s": args.fault_seconds,
        "replication": meta["replication"],
        "shards": args.shards,
        "collections": meta["collections"],
        "rereplicate_after_flag_supported": meta["rereplicate_flag"],
        "recovery_bound_s": meta["bound_s"],
        "acked_writes": sum(1 for w in writes if w[2]),
        "acked_ids": acked_ids,
        "failed_writes": sum(1 for w in writes if not w[2]),
        "searches": len(searches),
        "failed_searches": sum(1 for s in searches if not s[2]),
        "searches_ok_without_the_id": missing,
        "lost_writes": len(lost),
        "lost_ids_sample": [f"{n}:{i}" for n, i in lost[:20]],
        "unverified_ids": unverified,
        "replicas_identical": not diffs,
        "replica_differences": diffs[:20],
        "replica_ntotals": ntotals,
        "epoch_violations": violations[:20],
        "failures_outside_faults": quiet,
        "errors_seen": dict(errors.most_common(12)),
        "heal_to_in_sync_s": spread([r["heal_to_in_sync_s"] for r in rounds if r["recovered"]]),
        "fault_to_in_sync_s": spread([r["fault_to_in_sync_s"] for r in rounds
                                      if r["recovered"]]),
        "by_fault": by_kind,
        "per_round": per_round,
        "seed": args.seed,
        "elapsed_s": round(elapsed, 1),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="fault rounds (default 10)")
    p.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    p.add_argument("--max-seconds", type=float, default=900,
                   help="hard bound on the whole run (default 900)")
    p.add_argument("--rereplicate-after", type=float, default=60,
                   help="passed to the gateway when it knows the flag (default 60)")
    p.add_argument("--catch-up-seconds", type=float, default=30,
                   help="after a heal, how long a shard may take to be back at R in sync, on "
                        "top of --rereplicate-after (default 30)")
    p.add_argument("--json", type=pathlib.Path, help="also write the summary here")
    p.add_argument("--faults", default=",".join(KINDS),
                   help=f"comma-separated kinds (default: all of {','.join(KINDS)})")
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--replicas", type=int, default=2, help="gateway --replicas (default 2)")
    p.add_argument("--etcd-members", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--shards", type=int, default=2, help="shards per collection (default 2)")
    p.add_argument("--collections", type=int, default=0,
                   help="collections to create (0: until every agent leads a shard)")
    p.add_argument("--lease-ttl", type=int, default=3, help="agents' --lease-ttl (default 3)")
    p.add_argument("--fault-seconds", type=float,
                   help="how long each fault lasts (default 2 lease TTLs)")
    p.add_argument("--delay-ms", type=float, default=200, help="the delay fault's (default 200)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between rounds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before the first fault")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--batch", type=int, default=10, help="vectors per add")
    p.add_argument("--pause-ms", type=float, default=20, help="each client's pause per op")
    p.add_argument("--client-timeout", type=float, default=5.0, help="faissx client timeout")
    p.add_argument("--verify-sample", type=int, default=2000,
                   help="acknowledged ids per collection compared across replicas")
    p.add_argument("--keep-dir", action="store_true", help="keep the data dirs and logs")
    args = p.parse_args(argv)
    args.k = 1
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(args.faults) - set(KINDS)
    if unknown or not args.faults:
        p.error(f"unknown --faults {sorted(unknown)}; kinds: {', '.join(KINDS)}")
    if args.fault_seconds is None:
        args.fault_seconds = 2.0 * args.lease_ttl
    if not 1 <= args.replicas <= args.agents:
        p.error("--replicas must be between 1 and --agents")
    if shutil.which("etcd") is None:
        p.error("etcd is not installed (Debian's etcd-server)")
    if not BINARY.exists():
        p.error(f"{BINARY} is not built (or set VECGPU_BIN)")
    if "--agent-port" not in help_of("serve"):
        p.error(f"{BINARY} has no `serve --agent-port`: no proxy can sit in front of an agent")
    logging.getLogger("faissx").setLevel(logging.CRITICAL + 1)  # it logs every failure

    def headline(summary):
        return (f"{summary['verdict']}: {summary['rounds']} rounds {summary['faults']}, "
                f"{summary['acked_ids']} acknowledged ids, {summary['lost_writes']} lost, "
                f"{summary['searches_ok_without_the_id']} searches OK without the id, replicas "
                f"{'identical' if summary['replicas_identical'] else 'DIFFER'}, back in sync p50 "
                f"{summary['heal_to_in_sync_s']['p50']} s max {summary['heal_to_in_sync_s']['max']} s")

    return run_bounded(args, "vecgpu-chaos-", run, headline)


if __name__ == "__main__":
    sys.exit(main())
