"""A cluster that heals itself (issue [3/5], items 1, 2 and 6), on a real cluster: etcd,
`vecgpu serve --join` agents and a `vecgpu gateway` as child processes on loopback ports.

- Re-replication: a dead agent's shards get a new replica on another agent after
  --rereplicate-after, built from the primary (records, or a whole copy when the records no
  longer reach back), put in the in-sync set, and the dead agent's entry is dropped; back, the
  agent drops its now foreign copy.
- Drain: `vecgpu cluster drain AGENT --wait` moves every replica off (the primary handed over
  first), with writes and searches going on and none failing; `--undo` lets it take replicas
  again.
- Rebalancing: a third agent joining two that hold 6 collections gets about a third of them;
  `vecgpu cluster rebalance --dry-run` shows the plan first.
- Rolling restart: each agent drained, restarted, ready (caught up) and undrained in turn
  under load: nothing lost, no search failed.
- A gateway refuses an agent that speaks another agent API version, with a log line.
"""
import json
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest

from conftest import BINARY, call, ok, rand, rows, uid
from test_cluster_agent import wait_until
from test_cluster_replication import (TTL, add_ids, cluster_factory, count, create,  # noqa: F401
                                      reconstruct)


def shard(c, name, i=0):
    return c.map(name)["shards"][i]


def settled(c, name, replicas=2, without=()):
    m = c.map(name)
    for s in m["shards"]:
        if sorted(s["in_sync"]) != sorted(s["replicas"]) or len(s["replicas"]) != replicas:
            return False
        if s.get("leaving") or s.get("handover") or set(s["replicas"]) & set(without):
            return False
    return True


def logs(c):
    """For a failed assertion: the cluster's map changes and replication lines (stops it)."""
    out = []
    for who, srv in [*c.agents.items(), ("gateway", c.gw)]:
        if srv.proc.poll() is None:
            srv.stop()
        lines = [ln for ln in (getattr(srv, "output", "") or "").splitlines()
                 if "replica" in ln or "placer" in ln or "cop" in ln]
        out.append(f"--- {who}\n" + "\n".join(lines[-200:]))
    return "\n".join(out)


def cli(c, *args, timeout=60):
    return subprocess.run([str(BINARY), "cluster", *args, "--etcd", c.url],
                          capture_output=True, text=True, timeout=timeout)


def ready(srv):
    try:
        return urllib.request.urlopen(srv.metrics_url + "/readyz", timeout=2).status == 200
    except OSError:
        return False


def holds(srv, name):
    """Whether an agent has a copy of `name` (its own FAISSx front end)."""
    return call(srv, action="get_index_stats", index_id=name).get("success", False)


class Load(threading.Thread):
    """Writes batches of fresh ids to `names` and searches for vectors already acknowledged,
    through the gateway, until stopped; counts failures of each."""

    def __init__(self, gw, names, dim=8):
        super().__init__(daemon=True)
        self.gw, self.names, self.dim = gw, names, dim
        self.acked = {n: [] for n in names}
        self.vectors = {}
        self.write_failures, self.search_failures, self.searches = [], [], 0
        self.stop_flag = threading.Event()

    def run(self):
        rng = np.random.default_rng(5)
        next_id = 10_000
        while not self.stop_flag.is_set():
            for n in self.names:
                x = rng.standard_normal((5, self.dim)).astype(np.float32)
                ids = list(range(next_id, next_id + 5))
                next_id += 5
                r = add_ids(self.gw, n, x, ids)
                if r.get("success"):
                    self.acked[n] += ids
                    for i, v in zip(ids, x):
                        self.vectors[i] = v
                else:
                    self.write_failures.append(r.get("error"))
                if self.acked[n]:
                    i = self.acked[n][rng.integers(len(self.acked[n]))]
                    r = call(self.gw, action="search", index_id=n,
                             query_vectors=rows(self.vectors[i][None, :]), k=1)
                    self.searches += 1
                    if not r.get("success") or r["results"][0]["indices"][0] != i:
                        self.search_failures.append(r.get("error") or r["results"][0])
            time.sleep(0.02)

    def finish(self):
        self.stop_flag.set()
        self.join(30)
        return self

    def verify(self):
        for n, ids in self.acked.items():
            for i in ids:
                r = ok(call(self.gw, action="search", index_id=n,
                            query_vectors=rows(self.vectors[i][None, :]), k=1))
                assert r["results"][0]["indices"][0] == i, (n, i)


