"""The batching scheduler against the real binary: no head-of-line blocking between tenants,
order and read-your-writes within an index, deadlines."""
import threading
import time
import urllib.request

import numpy as np
import pytest

from conftest import Server, raw_call


def call(server, **req):
    return raw_call(server.endpoint, req, timeout_ms=120000)


def wait_for_long_work(server, timeout=60):
    """Waits until a long worker is busy (the training runs), read from /metrics."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen(server.metrics_url + "/metrics", timeout=5) as r:
            if 'vecgpu_busy_workers{class="long"} 1' in r.read().decode():
                return
        time.sleep(0.01)
    raise AssertionError("the training never started")


def test_one_tenants_training_does_not_block_another_tenants_searches(server):
    """Tenant A trains a large IVF index with its own searches queued behind the training;
    tenant B's searches on a small index all complete while A's training still runs."""
    rng = np.random.default_rng(0)
    call(server, action="create_index", tenant_id="A", index_id="big", dimension=64,
         index_type="IVF1024")
    call(server, action="create_index", tenant_id="B", index_id="small", dimension=8, index_type="L2")
    assert call(server, action="add_vectors", tenant_id="B", index_id="small",
                vectors=rng.random((100, 8), dtype=np.float32).tolist())["success"]
    train = rng.random((60000, 64), dtype=np.float32)
    events = []
    lock = threading.Lock()

    def note(what):
        with lock:
            events.append((time.monotonic(), what))

    def a_train():
        r = call(server, action="train_index", tenant_id="A", index_id="big",
                 training_vectors=train.tolist())
        assert r["success"], r
        note("A trained")

    def a_search():
        r = call(server, action="search", tenant_id="A", index_id="big",
                 query_vectors=train[:1].tolist(), k=5)
        assert r["success"], r
        note("A searched")

    t = threading.Thread(target=a_train)
    t.start()
    wait_for_long_work(server)
    a = [threading.Thread(target=a_search) for _ in range(4)]
    for th in a:
        th.start()
    time.sleep(0.2)
    for i in range(20):
        r = call(server, action="search", tenant_id="B", index_id="small",
                 query_vectors=rng.random((1, 8), dtype=np.float32).tolist(), k=3)
        assert r["success"]
        note("B searched")
    t.join()
    for th in a:
        th.join()
    order = [what for _, what in sorted(events)]
    trained_at = order.index("A trained")
    assert order.count("B searched") == 20
    assert order[:20] == ["B searched"] * 20, \
        f"tenant B waited behind tenant A's training: {order}"
    # A's own searches were queued behind its training, in order.
    assert all(w == "A searched" for w in order[trained_at + 1:])


def test_a_search_sees_an_add_acknowledged_on_another_connection(server):
    call(server, action="create_index", tenant_id="C", index_id="ryw", dimension=4, index_type="L2")
    for i in range(30):
        v = [[float(i), 0.0, 0.0, 0.0]]
        assert call(server, action="add_vectors", tenant_id="C", index_id="ryw", vectors=v)["success"]
        r = call(server, action="search", tenant_id="C", index_id="ryw", query_vectors=v, k=1)
        assert r["results"][0]["indices"][0] == i


def test_a_request_whose_deadline_passes_in_the_queue_times_out(server):
    rng = np.random.default_rng(1)
    call(server, action="create_index", tenant_id="D", index_id="slow", dimension=64,
         index_type="IVF1024")
    t = threading.Thread(target=lambda: call(
        server, action="train_index", tenant_id="D", index_id="slow",
        training_vectors=rng.random((60000, 64), dtype=np.float32).tolist()))
    t.start()
    wait_for_long_work(server)
    r = call(server, action="get_index_stats", tenant_id="D", index_id="slow", timeout_ms=100)
    t.join()
    assert r["success"] is False and r["error_code"] == "TIMEOUT", r
    assert call(server, action="get_index_stats", tenant_id="D", index_id="slow")["is_trained"]


def test_concurrent_adds_merge_without_losing_or_duplicating_vectors(server):
    """Adds from many clients to one index (merged into few backend adds): every vector is
    there once; with ids, overlapping ids are upserts (one vector per id, one that was sent)."""
    call(server, action="create_index", tenant_id="E", index_id="base", dimension=4, index_type="L2")
    call(server, action="create_index", tenant_id="E", index_id="flat", dimension=4, index_type="L2")
    call(server, action="create_index", tenant_id="E", index_id="ids", dimension=4,
         index_type="IDMap:base")
    sent = {}
    lock = threading.Lock()

    def client(c):
        for i in range(30):
            v = [float(c), float(i), 0.5, 0.25]
            assert call(server, action="add_vectors", tenant_id="E", index_id="flat",
                        vectors=[v])["success"]
            key = (c * 7 + i) % 50  # ids shared between clients: upserts
            assert call(server, action="add_with_ids", tenant_id="E", index_id="ids",
                        vectors=[v], ids=[key])["success"]
            with lock:
                sent.setdefault(key, []).append(v)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = call(server, action="get_vectors", tenant_id="E", index_id="flat")
    rows = sorted(tuple(v) for v in got["vectors"])
    assert rows == sorted((float(c), float(i), 0.5, 0.25) for c in range(8) for i in range(30))
    got = call(server, action="get_vectors", tenant_id="E", index_id="ids")
    assert sorted(got["ids"]) == sorted(sent)
    for id_, v in zip(got["ids"], got["vectors"]):
        assert v in sent[id_]
