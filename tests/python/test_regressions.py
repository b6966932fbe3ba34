"""Regression tests over the wire against the real vecgpu binary, one per fixed defect.

Each test fails on a server that still has the defect named in its docstring.
"""
import threading
import time

import msgpack
import numpy as np
import pytest

from conftest import Server, call, fail, ok, rand, raw_call, rows, uid

def bits(n, d, seed):
    return np.random.default_rng(seed).integers(0, 2, (n, d)).astype(np.float32)


def pack_bits(b):
    return np.packbits(np.asarray(b, dtype=np.uint8), axis=1, bitorder="little").tobytes()


def create(srv, d, index_type="L2", name=None):
    name = name or uid()
    ok(call(srv, action="create_index", index_id=name, dimension=d, index_type=index_type))
    return name


def ntotal(srv, name):
    return ok(call(srv, action="get_index_stats", index_id=name))["vector_count"]


def reconstruct(srv, name, i):
    return ok(call(srv, action="reconstruct", index_id=name, id=i))["vector"]


def labels(srv, name, queries, k, **extra):
    s = ok(call(srv, action="search", index_id=name, query_vectors=rows(queries), k=k, **extra))
    return np.array([r["indices"] for r in s["results"]])


def exact_knn(base, queries, k):
    b, q = base.astype(np.float64), queries.astype(np.float64)
    return np.argsort((b ** 2).sum(1)[None, :] - 2 * q @ b.T, axis=1)[:, :k]


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def assert_alive(srv):
    assert ok(call(srv, action="ping"))["message"] == "pong"


def test_binary_flat_reconstruct_n_returns_the_added_rows(server):
    """Defect 1: reconstruct_n/get_vectors on a binary index returned wrong rows."""
    b = bits(3, 64, 1)
    name = create(server, 64, "BINARY_FLAT")
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(b)))
    r = ok(call(server, action="reconstruct_n", index_id=name, start_idx=0, num_vectors=3))
    assert r["vectors"] == rows(b)
    g = ok(call(server, action="get_vectors", index_id=name))
    assert g["vectors"] == rows(b)


def test_binary_flat_large_reconstruct_n_does_not_overflow(server):
    """Defect 1: reconstruct_n of 1,000 binary vectors of 8192 bits overflowed its buffer."""
    d, n = 8192, 1000
    b = bits(n, d, 2)
    name = create(server, d, "BINARY_FLAT")
    ok(call(server, action="add_vectors", index_id=name, vectors=pack_bits(b)))
    assert ntotal(server, name) == n
    r = ok(call(server, action="reconstruct_n", index_id=name, start_idx=0, num_vectors=n,
                binary=True))
    got = np.frombuffer(r["vectors"], dtype="<f4").reshape(-1, d)
    assert got.shape == (n, d)
    assert np.array_equal(got, b)
    assert_alive(server)


def test_binary_ivf_get_vectors_returns_the_added_rows(server):
    """Defect 1: get_vectors on a BINARY_IVF index returned wrong rows."""
    d = 64
    name = create(server, d, "BINARY_IVF8")
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(bits(400, d, 3))))
    b = bits(20, d, 4)
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(b)))
    g = ok(call(server, action="get_vectors", index_id=name))
    ids = g.get("ids", list(range(len(g["vectors"]))))
    assert sorted(ids) == list(range(20))
    for i, v in zip(ids, g["vectors"]):
        assert v == rows(b[i]), i
    for i in range(20):
        assert reconstruct(server, name, i) == rows(b[i]), i


def test_binary_ivf_labels_stay_distinct_after_remove_and_add(server):
    """Defect 2: BINARY_IVF labels collided after remove_ids followed by add."""
    d = 32
    name = create(server, d, "BINARY_IVF4")
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(bits(300, d, 5))))
    b = bits(7, d, 6)
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(b[:5])))
    assert ok(call(server, action="remove_ids", index_id=name, ids=[1]))["count"] == 1
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(b[5:])))
    g = ok(call(server, action="get_vectors", index_id=name))
    assert sorted(g["ids"]) == [0, 2, 3, 4, 5, 6], g["ids"]
    assert len(set(g["ids"])) == len(g["ids"])
    for i, v in zip(g["ids"], g["vectors"]):
        assert v == rows(b[i]), i
    for i in [0, 2, 3, 4, 5, 6]:
        assert reconstruct(server, name, i) == rows(b[i]), i


