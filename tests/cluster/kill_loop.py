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
import bisect
import logging
import pathlib
import random
import shutil
import statistics
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from harness import (run_bounded, BINARY, INDEX_TYPE, Agent, Children, ClientWorker, EtcdCluster,  # noqa: E402
                     Gateway, cluster_status, connect, fully_in_sync, help_of, holders,
                     logger, merge_acked, now, tail, verify)

log = logger("kill-loop")


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
    for sent, _, ok, n, _ in writes:
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
    for sent, _, ok, found, _ in searches:
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

    etcd = EtcdCluster(children, workdir, members=1)
    etcd.wait_healthy()
    agents = [Agent(children, workdir, i + 1, etcd.url, args.lease_ttl, grpc)
              for i in range(args.agents)]
    for a in agents:
        a.start()
    ids = [a.id for a in agents]
    while not fully_in_sync(cluster_status(etcd.url), ids, []):
        if now() > t0 + 30 or any(not a.alive() for a in agents):
            raise RuntimeError("the agents did not all register (see their logs)")
        time.sleep(0.2)
    gateway = Gateway(children, workdir, 1, etcd.url, grpc,
                      ["--replicas", args.replicas] if replicas_flag else [])
    gateway.start()
    gateway.wait_ready(max(5.0, t0 + 45 - now()))
    endpoint = gateway.endpoint
    time.sleep(0.5)  # the gateway's member directory catches up with etcd

    collections, status = create_collections(args, endpoint, etcd.url, ids)
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
            before = cluster_status(etcd.url)
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
                if fully_in_sync(cluster_status(etcd.url), ids, collections):
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

    acked = merge_acked(workers, collections)
    n_acked = sum(len(batch) for batches, _ in acked.values() for batch in batches)
    log(f"verifying {n_acked} acknowledged ids through the gateway")
    lost, unverified = verify(endpoint, acked, args.client_timeout, deadline - 2)
    meta = {"replicas_flag": replicas_flag, "replication": replication,
            "collections": len(collections), "stopped_early": stopped_early}
    return summarize(args, meta, rounds, workers, lost, unverified, now() - t0)


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

    def headline(summary):
        return (f"{summary['verdict']}: {summary['rounds']} rounds, {summary['acked_ids']} acknowledged "
                f"ids, {summary['lost_writes']} lost, {summary['late_search_failures']} late search "
                f"failures ({'checked' if summary['late_check_applies'] else 'not checked, R = 1'}), "
                f"recovery p50 {summary['recovery_s']['p50']} s max {summary['recovery_s']['max']} s")

    return run_bounded(args, "vecgpu-kill-loop-", run, headline)


if __name__ == "__main__":
    sys.exit(main())
