#!/usr/bin/env python3
"""Quick loopback measurement of a running FAISSx-protocol server (vecgpu or FAISSx).

Creates a 10,000 x 128 flat index, then measures the round-trip latency of one-query
searches from one client (p50/p99) and the throughput of 16 concurrent clients, each with
its own REQ socket in its own process. Requests are shaped as the faissx client sends them
(nested float64 lists). Not a test: prints numbers, asserts nothing.

    .venv/bin/python bench/quick_latency.py --endpoint tcp://127.0.0.1:45678
"""
import argparse
import multiprocessing as mp
import time

import msgpack
import numpy as np
import zmq


def call(sock, req):
    sock.send(msgpack.packb(req))
    reply = msgpack.unpackb(sock.recv(), raw=False)
    if not reply.get("success"):
        raise RuntimeError(reply.get("error"))
    return reply


def client_loop(endpoint, index_id, queries, seconds, out):
    ctx = zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.connect(endpoint)
    n, i = 0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        call(s, {"action": "search", "index_id": index_id,
                 "query_vectors": [queries[i % len(queries)].tolist()], "k": 10})
        n += 1
        i += 1
    out.put(n)
    s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:45678")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--latency-queries", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((args.n, args.d)).astype("float32")
    xq = rng.standard_normal((256, args.d)).astype("float32")
    ctx = zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.connect(args.endpoint)
    index_id = f"quick-latency-{int(time.time())}"
    call(s, {"action": "create_index", "index_id": index_id, "dimension": args.d,
             "index_type": "L2"})
    for start in range(0, args.n, 10_000):
        call(s, {"action": "add_vectors", "index_id": index_id,
                 "vectors": xb[start:start + 10_000].tolist()})

    for i in range(20):  # warm-up
        call(s, {"action": "search", "index_id": index_id, "query_vectors": [xq[i].tolist()],
                 "k": 10})
    lat = []
    for i in range(args.latency_queries):
        t = time.perf_counter()
        call(s, {"action": "search", "index_id": index_id,
                 "query_vectors": [xq[i % len(xq)].tolist()], "k": 10})
        lat.append((time.perf_counter() - t) * 1000)
    lat = np.array(lat)
    print(f"one client, one-query search on {args.n} x {args.d} flat: "
          f"p50 {np.percentile(lat, 50):.3f} ms, p99 {np.percentile(lat, 99):.3f} ms "
          f"({len(lat)} requests)")

    out = mp.Queue()
    procs = [mp.Process(target=client_loop,
                        args=(args.endpoint, index_id, xq, args.seconds, out))
             for _ in range(args.clients)]
    t = time.perf_counter()
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t
    print(f"{args.clients} concurrent clients: {total / args.seconds:.0f} searches/s "
          f"({total} in {args.seconds:.0f} s; wall {elapsed:.1f} s)")
    call(s, {"action": "delete_index", "index_id": index_id})


if __name__ == "__main__":
    main()
