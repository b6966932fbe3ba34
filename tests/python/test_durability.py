"""--data-dir on the real binary: acknowledged writes survive SIGKILL, restarts replay the
log, one server per directory, and damage refuses to start naming the file."""
import random
import subprocess
import threading
import time

import numpy as np
import pytest
import zmq

from conftest import (BINARY, call, fail, free_port, kill9, ok, raw_call, rows,
                      start_persistent as start)


def vec(i, d=8):
    return [float(i), float(i % 7), 1.0, 0.5, -float(i % 3), 2.0, 0.0, float(i) / 10]


def test_restart_replays_every_kind_of_write(tmp_path):
    srv = start(tmp_path)
    ok(call(srv, action="create_index", index_id="flat", dimension=8, index_type="L2"))
    ok(call(srv, action="add_vectors", index_id="flat", vectors=[vec(i) for i in range(20)]))
    ok(call(srv, action="remove_ids", index_id="flat", ids=[3, 4]))
    ok(call(srv, action="create_index", index_id="ids", dimension=8, index_type="IDMap2:flat"))
    ok(call(srv, action="add_with_ids", index_id="ids", vectors=[vec(100), vec(101)],
            ids=[1000, 1001]))
    ok(call(srv, action="replace_vector", index_id="ids", id=1001, vector=vec(555)))
    ok(call(srv, action="create_index", index_id="ivf", dimension=8, index_type="IVF4"))
    x = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    ok(call(srv, action="train_index", index_id="ivf", training_vectors=rows(x)))
    ok(call(srv, action="add_vectors", index_id="ivf", vectors=rows(x[:50])))
    ok(call(srv, action="set_parameter", index_id="ivf", parameter="nprobe", value=3))
    ok(call(srv, action="create_index", index_id="bin", dimension=16, index_type="BINARY_FLAT"))
    ok(call(srv, action="add_vectors", index_id="bin", vectors=[[1, 0] * 8, [0, 1] * 8]))
    ok(call(srv, action="create_index", index_id="gone", dimension=8, index_type="L2"))
    ok(call(srv, action="delete_index", index_id="gone"))
    q = rows(x[:3])
    before = ok(call(srv, action="search", index_id="ivf", query_vectors=q, k=5))
    flat_before = ok(call(srv, action="get_vectors", index_id="flat"))
    assert srv.stop() == 0

    srv = start(tmp_path)
    try:
        names = {i["index_id"] for i in ok(call(srv, action="list_indexes"))["indexes"]}
        assert names == {"flat", "ids", "ivf", "bin"}
        assert ok(call(srv, action="get_vectors", index_id="flat"))["vectors"] == \
            flat_before["vectors"]
        got = ok(call(srv, action="reconstruct", index_id="ids", id=1001))["vector"]
        assert got == pytest.approx(vec(555))
        after = ok(call(srv, action="search", index_id="ivf", query_vectors=q, k=5))
        assert after["indices"] == before["indices"]
        assert ok(call(srv, action="get_parameter", index_id="ivf",
                       parameter="nprobe"))["param_value"] == 3
        assert ok(call(srv, action="get_index_stats", index_id="bin"))["ntotal"] == 2
    finally:
        assert srv.stop() == 0
    assert "replayed" in srv.output


