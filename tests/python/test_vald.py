"""The Vald v1 gRPC API against the real binary, with the unmodified `vald-client-python`
(its stubs and messages) over plain grpcio channels, beside the FAISSx protocol on the same
collections."""
import pathlib
import shutil
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from vald.v1.agent.core import agent_pb2_grpc
from vald.v1.payload import payload_pb2 as pb
from vald.v1.vald import (flush_pb2_grpc, index_pb2_grpc, insert_pb2_grpc, object_pb2_grpc,
                          remove_pb2_grpc, search_pb2_grpc, update_pb2_grpc, upsert_pb2_grpc)

from conftest import BINARY, Server, built_with_grpc, call, free_port, kill9, ok, uid

DIM = 8


pytestmark = pytest.mark.skipif(not built_with_grpc(), reason="vecgpu built without gRPC")


def wait_ready(channel):
    """Waits for the server's gRPC port (it opens just after the ZeroMQ one)."""
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15,
                                              wait_for_ready=True)


class Vald:
    """Stubs of every Vald service on one channel; `md` is sent with every call."""

    def __init__(self, target, md=(), channel=None):
        self.channel = channel or grpc.insecure_channel(target)
        if channel is None:
            wait_ready(self.channel)
        self.md = tuple(md)
        self.insert = insert_pb2_grpc.InsertStub(self.channel)
        self.update = update_pb2_grpc.UpdateStub(self.channel)
        self.upsert = upsert_pb2_grpc.UpsertStub(self.channel)
        self.search = search_pb2_grpc.SearchStub(self.channel)
        self.remove = remove_pb2_grpc.RemoveStub(self.channel)
        self.object = object_pb2_grpc.ObjectStub(self.channel)
        self.flush = flush_pb2_grpc.FlushStub(self.channel)
        self.index = index_pb2_grpc.IndexStub(self.channel)
        self.agent = agent_pb2_grpc.AgentStub(self.channel)

    def on(self, collection):
        """The same stubs, aimed at another collection."""
        v = Vald(None, channel=self.channel,
                 md=[m for m in self.md if m[0] != "x-vecgpu-collection"])
        v.md += (("x-vecgpu-collection", collection),)
        return v

    def __call__(self, method, request, **kw):
        return method(request, metadata=self.md, timeout=30, **kw)

    def stream(self, method, requests):
        return list(method(iter(requests), metadata=self.md, timeout=30))

    def code_of(self, method, request):
        with pytest.raises(grpc.RpcError) as e:
            self(method, request)
        return e.value.code()


def vec(seed, d=DIM):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def ins(id_, v, ts=0, skip=False):
    return pb.Insert.Request(vector=pb.Object.Vector(id=id_, vector=list(v)),
                             config=pb.Insert.Config(skip_strict_exist_check=skip, timestamp=ts))


def upd(id_, v, ts=0, skip=False):
    return pb.Update.Request(vector=pb.Object.Vector(id=id_, vector=list(v)),
                             config=pb.Update.Config(skip_strict_exist_check=skip, timestamp=ts))


def ups(id_, v, skip=False):
    return pb.Upsert.Request(vector=pb.Object.Vector(id=id_, vector=list(v)),
                             config=pb.Upsert.Config(skip_strict_exist_check=skip))


def cfg(num=3, **kw):
    kw.setdefault("radius", -1.0)
    kw.setdefault("epsilon", 0.01)
    kw.setdefault("timeout", 3_000_000_000)
    return pb.Search.Config(num=num, **kw)


def srch(v, **kw):
    return pb.Search.Request(vector=list(v), config=cfg(**kw))


def rm(id_):
    return pb.Remove.Request(id=pb.Object.ID(id=id_))


@pytest.fixture
def vald(server):
    v = Vald(server.grpc_target).on(uid("vald"))
    yield v
    v.channel.close()


UNICODE_ID = "ベクトル-🚀-ñ"
LONG_ID = "x" * 1000


