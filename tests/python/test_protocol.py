"""Raw FAISSx protocol tests (pyzmq + msgpack) against the real vecgpu binary.

Covers every action of /work/shared/PROTOCOL.md with its reply fields, the vecgpu binary
extensions, tenant isolation under auth, and hostile or malformed input. Every request that
must fail is followed by a check that nothing changed and that the server still answers.
"""
import struct
import time

import msgpack
import numpy as np
import pytest
import zmq

from conftest import Server, call, fail, ok, rand, raw_call, rows, uid

FLT_MAX = 3.4028234663852886e38
def exact_knn(base, queries, k):
    d = ((queries[:, None, :].astype(np.float64) - base[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1)[:, :k]


def make_flat(srv, d, x=None, index_type="L2", name=None, **auth):
    name = name or uid("flat")
    ok(call(srv, action="create_index", index_id=name, dimension=d, index_type=index_type, **auth))
    if x is not None:
        ok(call(srv, action="add_vectors", index_id=name, vectors=rows(x), **auth))
    return name


def ntotal(srv, name, **auth):
    return ok(call(srv, action="get_index_stats", index_id=name, **auth))["vector_count"]


def snapshot(srv, **auth):
    """Everything list_indexes says about the caller's tenant, for "nothing changed" checks."""
    reply = ok(call(srv, action="list_indexes", **auth))
    return sorted((e["index_id"], e["dimension"], e["vector_count"]) for e in reply["indexes"])


def assert_alive(srv):
    assert ok(call(srv, action="ping"))["message"] == "pong"


def pack_bits(bits):
    """0/1 rows -> packed bytes, LSB-first within each byte (the protocol's binary layout)."""
    bits = np.asarray(bits, dtype=np.uint8)
    return np.packbits(bits, axis=1, bitorder="little").tobytes()


# ---------------------------------------------------------------------------------------------
# ping and envelope


def test_ping_reply_fields(server):
    r = ok(call(server, action="ping"))
    assert r["message"] == "pong"
    assert isinstance(r["time"], float) and r["time"] > 1.6e9
    assert isinstance(r["timestamp"], float) and r["timestamp"] > 1.6e9
    assert isinstance(r["version"], str) and r["version"]


@pytest.mark.parametrize("request_id", ["req-42", 7, 0, 2**40])
def test_request_id_is_echoed_on_success_and_error(server, request_id):
    assert ok(call(server, action="ping", request_id=request_id))["request_id"] == request_id
    bad = fail(call(server, action="no_such_action", request_id=request_id), "Unknown action")
    assert bad["request_id"] == request_id
    bad = fail(call(server, action="search", index_id=uid("absent"), query_vectors=[[1.0]],
                    request_id=request_id))
    assert bad["request_id"] == request_id


def test_request_id_absent_when_not_sent(server):
    assert "request_id" not in ok(call(server, action="ping"))


def test_reply_to_dealer_keeps_router_envelope(server):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect(server.endpoint)
    try:
        s.send_multipart([b"", msgpack.packb({"action": "ping", "request_id": 5})])
        frames = s.recv_multipart()
        assert len(frames) == 2 and frames[0] == b"", frames
        reply = msgpack.unpackb(frames[1])
        assert reply["success"] is True and reply["request_id"] == 5
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# create_index for every index_type form, and a round trip through each


CREATE_CASES = [
    # index_type, expected create_index fields, trained on creation, exact search expected
    ("L2", {"metric_type": "L2"}, True, True),
    ("IP", {"metric_type": "IP"}, True, True),
    ("Flat", {"metric_type": "L2"}, True, True),
    ("IVF8", {"nlist": 8, "metric_type": "L2"}, False, True),
    ("IVF8_IP", {"nlist": 8, "metric_type": "IP"}, False, True),
    ("IVF", {"nlist": 100}, False, True),
    ("IVF8,PQ4x4", {"nlist": 8, "pq_m": 4, "nbits": 4}, False, False),
    ("IVF8,PQ4x4_IP", {"nlist": 8, "nbits": 4, "metric_type": "IP"}, False, False),
    # Scalar quantizers serve at once (exactly) and train themselves once they hold enough.
    ("SQ8", {"sq_bits": 8}, True, False),
    ("SQ8_IP", {"sq_bits": 8, "metric_type": "IP"}, True, False),
    ("IVF8_SQ0", {"nlist": 8, "sq_bits": 8}, False, False),
    ("HNSW16", {"M": 16, "metric_type": "L2"}, True, True),
    ("HNSW16_IP", {"M": 16, "metric_type": "IP"}, True, True),
    ("HNSW", {"M": 32}, True, True),
    ("PQ4x4", {"pq_m": 4, "nbits": 4}, False, False),
    ("PQ4x4_IP", {"pq_m": 4, "nbits": 4, "metric_type": "IP"}, False, False),
    ("PQ", {"pq_m": 8, "nbits": 8}, False, False),
    ("IVF8,Flat", {"nlist": 8}, False, True),          # plain FAISS factory strings
    ("PCA8,Flat", {}, False, False),
    ("IDMap,Flat", {"is_idmap": True}, True, True),
    ("BINARY_FLAT", {}, True, True),
    ("BINARY_IVF4", {"nlist": 4}, False, True),
    ("BINARY_HASH8", {}, True, False),
]


@pytest.mark.parametrize("index_type,fields,trained,exact", CREATE_CASES,
                         ids=[c[0] for c in CREATE_CASES])
def test_create_index_each_type_round_trip(server, index_type, fields, trained, exact):
    d = 16
    name = uid("type")
    meta = {"owner": "tests", "n": 3}
    r = ok(call(server, action="create_index", index_id=name, dimension=d,
                index_type=index_type, metadata=meta))
    assert r["index_id"] == name
    assert r["dimension"] == d
    assert r["type"] == index_type
    assert r["is_trained"] is trained
    assert r["metadata"] == meta
    for key, value in fields.items():
        assert r.get(key) == value, (key, r)

    status = ok(call(server, action="get_index_status", index_id=name))["status"]
    assert status["index_id"] == name and status["dimension"] == d
    assert status["index_type"] == index_type
    assert status["is_trained"] is trained and status["ntotal"] == 0

    binary = index_type.startswith("BINARY")
    if binary:
        base = np.random.default_rng(1).integers(0, 2, (60, d)).astype(np.float32)
        train = np.random.default_rng(2).integers(0, 2, (400, d)).astype(np.float32)
    else:
        base = rand(60, d, 1, normalize=True)
        train = rand(400, d, 2, normalize=True)
    if not trained:
        fail(call(server, action="add_vectors", index_id=name, vectors=rows(base[:2])),
             "train", code="NOT_TRAINED")
        fail(call(server, action="search", index_id=name, query_vectors=rows(base[:2])),
             "train", code="NOT_TRAINED")
        t = ok(call(server, action="train_index", index_id=name, training_vectors=rows(train)))
        assert t["is_trained"] is True and t["trained_with"] == 400
    # IDMap indexes need one caller id per vector; the others number vectors themselves.
    id_of = (lambda i: 1000 + i) if "IDMap" in index_type else (lambda i: i)
    extra = {"ids": [id_of(i) for i in range(60)]} if "IDMap" in index_type else {}
    a = ok(call(server, action="add_vectors", index_id=name, vectors=rows(base), **extra))
    assert a["count"] == 60 and a["total"] == 60 and a["ntotal"] == 60

    params = {}
    if fields.get("nlist"):
        params["nprobe"] = fields["nlist"]
    if "HNSW" in index_type:
        params["efSearch"] = 256
    s = ok(call(server, action="search", index_id=name, query_vectors=rows(base[:5]), k=4,
                params=params))
    assert s["num_queries"] == 5 and s["k"] == 4 and len(s["results"]) == 5
    for q, res in enumerate(s["results"]):
        assert len(res["indices"]) == 4 and len(res["distances"]) == 4
        valid = {id_of(i) for i in range(60)} | {-1}
        assert all(i in valid for i in res["indices"]), res
        assert res["indices"][0] != -1, res  # the query itself is in the index
        if exact:
            if binary:
                assert res["distances"][0] == 0, res  # duplicates of random bits may tie
            else:
                assert res["indices"][0] == id_of(q), (q, res)


def test_create_index_defaults_to_l2_flat(server):
    name = uid("default")
    r = ok(call(server, action="create_index", index_id=name, dimension=3))
    assert r["type"] == "L2" and r["metric_type"] == "L2" and r["is_trained"] is True
    assert "metadata" not in r


def test_create_index_duplicate_name_is_refused(server):
    name = make_flat(server, 4, rand(2, 4, 0))
    before = snapshot(server)
    fail(call(server, action="create_index", index_id=name, dimension=8), name, "exists")
    assert snapshot(server) == before


def test_metric_type_field_overrides(server):
    name = uid("metric")
    r = ok(call(server, action="create_index", index_id=name, dimension=4, index_type="Flat",
                metric_type="IP"))
    assert r["metric_type"] == "IP"
    ok(call(server, action="add_vectors", index_id=name, vectors=[[1, 0, 0, 0], [10, 0, 0, 0]]))
    s = ok(call(server, action="search", index_id=name, query_vectors=[[1, 0, 0, 0]], k=2))
    assert s["results"][0]["indices"] == [1, 0]  # inner product prefers the long vector
    assert s["results"][0]["distances"] == [10.0, 1.0]


def test_idmap_and_idmap2_wrap_a_base_index(server):
    d = 4
    x = rand(3, d, 5)
    base = make_flat(server, d)
    idm = uid("idmap")
    r = ok(call(server, action="create_index", index_id=idm, dimension=d,
                index_type=f"IDMap:{base}"))
    assert r["type"] == f"IDMap:{base}" and r["base_index_id"] == base
    a = ok(call(server, action="add_with_ids", index_id=idm, vectors=rows(x), ids=[100, 200, 300]))
    assert a["count"] == 3 and a["total"] == 3
    s = ok(call(server, action="search", index_id=idm, query_vectors=rows(x), k=1))
    assert [res["indices"][0] for res in s["results"]] == [100, 200, 300]
    v = ok(call(server, action="reconstruct", index_id=idm, id=200))["vector"]
    assert v == rows(x[1])

    idm2 = uid("idmap2")
    base2 = make_flat(server, d)
    r = ok(call(server, action="create_index", index_id=idm2, dimension=d,
                index_type=f"IDMap2:{base2}"))
    assert r["type"] == f"IDMap2:{base2}"
    ok(call(server, action="add_with_ids", index_id=idm2, vectors=rows(x), ids=[7, 8, 9]))
    new = [9.0, 9.0, 9.0, 9.0]
    rep = ok(call(server, action="replace_vector", index_id=idm2, id=8, vector=new))
    assert rep["success"] is True
    assert ok(call(server, action="reconstruct", index_id=idm2, id=8))["vector"] == new
    assert ntotal(server, idm2) == 3
    s = ok(call(server, action="search", index_id=idm2, query_vectors=[new], k=1))
    assert s["results"][0]["indices"] == [8]


def test_idmap_over_ivf_base_is_trained_through_the_base(server):
    d = 8
    base = uid("ivfbase")
    ok(call(server, action="create_index", index_id=base, dimension=d, index_type="IVF4"))
    idm = uid("ivfmap")
    ok(call(server, action="create_index", index_id=idm, dimension=d, index_type=f"IDMap:{base}"))
    x = rand(5, d, 9)
    fail(call(server, action="add_with_ids", index_id=idm, vectors=rows(x), ids=[1, 2, 3, 4, 5]),
         code="NOT_TRAINED")
    ok(call(server, action="train_index", index_id=base, training_vectors=rows(rand(200, d, 10))))
    ok(call(server, action="add_with_ids", index_id=idm, vectors=rows(x), ids=[11, 12, 13, 14, 15]))
    s = ok(call(server, action="search", index_id=idm, query_vectors=rows(x), k=1,
                params={"nprobe": 4}))
    assert [r["indices"][0] for r in s["results"]] == [11, 12, 13, 14, 15]


def test_idmap_factory_prefix_keeps_caller_ids(server):
    name = make_flat(server, 2, index_type="IDMap2,Flat")
    ok(call(server, action="add_with_ids", index_id=name, vectors=[[0, 0], [5, 5]], ids=[42, 7]))
    s = ok(call(server, action="search", index_id=name, query_vectors=[[5, 5]], k=2))
    assert s["results"][0]["indices"] == [7, 42]


# ---------------------------------------------------------------------------------------------
# add / search / params


def test_add_vectors_counts_accumulate(server):
    name = make_flat(server, 4)
    r = ok(call(server, action="add_vectors", index_id=name, vectors=rows(rand(3, 4, 1))))
    assert (r["count"], r["total"], r["ntotal"]) == (3, 3, 3)
    r = ok(call(server, action="add_vectors", index_id=name, vectors=rows(rand(2, 4, 2))))
    assert (r["count"], r["total"], r["ntotal"]) == (2, 5, 5)
    # A 1-D vector is one vector; plain ints are numbers too.
    r = ok(call(server, action="add_vectors", index_id=name, vectors=[1, 2, 3, 4]))
    assert (r["count"], r["total"]) == (1, 6)
    assert ok(call(server, action="reconstruct", index_id=name, id=5))["vector"] == [1, 2, 3, 4]


def test_add_vectors_with_sequential_ids_on_plain_index(server):
    name = make_flat(server, 2, [[0, 0]])
    ok(call(server, action="add_vectors", index_id=name, vectors=[[1, 1]], ids=[1]))
    fail(call(server, action="add_vectors", index_id=name, vectors=[[2, 2]], ids=[50]), "ids")
    assert ntotal(server, name) == 2


def test_add_with_ids_and_batch_add_with_ids(server):
    name = make_flat(server, 3, index_type="IDMap,Flat")
    r = ok(call(server, action="add_with_ids", index_id=name, vectors=[[1, 0, 0], [0, 1, 0]],
                ids=[10, 20]))
    assert r["count"] == 2 and r["total"] == 2
    r = ok(call(server, action="batch_add_with_ids", index_id=name,
                vectors=[[0, 0, 1], [1, 1, 1], [2, 2, 2]], ids=[30, 40, 50], batch_size=2))
    assert (r["count"], r["total"], r["ntotal"]) == (3, 5, 5)
    s = ok(call(server, action="search", index_id=name, query_vectors=[[0, 0, 1], [2, 2, 2]], k=1))
    assert [x["indices"][0] for x in s["results"]] == [30, 50]
    fail(call(server, action="add_with_ids", index_id=name, vectors=[[3, 3, 3]]), "ids")
    assert ntotal(server, name) == 5


def test_search_reply_fields_match_exact_knn(server):
    base = rand(200, 8, 3)
    q = rand(6, 8, 4)
    name = make_flat(server, 8, base)
    s = ok(call(server, action="search", index_id=name, query_vectors=rows(q), k=5))
    assert s["num_queries"] == 6 and s["k"] == 5
    want = exact_knn(base, q, 5)
    for i, res in enumerate(s["results"]):
        assert res["indices"] == want[i].tolist()
        dist = ((base[want[i]] - q[i]) ** 2).sum(1)
        assert np.allclose(res["distances"], dist, rtol=1e-4, atol=1e-4)
        assert res["distances"] == sorted(res["distances"])
    # k defaults to 10
    s = ok(call(server, action="search", index_id=name, query_vectors=rows(q[:1])))
    assert s["k"] == 10 and len(s["results"][0]["indices"]) == 10


def test_missing_neighbours_are_minus_one_and_flt_max(server):
    name = make_flat(server, 2, [[0, 0], [1, 1]])
    s = ok(call(server, action="search", index_id=name, query_vectors=[[0, 0]], k=5))
    res = s["results"][0]
    assert res["indices"] == [0, 1, -1, -1, -1]
    assert res["distances"][2:] == [FLT_MAX] * 3
    assert res["distances"][:2] == [0.0, 2.0]
    # the same in the binary reply: float32 max and int64 -1
    b = ok(call(server, action="search", index_id=name, query_vectors=[[0, 0]], k=5, binary=True))
    dist = np.frombuffer(b["distances"], dtype="<f4")
    idx = np.frombuffer(b["indices"], dtype="<i8")
    assert idx.tolist() == [0, 1, -1, -1, -1]
    assert dist[2:].tolist() == [FLT_MAX] * 3


def test_missing_neighbours_on_inner_product_are_flt_max_too(server):
    name = make_flat(server, 2, [[1, 0], [0, 1]], index_type="IP")
    res = ok(call(server, action="search", index_id=name, query_vectors=[[1, 0]], k=4))
    res = res["results"][0]
    assert res["indices"] == [0, 1, -1, -1]
    assert res["distances"] == [1.0, 0.0, FLT_MAX, FLT_MAX]


def test_pipelined_requests_each_get_their_own_reply(server):
    """Many requests in flight on one DEALER socket: each reply answers its own request."""
    d = 8
    x = rand(500, d, 7)
    name = make_flat(server, d, x)
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect(server.endpoint)
    try:
        n = 300
        for i in range(n):
            s.send_multipart([b"", pack({"action": "search", "index_id": name,
                                         "query_vectors": rows(x[i % 500]), "k": 1,
                                         "request_id": i})])
        seen = set()
        for _ in range(n):
            frames = s.recv_multipart()
            reply = msgpack.unpackb(frames[-1])
            i = ok(reply)["request_id"]
            assert reply["results"][0]["indices"] == [i % 500], reply
            seen.add(i)
        assert seen == set(range(n))
    finally:
        s.close()


def test_search_params_apply_to_that_request_only(server):
    d, nlist = 16, 16
    base = rand(2000, d, 11)
    q = rand(50, d, 12)
    name = uid("ivfparams")
    ok(call(server, action="create_index", index_id=name, dimension=d, index_type=f"IVF{nlist}"))
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(base)))
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(base)))
    before = ok(call(server, action="get_parameter", index_id=name, parameter="nprobe"))
    assert before["param_name"] == "nprobe" and before["param_value"] == 1

    want = exact_knn(base, q, 5).tolist()
    full = ok(call(server, action="search", index_id=name, query_vectors=rows(q), k=5,
                   params={"nprobe": nlist}))
    assert [r["indices"] for r in full["results"]] == want  # nprobe = nlist is exhaustive
    after = ok(call(server, action="get_parameter", index_id=name, parameter="nprobe"))
    assert after["param_value"] == 1
    narrow = ok(call(server, action="search", index_id=name, query_vectors=rows(q), k=5))
    assert [r["indices"] for r in narrow["results"]] != want  # the default nprobe 1 is not

    ok(call(server, action="set_parameter", index_id=name, parameter="nprobe", value=nlist))
    again = ok(call(server, action="search", index_id=name, query_vectors=rows(q), k=5))
    assert [r["indices"] for r in again["results"]] == want
    ok(call(server, action="search", index_id=name, query_vectors=rows(q), k=5,
            params={"nprobe": 1}))
    assert ok(call(server, action="get_parameter", index_id=name,
                   parameter="nprobe"))["param_value"] == nlist


