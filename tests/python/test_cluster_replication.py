"""Replicated and sharded collections on a real cluster: etcd (Debian's etcd-server) and
`vecgpu serve --join` agents and `vecgpu gateway`s as child processes on free loopback ports.

- R=2: every acknowledged write is on both replicas; kill -9 of the primary loses none of
  them, the placer promotes the in-sync replica with a new epoch, and writes and searches go
  on; the killed agent comes back on its data, is caught up and put back in the in-sync set,
  and holds the same vectors.
- A paused primary (SIGSTOP) that comes back after its replacement is refused: its old epoch
  acknowledges nothing.
- S=3: results equal a single node's on the same data (flat, exact); a shard no agent serves
  fails searches naming it, unless partial results are asked for.
- The placer gateway killed: the other gateway takes the role and repairs the maps.
"""
import base64
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import BINARY, Server, call, fail, free_port, ok, rand, rows, uid
from test_cluster_agent import Etcd, joins, wait_until

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd (Debian's etcd-server) is not installed")

TTL = 2


class Cluster:
    """etcd, N agents (each with a data directory) and gateways."""

    def __init__(self, tmp_path, agents=3, gateways=1, gateway_args=()):
        self.etcd = Etcd()
        self.url = "http://" + self.etcd.client
        self.tmp = tmp_path
        self.agents = {}
        self.args = {}
        for i in range(agents):
            self.start_agent(f"a{i + 1}")
        self.gateways = [Server("--etcd", self.url, "--log-level", "info", *gateway_args,
                                command="gateway") for _ in range(gateways)]
        assert wait_until(lambda: len(self.etcd.agents()) == agents, 15)

    def start_agent(self, name):
        if name not in self.args:
            adv = f"127.0.0.1:{free_port()}"
            self.args[name] = ("--join", self.url, "--advertise", adv, "--agent-id", name,
                               "--lease-ttl", str(TTL), "--data-dir", str(self.tmp / name),
                               "--log-level", "info")
        self.agents[name] = Server(*self.args[name])
        return self.agents[name]

    def kill(self, name):
        self.agents[name].proc.kill()
        self.agents[name].proc.wait()

    @property
    def gw(self):
        return self.gateways[0]

    def map(self, name):
        out = self.etcd.ctl("get", "--prefix", "/vecgpu/collections/", "-w", "json").stdout
        for kv in json.loads(out).get("kvs", []):
            m = json.loads(base64.b64decode(kv["value"]))
            if m["name"] == name:
                return m
        return None

    def close(self):
        for g in self.gateways:
            g.stop()
        for a in self.agents.values():
            a.stop()
        self.etcd.close()


@pytest.fixture
def cluster_factory(tmp_path):
    if not joins():
        pytest.skip("built without the etcd client")
    made = []

    def make(**kw):
        c = Cluster(tmp_path, **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def create(srv, name, dim=8, index_type="IDMap,Flat", **extra):
    return wait_until(lambda: call(srv, action="create_index", index_id=name, dimension=dim,
                                   index_type=index_type, **extra).get("success"), 15)


def add_ids(srv, name, x, ids):
    return call(srv, action="add_with_ids", index_id=name, vectors=rows(x),
                ids=[int(i) for i in ids])


def reconstruct(srv, name, ids):
    return np.asarray([ok(call(srv, action="reconstruct", index_id=name, id=int(i)))["vector"]
                       for i in ids], dtype=np.float32)


def count(srv, name):
    return ok(call(srv, action="get_index_stats", index_id=name))["stats"]["vector_count"]


def test_replicated_writes_survive_the_primary_and_the_replica_catches_up(cluster_factory):
    c = cluster_factory(gateway_args=("--replicas", "2"))
    gw = c.gw
    name = uid("rep")
    assert create(gw, name)
    m = c.map(name)
    shard = m["shards"][0]
    assert m["replication"] == 2 and len(shard["replicas"]) == 2
    assert sorted(shard["in_sync"]) == sorted(shard["replicas"]) and shard["epoch"] == 1
    x = rand(300, 8, 1)
    ok(add_ids(gw, name, x[:200], range(200)))
    # Acknowledged: on both replicas (each agent serves FAISSx itself).
    primary, replica = shard["primary"], [r for r in shard["replicas"] if r != shard["primary"]][0]
    for a in (primary, replica):
        assert count(c.agents[a], name) == 200
        assert np.allclose(reconstruct(c.agents[a], name, [0, 99, 199]), x[[0, 99, 199]])
    # A write straight to the replica is refused: the primary orders the shard's writes.
    fail(add_ids(c.agents[replica], name, x[200:201], [200]), "not the primary")

    # kill -9 of the primary: the placer promotes the replica in a new epoch.
    c.kill(primary)
    promoted = wait_until(lambda: (c.map(name)["shards"][0]["primary"] == replica) and
                          c.map(name), 5 * TTL + 5)
    assert promoted, c.map(name)
    assert promoted["shards"][0]["epoch"] == 2
    assert promoted["shards"][0]["in_sync"] == [replica]
    # Writes and searches go on; nothing acknowledged was lost.
    assert wait_until(lambda: add_ids(gw, name, x[200:250], range(200, 250)).get("success"), 10)
    r = ok(call(gw, action="search", index_id=name, query_vectors=rows(x[120:121]), k=1))
    assert r["results"][0]["indices"][0] == 120
    assert count(gw, name) == 250

    # The old primary returns on its data: caught up, back in the in-sync set, identical.
    c.start_agent(primary)
    back = wait_until(lambda: sorted(c.map(name)["shards"][0]["in_sync"]) ==
                      sorted([primary, replica]), 20)
    assert back, c.map(name)
    ok(add_ids(gw, name, x[250:300], range(250, 300)))
    for a in (primary, replica):
        assert count(c.agents[a], name) == 300
        assert np.allclose(reconstruct(c.agents[a], name, range(300)), x)
    # `vecgpu cluster status` shows the in-sync set and a lag of 0.
    st = subprocess.run([str(BINARY), "cluster", "status", "--etcd", c.url, "--json"],
                        capture_output=True, text=True, timeout=30)
    assert st.returncode == 0, st.stdout + st.stderr
    s = [col for col in json.loads(st.stdout)["collections"] if col["name"] == name][0]
    assert sorted(s["shards"][0]["in_sync"]) == sorted([primary, replica])
    leader = s["shards"][0]["primary"]
    other = primary if leader == replica else replica

    def lag():
        out = subprocess.run([str(BINARY), "cluster", "status", "--etcd", c.url, "--json"],
                             capture_output=True, text=True, timeout=30).stdout
        col = [x for x in json.loads(out)["collections"] if x["name"] == name][0]
        return col["shards"][0]["replica_lag"].get(other)
    assert wait_until(lambda: (lag() or {}).get("lag") == 0, 10), lag()
    assert lag()["state"] == "in-sync" and lag()["position"] >= 1
    gw.stop()
    assert "promoted" in gw.output


def test_a_paused_primary_comes_back_with_an_old_epoch_and_is_refused(cluster_factory):
    c = cluster_factory(agents=2, gateway_args=("--replicas", "2"))
    gw = c.gw
    name = uid("pause")
    assert create(gw, name)
    x = rand(20, 8, 2)
    ok(add_ids(gw, name, x[:10], range(10)))
    old = c.map(name)["shards"][0]
    paused = c.agents[old["primary"]]
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_until(lambda: c.map(name)["shards"][0]["epoch"] > old["epoch"], 5 * TTL + 5)
        assert wait_until(lambda: add_ids(gw, name, x[10:15], range(10, 15)).get("success"), 10)
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    # Back, it still believes it leads epoch 1 for a moment: whatever it is sent now is
    # refused (its lease is gone, or its epoch is over), never acknowledged.
    r = add_ids(paused, name, x[15:20], range(15, 20))
    assert not r.get("success"), r
    # The shard's data is what the new primary acknowledged, nothing of the old one's.
    assert count(gw, name) == 15
    assert np.allclose(reconstruct(gw, name, range(15)), x[:15])


def test_a_sharded_collection_answers_as_one_node_does(cluster_factory):
    c = cluster_factory(agents=3)
    gw = c.gw
    single = Server("--log-level", "warning")
    try:
        name = uid("s3")
        d = 16
        assert create(gw, name, dim=d, shards=3)
        assert create(single, name, dim=d)
        m = c.map(name)
        assert len(m["shards"]) == 3
        rng = np.random.default_rng(5)
        x = rng.standard_normal((600, d)).astype(np.float32)
        ids = rng.choice(10**9, size=600, replace=False)
        for lo in range(0, 600, 150):
            ok(add_ids(gw, name, x[lo:lo + 150], ids[lo:lo + 150]))
            ok(add_ids(single, name, x[lo:lo + 150], ids[lo:lo + 150]))
        # Every shard holds some of it.
        held = [count(c.agents[s["primary"]], f"{name}#{i}") for i, s in enumerate(m["shards"])]
        assert sum(held) == 600 and min(held) > 0, held
        assert count(gw, name) == 600
        q = rng.standard_normal((25, d)).astype(np.float32)
        a = ok(call(gw, action="search", index_id=name, query_vectors=rows(q), k=10))
        b = ok(call(single, action="search", index_id=name, query_vectors=rows(q), k=10))
        for ra, rb in zip(a["results"], b["results"]):
            assert ra["indices"] == rb["indices"]
            assert np.allclose(ra["distances"], rb["distances"], rtol=1e-5)
        # Reads by id and removals reach the shard holding each id.
        pick = [int(i) for i in ids[[3, 300, 599]]]
        assert np.allclose(reconstruct(gw, name, pick), x[[3, 300, 599]])
        ok(call(gw, action="remove_ids", index_id=name, ids=pick))
        assert count(gw, name) == 597
        listed = [e["index_id"] for e in ok(call(gw, action="list_indexes"))["indexes"]]
        assert listed.count(name) == 1 and not any("#" in n for n in listed)
        # Ids are how a sharded collection places rows: an add without them is refused.
        fail(call(gw, action="add_vectors", index_id=name, vectors=rows(x[:2])), "ids")
    finally:
        single.stop()


def test_a_shard_no_agent_serves_fails_searches_unless_partial_results_are_asked(
        cluster_factory):
    c = cluster_factory(agents=3)
    gw = c.gw
    name = uid("part")
    assert create(gw, name, shards=3)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((90, 8)).astype(np.float32)
    ok(add_ids(gw, name, x, range(1000, 1090)))
    m = c.map(name)
    dead = m["shards"][1]["primary"]
    c.kill(dead)
    assert wait_until(lambda: dead not in {v["id"] for v in c.etcd.agents().values()}, 10)
    r = call(gw, action="search", index_id=name, query_vectors=rows(x[:1]), k=5)
    assert not r.get("success") and "shard" in r["error"] and dead in r["error"], r
    r = ok(call(gw, action="search", index_id=name, query_vectors=rows(x[:1]), k=5,
                allow_partial=True))
    assert r["partial"] is True and r["missing_shards"]
    assert any("shard 1" in s or dead in s for s in r["missing_shards"]), r


def test_the_placer_role_moves_to_another_gateway(cluster_factory):
    c = cluster_factory(agents=2, gateways=2, gateway_args=("--replicas", "2"))
    name = uid("pl")
    assert create(c.gateways[1], name)
    ok(add_ids(c.gateways[1], name, rand(5, 8, 3), range(5)))
    # Kill every gateway but one: whichever held the role, the last one takes it.
    c.gateways[0].proc.kill()
    c.gateways[0].proc.wait()
    primary = c.map(name)["shards"][0]["primary"]
    c.kill(primary)
    promoted = wait_until(lambda: c.map(name)["shards"][0]["primary"] != primary, 30)
    assert promoted, c.map(name)
    assert wait_until(lambda: count(c.gateways[1], name) == 5, 10)


def test_training_happens_once_and_the_replicas_hold_the_same_index(cluster_factory):
    """IVF trained through the gateway: the primary trains, the trained quantizer reaches the
    replica in the log, so both copies answer every search identically."""
    c = cluster_factory(agents=2, gateway_args=("--replicas", "2"))
    gw = c.gw
    name = uid("ivf")
    assert create(gw, name, dim=16, index_type="IVF8,Flat")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    ok(call(gw, action="train_index", index_id=name, training_vectors=rows(x)))
    ok(call(gw, action="add_vectors", index_id=name, vectors=rows(x)))
    q = rng.standard_normal((20, 16)).astype(np.float32)
    shard = c.map(name)["shards"][0]
    answers = [ok(call(c.agents[a], action="search", index_id=name, query_vectors=rows(q), k=5,
                       params={"nprobe": 2}))
               for a in shard["replicas"]]
    for ra, rb in zip(answers[0]["results"], answers[1]["results"]):
        assert ra["indices"] == rb["indices"] and ra["distances"] == rb["distances"]
    # Trained once: the replica's log holds the primary's training (its artefact), so the
    # replica did not run k-means itself.
    replica = [a for a in shard["replicas"] if a != shard["primary"]][0]
    assert count(c.agents[replica], name) == 400


def test_searches_and_writes_go_on_across_an_etcd_restart(cluster_factory):
    c = cluster_factory(agents=2, gateway_args=("--replicas", "2"))
    gw = c.gw
    name = uid("etcd")
    assert create(gw, name)
    x = rand(30, 8, 6)
    ok(add_ids(gw, name, x[:10], range(10)))
    c.etcd.stop()
    # Searches are served from the last shard map the gateway saw.
    r = ok(call(gw, action="search", index_id=name, query_vectors=rows(x[3:4]), k=1))
    assert r["results"][0]["indices"][0] == 3
    c.etcd.start()
    # Back: the agents register again (fresh leases) and take writes; nothing was lost.
    assert wait_until(lambda: add_ids(gw, name, x[10:20], range(10, 20)).get("success"), 30)
    assert count(gw, name) == 20
    m = c.map(name)
    assert sorted(m["shards"][0]["in_sync"]) == sorted(m["shards"][0]["replicas"])


def test_a_replica_behind_by_more_than_its_primary_kept_gets_a_whole_durable_copy(
        cluster_factory, tmp_path):
    """--replication-log-mb 1: while a replica is dead its primary takes more than it keeps;
    back, the replica gets a whole copy of the collection (it says so), is put back in the
    in-sync set with the same vectors, and keeps them across its own kill -9."""
    c = cluster_factory(agents=2, gateway_args=("--replicas", "2"))
    for name in list(c.agents):  # agents with a small memory for records
        c.agents[name].stop()
        c.args[name] = (*c.args[name], "--replication-log-mb", "1")
        c.start_agent(name)
    assert wait_until(lambda: len(c.etcd.agents()) == 2, 15)
    gw = c.gw
    name = uid("copy")
    assert create(gw, name, dim=64)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6000, 64)).astype(np.float32)
    ok(add_ids(gw, name, x[:100], range(100)))
    shard = c.map(name)["shards"][0]
    primary = shard["primary"]
    replica = [r for r in shard["replicas"] if r != primary][0]
    c.kill(replica)
    assert wait_until(lambda: c.map(name)["shards"][0]["in_sync"] == [primary], 5 * TTL + 5)
    for lo in range(100, 6000, 500):  # 1.5 MB of records, 12 of them: more than 1 MB kept
        hi = min(lo + 500, 6000)
        ok(add_ids(gw, name, x[lo:hi], range(lo, hi)))
    c.start_agent(replica)
    assert wait_until(lambda: sorted(c.map(name)["shards"][0]["in_sync"]) ==
                      sorted([primary, replica]), 30), c.map(name)
    assert count(c.agents[replica], name) == 6000
    assert np.allclose(reconstruct(c.agents[replica], name, [0, 150, 5999]), x[[0, 150, 5999]])
    c.agents[primary].stop()  # its log, flushed: the line that says a copy was sent
    assert "sending a copy" in c.agents[primary].output
    c.start_agent(primary)
    # The copy is durable on the replica: a kill -9 right after keeps it.
    c.kill(replica)
    c.start_agent(replica)
    assert count(c.agents[replica], name) == 6000


