"""Tenant isolation on the real binary: what one tenant (or a client without a key) does must
not stall, starve or exhaust another. Each test reproduces, at small scale, one way a tenant
could hold up everyone else, and checks that the other tenant is served meanwhile. The checks
are about order and bounds (the victim's reply arrives before the aggressor's long work ends;
memory stays under its bound), not speed: bench/ measures latencies (noisy-neighbour).
"""
import json
import signal
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from conftest import Server, call, fail, ok, raw_call, rand, rows, start_persistent, uid, kill9


def vec_bytes(x):
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


class Timed(threading.Thread):
    """Runs one request on its own socket; records its reply and when it ended."""

    def __init__(self, srv, request, timeout_ms=120_000):
        super().__init__(daemon=True)
        self.srv, self.request, self.timeout_ms = srv, request, timeout_ms
        self.reply = None
        self.ended = None
        self.start()

    def run(self):
        try:
            self.reply = raw_call(self.srv.endpoint, self.request, timeout_ms=self.timeout_ms)
        except zmq.Again:
            self.reply = {"success": False, "error": "client timeout"}
        self.ended = time.monotonic()


def status_mb(pid, field):
    """A memory field of /proc/PID/status ("VmHWM": peak RSS, "VmRSS"), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0


def vm_hwm_mb(pid):
    return status_mb(pid, "VmHWM")


def vm_rss_mb(pid):
    return status_mb(pid, "VmRSS")


def start_training(srv, tenant, name, n=100_000, d=64, nlist=1024):
    """An IVF index and a training run on it that takes a few seconds on 2 cores."""
    ok(call(srv, action="create_index", index_id=name, dimension=d, index_type=f"IVF{nlist},Flat",
            tenant_id=tenant))
    x = rand(n, d, 7)
    return Timed(srv, {"action": "train_index", "index_id": name, "tenant_id": tenant,
                       "training_vectors": vec_bytes(x), "dimension": d, "timeout_ms": 0})


def wait_running(srv, seconds=0.5):
    time.sleep(seconds)


def test_snapshot_during_training_stalls_no_other_tenant(tmp_path):
    """A snapshot asked while one tenant's index trains keeps that index's last image and the
    log after it instead of waiting for the training run; another tenant's create, search and
    list meanwhile are answered before the training ends, and everything survives kill -9."""
    srv = start_persistent(tmp_path, "--write-threads", "2", "--snapshot-interval-s", "0")
    try:
        train = start_training(srv, "a", "big")
        wait_running(srv)
        snap = Timed(srv, {"action": "snapshot", "tenant_id": "a"})
        time.sleep(0.2)
        ok(call(srv, action="create_index", index_id="small", dimension=8, index_type="L2",
                tenant_id="b"))
        ok(call(srv, action="add_vectors", index_id="small", vectors=rows(rand(10, 8, 1)),
                tenant_id="b"))
        r = ok(call(srv, action="search", index_id="small", query_vectors=rows(rand(1, 8, 2)),
                    k=3, tenant_id="b"))
        assert len(r["results"][0]["indices"]) == 3
        ok(call(srv, action="list_indexes", tenant_id="b"))
        b_done = time.monotonic()
        snap.join(60)
        assert snap.reply and snap.reply.get("success"), snap.reply
        assert snap.reply["busy"] >= 1, snap.reply  # the training index kept its last image
        train.join(120)
        ok(train.reply)
        assert b_done < train.ended, "tenant b waited for tenant a's training"
        assert snap.ended < train.ended, "the snapshot waited for the training run"
        assert ok(call(srv, action="get_index_stats", index_id="big", tenant_id="a"))["is_trained"]
    finally:
        kill9(srv)
    srv = start_persistent(tmp_path)
    try:
        assert ok(call(srv, action="get_index_stats", index_id="big", tenant_id="a"))["is_trained"]
        assert ok(call(srv, action="get_index_stats", index_id="small",
                       tenant_id="b"))["ntotal"] == 10
    finally:
        assert srv.stop() == 0


def test_drop_of_a_training_index_stalls_no_other_tenants_create(tmp_path):
    """Creates and drops take the storage's write order before the catalog: dropping (or
    viewing) an index that trains waits for that index alone."""
    srv = Server("--write-threads", "2")
    try:
        train = start_training(srv, "a", "big")
        wait_running(srv)
        drop = Timed(srv, {"action": "delete_index", "index_id": "big", "tenant_id": "a"})
        time.sleep(0.2)
        ok(call(srv, action="create_index", index_id="other", dimension=8, index_type="L2",
                tenant_id="b"))
        b_done = time.monotonic()
        train.join(120)
        drop.join(60)
        ok(drop.reply)
        assert b_done < train.ended, "tenant b's create waited for tenant a's training"
    finally:
        assert srv.stop() == 0


AUTH = ["--enable-auth", "--auth-keys", "key-a:a,key-b:b"]


def test_requests_without_a_valid_key_are_refused_before_decoding():
    """A missing or unknown key is refused from the envelope: a 30 MB message with a bad key
    gets its error, and the server's memory does not grow by the message's decoded size."""
    srv = Server(*AUTH)
    try:
        big = {"action": "add_vectors", "index_id": "x", "vectors": rows(rand(40_000, 96, 3))}
        payload = msgpack.packb(big)
        assert len(payload) > 30_000_000
        base = vm_rss_mb(srv.proc.pid)
        for key in (None, "wrong-key"):
            req = dict(big)
            if key:
                req["api_key"] = key
            r = raw_call(srv.endpoint, msgpack.packb(req), timeout_ms=30_000)
            fail(r, "API key required" if key is None else "Invalid API key", code="AUTH_ERROR")
        # Decoding 35 MB of float64 msgpack would take well over 100 MB (objects and floats).
        assert vm_hwm_mb(srv.proc.pid) - base < 100, (base, vm_hwm_mb(srv.proc.pid))
        ok(call(srv, action="list_indexes", api_key="key-a"))
    finally:
        assert srv.stop() == 0


def test_unauthenticated_flood_is_bounded_and_others_are_served():
    """Clients without a key pipelining large messages on DEALER sockets: beyond the
    unauthenticated budget they get RESOURCE_EXHAUSTED naming it, the server's memory stays
    within the budget plus what ZeroMQ buffers, an authorised tenant is answered throughout,
    and a refused connection stays usable."""
    srv = Server(*AUTH, "--max-unauthenticated-mb", "64", "--dispatch-threads", "1")
    ctx = zmq.Context.instance()
    try:
        ok(call(srv, action="create_index", index_id="v", dimension=8, index_type="L2",
                api_key="key-b"))
        ok(call(srv, action="add_vectors", index_id="v", vectors=rows(rand(50, 8, 1)),
                api_key="key-b"))
        # 22 MB of one-byte integers: the envelope scan walks every one (no fast path for
        # them), so each message stays unauthenticated long enough for the next ones to
        # arrive and meet the budget.
        payload = msgpack.packb({"action": "add_vectors", "index_id": "x",
                                 "vectors": [[1] * 64] * 340_000})
        base = vm_rss_mb(srv.proc.pid)
        socks = []
        for _ in range(4):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            s.connect(srv.endpoint)
            socks.append(s)
        sent = 0
        for _ in range(6):
            for s in socks:
                s.send_multipart([b"", payload])
                sent += 1
        # Meanwhile tenant b searches and is answered.
        for i in range(20):
            r = ok(call(srv, action="search", index_id="v", query_vectors=rows(rand(1, 8, i)),
                        k=2, api_key="key-b"))
            assert len(r["results"][0]["indices"]) == 2
        errors = []
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        deadline = time.time() + 60
        while len(errors) < sent and time.time() < deadline:
            for s, _ in poller.poll(1000):
                frames = s.recv_multipart()
                errors.append(msgpack.unpackb(frames[-1], raw=False))
        assert len(errors) == sent
        assert all(not e["success"] for e in errors)
        kinds = {e["error_code"] for e in errors}
        assert kinds <= {"AUTH_ERROR", "RESOURCE_EXHAUSTED"}, kinds
        exhausted = [e for e in errors if e["error_code"] == "RESOURCE_EXHAUSTED"]
        assert exhausted, "no message was over the unauthenticated budget"
        assert "--max-unauthenticated-mb" in exhausted[0]["error"]
        # Decoded, 24 such messages would be several GB; admitted, at most 64 MiB in flight.
        assert vm_hwm_mb(srv.proc.pid) - base < 1200, (base, vm_hwm_mb(srv.proc.pid))
        # The refused connection is still usable.
        socks[0].send_multipart([b"", msgpack.packb({"action": "list_indexes",
                                                     "api_key": "key-b"})])
        assert dict(poller.poll(10_000)).get(socks[0])
        assert msgpack.unpackb(socks[0].recv_multipart()[-1], raw=False)["success"]
    finally:
        for s in socks:
            s.close()
        assert srv.stop() == 0


def test_clustering_past_the_cost_cap_is_refused_up_front():
    srv = Server("--max-work-cost", "1e10")
    try:
        x = rand(20_000, 64, 3)
        t0 = time.monotonic()
        r = call(srv, action="compute_clustering", vectors=vec_bytes(x), dimension=64,
                 n_clusters=2000, niter=100, tenant_id="a")
        fail(r, "--max-work-cost", "estimated cost", code="RESOURCE_EXHAUSTED")
        assert time.monotonic() - t0 < 10
        ok(call(srv, action="compute_clustering", vectors=vec_bytes(x[:2000]), dimension=64,
                n_clusters=10, niter=5, tenant_id="a"))
    finally:
        assert srv.stop() == 0


def long_clustering(tenant, timeout_ms, seed=3, n=40_000, k=1000, niter=300):
    x = rand(n, 64, seed)
    return {"action": "compute_clustering", "vectors": vec_bytes(x), "dimension": 64,
            "n_clusters": k, "niter": niter, "tenant_id": tenant, "timeout_ms": timeout_ms}


def test_clustering_stops_at_its_deadline_and_frees_its_worker():
    """A clustering run whose deadline passes while it runs stops at its next k-means
    iteration with TIMEOUT, and the long worker it held serves another tenant's training."""
    srv = Server("--write-threads", "1")
    try:
        job = Timed(srv, long_clustering("a", 1500))
        time.sleep(0.3)
        train = start_training(srv, "b", "ivf", n=5000, nlist=16)
        job.join(120)
        fail(job.reply, "deadline", code="TIMEOUT")
        train.join(120)
        ok(train.reply)
        assert job.ended <= train.ended
    finally:
        assert srv.stop() == 0