def test_search_params_through_a_pretransform_and_on_binary_ivf(server):
    d = 16
    base = rand(1000, d, 13)
    q = rand(30, d, 14)
    name = uid("pcaivf")
    # PCA to the same dimension is a rotation: with every list probed the search is exact.
    ok(call(server, action="create_index", index_id=name, dimension=d,
            index_type="PCA16,IVF16,Flat"))
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(base)))
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(base)))
    want = exact_knn(base, q, 3).tolist()
    full = ok(call(server, action="search", index_id=name, query_vectors=rows(q), k=3,
                   params={"nprobe": 16}))
    assert [r["indices"] for r in full["results"]] == want
    assert ok(call(server, action="get_parameter", index_id=name,
                   parameter="nprobe"))["param_value"] == 1

    bits = np.random.default_rng(15).integers(0, 2, (500, d)).astype(np.float32)
    b = uid("bivf")
    ok(call(server, action="create_index", index_id=b, dimension=d, index_type="BINARY_IVF8"))
    ok(call(server, action="train_index", index_id=b, training_vectors=rows(bits)))
    ok(call(server, action="add_vectors", index_id=b, vectors=pack_bits(bits)))
    before = ok(call(server, action="get_parameter", index_id=b, parameter="nprobe"))
    s = ok(call(server, action="search", index_id=b, query_vectors=pack_bits(bits[:20]), k=1,
                params={"nprobe": 8}))
    assert all(r["distances"] == [0] for r in s["results"]), s["results"]
    after = ok(call(server, action="get_parameter", index_id=b, parameter="nprobe"))
    assert after["param_value"] == before["param_value"]


