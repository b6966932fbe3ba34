"""Raw gRPC against the real binary: stubs generated at test time with grpc_tools.protoc from the
project's own proto/ files, every call asserting its exact status code.

Keeping these stubs apart from vald-client-python (tests/python/test_vald.py, same pytest
process): both define the proto files `vald/v1/payload/payload.proto`, `google/rpc/status.proto`
and the packages `payload.v1`, `vald.v1`, `google.rpc`, and both would be imported as the Python
packages `vald` and `google.rpc`. Loading our generated code as it is would fail with "duplicate
file name vald/v1/payload/payload.proto" in protobuf's default descriptor pool, or silently pick
up the other side's modules. So the session fixture
  1. runs protoc on proto/ (plus grpc_tools' bundled google/protobuf/*.proto that proto/ imports)
     into <tmp>/vecgpu_rawpb/, a distinct top-level package on sys.path;
  2. rewrites the generated imports of what it generated (`from vald...`, `from vecgpu...`,
     `from google.rpc ...`, `from google.protobuf import any_pb2/wrappers_pb2`) to
     `from vecgpu_rawpb....`;
  3. rewrites `_descriptor_pool.Default()` to vecgpu_rawpb.POOL, a private DescriptorPool, so
     the generated descriptors never meet the default pool's.
Only those two mechanical rewrites (2, 3) touch the generated code; messages and stubs are
otherwise exactly protoc's. Nothing from vald-client-python is imported here, and the two
sets of stubs load in either order (test_stubs_are_generated_and_kept_apart checks the pool).

VALD.md §1.4 codes not produced by vecgpu: ABORTED (Vald: search during CreateIndex/flush;
vecgpu never rejects searches for indexing) and INTERNAL (no input reaches it). CANCELLED is
the client's cancellation of a call in flight (the server must survive it).
"""
import importlib
import pathlib
import re
import sys
import threading
import types

import grpc
import numpy as np
import pytest

from conftest import ROOT, Server, built_with_grpc, uid

PROTO = ROOT / "proto"
PKG = "vecgpu_rawpb"
DIM = 8
C = grpc.StatusCode


pytestmark = pytest.mark.skipif(not built_with_grpc(), reason="vecgpu built without gRPC")


# --- stubs ----------------------------------------------------------------------------------

_OWN_IMPORT = re.compile(r"^from (vald|vecgpu|google\.rpc)([. ])", re.M)


def _generate(root):
    from grpc_tools import protoc
    import grpc_tools
    wkt_dir = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    ours = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    # The well-known protos proto/ imports, compiled from grpc_tools' bundled copies.
    wkt = sorted({m for f in ours for m in re.findall(r'import "(google/protobuf/\w+\.proto)"',
                                                        (PROTO / f).read_text())})
    out = root / PKG
    out.mkdir(parents=True)
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO}", f"-I{wkt_dir}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *wkt, *ours])
    assert rc == 0, "protoc failed on proto/"
    wkt_modules = [pathlib.Path(f).stem + "_pb2" for f in wkt]
    for py in out.rglob("*.py"):
        text = _OWN_IMPORT.sub(rf"from {PKG}.\1\2", py.read_text())
        for m in wkt_modules:
            text = text.replace(f"from google.protobuf import {m} as",
                                f"from {PKG}.google.protobuf import {m} as")
        text = text.replace("_descriptor_pool.Default()", f"__import__('{PKG}').POOL")
        py.write_text(text)
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    (out / "__init__.py").write_text(
        '"""protoc output of vecgpu\'s proto/, in its own descriptor pool."""\n'
        "from google.protobuf import descriptor_pool\n\n"
        "POOL = descriptor_pool.DescriptorPool()\n")


@pytest.fixture(scope="session")
def pb2(tmp_path_factory):
    root = tmp_path_factory.mktemp("rawstubs")
    _generate(root)
    sys.path.insert(0, str(root))
    try:
        mod = lambda name: importlib.import_module(f"{PKG}.{name}")  # noqa: E731
        ns = types.SimpleNamespace(
            pb=mod("vald.v1.payload.payload_pb2"),
            status=mod("google.rpc.status_pb2"),
            coll=mod("vecgpu.v1.collections_pb2"),
            coll_grpc=mod("vecgpu.v1.collections_pb2_grpc"),
            agent_grpc=mod("vald.v1.agent.core.agent_pb2_grpc"),
            pool=importlib.import_module(PKG).POOL)
        for svc in ("insert", "update", "upsert", "remove", "search", "object", "flush", "index"):
            setattr(ns, svc + "_grpc", mod(f"vald.v1.vald.{svc}_pb2_grpc"))
        yield ns
    finally:
        sys.path.remove(str(root))


class Raw:
    """Every service's stub on one channel; `md` goes with every call."""

    def __init__(self, pb2, channel, md=()):
        self.pb2, self.channel, self.md = pb2, channel, tuple(md)
        self.insert = pb2.insert_grpc.InsertStub(channel)
        self.update = pb2.update_grpc.UpdateStub(channel)
        self.upsert = pb2.upsert_grpc.UpsertStub(channel)
        self.remove = pb2.remove_grpc.RemoveStub(channel)
        self.search = pb2.search_grpc.SearchStub(channel)
        self.object = pb2.object_grpc.ObjectStub(channel)
        self.flush = pb2.flush_grpc.FlushStub(channel)
        self.index = pb2.index_grpc.IndexStub(channel)
        self.agent = pb2.agent_grpc.AgentStub(channel)
        self.coll = pb2.coll_grpc.CollectionsStub(channel)

    @classmethod
    def connect(cls, pb2, target, md=(), credentials=None):
        ch = (grpc.secure_channel(target, credentials) if credentials
              else grpc.insecure_channel(target))
        grpc.channel_ready_future(ch).result(timeout=15)
        return cls(pb2, ch, md)

    def with_md(self, *md, collection=None):
        md = list(md)
        if collection is not None:
            md.append(("x-vecgpu-collection", collection))
        return Raw(self.pb2, self.channel, md)

    def on(self, collection):
        return self.with_md(*[m for m in self.md if m[0] != "x-vecgpu-collection"],
                            collection=collection)

    def __call__(self, method, request, timeout=20):
        return method(request, metadata=self.md, timeout=timeout)

    def stream(self, method, requests, timeout=20):
        return list(method(iter(requests), metadata=self.md, timeout=timeout))

    def code(self, method, request, timeout=20):
        """The status code of a call that must fail (a streaming call's, with a list)."""
        with pytest.raises(grpc.RpcError) as e:
            if isinstance(request, list):
                self.stream(method, request, timeout)
            else:
                self(method, request, timeout)
        return e.value.code()


