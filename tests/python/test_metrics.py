"""The operations HTTP listener: /metrics in Prometheus text format (parsed with
prometheus_client's own parser), /healthz, /readyz, and nothing else."""
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Server, call


def get(server, path):
    with urllib.request.urlopen(server.metrics_url + path, timeout=5) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def scrape(server):
    """{(sample name, frozenset(labels)): value} plus the families by name."""
    status, ctype, text = get(server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in families.values() for s in f.samples}
    return families, samples


def test_metrics_parse_and_count_requests_by_action_tenant_and_outcome(server):
    call(server, action="create_index", tenant_id="acme", index_id="m", dimension=4, index_type="L2")
    call(server, action="add_vectors", tenant_id="acme", index_id="m",
         vectors=np.eye(4, dtype=np.float32).tolist())
    for _ in range(3):
        call(server, action="search", tenant_id="acme", index_id="m", query_vectors=[[1, 0, 0, 0]], k=2)
    call(server, action="search", tenant_id="acme", index_id="nope", query_vectors=[[1, 0, 0, 0]])
    call(server, action="no_such_action")
    families, samples = scrape(server)
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
    for queue in ("dispatch", "index"):
        assert ("vecgpu_queue_depth", frozenset({"queue": queue}.items())) in samples
    for cls in ("short", "long", "dispatch"):
        assert samples[("vecgpu_workers", frozenset({"class": cls}.items()))] >= 1
        assert ("vecgpu_busy_workers", frozenset({"class": cls}.items())) in samples
    assert samples[("vecgpu_batch_requests_count", frozenset())] >= 3
    assert families["vecgpu_queue_wait_seconds"].type == "histogram"


def load(server, clients=8, per_client=40, dim=64, n=20000):
    """Concurrent one-query searches on one flat index; returns the scrape before and after."""
    rng = np.random.default_rng(1)
    call(server, action="create_index", tenant_id="load", index_id="f", dimension=dim,
         index_type="L2")
    for i in range(0, n, 10000):
        assert call(server, action="add_vectors", tenant_id="load", index_id="f",
                    vectors=rng.random((min(10000, n - i), dim), dtype=np.float32).tolist())["success"]
    _, before = scrape(server)
    queries = rng.random((clients, dim), dtype=np.float32).tolist()

    def client(q):
        for _ in range(per_client):
            assert call(server, action="search", tenant_id="load", index_id="f", query_vectors=[q],
                        k=3)["success"]

    threads = [threading.Thread(target=client, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, after = scrape(server)
    return before, after


def delta(before, after, name, labels=frozenset()):
    return after.get((name, labels), 0) - before.get((name, labels), 0)


def test_batches_form_under_concurrent_load(server):
    before, after = load(server)
    # Every request is counted once, in some batch; concurrent ones share batches.
    assert delta(before, after, "vecgpu_batch_requests_sum") == 320
    assert delta(before, after, "vecgpu_batch_rows_sum") == 320
    batches = delta(before, after, "vecgpu_batch_requests_count")
    assert batches < 320, "no two concurrent searches ever shared a backend call"
    singles = delta(before, after, "vecgpu_batch_requests_bucket",
                    frozenset({"le": "1"}.items()))
    assert singles < batches
    waits = sum(delta(before, after, "vecgpu_queue_wait_seconds_count",
                      frozenset({"class": c}.items())) for c in ("short", "long"))
    assert waits >= 320  # long workers take short work when no long work waits


def test_max_batch_rows_one_turns_batching_off():
    s = Server("--log-level", "warning", "--max-batch-rows", "1")
    try:
        before, after = load(s)
    finally:
        assert s.stop() == 0
    assert delta(before, after, "vecgpu_batch_requests_count") == 320
    assert delta(before, after, "vecgpu_batch_requests_bucket", frozenset({"le": "1"}.items())) == 320


def test_health_ready_and_nothing_else(server):
    assert get(server, "/healthz")[0] == 200
    assert get(server, "/readyz")[0] == 200
    for path in ("/", "/admin", "/metrics/../x", "/indexes"):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(server, path)
        assert e.value.code == 404
    req = urllib.request.Request(server.metrics_url + "/metrics", data=b"x", method="POST")
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


def test_metrics_token_protects_metrics_but_not_the_probes():
    """/metrics names tenants: with --metrics-token it needs the bearer token; the probes
    stay open for Kubernetes."""
    srv = Server("--metrics-token", "s3cret", "--log-level", "warning")
    try:
        def get(path, token=None):
            req = urllib.request.Request(srv.metrics_url + path)
            if token is not None:
                req.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
        assert get("/metrics")[0] == 401
        assert get("/metrics", "wrong")[0] == 401
        assert get("/metrics", "s3cre")[0] == 401
        status, body = get("/metrics", "s3cret")
        assert status == 200 and "vecgpu_requests_total" in body
        assert get("/healthz")[0] == 200
        assert get("/readyz")[0] == 200
    finally:
        assert srv.stop() == 0