def test_insert_exists_get_update_upsert_remove(vald):
    ids = ["a", UNICODE_ID, LONG_ID]
    for i, id_ in enumerate(ids):
        loc = vald(vald.insert.Insert, ins(id_, vec(i)))
        assert loc.uuid == id_ and loc.name and list(loc.ips) == []
    for i, id_ in enumerate(ids):
        assert vald(vald.object.Exists, pb.Object.ID(id=id_)).id == id_
        got = vald(vald.object.GetObject, pb.Object.VectorRequest(id=pb.Object.ID(id=id_)))
        assert got.id == id_
        np.testing.assert_array_equal(np.asarray(got.vector, np.float32), vec(i))
        assert got.timestamp > 1_600_000_000 * 10**9  # now, in Unix nanoseconds
    # Insert of an existing id: ALREADY_EXISTS, unless the strict check is skipped.
    assert vald.code_of(vald.insert.Insert, ins("a", vec(9))) == grpc.StatusCode.ALREADY_EXISTS
    vald(vald.insert.Insert, ins("a", vec(9), skip=True))
    got = vald(vald.object.GetObject, pb.Object.VectorRequest(id=pb.Object.ID(id="a")))
    np.testing.assert_array_equal(np.asarray(got.vector, np.float32), vec(9))
    # Update: NOT_FOUND for a missing id; ALREADY_EXISTS for the vector already stored.
    assert vald.code_of(vald.update.Update, upd("nope", vec(1))) == grpc.StatusCode.NOT_FOUND
    assert vald.code_of(vald.update.Update, upd("a", vec(9))) == grpc.StatusCode.ALREADY_EXISTS
    assert vald(vald.update.Update, upd("a", vec(10))).uuid == "a"
    got = vald(vald.object.GetObject, pb.Object.VectorRequest(id=pb.Object.ID(id="a")))
    np.testing.assert_array_equal(np.asarray(got.vector, np.float32), vec(10))
    # Upsert: inserts a new id, updates an existing one.
    vald(vald.upsert.Upsert, ups("b", vec(11)))
    vald(vald.upsert.Upsert, ups("b", vec(12)))
    got = vald(vald.object.GetObject, pb.Object.VectorRequest(id=pb.Object.ID(id="b")))
    np.testing.assert_array_equal(np.asarray(got.vector, np.float32), vec(12))
    assert vald(vald.index.IndexInfo, pb.Empty()).stored == 4
    # Remove: gone afterwards; a missing id NOT_FOUND.
    assert vald(vald.remove.Remove, rm(UNICODE_ID)).uuid == UNICODE_ID
    assert vald.code_of(vald.object.Exists, pb.Object.ID(id=UNICODE_ID)) == grpc.StatusCode.NOT_FOUND
    assert vald.code_of(vald.remove.Remove, rm(UNICODE_ID)) == grpc.StatusCode.NOT_FOUND
    assert vald.code_of(vald.object.GetObject, pb.Object.VectorRequest(
        id=pb.Object.ID(id=UNICODE_ID))) == grpc.StatusCode.NOT_FOUND
    # Bad input: an empty id, the wrong dimension, an empty vector.
    assert vald.code_of(vald.insert.Insert, ins("", vec(1))) == grpc.StatusCode.INVALID_ARGUMENT
    assert vald.code_of(vald.insert.Insert, ins("c", vec(1, DIM + 1))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert vald.code_of(vald.insert.Insert, ins("c", [])) == grpc.StatusCode.INVALID_ARGUMENT


def fill(vald, n=50, seed=0, prefix="o"):
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    reqs = [ins(f"{prefix}{i}", x[i]) for i in range(n)]
    locs = vald(vald.insert.MultiInsert, pb.Insert.MultiRequest(requests=reqs))
    assert [l.uuid for l in locs.locations] == [f"{prefix}{i}" for i in range(n)]
    return x


def exact(x, q, k):
    d = ((x - q) ** 2).sum(axis=1)
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


def test_search_by_vector_and_id_and_linear(vald):
    x = fill(vald)
    q = vec(100)
    res = vald(vald.search.Search, srch(q, num=5, request_id="r1"))
    assert res.request_id == "r1"
    order, dist = exact(x, q, 5)
    assert [r.id for r in res.results] == [f"o{i}" for i in order]
    np.testing.assert_allclose([r.distance for r in res.results], dist, rtol=1e-4, atol=1e-5)
    assert all(a.distance <= b.distance for a, b in zip(res.results, res.results[1:]))
    lin = vald(vald.search.LinearSearch, srch(q, num=5))
    assert [r.id for r in lin.results] == [r.id for r in res.results]
    by_id = vald(vald.search.SearchByID, pb.Search.IDRequest(id="o7", config=cfg(num=3)))
    assert len(by_id.results) == 3 and by_id.results[0].id == "o7"
    assert by_id.results[0].distance == pytest.approx(0, abs=1e-5)
    lin_id = vald(vald.search.LinearSearchByID, pb.Search.IDRequest(id="o7", config=cfg(num=3)))
    assert [r.id for r in lin_id.results] == [r.id for r in by_id.results]
    assert vald.code_of(vald.search.SearchByID, pb.Search.IDRequest(
        id="missing", config=cfg())) == grpc.StatusCode.NOT_FOUND
    # radius drops farther results; min_num above what is left: NOT_FOUND.
    r = float(dist[2])
    near = vald(vald.search.Search, srch(q, num=5, radius=r))
    assert [x.id for x in near.results] == [f"o{i}" for i in order[:3]]
    assert vald.code_of(vald.search.Search, srch(q, num=5, radius=r, min_num=4)) == \
        grpc.StatusCode.NOT_FOUND
    assert vald.code_of(vald.search.Search, srch(q, num=5, radius=0.0)) == \
        grpc.StatusCode.NOT_FOUND
    # num 0 and above --max-k, the wrong dimension, an empty vector: INVALID_ARGUMENT.
    for bad in (srch(q, num=0), srch(q, num=10**6), srch(vec(1, DIM + 2)), srch([])):
        assert vald.code_of(vald.search.Search, bad) == grpc.StatusCode.INVALID_ARGUMENT
    # A timeout of 1 ns has passed before any answer: DEADLINE_EXCEEDED.
    assert vald.code_of(vald.search.Search, srch(q, timeout=1)) == \
        grpc.StatusCode.DEADLINE_EXCEEDED
    # A collection that does not exist: NOT_FOUND.
    other = vald.on(uid("absent"))
    assert other.code_of(other.search.Search, srch(q)) == grpc.StatusCode.NOT_FOUND


def test_multi_search_and_multi_insert_are_all_or_nothing(vald):
    x = fill(vald, n=30)
    qs = [vec(200 + i) for i in range(4)]
    res = vald(vald.search.MultiSearch,
               pb.Search.MultiRequest(requests=[srch(q, num=3) for q in qs]))
    assert len(res.responses) == 4
    for q, r in zip(qs, res.responses):
        assert [d.id for d in r.results] == [f"o{i}" for i in exact(x, q, 3)[0]]
    by_id = vald(vald.search.MultiSearchByID, pb.Search.MultiIDRequest(
        requests=[pb.Search.IDRequest(id=f"o{i}", config=cfg(num=2)) for i in range(3)]))
    assert [r.results[0].id for r in by_id.responses] == ["o0", "o1", "o2"]
    # One bad query fails the whole MultiSearch.
    assert vald.code_of(vald.search.MultiSearch, pb.Search.MultiRequest(
        requests=[srch(qs[0]), srch(vec(1, 3)), srch(qs[1])])) == grpc.StatusCode.INVALID_ARGUMENT
    # One existing id fails the whole MultiInsert; nothing of it is written.
    bad = pb.Insert.MultiRequest(requests=[ins("new1", vec(1)), ins("o3", vec(2)),
                                           ins("new2", vec(3))])
    assert vald.code_of(vald.insert.MultiInsert, bad) == grpc.StatusCode.ALREADY_EXISTS
    assert vald.code_of(vald.object.Exists, pb.Object.ID(id="new1")) == grpc.StatusCode.NOT_FOUND
    # MultiRemove / MultiUpdate / MultiUpsert.
    vald(vald.update.MultiUpdate, pb.Update.MultiRequest(requests=[upd("o0", vec(300)),
                                                                  upd("o1", vec(301))]))
    vald(vald.upsert.MultiUpsert, pb.Upsert.MultiRequest(requests=[ups("o2", vec(302)),
                                                                  ups("u9", vec(303))]))
    assert vald.code_of(vald.remove.MultiRemove, pb.Remove.MultiRequest(
        requests=[rm("o0"), rm("nope")])) == grpc.StatusCode.NOT_FOUND
    assert vald(vald.object.Exists, pb.Object.ID(id="o0")).id == "o0"
    locs = vald(vald.remove.MultiRemove, pb.Remove.MultiRequest(requests=[rm("o0"), rm("u9")]))
    assert [l.uuid for l in locs.locations] == ["o0", "u9"]
    assert vald(vald.index.IndexInfo, pb.Empty()).stored == 29


def test_streams_answer_every_item_and_carry_errors_as_statuses(vald):
    x = np.random.default_rng(5).standard_normal((6, DIM)).astype(np.float32)
    reqs = [ins(f"s{i}", x[i]) for i in range(3)] + [ins("s0", x[3])] + \
           [ins("bad", vec(1, DIM + 1))] + [ins(f"s{i}", x[i]) for i in range(3, 6)]
    out = vald.stream(vald.insert.StreamInsert, reqs)
    assert len(out) == len(reqs)
    kinds = [o.WhichOneof("payload") for o in out]
    assert kinds == ["location"] * 3 + ["status", "status"] + ["location"] * 3
    assert out[3].status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert out[4].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "dimension" in out[4].status.message
    assert [o.location.uuid for o in out if o.HasField("location")] == \
        [f"s{i}" for i in range(6)]
    # StreamSearch: a bad query in the middle gets its status; the others their results.
    qs = [srch(x[0], num=2), srch(vec(1, 3), num=2), srch(x[5], num=2, request_id="last")]
    res = vald.stream(vald.search.StreamSearch, qs)
    assert [r.WhichOneof("payload") for r in res] == ["response", "status", "response"]
    assert res[0].response.results[0].id == "s0"
    assert res[1].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert res[2].response.results[0].id == "s5" and res[2].response.request_id == "last"
    # Many in flight at once: answered in request order.
    many = [srch(x[i % 6], num=1, request_id=f"q{i}") for i in range(200)]
    res = vald.stream(vald.search.StreamSearch, many)
    assert [r.response.request_id for r in res] == [f"q{i}" for i in range(200)]
    assert [r.response.results[0].id for r in res] == [f"s{i % 6}" for i in range(200)]
    res = vald.stream(vald.search.StreamLinearSearch, many[:10])
    assert [r.response.results[0].id for r in res] == [f"s{i % 6}" for i in range(10)]
    res = vald.stream(vald.search.StreamSearchByID, [
        pb.Search.IDRequest(id="s1", config=cfg(num=1)),
        pb.Search.IDRequest(id="zz", config=cfg(num=1)),
        pb.Search.IDRequest(id="s2", config=cfg(num=1))])
    assert [r.WhichOneof("payload") for r in res] == ["response", "status", "response"]
    assert res[1].status.code == grpc.StatusCode.NOT_FOUND.value[0]
    # StreamGetObject, StreamUpdate, StreamUpsert, StreamRemove, StreamListObject.
    got = vald.stream(vald.object.StreamGetObject, [
        pb.Object.VectorRequest(id=pb.Object.ID(id=i)) for i in ("s1", "zz", "s4")])
    assert [g.WhichOneof("payload") for g in got] == ["vector", "status", "vector"]
    np.testing.assert_array_equal(np.asarray(got[2].vector.vector, np.float32), x[4])
    out = vald.stream(vald.update.StreamUpdate, [upd("s1", vec(7)), upd("zz", vec(8))])
    assert [o.WhichOneof("payload") for o in out] == ["location", "status"]
    out = vald.stream(vald.upsert.StreamUpsert, [ups("s1", vec(9)), ups("s9", vec(10))])
    assert [o.WhichOneof("payload") for o in out] == ["location", "location"]
    listed = list(vald.object.StreamListObject(pb.Object.List.Request(), metadata=vald.md))
    assert sorted(o.vector.id for o in listed) == sorted([f"s{i}" for i in range(6)] + ["s9"])
    out = vald.stream(vald.remove.StreamRemove, [rm("s1"), rm("s1"), rm("s2")])
    assert [o.WhichOneof("payload") for o in out] == ["location", "status", "location"]
    assert out[1].status.code == grpc.StatusCode.NOT_FOUND.value[0]


def test_timestamps_update_and_remove_by_timestamp(vald):
    for i, ts in enumerate((100, 200, 300, 400)):
        vald(vald.insert.Insert, ins(f"t{i}", vec(i), ts=ts))
    stamp = vald(vald.object.GetTimestamp, pb.Object.TimestampRequest(id=pb.Object.ID(id="t1")))
    assert (stamp.id, stamp.timestamp) == ("t1", 200)
    # UpdateTimestamp: an older one needs force.
    older = pb.Update.TimestampRequest(id="t3", timestamp=50)
    assert vald.code_of(vald.update.UpdateTimestamp, older) == grpc.StatusCode.INVALID_ARGUMENT
    vald(vald.update.UpdateTimestamp, pb.Update.TimestampRequest(id="t3", timestamp=50, force=True))
    vald(vald.update.UpdateTimestamp, pb.Update.TimestampRequest(id="t2", timestamp=350))
    assert vald(vald.object.GetObject, pb.Object.VectorRequest(
        id=pb.Object.ID(id="t2"))).timestamp == 350
    assert vald.code_of(vald.update.UpdateTimestamp, pb.Update.TimestampRequest(
        id="none", timestamp=1)) == grpc.StatusCode.NOT_FOUND
    # Update stamps its own timestamp.
    vald(vald.update.Update, upd("t0", vec(50), ts=120))
    assert vald(vald.object.GetTimestamp, pb.Object.TimestampRequest(
        id=pb.Object.ID(id="t0"))).timestamp == 120
    # RemoveByTimestamp: conditions ANDed -> t0 (120), t1 (200), t3 (50) < 250, and >= 100.
    T = pb.Remove.Timestamp
    locs = vald(vald.remove.RemoveByTimestamp, pb.Remove.TimestampRequest(timestamps=[
        T(timestamp=250, operator=T.Operator.LT), T(timestamp=100, operator=T.Operator.GE)]))
    assert sorted(l.uuid for l in locs.locations) == ["t0", "t1"]
    left = sorted(o.vector.id for o in vald.object.StreamListObject(pb.Object.List.Request(),
                                                                     metadata=vald.md))
    assert left == ["t2", "t3"]
    assert vald.code_of(vald.remove.RemoveByTimestamp, pb.Remove.TimestampRequest(timestamps=[
        T(timestamp=1000, operator=T.Operator.GT)])) == grpc.StatusCode.NOT_FOUND


def test_index_info_agent_and_flush(vald):
    fill(vald, n=20)
    # core.v1.Agent as the Vald client's e2e test calls it.
    vald(vald.agent.CreateIndex, pb.Control.CreateIndexRequest(pool_size=10000))
    vald(vald.agent.SaveIndex, pb.Empty())
    vald(vald.agent.CreateAndSaveIndex, pb.Control.CreateIndexRequest(pool_size=10))
    # The old path alvd and clients before Vald v1.7.13 call (the 1.8 client has no stub).
    old_info = vald.channel.unary_unary("/core.v1.Agent/IndexInfo",
                                        request_serializer=pb.Empty.SerializeToString,
                                        response_deserializer=pb.Info.Index.Count.FromString)
    for info in (vald(vald.index.IndexInfo, pb.Empty()), vald(old_info, pb.Empty())):
        assert (info.stored, info.uncommitted, info.indexing) == (20, 0, False)
    detail = vald(vald.index.IndexDetail, pb.Empty())
    assert [c.stored for c in detail.counts.values()] == [20]
    prop = vald(vald.index.IndexProperty, pb.Empty())
    (p,) = prop.details.values()
    assert p.dimension == DIM and p.distance_type == "l2" and p.index_type == "Flat"
    assert vald(vald.index.IndexStatistics, pb.Empty()).valid
    count = vald(vald.flush.Flush, pb.Flush.Request())
    assert count.stored == 0
    assert vald(vald.index.IndexInfo, pb.Empty()).stored == 0
    assert vald.code_of(vald.object.Exists, pb.Object.ID(id="o1")) == grpc.StatusCode.NOT_FOUND
    assert vald.code_of(vald.search.Search, srch(vec(1))) == grpc.StatusCode.NOT_FOUND
    fill(vald, n=5)  # the collection is still there, empty
    assert vald(vald.index.IndexInfo, pb.Empty()).stored == 5


def test_results_equal_the_faissx_protocols(server, vald):
    """One collection, searched over both protocols: the same neighbours (ids mapped through
    the objects' vectors) and the same distances."""
    name = dict(vald.md)["x-vecgpu-collection"]
    fill(vald, n=200, seed=3)
    listed = vald.object.StreamListObject(pb.Object.List.Request(), metadata=vald.md)
    key_of_vector = {np.asarray(o.vector.vector, np.float32).tobytes(): o.vector.id
                     for o in listed}
    got = ok(call(server, action="get_vectors", index_id=name, start_idx=0, limit=1000))
    key_of_label = {label: key_of_vector[np.asarray(v, np.float32).tobytes()]
                    for label, v in zip(got["ids"], got["vectors"])}
    assert len(key_of_label) == 200
    qs = np.random.default_rng(9).standard_normal((10, DIM)).astype(np.float32)
    reply = ok(call(server, action="search", index_id=name, query_vectors=qs.tolist(), k=7))
    for q, r in zip(qs, reply["results"]):
        res = vald(vald.search.Search, srch(q, num=7))
        assert [d.id for d in res.results] == [key_of_label[i] for i in r["indices"]]
        np.testing.assert_allclose([d.distance for d in res.results], r["distances"], rtol=1e-6)
    # A vector added over FAISSx with an int64 id and no key: its decimal string in Vald results.
    ok(call(server, action="add_with_ids", index_id=name, vectors=[(qs[0] + 0).tolist()],
            ids=[987654]))
    res = vald(vald.search.Search, srch(qs[0], num=1))
    assert res.results[0].id == "987654"


def test_linear_search_on_an_ivf_collection_is_exact_and_refused_on_lossy_kinds(server):
    v = Vald(server.grpc_target)
    name = uid("ivf")
    x = np.random.default_rng(4).standard_normal((400, DIM)).astype(np.float32)
    ok(call(server, action="create_index", index_id=name, dimension=DIM,
            index_type="IDMap2,IVF16,Flat"))
    ok(call(server, action="train_index", index_id=name, training_vectors=x.tolist()))
    ivf = v.on(name)
    ivf(ivf.insert.MultiInsert, pb.Insert.MultiRequest(
        requests=[ins(f"i{i}", x[i]) for i in range(400)]))
    for seed in range(5):
        q = vec(500 + seed)
        res = ivf(ivf.search.LinearSearch, srch(q, num=10, nprobe=1))
        assert [d.id for d in res.results] == [f"i{i}" for i in exact(x, q, 10)[0]]
    pq = uid("pq")
    ok(call(server, action="create_index", index_id=pq, dimension=DIM, index_type="IDMap2,PQ4x4"))
    lossy = v.on(pq)
    assert lossy.code_of(lossy.search.LinearSearch, srch(vec(1))) == \
        grpc.StatusCode.UNIMPLEMENTED
    v.channel.close()


def test_a_missing_collection_is_created_with_the_vald_flags():
    s = Server("--log-level", "warning", "--vald-collection", "vc", "--vald-dimension", "4",
               "--vald-index-type", "HNSW16", "--vald-metric", "IP")
    try:
        v = Vald(s.grpc_target)
        assert v.code_of(v.insert.Insert, ins("a", vec(1, 6))) == grpc.StatusCode.INVALID_ARGUMENT
        v(v.insert.Insert, ins("a", vec(1, 4)))
        info = ok(call(s, action="get_index_info", index_id="vc"))
        assert info["status"]["dimension"] == 4
        assert info["configuration"]["metric"] == "IP"
        assert info["status"]["kind"] == "HNSW"
        assert info["configuration"]["idmap_type"] == "IDMap2"
        v.channel.close()
    finally:
        assert s.stop() == 0


def test_auth_bearer_keys_and_tenants():
    s = Server("--enable-auth", "--auth-keys", "ka:ta,kb:tb", "--bind-address", "127.0.0.1",
               "--log-level", "warning")
    try:
        none = Vald(s.grpc_target)
        assert none.code_of(none.insert.Insert, ins("a", vec(1))) == \
            grpc.StatusCode.UNAUTHENTICATED
        assert none.code_of(none.index.IndexInfo, pb.Empty()) == grpc.StatusCode.UNAUTHENTICATED
        wrong = Vald(None, channel=none.channel, md=[("authorization", "Bearer nope")])
        assert wrong.code_of(wrong.search.Search, srch(vec(1))) == grpc.StatusCode.UNAUTHENTICATED
        a = Vald(None, channel=none.channel, md=[("authorization", "Bearer ka")])
        b = Vald(None, channel=none.channel, md=[("authorization", "Bearer kb")])
        a(a.insert.Insert, ins("secret", vec(1)))
        assert a(a.object.Exists, pb.Object.ID(id="secret")).id == "secret"
        # Tenant tb has no such collection: it sees nothing of ta's.
        assert b.code_of(b.object.Exists, pb.Object.ID(id="secret")) == grpc.StatusCode.NOT_FOUND
        assert b.code_of(b.search.Search, srch(vec(1))) == grpc.StatusCode.NOT_FOUND
        assert b(b.index.IndexInfo, pb.Empty()).stored == 0
        assert a(a.index.IndexInfo, pb.Empty()).stored == 1
        # The same object over FAISSx with ta's key.
        reply = call(s, action="search", api_key="ka", index_id="default",
                     query_vectors=[vec(1).tolist()], k=1)
        assert ok(reply)["results"][0]["distances"][0] == pytest.approx(0, abs=1e-6)
        none.channel.close()
    finally:
        assert s.stop() == 0


def test_health_and_reflection(server):
    ch = grpc.insecure_channel(server.grpc_target)
    wait_ready(ch)
    health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""),
                                                  timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    replies = list(stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    names = {s.name for s in replies[0].list_services_response.service}
    for want in ("vald.v1.Insert", "vald.v1.Search", "vald.v1.Remove", "vald.v1.Object",
                 "vald.v1.Update", "vald.v1.Upsert", "vald.v1.Flush", "vald.v1.Index",
                 "core.v1.Agent", "vecgpu.v1.Collections", "grpc.health.v1.Health"):
        assert want in names, names
    # Services vecgpu does not serve (Vald's Filter gateway): UNIMPLEMENTED.
    filter_search = ch.unary_unary("/vald.v1.Filter/SearchObject",
                                   request_serializer=pb.Search.ObjectRequest.SerializeToString,
                                   response_deserializer=pb.Search.Response.FromString)
    with pytest.raises(grpc.RpcError) as e:
        filter_search(pb.Search.ObjectRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    ch.close()


def _batches(server):
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(server.metrics_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {"vecgpu_batch_requests_count": 0, "vecgpu_batch_requests_sum": 0, "grpc_search_ok": 0}
    for f in text_string_to_metric_families(text):
        for smp in f.samples:
            if smp.name in ("vecgpu_batch_requests_count", "vecgpu_batch_requests_sum"):
                out[smp.name] = smp.value
            if smp.name == "vecgpu_requests_total" and smp.labels == {
                    "action": "/vald.v1.Search/Search", "tenant": "default", "outcome": "ok"}:
                out["grpc_search_ok"] = smp.value
    return out


def test_grpc_searches_batch_with_each_other():
    s = Server("--log-level", "warning")
    try:
        v = Vald(s.grpc_target).on("b")
        x = np.random.default_rng(0).standard_normal((20000, 64)).astype(np.float32)
        for i in range(0, len(x), 5000):
            v(v.insert.MultiInsert, pb.Insert.MultiRequest(
                requests=[ins(f"b{j}", x[j]) for j in range(i, i + 5000)]))
        before = _batches(s)
        errors = []

        def client(seed):
            try:
                for i in range(30):
                    v(v.search.Search, srch(vec(seed * 100 + i, 64), num=3))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        after = _batches(s)
        requests = after["vecgpu_batch_requests_sum"] - before["vecgpu_batch_requests_sum"]
        batches = after["vecgpu_batch_requests_count"] - before["vecgpu_batch_requests_count"]
        assert requests == 240
        # Every gRPC call is counted in the request metrics too, by method, tenant and outcome.
        assert after["grpc_search_ok"] - before["grpc_search_ok"] == 240
        assert batches < 240, "no two concurrent gRPC searches ever shared a backend call"
        v.channel.close()
    finally:
        assert s.stop() == 0


def test_a_grpc_and_a_zeromq_search_share_one_batch():
    """A long FAISSx search holds the collection's queue; one ZeroMQ and one gRPC search queue
    behind it and run as one batch: 2 backend calls for the 3 requests."""
    s = Server("--log-level", "warning")
    try:
        v = Vald(s.grpc_target).on("mix")
        rng = np.random.default_rng(0)
        x = rng.standard_normal((40000, 64)).astype(np.float32)
        for i in range(0, len(x), 5000):
            v(v.insert.MultiInsert, pb.Insert.MultiRequest(
                requests=[ins(f"m{j}", x[j]) for j in range(i, i + 5000)]))
        blocker = rng.standard_normal((4000, 64)).astype(np.float32).tolist()
        q = x[17]
        for attempt in range(5):
            before = _batches(s)
            results = {}

            def long_search():
                results["long"] = call(s, action="search", index_id="mix",
                                       query_vectors=blocker, k=1)

            def zmq_search():
                results["zmq"] = call(s, action="search", index_id="mix",
                                      query_vectors=[q.tolist()], k=1)

            def grpc_search():
                results["grpc"] = v(v.search.Search, srch(q, num=1))

            t_long = threading.Thread(target=long_search)
            t_long.start()
            time.sleep(0.05)
            small = [threading.Thread(target=f) for f in (zmq_search, grpc_search)]
            for t in small:
                t.start()
            for t in small + [t_long]:
                t.join()
            assert ok(results["long"])
            assert ok(results["zmq"])["results"][0]["distances"][0] == pytest.approx(0, abs=1e-4)
            assert results["grpc"].results[0].id == "m17"
            after = _batches(s)
            requests = after["vecgpu_batch_requests_sum"] - before["vecgpu_batch_requests_sum"]
            batches = after["vecgpu_batch_requests_count"] - before["vecgpu_batch_requests_count"]
            assert requests == 3
            if batches == 2:
                break  # the ZeroMQ and the gRPC search ran as one backend call
        else:
            pytest.fail("a gRPC and a ZeroMQ search never shared a batch in 5 tries")
        v.channel.close()
    finally:
        assert s.stop() == 0


def _write_then_kill(s, data):
    """Vald writes on `s` (half before a SaveIndex snapshot, half after), then SIGKILL."""
    v = Vald(s.grpc_target)
    x = np.random.default_rng(8).standard_normal((20, DIM)).astype(np.float32)
    for i in range(10):
        v(v.insert.Insert, ins(f"k{i}-é", x[i], ts=1000 + i))
    # SaveIndex takes a snapshot: the first half comes back from it, the rest from the log.
    assert not list(pathlib.Path(data).rglob("*.snap"))
    v(v.agent.SaveIndex, pb.Empty())
    assert list(pathlib.Path(data).rglob("*.snap"))
    for i in range(10, 20):
        v(v.insert.Insert, ins(f"k{i}-é", x[i], ts=1000 + i))
    v(v.remove.Remove, rm("k3-é"))
    v(v.update.UpdateTimestamp, pb.Update.TimestampRequest(id="k4-é", timestamp=5, force=True))
    v(v.update.Update, upd("k5-é", x[0] + 1, ts=7777))
    v.channel.close()
    kill9(s)
    return x


def test_vald_objects_survive_sigkill_and_restart(tmp_path):
    data = str(tmp_path / "data")
    args = ("--log-level", "warning", "--data-dir", data)
    s = Server(*args)
    try:
        x = _write_then_kill(s, data)
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
    s2 = Server(*args)
    try:
        v = Vald(s2.grpc_target)
        assert v(v.index.IndexInfo, pb.Empty()).stored == 19
        assert v.code_of(v.object.Exists, pb.Object.ID(id="k3-é")) == grpc.StatusCode.NOT_FOUND
        for i in (0, 4, 5, 19):
            o = v(v.object.GetObject, pb.Object.VectorRequest(id=pb.Object.ID(id=f"k{i}-é")))
            want = x[0] + 1 if i == 5 else x[i]
            np.testing.assert_array_equal(np.asarray(o.vector, np.float32), want)
            assert o.timestamp == {4: 5, 5: 7777}.get(i, 1000 + i)
        res = v(v.search.Search, srch(x[19], num=1))
        assert res.results[0].id == "k19-é"
        v.channel.close()
    finally:
        assert s2.stop() == 0


def test_a_taken_grpc_port_is_refused(server):
    r = subprocess.run([str(BINARY), "serve", "--port", str(free_port()), "--metrics-port", "0",
                        "--grpc-port", str(server.grpc_port)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "grpc-port" in r.stdout + r.stderr


def test_collections_service_over_reflected_descriptors(server):
    """vecgpu.v1.Collections, called with message classes built from the server's own
    reflection (so the test needs no generated stubs)."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import \
        ProtoReflectionDescriptorDatabase
    ch = grpc.insecure_channel(server.grpc_target)
    wait_ready(ch)
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
    service = pool.FindServiceByName("vecgpu.v1.Collections")
    methods = {}
    for m in service.methods:
        req = message_factory.GetMessageClass(m.input_type)
        resp = message_factory.GetMessageClass(m.output_type)
        methods[m.name] = (req, ch.unary_unary(f"/vecgpu.v1.Collections/{m.name}",
                                               request_serializer=req.SerializeToString,
                                               response_deserializer=resp.FromString))

    def rpc(method, **fields):
        req, stub = methods[method]
        return stub(req(**fields), timeout=10)

    name = uid("coll")
    made = rpc("Create", name=name, index_type="IVF8", dimension=16, metric="IP")
    assert (made.name, made.dimension, made.metric, made.kind, made.nlist) == \
        (name, 16, "IP", "IVF", 8)
    assert not made.is_trained and made.device
    with pytest.raises(grpc.RpcError) as e:
        rpc("Create", name=name, index_type="IVF8", dimension=16)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as e:
        rpc("Create", name=uid("coll"), index_type="Flat", dimension=0)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert name in [c.name for c in rpc("List").collections]
    # Describe: the facts get_index_info gives over FAISSx.
    d = rpc("Describe", name=name)
    info = ok(call(server, action="get_index_info", index_id=name))
    assert d.ntotal == info["status"]["ntotal"] and d.nprobe == info["configuration"]["nprobe"]
    assert d.kind == info["status"]["kind"] and d.index_type == info["status"]["index_type"]
    with pytest.raises(grpc.RpcError) as e:
        rpc("Snapshot")
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED  # no --data-dir
    rpc("Delete", name=name)
    with pytest.raises(grpc.RpcError) as e:
        rpc("Describe", name=name)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    ch.close()


def test_limits_are_refused_before_allocation():
    s = Server("--log-level", "warning", "--max-request-bytes", "100000",
               "--max-message-bytes", "200000", "--max-add-vectors",
               "10", "--max-query-vectors", "3", "--max-k", "5")
    try:
        v = Vald(s.grpc_target).on("lim")
        fill(v, n=10)
        huge = ins("huge", np.zeros(100_000, np.float32))  # 400 kB
        assert v.code_of(v.insert.Insert, huge) == grpc.StatusCode.RESOURCE_EXHAUSTED
        many = pb.Insert.MultiRequest(requests=[ins(f"n{i}", vec(i)) for i in range(11)])
        assert v.code_of(v.insert.MultiInsert, many) == grpc.StatusCode.INVALID_ARGUMENT
        assert v.code_of(v.remove.MultiRemove, pb.Remove.MultiRequest(
            requests=[rm(f"o{i}") for i in range(11)])) == grpc.StatusCode.INVALID_ARGUMENT
        queries = pb.Search.MultiRequest(requests=[srch(vec(i)) for i in range(4)])
        assert v.code_of(v.search.MultiSearch, queries) == grpc.StatusCode.INVALID_ARGUMENT
        assert v.code_of(v.search.Search, srch(vec(1), num=6)) == grpc.StatusCode.INVALID_ARGUMENT
        assert len(v(v.search.Search, srch(vec(1), num=5)).results) == 5
        assert v(v.index.IndexInfo, pb.Empty()).stored == 10
        v.channel.close()
    finally:
        assert s.stop() == 0


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_test_pki(d):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=vecgpu test CA", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out",
                 f"{who}.csr", "-subj", f"/CN={who}", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", "-extfile", "san.cnf",
                 cwd=d)
    return {k: (d / k).read_bytes() for k in ("ca.pem", "server.pem", "server.key",
                                              "client.pem", "client.key")}


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
def test_tls_with_client_certificates(tmp_path):
    pki = make_test_pki(tmp_path)
    s = Server("--log-level", "warning", "--grpc-tls-cert", str(tmp_path / "server.pem"),
               "--grpc-tls-key", str(tmp_path / "server.key"), "--grpc-tls-client-ca",
               str(tmp_path / "ca.pem"))
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca.pem"],
                                             private_key=pki["client.key"],
                                             certificate_chain=pki["client.pem"])
        v = Vald(None, channel=grpc.secure_channel(s.grpc_target, creds))
        wait_ready(v.channel)
        v(v.insert.Insert, ins("tls", vec(1)))
        assert v(v.object.Exists, pb.Object.ID(id="tls")).id == "tls"
        v.channel.close()
        # No client certificate, or no TLS at all: the call never reaches the server.
        anon = grpc.secure_channel(s.grpc_target,
                                   grpc.ssl_channel_credentials(root_certificates=pki["ca.pem"]))
        plain = grpc.insecure_channel(s.grpc_target)
        for ch in (anon, plain):
            with pytest.raises(grpc.RpcError) as e:
                object_pb2_grpc.ObjectStub(ch).Exists(pb.Object.ID(id="tls"), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            ch.close()
    finally:
        assert s.stop() == 0