# --- message helpers --------------------------------------------------------------------------

def vec(seed, d=DIM):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def V(pb2, id_, v):
    return pb2.pb.Object.Vector(id=id_, vector=np.asarray(v, np.float32).tolist())


def ins(pb2, id_, v, skip=False, ts=0):
    P = pb2.pb
    return P.Insert.Request(vector=V(pb2, id_, v),
                            config=P.Insert.Config(skip_strict_exist_check=skip, timestamp=ts))


def upd(pb2, id_, v):
    return pb2.pb.Update.Request(vector=V(pb2, id_, v), config=pb2.pb.Update.Config())


def ups(pb2, id_, v):
    return pb2.pb.Upsert.Request(vector=V(pb2, id_, v), config=pb2.pb.Upsert.Config())


def cfg(pb2, num=3, **kw):
    kw.setdefault("radius", -1.0)
    kw.setdefault("timeout", 5_000_000_000)
    return pb2.pb.Search.Config(num=num, **kw)


def srch(pb2, v, **kw):
    return pb2.pb.Search.Request(vector=np.asarray(v, np.float32).tolist(), config=cfg(pb2, **kw))


def by_id(pb2, id_, **kw):
    return pb2.pb.Search.IDRequest(id=id_, config=cfg(pb2, **kw))


def oid(pb2, id_):
    return pb2.pb.Object.ID(id=id_)


def vreq(pb2, id_):
    return pb2.pb.Object.VectorRequest(id=oid(pb2, id_))


def rm(pb2, id_):
    return pb2.pb.Remove.Request(id=oid(pb2, id_))


def fill(r, n, d=DIM, seed=0, prefix="o", chunk=5000):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    P = r.pb2.pb
    for s in range(0, n, chunk):
        reqs = [ins(r.pb2, f"{prefix}{i}", x[i]) for i in range(s, min(n, s + chunk))]
        locs = r(r.insert.MultiInsert, P.Insert.MultiRequest(requests=reqs), timeout=60)
        assert len(locs.locations) == len(reqs)
    return x


def nearest(x, q, k):
    return [int(i) for i in np.argsort(((x - q) ** 2).sum(axis=1), kind="stable")[:k]]


# --- servers ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raw(pb2, server):
    r = Raw.connect(pb2, server.grpc_target)
    yield r
    r.channel.close()


@pytest.fixture
def col(raw):
    """The stubs aimed at a fresh collection of the default tenant."""
    return raw.on(uid("raw"))


# --- tests ------------------------------------------------------------------------------------

def test_stubs_are_generated_and_kept_apart(pb2):
    from google.protobuf import descriptor_pool
    req = pb2.pb.Search.Request.DESCRIPTOR
    assert req.full_name == "payload.v1.Search.Request"
    assert req.file.name == "vald/v1/payload/payload.proto"
    assert req.file.pool is pb2.pool and pb2.pool is not descriptor_pool.Default()
    assert pb2.pb.__name__ == f"{PKG}.vald.v1.payload.payload_pb2"
    # The oneof status of every stream answer is the project's google.rpc.Status.
    status = pb2.pb.Search.StreamResponse.DESCRIPTOR.fields_by_name["status"].message_type
    assert status is pb2.status.Status.DESCRIPTOR
    assert pb2.pool.FindServiceByName("vecgpu.v1.Collections").methods_by_name["Snapshot"]
    assert pb2.pool.FindMessageTypeByName("google.protobuf.FloatValue")
    # Field numbers as VALD.md gives them (what makes the wire format Vald's).
    fields = {f.name: f.number for f in pb2.pb.Search.Config.DESCRIPTOR.fields}
    assert fields == {"request_id": 1, "num": 2, "radius": 3, "epsilon": 4, "timeout": 5,
                      "ingress_filters": 6, "egress_filters": 7, "min_num": 8,
                      "aggregation_algorithm": 9, "ratio": 10, "nprobe": 11, "edge_size": 12}