def test_a_dead_agents_shard_is_rebuilt_elsewhere_and_its_entry_dropped(cluster_factory):
    c = cluster_factory(agents=3, gateway_args=("--replicas", "2", "--rereplicate-after", "2"))
    gw = c.gw
    name = uid("heal")
    assert create(gw, name)
    x = rand(400, 8, 21)
    ok(add_ids(gw, name, x[:300], range(300)))
    s = shard(c, name)
    victim = s["primary"]
    survivor = [r for r in s["replicas"] if r != victim][0]
    third = [a for a in c.agents if a not in s["replicas"]][0]
    c.kill(victim)
    assert wait_until(lambda: add_ids(gw, name, x[300:350], range(300, 350)).get("success"), 15)
    # Back at R=2 without the dead agent: the survivor leads, the third agent holds a copy.
    assert wait_until(lambda: settled(c, name, without=(victim,)), 40), c.map(name)
    s = shard(c, name)
    assert sorted(s["replicas"]) == sorted([survivor, third]) and s["primary"] == survivor
    assert count(c.agents[third], name) == 350
    assert np.allclose(reconstruct(c.agents[third], name, [0, 149, 349]), x[[0, 149, 349]])
    ok(add_ids(gw, name, x[350:400], range(350, 400)))
    for a in (survivor, third):
        assert count(c.agents[a], name) == 400
    # The dead agent returns: the map gives its shard to others, so it drops its copy.
    back = c.start_agent(victim)
    assert wait_until(lambda: not holds(back, name), 20)
    assert settled(c, name) and victim not in shard(c, name)["replicas"]
    gw.stop()
    assert "re-replicating to '" + third + "'" in gw.output
    assert "(agent not live) dropped" in gw.output


def test_a_new_replica_beyond_the_kept_records_is_built_from_a_whole_copy(cluster_factory):
    """--replication-log-mb 1: the primary no longer keeps the records from the collection's
    creation, so the new replica is sent a whole copy (in chunks, throttled), then records."""
    c = cluster_factory(agents=3, gateway_args=("--replicas", "2", "--rereplicate-after", "1"))
    for a in list(c.agents):
        c.agents[a].stop()
        c.args[a] = (*c.args[a], "--replication-log-mb", "1", "--copy-bandwidth-mb", "8")
        c.start_agent(a)
    assert wait_until(lambda: len(c.etcd.agents()) == 3, 15)
    gw = c.gw
    name = uid("copy")
    assert create(gw, name, dim=64)
    x = np.random.default_rng(3).standard_normal((6000, 64)).astype(np.float32)
    for lo in range(0, 6000, 500):  # 1.5 MB of records: more than 1 MB kept
        ok(add_ids(gw, name, x[lo:lo + 500], range(lo, lo + 500)))
    s = shard(c, name)
    victim = [r for r in s["replicas"] if r != s["primary"]][0]
    third = [a for a in c.agents if a not in s["replicas"]][0]
    c.kill(victim)
    assert wait_until(lambda: settled(c, name, without=(victim,)), 60), (c.map(name), logs(c))
    assert count(c.agents[third], name) == 6000
    assert np.allclose(reconstruct(c.agents[third], name, [0, 3000, 5999]), x[[0, 3000, 5999]])
    primary = c.agents[shard(c, name)["primary"]]
    primary.stop()
    assert "sending a copy of index '" + name + "'" in primary.output


