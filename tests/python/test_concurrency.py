"""Concurrency through the real binary: a long write never holds up other clients' searches."""
import msgpack
import numpy as np
import zmq

from conftest import Server, raw_call


def test_search_overtakes_a_long_training_run_of_another_tenant():
    srv = Server("--log-level", "warning")
    try:
        rng = np.random.default_rng(3)
        # Tenant A: an IVF index whose training takes seconds on two cores.
        raw_call(srv.endpoint, {"action": "create_index", "tenant_id": "a", "index_id": "big",
                                "dimension": 64, "index_type": "IVF1024"})
        train = rng.standard_normal((60_000, 64)).astype("float32")
        # Tenant B: a small flat index.
        raw_call(srv.endpoint, {"action": "create_index", "tenant_id": "b", "index_id": "small",
                                "dimension": 8})
        raw_call(srv.endpoint, {"action": "add_vectors", "tenant_id": "b", "index_id": "small",
                                "vectors": rng.standard_normal((100, 8)).tolist()})

        ctx = zmq.Context.instance()
        a = ctx.socket(zmq.REQ)
        a.setsockopt(zmq.LINGER, 0)
        a.connect(srv.endpoint)
        a.send(msgpack.packb({"action": "train_index", "tenant_id": "a", "index_id": "big",
                              "training_vectors": train.tobytes()}))
        # While A's training runs, B's searches are answered.
        answered = 0
        for _ in range(20):
            r = raw_call(srv.endpoint, {"action": "search", "tenant_id": "b",
                                        "index_id": "small",
                                        "query_vectors": rng.standard_normal((1, 8)).tolist(),
                                        "k": 3})
            assert r["success"], r
            answered += 1
        assert a.poll(0) == 0, "the training run finished before the searches: not a valid test"
        assert answered == 20
        assert a.poll(120_000) == zmq.POLLIN
        reply = msgpack.unpackb(a.recv())
        assert reply["success"] and reply["is_trained"], reply
        a.close()
    finally:
        assert srv.stop() == 0
