"""Network faults, not only crashes ([3/5] "A cluster that heals itself"): a real cluster
(3 etcd members, 3 `serve --join` agents, a gateway, lease TTL 2 s, R = 2) with a netfault
proxy on every link (tests/cluster/faulty_cluster.py), so one agent can be cut off from etcd,
from the gateway and its peers, or both, one etcd member from everyone, or a link slowed.

- A partitioned primary stops acknowledging writes within a lease TTL (self-fencing), a new
  primary is promoted, no epoch in etcd's history names two primaries, and every write
  acknowledged by anyone is readable at the end.
- Searches keep being served by the reachable replicas while a primary is cut off.
- 200 ms of delay on a primary's links: everything works, only slower; nothing moves.
- One-way loss on a primary's links (each way): no acknowledgement by the old primary after
  a TTL, searches served, writes resume elsewhere, nothing lost.
- One etcd member of three killed or blackholed: everything goes on.
- etcd entirely down: searches go on from the last shard map; writes go on while the
  leases are provably alive, then fail UNAVAILABLE saying why; everything resumes when etcd
  returns.
- A gateway cut off from etcd keeps serving from its last shard map.
- A shard short of R in-sync replicas for `--rereplicate-after` gets a new replica on another
  live agent.

Each test prints the cluster's logs when it fails (pytest shows them with the failure).
"""
import shutil
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, uid

