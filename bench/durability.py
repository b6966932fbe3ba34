#!/usr/bin/env python3
"""Durability benchmark: what `--data-dir` costs, and what snapshots and recovery take.

  .venv/bin/python bench/durability.py              # the full run (about 8 minutes on 2 cores)
  .venv/bin/python bench/durability.py --quick      # every part for a few seconds, small sizes
  .venv/bin/python bench/durability.py --parts 2,3 --rows 1000000

Part 1, add throughput: 16 concurrent writers (closed loop), each sending add_vectors of 100 x
128 float32 vectors (binary float32 encoding by default) to a flat L2 index, all 16 on one
index and then one index each, against a server without a data directory, with
`--data-dir D --durability sync` and with `--durability async`; vectors/s, requests/s and
p50/p99 add latency over a window after a warm-up, each run repeated (--reps).

Part 2, search latency during a snapshot of a large flat index (--rows, default 1,000,000 x
128): a few closed-loop one-query searchers (k = 10), without a snapshot and while snapshots
triggered with `{"action": "snapshot"}` run; once with a writer adding one vector in a loop
(its worst add latency is the write pause seen by a client), once without. The server of parts
2 and 3 runs with `--snapshot-log-mb 0 --snapshot-interval-s 0`, so that only the snapshots
this script triggers happen.

Part 3, recovery of that index: SIGKILL right after a snapshot, restart, time until it answers
(cold page cache when /proc/sys/vm/drop_caches can be written, then warm), beside the time to
read the snapshot files once; then SIGKILL after adding --replay-rows vectors past the
snapshot, and restart to replay them.

Writes bench/results/durability-<UTC time>-<commit>.json (and .md) and prints markdown tables.
Servers run on loopback on free ports and are always stopped; data directories are temporary
(--tmp-dir) and removed.
"""
import argparse
import json
import multiprocessing as mp
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import msgpack
import numpy as np
import zmq

ROOT = pathlib.Path(__file__).resolve().parents[1]
DIM = 128


# ---------------------------------------------------------------------------------------------
# Servers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(endpoint, request, timeout_ms=120000):
    """One REQ round trip (a fresh socket); the unpacked reply."""
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(endpoint)
    try:
        s.send(msgpack.packb(request, use_bin_type=True))
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close()


def ok(reply):
    if not isinstance(reply, dict) or not reply.get("success"):
        raise RuntimeError(f"request failed: {reply}")
    return reply


class VecgpuServer:
    """A `vecgpu serve` on free loopback ports, its log in a file. stop() or kill() it."""

    def __init__(self, binary, log_path, *args):
        self.binary = str(binary)
        self.args = list(args)
        self.log_path = log_path
        self.proc = None

    def start(self, ready_timeout=600.0):
        """Starts it and waits until it answers ping; returns seconds from spawn to answer."""
        self.port = free_port()
        self.metrics_port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        cmd = [self.binary, "serve", "--port", str(self.port), "--grpc-port", "0", "--metrics-port",
               str(self.metrics_port), *self.args]
        self.log = open(self.log_path, "a")
        self.log.write(f"# {' '.join(cmd)}\n")
        self.log.flush()
        self.log_offset = self.log.tell()
        # The binary may be relinked by a build now and then: wait for it to be there again.
        deadline = time.monotonic() + 120
        while True:
            try:
                t0 = time.monotonic()
                self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise
                print(f"  ({self.binary}: {e}; retrying)", file=sys.stderr)
                time.sleep(2)
        self.started = t0
        return self.wait_ready(ready_timeout)

    def wait_ready(self, timeout):
        deadline = self.started + timeout
        ctx = zmq.Context.instance()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vecgpu exited with {self.proc.returncode}; log: "
                                   f"{self.log_path}\n{self.log_text()[-3000:]}")
            s = ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, 50)
            s.connect(self.endpoint)
            try:
                s.send(msgpack.packb({"action": "ping"}))
                if msgpack.unpackb(s.recv(), raw=False).get("success"):
                    return time.monotonic() - self.started
            except zmq.Again:
                pass
            finally:
                s.close()
        raise RuntimeError("vecgpu did not answer ping")

    def log_text(self):
        """This start's part of the log."""
        self.log.flush()
        with open(self.log_path) as f:
            f.seek(self.log_offset)
            return f.read()

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def metrics(self):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    def stop(self, timeout=120.0):
        """SIGTERM (a data-dir server takes a final snapshot); the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._close()

    def kill(self):
        """SIGKILL, as a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self._close()

    def _close(self):
        if self.proc is None:
            return None
        rc = self.proc.returncode
        if not self.log.closed:
            self.log.close()
        return rc


