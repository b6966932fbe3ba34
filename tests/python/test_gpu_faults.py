"""GPU faults on the real binary with fake GPUs (`serve --fake-gpus`): every GPU's work runs in
its own GPU host process (`vecgpu gpu-host`), so killing that process under load loses no
acknowledged write and fails no search (the CPU copy answers while it restarts), the GPU
comes back by itself, and repeated faults quarantine it (metric, log, /readyz) until SIGHUP."""
import os
import pathlib
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest

from conftest import Server, call, ok, rows, uid

D = 16


def children(pid):
    """(pid, command line) of the processes whose parent is `pid`."""
    out = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                out.append((int(stat.parent.name), cmd))
        except (OSError, IndexError, ValueError):
            pass
    return out


def gpu_host_pid(srv, gpu, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid, cmd in children(srv.proc.pid):
            if f"gpu-host --device {gpu} " in cmd:
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no GPU host process for GPU {gpu}: {children(srv.proc.pid)}")


def metric(srv, name, gpu):
    text = urllib.request.urlopen(srv.metrics_url + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{gpu="{gpu}"}} '):
            return float(line.split()[-1])
    raise AssertionError(f"{name} for GPU {gpu} not in /metrics")


def readyz(srv):
    try:
        r = urllib.request.urlopen(srv.metrics_url + "/readyz", timeout=5)
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def info(srv, name):
    return ok(call(srv, action="get_index_info", index_id=name))["status"]


def wait_until(what, predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def on_gpu(srv, name, device="gpu:0"):
    """Searches (which queue the copy's rebuild) until the index is served from `device`."""
    q = rows(np.zeros((1, D)))

    def served():
        ok(call(srv, action="search", index_id=name, query_vectors=q, k=1))
        return info(srv, name)["device"] == device
    try:
        wait_until(f"{name} on {device}", served)
    except AssertionError:
        raise AssertionError(f"{name} not on {device}: {info(srv, name)}")


def vectors(n, seed):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def start(*args):
    return Server("--fake-gpus", "1024,1024", "--log-level", "info", *args)


def test_fake_gpus_are_served_by_one_gpu_host_process_each():
    srv = start()
    try:
        name = uid("g")
        ok(call(srv, action="create_index", index_id=name, dimension=D, index_type="L2"))
        x = vectors(200, 1)
        ok(call(srv, action="add_vectors", index_id=name, vectors=rows(x)))
        on_gpu(srv, name)
        found = ok(call(srv, action="search", index_id=name, query_vectors=rows(x[5:8]), k=1))
        assert [r["indices"][0] for r in found["results"]] == [5, 6, 7]
        hosts = [cmd for _, cmd in children(srv.proc.pid) if "gpu-host" in cmd]
        assert len(hosts) == 2, hosts
        assert metric(srv, "vecgpu_gpu_healthy", 0) == 1
        assert metric(srv, "vecgpu_gpu_faults_total", 0) == 0
    finally:
        assert srv.stop() == 0
    assert "served by its GPU host process" in srv.output
    # The GPU host processes end with the server.
    assert not [cmd for _, cmd in children(srv.proc.pid) if "gpu-host" in cmd]


def test_a_crash_under_load_loses_no_write_and_fails_no_search():
    srv = start()
    try:
        names = [uid("crash"), uid("crash")]
        data = {n: vectors(300, i) for i, n in enumerate(names)}
        for n in names:
            ok(call(srv, action="create_index", index_id=n, dimension=D, index_type="L2",
                    device="gpu:0"))
            ok(call(srv, action="add_vectors", index_id=n, vectors=rows(data[n])))
            on_gpu(srv, n)
        acked = {n: len(data[n]) for n in names}
        failures, searches = [], [0]
        stop = threading.Event()

        def writer(n, seed):
            i = 0
            while not stop.is_set():
                batch = vectors(10, 1000 * seed + i)
                reply = call(srv, action="add_vectors", index_id=n, vectors=rows(batch))
                if reply.get("success"):
                    data[n] = np.vstack([data[n], batch])
                    acked[n] = len(data[n])
                else:
                    failures.append(("add", reply))
                i += 1

        def searcher(n, seed):
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                have = acked[n]
                row = int(rng.integers(0, have))
                reply = call(srv, action="search", index_id=n,
                             query_vectors=rows(data[n][row:row + 1]), k=1)
                searches[0] += 1
                if not reply.get("success"):
                    failures.append(("search", reply))
                elif reply["results"][0]["indices"][0] != row:
                    failures.append(("wrong", row, reply["results"][0]))

        threads = [threading.Thread(target=writer, args=(names[0], 1))]
        threads += [threading.Thread(target=searcher, args=(n, s))
                    for s, n in enumerate(names * 2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        victim = gpu_host_pid(srv, 0)
        os.kill(victim, signal.SIGKILL)
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join()
        assert not failures, failures[:5]
        assert searches[0] > 50
        print(f"GPU host process killed under load: {searches[0]} searches, "
              f"{acked[names[0]] - 300} vectors added and acknowledged, 0 failed")
        # Every acknowledged vector is there, found at its position.
        for n in names:
            total = acked[n]
            for at in range(0, total, 5000):
                q = data[n][at:min(total, at + 5000)]
                got = ok(call(srv, action="search", index_id=n, query_vectors=rows(q), k=1))
                assert [r["indices"][0] for r in got["results"]] == list(range(at, at + len(q)))
        # The GPU restarted by itself (a new process) and both indexes went back to it.
        assert gpu_host_pid(srv, 0) != victim
        for n in names:
            on_gpu(srv, n)
        assert metric(srv, "vecgpu_gpu_faults_total", 0) == 1
        assert metric(srv, "vecgpu_gpu_host_restarts_total", 0) == 1
        assert metric(srv, "vecgpu_gpu_healthy", 0) == 1
        assert metric(srv, "vecgpu_gpu_faults_total", 1) == 0
    finally:
        assert srv.stop() == 0
    lost = [line for line in srv.output.splitlines() if "GPU 0 lost (" in line]
    assert len(lost) == 1 and "killed by signal 9" in lost[0], srv.output
    assert "GPU 0 is back (restart 1)" in srv.output


def test_repeated_faults_quarantine_the_gpu_until_sighup():
    srv = start("--gpu-max-faults", "2", "--gpu-fault-window-s", "60", "--gpu-quarantine-s", "0")
    try:
        name = uid("q")
        ok(call(srv, action="create_index", index_id=name, dimension=D, index_type="L2",
                device="gpu:0"))
        x = vectors(100, 3)
        ok(call(srv, action="add_vectors", index_id=name, vectors=rows(x)))
        on_gpu(srv, name)
        first = gpu_host_pid(srv, 0)
        os.kill(first, signal.SIGKILL)
        wait_until("the restart", lambda: metric(srv, "vecgpu_gpu_host_restarts_total", 0) == 1)
        os.kill(gpu_host_pid(srv, 0), signal.SIGKILL)
        wait_until("the quarantine", lambda: metric(srv, "vecgpu_gpu_quarantined", 0) == 1)
        assert metric(srv, "vecgpu_gpu_healthy", 0) == 0
        status, body = readyz(srv)
        assert status == 200, body  # it serves, from the CPU
        assert "GPU 0 quarantined after 2 faults" in body, body
        # Searches still answer, from the CPU; the index says why.
        found = ok(call(srv, action="search", index_id=name, query_vectors=rows(x[:4]), k=1))
        assert [r["indices"][0] for r in found["results"]] == [0, 1, 2, 3]
        st = info(srv, name)
        assert st["device"] == "cpu"
        assert "quarantined" in st["placement"], st
        time.sleep(1.0)  # no restart while quarantined
        assert metric(srv, "vecgpu_gpu_host_restarts_total", 0) == 1
        # The operator re-enables it.
        srv.proc.send_signal(signal.SIGHUP)
        wait_until("the re-enabled GPU", lambda: metric(srv, "vecgpu_gpu_healthy", 0) == 1)
        assert metric(srv, "vecgpu_gpu_quarantined", 0) == 0
        on_gpu(srv, name)
        assert "quarantined" not in readyz(srv)[1]
    finally:
        assert srv.stop() == 0
    assert "GPU 0 quarantined after 2 faults in 60 s" in srv.output
    assert "re-enabled by the operator" in srv.output


@pytest.mark.parametrize("value", ["0", "x", "256,", "-5"])
def test_bad_fake_gpus_are_refused(value):
    import subprocess
    from conftest import BINARY
    r = subprocess.run([str(BINARY), "serve", "--fake-gpus", value], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode != 0
    assert "fake-gpus" in (r.stdout + r.stderr)

