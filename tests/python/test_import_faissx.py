"""`vecgpu import-faissx` against a directory written by the real FAISSx server.

The module fixture runs the `faissx` package's server (the one in .venv) with `--data-dir`,
creates and fills indexes of every kind it persists over its own protocol, records what it
answers, and stops it. Each test copies that directory, imports it with the real binary and
serves the result: every index must hold what the FAISSx file holds and answer searches as
FAISSx did. Files FAISSx never writes (binary indexes, an IVF index with removed vectors)
are added with FAISS itself, as are damaged ones, which must be refused with their reason
while the rest loads.
"""
import os
import shutil
import subprocess
import time

import faiss
import numpy as np
import pytest
import zmq

from conftest import BINARY, ROOT, Server, call, free_port, ok, raw_call, rows

D = 16
K = 5
FAISSX_SERVER = ROOT / ".venv" / "bin" / "faissx.server"

# What the FAISSx server is asked to build: index id -> (FAISSx index_type, ids or None).
# "IDMap:{type}" makes FAISSx create "{id}_base" beside it, and "view" wraps the existing
# "viewbase", as the faissx client's IndexIDMap does; "viewbase" gets no vectors of its own.
KINDS = {
    "flat": ("L2", None),
    "ip": ("IP", None),
    "ivf": ("IVF", None),  # FAISSx: 100 lists
    "ivf_ip": ("IVF_IP", None),
    "hnsw": ("HNSW16", None),
    "pq": ("PQ4x8", None),
    "ivf_sq": ("IVF8_SQ0", None),  # FAISS's QT_8bit
    "idmap": ("IDMap:L2", [10_000 + 7 * i for i in range(120)]),
    "idmap2_ivf": ("IDMap2:IVF", [5_000_000 + 3 * i for i in range(120)]),
    "viewbase": ("L2", None),
    "view": ("IDMap:viewbase", [1, 2, 3, 42]),
}
TRAINED = {"ivf", "ivf_ip", "pq", "ivf_sq", "idmap2_ivf"}
# Approximate kinds whose search FAISS 1.15 (FAISSx) and 1.7.3 (vecgpu) may order apart.
APPROXIMATE = {"hnsw"}


def env_without_data_dir():
    env = dict(os.environ)
    env.pop("FAISSX_DATA_DIR", None)
    env.pop("VECGPU_DATA_DIR", None)
    return env


def run_import(src, data_dir, tenant="default", *extra):
    args = [str(BINARY), "import-faissx", str(src), "--data-dir", str(data_dir)]
    if tenant is not None:
        args += ["--tenant", tenant]
    return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=60,
                          env=env_without_data_dir())


def lines(proc):
    """{index id: ("loaded" | "refused", rest of the line)} from the import's report."""
    out = {}
    for line in proc.stdout.splitlines():
        verb, _, rest = line.partition(" ")
        if verb in ("loaded", "refused"):
            name, _, what = rest.partition(": ")
            assert name not in out, proc.stdout
            out[name] = (verb, what)
    return out


class FaissxRun:
    """The FAISSx server's data directory and what it answered before it stopped."""

    def __init__(self, path):
        self.dir = path
        self.vectors = {}  # index id -> vectors added
        self.ids = {}
        self.queries = {}
        self.search = {}  # index id -> FAISSx's search results
        self.pq_reconstructed = {}  # label -> FAISSx's reconstruction from "pq"


