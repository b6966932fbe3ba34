"""vecgpu-bench end to end: a tiny scenario file against the real vecgpu binary."""
import json
import pathlib
import subprocess

from conftest import ROOT, Server

BENCH = ROOT / "build" / "vecgpu-bench"

SCENARIOS = {
    "datasets": {"tiny": "synthetic:n=2000,nq=50,d=16,clusters=10,seed=5"},
    "indexes": {
        "flat": {"index_type": "L2", "factory": "Flat"},
        "ivf": {"index_type": "IVF", "factory": "IVF100,Flat", "nprobe": 100,
                "train_size": 2000},
    },
    "scenarios": {
        "closed": {"dataset": "tiny", "index": "flat", "clients": [1, 2], "batch": [1, 8],
                   "duration_s": 0.3, "warmup_s": 0.1, "encodings": ["list", "binary"]},
        "open": {"dataset": "tiny", "index": "flat", "mode": "open", "clients": 4,
                 "rate": [100], "duration_s": 0.5, "warmup_s": 0.1},
        "ingest": {"dataset": "tiny", "index": "flat", "op": "add", "base_rows": 0,
                   "clients": [2], "batch": [100], "duration_s": 0.3, "warmup_s": 0},
        "sweep": {"dataset": "tiny", "index": "ivf", "clients": [1], "nprobe": [1, 100],
                  "duration_s": 0.2, "warmup_s": 0},
    },
    "suites": {"all": ["closed", "open", "ingest", "sweep"]},
}


def test_bench_runs_every_kind_of_scenario(tmp_path):
    scen = tmp_path / "scenarios.json"
    scen.write_text(json.dumps(SCENARIOS))
    out = tmp_path / "report.json"
    srv = Server("--log-level", "warning")
    try:
        run = subprocess.run(
            [str(BENCH), "--scenarios", str(scen), "run", "all", "--vecgpu", srv.endpoint,
             "--data-dir", str(tmp_path / "data"), "--out", str(out)],
            capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        assert srv.stop() == 0
    report = json.loads(out.read_text())
    assert report["machine"]["cpus"] >= 1 and report["commit"]
    results = report["results"]
    by = lambda **kw: [r for r in results if all(r.get(k) == v for k, v in kw.items())]

    # Closed loop: both targets, both encodings on vecgpu, every sweep point, exact recall.
    for enc in ("list", "binary"):
        pts = by(scenario="closed", target="vecgpu", encoding=enc)
        assert {(p["clients"], p["batch"]) for p in pts} == {(1, 1), (1, 8), (2, 1), (2, 8)}
        for p in pts:
            assert p["errors"] == 0 and p["requests"] > 0, p
            assert p["recall_at_k"] == 1.0, p  # flat search is exact
            lat = p["latency_ms"]
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
            assert abs(p["queries_per_s"] - p["throughput_rps"] * p["batch"]) < 1e-6
    assert by(scenario="closed", target="faiss", encoding="list")
    assert not by(scenario="closed", target="faiss", encoding="binary")

    # Open loop: the schedule offers 100 requests/s for 0.5 s.
    (o,) = by(scenario="open", target="vecgpu")
    assert o["mode"] == "open" and o["offered_rps"] == 100
    assert 45 <= o["requests"] <= 55, o

    # Ingest counts vectors added.
    (ing,) = by(scenario="ingest", target="vecgpu")
    assert ing["vectors_per_s"] == ing["throughput_rps"] * 100 and ing["errors"] == 0

    # The nprobe sweep changes recall: all lists searched is exact.
    sweep = {p["nprobe"]: p["recall_at_k"] for p in by(scenario="sweep", target="vecgpu")}
    assert sweep[100] == 1.0 and sweep[1] < 1.0, sweep

    # Ratios pair vecgpu with in-process FAISS at the same point.
    assert any("vecgpu_over_faiss_throughput" in r for r in report["ratios"])
    # The ground truth was cached for the next run.
    assert (tmp_path / "data" / "tiny.gt.ivecs").stat().st_size > 0


def test_bench_refuses_unknown_names(tmp_path):
    run = subprocess.run([str(BENCH), "--scenarios", str(ROOT / "bench" / "scenarios.json"),
                          "run", "no-such-scenario"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "unknown scenario" in run.stderr
    listed = subprocess.run([str(BENCH), "--scenarios", str(ROOT / "bench" / "scenarios.json"),
                             "list"], capture_output=True, text=True, timeout=60)
    assert "concurrency-flat" in listed.stdout and "suite standard" in listed.stdout


def test_bench_reports_the_transport_floor_and_the_server_overhead(tmp_path):
    """The echo target (a bare ROUTER in vecgpu-bench) runs beside vecgpu and in-process FAISS,
    and each vecgpu point gets server overhead = vecgpu - faiss - echo. No timing asserted."""
    scen = tmp_path / "scenarios.json"
    scen.write_text(json.dumps({
        "datasets": SCENARIOS["datasets"],
        "indexes": SCENARIOS["indexes"],
        "scenarios": {"latency": {"dataset": "tiny", "index": "flat", "clients": [1],
                                  "batch": [1, 8], "duration_s": 0.2, "warmup_s": 0.05,
                                  "encodings": ["list", "binary"]}},
        "suites": {}}))
    out = tmp_path / "report.json"
    srv = Server("--log-level", "warning")
    try:
        run = subprocess.run(
            [str(BENCH), "--scenarios", str(scen), "run", "latency", "--vecgpu", srv.endpoint,
             "--data-dir", str(tmp_path / "data"), "--out", str(out)],
            capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        assert srv.stop() == 0
    report = json.loads(out.read_text())
    results = report["results"]
    by = lambda **kw: [r for r in results if all(r.get(k) == v for k, v in kw.items())]

    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
    # An echo row per encoding and batch, answered (the client decoded the canned replies).
    for enc in ("list", "binary"):
        echo = by(scenario="latency", target="echo", encoding=enc)
        assert {p["batch"] for p in echo} == {1, 8}, echo
        for p in echo:
            assert p["errors"] == 0 and p["requests"] > 0, p
            assert all(number(p["latency_ms"][pct]) for pct in ("p50", "p99")), p
            assert p["recall_at_k"] is None  # its labels are made up

    # Every vecgpu point carries its overhead, and the report lists the parts.
    overheads = report["overheads"]
    assert {(o["encoding"], o["batch"]) for o in overheads} == {
        (e, b) for e in ("list", "binary") for b in (1, 8)}
    for o in overheads:
        (v,) = by(scenario="latency", target="vecgpu", encoding=o["encoding"], batch=o["batch"])
        (f,) = by(scenario="latency", target="faiss", batch=o["batch"])
        (e,) = by(scenario="latency", target="echo", encoding=o["encoding"], batch=o["batch"])
        for pct in ("p50", "p99"):
            parts = [o[key][pct] for key in ("vecgpu_ms", "faiss_ms", "echo_ms",
                                             "server_overhead_ms")]
            assert all(number(x) for x in parts), o
            assert o["vecgpu_ms"][pct] == v["latency_ms"][pct]
            assert o["faiss_ms"][pct] == f["latency_ms"][pct]
            assert o["echo_ms"][pct] == e["latency_ms"][pct]
            assert abs(parts[3] - (parts[0] - parts[1] - parts[2])) < 1e-9
            assert v["server_overhead_ms"][pct] == o["server_overhead_ms"][pct]
    # ... and the text output prints it beside the rows.
    assert run.stdout.count(" overhead ") == 8, run.stdout
    assert report["options"]["echo"] is True