def test_sigterm_during_clustering_exits_promptly_and_answers_the_client(tmp_path):
    srv = start_persistent(tmp_path, "--write-threads", "1")
    job = Timed(srv, long_clustering("a", 0))
    queued = None
    try:
        time.sleep(0.5)
        queued = Timed(srv, long_clustering("a", 0, seed=4, n=2000, k=10, niter=5))
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(30)
        elapsed = time.monotonic() - t0
        assert srv.proc.returncode == 0
        assert elapsed < 10, f"took {elapsed:.1f} s to exit"
        job.join(10)
        queued.join(10)
        # The running job and the queued one were answered, not abandoned.
        assert job.reply is not None and not job.reply.get("success"), job.reply
        assert queued.reply is not None and not queued.reply.get("success"), queued.reply
    finally:
        srv.stop()


def test_a_tenants_long_jobs_yield_to_another_tenants_waiting_job():
    """Tenant a fills both long workers and queues a third job; tenant b's job, queued after
    it, runs as soon as one of a's ends: a tenant keeps at most its share while others wait."""
    srv = Server("--write-threads", "2")
    try:
        # a1 runs for seconds (a3 and b1 are both queued long before it ends); a2 longer still,
        # stopped by its deadline.
        a1 = Timed(srv, long_clustering("a", 0, seed=1, n=20_000, k=300, niter=400))
        a2 = Timed(srv, long_clustering("a", 30_000, seed=2, n=20_000, k=300, niter=1000))
        time.sleep(0.5)
        a3 = Timed(srv, long_clustering("a", 0, seed=3, n=20_000, k=300, niter=8))
        time.sleep(0.1)
        b1 = Timed(srv, long_clustering("b", 0, seed=4, n=20_000, k=300, niter=8))
        for t in (a1, a3, b1):
            t.join(300)
            ok(t.reply)
        a2.join(300)
        assert b1.ended < a3.ended, "tenant a's third job ran before tenant b's first"
    finally:
        assert srv.stop() == 0


