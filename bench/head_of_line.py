#!/usr/bin/env python3
"""Head-of-line scenario of issue [4/8]: tenant A trains IVF1024 on 100,000 x 64 vectors with
four of its own searches queued behind the training, while tenant B searches a small index.
Prints B's one-query latency (p50/p99) alone and during A's training, and their ratio.

  .venv/bin/python bench/head_of_line.py [--binary build/vecgpu] [--server-args "..."]
"""
import argparse
import pathlib
import sys
import threading
import time
import urllib.request

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Server, raw_call  # noqa: E402  (the test harness's server launcher)


def percentile(values, p):
    return float(np.percentile(np.array(values) * 1000.0, p))


def b_latencies(srv, rng, stop):
    """One-query searches by tenant B until stop() is true; their latencies in seconds."""
    out = []
    while not stop():
        q = rng.random((1, 16), dtype=np.float32).tolist()
        t = time.perf_counter()
        r = raw_call(srv.endpoint, {"action": "search", "tenant_id": "B", "index_id": "small",
                                    "query_vectors": q, "k": 5}, timeout_ms=120000)
        out.append(time.perf_counter() - t)
        assert r["success"], r
    return out


def long_work_running(srv):
    with urllib.request.urlopen(srv.metrics_url + "/metrics", timeout=5) as r:
        return 'vecgpu_busy_workers{class="long"} 1' in r.read().decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-args", default="")
    args = ap.parse_args()
    srv = Server("--log-level", "warning", *args.server_args.split())
    rng = np.random.default_rng(0)
    try:
        raw_call(srv.endpoint, {"action": "create_index", "tenant_id": "B", "index_id": "small",
                                "dimension": 16, "index_type": "L2"})
        raw_call(srv.endpoint, {"action": "add_vectors", "tenant_id": "B", "index_id": "small",
                                "vectors": rng.random((1000, 16), dtype=np.float32).tolist()})
        raw_call(srv.endpoint, {"action": "create_index", "tenant_id": "A", "index_id": "big",
                                "dimension": 64, "index_type": "IVF1024"})
        train = rng.random((100000, 64), dtype=np.float32)
        n = [0]
        alone = b_latencies(srv, rng, lambda: (n.__setitem__(0, n[0] + 1) or n[0]) > 500)

        done = threading.Event()

        def a_work():
            raw_call(srv.endpoint, {"action": "train_index", "tenant_id": "A", "index_id": "big",
                                    "training_vectors": train.tolist()}, timeout_ms=600000)
            done.set()

        def a_search():
            raw_call(srv.endpoint, {"action": "search", "tenant_id": "A", "index_id": "big",
                                    "query_vectors": train[:1].tolist(), "k": 5},
                     timeout_ms=600000)

        t = threading.Thread(target=a_work)
        t.start()
        while not long_work_running(srv):
            time.sleep(0.01)
        searches = [threading.Thread(target=a_search) for _ in range(4)]
        for s in searches:
            s.start()
        started = time.time()
        during = b_latencies(srv, rng, done.is_set)
        trained_s = time.time() - started
        t.join()
        for s in searches:
            s.join()
    finally:
        srv.stop()
    p99_alone, p99_during = percentile(alone, 99), percentile(during, 99)
    print(f"tenant B alone: {len(alone)} searches, p50 {percentile(alone, 50):.3f} ms, "
          f"p99 {p99_alone:.3f} ms")
    print(f"tenant B during A's training ({trained_s:.1f} s, 4 of A's searches queued): "
          f"{len(during)} searches, p50 {percentile(during, 50):.3f} ms, p99 {p99_during:.3f} ms")
    print(f"p99 during / alone: {p99_during / p99_alone:.2f}")


if __name__ == "__main__":
    main()