@pytest.mark.parametrize("key", ["efSearch", "ef_search", "ef"])
def test_hnsw_ef_search_param_does_not_stick(server, key):
    d = 8
    name = uid("hnswparams")
    ok(call(server, action="create_index", index_id=name, dimension=d, index_type="HNSW8"))
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(rand(100, d, 2))))
    before = ok(call(server, action="get_parameter", index_id=name, parameter="efSearch"))
    ok(call(server, action="search", index_id=name, query_vectors=rows(rand(3, d, 3)), k=3,
            params={key: before["param_value"] + 77}))
    after = ok(call(server, action="get_parameter", index_id=name, parameter="efSearch"))
    assert after["param_value"] == before["param_value"]
    fail(call(server, action="search", index_id=name, query_vectors=rows(rand(1, d, 3)), k=3,
              params={key: 0}), key)


def test_set_and_get_parameter(server):
    name = uid("params")
    ok(call(server, action="create_index", index_id=name, dimension=4, index_type="IVF8"))
    r = ok(call(server, action="set_parameter", index_id=name, parameter="nprobe", value=4))
    assert r["param_name"] == "nprobe" and r["param_value"] == 4
    r = ok(call(server, action="get_parameter", index_id=name, parameter="nprobe"))
    assert r["param_name"] == "nprobe" and r["param_value"] == 4
    fail(call(server, action="set_parameter", index_id=name, parameter="nprobe", value=0), "nprobe")
    fail(call(server, action="set_parameter", index_id=name, parameter="nprobe", value=9), "nprobe")
    fail(call(server, action="set_parameter", index_id=name, parameter="efSearch", value=9),
         "efSearch")
    fail(call(server, action="set_parameter", index_id=name, parameter="bogus", value=1), "bogus")
    assert ok(call(server, action="get_parameter", index_id=name,
                   parameter="nprobe"))["param_value"] == 4

    h = uid("hnswset")
    ok(call(server, action="create_index", index_id=h, dimension=4, index_type="HNSW8"))
    for p, v in [("efSearch", 64), ("efConstruction", 80)]:
        ok(call(server, action="set_parameter", index_id=h, parameter=p, value=v))
        assert ok(call(server, action="get_parameter", index_id=h, parameter=p))["param_value"] == v
    fail(call(server, action="set_parameter", index_id=h, parameter="nprobe", value=2), "nprobe")


def test_hybrid_search_without_filter_is_a_search(server):
    base = rand(50, 4, 21)
    name = make_flat(server, 4, base)
    q = rows(base[:3])
    plain = ok(call(server, action="search", index_id=name, query_vectors=q, k=3))
    hybrid = ok(call(server, action="hybrid_search", index_id=name, query_vectors=q, k=3))
    assert hybrid["results"] == plain["results"]
    assert hybrid["num_queries"] == 3 and hybrid["k"] == 3
    fail(call(server, action="hybrid_search", index_id=name, query_vectors=q, k=3,
              metadata_filter={"tag": "x"}), "metadata")


def test_recluster_index(server):
    d = 8
    base = rand(500, d, 29)
    name = uid("ivf")
    ok(call(server, action="create_index", index_id=name, dimension=d, index_type="IVF4"))
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(base)))
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(base)))
    r = ok(call(server, action="recluster_index", index_id=name, n_clusters=32,
                sample_ratio=0.5))
    assert (r["previous_nlist"], r["new_nlist"], r["ntotal"]) == (4, 32, 500)
    status = ok(call(server, action="get_index_status", index_id=name))["status"]
    assert status["nlist"] == 32 and status["ntotal"] == 500
    # Every vector is still found under its own label when all lists are searched.
    s = ok(call(server, action="search", index_id=name, query_vectors=rows(base[:20]), k=1,
                params={"nprobe": 32}))
    assert [res["indices"][0] for res in s["results"]] == list(range(20))
    # Bad requests change nothing.
    flat = make_flat(server, 2, [[0, 0]])
    before = snapshot(server)
    fail(call(server, action="recluster_index", index_id=name, n_clusters=100000), "n_clusters")
    fail(call(server, action="recluster_index", index_id=name, sample_ratio=2.0), "sample_ratio")
    fail(call(server, action="recluster_index", index_id=flat), "not an IVF index")
    assert snapshot(server) == before
    assert ok(call(server, action="get_index_status", index_id=name))["status"]["nlist"] == 32


def test_transform_info_and_apply_transform(server):
    d = 16
    base = rand(400, d, 23)
    name = uid("pca")
    ok(call(server, action="create_index", index_id=name, dimension=d, index_type="PCA4,Flat"))
    # Before training the transform cannot run.
    info = ok(call(server, action="get_transform_info", index_id=name))
    assert info["is_trained"] is False and info["chain_size"] == 1
    fail(call(server, action="apply_transform", index_id=name, vectors=rows(base[:2])),
         "not trained", code="NOT_TRAINED")
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(base)))
    info = ok(call(server, action="get_transform_info", index_id=name))
    assert info["input_dimension"] == d and info["output_dimension"] == 4
    assert info["transforms"] == [{"type": "PCAMatrix", "input_dim": d, "output_dim": 4,
                                   "is_trained": True}]
    r = ok(call(server, action="apply_transform", index_id=name, vectors=rows(base[:3])))
    out = np.asarray(r["transformed_vectors"], dtype=np.float32)
    assert out.shape == (3, 4) and r["output_dimension"] == 4 and r["input_vectors"] == 3
    # PCA output: the first component carries the most variance over the training set.
    proj = np.asarray(ok(call(server, action="apply_transform", index_id=name,
                              vectors=rows(base)))["transformed_vectors"])
    var = proj.var(axis=0)
    assert var[0] >= var[1] >= var[2] >= var[3] > 0
    fail(call(server, action="apply_transform", index_id=name, vectors=rows(rand(1, 3, 1))),
         "dimension")
    # A plain index has no transform to report or apply.
    flat = make_flat(server, 2, [[0, 0]])
    fail(call(server, action="get_transform_info", index_id=flat), "no vector transform")
    fail(call(server, action="apply_transform", index_id=flat, vectors=[[1, 2]]),
         "no vector transform")


# ---------------------------------------------------------------------------------------------
# range search, training


def test_range_search_results_and_faiss_layout(server):
    name = make_flat(server, 2, [[0, 0], [1, 0], [0, 2], [3, 0]])
    r = ok(call(server, action="range_search", index_id=name, query_vectors=[[0, 0], [10, 10]],
                radius=4.5))
    assert r["num_queries"] == 2 and r["radius"] == 4.5
    q0, q1 = r["results"]
    assert q0["query_index"] == 0 and q1["query_index"] == 1
    assert q0["num_results"] == 3 and q1["num_results"] == 0
    got = sorted(zip(q0["indices"], q0["distances"]))
    assert got == [(0, 0.0), (1, 1.0), (2, 4.0)]
    assert q1["indices"] == [] and q1["distances"] == []
    assert r["lims"] == [0, 3, 3]
    assert sorted(zip(r["indices"], r["distances"])) == got
    b = ok(call(server, action="range_search", index_id=name, query_vectors=[[0, 0], [10, 10]],
                radius=4.5, binary=True))
    assert np.frombuffer(b["lims"], "<i8").tolist() == [0, 3, 3]
    assert sorted(np.frombuffer(b["indices"], "<i8").tolist()) == [0, 1, 2]


def test_range_search_maps_ids_and_works_on_hnsw(server):
    name = make_flat(server, 2, index_type="IDMap,Flat")
    ok(call(server, action="add_with_ids", index_id=name, vectors=[[0, 0], [1, 0], [5, 5]],
            ids=[10, 20, 30]))
    r = ok(call(server, action="range_search", index_id=name, query_vectors=[[0, 0]], radius=2))
    assert sorted(r["results"][0]["indices"]) == [10, 20]
    h = uid("hnswrange")
    ok(call(server, action="create_index", index_id=h, dimension=2, index_type="HNSW8"))
    ok(call(server, action="add_vectors", index_id=h, vectors=[[0, 0], [1, 0], [5, 5]]))
    r = ok(call(server, action="range_search", index_id=h, query_vectors=[[0, 0]], radius=2))
    assert sorted(r["results"][0]["indices"]) == [0, 1] and r["lims"] == [0, 2]


def test_untrained_index_answers_not_trained_until_train_index(server):
    d = 8
    name = uid("untrained")
    ok(call(server, action="create_index", index_id=name, dimension=d, index_type="IVF4"))
    st = ok(call(server, action="get_index_status", index_id=name))["status"]
    assert st["is_trained"] is False
    x = rows(rand(4, d, 1))
    for req in [dict(action="search", query_vectors=x, k=1),
                dict(action="add_vectors", vectors=x),
                dict(action="range_search", query_vectors=x, radius=1.0)]:
        r = fail(call(server, index_id=name, **req), "train", code="NOT_TRAINED")
        assert r["error_details"]  # optional map, present here
    assert ntotal(server, name) == 0
    t = ok(call(server, action="train_index", index_id=name,
                training_vectors=rows(rand(300, d, 2))))
    assert t["is_trained"] is True and t["trained_with"] == 300
    ok(call(server, action="add_vectors", index_id=name, vectors=x))
    assert ok(call(server, action="get_index_status", index_id=name))["status"]["is_trained"]