def test_ok_paths(pb2, col):
    P = pb2.pb
    x = fill(col, 40)
    q = vec(100)
    res = col(col.search.Search, srch(pb2, q, num=5, request_id="q"))
    assert res.request_id == "q"
    assert [r.id for r in res.results] == [f"o{i}" for i in nearest(x, q, 5)]
    assert [r.id for r in col(col.search.LinearSearch, srch(pb2, q, num=5)).results] == \
        [r.id for r in res.results]
    loc = col(col.insert.Insert, ins(pb2, "new", vec(1)))
    assert (loc.uuid, list(loc.ips)) == ("new", []) and loc.name
    assert col(col.object.Exists, oid(pb2, "new")).id == "new"
    got = col(col.object.GetObject, vreq(pb2, "new"))
    assert got.id == "new" and got.timestamp > 0
    np.testing.assert_array_equal(np.asarray(got.vector, np.float32), vec(1))
    assert col(col.update.Update, upd(pb2, "new", vec(2))).uuid == "new"
    assert col(col.upsert.Upsert, ups(pb2, "new", vec(3))).uuid == "new"
    assert col(col.upsert.Upsert, ups(pb2, "new2", vec(4))).uuid == "new2"
    ts = col(col.object.GetTimestamp, P.Object.TimestampRequest(id=oid(pb2, "o1")))
    assert ts.id == "o1" and ts.timestamp > 0
    res = col(col.search.SearchByID, by_id(pb2, "o7", num=2))
    assert res.results[0].id == "o7" and res.results[0].distance == pytest.approx(0, abs=1e-5)
    multi = col(col.search.MultiSearch, P.Search.MultiRequest(
        requests=[srch(pb2, x[i], num=1) for i in range(3)]))
    assert [r.results[0].id for r in multi.responses] == ["o0", "o1", "o2"]
    assert col(col.index.IndexInfo, P.Empty()).stored == 42
    col(col.agent.CreateIndex, P.Control.CreateIndexRequest(pool_size=100))
    assert col(col.remove.Remove, rm(pb2, "new2")).uuid == "new2"
    listed = list(col.object.StreamListObject(P.Object.List.Request(), metadata=col.md,
                                              timeout=20))
    assert len(listed) == 41 and all(o.WhichOneof("payload") == "vector" for o in listed)
    assert col(col.flush.Flush, P.Flush.Request()).stored == 0


def test_invalid_argument(pb2, col):
    P = pb2.pb
    x = fill(col, 20)
    I = C.INVALID_ARGUMENT
    # Wrong dimension, on insert (the collection exists), update, upsert and search.
    assert col.code(col.insert.Insert, ins(pb2, "w", vec(1, DIM + 1))) == I
    assert col.code(col.insert.Insert, ins(pb2, "w", vec(1, DIM - 1))) == I
    assert col.code(col.update.Update, upd(pb2, "o1", vec(1, DIM + 1))) == I
    assert col.code(col.upsert.Upsert, ups(pb2, "o1", vec(1, 2))) == I
    assert col.code(col.search.Search, srch(pb2, vec(1, DIM + 3))) == I
    assert col.code(col.search.LinearSearch, srch(pb2, vec(1, 1))) == I
    # Empty vectors.
    assert col.code(col.insert.Insert, ins(pb2, "e", [])) == I
    assert col.code(col.upsert.Upsert, ups(pb2, "e", [])) == I
    assert col.code(col.update.Update, upd(pb2, "o1", [])) == I
    assert col.code(col.search.Search, srch(pb2, [])) == I
    # Empty ids.
    assert col.code(col.insert.Insert, ins(pb2, "", vec(1))) == I
    assert col.code(col.remove.Remove, rm(pb2, "")) == I
    assert col.code(col.object.Exists, oid(pb2, "")) == I
    assert col.code(col.object.GetObject, vreq(pb2, "")) == I
    assert col.code(col.search.SearchByID, by_id(pb2, "")) == I
    assert col.code(col.update.UpdateTimestamp, P.Update.TimestampRequest(id="", timestamp=1)) == I
    # Search.Config: num 0, num above --max-k (10000), min_num above num, negative timeout.
    for bad in (dict(num=0), dict(num=10_001), dict(num=2, min_num=3), dict(timeout=-1)):
        assert col.code(col.search.Search, srch(pb2, x[0], **bad)) == I, bad
        assert col.code(col.search.SearchByID, by_id(pb2, "o0", **bad)) == I, bad
    # Empty Multi calls, a bad item in a Multi call (all or nothing), an empty collection name.
    assert col.code(col.insert.MultiInsert, P.Insert.MultiRequest()) == I
    assert col.code(col.search.MultiSearch, P.Search.MultiRequest()) == I
    assert col.code(col.remove.MultiRemove, P.Remove.MultiRequest()) == I
    assert col.code(col.insert.MultiInsert, P.Insert.MultiRequest(
        requests=[ins(pb2, "m1", vec(1)), ins(pb2, "m2", vec(2, 3))])) == I
    assert col.code(col.object.Exists, oid(pb2, "m1")) == C.NOT_FOUND
    assert col.code(col.search.MultiSearch, P.Search.MultiRequest(
        requests=[srch(pb2, x[0]), srch(pb2, x[1], num=0)])) == I
    assert col.code(col.remove.RemoveByTimestamp, P.Remove.TimestampRequest()) == I
    empty_name = col.with_md(collection="")
    assert empty_name.code(empty_name.search.Search, srch(pb2, x[0])) == I
    # A dimension above --max-dimension (10000) for a collection an insert would create.
    fresh = col.on(uid("huge-dim"))
    assert fresh.code(fresh.insert.Insert, ins(pb2, "h", np.zeros(10_001))) == I
    # NaN and infinity; an id twice in one call; an id above 4096 bytes; a collection name
    # above 256 characters; negative timestamps; an unknown RemoveByTimestamp operator.
    nan = np.full(DIM, np.nan)
    assert col.code(col.insert.Insert, ins(pb2, "nan", nan)) == I
    assert col.code(col.search.Search, srch(pb2, np.full(DIM, np.inf))) == I
    assert col.code(col.insert.MultiInsert, P.Insert.MultiRequest(
        requests=[ins(pb2, "twice", vec(1)), ins(pb2, "twice", vec(2))])) == I
    assert col.code(col.insert.Insert, ins(pb2, "i" * 4097, vec(1))) == I
    long_name = col.on("c" * 257)
    assert long_name.code(long_name.insert.Insert, ins(pb2, "a", vec(1))) == I
    assert col.code(col.insert.Insert, ins(pb2, "neg", vec(1), ts=-1)) == I
    assert col.code(col.update.UpdateTimestamp, P.Update.TimestampRequest(
        id="o1", timestamp=-1)) == I
    assert col.code(col.remove.RemoveByTimestamp, P.Remove.TimestampRequest(
        timestamps=[P.Remove.Timestamp(timestamp=1, operator=17)])) == I
    assert col(col.index.IndexInfo, P.Empty()).stored == 20


