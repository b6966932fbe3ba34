"""The operations HTTP listener: /metrics in Prometheus text format (parsed with
prometheus_client's own parser), /healthz, /readyz, and nothing else."""
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Server, raw_call


def get(srv, path):
    with urllib.request.urlopen(srv.metrics_url + path, timeout=5) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def scrape(srv):
    """{(sample name, frozenset(labels)): value} plus the families by name."""
    status, ctype, text = get(srv, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in families.values() for s in f.samples}
    return families, samples


@pytest.fixture(scope="module")
def srv():
    s = Server("--log-level", "warning")
    yield s
    assert s.stop() == 0


def call(srv, **req):
    return raw_call(srv.endpoint, req)


def test_metrics_parse_and_count_requests_by_action_tenant_and_outcome(srv):
    call(srv, action="create_index", tenant_id="acme", index_id="m", dimension=4, index_type="L2")
    call(srv, action="add_vectors", tenant_id="acme", index_id="m",
         vectors=np.eye(4, dtype=np.float32).tolist())
    for _ in range(3):
        call(srv, action="search", tenant_id="acme", index_id="m", query_vectors=[[1, 0, 0, 0]], k=2)
    call(srv, action="search", tenant_id="acme", index_id="nope", query_vectors=[[1, 0, 0, 0]])
    call(srv, action="no_such_action")
    families, samples = scrape(srv)
    assert families["vecgpu_requests"].type == "counter"
    ok = ("vecgpu_requests_total",
          frozenset({"action": "search", "tenant": "acme", "outcome": "ok"}.items()))
    assert samples[ok] == 3
    missing = ("vecgpu_requests_total",
               frozenset({"action": "search", "tenant": "acme", "outcome": "NOT_FOUND"}.items()))
    assert samples[missing] == 1
    unknown = ("vecgpu_requests_total",
               frozenset({"action": "unknown", "tenant": "-", "outcome": "INVALID_ARGUMENT"}.items()))
    assert samples[unknown] == 1
    # Latency histogram by action: cumulative buckets ending in +Inf == count.
    hist = families["vecgpu_request_duration_seconds"]
    assert hist.type == "histogram"
    search = {s.labels.get("le"): s.value for s in hist.samples
              if s.labels.get("action") == "search" and s.name.endswith("_bucket")}
    count = samples[("vecgpu_request_duration_seconds_count", frozenset({"action": "search"}.items()))]
    assert search["+Inf"] == count == 4
    # Per-tenant gauges, lanes, batches.
    assert samples[("vecgpu_collections", frozenset({"tenant": "acme"}.items()))] == 1
    assert samples[("vecgpu_vectors", frozenset({"tenant": "acme"}.items()))] == 4
    for lane in ("query", "write"):
        assert ("vecgpu_queue_depth", frozenset({"lane": lane}.items())) in samples
        assert samples[("vecgpu_workers", frozenset({"lane": lane}.items()))] >= 1
    assert samples[("vecgpu_batch_requests_count", frozenset())] >= 3
    assert families["vecgpu_queue_wait_seconds"].type == "histogram"


def test_batch_and_queue_metrics_move_under_concurrent_load(srv):
    call(srv, action="create_index", tenant_id="load", index_id="f", dimension=8, index_type="L2")
    call(srv, action="add_vectors", tenant_id="load", index_id="f",
         vectors=np.random.default_rng(1).random((500, 8), dtype=np.float32).tolist())
    _, before = scrape(srv)
    rows_before = before[("vecgpu_batch_rows_count", frozenset())]

    def client():
        for _ in range(50):
            assert call(srv, action="search", tenant_id="load", index_id="f",
                        query_vectors=[[0.5] * 8, [0.1] * 8], k=3)["success"]

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, after = scrape(srv)
    assert after[("vecgpu_batch_rows_count", frozenset())] - rows_before == 200
    # Every search carried 2 query rows: the rows sum grew by 400.
    assert (after[("vecgpu_batch_rows_sum", frozenset())] -
            before[("vecgpu_batch_rows_sum", frozenset())]) == 400
    assert after[("vecgpu_queue_wait_seconds_count", frozenset({"lane": "query"}.items()))] > \
        before[("vecgpu_queue_wait_seconds_count", frozenset({"lane": "query"}.items()))]


def test_health_ready_and_nothing_else(srv):
    assert get(srv, "/healthz")[0] == 200
    assert get(srv, "/readyz")[0] == 200
    for path in ("/", "/admin", "/metrics/../x", "/indexes"):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(srv, path)
        assert e.value.code == 404
    req = urllib.request.Request(srv.metrics_url + "/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(req, timeout=5)


def test_metrics_port_zero_turns_the_listener_off():
    s = Server("--log-level", "info", "--metrics-port", "0")
    assert s.stop() == 0
    assert "metrics on" not in s.output


def test_default_listener_logs_its_address_and_binds_loopback():
    s = Server("--log-level", "info")
    try:
        assert get(s, "/healthz")[0] == 200
    finally:
        assert s.stop() == 0
    assert f"metrics on http://127.0.0.1:{s.metrics_port}/metrics" in s.output