def test_acknowledged_writes_survive_sigkill(tmp_path):
    """Writers add and remove ids on an IDMap2 index while the server is killed with SIGKILL
    at a random moment, several times: every acknowledged add is there with its vector,
    every acknowledged removal gone, and an unacknowledged write is whole or absent."""
    rng = random.Random(7)
    acked_add, acked_remove, pending, removing = {}, set(), {}, set()
    lock = threading.Lock()
    next_id = [0]
    srv = start(tmp_path)
    ok(call(srv, action="create_index", index_id="base", dimension=8, index_type="L2"))
    ok(call(srv, action="create_index", index_id="v", dimension=8, index_type="IDMap2:base"))
    for round_ in range(4):
        stop = threading.Event()

        def writer(seed):
            r = random.Random(seed)
            ctx = zmq.Context.instance()
            while not stop.is_set():
                with lock:
                    i = next_id[0]
                    next_id[0] += 1
                remove = r.random() < 0.3 and acked_add
                try:
                    if remove:
                        with lock:
                            victim = r.choice(sorted(acked_add))
                            removing.add(victim)
                        reply = raw_call(srv.endpoint, {"action": "remove_ids", "index_id": "v",
                                                        "ids": [victim]}, timeout_ms=2000)
                        if reply.get("success"):
                            with lock:
                                acked_remove.add(victim)
                                acked_add.pop(victim, None)
                                removing.discard(victim)
                    else:
                        with lock:
                            pending[i] = vec(i)
                        reply = raw_call(srv.endpoint, {"action": "add_with_ids", "index_id": "v",
                                                        "vectors": [vec(i)], "ids": [i]},
                                         timeout_ms=2000)
                        if reply.get("success"):
                            with lock:
                                acked_add[i] = vec(i)
                                pending.pop(i, None)
                except (zmq.Again, zmq.ZMQError):
                    return  # the server is gone
            del ctx

        threads = [threading.Thread(target=writer, args=(round_ * 10 + t,)) for t in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3 + rng.random() * 0.7)
        kill9(srv)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        srv = start(tmp_path)
        for i, v in list(acked_add.items()):
            got = call(srv, action="reconstruct", index_id="v", id=i)
            if not got.get("success") and i in removing:
                acked_add.pop(i)  # an unacknowledged removal of it was applied
                continue
            assert got.get("success"), (round_, i, got)
            assert got["vector"] == pytest.approx(v)
        removing.clear()
        for i in acked_remove:
            if i not in acked_add:
                fail(call(srv, action="reconstruct", index_id="v", id=i))
        for i, v in list(pending.items()):  # never acknowledged: whole, or not there at all
            got = call(srv, action="reconstruct", index_id="v", id=i)
            if got.get("success"):
                assert got["vector"] == pytest.approx(v)
                with lock:
                    acked_add[i] = v  # it is there now: later rounds must keep it
            pending.pop(i)
    assert len(acked_add) > 20
    assert srv.stop() == 0


def test_one_server_per_data_directory(tmp_path):
    srv = start(tmp_path)
    try:
        r = subprocess.run([str(BINARY), "serve", "--port", str(free_port()), "--metrics-port", "0",
                            "--data-dir", str(tmp_path)], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode != 0
        assert "in use by another process" in r.stdout + r.stderr
    finally:
        assert srv.stop() == 0


def test_a_damaged_log_refuses_to_start_and_names_the_file(tmp_path):
    srv = start(tmp_path)
    ok(call(srv, action="create_index", index_id="c", dimension=8, index_type="L2"))
    for i in range(5):
        ok(call(srv, action="add_vectors", index_id="c", vectors=[vec(i)]))
    kill9(srv)  # no final snapshot: the log holds every write
    segment = sorted((tmp_path / "wal").glob("*.log"))[0]
    data = bytearray(segment.read_bytes())
    data[60] ^= 0x20  # inside the first records, not the last one
    segment.write_bytes(bytes(data))
    r = subprocess.run([str(BINARY), "serve", "--port", str(free_port()), "--metrics-port", "0",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert segment.name in r.stdout + r.stderr
    assert "damaged" in r.stdout + r.stderr


def test_recover_from_last_good_serves_what_came_before_the_damage(tmp_path):
    srv = start(tmp_path)
    ok(call(srv, action="create_index", index_id="c", dimension=8, index_type="L2"))
    for i in range(6):
        ok(call(srv, action="add_vectors", index_id="c", vectors=[vec(i)]))
    kill9(srv)  # no final snapshot: the log holds every write
    segment = sorted((tmp_path / "wal").glob("*.log"))[0]
    data = bytearray(segment.read_bytes())
    data[len(data) * 2 // 3] ^= 0x20  # in one of the later adds
    segment.write_bytes(bytes(data))
    srv = start(tmp_path, "--recover-from-last-good")
    try:
        n = ok(call(srv, action="get_index_stats", index_id="c"))["ntotal"]
        assert 1 <= n < 6
        got = ok(call(srv, action="get_vectors", index_id="c"))["vectors"]
        assert np.allclose(got, [vec(i) for i in range(n)])
        ok(call(srv, action="add_vectors", index_id="c", vectors=[vec(99)]))
    finally:
        assert srv.stop() == 0
    assert "set aside" in srv.output
    assert (segment.parent / (segment.name + ".damaged")).exists()
    srv = start(tmp_path)  # the log reads cleanly now, without the flag
    try:
        assert ok(call(srv, action="get_index_stats", index_id="c"))["ntotal"] == n + 1
    finally:
        assert srv.stop() == 0