def test_two_idmap_wrappers_over_one_base_keep_their_own_labels(server):
    """Defect 3: two IDMap wrappers over one base mixed up labels after remove and reset."""
    d = 4
    base = create(server, d, "L2")
    wa = create(server, d, f"IDMap:{base}")
    wb = create(server, d, f"IDMap:{base}")
    xa, xb = rand(3, d, 7), rand(3, d, 8) + 10
    ok(call(server, action="add_with_ids", index_id=wa, vectors=rows(xa), ids=[1, 2, 3]))
    ok(call(server, action="add_with_ids", index_id=wb, vectors=rows(xb), ids=[100, 200, 300]))
    ok(call(server, action="remove_ids", index_id=wa, ids=[1, 2]))
    found = labels(server, wb, xb, 1)
    assert found[:, 0].tolist() == [100, 200, 300], found
    for i, v in zip([100, 200, 300], xb):
        assert reconstruct(server, wb, i) == rows(v), i

    ok(call(server, action="reset", index_id=base))
    assert ntotal(server, wb) == 0
    ok(call(server, action="add_vectors", index_id=base, vectors=rows(rand(2, d, 9))))
    found = labels(server, wb, rand(2, d, 9), 3)
    assert (found == -1).all(), found


def test_refused_replace_vector_changes_nothing(server):
    """Defect 4: a refused replace_vector on an IDMap over BINARY_FLAT still changed the index."""
    d = 16
    base = create(server, d, "BINARY_FLAT")
    m = create(server, d, f"IDMap:{base}")
    b = bits(2, d, 10)
    ok(call(server, action="add_with_ids", index_id=m, vectors=rows(b), ids=[10, 11]))
    bad = b[0].copy()
    bad[3] = 0.5
    fail(call(server, action="replace_vector", index_id=m, id=10, vector=rows(bad)),
         code="INVALID_ARGUMENT")
    assert reconstruct(server, m, 10) == rows(b[0])
    assert reconstruct(server, m, 11) == rows(b[1])
    assert ntotal(server, m) == 2


def test_range_search_through_a_transform_finds_the_stored_vector(server):
    """Defect 5: range_search on an index with a transform (PCA) missed exact matches."""
    d = 8
    x = rand(300, d, 11)
    name = create(server, d, "PCA4,HNSW8")
    ok(call(server, action="train_index", index_id=name, training_vectors=rows(x)))
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(x)))
    picks = [0, 17, 123, 299]
    r = ok(call(server, action="range_search", index_id=name, query_vectors=rows(x[picks]),
                radius=1e-3))
    for q, res in zip(picks, r["results"]):
        assert q in res["indices"], (q, res)


def test_hnsw_per_request_ef_search_is_honoured(server):
    """Defect 6: a per-request efSearch above the index's own value was ignored."""
    d, n, nq, k = 32, 5000, 100, 10
    x, q = rand(n, d, 12), rand(nq, d, 13)
    name = create(server, d, "HNSW8")
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(x)))
    truth = exact_knn(x, q, k)
    low = recall(labels(server, name, q, k, params={"efSearch": 16}), truth)
    high = recall(labels(server, name, q, k, params={"efSearch": 256}), truth)
    assert high >= 0.95 and high > low + 0.05, (low, high)

    ok(call(server, action="set_parameter", index_id=name, parameter="efSearch", value=256))
    default = recall(labels(server, name, q, k), truth)
    lowered = recall(labels(server, name, q, k, params={"efSearch": 10}), truth)
    assert default >= 0.95 and lowered < default - 0.05, (lowered, default)


def test_sq8_trained_on_a_tiny_first_add_keeps_recall(server):
    """Defect 7: SQ8 trained on its first one-vector add lost all recall."""
    d, n, nq, k = 64, 20000, 100, 10
    x, q = rand(n, d, 14), rand(nq, d, 15)
    name = create(server, d, "SQ8")
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(x[:1])))
    for s in range(1, n, 10000):
        ok(call(server, action="add_vectors", index_id=name, vectors=rows(x[s:s + 10000])))
    assert ntotal(server, name) == n
    found = labels(server, name, q, k)
    assert len(set(found[:, 0].tolist())) > 1, found[:, 0]
    assert recall(found, exact_knn(x, q, k)) >= 0.9


def _request_with_raw_index_id(id_bytes):
    """A create_index request whose index_id is a msgpack str holding exactly these bytes."""
    assert len(id_bytes) < 32
    head = msgpack.packb({"action": "create_index", "dimension": 4})
    # Rewrite the fixmap header to hold one more entry, then append "index_id": <raw str>.
    assert head[0] == 0x82
    return bytes([0x83]) + head[1:] + msgpack.packb("index_id") + \
        bytes([0xA0 | len(id_bytes)]) + id_bytes


@pytest.mark.parametrize("id_bytes", [b"\xff\xfe\xfd", b"a\x00b"], ids=["invalid-utf8", "nul"])
def test_index_id_that_is_not_clean_utf8_is_refused(server, id_bytes):
    """Defect 8: index ids with invalid UTF-8 or NUL were accepted and poisoned replies."""
    raw = raw_call(server.endpoint, _request_with_raw_index_id(id_bytes), raw=True)
    reply = msgpack.unpackb(raw, raw=False)
    fail(reply)
    err = reply["error"].lower()
    assert "utf-8" in err or "malformed" in err or "index_id" in err, reply
    raw = raw_call(server.endpoint, {"action": "list_indexes"}, raw=True)
    listed = ok(msgpack.unpackb(raw, raw=False))["indexes"]
    names = [e["index_id"] for e in listed]
    assert "a\x00b" not in names and "a" not in names
    assert not any("\ufffd" in n or "\x00" in n for n in names), names