@pytest.fixture(scope="module")
def faissx(tmp_path_factory):
    run = FaissxRun(tmp_path_factory.mktemp("faissx-data"))
    log = tmp_path_factory.mktemp("faissx-log") / "faissx.log"
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(FAISSX_SERVER), "run", "--port", str(port), "--bind-address", "127.0.0.1",
             "--data-dir", str(run.dir), "--log-level", "ERROR"],
            stdout=out, stderr=subprocess.STDOUT, env=env_without_data_dir())
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if raw_call(endpoint, {"action": "ping"}, timeout_ms=300).get("success"):
                    break
            except zmq.Again:
                pass
            assert time.time() < deadline, "the FAISSx server did not answer ping"
            time.sleep(0.1)

        def fx(**request):
            reply = raw_call(endpoint, request, timeout_ms=20000)
            assert reply.get("success") is True, (request.get("action"), reply)
            return reply

        rng = np.random.default_rng(11)
        train = rng.standard_normal((2000, D)).astype(np.float32)
        for seed, (name, (index_type, ids)) in enumerate(KINDS.items()):
            fx(action="create_index", index_id=name, dimension=D, index_type=index_type)
            if name in TRAINED:
                fx(action="train_index", index_id=name, training_vectors=rows(train))
            if name == "viewbase":
                continue
            n = len(ids) if ids else 300
            x = np.random.default_rng(100 + seed).standard_normal((n, D)).astype(np.float32)
            if name == "ip":
                x /= np.linalg.norm(x, axis=1, keepdims=True)
            request = {"action": "add_vectors", "index_id": name, "vectors": rows(x)}
            if ids:
                request["ids"] = ids
            fx(**request)
            run.vectors[name], run.ids[name] = x, ids
        for seed, name in enumerate(run.vectors):
            base = run.vectors[name][:6]
            q = base + np.float32(0.05) * np.random.default_rng(200 + seed).standard_normal(
                base.shape).astype(np.float32)
            run.queries[name] = rows(q)
            run.search[name] = fx(action="search", index_id=name, query_vectors=rows(q),
                                  k=K)["results"]
        for key in (0, 7, 99):
            run.pq_reconstructed[key] = fx(action="reconstruct", index_id="pq", idx=key)["vector"]
        # Vectors added to an IDMap's base directly, after the IDMap was made: FAISSx writes
        # the IDMap with fewer ids than its base holds vectors.
        fx(action="create_index", index_id="mixedbase", dimension=D, index_type="L2")
        fx(action="create_index", index_id="mixed", dimension=D, index_type="IDMap:mixedbase")
        fx(action="add_vectors", index_id="mixedbase", vectors=rows(train[:3]))
        fx(action="add_vectors", index_id="mixed", vectors=rows(train[3:5]), ids=[8, 9])
        # FAISSx cannot write binary indexes: it logs the failure and leaves no file.
        fx(action="create_index", index_id="bits", dimension=64, index_type="BINARY_FLAT")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert not (run.dir / "bits.faiss").exists()
    return run


