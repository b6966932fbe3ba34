"""Writes tests/compat/v1: a data directory of this version (format 1), and what it holds:
snapshots and a manifest for the first writes, the log for the rest (the server is killed, so
no final snapshot covers them). Run once when the format version changes;
tests/python/test_compat.py loads it in every later version.
    .venv/bin/python tests/compat/make_v1.py"""
import json
import shutil
import signal
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
from conftest import Server, call, ok, rows  # noqa: E402

out = HERE / "v1"
shutil.rmtree(out, ignore_errors=True)
srv = Server("--data-dir", str(out), "--log-level", "warning")
x = np.random.default_rng(11).standard_normal((200, 8)).astype(np.float32)
ok(call(srv, action="create_index", index_id="flat", dimension=8, index_type="L2"))
ok(call(srv, action="add_vectors", index_id="flat", vectors=rows(x[:40])))
ok(call(srv, action="remove_ids", index_id="flat", ids=[5]))
ok(call(srv, action="create_index", index_id="ids", dimension=8, index_type="IDMap2:flat"))
ok(call(srv, action="add_with_ids", index_id="ids", vectors=rows(x[40:43]), ids=[70, 71, 72]))
ok(call(srv, action="replace_vector", index_id="ids", id=71, vector=rows(x[199])))
ok(call(srv, action="snapshot"))  # flat and its IDMap2 view: in a snapshot
ok(call(srv, action="create_index", index_id="ivf", dimension=8, index_type="IVF4"))
ok(call(srv, action="train_index", index_id="ivf", training_vectors=rows(x)))
ok(call(srv, action="add_vectors", index_id="ivf", vectors=rows(x[:100])))
ok(call(srv, action="set_parameter", index_id="ivf", parameter="nprobe", value=2))
ok(call(srv, action="create_index", index_id="bin", dimension=16, index_type="BINARY_FLAT"))
ok(call(srv, action="add_vectors", index_id="bin", vectors=[[1, 0] * 8, [1, 1] * 8]))
ok(call(srv, action="add_vectors", index_id="flat", vectors=rows(x[43:45])))  # after it
expected = {
    "indexes": sorted(i["index_id"] for i in ok(call(srv, action="list_indexes"))["indexes"]),
    "flat_vectors": ok(call(srv, action="get_vectors", index_id="flat"))["vectors"],
    "ids_71": ok(call(srv, action="reconstruct", index_id="ids", id=71))["vector"],
    "ivf_search": ok(call(srv, action="search", index_id="ivf", query_vectors=rows(x[:4]),
                          k=3))["indices"],
    "ivf_nprobe": ok(call(srv, action="get_parameter", index_id="ivf",
                          parameter="nprobe"))["param_value"],
    "queries": rows(x[:4]),
    "bin_ntotal": ok(call(srv, action="get_index_stats", index_id="bin"))["ntotal"],
}
srv.proc.send_signal(signal.SIGKILL)
srv.proc.wait()
(out / "LOCK").unlink()
(HERE / "v1.json").write_text(json.dumps(expected, indent=1) + "\n")
print("wrote", out, sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()))
