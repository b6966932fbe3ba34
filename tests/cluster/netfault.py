"""netfault: a TCP proxy of the tests' own, for network faults between real processes.

A `Proxy` listens on a loopback port and forwards every connection to one upstream
address. What it does to the bytes is its **mode**, switched at run time from any thread:

- `PASS`: bytes flow both ways.
- `BLACKHOLE`: a partition that drops packets, not one that resets: connections stay open
  and no byte moves either way; new connections are accepted and starve (no upstream
  connection is made until the mode changes). The proxy stops *reading* rather than
  discarding, so when the partition heals what was sent meanwhile arrives, as TCP's
  retransmissions would deliver it (unless a side gave up and closed first).
- `delay(ms)`: every chunk is delivered `ms` after it was read, in order, in each direction
  (a round trip costs 2 * ms); a new connection waits `ms` before its upstream connect.
- `loss("up")` / `loss("down")`: bytes from the client to the upstream ("up") or back
  ("down") are read and thrown away; the other direction flows. A stream missing bytes is
  broken for good: after the heal its receiver sees garbage (HTTP/2 closes the connection).
- `REFUSE`: like a port nobody listens on: new connections are reset at once; existing
  ones are left alone (call `reset()` too for a host that went away).

`reset()` closes every current connection with a TCP reset (the mode does not change).

Modes apply to the whole proxy, or to one **source**: give the proxy an `identify(peer)`
callable that names who opened a connection (`pid_of_peer` finds the process that owns the
connecting socket, on Linux), then `set(mode, source=name)` overrides the mode for that
source's connections only (an agent partitioned from its peers: its outgoing connections to
them are blackholed, the gateway's are not). A connection's source is fixed when it is
accepted.

Every proxy of a process runs on one asyncio loop in one daemon thread (`Proxy.start`
starts it); the control methods are thread-safe and return once the change is in effect.
Standard library only.

    p = Proxy(("127.0.0.1", agent_port)).start()   # p.port is what the others dial
    p.set(BLACKHOLE); ...; p.set(PASS)
    p.set(delay(200)); p.set(loss("up")); p.reset()
"""
import asyncio
import collections
import os
import socket
import struct
import threading
import time

__all__ = ["Mode", "PASS", "BLACKHOLE", "REFUSE", "delay", "loss", "Proxy", "pid_of_peer"]

Mode = collections.namedtuple("Mode", "kind ms drop", defaults=(0.0, None))
Mode.__doc__ = ("What a proxy does to bytes: kind is pass, blackhole, delay, loss or refuse; "
                "ms the delay; drop the direction loss drops (up: client to upstream).")
PASS = Mode("pass")
BLACKHOLE = Mode("blackhole")
REFUSE = Mode("refuse")


def delay(ms):
    """Every chunk delivered `ms` milliseconds late, both directions."""
    if ms < 0:
        raise ValueError("delay must be >= 0 ms")
    return Mode("delay", float(ms))


def loss(direction):
    """Bytes in one direction ("up": client -> upstream, "down": back) are dropped."""
    if direction not in ("up", "down"):
        raise ValueError("loss direction is 'up' or 'down'")
    return Mode("loss", drop=direction)


_CHUNK = 65536
_QUEUED_CHUNKS = 64  # per direction: a delayed stream holds at most this much in the proxy


class _Loop:
    """The one event loop every Proxy of this process runs on, in a daemon thread."""
    _lock = threading.Lock()
    _loop = None

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="netfault", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def run(cls, coro, timeout=10.0):
        return asyncio.run_coroutine_threadsafe(coro, cls.get()).result(timeout)


