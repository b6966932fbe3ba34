"""tests/cluster/netfault.py, the TCP proxy the network-fault tests put between gateway,
agents and etcd, against a local server that greets each connection and echoes (and records)
what it receives: pass, blackhole (open, starving, healing without loss), delay, one-way
loss each way, refuse, reset, per-source rules and switching modes on live connections."""
import os
import socket
import sys
import threading
import time

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import netfault  # noqa: E402
from netfault import BLACKHOLE, PASS, REFUSE, Proxy, delay, loss  # noqa: E402

GREETING = b"hi\n"


class EchoServer:
    """Sends GREETING to each new connection, then echoes; keeps what it received."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.accepted = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn):
        with conn:
            try:
                conn.sendall(GREETING)
                while data := conn.recv(65536):
                    with self._lock:
                        self.received += data
                    conn.sendall(data)
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def echo():
    srv = EchoServer()
    yield srv
    srv.close()


@pytest.fixture
def proxy(echo):
    p = Proxy(("127.0.0.1", echo.port), name="echo").start()
    yield p
    p.close()


def dial(port, timeout=2.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exactly(s, n, timeout):
    s.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {out!r}")
        out += chunk
    return out


def silent(s, seconds):
    """True when nothing arrives (and the connection is not closed) for `seconds`."""
    s.settimeout(seconds)
    try:
        return s.recv(1) is None
    except socket.timeout:
        return True


def wait_for(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_pass_forwards_both_ways(proxy, echo):
    with dial(proxy.port) as s:
        assert recv_exactly(s, 3, 2) == GREETING
        s.sendall(b"x" * 200000)
        assert recv_exactly(s, 200000, 5) == b"x" * 200000
    assert wait_for(lambda: proxy.stats["up"] == 200000 and proxy.stats["down"] == 200003)


def test_blackhole_starves_open_connections_and_new_ones_then_heals_without_loss(proxy, echo):
    old = dial(proxy.port)
    assert recv_exactly(old, 3, 2) == GREETING
    proxy.set(BLACKHOLE)
    old.sendall(b"during")
    assert silent(old, 0.5)  # no reply, no EOF, no reset
    # A new connection is accepted (connect succeeds) but never reaches the server.
    accepted = echo.accepted
    new = dial(proxy.port)
    new.sendall(b"hello")
    assert silent(new, 0.5)
    assert echo.accepted == accepted and b"during" not in echo.received
    assert proxy.connections == 2
    proxy.set(PASS)  # healed: what was sent meanwhile arrives, as after retransmissions
    assert recv_exactly(old, 6, 2) == b"during"
    assert recv_exactly(new, 8, 2) == GREETING + b"hello"
    old.close()
    new.close()


def test_delay_applies_to_each_direction_and_keeps_order(proxy):
    with dial(proxy.port) as s:
        assert recv_exactly(s, 3, 2) == GREETING
        proxy.set(delay(200))
        t0 = time.monotonic()
        for i in range(5):
            s.sendall(b"%d" % i)
            time.sleep(0.01)
        got = recv_exactly(s, 5, 3)
        took = time.monotonic() - t0
    assert got == b"01234"
    assert 0.4 <= took < 1.2, took


def test_loss_up_drops_what_the_client_sends_while_the_server_still_speaks(proxy, echo):
    proxy.set(loss("up"))
    with dial(proxy.port) as s:
        assert recv_exactly(s, 3, 2) == GREETING  # down flows
        s.sendall(b"lost")
        assert silent(s, 0.5)
    assert b"lost" not in echo.received
    assert wait_for(lambda: proxy.stats["dropped_up"] == 4)


def test_loss_down_delivers_to_the_server_and_drops_its_answers(proxy, echo):
    proxy.set(loss("down"))
    with dial(proxy.port) as s:
        s.sendall(b"arrives")
        assert wait_for(lambda: b"arrives" in echo.received)  # up flows
        assert silent(s, 0.5)  # neither the greeting nor the echo
    assert proxy.stats["dropped_down"] >= 3 + 7


def test_refuse_resets_new_connections_and_reset_closes_open_ones(proxy):
    old = dial(proxy.port)
    assert recv_exactly(old, 3, 2) == GREETING
    proxy.set(REFUSE)
    with pytest.raises((ConnectionResetError, EOFError)):
        with dial(proxy.port) as s:  # accepted by the kernel, then reset (maybe before
            if not s.recv(1):        # connect() has returned)
                raise EOFError
    old.sendall(b"still")  # refuse leaves open connections alone
    assert recv_exactly(old, 5, 2) == b"still"
    proxy.reset()
    old.settimeout(2)
    with pytest.raises((ConnectionResetError, EOFError, BrokenPipeError)):
        old.sendall(b"x")
        if not old.recv(1):
            raise EOFError
    old.close()
    proxy.set(PASS)
    with dial(proxy.port) as s:
        assert recv_exactly(s, 3, 2) == GREETING


def test_modes_switch_on_live_connections(proxy):
    with dial(proxy.port) as s:
        assert recv_exactly(s, 3, 2) == GREETING
        for mode in (delay(50), BLACKHOLE, loss("down"), PASS):
            proxy.set(mode)
            if mode.kind == "blackhole":
                s.sendall(b"b")
                assert silent(s, 0.3)
            elif mode.kind == "loss":
                s.sendall(b"l")
                assert silent(s, 0.3)
            else:
                s.sendall(b"ok")
                assert recv_exactly(s, 2, 2) == b"ok"
        # What blackhole held went on under loss("down"): up to the server, echo dropped.
        assert proxy.stats["dropped_down"] == 2
        assert proxy.mode() == PASS


def test_a_source_rule_applies_to_that_source_only(echo):
    # The test process is the only client: identify its connections by the port they come
    # from, one source per connection.
    names = {}
    p = Proxy(("127.0.0.1", echo.port), identify=lambda peer: names.get(peer[1], "other"))
    p.start()
    try:
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
        names[a.getsockname()[1]] = "a"
        p.set(BLACKHOLE, source="a")
        a.settimeout(2)
        a.connect(("127.0.0.1", p.port))
        with a, dial(p.port) as b:
            assert recv_exactly(b, 3, 2) == GREETING  # b is "other": passes
            assert silent(a, 0.4)
            p.heal()
            assert recv_exactly(a, 3, 2) == GREETING
    finally:
        p.close()


def test_pid_of_peer_finds_the_process_that_connected(proxy):
    seen = []
    p = Proxy(proxy.upstream, identify=lambda peer: seen.append(
        netfault.pid_of_peer(peer, p.port, [os.getpid()])))
    p.start()
    try:
        with dial(p.port) as s:
            assert recv_exactly(s, 3, 2) == GREETING
        # A dual-stack client (gRPC's are) connects from an IPv4-mapped IPv6 socket.
        with socket.socket(socket.AF_INET6) as s6:
            s6.settimeout(2)
            s6.connect(("::ffff:127.0.0.1", p.port))
            assert recv_exactly(s6, 3, 2) == GREETING
        assert seen == [os.getpid(), os.getpid()]
    finally:
        p.close()


def test_an_upstream_that_is_down_closes_the_connection():
    with socket.socket() as nobody:  # a port nobody listens on
        nobody.bind(("127.0.0.1", 0))
        port = nobody.getsockname()[1]
    p = Proxy(("127.0.0.1", port)).start()
    try:
        try:  # closed, or reset (even while connect() returns)
            with dial(p.port) as s:
                assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        assert wait_for(lambda: p.stats["upstream_refused"] == 1)
    finally:
        p.close()
