"""Back up and restore one collection of a running cluster (`vecgpu cluster backup` and
`vecgpu cluster restore`), on a real cluster: etcd, three `vecgpu serve --join` agents and a
`vecgpu gateway` as child processes on loopback ports.

- S=2, R=2 IDMap,Flat and S=2, R=2 IDMap,IVF8,Flat (trained): backed up, dropped through the gateway,
  restored (under its own name, and under another with --as): counts, k=1 searches of stored
  vectors and reconstructs answer exactly as before, and both replicas of every shard hold it
  and are in the in-sync set.
- A damaged or cut backup is refused with a message naming the damage, and creates nothing;
  a restore over a collection that exists is refused (ALREADY_EXISTS), and one whose primary
  holds a copy of that name already is refused by the agent and undone.
- Over mutual TLS (--cluster-tls-*): backup and restore reach the agents with a certificate
  of the cluster's CA; without one the agents refuse them.
- Installing a copy forgets the records kept before it (what restore relies on): a replica
  that got a whole copy, once promoted, builds a new replica from a whole copy.
"""
import shutil
import subprocess
import tempfile

import numpy as np

from conftest import BINARY, call, ok, rows, uid
from test_cluster_agent import wait_until
from test_cluster_replication import (TTL, add_ids, cluster_factory, count, create,  # noqa: F401
                                      reconstruct)

TENANT = "default"  # what clients without auth get


def cli(c, *args, timeout=60):
    return subprocess.run([str(BINARY), "cluster", *args, "--etcd", c.url],
                          capture_output=True, text=True, timeout=timeout)