# ---------------------------------------------------------------------------------------------
# reading vectors back


def test_reconstruct_by_id_and_idx_and_reconstruct_n(server):
    x = rand(5, 4, 31)
    name = make_flat(server, 4, x)
    assert ok(call(server, action="reconstruct", index_id=name, id=3))["vector"] == rows(x[3])
    assert ok(call(server, action="reconstruct", index_id=name, idx=2))["vector"] == rows(x[2])
    fail(call(server, action="reconstruct", index_id=name, id=99), "99")
    fail(call(server, action="reconstruct", index_id=name), "id")
    r = ok(call(server, action="reconstruct_n", index_id=name, start_idx=1, num_vectors=3))
    assert r["vectors"] == rows(x[1:4])
    r = ok(call(server, action="reconstruct_n", index_id=name))  # defaults 0, 10: all five
    assert r["vectors"] == rows(x)
    b = ok(call(server, action="reconstruct", index_id=name, id=1, binary=True))["vector"]
    assert isinstance(b, bytes) and np.frombuffer(b, "<f4").tolist() == rows(x[1])
    b = ok(call(server, action="reconstruct_n", index_id=name, start_idx=0, num_vectors=5,
                binary=True))["vectors"]
    assert isinstance(b, bytes) and b == x.astype("<f4").tobytes()


def test_get_vectors_pages(server):
    x = rand(5, 3, 41)
    name = make_flat(server, 3, x)
    r = ok(call(server, action="get_vectors", index_id=name))
    assert r["vectors"] == rows(x) and r["count"] == 5 and r["start_idx"] == 0 and r["ntotal"] == 5
    r = ok(call(server, action="get_vectors", index_id=name, start_idx=2, limit=2))
    assert r["vectors"] == rows(x[2:4]) and r["count"] == 2 and r["start_idx"] == 2
    assert r["ntotal"] == 5
    b = ok(call(server, action="get_vectors", index_id=name, start_idx=3, binary=True))
    assert b["vectors"] == x[3:].astype("<f4").tobytes() and b["count"] == 2


def test_search_and_reconstruct(server):
    x = rand(4, 3, 51)
    name = make_flat(server, 3, x)
    r = ok(call(server, action="search_and_reconstruct", index_id=name,
                query_vectors=rows(x[:2]), k=6))
    assert r["num_queries"] == 2 and r["k"] == 6
    for res in r["results"]:
        found = [i for i in res["indices"] if i >= 0]
        assert len(found) == 4 and res["indices"][4:] == [-1, -1]
        assert res["distances"][4:] == [FLT_MAX, FLT_MAX]
        assert res["vectors"] == [rows(x[i]) for i in found]


# ---------------------------------------------------------------------------------------------
# changing and describing indexes


def test_remove_ids(server):
    name = make_flat(server, 2, [[0, 0], [1, 1], [2, 2]])
    r = ok(call(server, action="remove_ids", index_id=name, ids=[0, 99]))
    assert r["count"] == 1 and r["ntotal"] == 2
    m = make_flat(server, 2, index_type="IDMap,Flat")
    ok(call(server, action="add_with_ids", index_id=m, vectors=[[0, 0], [1, 1], [2, 2]],
            ids=[10, 20, 30]))
    r = ok(call(server, action="remove_ids", index_id=m, ids=[20, 20, 77]))
    assert r["count"] == 1 and r["ntotal"] == 2
    s = ok(call(server, action="search", index_id=m, query_vectors=[[1, 1]], k=3))
    found = s["results"][0]["indices"]
    assert 20 not in found and sorted(found[:2]) == [10, 30] and found[2] == -1
    fail(call(server, action="reconstruct", index_id=m, id=20), "20")
    assert ok(call(server, action="reconstruct", index_id=m, id=30))["vector"] == [2, 2]


def test_replace_vector_rules(server):
    plain = make_flat(server, 2, [[0, 0]])
    fail(call(server, action="replace_vector", index_id=plain, id=0, vector=[1, 1]), "IDMap")
    m = make_flat(server, 2, index_type="IDMap2,Flat")
    ok(call(server, action="add_with_ids", index_id=m, vectors=[[0, 0]], ids=[5]))
    fail(call(server, action="replace_vector", index_id=m, id=6, vector=[1, 1]), "6")
    fail(call(server, action="replace_vector", index_id=m, id=5, vector=[1, 1, 1]), "dimension")
    assert ok(call(server, action="reconstruct", index_id=m, id=5))["vector"] == [0, 0]
    b = struct.pack("<2f", 3.5, -1.25)
    ok(call(server, action="replace_vector", index_id=m, id=5, vector=b))
    assert ok(call(server, action="reconstruct", index_id=m, id=5))["vector"] == [3.5, -1.25]
    assert ntotal(server, m) == 1


def test_get_index_stats_status_and_info(server):
    name = uid("describe")
    ok(call(server, action="create_index", index_id=name, dimension=3, index_type="IVF2"))
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(rand(100, 3, 1))))
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(rand(4, 3, 2))))
    r = ok(call(server, action="get_index_stats", index_id=name))
    for where in (r, r["stats"]):
        assert where["index_id"] == name and where["dimension"] == 3
        assert where["vector_count"] == 4 and where["type"] == "IVF2"

    st = ok(call(server, action="get_index_status", index_id=name))["status"]
    assert st["index_id"] == name and st["dimension"] == 3 and st["ntotal"] == 4
    assert st["index_type"] == "IVF2" and st["is_trained"] is True

    info0 = ok(call(server, action="get_index_info", index_id=name))
    for key in ("status", "metrics", "configuration", "storage"):
        assert isinstance(info0[key], dict), (key, info0)
    assert info0["status"]["ntotal"] == 4 and info0["configuration"]["nlist"] == 2
    ok(call(server, action="search", index_id=name, query_vectors=rows(rand(2, 3, 3)), k=1))
    info1 = ok(call(server, action="get_index_info", index_id=name))
    assert info1["metrics"]["searches"] == info0["metrics"]["searches"] + 1
    assert info1["metrics"]["vectors_count"] == 4


def test_list_indexes_and_list_indices(server):
    a = make_flat(server, 3, rand(2, 3, 1))
    b = make_flat(server, 5)
    for action in ("list_indexes", "list_indices"):
        r = ok(call(server, action=action))
        entries = {e["index_id"]: e for e in r["indexes"]}
        assert entries[a]["dimension"] == 3 and entries[a]["vector_count"] == 2
        assert entries[b]["dimension"] == 5 and entries[b]["vector_count"] == 0


def test_delete_index(server):
    name = make_flat(server, 3, rand(2, 3, 1))
    r = ok(call(server, action="delete_index", index_id=name))
    assert r["index_id"] == name
    assert name not in [e[0] for e in snapshot(server)]
    fail(call(server, action="search", index_id=name, query_vectors=[[0, 0, 0]], k=1), name)
    fail(call(server, action="delete_index", index_id=name), name)
    ok(call(server, action="create_index", index_id=name, dimension=7))  # the name is free again
    assert ok(call(server, action="get_index_stats", index_id=name))["dimension"] == 7


@pytest.mark.parametrize("action", ["reset", "clear"])
def test_reset_and_clear_keep_training(server, action):
    name = uid(action)
    ok(call(server, action="create_index", index_id=name, dimension=4, index_type="IVF4"))
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(rand(200, 4, 1))))
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(rand(10, 4, 2))))
    r = ok(call(server, action=action, index_id=name))
    assert isinstance(r["message"], str) and r["message"]
    st = ok(call(server, action="get_index_status", index_id=name))["status"]
    assert st["ntotal"] == 0 and st["is_trained"] is True and st["index_type"] == "IVF4"
    x = rand(3, 4, 3)
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(x)))
    s = ok(call(server, action="search", index_id=name, query_vectors=rows(x), k=1,
                params={"nprobe": 4}))
    assert [res["indices"][0] for res in s["results"]] == [0, 1, 2]


def test_merge_indices(server):
    t = make_flat(server, 2, [[0, 0], [1, 1]])
    s1 = make_flat(server, 2, [[2, 2], [3, 3], [4, 4]])
    s2 = make_flat(server, 2, [[5, 5]])
    r = ok(call(server, action="merge_indices", target_index_id=t, source_index_ids=[s1, s2]))
    assert r["ntotal"] == 6
    v = ok(call(server, action="reconstruct_n", index_id=t, start_idx=0, num_vectors=6))["vectors"]
    assert v == [[i, i] for i in range(6)]
    assert ntotal(server, s1) == 3 and ntotal(server, s2) == 1  # sources are left as they were

    odd = make_flat(server, 3, [[1, 2, 3]])
    before = snapshot(server)
    fail(call(server, action="merge_indices", target_index_id=t, source_index_ids=[s1, odd]), odd)
    fail(call(server, action="merge_indices", target_index_id=t,
              source_index_ids=[s1, uid("absent")]), "not found")
    fail(call(server, action="merge_indices", target_index_id=t, source_index_ids=[t]), t)
    fail(call(server, action="merge_indices", target_index_id=t, source_index_ids=[]),
         "source_index_ids")
    assert snapshot(server) == before


def test_merge_indices_keeps_ids_of_idmap_target(server):
    t = make_flat(server, 2, index_type="IDMap,Flat")
    src = make_flat(server, 2, index_type="IDMap,Flat")
    ok(call(server, action="add_with_ids", index_id=src, vectors=[[1, 1], [2, 2]], ids=[70, 80]))
    ok(call(server, action="merge_indices", target_index_id=t, source_index_ids=[src]))
    s = ok(call(server, action="search", index_id=t, query_vectors=[[2, 2]], k=1))
    assert s["results"][0]["indices"] == [80]