sys.path.insert(0, str(ROOT / "tests" / "cluster"))
from faulty_cluster import FaultyCluster  # noqa: E402
from harness import help_of, now, raw_call  # noqa: E402
from netfault import loss  # noqa: E402
from probes import (Searches, Writes, epoch_violations, map_history,  # noqa: E402
                    primaries_by_epoch, replica_differences, unreadable)

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd (Debian's etcd-server) is not installed")

TTL = 2
DIM = 8


@pytest.fixture
def faulty(tmp_path):
    if "--join" not in help_of("serve"):
        pytest.skip("built without the etcd client")
    if "--agent-port" not in help_of("serve"):
        pytest.skip("`vecgpu serve` has no --agent-port: no proxy can sit in front of an agent")
    made = []

    # These tests are about faults: replicas moved for balance (the gateway's
    # --rebalance-tolerance, where it has one) would change the maps they compare.
    balance = ("--rebalance-tolerance", "0") if "--rebalance-tolerance" in help_of(
        "gateway") else ()

    def make(**kw):
        kw.setdefault("lease_ttl", TTL)
        kw["gateway_args"] = (*balance, *kw.get("gateway_args", ()))
        c = FaultyCluster(tmp_path / f"cluster{len(made)}", **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()
        print(c.logs(60))  # shown by pytest only when the test failed


# ----------------------------------------------------------------------------- helpers

def create(c, name, shards=1):
    deadline = now() + 15
    while now() < deadline:
        r = raw_call(c.gateways[0].endpoint, {"action": "create_index", "index_id": name,
                                              "dimension": DIM, "index_type": "IDMap,Flat",
                                              "shards": shards})
        if r and r.get("success"):
            return
        time.sleep(0.2)
    raise AssertionError(f"create {name}: {r}")


def seed_data(c, name, n=100, first=0):
    """n vectors under ids first.. through the gateway; returns id -> vector."""
    x = np.random.default_rng(first + 7).standard_normal((n, DIM)).astype(np.float32)
    ids = list(range(first, first + n))
    r = raw_call(c.gateways[0].endpoint, {"action": "add_with_ids", "index_id": name,
                                          "vectors": x.tolist(), "ids": ids})
    assert r and r.get("success"), r
    return dict(zip(ids, x))


def in_sync(c, name):
    """Every shard's in-sync set is its whole replica set, of R live agents."""
    st = c.status()
    if not st:
        return False
    live = {m["id"] for m in st["members"]}
    col = [x for x in st["collections"] if x["name"] == name]
    return bool(col) and all(
        s["primary_live"] and set(s["in_sync"]) == set(s["replicas"]) and
        set(s["replicas"]) <= live and len(s["in_sync"]) >= col[0]["replication"]
        for s in col[0]["shards"])


def etcd_endpoints(c):
    return ",".join(u[len("http://"):] for u in c.etcd.client_urls)


class Claims:
    """The independent claims of one test: each is checked, and the test fails at the end
    naming every one that did not hold (not only the first)."""

    def __init__(self):
        self.failed = []

    def __call__(self, holds, why):
        if not holds:
            self.failed.append(why() if callable(why) else str(why))
        return holds

    def run(self, what, fn, *args):
        """fn(*args), its AssertionError or TimeoutError a failed claim."""
        try:
            return fn(*args)
        except (AssertionError, TimeoutError) as e:
            self.failed.append(f"{what}: {e}")
            return None

    def verify(self):
        assert not self.failed, "\n\n".join(self.failed)


def final_checks(c, name, stored):
    """Every id of `stored` readable through the gateway, replicas identical, one primary
    per epoch in etcd's history of the map."""
    missing = unreadable(c.gateways[0].endpoint, name, stored)
    assert not missing, f"{len(missing)} acknowledged ids not readable: {missing[:20]}"
    diffs, _ = replica_differences(c.map(name), {a: x.endpoint for a, x in c.agents.items()},
                                   stored)
    assert not diffs, f"replicas differ: {diffs}"
    bad = epoch_violations(map_history(etcd_endpoints(c)), name)
    assert not bad, f"two primaries in one epoch: {bad}"


def heal_and_check(c, claims, name, stored, loads=()):
    """After the fault: heal, every shard back in sync, the `loads` (Writes, Searches)
    stopped, then the final checks over `stored` and what the Writes had acknowledged."""
    c.heal()
    synced = claims.run("back in sync after the heal", c.wait, lambda: in_sync(c, name), 30,
                        f"every shard of {name} in sync")
    stored = dict(stored)
    for t in loads:
        t.stop()
        if isinstance(t, Writes):
            stored |= t.acked_ids()
    if synced:
        claims.run("after the heal", final_checks, c, name, stored)


def show(calls, t0, limit=8):
    return "\n  ".join(x.describe(t0) for x in calls[:limit]) + (
        f"\n  ... {len(calls) - limit} more" if len(calls) > limit else "")


def cut(c, agent, how):
    if how == "etcd":
        c.cut_etcd(agent)
    elif how == "gateway-and-peers":
        c.cut_api(agent)
    elif how == "everything":
        c.partition(agent)
    else:
        c.partition(agent, how)  # a netfault mode on every link


def writes_acked_late_by(direct, t0):
    """Writes the old primary acknowledged although they were sent more than a lease TTL
    after it was cut off."""
    return [x for x in direct.calls if x.ok and x.sent > t0 + TTL]


# ----------------------------------------------------------------------------- partitions

@pytest.mark.parametrize("how", ["etcd", "everything"])
def test_a_partitioned_primary_stops_acknowledging_within_a_lease_ttl_and_is_replaced(
        faulty, how):
    """Cut from etcd (or from everything), the primary of a shard must refuse writes within
    a lease TTL (its own clients still reach it: they write to its FAISSx port), the placer
    must promote the in-sync replica in the next epoch, writes through the gateway must
    resume there, and after the heal the old primary is caught up and identical."""
    c = faulty()
    gw = c.gateways[0]
    name = uid("fence")
    create(c, name)
    stored = seed_data(c, name)
    before = c.shard(name)
    old, epoch = before["primary"], before["epoch"]
    direct = Writes(c.agents[old].endpoint, name, 10**9, timeout_ms=2000)
    routed = Writes(gw.endpoint, name, 2 * 10**9, timeout_ms=3000)
    direct.start()
    routed.start()
    time.sleep(1.0)
    t0 = now()
    cut(c, old, how)
    claims = Claims()
    promoted = claims.run("promotion", c.wait, lambda: (s := c.shard(name)) and
                          s["epoch"] > epoch and s["primary"] != old and s, 3 * TTL + 5,
                          "a new primary")
    t_promoted = now()
    if promoted:  # writes through the gateway resume on the new primary during the fault
        claims.run("writes after the promotion", c.wait,
                   lambda: routed.acked(sent_after=t_promoted), 10,
                   "a write acknowledged through the gateway")
    time.sleep(max(0.0, t0 + 3 * TTL - now()))
    direct.stop()
    claims(direct.acked(sent_before=t0), "the primary acknowledged nothing before the fault")
    late = writes_acked_late_by(direct, t0)
    claims(not late, lambda: f"the old primary {old} acknowledged {len(late)} writes sent more "
           f"than one lease TTL ({TTL} s) after it was cut off ({how}):\n  " + show(late, t0))
    if promoted:
        after = [x for x in direct.calls if x.ok and x.sent >= t_promoted]
        claims(not after, lambda: "acknowledged by the old primary after the promotion:\n  "
               + show(after, t0))
        claims(promoted["epoch"] == epoch + 1 and promoted["primary"] in before["in_sync"],
               f"promoted: {promoted}")
        print(f"promoted {promoted['primary']} in epoch {promoted['epoch']} "
              f"{t_promoted - t0:.2f} s after the cut")
    if how == "etcd":  # it answers, and says why it refuses
        said = {x.error for x in direct.calls if x.sent > t0 + TTL and x.reply}
        unclear = [e for e in said if not any(w in e for w in ("etcd", "fenced", "primary",
                                                               "epoch"))]
        claims(said and not unclear, f"refusals that do not say why: {unclear}")
    heal_and_check(c, claims, name, stored | direct.acked_ids(), [routed])
    print("primaries by epoch:", primaries_by_epoch(map_history(etcd_endpoints(c)), name))
    claims.verify()


@pytest.mark.parametrize("how", ["everything", "gateway-and-peers"])
def test_searches_keep_being_served_by_reachable_replicas_while_a_primary_is_cut_off(
        faulty, how):
    """S = 2, R = 2: one shard's primary cut off (blackhole: connections hang, nothing is
    refused). Every search through the gateway must still be answered, with the id looked
    for, by the other replica of that shard, during the fault and after it."""
    c = faulty()
    gw = c.gateways[0]
    name = uid("reach")
    create(c, name, shards=2)
    stored = seed_data(c, name, 200)
    victim = c.shard(name, 0)["primary"]
    # Two clients searching at once, as a gateway's clients do.
    searchers = [Searches(gw.endpoint, name, stored, period=0.05, timeout_ms=5000, seed=i + 1)
                 for i in range(2)]
    for x in searchers:
        x.start()
    time.sleep(0.5)
    t0 = now()
    cut(c, victim, how)
    time.sleep(3 * TTL)
    t1 = now()
    shard_during = c.shard(name, 0)
    c.heal()
    time.sleep(1.0)
    for x in searchers:
        x.stop()  # (a search held by the fault ends at its timeout)
    calls = sorted((x for s in searchers for x in s.calls), key=lambda x: x.sent)
    during = [x for x in calls if t0 <= x.sent < t1]
    bad = [x for s in searchers for x in s.bad(sent_after=t0)]
    claims = Claims()
    claims(not bad, lambda: f"{len(bad)} of {len(during)} searches sent while {victim} (primary "
           f"of shard 0) was cut off ({how}) failed or missed the id (shard 0 then: "
           f"{shard_during}):\n  " + show(sorted(bad, key=lambda x: x.sent), t0))
    if during:
        print(f"{len(during)} searches during the fault, slowest "
              f"{max(x.answered - x.sent for x in during):.2f} s; shard 0 {shard_during}")
    heal_and_check(c, claims, name, stored)
    claims.verify()


def test_a_200ms_delay_on_a_primary_slows_it_down_and_changes_nothing_else(faulty):
    c = faulty()
    gw = c.gateways[0]
    name = uid("slow")
    create(c, name)
    stored = seed_data(c, name)
    before = c.shard(name)
    slow = before["primary"]
    writes = Writes(gw.endpoint, name, 10**9, period=0.1, timeout_ms=5000)
    searches = Searches(gw.endpoint, name, stored, period=0.1, timeout_ms=5000)
    writes.start()
    searches.start()
    time.sleep(1.0)
    t0 = now()
    c.slow(slow, 200)
    time.sleep(3 * TTL + 1)
    t1 = now()
    c.heal()
    time.sleep(1.5)
    writes.stop()
    searches.stop()
    claims = Claims()
    failed = [x for x in writes.calls if not x.ok]
    claims(not failed, lambda: "writes failed:\n  " + show(failed, t0))
    claims(not searches.bad(), lambda: "searches failed:\n  " + show(searches.bad(), t0))
    # Only slower: a write goes through the primary's proxy twice (request and answer).
    during = [x.answered - x.sent for x in writes.calls if t0 + 0.5 <= x.sent < t1 and x.ok]
    normal = [x.answered - x.sent for x in writes.calls if x.sent >= t1 + 0.5 and x.ok]
    claims(during and np.median(during) >= 0.4, f"not slower during the delay: {during}")
    claims(normal and np.median(normal) < 0.2, f"still slow after the delay: {normal}")
    # Nothing moved: the same primary, epoch and in-sync set; nobody fenced itself.
    after = c.shard(name)
    claims((after["primary"], after["epoch"], sorted(after["in_sync"])) ==
           (before["primary"], before["epoch"], sorted(before["in_sync"])),
           f"the shard changed: {before} -> {after}")
    claims(not c.grep("fenced itself"), lambda: c.grep("fenced itself")[:5])
    if during and normal:
        print(f"write latency: {np.median(during):.2f} s (p50) during the delay, "
              f"{np.median(normal):.3f} s after")
    claims.run("at the end", final_checks, c, name, stored | writes.acked_ids())
    claims.verify()


@pytest.mark.parametrize("direction", ["up", "down"])
def test_one_way_loss_on_a_primarys_links(faulty, direction):
    """Bytes from the primary ("up": what it sends to etcd and its peers, and what the
    gateway sends it) or to it ("down") are dropped on every link of the primary. The old
    primary must acknowledge nothing sent more than a TTL later; searches keep being served;
    writes through the gateway resume on another primary while the loss lasts; after it,
    nothing acknowledged is lost and the replicas are identical."""
    c = faulty()
    gw = c.gateways[0]
    name = uid("loss")
    create(c, name)
    stored = seed_data(c, name)
    old = c.shard(name)["primary"]
    direct = Writes(c.agents[old].endpoint, name, 10**9, timeout_ms=2000)
    routed = Writes(gw.endpoint, name, 2 * 10**9, timeout_ms=3000)
    searches = Searches(gw.endpoint, name, stored, timeout_ms=5000)
    for t in (direct, routed, searches):
        t.start()
    time.sleep(1.0)
    t0 = now()
    # The links' "up" is from the connecting side: the agent's own links to etcd and to its
    # peers start at the agent, the gateway's and peers' links to it end there.
    c.cut_etcd(old, loss(direction))
    other = "down" if direction == "up" else "up"
    c.api[old].set(loss(other))
    for a, p in c.api.items():
        if a != old:
            p.set(loss(direction), source=old)
    resumed = None
    deadline = t0 + 3 * TTL + 5
    while now() < deadline and resumed is None:
        got = routed.acked(sent_after=t0 + TTL)
        resumed = got[0].answered if got else None
        time.sleep(0.1)
    time.sleep(max(0.0, t0 + 3 * TTL - now()))
    direct.stop()
    claims = Claims()
    late = writes_acked_late_by(direct, t0)
    claims(not late, lambda: f"the old primary {old} acknowledged {len(late)} writes sent more "
           f"than a TTL after the loss ({direction}) began:\n  " + show(late, t0))
    bad = searches.bad(sent_after=t0)
    claims(not bad, lambda: f"{len(bad)} searches failed or missed the id:\n  " + show(bad, t0))
    failed_routed = [x for x in routed.calls if x.sent > t0 and not x.ok]
    claims(resumed is not None, lambda: (
        f"no write through the gateway was acknowledged within {3 * TTL + 5} s of the "
        f"one-way loss ({direction}) on {old}'s links; shard {c.shard(name)}; "
        f"{len(failed_routed)} failures:\n  " + show(failed_routed, t0)))
    if resumed is not None:
        print(f"writes resumed {resumed - t0:.2f} s after the loss began")
    heal_and_check(c, claims, name, stored | direct.acked_ids(), [routed, searches])
    claims.verify()


# ----------------------------------------------------------------------------- etcd

@pytest.mark.parametrize("how,which", [("kill", "leader"), ("kill", "first-listed"),
                                       ("blackhole", "first-listed")])
def test_one_etcd_member_of_three_lost_changes_nothing(faulty, how, which):
    """Member m0 is the one every agent and the gateway talk to (the first in their lists);
    m1 is made the raft leader. Either the leader is killed with SIGKILL, or m0 is killed or
    its client port blackholed. Writes and searches through the gateway all succeed, no
    agent fences itself, no shard map changes; the member comes back and rejoins."""
    c = faulty()
    gw = c.gateways[0]
    name = uid("member")
    create(c, name, shards=2)
    stored = seed_data(c, name)
    assert c.etcd.move_leader(1), f"member m1 did not become the leader ({c.etcd.leader()})"
    maps_before = c.map(name)
    writes = Writes(gw.endpoint, name, 10**9, period=0.05, timeout_ms=5000)
    searches = Searches(gw.endpoint, name, stored, period=0.05, timeout_ms=5000)
    writes.start()
    searches.start()
    time.sleep(1.0)
    victim = 1 if which == "leader" else 0
    t0 = now()
    if how == "kill":
        c.etcd.kill(victim)
    else:
        c.cut_etcd_member(victim)
    time.sleep(4 * TTL)
    failed_w = [x for x in writes.calls if x.sent >= t0 and not x.ok]
    bad_s = searches.bad(sent_after=t0)
    maps_during = c.map(name)
    fenced = c.grep("fenced itself") + c.grep("not registered in etcd")
    if how == "kill":
        c.etcd.start(victim)
    else:
        c.heal()
    c.etcd.wait_healthy()
    time.sleep(1.0)
    writes.stop()
    searches.stop()
    claims = Claims()
    errors = sorted({x.error for x in failed_w})
    claims(not failed_w, lambda: f"{len(failed_w)} writes failed with one etcd member of three "
           f"lost ({how} of {which}, m{victim}):\n  " + show(failed_w, t0)
           + f"\n  errors: {errors[:4]}")
    claims(not bad_s, lambda: f"{len(bad_s)} searches failed:\n  " + show(bad_s, t0))
    claims(not fenced, lambda: "agents fenced themselves:\n" + "\n".join(fenced[:6]))
    claims(maps_during == maps_before, f"the map changed: {maps_before} -> {maps_during}")
    gone = c.grep("shard unserved") + c.grep("shard under-replicated")
    claims(not gone, lambda: "the gateway counted shards unserved or under-replicated (its "
           "view of the agents' liveness changed):\n" + "\n".join(gone[:6]))
    claims.run("at the end", final_checks, c, name, stored | writes.acked_ids())
    claims.verify()


def test_etcd_down_searches_go_on_writes_stop_when_the_leases_end_and_everything_resumes(
        faulty):
    """All three members killed. Searches keep being answered from the last shard map.
    Writes go on while the primaries' leases are provably alive, then fail UNAVAILABLE
    (FAISSx says BUSY, its name for it; gRPC says UNAVAILABLE) with a message that says etcd
    or the lease is the reason. etcd back: writes resume by themselves, nothing is lost."""
    c = faulty()
    claims = Claims()
    gw = c.gateways[0]
    name = uid("etcd")
    create(c, name)
    stored = seed_data(c, name)
    vald = uid("vald")
    assert c.wait(lambda: vald_insert(gw, vald, "before") in ("OK", None), 15, "a Vald insert")
    writes = Writes(gw.endpoint, name, 10**9, period=0.05, timeout_ms=5000)
    searches = Searches(gw.endpoint, name, stored, period=0.05, timeout_ms=5000)
    writes.start()
    searches.start()
    time.sleep(1.0)
    t0 = now()
    c.etcd.stop_all()
    time.sleep(4 * TTL)
    grpc_code = vald_insert(gw, vald, "during")
    t1 = now()
    c.etcd.start_all()
    c.etcd.wait_healthy()
    back = now()
    resumed = (claims.run("writes after etcd's return", c.wait,
                          lambda: writes.acked(sent_after=back), 30, "an acknowledged write")
               or [None])[0]
    time.sleep(1.0)
    writes.stop()
    searches.stop()
    bad_s = searches.bad(sent_after=t0)
    claims(not bad_s, lambda: f"{len(bad_s)} searches failed while etcd was down:\n  "
           + show(bad_s, t0))
    early = [x for x in writes.calls if t0 <= x.sent < t0 + 0.5]
    claims(early and all(x.ok for x in early), lambda: "writes sent in the first 0.5 s "
           "without etcd (the leases provably alive) failed:\n  " + show(early, t0))
    late = [x for x in writes.calls if t0 + TTL < x.sent < t1]
    claims(late and not any(x.ok for x in late), lambda: "acknowledged more than a TTL after "
           "etcd went down:\n  " + show([x for x in late if x.ok], t0))
    errors = {x.error for x in late}
    codes = {x.reply.get("error_code") if x.reply else None for x in late}
    claims(codes == {"BUSY"}, f"codes {codes} (FAISSx's name for UNAVAILABLE is BUSY): "
           f"{sorted(errors)[:4]}")
    unclear = [e for e in errors if "etcd" not in e.lower() and "lease" not in e.lower()]
    claims(not unclear, f"errors that do not say etcd or the lease is why: {unclear}")
    if grpc_code is not None:
        claims(grpc_code == "UNAVAILABLE", f"a Vald insert while etcd is down: {grpc_code}")
    if resumed:
        print(f"errors while etcd was down: {sorted(errors)[:3]}; writes resumed "
              f"{resumed.answered - back:.2f} s after etcd was back")
    if claims.run("back in sync", c.wait, lambda: in_sync(c, name), 30, "every shard in sync"):
        claims.run("at the end", final_checks, c, name, stored | writes.acked_ids())
    claims.verify()


def vald_insert(gw, collection, key):
    """The gRPC status code's name of one Vald insert through the gateway ("OK"), or None
    without gRPC."""
    if not gw.grpc_target:
        return None
    try:
        import grpc
        from vald.v1.payload import payload_pb2 as pb
        from vald.v1.vald import insert_pb2_grpc
    except ImportError:
        return None
    ch = grpc.insecure_channel(gw.grpc_target)
    try:
        stub = insert_pb2_grpc.InsertStub(ch)
        v = np.random.default_rng(abs(hash(key)) % 1000).standard_normal(DIM)
        req = pb.Insert.Request(vector=pb.Object.Vector(id=key, vector=v.tolist()),
                                config=pb.Insert.Config(skip_strict_exist_check=True))
        stub.Insert(req, metadata=(("x-vecgpu-collection", collection),), timeout=10)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name
    finally:
        ch.close()


def test_a_gateway_cut_off_from_etcd_keeps_serving_from_its_last_shard_map(faulty):
    c = faulty()
    gw = c.gateways[0]
    name = uid("gwcut")
    create(c, name, shards=2)
    stored = seed_data(c, name)
    writes = Writes(gw.endpoint, name, 10**9, period=0.05, timeout_ms=5000)
    searches = Searches(gw.endpoint, name, stored, period=0.05, timeout_ms=5000)
    writes.start()
    searches.start()
    time.sleep(0.5)
    t0 = now()
    c.cut_etcd("gateway1")
    time.sleep(3 * TTL)
    c.heal()
    time.sleep(1.0)
    writes.stop()
    searches.stop()
    claims = Claims()
    failed = [x for x in writes.calls if not x.ok]
    claims(not failed, lambda: "writes failed:\n  " + show(failed, t0))
    claims(not searches.bad(), lambda: "searches failed:\n  " + show(searches.bad(), t0))
    claims.run("at the end", final_checks, c, name, stored | writes.acked_ids())
    claims.verify()


# ----------------------------------------------------------------------------- re-replication

def test_a_shard_short_of_r_for_rereplicate_after_gets_a_new_replica(faulty):
    """The gateway's --rereplicate-after 3: an agent holding a replica is killed for good;
    within 3 s plus the copy's time the placer adds a replica on the third agent, drops the
    dead one from the map, and the new copy equals the primary's."""
    if "--rereplicate-after" not in help_of("gateway"):
        pytest.fail("`vecgpu gateway --help` lists no --rereplicate-after: a shard that lost a "
                    "replica stays under-replicated until the agent returns")
    c = faulty(gateway_args=("--rereplicate-after", "3"))
    gw = c.gateways[0]
    name = uid("rerep")
    create(c, name)
    stored = seed_data(c, name, 500)
    s = c.shard(name)
    dead = [r for r in s["replicas"] if r != s["primary"]][0]
    spare = [a for a in c.agents if a not in s["replicas"]][0]
    writes = Writes(gw.endpoint, name, 10**9, period=0.05, timeout_ms=5000)
    writes.start()
    t0 = now()
    c.agents[dead].kill9()
    moved = c.wait(lambda: (x := c.shard(name)) and dead not in x["replicas"] and
                   sorted(x["in_sync"]) == sorted([s["primary"], spare]) and x,
                   TTL + 3 + 20, "a new in-sync replica on the spare agent")
    took = now() - t0
    writes.stop()
    print(f"re-replicated to {spare} {took:.1f} s after the kill: {moved}")
    assert moved["replicas"] and len(moved["replicas"]) == 2
    final_checks(c, name, stored | writes.acked_ids())

