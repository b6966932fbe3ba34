"""Replay determinism: an index rebuilt from the write-ahead log answers exactly as the one that
wrote it. IVF-PQ and scalar-quantizer indexes (whose training is learned from data) are built,
the server is killed (-9, no snapshot), recovered from the log alone, and killed and recovered
again: every search returns bit-identical ids and distances each time."""
import numpy as np

from conftest import call, kill9, ok, rand, start_persistent

D = 32
KINDS = {"ivfpq": "IVF16,PQ8", "sq8": "SQ8", "ivfsq": "IVF8,SQ8", "pq": "PQ8"}


def vec_bytes(x):
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def searches(srv, queries):
    out = {}
    for name in KINDS:
        r = ok(call(srv, action="search", index_id=name, query_vectors=vec_bytes(queries),
                    dimension=D, k=10, binary=True, nprobe=4))
        out[name] = (r["distances"], r["indices"])
    return out


def test_indexes_with_trained_parts_replay_bit_identically(tmp_path):
    args = ("--snapshot-interval-s", "0", "--snapshot-log-mb", "0")
    srv = start_persistent(tmp_path, *args)
    x = rand(6000, D, 11)
    queries = rand(20, D, 12)
    try:
        for name, kind in KINDS.items():
            ok(call(srv, action="create_index", index_id=name, dimension=D, index_type=kind))
            if kind != "SQ8":  # the SQ8 index trains itself once 1,024 vectors have arrived
                ok(call(srv, action="train_index", index_id=name, dimension=D,
                        training_vectors=vec_bytes(x[:4000])))
            for i in range(0, 6000, 1000):
                ok(call(srv, action="add_vectors", index_id=name, dimension=D,
                        vectors=vec_bytes(x[i:i + 1000])))
        ok(call(srv, action="remove_ids", index_id="ivfpq", ids=list(range(0, 6000, 7))))
        first = searches(srv, queries)
    finally:
        kill9(srv)
    for _ in range(2):
        srv = start_persistent(tmp_path, *args)
        try:
            again = searches(srv, queries)
        finally:
            kill9(srv)
        assert "replayed" in srv.output or "records" in srv.output
        assert again == first