def write_auth(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"key-a": "a", "key-b": "b",
                                "key-ops": {"tenant": "ops", "role": "admin"}}))
    return path


def test_a_tenants_snapshot_covers_its_own_indexes_and_an_admins_all(tmp_path):
    keys = write_auth(tmp_path)
    srv = start_persistent(tmp_path / "data", "--enable-auth", "--auth-file", str(keys),
                           "--snapshot-interval-s", "0")
    try:
        for key in ("key-a", "key-b"):
            ok(call(srv, action="create_index", index_id="docs", dimension=8, index_type="L2",
                    api_key=key))
            ok(call(srv, action="add_vectors", index_id="docs", vectors=rows(rand(5, 8, 1)),
                    api_key=key))
        r = ok(call(srv, action="snapshot", api_key="key-a"))
        assert r["scope"] == "tenant" and r["written"] == 1, r
        r = ok(call(srv, action="snapshot", api_key="key-ops"))
        assert r["scope"] == "all" and r["written"] == 1 and r["unchanged"] == 1, r
    finally:
        assert srv.stop() == 0


def test_auth_file_roles_are_checked(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"k": {"tenant": "t", "role": "root"}}))
    import subprocess
    from conftest import BINARY
    out = subprocess.run([str(BINARY), "serve", "--enable-auth", "--auth-file", str(bad)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "role 'root'" in out.stdout + out.stderr


def queued_count(srv):
    """Requests that went through the scheduler's queues (vecgpu_queue_wait_seconds)."""
    import urllib.request
    with urllib.request.urlopen(srv.metrics_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vecgpu_queue_wait_seconds_count"))


def test_grpc_writes_creates_drops_and_snapshots_run_on_the_scheduler(tmp_path):
    """Vald writes, the create a first insert makes, Flush and SaveIndex (a snapshot) are queued
    like FAISSx requests (in order on their collection, fairly, within their deadline), not run
    on the gRPC thread."""
    from conftest import built_with_grpc
    if not built_with_grpc():
        pytest.skip("built without gRPC")
    from test_vald import Vald, ins, pb
    srv = start_persistent(tmp_path)
    try:
        vald = Vald(srv.grpc_target)
        steps = []
        before = queued_count(srv)
        vald(vald.insert.Insert, ins("a", np.ones(8, dtype=np.float32)))  # creates, then writes
        steps.append(queued_count(srv) - before)
        vald(vald.insert.MultiInsert, pb.Insert.MultiRequest(
            requests=[ins(f"m{i}", np.full(8, i, dtype=np.float32)) for i in range(5)]))
        steps.append(queued_count(srv) - before)
        vald(vald.remove.Remove, pb.Remove.Request(id=pb.Object.ID(id="a")))
        steps.append(queued_count(srv) - before)
        vald(vald.agent.SaveIndex, pb.Empty())
        steps.append(queued_count(srv) - before)
        vald(vald.flush.Flush, pb.Flush.Request())
        steps.append(queued_count(srv) - before)
        assert steps[0] >= 2, steps  # the create and the insert
        assert all(b > a for a, b in zip(steps, steps[1:])), steps
    finally:
        assert srv.stop() == 0


def server_threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


class IdleStreams:
    """`n` open Vald StreamSearch calls that send nothing (spread over connections of their
    own, 30 streams each: the server allows 32 a connection), each waiting on `release`."""

    def __init__(self, target, n, md=()):
        import grpc
        from test_vald import Vald, wait_ready
        self.release = threading.Event()
        self.channels = []
        for _ in range((n + 29) // 30):
            # A subchannel pool of its own: else channels to one target share one connection.
            ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            wait_ready(ch)
            self.channels.append(Vald(None, md=md, channel=ch))
        self.calls = []
        for i in range(n):
            vald = self.channels[i // 30]
            self.calls.append(vald.search.StreamSearch(self._nothing(), metadata=vald.md,
                                                       timeout=120))

    def _nothing(self):
        self.release.wait()
        return
        yield

    def close(self):
        self.release.set()
        codes = []
        for c in self.calls:
            try:
                list(c)
                codes.append("OK")
            except Exception as e:  # grpc.RpcError
                codes.append(e.code().name)
        for v in self.channels:
            v.channel.close()
        return codes


def test_idle_grpc_streams_hold_no_thread():
    """200 open Vald streams that send nothing: the server's threads stay where they were (the
    synchronous server gave each stream a thread), and a search on another stream is answered
    meanwhile."""
    from conftest import built_with_grpc
    if not built_with_grpc():
        pytest.skip("built without gRPC")
    from test_vald import Vald, ins, srch
    srv = Server("--log-level", "warning")
    try:
        vald = Vald(srv.grpc_target)
        vald(vald.insert.Insert, ins("a", np.ones(8, dtype=np.float32)))
        before = server_threads(srv.proc.pid)
        idle = IdleStreams(srv.grpc_target, 200)
        time.sleep(1.0)
        during = server_threads(srv.proc.pid)
        res = vald.stream(vald.search.StreamSearch, [srch(np.ones(8, dtype=np.float32))])
        assert res[0].response.results[0].id == "a"
        codes = idle.close()
        assert during - before < 40, (before, during)
        assert set(codes) == {"OK"}, codes
    finally:
        assert srv.stop() == 0


def test_grpc_streams_past_the_total_bound_are_refused_and_the_bound_frees():
    """--grpc-max-streams bounds the open streams of every connection together: one more gets
    RESOURCE_EXHAUSTED naming the bound, and a stream may open again once one has closed."""
    from conftest import built_with_grpc
    if not built_with_grpc():
        pytest.skip("built without gRPC")
    import grpc
    from test_vald import Vald, ins, srch
    srv = Server("--log-level", "warning", "--grpc-max-streams", "40")
    try:
        vald = Vald(srv.grpc_target)
        vald(vald.insert.Insert, ins("a", np.ones(8, dtype=np.float32)))
        idle = IdleStreams(srv.grpc_target, 40)
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as e:
            vald.stream(vald.search.StreamSearch, [srch(np.ones(8, dtype=np.float32))])
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--grpc-max-streams" in e.value.details()
        # Unary calls are not streams: still served.
        assert vald(vald.search.Search, srch(np.ones(8, dtype=np.float32))).results[0].id == "a"
        assert set(idle.close()) == {"OK"}
        time.sleep(0.2)
        res = vald.stream(vald.search.StreamSearch, [srch(np.ones(8, dtype=np.float32))])
        assert res[0].response.results[0].id == "a"
    finally:
        assert srv.stop() == 0
