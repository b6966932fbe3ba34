"""The `vecgpu serve` command line, its configuration layers and its lifecycle (signals)."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from conftest import BINARY, Server, free_port, raw_call

KEYS = "key-a:tenant-a,key-b:tenant-b"


def clean_env(**extra):
    """The test's environment without any FAISSX_*/VECGPU_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAISSX_", "VECGPU_"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_refused(*args, env=None, timeout=10):
    """Runs `vecgpu serve ARGS`, which must exit non-zero on its own; returns its output."""
    try:
        p = subprocess.run([str(BINARY), "serve", *args], env=env or clean_env(),
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"vecgpu serve {args} kept running instead of refusing to start: {e.output}")
    assert p.returncode != 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout + p.stderr


def port_is_free(port):
    """True when nothing listens on 127.0.0.1:port (we can bind it ourselves). SO_REUSEADDR
    lets the bind ignore connections of a stopped server lingering in TIME_WAIT, while a
    listening socket still makes it fail."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Launched:
    """`vecgpu serve ARGS` started without the --port that conftest's Server always adds."""

    def __init__(self, args, env, port):
        self.endpoint = f"tcp://127.0.0.1:{port}"
        if "--metrics-port" not in args:  # the default metrics port may be taken by a fixture
            args = [*args, "--metrics-port", "0"]
        if "--grpc-port" not in args:  # nor the default gRPC port (8081)
            args = [*args, "--grpc-port", "0"]
        self.proc = subprocess.Popen([str(BINARY), "serve", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vecgpu exited with {self.proc.returncode}: "
                                     f"{self.proc.stdout.read()}")
            try:
                if raw_call(self.endpoint, {"action": "ping"}, timeout_ms=300).get("success"):
                    return
            except zmq.Again:
                pass
        self.stop()
        raise AssertionError(f"vecgpu did not answer on {self.endpoint}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output = self.proc.stdout.read()
        return self.proc.returncode


@pytest.fixture
def launch():
    started = []

    def start(args=(), env=None, port=None):
        srv = Launched(list(args), env or clean_env(), port)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        assert srv.stop() == 0, srv.output


def call(endpoint, **req):
    return raw_call(endpoint, req)


def assert_auth_required(endpoint, key, tenant):
    r = call(endpoint, action="list_indexes")
    assert r["success"] is False and r["error"] == "API key required", r
    assert r["error_code"] == "AUTH_ERROR"
    r = call(endpoint, action="list_indexes", api_key=key + "-wrong")
    assert r["success"] is False and r["error"] == "Invalid API key", r
    name = f"cli-{time.monotonic_ns()}"
    assert call(endpoint, action="create_index", index_id=name, dimension=2, api_key=key)["success"]
    r = call(endpoint, action="list_indexes", api_key=key, tenant_id=tenant)
    assert r["success"] is True and name in [e["index_id"] for e in r["indexes"]], r


# ---------------------------------------------------------------------------------------------
# flags that must refuse to start


def test_version_prints_a_version():
    p = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p
    out = p.stdout + p.stderr
    assert "vecgpu" in out, out
    assert re.search(r"\d+\.\d+\.\d+", out), out


def test_help_lists_the_flags():
    p = subprocess.run([str(BINARY), "serve", "--help"], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 0, p
    for flag in ("--port", "--enable-auth", "--auth-keys", "--auth-file", "--config", "--gpus",
                 "--data-dir", "--max-request-bytes", "--allow-unauthenticated-remote"):
        assert flag in p.stdout, flag


def test_unknown_flag_is_refused():
    out = run_refused("--port", str(free_port()), "--no-such-flag")
    assert "--no-such-flag" in out


def test_bad_durability_is_refused(tmp_path):
    port = free_port()
    out = run_refused("--port", str(port), "--data-dir", str(tmp_path), "--durability", "maybe")
    assert "durability" in out and "maybe" in out, out
    assert port_is_free(port)


def test_faissx_data_dir_env_persists_there(tmp_path):
    srv = Server(env=clean_env(FAISSX_DATA_DIR=tmp_path))
    try:
        raw_call(srv.endpoint, {"action": "create_index", "index_id": "c", "dimension": 4,
                                "index_type": "L2"})
    finally:
        assert srv.stop() == 0
    assert list((tmp_path / "wal").glob("*.log")), list(tmp_path.iterdir())


def test_enable_auth_without_keys_refuses_to_start():
    port = free_port()
    out = run_refused("--port", str(port), "--enable-auth")
    assert "no API keys" in out or "no api keys" in out.lower(), out
    assert port_is_free(port)


def test_enable_auth_with_an_empty_auth_file_refuses_to_start(tmp_path):
    f = tmp_path / "keys.json"
    f.write_text("{}")
    out = run_refused("--port", str(free_port()), "--enable-auth", "--auth-file", str(f))
    assert "key" in out.lower(), out


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"k": 5}', '{"k": ""}'],
                         ids=["garbage", "array", "int-tenant", "empty-tenant"])
def test_bad_auth_file_refuses_to_start(tmp_path, content):
    f = tmp_path / "keys.json"
    f.write_text(content)
    out = run_refused("--port", str(free_port()), "--enable-auth", "--auth-file", str(f))
    assert "auth-file" in out, out


def test_missing_auth_file_refuses_to_start(tmp_path):
    out = run_refused("--port", str(free_port()), "--enable-auth", "--auth-file",
                      str(tmp_path / "absent.json"))
    assert "auth-file" in out, out


def test_auth_keys_and_auth_file_together_are_refused(tmp_path):
    f = tmp_path / "keys.json"
    f.write_text(json.dumps({"key-f": "tenant-f"}))
    out = run_refused("--port", str(free_port()), "--enable-auth", "--auth-keys", KEYS,
                      "--auth-file", str(f))
    assert "auth-keys" in out and "auth-file" in out, out


def test_non_loopback_bind_without_auth_refuses_to_start():
    port = free_port()
    out = run_refused("--port", str(port), "--bind-address", "0.0.0.0")
    assert "0.0.0.0" in out and "authentication" in out.lower(), out
    assert "--allow-unauthenticated-remote" in out, out
    assert port_is_free(port)


def test_port_in_use_fails_with_a_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_refused("--port", str(port))
        assert str(port) in out, out


@pytest.mark.parametrize("args", [["--port", "0"], ["--port", "70000"],
                                  ["--log-level", "chatty"], ["--max-depth", "1"],
                                  ["--max-k", "0"], ["--io-threads", "0"],
                                  ["--max-request-bytes", "1000", "--max-message-bytes", "500"]],
                         ids=["port-0", "port-70000", "log-level", "max-depth", "max-k",
                              "io-threads", "message-below-request"])
def test_invalid_settings_are_refused(args):
    out = run_refused(*args)
    assert out.strip(), "no message"


# ---------------------------------------------------------------------------------------------
# flags that start a server


def test_non_loopback_bind_allowed_explicitly_logs_a_warning():
    srv = Server("--bind-address", "0.0.0.0", "--allow-unauthenticated-remote",
                 env=clean_env())
    try:
        assert call(srv.endpoint, action="list_indexes")["success"] is True
    finally:
        assert srv.stop() == 0
    assert "warn" in srv.output.lower() and "authentication" in srv.output.lower(), srv.output


def test_auth_file_json_works(tmp_path):
    f = tmp_path / "keys.json"
    f.write_text(json.dumps({"file-key": "file-tenant", "other": "t2"}))
    srv = Server("--enable-auth", "--auth-file", str(f), "--log-level", "warning",
                 env=clean_env())
    try:
        assert_auth_required(srv.endpoint, "file-key", "file-tenant")
        r = call(srv.endpoint, action="list_indexes", api_key="other")
        assert r["success"] is True and r["indexes"] == [], r  # another tenant sees nothing
        assert call(srv.endpoint, action="ping")["success"] is True
    finally:
        assert srv.stop() == 0


def test_auth_keys_work_and_auth_binds_all_interfaces_by_default():
    srv = Server("--enable-auth", "--auth-keys", KEYS, "--log-level", "info", env=clean_env())
    try:
        assert_auth_required(srv.endpoint, "key-a", "tenant-a")
    finally:
        assert srv.stop() == 0
    assert f"0.0.0.0:{srv.port}" in srv.output, srv.output


def test_without_auth_binds_loopback_by_default():
    srv = Server("--log-level", "info", env=clean_env())
    try:
        assert call(srv.endpoint, action="list_indexes")["success"] is True
    finally:
        assert srv.stop() == 0
    assert f"127.0.0.1:{srv.port}" in srv.output, srv.output


def test_log_file_receives_the_log(tmp_path):
    log = tmp_path / "vecgpu.log"
    srv = Server("--log-level", "info", "--log-file", str(log), env=clean_env())
    try:
        assert call(srv.endpoint, action="ping")["success"] is True
    finally:
        assert srv.stop() == 0
    text = log.read_text()
    assert str(srv.port) in text and "SIGTERM" in text, text


@pytest.mark.parametrize("var", ["FAISSX_PORT", "VECGPU_PORT"])
def test_port_from_environment(launch, var):
    port = free_port()
    srv = launch(["--log-level", "warning"], env=clean_env(**{var: port}), port=port)
    assert call(srv.endpoint, action="ping")["success"] is True


def test_port_flag_overrides_environment(launch):
    env_port, flag_port = free_port(), free_port()
    assert env_port != flag_port
    srv = launch(["--port", str(flag_port), "--log-level", "warning"],
                 env=clean_env(FAISSX_PORT=env_port, VECGPU_PORT=env_port), port=flag_port)
    assert call(srv.endpoint, action="ping")["success"] is True
    assert port_is_free(env_port)


def test_enable_auth_and_auth_file_from_environment(launch, tmp_path):
    f = tmp_path / "keys.json"
    f.write_text(json.dumps({"env-key": "env-tenant"}))
    port = free_port()
    srv = launch(["--port", str(port), "--log-level", "warning"],
                 env=clean_env(FAISSX_ENABLE_AUTH=1, FAISSX_AUTH_FILE=f), port=port)
    assert_auth_required(srv.endpoint, "env-key", "env-tenant")


@pytest.mark.parametrize("value", ["1", "true"])
def test_enable_auth_from_environment_without_keys_refuses_to_start(value):
    out = run_refused("--port", str(free_port()), env=clean_env(FAISSX_ENABLE_AUTH=value))
    assert "key" in out.lower(), out


def test_enable_auth_0_in_environment_leaves_auth_off(launch):
    port = free_port()
    srv = launch(["--port", str(port), "--log-level", "warning"],
                 env=clean_env(FAISSX_ENABLE_AUTH=0), port=port)
    assert call(srv.endpoint, action="list_indexes")["success"] is True


def test_auth_keys_flag_with_auth_file_from_environment_is_refused(tmp_path):
    f = tmp_path / "keys.json"
    f.write_text(json.dumps({"env-key": "env-tenant"}))
    out = run_refused("--port", str(free_port()), "--enable-auth", "--auth-keys", KEYS,
                      env=clean_env(FAISSX_AUTH_FILE=f))
    assert "auth-keys" in out and "auth-file" in out, out


def test_config_file_works(launch, tmp_path):
    port = free_port()
    cfg = tmp_path / "vecgpu.json"
    cfg.write_text(json.dumps({"port": port, "enable_auth": True, "auth_keys": "cfg-key:cfg-t",
                               "log_level": "warning", "max_k": 3}))
    srv = launch(["--config", str(cfg)], port=port)
    assert_auth_required(srv.endpoint, "cfg-key", "cfg-t")
    name = "cfg-limit"
    assert call(srv.endpoint, action="create_index", index_id=name, dimension=1,
                api_key="cfg-key")["success"]
    r = call(srv.endpoint, action="search", index_id=name, query_vectors=[[0.0]], k=4,
             api_key="cfg-key")
    assert r["success"] is False and "k" in r["error"], r


def test_environment_overrides_config_and_flags_override_both(launch, tmp_path):
    cfg_port, env_port, flag_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "vecgpu.json"
    cfg.write_text(json.dumps({"port": cfg_port, "log-level": "warning"}))
    srv = launch(["--config", str(cfg)], env=clean_env(VECGPU_PORT=env_port), port=env_port)
    assert call(srv.endpoint, action="ping")["success"] is True
    assert port_is_free(cfg_port)
    env_port2 = free_port()
    srv2 = launch(["--config", str(cfg), "--port", str(flag_port)],
                  env=clean_env(FAISSX_PORT=env_port2), port=flag_port)
    assert call(srv2.endpoint, action="ping")["success"] is True
    assert port_is_free(cfg_port) and port_is_free(env_port2)


def test_config_with_an_unknown_setting_is_refused(tmp_path):
    cfg = tmp_path / "vecgpu.json"
    cfg.write_text(json.dumps({"port": free_port(), "no_such_setting": 1}))
    out = run_refused("--config", str(cfg))
    assert "no_such_setting" in out, out


@pytest.mark.parametrize("content", ["{", "[]"], ids=["invalid", "not-object"])
def test_bad_config_file_is_refused(tmp_path, content):
    cfg = tmp_path / "vecgpu.json"
    cfg.write_text(content)
    out = run_refused("--config", str(cfg), "--port", str(free_port()))
    assert "config" in out, out


def test_missing_config_file_is_refused(tmp_path):
    out = run_refused("--config", str(tmp_path / "absent.json"), "--port", str(free_port()))
    assert "config" in out, out


def test_gpus_7_without_a_gpu_serves_from_the_cpu():
    srv = Server("--gpus", "7", env=clean_env())
    try:
        e = srv.endpoint
        assert call(e, action="create_index", index_id="g", dimension=2)["success"]
        assert call(e, action="add_vectors", index_id="g", vectors=[[0, 0], [1, 1]])["success"]
        r = call(e, action="search", index_id="g", query_vectors=[[1, 1]], k=1)
        assert r["success"] and r["results"][0]["indices"] == [1], r
        st = call(e, action="get_index_status", index_id="g")["status"]
        assert st["device"].lower() == "cpu", st
    finally:
        assert srv.stop() == 0
    log = srv.output
    assert "7" in log and "cpu" in log.lower(), log


# ---------------------------------------------------------------------------------------------
# signals


def _wait_exit(proc, seconds):
    start = time.monotonic()
    try:
        rc = proc.wait(timeout=seconds + 3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"vecgpu did not exit within {seconds + 3} s of the signal")
    return rc, time.monotonic() - start


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_an_idle_server_with_exit_code_0(sig):
    srv = Server("--log-level", "warning", env=clean_env())
    srv.proc.send_signal(sig)
    rc, elapsed = _wait_exit(srv.proc, 2.0)
    assert rc == 0
    assert elapsed < 2.0, elapsed
    assert port_is_free(srv.port)


class Hammer:
    """Client threads sending searches back to back until told to stop."""

    def __init__(self, endpoint, name, d, threads=4):
        self.endpoint, self.name, self.d = endpoint, name, d
        self.stop = threading.Event()
        self.done = [0] * threads
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        ctx = zmq.Context.instance()
        q = np.random.default_rng(i).standard_normal((64, self.d)).astype("<f4").tobytes()
        msg = msgpack.packb({"action": "search", "index_id": self.name, "query_vectors": q,
                             "k": 10, "binary": True})
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.endpoint)
        try:
            while not self.stop.is_set():
                s.send(msg)
                while not self.stop.is_set():
                    if s.poll(50):
                        reply = msgpack.unpackb(s.recv())
                        if not reply.get("success"):
                            self.errors.append(reply)
                        self.done[i] += 1
                        break
        finally:
            s.close()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_a_busy_server_within_2_seconds(sig):
    srv = Server("--log-level", "warning", env=clean_env())
    hammer = None
    slow = None
    try:
        d = 64
        x = np.random.default_rng(0).standard_normal((10000, d)).astype("<f4")
        e = srv.endpoint
        assert call(e, action="create_index", index_id="busy", dimension=d)["success"]
        assert call(e, action="add_vectors", index_id="busy", vectors=x.tobytes())["success"]
        hammer = Hammer(e, "busy", d)
        # One long write in flight too: clustering that takes far longer than the grace period.
        slow = zmq.Context.instance().socket(zmq.REQ)
        slow.setsockopt(zmq.LINGER, 0)
        slow.connect(e)
        big = np.random.default_rng(1).standard_normal((60000, 32)).astype("<f4")
        slow.send(msgpack.packb({"action": "compute_clustering", "vectors": big.tobytes(),
                                 "dimension": 32, "n_clusters": 1000, "niter": 200}))
        deadline = time.monotonic() + 20
        start = list(hammer.done)
        while min(n - s for n, s in zip(hammer.done, start)) < 3:
            assert time.monotonic() < deadline, hammer.done
            assert srv.proc.poll() is None
            time.sleep(0.01)
        assert not hammer.errors, hammer.errors[:3]
        assert not slow.poll(0), "the clustering finished too soon to be in flight"
        srv.proc.send_signal(sig)
        rc, elapsed = _wait_exit(srv.proc, 2.0)
        assert rc == 0
        assert elapsed < 2.0, elapsed
    finally:
        if hammer:
            hammer.join()
        if slow is not None:
            slow.close()
        srv.stop()