def test_drain_moves_everything_off_an_agent_while_serving(cluster_factory):
    c = cluster_factory(agents=3, gateway_args=("--replicas", "2"))
    gw = c.gw
    names = [uid("drain") for _ in range(3)]
    for n in names:
        assert create(gw, n)
        ok(add_ids(gw, n, rand(50, 8, 30), range(50)))
    # An agent that leads some shard and holds others.
    target = shard(c, names[0])["primary"]
    load = Load(gw, names)
    load.start()
    time.sleep(1)
    r = cli(c, "drain", target, "--wait", "60", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "holds no replica" in r.stdout
    time.sleep(1)
    load.finish()
    for n in names:
        assert settled(c, n, without=(target,)), c.map(n)
    assert not load.write_failures, load.write_failures[:3]
    assert not load.search_failures, load.search_failures[:3]
    assert load.searches > 20
    load.verify()
    # Nothing new is placed on a draining agent.
    extra = uid("new")
    assert create(gw, extra)
    assert target not in shard(c, extra)["replicas"]
    metrics = urllib.request.urlopen(gw.metrics_url + "/metrics", timeout=5).read().decode()
    for gauge in ("moves_in_progress", "replicas_building", "handovers_in_progress"):
        assert f"vecgpu_cluster_{gauge} 0" in metrics, gauge
    r = cli(c, "drain", target, "--undo")
    assert r.returncode == 0 and "takes replicas again" in r.stdout
    # An unknown agent is refused with a clear message.
    r = cli(c, "drain", "no-such-agent")
    assert r.returncode == 1 and "not registered" in r.stderr
    gw.stop()
    assert "handing the shard over" in gw.output and "handed over from '" + target in gw.output


def test_a_joining_agent_gets_its_share_and_the_dry_run_shows_the_plan(cluster_factory):
    c = cluster_factory(agents=2, gateway_args=("--replicas", "1", "--rebalance-tolerance", "0.2"))
    gw = c.gw
    names = [uid("bal") for _ in range(6)]
    for i, n in enumerate(names):
        assert create(gw, n)
        ok(add_ids(gw, n, rand(100, 8, 40 + i), range(100)))
    per_agent = lambda: {a: sum(1 for n in names if a in shard(c, n)["replicas"])  # noqa: E731
                         for a in c.agents}
    # (The two may even out between themselves first.)
    # (The plan first: it leaves out moves in progress, which `settled` then sees.)
    balanced = lambda: (not json.loads(cli(c, "rebalance", "--dry-run", "--json").stdout)["moves"]  # noqa: E731,E501
                        and all(settled(c, n, replicas=1) for n in names))
    assert wait_until(balanced, 30)
    assert sum(per_agent().values()) == 6, [c.map(n) for n in names]
    c.start_agent("a3")
    assert wait_until(lambda: "/vecgpu/agents/a3" in c.etcd.agents(), 15)
    plan = json.loads(cli(c, "rebalance", "--dry-run", "--json").stdout)
    load = Load(gw, names[:2])
    load.start()
    assert wait_until(lambda: per_agent().get("a3") == 2 and
                      all(settled(c, n, replicas=1) for n in names), 60), per_agent()
    load.finish()
    assert sorted(per_agent().values()) == [2, 2, 2]
    assert not load.search_failures and not load.write_failures
    # The dry run (taken before the moves started, or while they ran) moved shards to a3.
    assert plan["spread_before"] > plan["spread_after"] or not plan["moves"]
    assert all(m["to"] == "a3" for m in plan["moves"])
    after = json.loads(cli(c, "rebalance", "--dry-run", "--json").stdout)
    assert after["moves"] == [] and after["spread_after"] <= 0.2
    for n in names:
        assert count(gw, n) >= 100
    text = cli(c, "rebalance", "--dry-run").stdout
    assert "rebalance plan (dry run" in text and "a3" in text


def test_rolling_restart_under_load_loses_nothing(cluster_factory):
    c = cluster_factory(agents=3, gateway_args=("--replicas", "2"))
    gw = c.gw
    names = [uid("roll") for _ in range(2)]
    for n in names:
        assert create(gw, n)
        ok(add_ids(gw, n, rand(50, 8, 50), range(50)))
    load = Load(gw, names)
    load.start()
    for a in list(c.agents):
        r = cli(c, "drain", a, "--wait", "60", timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        c.agents[a].stop()
        back = c.start_agent(a)
        assert wait_until(lambda: ready(back), 30)
        assert cli(c, "drain", a, "--undo").returncode == 0
    time.sleep(1)
    load.finish()
    assert not load.write_failures, load.write_failures[:3]
    assert not load.search_failures, load.search_failures[:3]
    load.verify()


def test_a_gateway_refuses_an_agent_of_another_api_version(cluster_factory):
    c = cluster_factory(agents=2, gateway_args=("--replicas", "2"))
    old = {"id": "old-agent", "address": "127.0.0.1:9", "devices": ["cpu"],
           "free_memory_bytes": 1 << 40, "load": 0, "version": "vecgpu-0.0.9", "api_version": 2}
    c.etcd.ctl("put", "/vecgpu/agents/old-agent", json.dumps(old))
    names = [uid("ver") for _ in range(4)]
    for n in names:
        assert create(gw := c.gw, n)
        assert "old-agent" not in shard(c, n)["replicas"]
        ok(add_ids(gw, n, rand(5, 8, 60), range(5)))
    gw.stop()
    assert "agent 'old-agent' at 127.0.0.1:9 (vecgpu-0.0.9) speaks agent API version 2" in gw.output


def test_a_collection_made_again_under_a_dropped_name_starts_empty_on_every_replica(
        cluster_factory):
    """The primary keeps no record of a dropped collection: the one made again under its name
    reaches its replicas from its own create on, never with the old one's writes."""
    c = cluster_factory(agents=2, gateway_args=("--replicas", "2"))
    gw = c.gw
    name = uid("again")
    for round_ in range(3):
        assert create(gw, name)
        x = rand(20 + round_, 8, 70 + round_)
        ok(add_ids(gw, name, x, range(1000 * round_, 1000 * round_ + len(x))))
        assert wait_until(lambda: settled(c, name), 15), c.map(name)
        for a in c.agents.values():
            assert wait_until(lambda: holds(a, name) and count(a, name) == len(x), 10)
            assert np.allclose(reconstruct(a, name, [1000 * round_]), x[:1])
        ok(call(gw, action="delete_index", index_id=name))
        assert wait_until(lambda: c.map(name) is None, 10)


def test_a_search_that_finds_no_copy_on_a_replica_asks_another(cluster_factory):
    """A gateway's map can lag one that moved a replica away (etcd's watch is slow while a
    member is lost): the replica answers NOT_FOUND, and the search goes to another in-sync
    replica instead of failing. Made here by dropping a replica's copy behind the map's back."""
    c = cluster_factory(agents=2, gateway_args=("--replicas", "2", "--rebalance-tolerance", "0"))
    gw = c.gw
    name = uid("gone")
    assert create(gw, name)
    x = rand(50, 8, 80)
    ok(add_ids(gw, name, x, range(50)))
    s = shard(c, name)
    replica = [r for r in s["replicas"] if r != s["primary"]][0]
    assert wait_until(lambda: holds(c.agents[replica], name), 10)
    ok(call(c.agents[replica], action="delete_index", index_id=name))
    failures = []

    def search(seed):
        for i in range(25):
            j = (seed * 7 + i) % 50
            r = call(gw, action="search", index_id=name, query_vectors=rows(x[j:j + 1]), k=1)
            if not r.get("success") or r["results"][0]["indices"][0] != j:
                failures.append(r)
    threads = [threading.Thread(target=search, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]