def test_vald_objects_survive_the_primarys_death(cluster_factory):
    """The unmodified vald-client-python through a gateway with R=2: objects inserted before
    the primary's kill -9 are found after the promotion, and inserts go on."""
    from conftest import built_with_grpc
    if not built_with_grpc():
        pytest.skip("built without gRPC")
    from test_vald import Vald, ins, pb, srch
    c = cluster_factory(agents=2, gateway_args=("--replicas", "2"))
    name = uid("vald")
    vald = Vald(c.gw.grpc_target).on(name)
    x = rand(30, 8, 12)

    def insert(i):
        try:
            vald(vald.insert.Insert, ins(f"id-{i}", x[i]))
            return True
        except Exception:
            return False
    assert wait_until(lambda: insert(0), 15)
    for i in range(1, 20):
        assert insert(i), i
    m = c.map(name)
    assert m and len(m["shards"][0]["replicas"]) == 2
    c.kill(m["shards"][0]["primary"])
    assert wait_until(lambda: c.map(name)["shards"][0]["epoch"] == 2, 5 * TTL + 5)
    for i in range(20):
        r = vald(vald.search.Search, srch(x[i], num=1))
        assert r.results[0].id == f"id-{i}"
    assert wait_until(lambda: insert(20), 10)
    for i in range(21, 30):
        assert insert(i), i
    got = vald(vald.object.GetObject, pb.Object.VectorRequest(id=pb.Object.ID(id="id-25")))
    assert np.allclose(got.vector, x[25])