def test_already_exists(pb2, col):
    P = pb2.pb
    fill(col, 5)
    A = C.ALREADY_EXISTS
    assert col.code(col.insert.Insert, ins(pb2, "o1", vec(50))) == A
    stored = col(col.object.GetObject, vreq(pb2, "o1")).vector
    assert col.code(col.update.Update, P.Update.Request(vector=V(pb2, "o1", stored))) == A
    assert col.code(col.insert.MultiInsert, P.Insert.MultiRequest(
        requests=[ins(pb2, "fresh", vec(51)), ins(pb2, "o2", vec(52))])) == A
    assert col.code(col.object.Exists, oid(pb2, "fresh")) == C.NOT_FOUND
    assert col.code(col.upsert.Upsert, P.Upsert.Request(vector=V(pb2, "o1", stored))) == A
    # skip_strict_exist_check: an overwrite, not an error.
    col(col.update.Update, P.Update.Request(vector=V(pb2, "o1", stored),
                                            config=P.Update.Config(skip_strict_exist_check=True)))
    col(col.upsert.Upsert, P.Upsert.Request(vector=V(pb2, "o1", stored),
                                            config=P.Upsert.Config(skip_strict_exist_check=True)))
    col(col.insert.Insert, ins(pb2, "o1", vec(53), skip=True))
    np.testing.assert_array_equal(
        np.asarray(col(col.object.GetObject, vreq(pb2, "o1")).vector, np.float32), vec(53))
    name = dict(col.md)["x-vecgpu-collection"]
    assert col.code(col.coll.Create, pb2.coll.CreateRequest(name=name, index_type="Flat",
                                                            dimension=DIM)) == A


def test_not_found(pb2, col):
    P = pb2.pb
    x = fill(col, 10)
    N = C.NOT_FOUND
    assert col.code(col.update.Update, upd(pb2, "missing", vec(1))) == N
    assert col.code(col.remove.Remove, rm(pb2, "missing")) == N
    assert col.code(col.object.GetObject, vreq(pb2, "missing")) == N
    assert col.code(col.object.Exists, oid(pb2, "missing")) == N
    assert col.code(col.object.GetTimestamp, P.Object.TimestampRequest(
        id=oid(pb2, "missing"))) == N
    assert col.code(col.update.UpdateTimestamp, P.Update.TimestampRequest(
        id="missing", timestamp=5)) == N
    assert col.code(col.search.SearchByID, by_id(pb2, "missing")) == N
    assert col.code(col.search.LinearSearchByID, by_id(pb2, "missing")) == N
    assert col.code(col.remove.MultiRemove, P.Remove.MultiRequest(
        requests=[rm(pb2, "o1"), rm(pb2, "missing")])) == N
    assert col(col.object.Exists, oid(pb2, "o1")).id == "o1"  # all or nothing
    # min_num above what the search finds: 10 objects, or 2 inside the radius.
    assert col.code(col.search.Search, srch(pb2, x[0], num=20, min_num=11)) == N
    assert len(col(col.search.Search, srch(pb2, x[0], num=20, min_num=10)).results) == 10
    d = sorted(((x - x[0]) ** 2).sum(axis=1))
    radius = float(d[1] + d[2]) / 2
    assert col.code(col.search.Search, srch(pb2, x[0], num=5, min_num=3, radius=radius)) == N
    assert len(col(col.search.Search, srch(pb2, x[0], num=5, min_num=2,
                                           radius=radius)).results) == 2
    # A missing collection named in x-vecgpu-collection.
    gone = col.on(uid("absent"))
    for method, req in ((gone.search.Search, srch(pb2, x[0])),
                        (gone.search.SearchByID, by_id(pb2, "o1")),
                        (gone.object.Exists, oid(pb2, "o1")),
                        (gone.object.GetObject, vreq(pb2, "o1")),
                        (gone.remove.Remove, rm(pb2, "o1")),
                        (gone.update.Update, upd(pb2, "o1", vec(1))),
                        (gone.coll.Describe, pb2.coll.NameRequest(name="no-such")),
                        (gone.coll.Delete, pb2.coll.NameRequest(name="no-such"))):
        assert gone.code(method, req) == N, method
    # Removing every object, then searching: empty results are NOT_FOUND too (Vald).
    col(col.remove.MultiRemove, P.Remove.MultiRequest(
        requests=[rm(pb2, f"o{i}") for i in range(10)]))
    assert col.code(col.search.Search, srch(pb2, x[0])) == N


@pytest.fixture(scope="module")
def big(pb2, raw):
    """A 30,000 x 64 flat collection."""
    r = raw.on(uid("big"))
    x = fill(r, 30_000, d=64, chunk=10_000)
    return r, x


def test_deadline_exceeded(pb2, big):
    r, x = big
    P = pb2.pb
    D = C.DEADLINE_EXCEEDED
    # 1 ns: passed before any backend could answer, whatever the machine.
    assert r.code(r.search.Search, srch(pb2, x[5], timeout=1)) == D
    assert r.code(r.search.SearchByID, by_id(pb2, "o5", timeout=1)) == D
    assert r.code(r.search.LinearSearch, srch(pb2, x[5], timeout=1)) == D
    assert r.code(r.search.MultiSearch, P.Search.MultiRequest(
        requests=[srch(pb2, x[1]), srch(pb2, x[2], timeout=1)])) == D
    # The same queries with time to run; timeout 0 is the server's default.
    assert r(r.search.Search, srch(pb2, x[5], timeout=0)).results[0].id == "o5"
    assert r(r.search.SearchByID, by_id(pb2, "o5")).results[0].id == "o5"


