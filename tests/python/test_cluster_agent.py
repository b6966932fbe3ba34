"""`vecgpu serve --join` against a real etcd (Debian's etcd-server, started here on free
loopback ports): the agent registers on a lease with what it says of itself, fences itself
(refuses writes, keeps serving searches) when it cannot renew for a TTL, takes writes again
once it has registered anew, and leaves the cluster at once on SIGTERM."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import BINARY, Server, call, fail, free_port, ok, rand, rows, uid

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd (Debian's etcd-server) is not installed")


def joins():
    out = subprocess.run([str(BINARY), "serve", "--help"], capture_output=True, text=True,
                         timeout=20).stdout
    return "--join" in out


class Etcd:
    """One etcd member as a child process; Stop keeps its data for Start."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="vecgpu-etcd-")
        self.client = f"127.0.0.1:{free_port()}"
        self.peer = f"http://127.0.0.1:{free_port()}"
        self.proc = None
        self.start()

    def start(self):
        url = "http://" + self.client
        self.proc = subprocess.Popen(
            ["etcd", "--name", "m", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
             "--initial-cluster", "m=" + self.peer, "--unsafe-no-fsync"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.ctl("endpoint", "health", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("etcd did not come up")

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def ctl(self, *args, check=True):
        return subprocess.run(["etcdctl", "--endpoints", self.client, "--dial-timeout", "1s",
                               "--command-timeout", "2s", *args],
                              env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True,
                              text=True, timeout=10, check=check)

    def agents(self):
        out = self.ctl("get", "--prefix", "/vecgpu/agents/", "-w", "json").stdout
        kvs = json.loads(out).get("kvs", [])
        import base64
        return {base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))
                for kv in kvs}

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = pred()
        if r:
            return r
        time.sleep(step)
    return pred()


def add(srv, name, seed):
    return call(srv, action="add_vectors", index_id=name, vectors=rows(rand(5, 8, seed)))


@pytest.fixture
def etcd():
    if not joins():
        pytest.skip("built without the etcd client")
    e = Etcd()
    yield e
    e.close()


def test_an_agent_registers_fences_itself_without_etcd_and_leaves_on_sigterm(etcd):
    advertise = f"127.0.0.1:{free_port()}"
    srv = Server("--join", "http://" + etcd.client, "--advertise", advertise, "--lease-ttl", "2",
                 "--log-level", "warning")
    try:
        name = uid()
        created = wait_until(lambda: call(srv, action="create_index", index_id=name,
                                          dimension=8, index_type="L2").get("success"), 15)
        assert created, "the agent never took a write"
        agents = etcd.agents()
        me = agents["/vecgpu/agents/" + advertise]
        assert me["address"] == advertise and me["id"] == advertise
        # The agent API listens where the agent said it would.
        import socket
        with socket.create_connection(("127.0.0.1", int(advertise.rsplit(":", 1)[1])), timeout=5):
            pass
        assert "cpu" in me["devices"] and me["version"].startswith("vecgpu")
        assert me["free_memory_bytes"] > 0
        ok(add(srv, name, 1))

        # etcd gone: within the TTL (2 s) the agent refuses writes, naming why; searches go on.
        etcd.stop()
        t0 = time.monotonic()
        refused = wait_until(lambda: not add(srv, name, 2).get("success"), 6, step=0.05)
        assert refused, "the agent kept taking writes without its lease"
        assert time.monotonic() - t0 < 3.0
        fail(add(srv, name, 3), "fenced", code="BUSY")
        fail(call(srv, action="create_index", index_id=uid(), dimension=8, index_type="L2"),
             code="BUSY")
        r = ok(call(srv, action="search", index_id=name, query_vectors=rows(rand(1, 8, 1)), k=1))
        assert r["results"][0]["indices"][0] >= 0

        # etcd back: a fresh lease, writes again.
        etcd.start()
        assert wait_until(lambda: add(srv, name, 4).get("success"), 20), \
            "the agent did not take writes again after etcd came back"
        assert "/vecgpu/agents/" + advertise in etcd.agents()

        # SIGTERM: the agent leaves at once (its lease revoked), not a TTL later.
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(timeout=15)
        assert "/vecgpu/agents/" + advertise not in etcd.agents()
    finally:
        srv.stop()


def test_join_needs_an_advertised_address():
    if not joins():
        pytest.skip("built without the etcd client")
    r = subprocess.run([str(BINARY), "serve", "--join", "http://127.0.0.1:1"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "--advertise" in r.stdout + r.stderr


def test_a_gateway_serves_the_faissx_client_from_agents(etcd):
    """`vecgpu gateway --etcd` over two `vecgpu serve --join` agents: the unmodified faissx
    client creates, adds and searches through the gateway; the collections spread over the
    agents (their shard maps in etcd name them); a killed agent's collections answer an
    error naming it while the other agent's are served."""
    import numpy as np
    from test_faissx_client import connect
    from faissx import client as fx
    url = "http://" + etcd.client
    agents = []
    for _ in range(2):
        adv = f"127.0.0.1:{free_port()}"
        agents.append((adv, Server("--join", url, "--advertise", adv, "--lease-ttl", "2",
                                   "--log-level", "warning")))
    gw = Server("--etcd", url, "--log-level", "warning", command="gateway")
    try:
        assert wait_until(lambda: len(etcd.agents()) == 2, 15)
        connect(gw.endpoint)
        x = rand(200, 16, 7)
        names = [uid("g") for _ in range(6)]
        for name in names:
            created = wait_until(lambda: call(gw, action="create_index", index_id=name,
                                              dimension=16, index_type="L2").get("success"), 10)
            assert created, name
            ok(call(gw, action="add_vectors", index_id=name, vectors=rows(x)))
            r = ok(call(gw, action="search", index_id=name, query_vectors=rows(x[5:6]), k=1))
            assert r["results"][0]["indices"][0] == 5
        # The faissx client, unmodified, through the gateway.
        index = fx.IndexFlatL2(16)
        index.add(x)
        d, i = index.search(x[:3], 1)
        assert list(np.asarray(i)[:, 0]) == [0, 1, 2]
        listed = ok(call(gw, action="list_indexes"))
        listed_ids = {e["index_id"] for e in listed["indexes"]}
        assert set(names) <= listed_ids

        maps = etcd.ctl("get", "--prefix", "/vecgpu/collections/", "-w", "json").stdout
        import base64
        holders = {json.loads(base64.b64decode(kv["value"]))["shards"][0]["primary"]
                   for kv in json.loads(maps)["kvs"]}
        assert holders == {adv for adv, _ in agents}, holders
        # `vecgpu cluster status` says the same.
        st = subprocess.run([str(BINARY), "cluster", "status", "--etcd", url, "--json"],
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 0, st.stdout + st.stderr
        status = json.loads(st.stdout)
        assert {m["id"] for m in status["members"]} == {adv for adv, _ in agents}
        assert set(names) <= {c["name"] for c in status["collections"]}
        assert status["unhealthy_shards"] == 0
        text = subprocess.run([str(BINARY), "cluster", "status", "--etcd", url],
                              capture_output=True, text=True, timeout=30).stdout
        assert names[0] in text and "IN-SYNC" in text

        # One agent killed: its collections fail naming it, the other's are served.
        dead_adv, dead = agents[0]
        dead.proc.kill()
        dead.proc.wait()
        assert wait_until(lambda: dead_adv not in {v["id"] for v in etcd.agents().values()}, 10)
        answers = [call(gw, action="search", index_id=n, query_vectors=rows(x[:1]), k=1)
                   for n in names]
        failed = [a for a in answers if not a.get("success")]
        served = [a for a in answers if a.get("success")]
        assert failed and served
        for a in failed:
            assert dead_adv in a["error"], a
        st = subprocess.run([str(BINARY), "cluster", "status", "--etcd", url, "--json"],
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 3  # shards whose primary is down
        down = [s for c in json.loads(st.stdout)["collections"] for s in c["shards"]
                if not s["primary_live"]]
        assert down and all(s["primary"] == dead_adv for s in down)
        # The gateway's metric counts them, and its log names them.
        import urllib.request
        with urllib.request.urlopen(gw.metrics_url + "/metrics", timeout=5) as m:
            metrics = m.read().decode()
        line = [ln for ln in metrics.splitlines()
                if ln.startswith("vecgpu_cluster_unserved_shards")][0]
        assert float(line.split()[-1]) == len(down), line
        gw.stop()
        assert "shard unserved" in gw.output and dead_adv in gw.output
    finally:
        gw.stop()
        for _, s in agents:
            s.stop()


def test_gateway_flags_are_checked():
    if not joins():
        pytest.skip("built without the etcd client")
    r = subprocess.run([str(BINARY), "gateway"], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "--etcd" in r.stdout + r.stderr
    r = subprocess.run([str(BINARY), "serve", "--etcd", "http://127.0.0.1:1"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "gateway" in r.stdout + r.stderr


def test_an_agent_that_restarts_on_its_data_is_served_again_and_nothing_moved(etcd, tmp_path):
    """kill -9 of an agent with a data directory, then a restart on the same data and address:
    the gateway serves its collections again, with every acknowledged vector, from the same
    agent (the shard map in etcd is the authority: the blip moved nothing)."""
    import base64
    url = "http://" + etcd.client
    adv = f"127.0.0.1:{free_port()}"
    args = ("--join", url, "--advertise", adv, "--lease-ttl", "2", "--data-dir",
            str(tmp_path / "agent"), "--log-level", "warning")
    agent = Server(*args)
    gw = Server("--etcd", url, "--log-level", "warning", command="gateway")
    try:
        name = uid("r")
        assert wait_until(lambda: call(gw, action="create_index", index_id=name, dimension=8,
                                       index_type="L2").get("success"), 15)
        x = rand(40, 8, 3)
        ok(call(gw, action="add_vectors", index_id=name, vectors=rows(x)))

        def primary():
            out = etcd.ctl("get", "--prefix", "/vecgpu/collections/", "-w", "json").stdout
            kvs = json.loads(out).get("kvs", [])
            return [json.loads(base64.b64decode(kv["value"]))["shards"][0]["primary"]
                    for kv in kvs]
        assert primary() == [adv]

        agent.proc.kill()
        agent.proc.wait()
        failed = call(gw, action="search", index_id=name, query_vectors=rows(x[:1]), k=1)
        assert not failed.get("success")
        agent = Server(*args)  # the same data directory and address
        answered = wait_until(lambda: call(gw, action="search", index_id=name,
                                           query_vectors=rows(x[7:8]), k=1).get("success"), 20)
        assert answered, "the gateway did not serve the restarted agent's collection"
        r = ok(call(gw, action="search", index_id=name, query_vectors=rows(x[7:8]), k=1))
        assert r["results"][0]["indices"][0] == 7
        stats = ok(call(gw, action="get_index_stats", index_id=name))
        assert stats["stats"]["vector_count"] == 40
        assert primary() == [adv]
    finally:
        gw.stop()
        agent.stop()


def test_a_gateway_speaks_the_vald_api_over_its_agents(etcd):
    """The Vald v1 API through a gateway: inserts create the collection on an agent, searches
    (unary and streamed) return the string ids, objects read back, removes remove."""
    from conftest import built_with_grpc
    if not built_with_grpc():
        pytest.skip("built without gRPC")
    import numpy as np
    from test_vald import Vald, ins, pb, srch
    url = "http://" + etcd.client
    adv = f"127.0.0.1:{free_port()}"
    agent = Server("--join", url, "--advertise", adv, "--lease-ttl", "2", "--log-level", "warning")
    gw = Server("--etcd", url, "--log-level", "warning", command="gateway")
    try:
        assert wait_until(lambda: len(etcd.agents()) == 1, 15)
        vald = Vald(gw.grpc_target).on(uid("vald"))
        x = rand(20, 8, 11)
        assert wait_until(lambda: _try(lambda: vald(vald.insert.Insert, ins("id-0", x[0]))), 15)
        for i in range(1, 20):
            vald(vald.insert.Insert, ins(f"id-{i}", x[i]))
        r = vald(vald.search.Search, srch(x[4], num=1))
        assert r.results[0].id == "id-4"
        streamed = vald.stream(vald.search.StreamSearch, [srch(x[i], num=1) for i in range(5)])
        assert [s.response.results[0].id for s in streamed] == [f"id-{i}" for i in range(5)]
        got = vald(vald.object.GetObject,
                   pb.Object.VectorRequest(id=pb.Object.ID(id="id-7")))
        assert np.allclose(got.vector, x[7])
        vald(vald.remove.Remove, pb.Remove.Request(id=pb.Object.ID(id="id-4")))
        r = vald(vald.search.Search, srch(x[4], num=1))
        assert r.results[0].id != "id-4"
    finally:
        gw.stop()
        agent.stop()


def _try(fn):
    try:
        fn()
        return True
    except Exception:  # grpc.RpcError while the agent registers
        return False
