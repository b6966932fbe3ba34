"""Snapshots on the real binary: the `snapshot` action and what it leaves in the data directory
(a MANIFEST, one file per index storage under tenants/, the log cut behind it), restarts that
load the snapshots and replay only the log after them, the background (log size) and final
(graceful stop) snapshots, damaged or missing snapshot files, and index / tenant names that
must stay safe and distinct as file names."""
import os
import pathlib
import re
import subprocess
import time

import msgpack
import numpy as np
import pytest

from conftest import (BINARY, Server, call, fail, free_port, kill9, ok, raw_call, rand, rows,
                      start_persistent as start)

STARTUP = re.compile(
    r"loaded (\d+) index snapshots .*? then replayed (\d+) log records \((\d+) refused again, "
    r"as they were; (\d+) already in the snapshots\)")


def serve_refused(data_dir, *args):
    """Runs `vecgpu serve` on data_dir, expecting it to refuse to start: its output."""
    r = subprocess.run([str(BINARY), "serve", "--port", str(free_port()), "--metrics-port", "0",
                        "--data-dir", str(data_dir), *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def startup(output):
    """(snapshots loaded, log records replayed, refused again, already in the snapshots)."""
    m = STARTUP.search(output)
    assert m, output
    return tuple(int(g) for g in m.groups())


def segments(data_dir):
    return sorted(p.name for p in (data_dir / "wal").glob("*.log"))


def snap_files(data_dir):
    return sorted((data_dir / "tenants").rglob("*.snap"))


def bits(seed, n, d):
    return np.random.default_rng(seed).integers(0, 2, (n, d)).tolist()


# The index kinds every test here covers: name -> (dimension, binary?, search params).
KINDS = {
    "flat": (8, False, None),
    "ivf": (8, False, {"nprobe": 8}),  # every list: exact, whatever the training
    "base": (8, False, None),  # the storage the IDMap2 view shares
    "view": (8, False, None),
    "bin": (64, True, None),
    "hnsw": (8, False, {"efSearch": 256}),
}


PARAMS = {"ivf": "nprobe", "hnsw": "efSearch"}  # set by populate(seed 0)


class Writer:
    """Sends writes and counts them (each acknowledged write is one log record)."""

    def __init__(self, srv):
        self.srv, self.writes = srv, 0

    def __call__(self, **request):
        r = ok(call(self.srv, **request))
        self.writes += 1
        return r


def populate(w, seed):
    """Creates (if needed) and fills one index of every kind; different data for each seed."""
    if seed == 0:
        w(action="create_index", index_id="flat", dimension=8, index_type="L2")
        w(action="create_index", index_id="ivf", dimension=8, index_type="IVF8")
        w(action="train_index", index_id="ivf", training_vectors=rows(rand(400, 8, 99)))
        w(action="set_parameter", index_id="ivf", parameter="nprobe", value=8)
        w(action="create_index", index_id="base", dimension=8, index_type="L2")
        w(action="create_index", index_id="view", dimension=8, index_type="IDMap2:base")
        w(action="create_index", index_id="bin", dimension=64, index_type="BINARY_FLAT")
        w(action="create_index", index_id="hnsw", dimension=8, index_type="HNSW16")
        w(action="set_parameter", index_id="hnsw", parameter="efSearch", value=77)
    w(action="add_vectors", index_id="flat", vectors=rows(rand(40, 8, seed + 1)))
    w(action="remove_ids", index_id="flat", ids=[3, 7])
    w(action="add_vectors", index_id="ivf", vectors=rows(rand(60, 8, seed + 2)))
    w(action="add_vectors", index_id="base", vectors=rows(rand(10, 8, seed + 3)))
    ids = [1000 * (seed + 1) + i for i in range(6)]
    w(action="add_with_ids", index_id="view", vectors=rows(rand(6, 8, seed + 4)), ids=ids)
    w(action="replace_vector", index_id="view", id=ids[2], vector=rows(rand(1, 8, seed + 5))[0])
    w(action="remove_ids", index_id="view", ids=[ids[4]])
    w(action="add_vectors", index_id="bin", vectors=bits(seed + 6, 30, 64))
    # One vector per add: HNSW graphs built one insertion at a time are the same on replay.
    for v in rows(rand(5, 8, seed + 7)):
        w(action="add_vectors", index_id="hnsw", vectors=[v])


def dump(srv, names=None):
    """Everything observable about the indexes: vectors, ids, ntotal and search results."""
    listed = {i["index_id"] for i in ok(call(srv, action="list_indexes"))["indexes"]}
    out = {"indexes": sorted(listed)}
    for name in sorted(listed if names is None else names):
        dim, binary, params = KINDS.get(name, (8, False, None))
        stats = ok(call(srv, action="get_index_stats", index_id=name))
        got = ok(call(srv, action="get_vectors", index_id=name))
        q = bits(5, 4, dim) if binary else rows(rand(4, dim, 5))
        req = dict(action="search", index_id=name, query_vectors=q, k=12)
        if params:
            req["params"] = params
        s = ok(call(srv, **req))
        out[name] = {"ntotal": stats["ntotal"], "vectors": got["vectors"], "ids": got["ids"],
                     "indices": s["indices"], "distances": s["distances"]}
        if name in PARAMS:
            out[name]["param"] = ok(call(srv, action="get_parameter", index_id=name,
                                         parameter=PARAMS[name]))["param_value"]
            # And a search with the index's own parameter.
            out[name]["default_search"] = ok(call(srv, action="search", index_id=name,
                                                  query_vectors=q, k=12))["indices"]
        if name == "view":
            out[name]["reconstruct"] = {
                i: ok(call(srv, action="reconstruct", index_id=name, id=i))["vector"]
                for i in got["ids"]}
    return out


def test_snapshot_action_cuts_the_log_and_a_restart_replays_only_what_came_after(tmp_path):
    srv = start(tmp_path)
    w = Writer(srv)
    populate(w, 0)
    first_run = w.writes
    kill9(srv)
    # A restart starts a new log segment: the first one is wholly before the next snapshot.
    srv = start(tmp_path)
    w = Writer(srv)
    populate(w, 1)
    before_segments = segments(tmp_path)
    assert len(before_segments) == 2, before_segments
    assert not (tmp_path / "MANIFEST").exists()

    rep = ok(call(srv, action="snapshot"))
    assert rep["seq"] == first_run + w.writes  # the log position it reflects: every write
    assert rep["written"] == 5  # flat, ivf, base (with its view), bin, hnsw
    assert rep["unchanged"] == 0
    assert rep["bytes"] > 0
    assert isinstance(rep["seconds"], float) and rep["seconds"] >= 0
    assert isinstance(rep["max_write_pause_seconds"], float)
    assert 0 <= rep["max_write_pause_seconds"] <= rep["seconds"] + 1e-3
    assert (tmp_path / "MANIFEST").exists()
    # The segment wholly before the snapshot is gone; the open one (holding the cut) stays.
    after_segments = segments(tmp_path)
    assert after_segments == before_segments[1:], (before_segments, after_segments)
    files = snap_files(tmp_path)
    assert len(files) == 5, files
    assert all(f.parent.parent == tmp_path / "tenants" for f in files)
    assert {f.parent.name for f in files} == {"default"}
    # The view lives in its base's storage: no file of its own.
    assert sorted(f.name.split("@")[0] for f in files) == ["base", "bin", "flat", "hnsw", "ivf"]
    # <name>@<storage id>.<seq>.snap, the seq at most the snapshot's.
    assert all(int(f.name.split(".")[1]) <= rep["seq"] for f in files)

    # Writes after the snapshot: the only ones the next start may replay.
    w = Writer(srv)
    populate(w, 2)
    w(action="create_index", index_id="late", dimension=8, index_type="L2")
    w(action="add_vectors", index_id="late", vectors=rows(rand(3, 8, 77)))
    w(action="create_index", index_id="gone", dimension=8, index_type="L2")
    w(action="delete_index", index_id="gone")
    w(action="delete_index", index_id="flat")  # a snapshotted index dropped after it
    before = dump(srv)
    assert "flat" not in before["indexes"] and "late" in before["indexes"]
    kill9(srv)

    srv = start(tmp_path)
    try:
        assert dump(srv) == before
    finally:
        kill9(srv)
    loaded, replayed, refused, skipped = startup(srv.output)
    assert loaded == 5
    assert replayed == w.writes
    assert refused == 0
    assert skipped == 0  # nothing was written while the snapshot ran
    # Again after a crash that came before any new write: the same state, the same replay.
    srv = start(tmp_path)
    try:
        assert dump(srv) == before
    finally:
        assert srv.stop() == 0
    assert startup(srv.output) == (5, w.writes, 0, 0)


def test_a_snapshot_with_nothing_changed_writes_nothing(tmp_path):
    srv = start(tmp_path)
    try:
        populate(Writer(srv), 0)
        first = ok(call(srv, action="snapshot"))
        assert first["written"] == 5 and first["unchanged"] == 0
        files = {f: f.stat().st_mtime_ns for f in snap_files(tmp_path)}
        manifest = (tmp_path / "MANIFEST").read_bytes()
        again = ok(call(srv, action="snapshot"))
        assert again["written"] == 0
        assert again["unchanged"] == 5
        assert again["bytes"] == 0
        assert again["seq"] == first["seq"]
        assert {f: f.stat().st_mtime_ns for f in snap_files(tmp_path)} == files
        assert (tmp_path / "MANIFEST").read_bytes() == manifest
        # One change: only that storage is written again (a view's write is its base's).
        ok(call(srv, action="add_with_ids", index_id="view", vectors=rows(rand(1, 8, 3)),
                ids=[123456]))
        third = ok(call(srv, action="snapshot"))
        assert third["written"] == 1 and third["unchanged"] == 4
        assert third["seq"] == first["seq"] + 1
        now = snap_files(tmp_path)
        assert len(now) == 5  # the base's previous file is removed
        assert [f.name for f in now if f.name.startswith("base@")] != \
            [f.name for f in files if f.name.startswith("base@")]
        before = dump(srv)
    finally:
        kill9(srv)
    # After a restart that loaded them, the snapshots are still current: nothing to write.
    srv = start(tmp_path)
    try:
        assert dump(srv) == before
        rep = ok(call(srv, action="snapshot"))
        assert rep["written"] == 0 and rep["unchanged"] == 5, rep
    finally:
        assert srv.stop() == 0
    assert startup(srv.output)[:2] == (5, 0)


def test_a_graceful_stop_takes_a_final_snapshot(tmp_path):
    srv = start(tmp_path)
    w = Writer(srv)
    populate(w, 0)
    before = dump(srv)
    assert before["ivf"]["param"] == 8 and before["hnsw"]["param"] == 77
    assert srv.stop() == 0
    assert "final snapshot: 5 written, 0 unchanged" in srv.output, srv.output
    assert len(snap_files(tmp_path)) == 5
    srv = start(tmp_path)
    try:
        assert dump(srv) == before
    finally:
        assert srv.stop() == 0
    assert startup(srv.output) == (5, 0, 0, 0)
    # Nothing changed in between: the final snapshot of the second run writes nothing.
    assert "final snapshot: 0 written, 5 unchanged" in srv.output, srv.output


def test_the_log_size_triggers_a_background_snapshot(tmp_path):
    srv = start(tmp_path, "--snapshot-log-mb", "1", "--snapshot-interval-s", "0")
    w = Writer(srv)
    populate(w, 0)
    assert not (tmp_path / "MANIFEST").exists()
    # About 1.4 MiB in the log: float32 rows (32 bytes each here), and binary vectors logged as
    # one float32 per bit (256 bytes each here).
    for i in range(3):
        w(action="add_vectors", index_id="flat", vectors=rows(rand(8192, 8, 10 + i)))
    w(action="add_vectors", index_id="ivf", vectors=rows(rand(4096, 8, 20)))
    for i in range(2):
        w(action="add_vectors", index_id="bin", vectors=bits(30 + i, 1024, 64))
    deadline = time.time() + 20
    while not ((tmp_path / "MANIFEST").exists() and len(snap_files(tmp_path)) == 5):
        assert time.time() < deadline, "no background snapshot after the log passed 1 MiB"
        time.sleep(0.1)
    # Writes after it, then a crash.
    w2 = Writer(srv)
    populate(w2, 1)
    before = dump(srv)
    kill9(srv)
    m = re.search(r"snapshot \(log size\): 5 written, 0 unchanged, .*log kept from record (\d+)",
                  srv.output)
    assert m, srv.output
    cut = int(m.group(1)) - 1
    # It came once the log passed 1 MiB, and not again (the writes after it are small).
    assert len(re.findall(r"snapshot \(log size\)", srv.output)) == 1, srv.output
    assert cut > w.writes - 6  # after most of the large adds at least
    srv = start(tmp_path)
    try:
        assert dump(srv) == before
    finally:
        assert srv.stop() == 0
    loaded, replayed, refused, skipped = startup(srv.output)
    assert loaded == 5
    assert refused == 0
    # Only the log after the snapshot's cut is read again: every write after it, no more.
    assert replayed + skipped == w.writes + w2.writes - cut, (replayed, skipped, cut)
    assert replayed >= w2.writes


def make_damage_fixture(data_dir):
    srv = start(data_dir)
    populate(Writer(srv), 0)
    before = dump(srv)
    assert srv.stop() == 0  # final snapshot: the log after it is empty
    files = {f.name.split("@")[0]: f for f in snap_files(data_dir)}
    assert sorted(files) == ["base", "bin", "flat", "hnsw", "ivf"]
    return before, files


def test_a_damaged_snapshot_refuses_to_start_or_is_set_aside(tmp_path):
    before, files = make_damage_fixture(tmp_path)
    victim = files["flat"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))

    out = serve_refused(tmp_path)
    assert victim.name in out, out
    assert victim.exists()  # refusing touches nothing

    srv = start(tmp_path, "--recover-from-last-good")
    try:
        names = {i["index_id"] for i in ok(call(srv, action="list_indexes"))["indexes"]}
        assert names == {"ivf", "base", "view", "bin", "hnsw"}
        others = sorted(names)
        got = dump(srv, others)
        assert got == {**{k: before[k] for k in others}, "indexes": others}
        fail(call(srv, action="get_index_stats", index_id="flat"), code="NOT_FOUND")
        # It can be made again, and is kept from now on.
        ok(call(srv, action="create_index", index_id="flat", dimension=8, index_type="L2"))
        ok(call(srv, action="add_vectors", index_id="flat", vectors=rows(rand(2, 8, 1))))
    finally:
        assert srv.stop() == 0
    assert "set aside" in srv.output, srv.output
    assert victim.name in srv.output
    assert not victim.exists()
    assert (victim.parent / (victim.name + ".damaged")).exists()
    srv = start(tmp_path)  # clean without the flag now
    try:
        assert ok(call(srv, action="get_index_stats", index_id="flat"))["ntotal"] == 2
        assert dump(srv, ["ivf", "bin"])["ivf"] == before["ivf"]
    finally:
        assert srv.stop() == 0
    # The .damaged file is kept (for a person to look at), not swept as a stray.
    assert (victim.parent / (victim.name + ".damaged")).exists()


def test_a_snapshot_the_manifest_names_but_is_missing_refuses_to_start(tmp_path):
    before, files = make_damage_fixture(tmp_path)
    victim = files["bin"]
    victim.unlink()
    out = serve_refused(tmp_path)
    assert victim.name in out, out
    assert "missing" in out
    srv = start(tmp_path, "--recover-from-last-good")
    try:
        others = ["base", "flat", "hnsw", "ivf", "view"]
        assert dump(srv, others) == {**{k: before[k] for k in others}, "indexes": others}
    finally:
        assert srv.stop() == 0
    assert "set aside" in srv.output and victim.name in srv.output


def test_a_damaged_manifest_refuses_to_start(tmp_path):
    make_damage_fixture(tmp_path)
    m = tmp_path / "MANIFEST"
    data = bytearray(m.read_bytes())
    data[20] ^= 1
    m.write_bytes(bytes(data))
    out = serve_refused(tmp_path)
    assert "MANIFEST" in out, out


def test_the_snapshot_action_needs_a_data_directory():
    srv = Server("--log-level", "warning")
    try:
        r = fail(call(srv, action="snapshot"), "data-dir")
        assert r["error_details"]["status"] == "UNIMPLEMENTED", r
        assert r["error_code"] == "UNSUPPORTED", r
    finally:
        assert srv.stop() == 0


def encode_name(name):
    """core/store/manifest.h EncodeName: [A-Za-z0-9_-] kept, every other byte %XX, "" -> "~",
    and an encoding past 96 bytes cut to 80 (never inside an escape) + "~" + FNV-1a hash."""
    raw = name.encode()
    if not raw:
        return "~"
    out = "".join(chr(c) if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "-_")
                  else f"%{c:02X}" for c in raw)
    if len(out) <= 96:
        return out
    h = 14695981039346656037
    for c in raw:
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    keep = 80
    if out[keep - 1] == "%":
        keep -= 1
    elif out[keep - 2] == "%":
        keep -= 2
    return out[:keep] + "~" + f"{h:016x}"


