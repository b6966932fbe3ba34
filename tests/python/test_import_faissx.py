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
import resource
import shutil
import struct
import subprocess
import threading
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


# What each refusal starts with: the file at fault, then why.
REFUSED = {
    "broken": "broken.faiss: it declares more data than the file holds",
    "garbage": "garbage.faiss: not a FAISS index file FAISSx writes (unknown index type)",
    "wrongdim": "wrongdim.faiss: its .json says dimension 99, its index holds 16",
    "orphan": "there is no orphan.faiss beside orphan.json",
    "lsh": "lsh.faiss: FAISS's faiss::IndexLSH is not a kind vecgpu imports",
    "dupids": "dupids.faiss: it holds id 2 twice",
    "mixed": "mixed.faiss: its IndexIDMap holds 2 ids for 5 vectors",
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
        assert report[name][0] == "refused" and report[name][1].startswith(why), \
            (name, first.stdout)
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


# ---- Directories written to do harm -------------------------------------------------------
# The import reads whatever the directory holds: files that declare sizes they do not hold,
# symbolic links out of it, FIFOs. None may take the host's memory, read outside the
# directory, block, or have its bytes quoted back in a message.

SECRET = b"SECRETXY"


def index_header(d, ntotal, metric=1):
    """FAISS's index header: d, ntotal, two unused fields, is_trained, metric type (L2)."""
    return struct.pack("<iqqq?i", d, ntotal, 1 << 20, 1 << 20, True, metric)


def binary_header(d, ntotal):
    """A binary index's: d, code_size, ntotal, is_trained, metric type."""
    return struct.pack("<iiq?i", d, d // 8, ntotal, True, 1)


def oversized_files():
    """{file name: bytes}: FAISS files that declare far more data than they hold, each where
    FAISS 1.7.3 allocates (and zeroes) what is declared before reading any of it."""
    quantizer = b"IxF2" + index_header(16, 1) + struct.pack("<Q", 16) + bytes(64)
    return {
        # An IndexFlatL2 declaring 2e9 floats (8 GB), with none of them.
        "flat8g.faiss": b"IxF2" + index_header(16, 125_000_000)
                        + struct.pack("<Q", 2_000_000_000),
        # 1e8 floats (400 MB): under the cap the test runs with, so FAISS would allocate them.
        "flat400m.faiss": b"IxF2" + index_header(16, 6_250_000) + struct.pack("<Q", 100_000_000),
        # An IVF-Flat index whose one inverted list declares 5e6 vectors (360 MB of codes and
        # ids), allocated before any list is read.
        "lists.faiss": b"IwFl" + index_header(16, 5_000_000) + struct.pack("<QQ", 1, 1)
                       + quantizer + b"\x00" + struct.pack("<Q", 0)  # no direct map
                       + b"ilar" + struct.pack("<QQ", 1, 64)
                       + b"full" + struct.pack("<QQ", 1, 5_000_000),
        # A product quantizer of 2^16 centroids of 1024 dimensions (256 MB).
        "pq.faiss": b"IxPq" + index_header(1024, 0) + struct.pack("<QQQ", 1024, 8, 16),
        # A binary hash index of 1e7 buckets: 65 bytes each for their bit strings (650 MB).
        "hash.faiss": b"IBHh" + binary_header(64, 0) + struct.pack("<ii", 64, 0)
                      + struct.pack("<Qi", 10_000_000, 1),
    }


def run_import_capped(src, data, scratch, address_space=2 << 30):
    """run_import with the address space capped, so that an allocation of what a file declares
    fails rather than takes the host's memory. Returns the finished process and its peak
    resident memory in bytes."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    args = [str(BINARY), "import-faissx", str(src), "--data-dir", str(data), "--tenant", "default"]
    out_path, err_path = scratch / "import.out", scratch / "import.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env_without_data_dir(),
                                preexec_fn=cap)
    timer = threading.Timer(60, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own rusage
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(args, proc.returncode, out_path.read_text(),
                                       err_path.read_text())
    return done, usage.ru_maxrss * 1024


def test_sizes_declared_past_the_end_of_the_file_are_refused_before_allocating(faissx, tmp_path):
    src = tmp_path / "faissx"
    src.mkdir()
    shutil.copy(faissx.dir / "flat.faiss", src / "flat.faiss")
    # What the import takes for a valid index alone (the libraries it maps, CUDA's included).
    alone, baseline = run_import_capped(src, tmp_path / "baseline", tmp_path)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    for name, data in oversized_files().items():
        (src / name).write_bytes(data)
    # A sparse file: a length that takes no disk, far past what the host could hold.
    with open(src / "sparse.faiss", "wb") as f:
        f.truncate(1 << 40)

    started = time.monotonic()
    done, peak = run_import_capped(src, tmp_path / "vecgpu", tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    report = lines(done)
    assert report.pop("flat") == ("loaded", "L2, 300 vectors"), done.stdout
    verb, why = report.pop("sparse")
    assert verb == "refused" and why.startswith(
        f"sparse.faiss: {1 << 40} bytes, more than the "), done.stdout
    assert set(report) == {name.removesuffix(".faiss") for name in oversized_files()}
    declares = "it declares more data than the file holds (at byte "
    for stem, (verb, why) in report.items():
        assert verb == "refused" and why.startswith(f"{stem}.faiss: {declares}"), done.stdout
    # FAISS would have allocated 256 MB or more for each but the first (which fails the cap).
    assert peak - baseline < 100 << 20, f"peak {peak >> 20} MiB, {baseline >> 20} MiB alone"
    assert time.monotonic() - started < 30


def test_symbolic_links_are_refused_without_reading_their_targets(faissx, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET * 64)
    valid_elsewhere = tmp_path / "elsewhere.faiss"
    shutil.copy(faissx.dir / "flat.faiss", valid_elsewhere)
    metadata_elsewhere = tmp_path / "elsewhere.json"
    metadata_elsewhere.write_text('{"index_id": "%s", "dimension": 16}' % SECRET.decode())
    src = tmp_path / "faissx"
    src.mkdir()
    (src / "leak.faiss").symlink_to(secret)
    (src / "alias.faiss").symlink_to(valid_elsewhere)  # an index, but not one in the directory
    shutil.copy(faissx.dir / "flat.faiss", src / "named.faiss")
    (src / "named.json").symlink_to(metadata_elsewhere)
    (src / "dangling.faiss").symlink_to(tmp_path / "absent")

    done = run_import(src, tmp_path / "vecgpu")
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines(done) == {
        "leak": ("refused", "leak.faiss: is a symbolic link; refused"),
        "alias": ("refused", "alias.faiss: is a symbolic link; refused"),
        "named": ("refused", "named.json: is a symbolic link; refused"),
        "dangling": ("refused", "dangling.faiss: is a symbolic link; refused"),
    }, done.stdout
    assert SECRET[:4].decode() not in done.stdout + done.stderr


def test_fifos_and_directories_are_refused_without_blocking(faissx, tmp_path):
    src = tmp_path / "faissx"
    src.mkdir()
    os.mkfifo(src / "pipe.faiss")  # opened for reading, it would wait for a writer
    shutil.copy(faissx.dir / "flat.faiss", src / "meta.faiss")
    os.mkfifo(src / "meta.json")
    (src / "folder.faiss").mkdir()

    done = subprocess.run(
        [str(BINARY), "import-faissx", str(src), "--data-dir", str(tmp_path / "vecgpu"),
         "--tenant", "default"],
        capture_output=True, text=True, timeout=20, env=env_without_data_dir())
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines(done) == {
        "pipe": ("refused", "pipe.faiss: not a regular file (a FIFO); refused"),
        "meta": ("refused", "meta.json: not a regular file (a FIFO); refused"),
        "folder": ("refused", "folder.faiss: not a regular file (a directory); refused"),
    }, done.stdout


def test_unknown_index_types_are_refused_without_quoting_the_file(tmp_path):
    src = tmp_path / "faissx"
    src.mkdir()
    (src / "odd.faiss").write_bytes(SECRET * 64)
    (src / "oddbinary.faiss").write_bytes(b"IB" + SECRET * 64)  # "IB": read as a binary index
    # An IndexIDMap around an index of no kind FAISS knows.
    (src / "nested.faiss").write_bytes(b"IxMp" + index_header(16, 0) + SECRET * 64)

    done = run_import(src, tmp_path / "vecgpu")
    assert done.returncode == 1, done.stdout + done.stderr
    unknown = "not a FAISS index file FAISSx writes (unknown index type)"
    assert lines(done) == {
        "odd": ("refused", f"odd.faiss: {unknown}"),
        "oddbinary": ("refused", f"oddbinary.faiss: {unknown}"),
        "nested": ("refused",
                   "nested.faiss: it holds an index of an unknown type (a damaged file)"),
    }, done.stdout
    text = done.stdout + done.stderr
    # FAISS's own message quotes the fourcc, as text and in hex.
    for quoted in ("SECR", "RETX", "52434553", "53454352"):
        assert quoted not in text, text


def test_metadata_is_read_within_bounds_and_never_quoted(faissx, tmp_path):
    src = tmp_path / "faissx"
    src.mkdir()
    for stem in ("cut", "huge", "escape"):
        shutil.copy(faissx.dir / "flat.faiss", src / f"{stem}.faiss")
    (src / "cut.json").write_text('{"index_id": "%s' % SECRET.decode())  # no closing quote
    (src / "huge.json").write_bytes(b" " * (2 << 20) + b"{}")
    # A name that would put terminal escapes in the report.
    (src / "escape.json").write_text('{"index_id": "a\\u001b[2Jb"}')

    done = run_import(src, tmp_path / "vecgpu")
    assert done.returncode == 1, done.stdout + done.stderr
    report = lines(done)
    assert set(report) == {"cut", "huge", "escape"}, done.stdout
    assert report["cut"][0] == "refused"
    assert report["cut"][1].startswith("cut.json: not valid JSON (at byte "), done.stdout
    assert report["huge"] == ("refused", f"huge.json: {(2 << 20) + 2} bytes, more than the "
                                         f"{1 << 20} the import reads from such a file; refused")
    assert report["escape"] == ("refused", "escape.json: index_id is not a name vecgpu takes "
                                           "(printable UTF-8, at most 256 bytes)")
    assert SECRET.decode() not in done.stdout + done.stderr
    assert "\x1b" not in done.stdout + done.stderr


def test_a_direct_map_in_the_file_is_rebuilt_not_trusted(tmp_path):
    x = np.random.default_rng(7).standard_normal((40, D)).astype(np.float32)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, 4)
    ivf.train(x)
    ivf.add(x)
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    data = bytearray(faiss.serialize_index(ivf).tobytes())
    # The direct map follows the IVF header (fourcc, header, nlist, nprobe) and the flat
    # quantizer (fourcc, header, float count, centroids): its type, an empty array, then
    # (id, list << 32 | offset) pairs. Each is pointed far past the end of list 3.
    at = 4 + 33 + 16 + 4 + 33 + 8 + 4 * D * 4
    assert data[:4] == b"IwFl" and data[at] == 2, bytes(data[:8])
    assert struct.unpack_from("<QQ", data, at + 1) == (0, len(x))
    for i in range(len(x)):
        struct.pack_into("<qq", data, at + 17 + 16 * i, i, (3 << 32) | 10_000_000)
    src = tmp_path / "faissx"
    src.mkdir()
    (src / "mapped.faiss").write_bytes(bytes(data))
    data_dir = tmp_path / "vecgpu"
    done = run_import(src, data_dir)
    assert done.returncode == 0, done.stdout + done.stderr

    srv = Server("--data-dir", str(data_dir), "--log-level", "warning")
    try:
        for i in (0, 17, len(x) - 1):
            got = ok(call(srv, action="reconstruct", index_id="mapped", id=i))["vector"]
            np.testing.assert_array_equal(np.float32(got), x[i])
    finally:
        assert srv.stop() == 0


def test_counts_and_parameters_the_served_index_would_trust_are_refused(tmp_path):
    x = np.random.default_rng(9).standard_normal((20, D)).astype(np.float32)
    src = tmp_path / "faissx"
    src.mkdir()
    # An IndexFlatL2 whose ntotal times its code size (64 bytes) wraps around to the 0 bytes
    # it holds: FAISS's own check passes, and searches would read 2^58 vectors.
    (src / "wrapped.faiss").write_bytes(b"IxF2" + index_header(D, 1 << 58) + struct.pack("<Q", 0))
    # An IndexIDMap2 counting more vectors than it has ids: FAISS builds its reverse map from
    # that many ids, reading past them.
    idmap2 = faiss.IndexIDMap2(faiss.IndexFlatL2(D))
    idmap2.add_with_ids(x, np.arange(len(x)) + 100)
    data = bytearray(faiss.serialize_index(idmap2).tobytes())
    assert data[:4] == b"IxM2"
    struct.pack_into("<q", data, 8, 1 << 40)  # its ntotal, after fourcc and d
    (src / "idmap2.faiss").write_bytes(bytes(data))
    # An HNSW index searching with 2^31 - 1 candidates: each search would allocate 16 GB.
    hnsw = faiss.IndexHNSWFlat(D, 16)
    hnsw.add(x)
    hnsw.hnsw.efSearch = 2 ** 31 - 1
    faiss.write_index(hnsw, str(src / "hnsw.faiss"))
    # A binary hash index flipping all 64 bits of its hashes: each search would probe 2^64
    # buckets.
    bhash = faiss.IndexBinaryHash(64, 64)
    bhash.add(np.random.default_rng(9).integers(0, 256, (20, 8), dtype=np.uint8))
    bhash.nflip = 64
    faiss.write_index_binary(bhash, str(src / "bhash.faiss"))

    done = run_import(src, tmp_path / "vecgpu")
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines(done) == {
        "wrapped": ("refused", f"wrapped.faiss: it holds 0 bytes of codes for {1 << 58} vectors "
                               "of 64 bytes (a damaged file)"),
        "idmap2": ("refused", "idmap2.faiss: its IndexIDMap2 counts more vectors than it holds "
                              "ids for (vectors were added to its base directly, or a damaged "
                              "file)"),
        "hnsw": ("refused", "hnsw.faiss: its HNSW efSearch, efConstruction or upper_beam is "
                            "outside 1..1000000"),
        "bhash": ("refused", "bhash.faiss: its nflip (bits flipped at search) makes each search "
                             "probe more than 1048576 buckets"),
    }, done.stdout