def test_merge_never_loses_target_vectors(server):
    """Merging a plain index into an IDMap target must keep every target vector: either all
    vectors end up in the target, or the merge is refused and the target is unchanged."""
    t = make_flat(server, 2, index_type="IDMap,Flat")
    ok(call(server, action="add_with_ids", index_id=t, vectors=[[1, 1], [2, 2]], ids=[0, 1]))
    src = make_flat(server, 2, [[3, 3], [4, 4]])
    r = call(server, action="merge_indices", target_index_id=t, source_index_ids=[src])
    after = ok(call(server, action="get_vectors", index_id=t))
    if r["success"]:
        assert r["ntotal"] == 4, r
        assert sorted(map(tuple, after["vectors"])) == [(1, 1), (2, 2), (3, 3), (4, 4)], after
    else:
        assert after["vectors"] == [[1, 1], [2, 2]] and after["ids"] == [0, 1], after


@pytest.mark.parametrize("direction", ["base-into-wrapper", "wrapper-into-base"])
def test_merge_of_an_index_with_its_own_idmap_wrapper_terminates(direction):
    """An IDMap:{base} wrapper shares its base's storage. Merging one into the other must
    copy the source's vectors once (or refuse): it must not copy its own output forever."""
    srv = Server("--log-level", "warning")
    runaway = None
    try:
        n = 4096  # the merge copies in chunks of 4096
        ok(call(srv, action="create_index", index_id="base", dimension=1))
        ok(call(srv, action="add_vectors", index_id="base",
                vectors=np.arange(n, dtype="<f4").tobytes()))
        ok(call(srv, action="create_index", index_id="wrap", dimension=1,
                index_type="IDMap:base"))
        target, source = ("wrap", "base") if direction == "base-into-wrapper" else ("base", "wrap")
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(srv.endpoint)
        try:
            sock.send(pack({"action": "merge_indices", "target_index_id": target,
                            "source_index_ids": [source]}))
            deadline = time.monotonic() + 10
            reply = None
            while reply is None and time.monotonic() < deadline:
                if sock.poll(2):
                    reply = msgpack.unpackb(sock.recv())
                    break
                count = ntotal(srv, "base")
                if count > 2 * n:
                    runaway = count
                    break
        finally:
            sock.close()
        assert runaway is None, (
            f"merge_indices {source} -> {target} keeps copying its own output: base grew to "
            f"{runaway} vectors from {n} (and would until memory runs out)")
        assert reply is not None, "merge_indices did not answer within 10 s"
        assert ntotal(srv, "base") == (2 * n if reply["success"] else n), reply
    finally:
        if runaway is not None:
            srv.proc.kill()  # a runaway merge would eat memory during a graceful stop
            srv.proc.wait()
        else:
            assert srv.stop() == 0


def test_compute_clustering(server):
    rng = np.random.default_rng(71)
    a = rng.normal(0, 0.1, (20, 2))
    b = rng.normal(100, 0.1, (20, 2))
    x = np.vstack([a, b]).astype(np.float32)
    r = ok(call(server, action="compute_clustering", vectors=rows(x), n_clusters=2, niter=10))
    cents = np.array(r["centroids"])
    assert cents.shape == (2, 2)
    assert sorted(np.round(cents[:, 0] / 100).tolist()) == [0.0, 1.0]
    assign = r["assignments"]
    assert len(assign) == 40 and len(set(assign[:20])) == 1 and len(set(assign[20:])) == 1
    assert assign[0] != assign[20]
    assert sorted(r["cluster_sizes"]) == [20, 20]
    assert isinstance(r["obj"], float) and r["obj"] >= 0
    # the binary float32 form carries the dimension
    rb = ok(call(server, action="compute_clustering", vectors=x.astype("<f4").tobytes(),
                 dimension=2, n_clusters=2, metric_type="L2"))
    assert sorted(rb["cluster_sizes"]) == [20, 20]
    fail(call(server, action="compute_clustering", vectors=rows(x), n_clusters=41), "n_clusters")
    fail(call(server, action="compute_clustering", vectors=rows(x), n_clusters=2,
              metric_type="cosine"), "metric_type")


def test_optimize_index(server):
    name = uid("opt")
    ok(call(server, action="create_index", index_id=name, dimension=4, index_type="IVF20"))
    r = ok(call(server, action="optimize_index", index_id=name, optimization_level=2))
    assert r["optimizations"] and r["optimization_level"] == 2
    assert ok(call(server, action="get_parameter", index_id=name,
                   parameter="nprobe"))["param_value"] == 4
    fail(call(server, action="optimize_index", index_id=name, optimization_level=9),
         "optimization_level")
    flat = make_flat(server, 4)
    assert ok(call(server, action="optimize_index", index_id=flat))["optimizations"]


# ---------------------------------------------------------------------------------------------
# the binary float32 extension


def test_binary_vectors_in_and_out(server):
    d = 8
    x = rand(10, d, 81)
    name = make_flat(server, d)
    r = ok(call(server, action="add_vectors", index_id=name, vectors=x.astype("<f4").tobytes()))
    assert r["count"] == 10 and r["ntotal"] == 10
    q = x[[2, 7]]
    s = ok(call(server, action="search", index_id=name, query_vectors=q.astype("<f4").tobytes(),
                k=3, binary=True))
    assert "results" not in s
    assert s["num_queries"] == 2 and s["k"] == 3
    assert isinstance(s["distances"], bytes) and len(s["distances"]) == 2 * 3 * 4
    assert isinstance(s["indices"], bytes) and len(s["indices"]) == 2 * 3 * 8
    idx = np.frombuffer(s["indices"], "<i8").reshape(2, 3)
    dist = np.frombuffer(s["distances"], "<f4").reshape(2, 3)
    assert idx[:, 0].tolist() == [2, 7] and dist[:, 0].tolist() == [0.0, 0.0]
    assert idx.tolist() == exact_knn(x, q, 3).tolist()
    # the same search as lists gives the same answer
    s2 = ok(call(server, action="search", index_id=name, query_vectors=rows(q), k=3))
    assert [r["indices"] for r in s2["results"]] == idx.tolist()
    rn = ok(call(server, action="reconstruct_n", index_id=name, start_idx=0, num_vectors=10,
                 binary=True))
    assert rn["vectors"] == x.astype("<f4").tobytes()


@pytest.mark.parametrize("nbytes", [1, 31, 33, 4 * 8 * 3 - 4])
def test_binary_length_not_a_multiple_is_refused(server, nbytes):
    name = make_flat(server, 8, rand(2, 8, 1))
    before = snapshot(server)
    fail(call(server, action="add_vectors", index_id=name, vectors=b"\x00" * nbytes),
         "vectors", "bin")
    fail(call(server, action="search", index_id=name, query_vectors=b"\x00" * nbytes, k=1),
         "query_vectors")
    fail(call(server, action="add_vectors", index_id=name, vectors=b""), "vectors")
    assert snapshot(server) == before
    assert_alive(server)


def test_binary_training_vectors(server):
    d = 4
    name = uid("bintrain")
    ok(call(server, action="create_index", index_id=name, dimension=d, index_type="IVF4"))
    t = ok(call(server, action="train_index", index_id=name,
                training_vectors=rand(100, d, 3).astype("<f4").tobytes()))
    assert t["is_trained"] is True and t["trained_with"] == 100


def test_binary_index_bits_are_packed_lsb_first(server):
    d = 16
    name = uid("bits")
    ok(call(server, action="create_index", index_id=name, dimension=d, index_type="BINARY_FLAT"))
    bits = np.zeros((3, d), dtype=np.float32)
    bits[0, 0] = 1      # first bit -> byte 0, value 0x01 when LSB-first
    bits[1, 9] = 1      # bit 9 -> byte 1, value 0x02
    bits[2, :] = 1
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(bits)))
    s = ok(call(server, action="search", index_id=name,
                query_vectors=b"\x01\x00" + b"\x00\x02" + b"\xff\xff", k=1))
    assert [r["indices"][0] for r in s["results"]] == [0, 1, 2]
    assert [r["distances"][0] for r in s["results"]] == [0, 0, 0]
    assert pack_bits(bits) == b"\x01\x00\x00\x02\xff\xff"
    ok(call(server, action="add_vectors", index_id=name, vectors=pack_bits(bits[:1])))
    assert ntotal(server, name) == 4
    fail(call(server, action="add_vectors", index_id=name, vectors=b"\x01\x02\x03"), "vectors")
    fail(call(server, action="add_vectors", index_id=name, vectors=[[2] + [0] * 15]), "bit")
    assert ntotal(server, name) == 4


# ---------------------------------------------------------------------------------------------
# tenant isolation


A = {"api_key": "key-a"}
B = {"api_key": "key-b"}


@pytest.fixture(scope="module")
def tenants(auth_server):
    srv = auth_server
    x = rand(3, 4, 91)
    make_flat(srv, 4, x, name="secret", **A)
    make_flat(srv, 4, x, name="shared", **A)
    make_flat(srv, 8, name="shared", **B)
    make_flat(srv, 4, [[1, 1, 1, 1], [2, 2, 2, 2]], name="b-src", **B)
    make_flat(srv, 4, [[3, 3, 3, 3]], name="b-dst", **B)
    return srv, x


def test_tenants_may_share_an_index_name(tenants):
    srv, x = tenants
    a = ok(call(srv, action="get_index_stats", index_id="shared", **A))
    b = ok(call(srv, action="get_index_stats", index_id="shared", **B))
    assert (a["dimension"], a["vector_count"]) == (4, 3)
    assert (b["dimension"], b["vector_count"]) == (8, 0)
    ok(call(srv, action="add_vectors", index_id="shared", vectors=[[0.5] * 8], **B))
    assert ntotal(srv, "shared", **A) == 3
    assert ntotal(srv, "shared", **B) == 1
    ok(call(srv, action="remove_ids", index_id="shared", ids=[0], **B))
    assert ok(call(srv, action="reconstruct", index_id="shared", id=0, **A))["vector"] == rows(x[0])