MAX_INDEX_ID = 256  # Limits::max_index_id_length (core/options.h); no flag changes it
MAX_TENANT_ID = 128  # Limits::max_tenant_id_length


def test_index_and_tenant_names_stay_safe_and_distinct_as_file_names(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # (tenant, index id): names that are paths, that differ in one escaped byte, that encode
    # alike if escaping were careless, and the longest allowed (cut and hashed in file names).
    names = [
        ("default", ".."), ("default", "."), ("default", "a/b"), ("default", "a.b"),
        ("default", "a.c"), ("default", "a%2Eb"), ("default", "a%2eb"), ("default", "~"),
        ("default", "../../escape"), ("default", "/abs"), ("default", "a\\b"),
        ("default", "A"), ("default", "a"), ("default", "x" * MAX_INDEX_ID),
        ("default", "x" * (MAX_INDEX_ID - 1) + "y"), ("default", "\u00e9" * (MAX_INDEX_ID // 2)),
        ("default", "%" * MAX_INDEX_ID), ("default", "\U0001F600" * (MAX_INDEX_ID // 4)),
        ("..", "t"), ("a/b", "t"), ("a%2Fb", "t"), (".", ".."), ("", "t"),
        ("t" * MAX_TENANT_ID, "u" * MAX_INDEX_ID),
        # Tenant ids, unlike index ids, may hold control characters (NUL included).
        ("t\x00", "t"), ("t\n", "t"),
    ]
    srv = start(data_dir)
    made = []
    try:
        # Refused, clearly, before anything is written: the empty index id, ids past the
        # limit (a 10,000-byte id too), non-UTF-8 bytes as a msgpack str, and a msgpack bin.
        fail(call(srv, action="create_index", index_id="", dimension=8, index_type="L2"),
             "index_id", "empty", code="INVALID_ARGUMENT")
        for n in (MAX_INDEX_ID + 1, 10_000):
            fail(call(srv, action="create_index", index_id="x" * n, dimension=8,
                      index_type="L2"),
                 "index_id", f"longer than {MAX_INDEX_ID}", code="INVALID_ARGUMENT")
        fail(call(srv, action="create_index", index_id="\u00e9" * (MAX_INDEX_ID // 2) + "x",
                  dimension=8, index_type="L2"), "index_id", "longer", code="INVALID_ARGUMENT")
        # msgpack str holding "a\xffb": refused while the request is decoded.
        packer = msgpack.Packer()
        raw = (b"\x84" + packer.pack("action") + packer.pack("create_index") +
               packer.pack("index_id") + b"\xa3a\xffb" + packer.pack("dimension") +
               packer.pack(8) + packer.pack("index_type") + packer.pack("L2"))
        fail(raw_call(srv.endpoint, raw), "not valid UTF-8", code="INVALID_ARGUMENT")
        fail(raw_call(srv.endpoint, {"action": "create_index", "index_id": b"a\xffb",
                                     "dimension": 8, "index_type": "L2"}),
             "index_id", "must be a string", code="INVALID_ARGUMENT")
        fail(raw_call(srv.endpoint, {"action": "create_index", "index_id": "t", "dimension": 8,
                                     "index_type": "L2", "tenant_id": b"t\xff"}),
             "Invalid tenant ID", code="AUTH_ERROR")  # any unusable tenant_id, as FAISSx
        fail(call(srv, action="create_index", index_id="t", dimension=8, index_type="L2",
                  tenant_id="t" * (MAX_TENANT_ID + 1)), "Invalid tenant ID", code="AUTH_ERROR")
        fail(call(srv, action="create_index", index_id="a\nb", dimension=8, index_type="L2"),
             "index_id", code="INVALID_ARGUMENT")
        for k, (tenant, name) in enumerate(names):
            req = dict(action="create_index", index_id=name, dimension=8, index_type="L2")
            if tenant != "default":
                req["tenant_id"] = tenant
            r = call(srv, **req)
            if tenant == "":
                fail(r, "Invalid tenant ID", code="AUTH_ERROR")  # empty: refused
                continue
            ok(r)
            add = dict(req, action="add_vectors", vectors=rows(rand(3 + k % 4, 8, 500 + k)))
            del add["dimension"], add["index_type"]
            ok(call(srv, **add))
            made.append((tenant, name, add["vectors"]))
        ok(call(srv, action="snapshot"))
    finally:
        kill9(srv)

    def check(srv):
        for tenant, name, vectors in made:
            req = dict(action="get_vectors", index_id=name)
            if tenant != "default":
                req["tenant_id"] = tenant
            got = ok(call(srv, **req))
            assert got["vectors"] == vectors, (tenant, name)
        listed = ok(call(srv, action="list_indexes"))["indexes"]
        assert sorted(i["index_id"] for i in listed) == \
            sorted(n for t, n, _ in made if t == "default")

    srv = start(data_dir)
    try:
        check(srv)
    finally:
        kill9(srv)
    assert startup(srv.output)[:2] == (len(made), 0)

    # Nothing outside the data directory; inside, only the expected layout, every name short.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    seen = []
    for root, dirs, files in os.walk(data_dir, followlinks=False):
        for n in dirs + files:
            p = pathlib.Path(root) / n
            assert not p.is_symlink(), p
            assert len(os.fsencode(n)) <= 255, p
            assert p.resolve().is_relative_to(data_dir.resolve()), p
            if n in files:
                seen.append(p.relative_to(data_dir))
    snaps = [p for p in seen if p.parts[0] == "tenants"]
    assert all(len(p.parts) == 3 and p.name.endswith(".snap") for p in snaps), snaps
    assert len(snaps) == len(made)  # one distinct file per index: no two names collided
    # Exactly the documented encoding (core/store/manifest.h EncodeName).
    got = sorted((p.parts[1], p.name.split("@")[0]) for p in snaps)
    assert got == sorted((encode_name(t), encode_name(n)) for t, n, _ in made)
    assert all(re.fullmatch(r"[^@]+@\d{20}\.\d{20}\.snap", p.name) for p in snaps), snaps
    assert sorted(str(p) for p in seen if p.parts[0] != "tenants" and p.parts[0] != "wal") == \
        ["LOCK", "MANIFEST"]
    # And a graceful stop (its final snapshot) and one more start keep it so.
    srv = start(data_dir)
    try:
        check(srv)
    finally:
        assert srv.stop() == 0
    assert len(snap_files(data_dir)) == len(made)


def test_the_interval_triggers_a_background_snapshot_only_while_something_changed(tmp_path):
    srv = start(tmp_path, "--snapshot-interval-s", "1", "--snapshot-log-mb", "0")
    try:
        populate(Writer(srv), 0)
        deadline = time.time() + 10
        while not (tmp_path / "MANIFEST").exists():
            assert time.time() < deadline, "no snapshot after --snapshot-interval-s 1"
            time.sleep(0.1)
        time.sleep(0.3)  # its files, then the manifest: let it finish
        manifest = (tmp_path / "MANIFEST").read_bytes()
        time.sleep(2.5)  # nothing written since: no further snapshot
        assert (tmp_path / "MANIFEST").read_bytes() == manifest
        before = dump(srv)
    finally:
        kill9(srv)
    assert srv.output.count("snapshot (interval): 5 written") == 1, srv.output
    assert "snapshot (interval)" in srv.output
    srv = start(tmp_path)
    try:
        assert dump(srv) == before
    finally:
        assert srv.stop() == 0
    assert startup(srv.output)[:2] == (5, 0)


@pytest.mark.parametrize("index_type", ["SQ8", "SQ4", "SQ6", "SQ8_IP", "IDMap2,SQ8"])
def test_a_scalar_quantizer_that_has_not_trained_itself_yet_survives_a_restart(tmp_path,
                                                                               index_type):
    srv = start(tmp_path)
    ok(call(srv, action="create_index", index_id="s", dimension=8, index_type=index_type))
    x = rows(rand(3, 8, 1))
    if index_type.startswith("IDMap2"):
        ok(call(srv, action="add_with_ids", index_id="s", vectors=x, ids=[7, 8, 9]))
    else:
        ok(call(srv, action="add_vectors", index_id="s", vectors=x))
    before = ok(call(srv, action="get_vectors", index_id="s"))["vectors"]
    assert srv.stop() == 0  # its final snapshot holds the index
    srv = start(tmp_path)  # today: exits with the DataLoss above
    try:
        assert ok(call(srv, action="get_vectors", index_id="s"))["vectors"] == before
    finally:
        assert srv.stop() == 0