def add_foreign_files(src):
    """Files FAISSx does not write itself, a FAISS user might, and damaged ones."""
    rng = np.random.default_rng(5)
    expected = {}
    # A binary flat index (written as FAISSx would if it could).
    codes = rng.integers(0, 256, (100, 8), dtype=np.uint8)
    b = faiss.IndexBinaryFlat(64)
    b.add(codes)
    faiss.write_index_binary(b, str(src / "bin.faiss"))
    (src / "bin.json").write_text('{"index_id": "bin", "dimension": 64, "base_index_id": null}')
    q = codes[:4].copy()
    q[:, 0] ^= 1
    dist, idx = b.search(q, K)
    bits = np.unpackbits(q, axis=1, bitorder="little").astype(float).tolist()
    expected["bin"] = (bits, dist, idx)
    # An IVF index with removed vectors: its labels have holes, which vecgpu keeps.
    x = rng.standard_normal((300, D)).astype(np.float32)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, 8)
    ivf.train(x)
    ivf.add(x[:100])
    ivf.remove_ids(np.array([3, 50], dtype=np.int64))
    ivf.nprobe = 8
    faiss.write_index(ivf, str(src / "holes.faiss"))
    dist, idx = ivf.search(x[:4], K)
    expected["holes"] = (rows(x[:4]), dist, idx)
    expected["holes_vectors"] = x[:100]
    # No json: named after the file, as FAISSx's own loader does.
    lsh = faiss.IndexLSH(D, 32)
    lsh.add(x[:10])
    faiss.write_index(lsh, str(src / "lsh.faiss"))
    dup = faiss.IndexIDMap(faiss.IndexFlatL2(D))
    dup.add_with_ids(x[:3], np.array([1, 2, 2], dtype=np.int64))
    faiss.write_index(dup, str(src / "dupids.faiss"))
    flat = (src / "flat.faiss").read_bytes()
    (src / "broken.faiss").write_bytes(flat[: len(flat) // 2])
    (src / "broken.json").write_text('{"index_id": "broken", "dimension": 16}')
    (src / "garbage.faiss").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (src / "wrongdim.faiss").write_bytes(flat)
    (src / "wrongdim.json").write_text('{"index_id": "wrongdim", "dimension": 99}')
    (src / "orphan.json").write_text('{"index_id": "orphan", "dimension": 16}')
    return expected


REFUSED = {
    "broken": "FAISS cannot read it",
    "garbage": "FAISS cannot read it",
    "wrongdim": "its .json says dimension 99, its index holds 16",
    "orphan": "there is no orphan.faiss beside orphan.json",
    "lsh": "IndexLSH is not a kind vecgpu imports",
    "dupids": "holds id 2 twice",
    "mixed": "its IndexIDMap holds 2 ids for 5 vectors",
}


def same_results(got, want, name, exact=True):
    assert len(got) == len(want), name
    for g, w in zip(got, want):
        if exact:
            assert g["indices"] == w["indices"], name
            # Where there is no neighbour (-1) FAISSx gives FAISS's filler, -FLT_MAX for inner
            # product, and vecgpu FLT_MAX whatever the metric.
            found = np.array(w["indices"]) >= 0
            np.testing.assert_allclose(np.array(g["distances"])[found],
                                       np.array(w["distances"])[found], rtol=1e-4, atol=1e-4,
                                       err_msg=name)
        else:
            common = set(g["indices"]) & set(w["indices"])
            assert len(common) >= len(w["indices"]) - 1, (name, g, w)
            for i in common:
                np.testing.assert_allclose(g["distances"][g["indices"].index(i)],
                                           w["distances"][w["indices"].index(i)],
                                           rtol=1e-4, atol=1e-4, err_msg=name)


def test_import_serves_what_faissx_served(faissx, tmp_path):
    src = tmp_path / "faissx"
    shutil.copytree(faissx.dir, src)
    foreign = add_foreign_files(src)
    data = tmp_path / "vecgpu"

    first = run_import(src, data)
    report = lines(first)
    assert first.returncode == 1, first.stdout + first.stderr
    files = {p.stem for p in faissx.dir.glob("*.faiss")}
    # FAISSx writes an IDMap's base as its own file: "idmap_base", "idmap2_ivf_base".
    assert files == set(KINDS) | {"idmap_base", "idmap2_ivf_base", "mixed", "mixedbase"}
    assert set(report) == files | {"bin", "holes", "lsh", "dupids", "broken", "garbage",
                                   "wrongdim", "orphan"}, first.stdout
    for name, why in REFUSED.items():
        assert report[name][0] == "refused" and why in report[name][1], (name, first.stdout)
    loaded = {n for n, (verb, _) in report.items() if verb == "loaded"}
    assert loaded == files - {"mixed"} | {"bin", "holes"}, first.stdout
    assert report["idmap"][1] == "IDMap,Flat, 120 vectors"
    assert report["idmap2_ivf"][1] == "IDMap2,IVF100,Flat, 120 vectors"
    assert report["ivf_ip"][1] == "IVF100_IP, 300 vectors"
    assert report["holes"][1] == "IVF8, 98 vectors"
    assert f"imported {len(loaded)} of {len(report)} indexes" in first.stdout
    assert f"{len(REFUSED)} refused" in first.stdout

    # Importing again refuses every index the data directory already holds.
    again = run_import(src, data)
    assert again.returncode == 1
    for name, (verb, why) in lines(again).items():
        assert verb == "refused", (name, again.stdout)
        if name in loaded:
            assert why == f"the data directory already holds an index '{name}' for tenant " \
                          "'default'", again.stdout

    srv = Server("--data-dir", str(data), "--log-level", "warning")
    try:
        # A server holds the data directory: the import refuses to run.
        locked = run_import(src, data)
        assert locked.returncode == 2, locked.stdout + locked.stderr
        assert "in use by another process" in locked.stderr
        assert locked.stdout == ""

        listed = {i["index_id"] for i in ok(call(srv, action="list_indexes"))["indexes"]}
        assert listed == loaded
        for name in files - {"mixed"}:
            # What the file holds (an IDMap's base file is as FAISSx last wrote it).
            want = faiss.read_index(str(faissx.dir / f"{name}.faiss")).ntotal
            stats = ok(call(srv, action="get_index_stats", index_id=name))
            assert stats["ntotal"] == want, name
        # FAISSx never rewrote these bases' files after adds through their IDMaps.
        assert ok(call(srv, action="get_index_stats", index_id="viewbase"))["ntotal"] == 0
        assert ok(call(srv, action="get_index_stats", index_id="mixedbase"))["ntotal"] == 3
        for name in faissx.search:
            got = ok(call(srv, action="search", index_id=name,
                          query_vectors=faissx.queries[name], k=K))["results"]
            same_results(got, faissx.search[name], name, exact=name not in APPROXIMATE)
        # Reconstruction: exact kinds give back what was added (by id for IDMap kinds, also
        # over IVF, which FAISSx cannot reconstruct); PQ gives what FAISSx gave.
        for name in ("flat", "ip", "ivf", "hnsw", "idmap", "idmap2_ivf", "view"):
            x, ids = faissx.vectors[name], faissx.ids[name]
            for j in (0, 3, len(x) - 1):
                key = ids[j] if ids else j
                got = ok(call(srv, action="reconstruct", index_id=name, id=key))["vector"]
                np.testing.assert_array_equal(np.float32(got), x[j], err_msg=name)
        for key, want in faissx.pq_reconstructed.items():
            got = ok(call(srv, action="reconstruct", index_id="pq", id=key))["vector"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        # The IDMap's ids are its own: the id map came along.
        found = ok(call(srv, action="search", index_id="idmap",
                        query_vectors=rows(faissx.vectors["idmap"][[5]]), k=1))["results"]
        assert found[0]["indices"] == [faissx.ids["idmap"][5]]

        bits, dist, idx = foreign["bin"]
        got = ok(call(srv, action="search", index_id="bin", query_vectors=bits, k=K))["results"]
        assert [r["indices"] for r in got] == idx.tolist()
        assert [r["distances"] for r in got] == dist.tolist()
        queries, dist, idx = foreign["holes"]
        got = ok(call(srv, action="search", index_id="holes", query_vectors=queries,
                      k=K, params={"nprobe": 8}))["results"]
        same_results(got, [{"indices": i.tolist(), "distances": d.tolist()}
                           for i, d in zip(idx, dist)], "holes")
        got = ok(call(srv, action="reconstruct", index_id="holes", id=4))["vector"]
        np.testing.assert_array_equal(np.float32(got), foreign["holes_vectors"][4])
        assert call(srv, action="reconstruct", index_id="holes", id=3)["success"] is False

        # Imported indexes take writes like any other.
        new = np.full((1, D), 9.0, dtype=np.float32)
        added = ok(call(srv, action="add_vectors", index_id="ivf", vectors=rows(new)))
        assert added["ntotal"] == 301
        got = ok(call(srv, action="search", index_id="ivf", query_vectors=rows(new), k=1,
                      params={"nprobe": 100}))["results"]
        assert got[0]["indices"] == [300]
        ok(call(srv, action="add_with_ids", index_id="idmap", vectors=rows(new), ids=[77]))
        assert ok(call(srv, action="get_index_stats", index_id="idmap"))["ntotal"] == 121
    finally:
        assert srv.stop() == 0


def test_clean_import_exits_zero_under_its_tenant(faissx, tmp_path):
    src = tmp_path / "faissx"
    src.mkdir()
    for name in ("flat.faiss", "flat.json"):
        shutil.copy(faissx.dir / name, src / name)
    data = tmp_path / "vecgpu"
    done = run_import(src, data, "team-a")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "loaded flat: L2, 300 vectors",
        f"imported 1 of 1 indexes (300 vectors) from {src} into {data} for tenant 'team-a'"]
    srv = Server("--data-dir", str(data), "--log-level", "warning")
    try:
        assert ok(call(srv, action="list_indexes"))["indexes"] == []
        listed = ok(call(srv, action="list_indexes", tenant_id="team-a"))["indexes"]
        assert [i["index_id"] for i in listed] == ["flat"]
    finally:
        assert srv.stop() == 0


def test_usage_errors(tmp_path):
    missing = run_import(tmp_path / "absent", tmp_path / "data")
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    no_tenant = run_import(tmp_path, tmp_path / "data", None)
    assert no_tenant.returncode == 2 and "--tenant" in no_tenant.stderr
    no_data_dir = subprocess.run([str(BINARY), "import-faissx", str(tmp_path), "--tenant", "t"],
                                 capture_output=True, text=True, timeout=30,
                                 env=env_without_data_dir())
    assert no_data_dir.returncode == 2 and "--data-dir" in no_data_dir.stderr
    from_env = subprocess.run([str(BINARY), "import-faissx", str(tmp_path), "--tenant", "t"],
                              capture_output=True, text=True, timeout=30,
                              env={**env_without_data_dir(), "VECGPU_DATA_DIR":
                                   str(tmp_path / "env-data")})
    assert from_env.returncode == 0, from_env.stdout + from_env.stderr
    assert (tmp_path / "env-data" / "LOCK").exists()