def test_list_shows_only_the_callers_tenant(tenants):
    srv, _ = tenants
    a = {e[0] for e in snapshot(srv, **A)}
    b = {e[0] for e in snapshot(srv, **B)}
    assert "secret" in a and "secret" not in b
    assert "b-src" in b and "b-src" not in a
    assert ok(call(srv, action="list_indices", **B))["indexes"]
    assert "secret" not in [e["index_id"] for e in ok(call(srv, action="list_indices",
                                                           **B))["indexes"]]


def _b_requests(target):
    q = [[1.0, 1.0, 1.0, 1.0]]
    return {
        "search": dict(action="search", index_id=target, query_vectors=q, k=1),
        "hybrid_search": dict(action="hybrid_search", index_id=target, query_vectors=q, k=1),
        "range_search": dict(action="range_search", index_id=target, query_vectors=q, radius=99.0),
        "search_and_reconstruct": dict(action="search_and_reconstruct", index_id=target,
                                       query_vectors=q, k=1),
        "add_vectors": dict(action="add_vectors", index_id=target, vectors=q),
        "add_with_ids": dict(action="add_with_ids", index_id=target, vectors=q, ids=[3]),
        "batch_add_with_ids": dict(action="batch_add_with_ids", index_id=target, vectors=q,
                                   ids=[3]),
        "train_index": dict(action="train_index", index_id=target, training_vectors=q),
        "reconstruct": dict(action="reconstruct", index_id=target, id=0),
        "reconstruct_idx": dict(action="reconstruct", index_id=target, idx=0),
        "reconstruct_n": dict(action="reconstruct_n", index_id=target),
        "get_vectors": dict(action="get_vectors", index_id=target),
        "remove_ids": dict(action="remove_ids", index_id=target, ids=[0, 1, 2]),
        "replace_vector": dict(action="replace_vector", index_id=target, id=0, vector=q[0]),
        "get_index_stats": dict(action="get_index_stats", index_id=target),
        "get_index_status": dict(action="get_index_status", index_id=target),
        "get_index_info": dict(action="get_index_info", index_id=target),
        "delete_index": dict(action="delete_index", index_id=target),
        "reset": dict(action="reset", index_id=target),
        "clear": dict(action="clear", index_id=target),
        "set_parameter": dict(action="set_parameter", index_id=target, parameter="nprobe",
                              value=1),
        "get_parameter": dict(action="get_parameter", index_id=target, parameter="ntotal"),
        "optimize_index": dict(action="optimize_index", index_id=target),
        "merge_as_target": dict(action="merge_indices", target_index_id=target,
                                source_index_ids=["b-src"]),
        "merge_as_source": dict(action="merge_indices", target_index_id="b-dst",
                                source_index_ids=[target]),
        "merge_as_second_source": dict(action="merge_indices", target_index_id="b-dst",
                                       source_index_ids=["b-src", target]),
        "idmap_over_it": dict(action="create_index", index_id="b-wrap", dimension=4,
                              index_type=f"IDMap:{target}"),
    }


@pytest.mark.parametrize("case", sorted(_b_requests("x")))
def test_tenant_b_cannot_touch_tenant_a_index(tenants, case):
    srv, x = tenants
    a_before = snapshot(srv, **A)
    b_before = snapshot(srv, **B)
    reply = call(srv, **_b_requests("secret")[case], **B)
    fail(reply)
    # B learns nothing beyond what a name that exists nowhere gives.
    absent = call(srv, **_b_requests("nowhere-xyz")[case], **B)
    fail(absent)
    assert reply["error_code"] == absent["error_code"], (reply, absent)
    assert reply["error"].replace("secret", "nowhere-xyz") == absent["error"], (reply, absent)
    assert snapshot(srv, **A) == a_before
    assert snapshot(srv, **B) == b_before
    assert ok(call(srv, action="reconstruct_n", index_id="secret", **A))["vectors"] == rows(x)


def test_tenant_id_must_match_the_key(tenants):
    srv, _ = tenants
    ok(call(srv, action="list_indexes", api_key="key-b", tenant_id="tenant-b"))
    before = snapshot(srv, **A)
    for req in [dict(action="list_indexes"),
                dict(action="delete_index", index_id="secret"),
                dict(action="search", index_id="secret", query_vectors=[[0, 0, 0, 0]], k=1)]:
        fail(call(srv, api_key="key-b", tenant_id="tenant-a", **req), "Invalid tenant ID",
             code="AUTH_ERROR")
    fail(call(srv, action="list_indexes", api_key="key-b", tenant_id=17), "Invalid tenant ID",
         code="AUTH_ERROR")
    assert snapshot(srv, **A) == before


@pytest.mark.parametrize("auth,message", [
    ({}, "API key required"),
    ({"tenant_id": "tenant-a"}, "API key required"),
    ({"api_key": "key-c"}, "Invalid API key"),
    ({"api_key": "KEY-A"}, "Invalid API key"),
    ({"api_key": 12345}, "Invalid API key"),
    ({"api_key": "k" * 300}, "Invalid API key"),
], ids=["none", "tenant-only", "unknown", "case", "int", "too-long"])
def test_auth_failures(tenants, auth, message):
    srv, _ = tenants
    before = snapshot(srv, **A)
    for req in [dict(action="list_indexes"),
                dict(action="create_index", index_id=uid("noauth"), dimension=4),
                dict(action="delete_index", index_id="secret")]:
        fail(call(srv, **auth, **req), message, code="AUTH_ERROR")
    assert snapshot(srv, **A) == before


def test_ping_needs_no_key(tenants):
    srv, _ = tenants
    assert ok(call(srv, action="ping"))["message"] == "pong"


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.fixture(scope="module")
def victim(server):
    name = "victim"
    ok(call(server, action="create_index", index_id=name, dimension=4, index_type="IDMap,Flat"))
    ok(call(server, action="add_with_ids", index_id=name,
            vectors=[[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]], ids=[1, 2, 3]))
    hnsw = "victim-hnsw"
    ok(call(server, action="create_index", index_id=hnsw, dimension=4, index_type="HNSW8"))
    ok(call(server, action="add_vectors", index_id=hnsw, vectors=[[0, 0, 0, 0], [1, 1, 1, 1]]))
    return name


def pack(obj):
    return msgpack.packb(obj)


def _nested(depth):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


V = "victim"
Q = [[0.0, 0.0, 0.0, 0.0]]
NEW = "never-created"
NAN, INF = float("nan"), float("inf")