def _rst(writer):
    """Closes a stream's socket with a TCP reset (SO_LINGER 0)."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class _Conn:
    """One proxied connection: the client's stream, the upstream's, their two pumps."""

    def __init__(self, source, client_w):
        self.source = source
        self.client_w = client_w
        self.up_w = None
        self.tasks = []

    def abort(self):
        for t in self.tasks:
            t.cancel()
        _rst(self.client_w)
        _rst(self.up_w)


class Proxy:
    """A TCP proxy on 127.0.0.1 to `upstream` (host, port), whose mode can be changed at run
    time. Thread-safe control methods; the forwarding runs on the shared netfault loop.
    `identify(peer) -> name or None` (optional) names the source of each new connection."""

    def __init__(self, upstream, port=0, name=None, identify=None):
        self.upstream = (upstream[0], int(upstream[1]))
        self.port = port
        self.name = name or f"proxy->{upstream[0]}:{upstream[1]}"
        self.identify = identify
        self._default = PASS
        self._by_source = {}
        self._conns = set()
        self._server = None
        self._changed = None  # an asyncio.Event, replaced on every change (loop thread only)
        self.stats = collections.Counter()  # accepted, up, down, dropped_up, dropped_down

    # ------------------------------------------------------------------- control (any thread)

    def start(self):
        _Loop.run(self._start())
        return self

    def close(self):
        """Stops listening and resets every connection."""
        _Loop.run(self._close())

    def set(self, mode, source=None):
        """The mode of every connection (source None), or of `source`'s connections only."""
        if not isinstance(mode, Mode):
            raise TypeError("mode must be a netfault.Mode")
        _Loop.run(self._set(mode, source))

    def clear(self, source=None):
        """Forgets the override of `source` (None: of every source) and sets nothing else."""
        _Loop.run(self._clear(source))

    def heal(self):
        """PASS for everyone: the default and every per-source override go."""
        _Loop.run(self._heal())

    def reset(self):
        """Closes every current connection with a TCP reset; the mode stays."""
        _Loop.run(self._reset())

    def mode(self, source=None):
        return self._by_source.get(source, self._default) if source else self._default

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    @property
    def connections(self):
        return len(self._conns)

    def sources(self):
        """source -> number of its open connections (None: not identified)."""
        return collections.Counter(c.source for c in list(self._conns))

    def __repr__(self):
        return f"<Proxy {self.name} :{self.port} -> {self.upstream[1]} {self._default.kind}>"

    # ------------------------------------------------------------------- the loop's side

    async def _start(self):
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self):
        if self._server is not None:
            self._server.close()
        await self._reset()

    def _notify(self):
        self._changed.set()
        self._changed = asyncio.Event()

    async def _set(self, mode, source):
        if source is None:
            self._default = mode
        else:
            self._by_source[source] = mode
        self._notify()

    async def _clear(self, source):
        if source is None:
            self._by_source.clear()
        else:
            self._by_source.pop(source, None)
        self._notify()

    async def _heal(self):
        self._default = PASS
        self._by_source.clear()
        self._notify()

    async def _reset(self):
        for c in list(self._conns):
            c.abort()
        self._conns.clear()

    def _mode_of(self, conn):
        return self._by_source.get(conn.source, self._default)

    async def _while_blackholed(self, conn):
        while self._mode_of(conn).kind == "blackhole":
            await self._changed.wait()

    async def _accept(self, client_r, client_w):
        self.stats["accepted"] += 1
        source = None
        if self.identify is not None:
            try:
                source = self.identify(client_w.get_extra_info("peername"))
            except Exception:  # an unknown peer is just one without overrides
                source = None
        conn = _Conn(source, client_w)
        self._conns.add(conn)
        conn.tasks.append(asyncio.current_task())
        try:
            await self._while_blackholed(conn)  # accepted, and starving
            mode = self._mode_of(conn)
            if mode.kind == "refuse":
                self.stats["refused"] += 1
                conn.abort()
                return
            if mode.kind == "delay":
                await asyncio.sleep(mode.ms / 1000)
            try:
                up_r, conn.up_w = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.stats["upstream_refused"] += 1
                conn.abort()
                return
            up = asyncio.ensure_future(self._pump(conn, client_r, conn.up_w, "up"))
            down = asyncio.ensure_future(self._pump(conn, up_r, client_w, "down"))
            conn.tasks += [up, down]
            await asyncio.gather(up, down, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(conn)
            if conn.up_w is not None:
                conn.up_w.close()
            client_w.close()

    async def _pump(self, conn, reader, writer, direction):
        """One direction: a reader that applies the mode to each chunk, and a writer that
        delivers the queued chunks at their time. EOF is passed on as a half-close."""
        queue = asyncio.Queue(_QUEUED_CHUNKS)
        deliver = asyncio.ensure_future(self._deliver(conn, queue, writer, direction))
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except (ConnectionError, OSError):  # reset: pass the reset on
                    conn.abort()
                    return
                await self._while_blackholed(conn)  # hold what was read: backpressure
                if not data:
                    await queue.put(None)
                    break
                mode = self._mode_of(conn)
                if mode.kind == "loss" and mode.drop == direction:
                    self.stats["dropped_" + direction] += len(data)
                    continue
                due = time.monotonic() + (mode.ms / 1000 if mode.kind == "delay" else 0.0)
                await queue.put((due, data))
            await deliver
        finally:
            deliver.cancel()

    async def _deliver(self, conn, queue, writer, direction):
        try:
            while True:
                item = await queue.get()
                if item is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._while_blackholed(conn)
                writer.write(data)
                await writer.drain()
                self.stats[direction] += len(data)
        except (ConnectionError, OSError):
            # The other side is gone: so is this connection.
            conn.abort()


# ----------------------------------------------------------------------------- sources

def _proc_key(addr, v6):
    """An IPv4 (host, port) as /proc/net/tcp writes it, or (v6) as /proc/net/tcp6 writes
    its IPv4-mapped form (dual-stack clients such as gRPC's connect that way)."""
    ip, port = addr[0], addr[1]
    if v6:
        words = struct.unpack("<4I", socket.inet_pton(socket.AF_INET6, "::ffff:" + ip))
        return "".join(f"{w:08X}" for w in words) + f":{port:04X}"
    return f"{struct.unpack('<I', socket.inet_aton(ip))[0]:08X}:{port:04X}"


def socket_inode(local, remote):
    """The inode of the TCP socket whose own address is `local` and whose peer is `remote`
    (IPv4 (host, port) pairs; the socket itself may be IPv6, IPv4-mapped), from
    /proc/net/tcp and tcp6; None when there is none."""
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        want_l, want_r = _proc_key(local, v6), _proc_key(remote, v6)
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1] == want_l and fields[2] == want_r:
                        return int(fields[9])
        except (OSError, StopIteration, ValueError):
            pass
    return None


def pid_of_peer(peer, proxy_port, candidate_pids):
    """Which of `candidate_pids` opened the connection that reached 127.0.0.1:proxy_port
    from `peer` (the accepted socket's peername); None when none of them did (or not on
    Linux). Reads /proc/net/tcp{,6} and the candidates' /proc/PID/fd."""
    if not peer or ":" in peer[0]:
        return None
    inode = socket_inode(peer, ("127.0.0.1", proxy_port))
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in candidate_pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None