def test_cancelled_stream_leaves_the_server_serving(pb2, big):
    r, x = big
    release = threading.Event()

    def requests():
        yield srch(pb2, x[3], num=1)
        release.wait(10)  # holds the stream open until the test has cancelled it

    call = r.search.StreamSearch(requests(), metadata=r.md, timeout=20)
    try:
        first = next(call)
        assert first.response.results[0].id == "o3"
        call.cancel()
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == C.CANCELLED
    finally:
        release.set()
    assert r(r.search.Search, srch(pb2, x[4], num=1)).results[0].id == "o4"


def test_stream_errors_are_status_entries_and_the_stream_goes_on(pb2, col, raw):
    x = fill(col, 6, prefix="s")
    code = lambda c: c.value[0]  # noqa: E731
    out = col.stream(col.insert.StreamInsert, [
        ins(pb2, "a", vec(1)), ins(pb2, "s0", vec(2)), ins(pb2, "b", vec(3, DIM + 1)),
        ins(pb2, "", vec(4)), ins(pb2, "c", []), ins(pb2, "d", vec(5))])
    assert [o.WhichOneof("payload") for o in out] == \
        ["location", "status", "status", "status", "status", "location"]
    assert [o.status.code for o in out[1:5]] == [code(C.ALREADY_EXISTS)] + \
        [code(C.INVALID_ARGUMENT)] * 3
    assert all(o.status.message for o in out[1:5])
    assert isinstance(out[1].status, pb2.status.Status)
    assert [out[0].location.uuid, out[5].location.uuid] == ["a", "d"]
    res = col.stream(col.search.StreamSearch, [
        srch(pb2, x[0], num=1), srch(pb2, x[1], num=0), srch(pb2, vec(1, 3)),
        srch(pb2, x[2], timeout=1), srch(pb2, x[3], num=10, min_num=10),
        srch(pb2, x[4], num=1, request_id="last")])
    assert [r.WhichOneof("payload") for r in res] == ["response"] + ["status"] * 4 + ["response"]
    assert [r.status.code for r in res[1:5]] == [code(C.INVALID_ARGUMENT)] * 2 + \
        [code(C.DEADLINE_EXCEEDED), code(C.NOT_FOUND)]
    assert res[0].response.results[0].id == "s0"
    assert (res[5].response.request_id, res[5].response.results[0].id) == ("last", "s4")
    res = col.stream(col.search.StreamSearchByID, [
        by_id(pb2, "s1", num=1), by_id(pb2, "nope"), by_id(pb2, ""), by_id(pb2, "s2", num=1)])
    assert [r.WhichOneof("payload") for r in res] == ["response", "status", "status", "response"]
    assert [r.status.code for r in res[1:3]] == [code(C.NOT_FOUND), code(C.INVALID_ARGUMENT)]
    assert [res[0].response.results[0].id, res[3].response.results[0].id] == ["s1", "s2"]
    out = col.stream(col.update.StreamUpdate, [
        upd(pb2, "nope", vec(1)), upd(pb2, "s1", x[1]), upd(pb2, "s1", vec(9))])
    assert [o.WhichOneof("payload") for o in out] == ["status", "status", "location"]
    assert [o.status.code for o in out[:2]] == [code(C.NOT_FOUND), code(C.ALREADY_EXISTS)]
    out = col.stream(col.upsert.StreamUpsert, [ups(pb2, "u", vec(1)), ups(pb2, "u", []),
                                               ups(pb2, "u", vec(2))])
    assert [o.WhichOneof("payload") for o in out] == ["location", "status", "location"]
    assert out[1].status.code == code(C.INVALID_ARGUMENT)
    got = col.stream(col.object.StreamGetObject, [vreq(pb2, "s2"), vreq(pb2, "nope"),
                                                  vreq(pb2, "s3")])
    assert [g.WhichOneof("payload") for g in got] == ["vector", "status", "vector"]
    assert got[1].status.code == code(C.NOT_FOUND) and got[2].vector.id == "s3"
    out = col.stream(col.remove.StreamRemove, [rm(pb2, "s5"), rm(pb2, "s5"), rm(pb2, ""),
                                               rm(pb2, "s4")])
    assert [o.WhichOneof("payload") for o in out] == ["location", "status", "status", "location"]
    assert [o.status.code for o in out[1:3]] == [code(C.NOT_FOUND), code(C.INVALID_ARGUMENT)]
    # A lossy collection: each StreamLinearSearch item UNIMPLEMENTED; a missing one NOT_FOUND.
    pq = uid("pq")
    raw(raw.coll.Create, pb2.coll.CreateRequest(name=pq, index_type="IDMap2,PQ4x4",
                                                 dimension=DIM))
    lossy = raw.on(pq)
    res = lossy.stream(lossy.search.StreamLinearSearch, [srch(pb2, vec(1)), srch(pb2, vec(2))])
    assert [r.status.code for r in res] == [code(C.UNIMPLEMENTED)] * 2
    gone = raw.on(uid("absent"))
    res = gone.stream(gone.search.StreamSearch, [srch(pb2, vec(1)), srch(pb2, vec(2))])
    assert [r.status.code for r in res] == [code(C.NOT_FOUND)] * 2