BAD_INPUT = [
    # id, payload (dict is packed), substrings the error must contain
    ("garbage-bytes", b"\xc1\xc1", ["Malformed request"]),
    ("empty-frame", b"", ["Malformed request"]),
    ("truncated-map", pack({"action": "ping"})[:-2], ["Malformed request"]),
    ("truncated-float", b"\x82\xa6action\xa4ping\xa1x\xcb\x00\x00", ["Malformed request"]),
    ("array-payload", pack(["action", "ping"]), ["Malformed request", "map"]),
    ("int-payload", pack(42), ["Malformed request", "map"]),
    ("str-payload", pack("ping"), ["Malformed request", "map"]),
    ("nil-payload", pack(None), ["Malformed request", "map"]),
    ("int-key", pack({1: "ping"}), ["Malformed request", "key"]),
    ("mixed-keys", pack({"action": "ping", 2: 3}), ["Malformed request", "key"]),
    ("bin-key", pack({b"action": "ping"}), ["Malformed request", "key"]),
    ("missing-action", {"index_id": V}, ["action"]),
    ("action-int", {"action": 7}, ["action"]),
    ("action-nil", {"action": None}, ["action"]),
    ("action-bin", {"action": b"ping"}, ["action"]),
    ("action-list", {"action": ["ping"]}, ["action"]),
    ("unknown-action", {"action": "drop_everything"}, ["Unknown action"]),
    ("huge-array-len", b"\x81\xa6action\xdd\xff\xff\xff\xff", ["Malformed request"]),
    ("huge-map-len", b"\xdf\xff\xff\xff\xff", ["Malformed request"]),
    ("huge-inner-map", b"\x81\xa6action\xdf\x7f\xff\xff\xff", ["Malformed request"]),
    ("huge-str-len", b"\x81\xa6action\xdb\xff\xff\xff\xff", ["Malformed request"]),
    ("huge-bin-len", b"\x81\xa6action\xc6\xff\xff\xff\xff", ["Malformed request"]),
    ("huge-ext-len", b"\x81\xa6action\xc9\xff\xff\xff\xff\x01", ["Malformed request"]),
    ("huge-array16-len", b"\x81\xa6action\xdc\xff\xff", ["Malformed request"]),
    ("huge-key-len", b"\x81\xdb\x7f\xff\xff\xff", ["Malformed request"]),
    ("deep-nesting", {"action": "ping", "x": _nested(20)}, ["Malformed request"]),
    ("very-deep-nesting", b"\x91" * 100000 + b"\xc0",
     ["Malformed request"]),
    ("deep-map-nesting", b"\x81\xa1x" * 5000 + b"\xc0", ["Malformed request"]),
    ("trailing-bytes", pack({"action": "ping"}) + b"\x00", ["Malformed request", "trailing"]),
    ("two-maps", pack({"action": "ping"}) * 2, ["Malformed request", "trailing"]),
    # create_index
    ("dimension-str", {"action": "create_index", "index_id": NEW, "dimension": "4"},
     ["dimension"]),
    ("dimension-float", {"action": "create_index", "index_id": NEW, "dimension": 4.0},
     ["dimension"]),
    ("dimension-bool", {"action": "create_index", "index_id": NEW, "dimension": True},
     ["dimension"]),
    ("dimension-missing", {"action": "create_index", "index_id": NEW}, ["dimension"]),
    ("dimension-0", {"action": "create_index", "index_id": NEW, "dimension": 0}, ["dimension"]),
    ("dimension-neg", {"action": "create_index", "index_id": NEW, "dimension": -4},
     ["dimension"]),
    ("dimension-10001", {"action": "create_index", "index_id": NEW, "dimension": 10001},
     ["dimension", "10000"]),
    ("dimension-2^64", {"action": "create_index", "index_id": NEW, "dimension": 2**64 - 1},
     ["dimension"]),
    ("index-id-empty", {"action": "create_index", "index_id": "", "dimension": 4}, ["index_id"]),
    ("index-id-long", {"action": "create_index", "index_id": "x" * 257, "dimension": 4},
     ["index_id"]),
    ("index-id-int", {"action": "create_index", "index_id": 5, "dimension": 4}, ["index_id"]),
    ("index-id-missing", {"action": "create_index", "dimension": 4}, ["index_id"]),
    ("index-type-unknown", {"action": "create_index", "index_id": NEW, "dimension": 4,
                            "index_type": "NOPE99"}, ["index_type"]),
    ("index-type-int", {"action": "create_index", "index_id": NEW, "dimension": 4,
                        "index_type": 3}, ["index_type"]),
    ("index-type-empty", {"action": "create_index", "index_id": NEW, "dimension": 4,
                          "index_type": ""}, ["index_type"]),
    ("binary-dim-not-8", {"action": "create_index", "index_id": NEW, "dimension": 12,
                          "index_type": "BINARY_FLAT"}, ["dimension"]),
    ("idmap-missing-base", {"action": "create_index", "index_id": NEW, "dimension": 4,
                            "index_type": "IDMap:nope-base"}, ["nope-base"]),
    ("idmap-dim-mismatch", {"action": "create_index", "index_id": NEW, "dimension": 5,
                            "index_type": f"IDMap:{V}"}, ["dimension"]),
    ("metric-unknown", {"action": "create_index", "index_id": NEW, "dimension": 4,
                        "metric_type": "cosine"}, ["metric"]),
    ("duplicate-name", {"action": "create_index", "index_id": V, "dimension": 9}, ["exists"]),
    # vectors
    ("vectors-string-component", {"action": "add_with_ids", "index_id": V,
                                  "vectors": [[0, 0, "1", 0]], "ids": [9]}, ["vectors"]),
    ("vectors-nil-component", {"action": "add_with_ids", "index_id": V,
                               "vectors": [[0, 0, None, 0]], "ids": [9]}, ["vectors"]),
    ("vectors-bool-component", {"action": "add_with_ids", "index_id": V,
                                "vectors": [[0, 0, True, 0]], "ids": [9]}, ["vectors"]),
    ("vectors-string", {"action": "add_with_ids", "index_id": V, "vectors": "0,0,0,0",
                        "ids": [9]}, ["vectors"]),
    ("vectors-map", {"action": "add_with_ids", "index_id": V, "vectors": {"a": 1},
                     "ids": [9]}, ["vectors"]),
    ("vectors-empty", {"action": "add_with_ids", "index_id": V, "vectors": [], "ids": []},
     ["vectors"]),
    ("vectors-3d", {"action": "add_with_ids", "index_id": V, "vectors": [[[0, 0, 0, 0]]],
                    "ids": [9]}, ["vectors"]),
    ("vectors-ragged", {"action": "add_with_ids", "index_id": V,
                        "vectors": [[0, 0, 0, 0], [0, 0, 0]], "ids": [9, 10]}, ["vectors"]),
    ("vectors-row-not-array", {"action": "add_with_ids", "index_id": V,
                               "vectors": [[0, 0, 0, 0], 5], "ids": [9, 10]}, ["vectors"]),
    ("vectors-wrong-dim", {"action": "add_with_ids", "index_id": V, "vectors": [[0, 0, 0]],
                           "ids": [9]}, ["dimension"]),
    ("vectors-wrong-dim-1d", {"action": "add_vectors", "index_id": V, "vectors": [0, 0, 0, 0, 0],
                              "ids": [9]}, ["dimension"]),
    ("vectors-nan", {"action": "add_with_ids", "index_id": V, "vectors": [[0, NAN, 0, 0]],
                     "ids": [9]}, ["vectors", "finite"]),
    ("vectors-inf", {"action": "add_with_ids", "index_id": V, "vectors": [[0, 0, INF, 0]],
                     "ids": [9]}, ["vectors", "finite"]),
    ("vectors-neg-inf", {"action": "add_with_ids", "index_id": V, "vectors": [[-INF, 0, 0, 0]],
                         "ids": [9]}, ["vectors", "finite"]),
    ("vectors-huge-double", {"action": "add_with_ids", "index_id": V,
                             "vectors": [[1e300, 0, 0, 0]], "ids": [9]}, ["vectors"]),
    ("vectors-bin-nan", {"action": "add_with_ids", "index_id": V,
                         "vectors": struct.pack("<4f", 0, NAN, 0, 0), "ids": [9]},
     ["vectors", "finite"]),
    ("vectors-bin-inf", {"action": "add_with_ids", "index_id": V,
                         "vectors": struct.pack("<4f", 0, 0, 0, INF), "ids": [9]},
     ["vectors", "finite"]),
    ("vectors-missing", {"action": "add_vectors", "index_id": V}, ["vectors"]),
    ("too-many-vectors", {"action": "add_vectors", "index_id": V,
                          "vectors": [[0.0, 0.0, 0.0, 0.0]] * 10001}, ["vectors", "10000"]),
    ("too-many-vectors-bin", {"action": "add_vectors", "index_id": V,
                              "vectors": b"\x00" * (16 * 10001)}, ["vectors", "10000"]),
    # ids
    ("ids-strings", {"action": "add_with_ids", "index_id": V, "vectors": [[0, 0, 0, 0]],
                     "ids": ["9"]}, ["ids"]),
    ("ids-floats", {"action": "add_with_ids", "index_id": V, "vectors": [[0, 0, 0, 0]],
                    "ids": [9.0]}, ["ids"]),
    ("ids-not-array", {"action": "add_with_ids", "index_id": V, "vectors": [[0, 0, 0, 0]],
                       "ids": 9}, ["ids"]),
    ("ids-count", {"action": "add_with_ids", "index_id": V, "vectors": [[0, 0, 0, 0]],
                   "ids": [9, 10]}, ["ids"]),
    ("ids-negative", {"action": "add_with_ids", "index_id": V, "vectors": [[0, 0, 0, 0]],
                      "ids": [-5]}, ["ids"]),
    ("ids-duplicate", {"action": "add_with_ids", "index_id": V,
                       "vectors": [[0, 0, 0, 0], [1, 0, 0, 0]], "ids": [9, 9]}, ["ids"]),
    ("ids-too-big", {"action": "add_with_ids", "index_id": V, "vectors": [[0, 0, 0, 0]],
                     "ids": [2**64 - 1]}, ["ids"]),
    ("remove-ids-strings", {"action": "remove_ids", "index_id": V, "ids": ["1"]}, ["ids"]),
    ("batch-size-0", {"action": "batch_add_with_ids", "index_id": V, "vectors": [[0, 0, 0, 0]],
                      "ids": [9], "batch_size": 0}, ["batch_size"]),
    # search
    ("k-float", {"action": "search", "index_id": V, "query_vectors": Q, "k": 5.0}, ["k"]),
    ("k-str", {"action": "search", "index_id": V, "query_vectors": Q, "k": "5"}, ["k"]),
    ("k-0", {"action": "search", "index_id": V, "query_vectors": Q, "k": 0}, ["k"]),
    ("k-neg", {"action": "search", "index_id": V, "query_vectors": Q, "k": -1}, ["k"]),
    ("k-10001", {"action": "search", "index_id": V, "query_vectors": Q, "k": 10001},
     ["k", "10000"]),
    ("query-nan", {"action": "search", "index_id": V, "query_vectors": [[NAN, 0, 0, 0]], "k": 1},
     ["query_vectors", "finite"]),
    ("query-inf", {"action": "search", "index_id": V, "query_vectors": [[0, INF, 0, 0]], "k": 1},
     ["query_vectors", "finite"]),
    ("query-wrong-dim", {"action": "search", "index_id": V, "query_vectors": [[0, 0]], "k": 1},
     ["query_vectors", "dimension"]),
    ("query-missing", {"action": "search", "index_id": V, "k": 1}, ["query_vectors"]),
    ("params-not-map", {"action": "search", "index_id": V, "query_vectors": Q, "params": [1]},
     ["params"]),
    ("params-nprobe-str", {"action": "search", "index_id": V, "query_vectors": Q,
                           "params": {"nprobe": "4"}}, ["nprobe"]),
    ("params-nprobe-0", {"action": "search", "index_id": V, "query_vectors": Q,
                         "params": {"nprobe": 0}}, ["nprobe"]),
    ("binary-not-bool", {"action": "search", "index_id": V, "query_vectors": Q, "binary": 1},
     ["binary"]),
    ("search-missing-index", {"action": "search", "index_id": NEW, "query_vectors": Q},
     [NEW, "not found"]),
    ("range-radius-nan", {"action": "range_search", "index_id": V, "query_vectors": Q,
                          "radius": NAN}, ["radius"]),
    ("range-radius-inf", {"action": "range_search", "index_id": V, "query_vectors": Q,
                          "radius": INF}, ["radius"]),
    ("range-radius-str", {"action": "range_search", "index_id": V, "query_vectors": Q,
                          "radius": "1"}, ["radius"]),
    ("range-radius-missing", {"action": "range_search", "index_id": V, "query_vectors": Q},
     ["radius"]),
    # training, reading, parameters
    ("train-nan", {"action": "train_index", "index_id": V, "training_vectors": [[NAN, 0, 0, 0]]},
     ["training_vectors", "finite"]),
    ("reconstruct-id-str", {"action": "reconstruct", "index_id": V, "id": "1"}, ["id"]),
    ("reconstruct-id-neg", {"action": "reconstruct", "index_id": V, "id": -1}, ["id"]),
    ("reconstruct-n-neg", {"action": "reconstruct_n", "index_id": V, "num_vectors": -1},
     ["num_vectors"]),
    ("reconstruct-n-start-past", {"action": "reconstruct_n", "index_id": V, "start_idx": 50},
     ["start_idx"]),
    ("get-vectors-start-str", {"action": "get_vectors", "index_id": V, "start_idx": "0"},
     ["start_idx"]),
    ("replace-nan", {"action": "replace_vector", "index_id": V, "id": 1,
                     "vector": [NAN, 0, 0, 0]}, ["vector", "finite"]),
    ("replace-two-vectors", {"action": "replace_vector", "index_id": V, "id": 1,
                             "vector": [[0, 0, 0, 0], [1, 1, 1, 1]]}, ["vector"]),
    ("set-param-value-str", {"action": "set_parameter", "index_id": "victim-hnsw",
                             "parameter": "efSearch", "value": "5"}, ["value"]),
    ("set-param-value-nan", {"action": "set_parameter", "index_id": "victim-hnsw",
                             "parameter": "efSearch", "value": NAN}, ["value"]),
    ("set-param-missing", {"action": "set_parameter", "index_id": "victim-hnsw", "value": 5},
     ["parameter"]),
    ("merge-sources-str", {"action": "merge_indices", "target_index_id": V,
                           "source_index_ids": "victim-hnsw"}, ["source_index_ids"]),
    ("merge-target-missing", {"action": "merge_indices", "source_index_ids": [V]},
     ["target_index_id"]),
    ("cluster-n-0", {"action": "compute_clustering", "vectors": [[0, 0], [1, 1]],
                     "n_clusters": 0}, ["n_clusters"]),
    ("cluster-nan", {"action": "compute_clustering", "vectors": [[0, NAN], [1, 1]],
                     "n_clusters": 1}, ["vectors", "finite"]),
    ("cluster-bin-no-dim", {"action": "compute_clustering", "vectors": b"\x00" * 16,
                            "n_clusters": 1}, ["vectors"]),
]