# ---------------------------------------------------------------------------------------------
# Measurement helpers


def ms(values_s, p):
    return float(np.percentile(np.asarray(values_s) * 1000.0, p)) if len(values_s) else None


def lat_summary(values_s):
    v = np.asarray(values_s, dtype=np.float64)
    if not len(v):
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": int(len(v)), "p50_ms": ms(v, 50), "p99_ms": ms(v, 99),
            "max_ms": float(v.max() * 1000.0), "mean_ms": float(v.mean() * 1000.0)}


def machine_busy():
    """(busy, total) jiffies of every CPU, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def mem_available_gb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def vectors(rng, n, clustered=False):
    if not clustered:
        return rng.random((n, DIM), dtype=np.float32)
    centers = rng.standard_normal((100, DIM)).astype(np.float32) * 4
    return centers[rng.integers(0, 100, n)] + rng.standard_normal((n, DIM), dtype=np.float32)


def add_request(index_id, x, encoding):
    body = x.tobytes() if encoding == "binary" else x.astype(np.float64).tolist()
    return msgpack.packb({"action": "add_vectors", "index_id": index_id, "vectors": body},
                         use_bin_type=True)


# ---------------------------------------------------------------------------------------------
# Part 1: add throughput


def writer_process(endpoint, index_ids, batch, encoding, seed, t_start, t_begin, t_end, out):
    """Closed-loop writers, one REQ socket each, multiplexed on one thread, sending from
    t_start (monotonic time). Records the latency of each add that both starts and ends inside
    [t_begin, t_end]; sends nothing after t_end."""
    ctx = zmq.Context()
    rng = np.random.default_rng(seed)
    socks, payloads, sent_at = [], [], {}
    poller = zmq.Poller()
    for ix in index_ids:
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        poller.register(s, zmq.POLLIN)
        socks.append(s)
        payloads.append(add_request(ix, vectors(rng, batch), encoding))
    lat, errors, done_in_window = [], {}, 0
    time.sleep(max(0.0, t_start - time.monotonic()))
    cpu0 = time.process_time()
    for i, s in enumerate(socks):
        sent_at[s] = time.monotonic()
        s.send(payloads[i])
    outstanding = len(socks)
    index_of = {s: i for i, s in enumerate(socks)}
    while outstanding:
        events = poller.poll(1000)
        now = time.monotonic()
        if not events and now > t_end + 120:
            errors["no reply"] = errors.get("no reply", 0) + outstanding
            break
        for s, _ in events:
            reply = msgpack.unpackb(s.recv(), raw=False)
            t = time.monotonic()
            t0 = sent_at[s]
            if not reply.get("success"):
                kind = reply.get("error_code") or str(reply.get("error"))[:60]
                errors[kind] = errors.get(kind, 0) + 1
            elif t0 >= t_begin and t <= t_end:
                lat.append(t - t0)
            if t_begin <= t <= t_end and reply.get("success"):
                done_in_window += 1
            if t < t_end:
                sent_at[s] = time.monotonic()
                s.send(payloads[index_of[s]])
            else:
                poller.unregister(s)
                outstanding -= 1
    cpu = time.process_time() - cpu0
    for s in socks:
        s.close()
    ctx.term()
    out.put({"lat": np.asarray(lat, dtype=np.float64).tobytes(), "done": done_in_window,
             "errors": errors, "cpu_s": cpu})


def run_add(server, layout, args):
    """16 writers on one index ("one") or on one index each ("sixteen"); one measured run."""
    n = args.writers
    if layout == "one":
        ids = ["shared"] * n
        ok(call(server.endpoint, {"action": "create_index", "index_id": "shared",
                                  "dimension": DIM, "index_type": "L2"}))
    else:
        ids = [f"w{i}" for i in range(n)]
        for ix in ids:
            ok(call(server.endpoint, {"action": "create_index", "index_id": ix,
                                      "dimension": DIM, "index_type": "L2"}))
    procs_n = max(1, min(args.writer_procs, n))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    # Spawned interpreters take a while to start: the writers begin after every one is up.
    t_start = time.monotonic() + 3.0
    t_begin = t_start + args.warmup
    t_end = t_begin + args.duration
    procs = []
    for p in range(procs_n):
        mine = ids[p::procs_n]
        procs.append(ctx.Process(target=writer_process,
                                 args=(server.endpoint, mine, args.batch, args.encoding, 100 + p,
                                       t_start, t_begin, t_end, q)))
    for p in procs:
        p.start()
    time.sleep(max(0.0, t_begin - time.monotonic()))
    cpu0, busy0 = server.cpu_seconds(), machine_busy()
    time.sleep(max(0.0, t_end - time.monotonic()))
    cpu1, busy1 = server.cpu_seconds(), machine_busy()
    results = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    lat = np.concatenate([np.frombuffer(r["lat"], dtype=np.float64) for r in results])
    done = sum(r["done"] for r in results)
    errors = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    total = sum(ok(call(server.endpoint, {"action": "get_index_stats", "index_id": ix}))["ntotal"]
                for ix in sorted(set(ids)))
    ncpu = os.cpu_count() or 1
    res = {
        "requests_per_s": done / args.duration,
        "vectors_per_s": done * args.batch / args.duration,
        "latency": lat_summary(lat),
        "errors": errors,
        "server_cpu_cores": (cpu1 - cpu0) / args.duration,
        "client_cpu_cores": sum(r["cpu_s"] for r in results) / (args.duration + args.warmup),
        "machine_busy_share": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "ncpu": ncpu,
        "vectors_at_end": total,
    }
    return res


def metrics_clues(text):
    keep = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if ("add_vectors" in line and ("_sum" in line or "_count" in line)) or \
                "queue_wait_seconds_sum" in line or "queue_wait_seconds_count" in line:
            keep.append(line)
    return keep


def part1(args, binary, results_dir, stamp):
    nosnap = ["--snapshot-log-mb", "0", "--snapshot-interval-s", "0"]
    modes = {
        "none": [],
        "sync": ["--data-dir", None, "--durability", "sync"],
        "async": ["--data-dir", None, "--durability", "async"],
        # The same without background snapshots: the log's own cost.
        "sync-nosnap": ["--data-dir", None, "--durability", "sync", *nosnap],
        "async-nosnap": ["--data-dir", None, "--durability", "async", *nosnap],
    }
    extra = args.part1_server_args.split()
    runs = []
    for rep in range(args.reps):
        for layout in args.layouts:
            for mode in args.modes:
                data_dir = tempfile.mkdtemp(prefix="vecgpu-dur-", dir=args.tmp_dir)
                sargs = [data_dir if a is None else a for a in modes[mode]]
                log = results_dir / f"durability-{stamp}-part1.log"
                srv = VecgpuServer(binary, log, "--log-level", "info", *sargs, *extra)
                la, mem = loadavg(), mem_available_gb()
                if mem < 8:
                    print(f"  warning: only {mem:.1f} GiB available", flush=True)
                try:
                    srv.start()
                    r = run_add(srv, layout, args)
                    r["metrics"] = metrics_clues(srv.metrics())
                    r["rss_peak_mb"] = srv.rss_mb()
                    text = srv.log_text()
                    r["background_snapshots"] = len(re.findall(r"snapshot \((log size|interval)\)",
                                                               text))
                    r["snapshot_lines"] = re.findall(r"snapshot \(.*", text)
                    r["data_dir_mb"] = (dir_bytes(data_dir) / 1e6) if mode != "none" else None
                finally:
                    # A data-dir server would take a final snapshot of GBs on SIGTERM; the
                    # directory is thrown away, so SIGKILL it.
                    rc = srv.kill() if mode != "none" else srv.stop()
                    shutil.rmtree(data_dir, ignore_errors=True)
                r.update({"layout": layout, "mode": mode, "rep": rep + 1, "loadavg": la,
                          "mem_available_gb_before": mem,
                          "server_args": sargs + extra, "exit": rc})
                runs.append(r)
                print(f"  part 1 {layout:7s} {mode:5s} run {rep + 1}: "
                      f"{r['vectors_per_s']:>10,.0f} vectors/s {r['requests_per_s']:>8,.0f} req/s "
                      f"p50 {r['latency']['p50_ms']:.2f} ms p99 {r['latency']['p99_ms']:.2f} ms "
                      f"errors {sum(r['errors'].values())} server CPU {r['server_cpu_cores']:.2f} "
                      f"bg snapshots {r['background_snapshots']} load {la[0]:.2f}", flush=True)
    summary = {}
    for layout in args.layouts:
        for mode in args.modes:
            rs = [r for r in runs if r["layout"] == layout and r["mode"] == mode]
            summary[f"{layout}/{mode}"] = {
                "vectors_per_s_median": statistics.median(r["vectors_per_s"] for r in rs),
                "requests_per_s_median": statistics.median(r["requests_per_s"] for r in rs),
                "p50_ms_median": statistics.median(r["latency"]["p50_ms"] for r in rs),
                "p99_ms_median": statistics.median(r["latency"]["p99_ms"] for r in rs),
            }
    targets = {}
    for layout in args.layouts:
        for suffix in ("", "-nosnap"):
            s = {m: summary.get(f"{layout}/{m}{suffix if m != 'none' else ''}")
                 for m in ("none", "sync", "async")}
            if s["sync"] and s["async"]:
                ratio = s["sync"]["vectors_per_s_median"] / s["async"]["vectors_per_s_median"]
                targets[f"{layout}: sync{suffix} / async{suffix} (target >= 0.5)"] = {
                    "ratio": ratio, "met": ratio >= 0.5}
            if s["async"] and s["none"]:
                ratio = s["async"]["vectors_per_s_median"] / s["none"]["vectors_per_s_median"]
                targets[f"{layout}: async{suffix} / none (target >= 0.9)"] = {
                    "ratio": ratio, "met": ratio >= 0.9}
    return {"runs": runs, "summary": summary, "targets": targets}


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------------------
# Part 2: search latency during a snapshot


class Recorder:
    """Closed-loop clients on threads, each recording (start, end, ok) of every request."""

    def __init__(self):
        self.stop = threading.Event()
        self.threads = []
        self.records = {}

    def add(self, name, endpoint, make_request):
        rec = []
        self.records[name] = rec

        def loop():
            s = zmq.Context.instance().socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, 300000)
            s.connect(endpoint)
            try:
                while not self.stop.is_set():
                    req = make_request()
                    t0 = time.monotonic()
                    s.send(req)
                    reply = msgpack.unpackb(s.recv(), raw=False)
                    rec.append((t0, time.monotonic(), bool(reply.get("success"))))
            finally:
                s.close()

        t = threading.Thread(target=loop, daemon=True)
        self.threads.append(t)
        t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(600)


def inside(records, a, b):
    return [e - s for s, e, good in records if good and s >= a and e <= b]


def overlapping(records, windows):
    return [e - s for s, e, good in records if good and any(s < b and e > a for a, b in windows)]


def load_rows(endpoint, index_id, rows, batch, rng, clustered):
    t0 = time.monotonic()
    done = 0
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 600000)
    s.connect(endpoint)
    try:
        while done < rows:
            n = min(batch, rows - done)
            s.send(add_request(index_id, vectors(rng, n, clustered), "binary"))
            ok(msgpack.unpackb(s.recv(), raw=False))
            done += n
    finally:
        s.close()
    return time.monotonic() - t0


def search_phase(server, args, rng, with_writer, n_snapshots, label):
    """A baseline window, then n_snapshots triggered snapshots, under the same load."""
    queries = vectors(rng, 4096, args.clustered)
    qi = [0]

    def search_req():
        qi[0] = (qi[0] + 1) % len(queries)
        return msgpack.packb({"action": "search", "index_id": "big", "k": 10, "binary": True,
                              "query_vectors": queries[qi[0]:qi[0] + 1].tobytes()},
                             use_bin_type=True)

    one = vectors(rng, 64, args.clustered)
    wi = [0]

    def add_req():
        wi[0] = (wi[0] + 1) % len(one)
        return add_request("big", one[wi[0]:wi[0] + 1], "binary")

    rec = Recorder()
    for i in range(args.searchers):
        rec.add(f"search{i}", server.endpoint, search_req)
    if with_writer:
        rec.add("writer", server.endpoint, add_req)
    snaps = []
    try:
        time.sleep(args.settle)
        b0 = time.monotonic()
        time.sleep(args.baseline)
        b1 = time.monotonic()
        for _ in range(n_snapshots):
            time.sleep(args.settle)
            if not with_writer:  # a snapshot only writes what changed since the last one
                ok(call(server.endpoint, {"action": "add_vectors", "index_id": "big",
                                          "vectors": one[:1].tobytes()}))
            t0 = time.monotonic()
            r = ok(call(server.endpoint, {"action": "snapshot"}, timeout_ms=900000))
            t1 = time.monotonic()
            snaps.append({"window": (t0, t1), "client_seconds": t1 - t0,
                          **{k: r[k] for k in ("seq", "written", "unchanged", "bytes", "seconds",
                                               "max_write_pause_seconds")}})
        time.sleep(args.settle)
    finally:
        rec.finish()
    windows = [s["window"] for s in snaps]
    searches = [r for k, r in rec.records.items() if k.startswith("search")]
    all_search = [x for r in searches for x in r]
    failures = sum(1 for r in rec.records.values() for x in r if not x[2])
    out = {
        "label": label,
        "with_writer": with_writer,
        "baseline_s": b1 - b0,
        "search_baseline": lat_summary(inside(all_search, b0, b1)),
        "search_during": lat_summary(overlapping(all_search, windows)),
        "search_during_each": [lat_summary(overlapping(all_search, [w])) for w in windows],
        "snapshots": [{k: v for k, v in s.items() if k != "window"} for s in snaps],
        "failed_requests": failures,
    }
    if with_writer:
        w = rec.records["writer"]
        out["writer_baseline"] = lat_summary(inside(w, b0, b1))
        out["writer_during"] = lat_summary(overlapping(w, windows))
    if out["search_baseline"]["p99_ms"] and out["search_during"]["p99_ms"]:
        out["p99_ratio"] = out["search_during"]["p99_ms"] / out["search_baseline"]["p99_ms"]
    return out


# ---------------------------------------------------------------------------------------------
# Part 3: recovery


def can_drop_caches():
    try:
        with open("/proc/sys/vm/drop_caches", "w"):
            pass
        return True
    except OSError:
        return False


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read_files_seconds(paths):
    t0 = time.monotonic()
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                b = f.read(16 << 20)
                if not b:
                    break
                total += len(b)
    return time.monotonic() - t0, total


RECOVERY_RE = re.compile(
    r"loaded (\d+) index snapshots \(([\d.]+) MB\) in ([\d.]+) s, then replayed (\d+) log "
    r"records .* recovered in ([\d.]+) s")


def restart(server, label, drop):
    """Restarts a killed server; times until it answers and reads its recovery line."""
    if drop:
        drop_caches()
    answered = server.start()
    m = RECOVERY_RE.search(server.log_text())
    out = {"label": label, "cold_cache": drop, "answer_s": answered}
    if m:
        out.update({"snapshots": int(m.group(1)), "snapshot_mb": float(m.group(2)),
                    "snapshot_load_s": float(m.group(3)), "replayed_records": int(m.group(4)),
                    "recovered_s": float(m.group(5))})
    out["ntotal"] = ok(call(server.endpoint, {"action": "get_index_stats",
                                              "index_id": "big"}))["ntotal"]
    out["rss_peak_mb"] = server.rss_mb()
    return out


def parts23(args, binary, results_dir, stamp):
    rng = np.random.default_rng(7)
    data_dir = tempfile.mkdtemp(prefix="vecgpu-dur-", dir=args.tmp_dir)
    log = results_dir / f"durability-{stamp}-part23.log"
    sargs = ["--log-level", "info", "--data-dir", data_dir, "--durability", "sync",
             "--snapshot-log-mb", "0", "--snapshot-interval-s", "0",
             *args.part23_server_args.split()]
    srv = VecgpuServer(binary, log, *sargs)
    out = {"rows": args.rows, "server_args": sargs, "loadavg_start": loadavg()}
    try:
        srv.start()
        ok(call(srv.endpoint, {"action": "create_index", "index_id": "big", "dimension": DIM,
                               "index_type": "L2"}))
        secs = load_rows(srv.endpoint, "big", args.rows, args.load_batch, rng, args.clustered)
        out["load"] = {"seconds": secs, "vectors_per_s": args.rows / secs,
                       "batch": args.load_batch}
        print(f"  loaded {args.rows:,} x {DIM} in {secs:.1f} s", flush=True)
        t0 = time.monotonic()
        first = ok(call(srv.endpoint, {"action": "snapshot"}, timeout_ms=900000))
        out["first_snapshot"] = {"client_seconds": time.monotonic() - t0,
                                 **{k: first[k] for k in ("seq", "written", "unchanged", "bytes",
                                                          "seconds", "max_write_pause_seconds")}}
        print(f"  first snapshot (idle): {first['seconds']:.2f} s, {first['bytes'] / 1e6:.0f} MB",
              flush=True)
        if "2" in args.parts:
            out["phases"] = []
            for with_writer in (True, False):
                label = "searches + 1-vector writer" if with_writer else "searches only"
                ph = search_phase(srv, args, rng, with_writer, args.snapshots, label)
                out["phases"].append(ph)
                print(f"  part 2 {label}: search p99 {ph['search_baseline']['p99_ms']:.1f} ms "
                      f"without, {ph['search_during']['p99_ms']:.1f} ms during snapshots",
                      flush=True)
        if "3" in args.parts:
            out["recovery"] = recovery(srv, args, rng, data_dir)
        out["loadavg_end"] = loadavg()
    finally:
        srv.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def recovery(srv, args, rng, data_dir):
    rec = {"drop_caches": args.drop_caches and can_drop_caches()}
    # The last thing before the crash is a snapshot, so the restart loads it and replays nothing.
    ok(call(srv.endpoint, {"action": "add_vectors", "index_id": "big",
                           "vectors": vectors(rng, 1).tobytes()}))
    snap = ok(call(srv.endpoint, {"action": "snapshot"}, timeout_ms=900000))
    expected = ok(call(srv.endpoint, {"action": "get_index_stats", "index_id": "big"}))["ntotal"]
    rec["snapshot_before_kill"] = {k: snap[k] for k in ("seq", "written", "bytes", "seconds")}
    rec["expected_ntotal"] = expected
    srv.kill()
    files = sorted(str(p) for p in pathlib.Path(data_dir, "tenants").rglob("*") if p.is_file())
    files.append(os.path.join(data_dir, "MANIFEST"))
    files = [f for f in files if os.path.exists(f)]
    wal = sorted(str(p) for p in pathlib.Path(data_dir, "wal").glob("*") if p.is_file())
    rec["snapshot_files"] = len(files)
    rec["wal_bytes_after_snapshot"] = sum(os.path.getsize(f) for f in wal)
    reads = []
    if rec["drop_caches"]:
        drop_caches()
        secs, n = read_files_seconds(files)
        reads.append({"cache": "cold (dropped)", "seconds": secs, "bytes": n, "mb_per_s": n / 1e6 / secs})
    secs, n = read_files_seconds(files)
    reads.append({"cache": "warm", "seconds": secs, "bytes": n, "mb_per_s": n / 1e6 / secs})
    rec["read_files"] = reads
    restarts = []
    if rec["drop_caches"]:
        restarts.append(restart(srv, "snapshot, no log", True))
        srv.kill()
    restarts.append(restart(srv, "snapshot, no log", False))
    # Then a log to replay: adds past the snapshot, and a crash.
    secs = load_rows(srv.endpoint, "big", args.replay_rows, args.replay_batch, rng, args.clustered)
    rec["replay_added"] = {"rows": args.replay_rows, "batch": args.replay_batch, "seconds": secs}
    expected_after = expected + args.replay_rows
    srv.kill()
    wal = sorted(str(p) for p in pathlib.Path(data_dir, "wal").glob("*") if p.is_file())
    rec["wal_bytes_to_replay"] = sum(os.path.getsize(f) for f in wal)
    if rec["drop_caches"]:
        restarts.append(restart(srv, f"snapshot + {args.replay_rows:,} rows of log", True))
        srv.kill()
    restarts.append(restart(srv, f"snapshot + {args.replay_rows:,} rows of log", False))
    for r in restarts:
        want = expected if "no log" in r["label"] else expected_after
        r["ntotal_ok"] = r["ntotal"] == want
    rec["restarts"] = restarts
    # An empty server's start, for what a start costs without any data.
    empty_dir = tempfile.mkdtemp(prefix="vecgpu-dur-", dir=args.tmp_dir)
    e = VecgpuServer(srv.binary, srv.log_path, "--log-level", "info", "--data-dir", empty_dir)
    try:
        rec["empty_start_answer_s"] = e.start()
    finally:
        e.stop()
        shutil.rmtree(empty_dir, ignore_errors=True)
    for r in restarts:
        print(f"  part 3 restart ({r['label']}, {'cold' if r['cold_cache'] else 'warm'} cache): "
              f"answered after {r['answer_s']:.2f} s; server: snapshots "
              f"{r.get('snapshot_load_s')} s, replayed {r.get('replayed_records')} records, "
              f"recovered in {r.get('recovered_s')} s; ntotal ok {r['ntotal_ok']}", flush=True)
    return rec


# ---------------------------------------------------------------------------------------------
# Report


def f(v, fmt="{:,.0f}"):
    return "-" if v is None else fmt.format(v)


def markdown(report):
    lines = []
    m = report["machine"]
    lines.append(f"Commit `{report['commit']}`, {report['time']}, {m['ncpu']} CPUs ({m['cpu']}), "
                 f"{m['mem_gb']:.0f} GiB, data dirs on {m['disk']}; load average at start "
                 f"{m['loadavg_start']}, at end {report.get('loadavg_end')}.")
    lines.append("")
    lines.append(f"Command: `{report['command']}`")
    if "part1" in report:
        p = report["part1"]
        a = report["args"]
        lines.append("")
        lines.append(f"**Add throughput**: {a['writers']} closed-loop writers, add_vectors of "
                     f"{a['batch']} x {DIM} float32 ({a['encoding']} encoding), flat L2; "
                     f"{a['duration']:g} s measured after {a['warmup']:g} s warm-up; "
                     f"{a['reps']} run(s) each.")
        lines.append("")
        lines.append("| writers on | data dir | run | vectors/s | requests/s | p50 ms | p99 ms | "
                     "errors | CPU server / clients (cores) | background snapshots | load avg |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in p["runs"]:
            lines.append(
                f"| {'1 index' if r['layout'] == 'one' else '16 indexes'} | {r['mode']} | "
                f"{r['rep']} | {f(r['vectors_per_s'])} | {f(r['requests_per_s'])} | "
                f"{f(r['latency']['p50_ms'], '{:.2f}')} | {f(r['latency']['p99_ms'], '{:.2f}')} | "
                f"{sum(r['errors'].values())} | {r['server_cpu_cores']:.2f} / "
                f"{r['client_cpu_cores']:.2f} | "
                f"{r['background_snapshots']} | {r['loadavg'][0]:.2f} |")
        lines.append("")
        for k, t in p["targets"].items():
            lines.append(f"- {k}: {t['ratio']:.2f} ({'met' if t['met'] else 'MISSED'})")
    if "parts23" in report:
        q = report["parts23"]
        lines.append("")
        fs = q["first_snapshot"]
        lines.append(f"**Snapshot of a {q['rows']:,} x {DIM} flat index** (loaded in "
                     f"{q['load']['seconds']:.1f} s at {q['load']['vectors_per_s']:,.0f} vectors/s, "
                     f"batches of {q['load']['batch']:,}): the first snapshot, idle, "
                     f"{fs['seconds']:.2f} s, {fs['bytes'] / 1e6:.0f} MB, writes paused "
                     f"{fs['max_write_pause_seconds'] * 1000:.0f} ms.")
        for ph in q.get("phases", []):
            lines.append("")
            lines.append(f"{ph['label']} ({report['args']['searchers']} one-query search "
                         f"clients, k = 10):")
            lines.append("")
            lines.append("| | searches | p50 ms | p99 ms | max ms | writer adds | writer p50 ms "
                         "| writer max ms |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for key, wkey, name in (("search_baseline", "writer_baseline", "no snapshot"),
                                    ("search_during", "writer_during", "during snapshots")):
                s, w = ph[key], ph.get(wkey) or {}
                lines.append(f"| {name} | {s['n']} | {f(s['p50_ms'], '{:.1f}')} | "
                             f"{f(s['p99_ms'], '{:.1f}')} | {f(s['max_ms'], '{:.1f}')} | "
                             f"{f(w.get('n'))} | {f(w.get('p50_ms'), '{:.2f}')} | "
                             f"{f(w.get('max_ms'), '{:.1f}')} |")
            lines.append("")
            for i, s in enumerate(ph["snapshots"]):
                lines.append(f"- snapshot {i + 1}: {s['seconds']:.2f} s ({s['client_seconds']:.2f} s "
                             f"at the client), {s['bytes'] / 1e6:.0f} MB, server's max write pause "
                             f"{s['max_write_pause_seconds'] * 1000:.0f} ms; searches during it: "
                             f"p99 {f(ph['search_during_each'][i]['p99_ms'], '{:.1f}')} ms")
            if "p99_ratio" in ph:
                lines.append(f"- search p99 during / without: {ph['p99_ratio']:.2f}x "
                             f"({'met' if ph['p99_ratio'] <= 2 else 'MISSED'}: target <= 2x)")
        rec = q.get("recovery")
        if rec:
            lines.append("")
            lines.append("**Recovery** (SIGKILL, then restart on the same directory):")
            lines.append("")
            lines.append("| restart | page cache | answers after s | server: snapshots loaded "
                         "| snapshot load s | log records replayed | recovered in s | ntotal right |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for r in rec["restarts"]:
                lines.append(f"| {r['label']} | {'dropped' if r['cold_cache'] else 'warm'} | "
                             f"{r['answer_s']:.2f} | {r.get('snapshots', '-')} "
                             f"({r.get('snapshot_mb', 0):.0f} MB) | "
                             f"{f(r.get('snapshot_load_s'), '{:.2f}')} | "
                             f"{f(r.get('replayed_records'))} | {f(r.get('recovered_s'), '{:.2f}')} "
                             f"| {'yes' if r['ntotal_ok'] else 'NO'} |")
            lines.append("")
            for rd in rec["read_files"]:
                lines.append(f"- reading the snapshot files once ({rd['cache']} cache): "
                             f"{rd['seconds']:.2f} s for {rd['bytes'] / 1e6:.0f} MB "
                             f"({rd['mb_per_s']:,.0f} MB/s)")
            lines.append(f"- log to replay: "
                         f"{(rec['wal_bytes_to_replay'] - rec['wal_bytes_after_snapshot']) / 1e6:.0f}"
                         f" MB past the snapshot ({rec['wal_bytes_to_replay'] / 1e6:.0f} MB of "
                         f"segments on disk) "
                         f"({rec['replay_added']['rows']:,} rows added in "
                         f"{rec['replay_added']['seconds']:.1f} s)")
            lines.append(f"- an empty data directory's start answers after "
                         f"{rec['empty_start_answer_s']:.2f} s; caches dropped: "
                         f"{'yes' if rec['drop_caches'] else 'no'}")
    return "\n".join(lines) + "\n"


def machine_info(tmp_dir):
    cpu = "?"
    with open("/proc/cpuinfo") as fcpu:
        for line in fcpu:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    disk = "?"
    try:
        src = subprocess.run(["df", "--output=source,fstype", tmp_dir], capture_output=True,
                             text=True).stdout.split("\n")[1].split()
        dev = os.path.basename(src[0])
        rota = pathlib.Path(f"/sys/block/{dev}/queue/rotational")
        kind = "virtio disk" if dev.startswith("vd") else "disk"
        disk = f"{src[0]} ({src[1]}, {kind}, rotational flag {rota.read_text().strip()})" \
            if rota.exists() else f"{src[0]} ({src[1]})"
    except (IndexError, OSError):
        pass
    return {"ncpu": os.cpu_count(), "cpu": cpu, "mem_gb": mem, "disk": disk,
            "loadavg_start": loadavg()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few seconds per part, small sizes")
    ap.add_argument("--parts", default="1,2,3", help="which parts, e.g. 1 or 2,3")
    ap.add_argument("--binary", default=str(ROOT / "build" / "vecgpu"))
    ap.add_argument("--tmp-dir", default=None, help="where data directories go (default: $TMPDIR)")
    ap.add_argument("--out", default=None, help="JSON report (default bench/results/...)")
    g = ap.add_argument_group("part 1")
    g.add_argument("--writers", type=int, default=16)
    g.add_argument("--writer-procs", type=int, default=4,
                   help="client processes the writers are spread over")
    g.add_argument("--batch", type=int, default=100)
    g.add_argument("--encoding", choices=["binary", "list"], default="binary")
    g.add_argument("--duration", type=float, default=10.0)
    g.add_argument("--warmup", type=float, default=3.0)
    g.add_argument("--reps", type=int, default=2)
    g.add_argument("--modes", default="none,sync,async,sync-nosnap,async-nosnap",
                   help="none, sync, async (server defaults), sync-nosnap, async-nosnap "
                        "(no background snapshots)")
    g.add_argument("--layouts", default="one,sixteen")
    g.add_argument("--part1-server-args", default="", help="more flags for part 1's servers")
    g = ap.add_argument_group("parts 2 and 3")
    g.add_argument("--rows", type=int, default=1_000_000)
    g.add_argument("--load-batch", type=int, default=10_000)
    g.add_argument("--clustered", action="store_true", help="clustered instead of uniform data")
    g.add_argument("--searchers", type=int, default=4)
    g.add_argument("--baseline", type=float, default=10.0, help="seconds without a snapshot")
    g.add_argument("--snapshots", type=int, default=3, help="snapshots per phase")
    g.add_argument("--settle", type=float, default=1.0)
    g.add_argument("--replay-rows", type=int, default=100_000)
    g.add_argument("--replay-batch", type=int, default=10_000)
    g.add_argument("--no-drop-caches", dest="drop_caches", action="store_false",
                   help="never drop the page cache (else part 3 does, when it may, for cold "
                        "reads and restarts; --quick never does)")
    g.add_argument("--part23-server-args", default="")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup, args.reps = 2.0, 0.5, 1
        args.rows, args.baseline, args.snapshots, args.settle = 50_000, 2.0, 1, 0.3
        args.replay_rows, args.replay_batch = 5_000, 1_000
        args.drop_caches = False  # a smoke test leaves the machine's page cache alone
    args.modes = args.modes.split(",")
    args.layouts = args.layouts.split(",")
    args.parts = args.parts.split(",")
    args.tmp_dir = args.tmp_dir or tempfile.gettempdir()
    binary = pathlib.Path(args.binary)
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip() or "nogit"
    except OSError:
        commit = "nogit"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + commit
    report = {"commit": commit, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": " ".join([".venv/bin/python", "bench/durability.py", *sys.argv[1:]]),
              "args": vars(args), "machine": machine_info(args.tmp_dir)}
    print(f"durability bench {stamp}: load average {report['machine']['loadavg_start']}",
          flush=True)
    if "1" in args.parts:
        report["part1"] = part1(args, binary, results_dir, stamp)
    if "2" in args.parts or "3" in args.parts:
        report["parts23"] = parts23(args, binary, results_dir, stamp)
    report["loadavg_end"] = loadavg()
    out = pathlib.Path(args.out) if args.out else results_dir / f"durability-{stamp}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    print()
    print(md)
    print(f"report: {out} (and {out.with_suffix('.md')}); server logs: "
          f"{results_dir}/durability-{stamp}-*.log")


if __name__ == "__main__":
    main()