def test_unimplemented(pb2, raw):
    P = pb2.pb
    U = C.UNIMPLEMENTED
    # vald.v1.Filter (not in proto/): no such service on the server.
    for method, req, resp in (("SearchObject", P.Search.ObjectRequest, P.Search.Response),
                              ("InsertObject", P.Insert.ObjectRequest, P.Object.Location)):
        rpc = raw.channel.unary_unary(f"/vald.v1.Filter/{method}",
                                      request_serializer=req.SerializeToString,
                                      response_deserializer=resp.FromString)
        with pytest.raises(grpc.RpcError) as e:
            rpc(req(), timeout=10)
        assert e.value.code() == U
    # LinearSearch on lossy kinds (exact search impossible), IVF with flat lists is fine.
    for index_type in ("IDMap2,PQ4x4", "HNSW16", "IDMap2,SQ8"):
        name = uid("lossy")
        raw(raw.coll.Create, pb2.coll.CreateRequest(name=name, index_type=index_type,
                                                     dimension=DIM))
        lossy = raw.on(name)
        assert lossy.code(lossy.search.LinearSearch, srch(pb2, vec(1))) == U, index_type
        assert lossy.code(lossy.search.MultiLinearSearch, P.Search.MultiRequest(
            requests=[srch(pb2, vec(1))])) == U, index_type
    # Snapshot without --data-dir.
    assert raw.code(raw.coll.Snapshot, pb2.coll.SnapshotRequest()) == U


def test_huge_messages_within_the_default_limits(pb2, col):
    """12 MB in one MultiInsert: 3x gRPC's default 4 MiB receive limit, within vecgpu's."""
    P = pb2.pb
    x = np.random.default_rng(1).standard_normal((3000, 1024)).astype(np.float32)
    req = P.Insert.MultiRequest(requests=[ins(pb2, f"h{i}", x[i]) for i in range(3000)])
    assert req.ByteSize() > 12_000_000
    assert len(col(col.insert.MultiInsert, req, timeout=60).locations) == 3000
    res = col(col.search.Search, srch(pb2, x[1234], num=1))
    assert res.results[0].id == "h1234"


def test_limits_resource_exhausted_and_invalid_argument(pb2):
    s = Server("--log-level", "warning", "--max-request-bytes", "100000",
               "--max-message-bytes", "200000", "--max-add-vectors", "10",
               "--max-query-vectors", "3", "--max-k", "5")
    try:
        r = Raw.connect(pb2, s.grpc_target).on("lim")
        P = pb2.pb
        fill(r, 10)
        R, I = C.RESOURCE_EXHAUSTED, C.INVALID_ARGUMENT
        assert r.code(r.insert.Insert, ins(pb2, "huge", np.zeros(60_000))) == R  # 240 kB
        assert r.code(r.search.Search, srch(pb2, np.zeros(60_000))) == R
        assert r.code(r.insert.StreamInsert, [ins(pb2, "ok", vec(1)),
                                              ins(pb2, "huge", np.zeros(60_000))]) == R
        # Too many objects or queries in one Multi call; num above --max-k.
        eleven = [ins(pb2, f"n{i}", vec(i)) for i in range(11)]
        assert r.code(r.insert.MultiInsert, P.Insert.MultiRequest(requests=eleven)) == I
        assert r.code(r.upsert.MultiUpsert, P.Upsert.MultiRequest(
            requests=[ups(pb2, f"n{i}", vec(i)) for i in range(11)])) == I
        assert r.code(r.update.MultiUpdate, P.Update.MultiRequest(
            requests=[upd(pb2, f"o{i % 10}", vec(i)) for i in range(11)])) == I
        assert r.code(r.remove.MultiRemove, P.Remove.MultiRequest(
            requests=[rm(pb2, f"o{i % 10}") for i in range(11)])) == I
        four = [srch(pb2, vec(i), num=1) for i in range(4)]
        assert r.code(r.search.MultiSearch, P.Search.MultiRequest(requests=four)) == I
        assert r.code(r.search.MultiSearchByID, P.Search.MultiIDRequest(
            requests=[by_id(pb2, f"o{i}", num=1) for i in range(4)])) == I
        assert r.code(r.search.Search, srch(pb2, vec(1), num=6)) == I
        # Nothing of those was written (but the stream's first item, before the huge one
        # ended the call); the limits themselves are fine.
        assert r(r.object.Exists, oid(pb2, "ok")).id == "ok"
        assert r(r.index.IndexInfo, P.Empty()).stored == 11
        assert len(r(r.search.Search, srch(pb2, vec(1), num=5)).results) == 5
        assert len(r(r.search.MultiSearch, P.Search.MultiRequest(
            requests=four[:3])).responses) == 3
        r.channel.close()
    finally:
        assert s.stop() == 0


def test_auth_off_needs_no_metadata(pb2):
    s = Server("--log-level", "warning")
    try:
        bare = Raw.connect(pb2, s.grpc_target)  # no metadata at all: tenant "default"
        bare(bare.insert.Insert, ins(pb2, "x", vec(1)))
        assert bare(bare.object.Exists, oid(pb2, "x")).id == "x"
        assert [c.name for c in bare(bare.coll.List, pb2.coll.ListRequest()).collections] == \
            ["default"]
        # Without auth a key means nothing: the same tenant whatever is sent.
        keyed = bare.with_md(("authorization", "Bearer anything"))
        assert keyed(keyed.object.Exists, oid(pb2, "x")).id == "x"
        bare.channel.close()
    finally:
        assert s.stop() == 0