@pytest.mark.parametrize("payload,needles", [c[1:] for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_and_changes_nothing(server, victim, payload, needles):
    before = snapshot(server)
    hnsw_ef = ok(call(server, action="get_parameter", index_id="victim-hnsw",
                      parameter="efSearch"))["param_value"]
    data = payload if isinstance(payload, (bytes, bytearray)) else pack(payload)
    fail(raw_call(server.endpoint, data), *needles)
    assert_alive(server)
    assert snapshot(server) == before
    assert ok(call(server, action="get_parameter", index_id="victim-hnsw",
                   parameter="efSearch"))["param_value"] == hnsw_ef
    v = ok(call(server, action="get_vectors", index_id=V))
    assert v["vectors"] == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]] and v["ids"] == [1, 2, 3]


def test_bad_reply_is_a_plain_error_map(server):
    r = raw_call(server.endpoint, b"\xc1", raw=True)
    reply = msgpack.unpackb(r)
    assert set(reply) >= {"success", "error", "error_code"}
    assert reply["error_code"] == "INVALID_ARGUMENT" and isinstance(reply["error_details"], dict)


def _req_socket(endpoint, timeout_ms=10000):
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(endpoint)
    return s


def test_two_frame_message_from_req(server, victim):
    before = snapshot(server)
    s = _req_socket(server.endpoint)
    try:
        s.send_multipart([pack({"action": "delete_index", "index_id": V}),
                          pack({"action": "ping"})])
        reply = msgpack.unpackb(s.recv())
        fail(reply, "Malformed request", "frame")
    finally:
        s.close()
    assert snapshot(server) == before
    assert_alive(server)


@pytest.mark.parametrize("frames", [
    [b"", pack({"action": "delete_index", "index_id": V}), pack({"action": "ping"})],
    [pack({"action": "delete_index", "index_id": V})],  # no empty delimiter
    [b"", b"", pack({"action": "delete_index", "index_id": V})],
], ids=["two-payloads", "no-delimiter", "two-delimiters"])
def test_bad_frames_from_dealer(server, victim, frames):
    before = snapshot(server)
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect(server.endpoint)
    try:
        s.send_multipart(frames)
        got = s.recv_multipart()
        assert got[0] == b"" and len(got) == 2, got
        fail(msgpack.unpackb(got[1]), "Malformed request")
        # the same socket still gets a normal answer
        s.send_multipart([b"", pack({"action": "ping"})])
        got = s.recv_multipart()
        assert msgpack.unpackb(got[-1])["message"] == "pong"
    finally:
        s.close()
    assert snapshot(server) == before


def test_server_keeps_answering_after_a_burst_of_garbage(server, victim):
    before = snapshot(server)
    for payload in [b"\xc1", b"\xdf\xff\xff\xff\xff", pack([1]), b"\x91" * 5000] * 10:
        fail(raw_call(server.endpoint, payload), "Malformed request")
    assert snapshot(server) == before
    assert_alive(server)


# ---------------------------------------------------------------------------------------------
# degenerate factory parameters: refused or served, never fatal


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def watched_call(srv, request, timeout=5.0, max_rss=512 << 20):
    """One round trip that notices at once when the server process dies or its memory runs
    away. Returns the reply, or raises AssertionError naming the request and what happened."""
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(srv.endpoint)
    try:
        s.send(pack(request))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if s.poll(20):
                return msgpack.unpackb(s.recv())
            rc = srv.proc.poll()
            if rc is not None:
                raise AssertionError(f"{request['action']} killed the server (exit {rc}, "
                                     f"signal {-rc if rc < 0 else None})")
            rss = rss_bytes(srv.proc.pid)
            if rss > max_rss:
                raise AssertionError(f"{request['action']} is still running and the server "
                                     f"has grown to {rss >> 20} MiB")
        raise AssertionError(f"{request['action']} got no reply within {timeout} s "
                             f"(server alive: {srv.proc.poll() is None})")
    finally:
        s.close()


HOSTILE_TYPES = ["PQ0", "PQ4x0", "PQ4x65", "IVF0", "IVF0_SQ0", "IVF0,PQ2", "IVF4,PQ0",
                 "IVF4,PQ2x0", "HNSW0", "HNSW1", "IVF4_HNSW0,Flat", "OPQ0,Flat", "NSG0",
                 "RQ1x0"]


@pytest.mark.parametrize("index_type", HOSTILE_TYPES)
def test_degenerate_index_type_never_takes_the_server_down(index_type):
    """create_index accepts plain FAISS factory strings; parameters such as M=0, nlist=0 or
    nbits=0 must be refused with an error naming index_type, or served; one client's
    request must never crash or wedge the server for everyone."""
    d = 4
    x = rows(rand(300, d, 3))
    srv = Server("--log-level", "error")
    try:
        r = watched_call(srv, dict(action="create_index", index_id="h", dimension=d,
                                   index_type=index_type))
        if r["success"]:
            for req in [dict(action="train_index", index_id="h", training_vectors=x),
                        dict(action="add_vectors", index_id="h", vectors=x[:20]),
                        dict(action="search", index_id="h", query_vectors=x[:2], k=3),
                        dict(action="range_search", index_id="h", query_vectors=x[:1],
                             radius=1.0),
                        dict(action="reconstruct", index_id="h", id=0)]:
                r = watched_call(srv, req)
                assert isinstance(r.get("success"), bool), r
        else:
            fail(r, "index_type")
        assert watched_call(srv, dict(action="ping"))["success"] is True
    finally:
        srv.proc.kill()  # not a graceful stop: a runaway request would keep eating memory
        srv.proc.wait()


# ---------------------------------------------------------------------------------------------
# size limits of a separately configured server


@pytest.fixture(scope="module")
def small_server():
    srv = Server("--max-request-bytes", "100000", "--max-add-vectors", "5", "--max-k", "7",
                 "--max-dimension", "64", "--log-level", "warning")
    yield srv
    assert srv.stop() == 0


def padded_ping(total):
    """A valid {"action": "ping", "pad": bin} message of exactly `total` bytes."""
    head = pack({"action": "ping", "pad": b""})
    n = total - len(head) - 3  # the bin8 header (2 bytes) becomes a bin32 header (5 bytes)
    msg = pack({"action": "ping", "pad": b"\x00" * n})
    assert len(msg) == total, (len(msg), total)
    return msg


def test_request_at_the_limit_is_served(small_server):
    assert ok(raw_call(small_server.endpoint, padded_ping(100000)))["message"] == "pong"


def test_oversized_request_gets_an_error_reply(small_server):
    fail(raw_call(small_server.endpoint, padded_ping(200000)), "100000")
    fail(raw_call(small_server.endpoint, padded_ping(100001)), "100000")
    assert_alive(small_server)


def test_configured_limits_apply(small_server):
    srv = small_server
    name = make_flat(srv, 4)
    fail(call(srv, action="add_vectors", index_id=name, vectors=[[0, 0, 0, 0]] * 6),
         "vectors", "5")
    assert ntotal(srv, name) == 0
    ok(call(srv, action="add_vectors", index_id=name, vectors=[[0, 0, 0, 0]] * 5))
    fail(call(srv, action="search", index_id=name, query_vectors=Q, k=8), "k", "7")
    ok(call(srv, action="search", index_id=name, query_vectors=Q, k=7))
    fail(call(srv, action="create_index", index_id=uid("big"), dimension=65), "dimension", "64")
    assert ntotal(srv, name) == 5


def test_message_above_the_socket_cap_does_not_stop_the_server():
    srv = Server("--max-request-bytes", "100000", "--max-message-bytes", "150000",
                 "--log-level", "warning")
    try:
        # Between the request limit and the socket cap: an error reply.
        fail(raw_call(srv.endpoint, padded_ping(120000)), "100000")
        # Above the socket cap: ZeroMQ may drop the connection; an error reply is fine too.
        big = _req_socket(srv.endpoint, timeout_ms=1500)
        try:
            big.send(padded_ping(400000))
            try:
                fail(msgpack.unpackb(big.recv()))
            except zmq.Again:
                pass
        finally:
            big.close()
        # Other clients are served as before.
        for _ in range(3):
            assert_alive(srv)
        name = make_flat(srv, 2, [[1, 2]])
        assert ntotal(srv, name) == 1
    finally:
        assert srv.stop() == 0