def fill(gw, name, d, n, seed, index_type, params=None):
    """A collection with S=2, R=2 and n vectors under random ids; what it answers now."""
    assert create(gw, name, dim=d, index_type=index_type, shards=2, replicas=2)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    ids = rng.choice(10**9, size=n, replace=False)
    if "IVF" in index_type:
        ok(call(gw, action="train_index", index_id=name, training_vectors=rows(x)))
    for lo in range(0, n, n // 4):  # a few records per shard, and a removal
        ok(add_ids(gw, name, x[lo:lo + n // 4], ids[lo:lo + n // 4]))
    ok(call(gw, action="remove_ids", index_id=name, ids=[int(i) for i in ids[-3:]]))
    x, ids = x[:-3], ids[:-3]
    return x, ids, answers(gw, name, x, ids, params)


def answers(gw, name, x, ids, params=None):
    """Counts, k=1 searches of every stored vector, and a few reconstructs."""
    extra = {"params": params} if params else {}
    found = ok(call(gw, action="search", index_id=name, query_vectors=rows(x), k=1, **extra))
    return {
        "count": count(gw, name),
        "nearest": [(r["indices"][0], round(r["distances"][0], 4)) for r in found["results"]],
        "vectors": reconstruct(gw, name, ids[:5]).tolist(),
    }


def in_sync_everywhere(c, name):
    m = c.map(name)
    return m is not None and all(len(s["replicas"]) == 2 and sorted(s["in_sync"]) ==
                                 sorted(s["replicas"]) for s in m["shards"])


def replicas_hold(c, name, n):
    """Every replica of every shard holds its shard's vectors, n in all per replica set."""
    m = c.map(name)
    total = 0
    for i, s in enumerate(m["shards"]):
        held = {a: count(c.agents[a], f"{name}#{i}") for a in s["replicas"]}
        assert len(set(held.values())) == 1, held
        total += next(iter(held.values()))
    assert total == n


def test_a_collection_is_backed_up_dropped_and_restored_as_it_was(cluster_factory, tmp_path):
    c = cluster_factory(agents=3, gateway_args=("--replicas", "2"))
    gw = c.gw
    flat, ivf = uid("flat"), uid("ivf")
    xf, idf, before_flat = fill(gw, flat, 8, 300, 1, "IDMap,Flat")
    xi, idi, before_ivf = fill(gw, ivf, 16, 400, 2, "IDMap,IVF8,Flat", {"nprobe": 8})
    assert wait_until(lambda: in_sync_everywhere(c, flat) and in_sync_everywhere(c, ivf), 15)

    files = {}
    for name in (flat, ivf):
        files[name] = str(tmp_path / f"{name}.backup")
        r = cli(c, "backup", name, "--tenant", TENANT, "--out", files[name])
        assert r.returncode == 0, r.stderr
        assert "shard 1 of" in r.stdout and "backed up" in r.stdout, r.stdout

    # Dropped, then restored under its own name: the same answers, from both replicas.
    ok(call(gw, action="delete_index", index_id=flat))
    assert wait_until(lambda: c.map(flat) is None, 10)
    r = cli(c, "restore", "--from", files[flat], "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 of 2 replicas in sync" in r.stdout, r.stdout
    assert in_sync_everywhere(c, flat)
    assert answers(gw, flat, xf, idf) == before_flat
    replicas_hold(c, flat, 297)
    # It takes writes again, on both replicas.
    more = np.ones((1, 8), dtype=np.float32)
    ok(add_ids(gw, flat, more, [10**9 + 1]))
    assert count(gw, flat) == 298
    assert wait_until(lambda: in_sync_everywhere(c, flat), 10)
    replicas_hold(c, flat, 298)

    # Restored under another name beside the original: the same answers.
    other = uid("ivf-copy")
    r = cli(c, "restore", "--from", files[ivf], "--as", other, "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    assert answers(gw, other, xi, idi, {"nprobe": 8}) == before_ivf
    assert answers(gw, ivf, xi, idi, {"nprobe": 8}) == before_ivf
    replicas_hold(c, other, 397)

    # Over a collection that exists: refused, nothing changed.
    r = cli(c, "restore", "--from", files[ivf])
    assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
    assert answers(gw, ivf, xi, idi, {"nprobe": 8}) == before_ivf

    # Over a copy the agents hold outside any map (a plain collection named as its shard 1):
    # shard 1's primary refuses; shard 0's restored copy is dropped and the map removed again.
    taken = uid("taken")
    for a in c.agents.values():
        ok(call(a, action="create_index", index_id=f"{taken}#1", dimension=8,
                index_type="IDMap,Flat"))
    r = cli(c, "restore", "--from", files[flat], "--as", taken)
    assert r.returncode == 1 and "already holds data" in r.stderr, r.stderr
    assert f"shard 0 of '{taken}': restored" in r.stdout, r.stdout
    assert "the collection's map was removed again" in r.stderr, r.stderr
    assert c.map(taken) is None
    for a in c.agents.values():
        assert not call(a, action="get_index_stats", index_id=f"{taken}#0").get("success")

    # A damaged or cut file: refused before anything is made.
    data = open(files[flat], "rb").read()
    damaged = tmp_path / "damaged.backup"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    damaged.write_bytes(bytes(flipped))
    cut = tmp_path / "cut.backup"
    cut.write_bytes(data[:len(data) - 100])
    junk = tmp_path / "junk.backup"
    junk.write_bytes(b"not a backup at all, just some bytes")
    for path, needle in [(damaged, "CRC does not match"), (cut, "truncated"),
                         (junk, "bad magic")]:
        fresh = uid("never")
        r = cli(c, "restore", "--from", str(path), "--as", fresh)
        assert r.returncode == 1, r.stdout
        assert needle in r.stderr and "nothing was changed" in r.stderr, r.stderr
        assert c.map(fresh) is None
    listed = [e["index_id"] for e in ok(call(gw, action="list_indexes"))["indexes"]]
    assert sorted(listed) == sorted([flat, ivf, other])


def test_a_replica_built_from_a_promoted_copy_gets_a_whole_copy(cluster_factory):
    """Restore and a replica's whole copy share one rule: installing a copy forgets the records
    kept up to its position. A replica that got a whole copy (it was away while its primary
    took more than --replication-log-mb) and is then promoted must build a new replica (at
    record 0) from a whole copy; it used to send the copy's create record and then records
    the new replica could not apply, which left it lagging at record 1 for ever."""
    c = cluster_factory(agents=3, gateway_args=("--replicas", "2", "--rereplicate-after", "10"))
    for name in list(c.agents):  # agents with a small memory for records
        c.agents[name].stop()
        c.args[name] = (*c.args[name], "--replication-log-mb", "1")
        c.start_agent(name)
    assert wait_until(lambda: len(c.etcd.agents()) == 3, 15)
    gw = c.gw
    name = uid("promoted")
    assert create(gw, name, dim=64)
    x = np.random.default_rng(9).standard_normal((6100, 64)).astype(np.float32)
    ok(add_ids(gw, name, x[:100], range(100)))
    shard = c.map(name)["shards"][0]
    primary = shard["primary"]
    replica = [r for r in shard["replicas"] if r != primary][0]
    third = [a for a in c.agents if a not in shard["replicas"]][0]
    c.kill(replica)
    assert wait_until(lambda: c.map(name)["shards"][0]["in_sync"] == [primary], 5 * TTL + 5)
    for lo in range(100, 6000, 500):  # 1.5 MB of records: more than 1 MB kept
        hi = min(lo + 500, 6000)
        ok(add_ids(gw, name, x[lo:hi], range(lo, hi)))
    c.start_agent(replica)  # back: a whole copy
    assert wait_until(lambda: sorted(c.map(name)["shards"][0]["in_sync"]) ==
                      sorted([primary, replica]), 30), c.map(name)
    ok(add_ids(gw, name, x[6000:6100], range(6000, 6100)))  # records after the copy
    c.kill(primary)  # the copy's holder is promoted, then re-replicates to the third agent
    assert wait_until(lambda: c.map(name)["shards"][0]["primary"] == replica, 5 * TTL + 5)
    assert wait_until(lambda: third in c.map(name)["shards"][0]["in_sync"], 30), c.map(name)
    assert count(c.agents[third], name) == 6100


def test_backup_and_restore_over_mutual_tls(tmp_path):
    from test_cluster_agent import joins
    from test_cluster_tls import TlsCluster
    if not joins() or shutil.which("openssl") is None:
        import pytest
        pytest.skip("built without the etcd client, or no openssl")
    root = tempfile.mkdtemp(prefix="vecgpu-tls-backup-")
    c = TlsCluster(root)
    try:
        c.start_agent("a1")
        c.start_agent("a2")
        c.start_gateway()
        assert wait_until(lambda: len(c.live()) == 2, 15), c.live()
        gw = c.gateway
        name = uid("tls")
        x, ids, before = fill(gw, name, 8, 200, 3, "IDMap,Flat")
        c.issue("operator", c.ca)

        def run(*args, tls=True):
            extra = c.tls_args("operator") if tls else c.tls_args("operator")[6:]
            return subprocess.run([str(BINARY), "cluster", *args, "--etcd", c.url, *extra],
                                  capture_output=True, text=True, timeout=60)
        out = str(tmp_path / "tls.backup")
        r = run("backup", name, "--tenant", TENANT, "--out", out, tls=False)
        assert r.returncode == 1 and "no live in-sync replica could copy it" in r.stderr, r.stderr
        r = run("backup", name, "--tenant", TENANT, "--out", out)
        assert r.returncode == 0, r.stderr
        other = uid("tls-copy")
        r = run("restore", "--from", out, "--as", other, "--wait", "30")
        assert r.returncode == 0, r.stdout + r.stderr
        assert answers(gw, other, x, ids) == before
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)