def healthcheck(*args, env=None):
    return subprocess.run([str(BINARY), "healthcheck", *args], capture_output=True, text=True,
                          timeout=20, env=env or clean_env())


def test_healthcheck_answers_for_a_running_server():
    srv = Server("--log-level", "warning")
    try:
        port = str(srv.metrics_port)
        alive = healthcheck("--metrics-port", port)
        assert alive.returncode == 0 and alive.stdout == "ok\n", alive
        ready = healthcheck("--metrics-port", port, "--ready")
        assert ready.returncode == 0 and ready.stdout == "ready\n", ready
        # The port from the environment, as the container images' HEALTHCHECK uses it, and
        # the all-interfaces address reached through loopback.
        for var in ("VECGPU_METRICS_PORT", "FAISSX_METRICS_PORT"):
            env = clean_env(**{var: port, "VECGPU_METRICS_ADDRESS": "0.0.0.0"})
            assert healthcheck(env=env).returncode == 0
    finally:
        assert srv.stop() == 0
    gone = healthcheck("--metrics-port", port, "--timeout-ms", "500")
    assert gone.returncode == 1
    assert f"no answer from http://127.0.0.1:{port}/healthz" in gone.stderr


def test_healthcheck_refuses_a_port_of_0():
    r = healthcheck("--metrics-port", "0")
    assert r.returncode == 2 and "no HTTP listener" in r.stderr + r.stdout