def test_auth_and_tenants(pb2):
    s = Server("--enable-auth", "--auth-keys", "ka:ta,kb:tb", "--bind-address", "127.0.0.1",
               "--log-level", "warning")
    try:
        none = Raw.connect(pb2, s.grpc_target)
        P = pb2.pb
        UA = C.UNAUTHENTICATED
        for md in ((), (("authorization", "Bearer nope"),), (("authorization", "Basic ka"),),
                   (("authorization", "ka"),), (("authorization", "Bearer "),)):
            r = none.with_md(*md)
            assert r.code(r.insert.Insert, ins(pb2, "a", vec(1))) == UA, md
            assert r.code(r.search.Search, srch(pb2, vec(1))) == UA, md
            assert r.code(r.coll.List, pb2.coll.ListRequest()) == UA, md
            assert r.code(r.index.IndexInfo, P.Empty()) == UA, md
            assert r.code(r.insert.StreamInsert, [ins(pb2, "a", vec(1))]) == UA, md
        a = none.with_md(("authorization", "Bearer ka"), collection="private")
        b = none.with_md(("authorization", "bearer kb"), collection="private")
        a(a.coll.Create, pb2.coll.CreateRequest(name="private", index_type="IDMap2,Flat",
                                                 dimension=DIM))
        a(a.coll.Create, pb2.coll.CreateRequest(name="a-only", index_type="IDMap2,Flat",
                                                 dimension=DIM))
        a(a.insert.Insert, ins(pb2, "secret", vec(1)))
        # Tenant tb reaches nothing of ta's, by any path.
        N = C.NOT_FOUND
        assert b.code(b.object.Exists, oid(pb2, "secret")) == N
        assert b.code(b.object.GetObject, vreq(pb2, "secret")) == N
        assert b.code(b.search.Search, srch(pb2, vec(1))) == N
        assert b.code(b.search.SearchByID, by_id(pb2, "secret")) == N
        assert b.code(b.remove.Remove, rm(pb2, "secret")) == N
        assert b.code(b.coll.Describe, pb2.coll.NameRequest(name="a-only")) == N
        assert b.code(b.coll.Delete, pb2.coll.NameRequest(name="private")) == N
        assert b(b.index.IndexInfo, P.Empty()).stored == 0
        assert b(b.coll.List, pb2.coll.ListRequest()).collections == []
        # tb's own "private" is another collection.
        b(b.insert.Insert, ins(pb2, "mine", vec(2)))
        assert [c.name for c in b(b.coll.List, pb2.coll.ListRequest()).collections] == \
            ["private"]
        assert sorted(c.name for c in a(a.coll.List, pb2.coll.ListRequest()).collections) == \
            ["a-only", "private"]
        assert a(a.index.IndexInfo, P.Empty()).stored == 1
        assert a(a.search.Search, srch(pb2, vec(2), num=5)).results[0].id == "secret"
        assert a.code(a.object.Exists, oid(pb2, "mine")) == N
        none.channel.close()
    finally:
        assert s.stop() == 0


