"""Fixtures that run the real vecgpu binary on 127.0.0.1 with a free port."""
import itertools
import os
import pathlib
import signal
import socket
import subprocess
import time

import msgpack
import numpy as np
import pytest
import zmq

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("VECGPU_BIN", ROOT / "build" / "vecgpu"))


_given_ports = set()


def free_port():
    """A free loopback port, never one this process handed out before: the kernel may give
    the same ephemeral port to two binds in a row, and one server takes three of them."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no fresh free port")


_grpc_flag = None


def has_grpc_flag():
    """Whether the binary knows --grpc-port (so concurrent servers get free gRPC ports)."""
    global _grpc_flag
    if _grpc_flag is None:
        out = subprocess.run([str(BINARY), "serve", "--help"], capture_output=True, text=True,
                             timeout=20).stdout
        _grpc_flag = "--grpc-port" in out
    return _grpc_flag


_grpc_built = None


def built_with_grpc():
    """Whether this vecgpu serves gRPC (`--version` says "gRPC: yes")."""
    global _grpc_built
    if _grpc_built is None:
        out = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True,
                             timeout=20).stdout
        _grpc_built = "gRPC: yes" in out
    return _grpc_built


class Server:
    """A running `vecgpu serve` (or `command`: "gateway"); stop() sends SIGTERM and returns the exit code. Its gRPC
    port (Vald API) is a free one too: `grpc_target` is "127.0.0.1:port"."""

    def __init__(self, *args, env=None, command="serve"):
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        # Its own metrics port too, so servers of concurrent fixtures never collide on it.
        if "--metrics-port" not in args:
            args = (*args, "--metrics-port", str(free_port()))
        self.metrics_port = int(args[args.index("--metrics-port") + 1])
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        if "--grpc-port" not in args and has_grpc_flag():
            args = (*args, "--grpc-port", str(free_port()))
        self.grpc_port = int(args[args.index("--grpc-port") + 1]) if "--grpc-port" in args else 0
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log = []
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(BINARY), command, "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True)
        self._wait_ready()

    def _wait_ready(self, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read()
                raise RuntimeError(f"vecgpu exited with {self.proc.returncode}:\n{out}")
            try:
                if raw_call(self.endpoint, {"action": "ping"}, timeout_ms=300).get("success"):
                    return
            except zmq.Again:
                pass
        raise RuntimeError("vecgpu did not answer ping")

    def stop(self, timeout=5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output = self.proc.stdout.read()
        return self.proc.returncode


def start_persistent(data_dir, *args):
    """A Server on `data_dir` (--data-dir), logging at info (start-up says what it loaded)."""
    return Server("--data-dir", str(data_dir), "--log-level", "info", *args)


def kill9(srv):
    """SIGKILL: no final snapshot; the output so far lands in srv.output."""
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.output = srv.proc.stdout.read()


def raw_call(endpoint, request, timeout_ms=10000, raw=False):
    """One REQ round trip; `request` is a dict (packed here) or bytes (sent as they are)."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(endpoint)
    try:
        s.send(request if isinstance(request, (bytes, bytearray)) else msgpack.packb(request))
        reply = s.recv()
        return reply if raw else msgpack.unpackb(reply, raw=False)
    finally:
        s.close()


@pytest.fixture(scope="module")
def server():
    srv = Server("--log-level", "warning")
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def auth_server():
    srv = Server("--enable-auth", "--auth-keys", "key-a:tenant-a,key-b:tenant-b",
                 "--log-level", "warning")
    yield srv
    assert srv.stop() == 0


# Helpers shared by the protocol-level tests.
_names = itertools.count()


def uid(prefix="ix"):
    return f"{prefix}-{next(_names)}"


def call(srv, **request):
    return raw_call(srv.endpoint, request)


def ok(reply):
    assert isinstance(reply, dict), reply
    assert reply.get("success") is True, reply
    assert "error" not in reply, reply
    return reply


def fail(reply, *needles, code=None):
    """Asserts a failure reply whose error names every needle (case-insensitive)."""
    assert isinstance(reply, dict), reply
    assert reply.get("success") is False, reply
    assert isinstance(reply.get("error"), str) and reply["error"], reply
    for needle in needles:
        assert needle.lower() in reply["error"].lower(), (needle, reply)
    if code is not None:
        assert reply.get("error_code") == code, reply
    return reply


def rows(a):
    """float32-exact nested lists (msgpack float64 of float32 values)."""
    return np.asarray(a, dtype=np.float32).tolist()


def rand(n, d, seed, normalize=False):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    if normalize:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x
