"""Per-tenant quotas from the auth file (and their defaults from flags) on the real binary:
each refusal names the quota and the tenant's current use, changes nothing, and leaves other
tenants alone; `usage` reports a tenant's use, an admin's every tenant's."""
import json
import threading
import time

import numpy as np
import pytest

from conftest import Server, fail, ok, raw_call, rand, rows


def keys_file(tmp_path, entries):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(entries))
    return path


def call(srv, key, **fields):
    return raw_call(srv.endpoint, {"api_key": key, **fields}, timeout_ms=60_000)


@pytest.fixture
def quota_server(tmp_path):
    keys = keys_file(tmp_path, {
        "ka": {"tenant": "a", "quota": {"max_vectors": 100, "max_collections": 2}},
        "kb": "b",
        "kops": {"tenant": "ops", "role": "admin"},
    })
    srv = Server("--enable-auth", "--auth-file", str(keys), "--bind-address", "127.0.0.1",
                 "--tenant-max-vectors", "1000")
    yield srv
    assert srv.stop() == 0


def test_collections_and_vectors_quotas_name_the_quota_and_the_use(quota_server):
    srv = quota_server
    for name in ("x", "y"):
        ok(call(srv, "ka", action="create_index", index_id=name, dimension=8, index_type="L2"))
    fail(call(srv, "ka", action="create_index", index_id="z", dimension=8, index_type="L2"),
         "quota", "max_collections", "2 collections", code="RESOURCE_EXHAUSTED")
    ok(call(srv, "ka", action="add_vectors", index_id="x", vectors=rows(rand(80, 8, 1))))
    fail(call(srv, "ka", action="add_vectors", index_id="y", vectors=rows(rand(30, 8, 2))),
         "max_vectors", "80 vectors", "100", code="RESOURCE_EXHAUSTED")
    # Nothing changed, and the tenant can still write within its quota.
    assert ok(call(srv, "ka", action="get_index_stats", index_id="y"))["ntotal"] == 0
    ok(call(srv, "ka", action="add_vectors", index_id="y", vectors=rows(rand(20, 8, 3))))
    # Tenant b has the flags' default (1,000 vectors), not a's quota.
    ok(call(srv, "kb", action="create_index", index_id="x", dimension=8, index_type="L2"))
    ok(call(srv, "kb", action="create_index", index_id="y", dimension=8, index_type="L2"))
    ok(call(srv, "kb", action="create_index", index_id="z", dimension=8, index_type="L2"))
    ok(call(srv, "kb", action="add_vectors", index_id="x", vectors=rows(rand(500, 8, 4))))
    fail(call(srv, "kb", action="add_vectors", index_id="y", vectors=rows(rand(600, 8, 5))),
         "max_vectors", "1000")


def test_usage_reports_the_tenants_own_and_an_admin_every_tenants(quota_server):
    srv = quota_server
    ok(call(srv, "ka", action="create_index", index_id="x", dimension=8, index_type="L2"))
    ok(call(srv, "ka", action="add_vectors", index_id="x", vectors=rows(rand(7, 8, 1))))
    u = ok(call(srv, "ka", action="usage"))
    assert u["usage"]["tenant"] == "a"
    assert u["usage"]["collections"] == 1 and u["usage"]["vectors"] == 7
    assert u["usage"]["bytes"] >= 7 * 8 * 4
    assert u["usage"]["quota"]["max_vectors"] == 100
    assert "tenants" not in u  # a tenant sees only its own
    ok(call(srv, "kb", action="create_index", index_id="x", dimension=8, index_type="L2"))
    admin = ok(call(srv, "kops", action="usage"))
    tenants = {t["tenant"]: t for t in admin["tenants"]}
    assert tenants["a"]["vectors"] == 7 and tenants["b"]["collections"] == 1


def test_request_rate_quota_refuses_past_its_bucket(tmp_path):
    keys = keys_file(tmp_path, {"ka": {"tenant": "a", "quota": {"requests_per_second": 5}},
                                "kb": "b"})
    srv = Server("--enable-auth", "--auth-file", str(keys), "--bind-address", "127.0.0.1")
    try:
        replies = [call(srv, "ka", action="list_indexes") for _ in range(20)]
        refused = [r for r in replies if not r["success"]]
        assert refused, "20 requests at once passed a quota of 5 a second"
        fail(refused[0], "requests_per_second", code="RESOURCE_EXHAUSTED")
        assert all(call(srv, "kb", action="list_indexes")["success"] for _ in range(20))
        time.sleep(1.1)  # the bucket refills
        ok(call(srv, "ka", action="list_indexes"))
    finally:
        assert srv.stop() == 0


def test_requests_in_flight_quota(tmp_path):
    keys = keys_file(tmp_path, {"ka": {"tenant": "a", "quota": {"max_inflight": 1}}})
    srv = Server("--enable-auth", "--auth-file", str(keys), "--bind-address", "127.0.0.1")
    try:
        x = np.ascontiguousarray(rand(20_000, 64, 3), dtype="<f4").tobytes()
        long_job = threading.Thread(target=call, args=(srv, "ka"), kwargs=dict(
            action="compute_clustering", vectors=x, dimension=64, n_clusters=500, niter=300,
            timeout_ms=3000), daemon=True)
        long_job.start()
        time.sleep(0.5)
        fail(call(srv, "ka", action="list_indexes"), "max_inflight", "1",
             code="RESOURCE_EXHAUSTED")
        long_job.join(60)
        ok(call(srv, "ka", action="list_indexes"))
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("entry, needle", [
    ({"k": {"tenant": "t", "quota": {"max_vectors": -1}}}, "at least 0"),
    ({"k": {"tenant": "t", "quota": {"max_vectorz": 1}}}, "unknown quota 'max_vectorz'"),
    ({"k": {"tenant": "t", "quota": 5}}, "quota must be an object"),
    ({"k": {"tenant": "t", "extra": 1}}, "unknown field 'extra'"),
])
def test_bad_quotas_in_the_auth_file_refuse_the_start(tmp_path, entry, needle):
    import subprocess
    from conftest import BINARY
    path = keys_file(tmp_path, entry)
    out = subprocess.run([str(BINARY), "serve", "--enable-auth", "--auth-file", str(path),
                          "--bind-address", "127.0.0.1"], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode != 0
    assert needle in out.stdout + out.stderr