def _pki(d):
    """A test CA, a server certificate (SAN 127.0.0.1, localhost), a client certificate, and a
    rogue CA with a client certificate of its own; PEM bytes by name."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731

    def cert(cn, key, issuer_cn, issuer_key, ca=False, san=None, usage=None):
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(issuer_cn))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    key_pem = lambda k: k.private_bytes(  # noqa: E731
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    out = {}
    for ca_name in ("ca", "rogue"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        out[f"{ca_name}.pem"] = cert(f"vecgpu {ca_name}", ca_key, f"vecgpu {ca_name}", ca_key,
                                     ca=True).public_bytes(serialization.Encoding.PEM)
        who = ("server", "client") if ca_name == "ca" else ("rogue-client",)
        for w in who:
            k = ec.generate_private_key(ec.SECP256R1())
            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            usage = (ExtendedKeyUsageOID.SERVER_AUTH if w == "server"
                     else ExtendedKeyUsageOID.CLIENT_AUTH)
            c = cert(w, k, f"vecgpu {ca_name}", ca_key, san=san if w == "server" else None,
                     usage=usage)
            out[f"{w}.pem"] = c.public_bytes(serialization.Encoding.PEM)
            out[f"{w}.key"] = key_pem(k)
    for k, v in out.items():
        (d / k).write_bytes(v)
    return out


def _unavailable(pb2, channel):
    """A call on `channel` never gets to the server (the handshake fails)."""
    stub = pb2.object_grpc.ObjectStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Exists(pb2.pb.Object.ID(id="x"), timeout=5)
    channel.close()
    return e.value.code() == C.UNAVAILABLE


def test_tls_with_a_test_ca(pb2, tmp_path):
    pki = _pki(tmp_path)
    tls = ("--grpc-tls-cert", str(tmp_path / "server.pem"), "--grpc-tls-key",
           str(tmp_path / "server.key"))
    ssl = grpc.ssl_channel_credentials
    # Server-side TLS, with auth on: the key travels encrypted.
    s = Server("--log-level", "warning", "--enable-auth", "--auth-keys", "kt:tt",
               "--bind-address", "127.0.0.1", *tls)
    try:
        r = Raw.connect(pb2, s.grpc_target, md=[("authorization", "Bearer kt")],
                        credentials=ssl(root_certificates=pki["ca.pem"]))
        r(r.insert.Insert, ins(pb2, "t", vec(1)))
        assert r(r.object.Exists, oid(pb2, "t")).id == "t"
        anon = r.with_md()
        assert anon.code(anon.object.Exists, oid(pb2, "t")) == C.UNAUTHENTICATED
        r.channel.close()
        assert _unavailable(pb2, grpc.insecure_channel(s.grpc_target))  # plaintext
        assert _unavailable(pb2, grpc.secure_channel(   # a CA that did not sign the server
            s.grpc_target, ssl(root_certificates=pki["rogue.pem"])))
    finally:
        assert s.stop() == 0
    # Mutual TLS: a client certificate signed by the --grpc-tls-client-ca.
    s = Server("--log-level", "warning", *tls, "--grpc-tls-client-ca", str(tmp_path / "ca.pem"))
    try:
        r = Raw.connect(pb2, s.grpc_target, credentials=ssl(
            root_certificates=pki["ca.pem"], private_key=pki["client.key"],
            certificate_chain=pki["client.pem"]))
        r(r.insert.Insert, ins(pb2, "m", vec(1)))
        assert r(r.search.Search, srch(pb2, vec(1), num=1)).results[0].id == "m"
        r.channel.close()
        assert _unavailable(pb2, grpc.secure_channel(  # no client certificate
            s.grpc_target, ssl(root_certificates=pki["ca.pem"])))
        assert _unavailable(pb2, grpc.secure_channel(  # one from another CA
            s.grpc_target, ssl(root_certificates=pki["ca.pem"],
                               private_key=pki["rogue-client.key"],
                               certificate_chain=pki["rogue-client.pem"])))
        assert _unavailable(pb2, grpc.insecure_channel(s.grpc_target))
    finally:
        assert s.stop() == 0


def test_collections_service(pb2, server, raw):
    Cl = pb2.coll
    name = uid("coll")
    made = raw(raw.coll.Create, Cl.CreateRequest(name=name, index_type="IVF8", dimension=16,
                                                 metric="IP", device="cpu"))
    assert (made.name, made.dimension, made.metric, made.kind, made.nlist, made.ntotal) == \
        (name, 16, "IP", "IVF", 8, 0)
    assert not made.is_trained and made.device == "cpu"
    d = raw(raw.coll.Describe, Cl.NameRequest(name=name))
    assert (d.name, d.kind, d.nlist, d.dimension) == (name, "IVF", 8, 16) and d.nprobe >= 1
    flat = uid("coll")
    raw(raw.coll.Create, Cl.CreateRequest(name=flat, index_type="IDMap2,Flat",
                                                 dimension=DIM))
    on_flat = raw.on(flat)
    fill(on_flat, 7)
    d = raw(raw.coll.Describe, Cl.NameRequest(name=flat))
    assert (d.kind, d.ntotal, d.is_trained, d.metric) == ("FLAT", 7, True, "L2")
    assert d.memory_bytes > 0
    listed = {c.name: c for c in raw(raw.coll.List, Cl.ListRequest()).collections}
    assert {name, flat} <= set(listed) and listed[flat].ntotal == 7
    I = C.INVALID_ARGUMENT
    assert raw.code(raw.coll.Create, Cl.CreateRequest(name=uid("c"), index_type="Flat",
                                                      dimension=0)) == I
    assert raw.code(raw.coll.Create, Cl.CreateRequest(name=uid("c"), index_type="NoSuch",
                                                      dimension=DIM)) == I
    assert raw.code(raw.coll.Create, Cl.CreateRequest(name=uid("c"), index_type="Flat",
                                                      dimension=10_001)) == I
    assert raw.code(raw.coll.Create, Cl.CreateRequest(name="", index_type="Flat",
                                                      dimension=DIM)) == I
    assert raw.code(raw.coll.Create, Cl.CreateRequest(name=uid("c"), index_type="Flat",
                                                      dimension=DIM, metric="COSINE")) == I
    assert raw.code(raw.coll.Create, Cl.CreateRequest(name=uid("c"), index_type="Flat",
                                                      dimension=DIM, device="tpu")) == I
    assert raw.code(raw.coll.Describe, Cl.NameRequest(name="")) == I
    # A collection without an id map cannot take Vald's string ids.
    plain = uid("plain")
    raw(raw.coll.Create, Cl.CreateRequest(name=plain, index_type="Flat", dimension=DIM))
    on_plain = raw.on(plain)
    assert on_plain.code(on_plain.insert.Insert, ins(pb2, "a", vec(1))) == \
        C.FAILED_PRECONDITION
    raw(raw.coll.Delete, Cl.NameRequest(name=flat))
    N = C.NOT_FOUND
    assert raw.code(raw.coll.Describe, Cl.NameRequest(name=flat)) == N
    assert raw.code(raw.coll.Delete, Cl.NameRequest(name=flat)) == N
    assert flat not in [c.name for c in raw(raw.coll.List, Cl.ListRequest()).collections]
    assert on_flat.code(on_flat.object.Exists, oid(pb2, "o1")) == N
    assert raw.code(raw.coll.Snapshot, Cl.SnapshotRequest()) == C.UNIMPLEMENTED


def test_collections_snapshot_with_a_data_dir(pb2, tmp_path):
    data = tmp_path / "data"
    s = Server("--log-level", "warning", "--data-dir", str(data))
    try:
        r = Raw.connect(pb2, s.grpc_target).on("snap")
        r(r.coll.Create, pb2.coll.CreateRequest(name="snap", index_type="IDMap2,Flat",
                                                 dimension=DIM))
        fill(r, 12)
        snap = r(r.coll.Snapshot, pb2.coll.SnapshotRequest())
        assert snap.seq > 0 and snap.written >= 1 and snap.bytes > 0 and snap.seconds >= 0
        assert list(data.rglob("*.snap"))
        again = r(r.coll.Snapshot, pb2.coll.SnapshotRequest())
        assert again.seq >= snap.seq and again.written == 0 and again.unchanged >= 1
        # A path-like collection name stays a name: its snapshot lands inside --data-dir.
        odd = r.on("../../escape")
        odd(odd.insert.Insert, ins(pb2, "a", vec(1)))
        r(r.coll.Snapshot, pb2.coll.SnapshotRequest())
        snaps = list(data.rglob("*.snap"))
        assert [p.parent for p in snaps] == [data / "tenants" / "default"] * 2, snaps
        assert not [*tmp_path.rglob("escape*"), *tmp_path.parent.glob("escape*")]
        r.channel.close()
    finally:
        assert s.stop() == 0
    s = Server("--log-level", "warning", "--data-dir", str(data))
    try:
        r = Raw.connect(pb2, s.grpc_target).on("snap")
        assert r(r.coll.Describe, pb2.coll.NameRequest(name="snap")).ntotal == 12
        assert r(r.object.Exists, oid(pb2, "o11")).id == "o11"
        odd = r.on("../../escape")
        assert odd(odd.object.Exists, oid(pb2, "a")).id == "a"
        r.channel.close()
    finally:
        assert s.stop() == 0