def test_tenant_index_cap_answers_resource_exhausted():
    """Defect 9: hitting the per-tenant index cap answered BUSY instead of RESOURCE_EXHAUSTED."""
    srv = Server("--max-collections-per-tenant", "2", "--log-level", "warning")
    try:
        create(srv, 4)
        create(srv, 4)
        fail(call(srv, action="create_index", index_id=uid(), dimension=4),
             code="RESOURCE_EXHAUSTED")
        assert len(ok(call(srv, action="list_indexes"))["indexes"]) == 2
    finally:
        assert srv.stop() == 0


def test_search_and_reconstruct_vectors_match_reconstruct(server):
    """Defect 10: search_and_reconstruct returned vectors not belonging to the result ids."""
    d = 6
    base = create(server, d, "L2")
    m = create(server, d, f"IDMap:{base}")
    x = rand(5, d, 16)
    ids = [42, 7, 1000, 3, 99]
    ok(call(server, action="add_with_ids", index_id=m, vectors=rows(x), ids=ids))
    r = ok(call(server, action="search_and_reconstruct", index_id=m, query_vectors=rows(x[:3]),
                k=3))
    assert len(r["results"]) == 3
    for res in r["results"]:
        assert len(res["vectors"]) == len(res["indices"]) == 3
        for i, v in zip(res["indices"], res["vectors"]):
            assert i in ids, res
            assert v == reconstruct(server, m, i), (i, res)


def test_search_and_reconstruct_is_consistent_under_concurrent_replaces(server):
    """Defect 10: search_and_reconstruct read vectors in a second lock hold, racing writers."""
    d, n, ids = 8, 50, list(range(500, 550))
    base = create(server, d, "L2")
    m = create(server, d, f"IDMap:{base}")
    ok(call(server, action="add_with_ids", index_id=m, vectors=rows(rand(n, d, 21)), ids=ids))
    q = rand(200, d, 22)
    stop, replaced = threading.Event(), []

    def writer(seed):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            ok(call(server, action="replace_vector", index_id=m, id=int(rng.choice(ids)),
                    vector=rows(rng.standard_normal(d))))
            replaced.append(1)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (23, 24)]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 1.5
        while time.time() < deadline or len(replaced) < 300:
            r = ok(call(server, action="search_and_reconstruct", index_id=m,
                        query_vectors=rows(q), k=5))
            for qv, res in zip(q, r["results"]):
                v = np.asarray(res["vectors"], dtype=np.float64)
                want = ((v - qv.astype(np.float64)) ** 2).sum(1)
                assert np.allclose(res["distances"], want, rtol=1e-3, atol=1e-4), res
            assert time.time() < deadline + 10, len(replaced)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert ntotal(server, m) == n


def test_search_of_an_empty_index_returns_only_minus_one(server):
    """Defect 11: a search of an empty L2 index answered label 0 from unwritten output."""
    name = create(server, 4, "L2")
    found = labels(server, name, rand(2, 4, 17), 3)
    assert found.shape == (2, 3) and (found == -1).all(), found


def test_hnsw_remove_ids_is_unsupported_and_changes_nothing(server):
    """Defect 12: remove_ids on HNSW did not answer UNSUPPORTED, or changed the index."""
    d = 8
    x = rand(20, d, 18)
    name = create(server, d, "HNSW8")
    ok(call(server, action="add_vectors", index_id=name, vectors=rows(x)))
    fail(call(server, action="remove_ids", index_id=name, ids=[3]), code="UNSUPPORTED")
    assert ntotal(server, name) == 20
    assert reconstruct(server, name, 3) == rows(x[3])
    assert labels(server, name, x[3:4], 1)[0, 0] == 3


def test_upsert_on_idmap_over_hnsw_is_unsupported_and_keeps_the_old_vector(server):
    """Defect 12: an upsert on an IDMap over HNSW did not answer UNSUPPORTED or lost data."""
    d = 8
    x = rand(3, d, 19)
    base = create(server, d, "HNSW8")
    m = create(server, d, f"IDMap:{base}")
    ok(call(server, action="add_with_ids", index_id=m, vectors=rows(x), ids=[5, 6, 7]))
    fail(call(server, action="add_with_ids", index_id=m, vectors=rows(rand(1, d, 20)), ids=[6]),
         code="UNSUPPORTED")
    assert ntotal(server, m) == 3
    assert reconstruct(server, m, 6) == rows(x[1])
    assert labels(server, m, x[1:2], 1)[0, 0] == 6
