"""bench/plot.py on small hand-built vecgpu-bench reports (the schema Runner::Report writes)."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLOT = ROOT / "bench" / "plot.py"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

DATASETS = {"synth-100k": (100000, 128), "synth-20k": (20000, 128)}
# One-query service time in ms: FAISSx is ~100x slower than the others, as in real runs.
SERVICE_MS = {"vecgpu": 1.0, "faiss": 1.5, "faissx": 150.0}


def entry(scenario, target, *, dataset="synth-100k", index="flat", index_type="L2",
          encoding="list", mode="closed", op="search", clients=1, batch=1, rate=None,
          recall=1.0, param=None, errors=0):
    n, d = DATASETS[dataset]
    ms = SERVICE_MS[target] * (1 + 0.05 * batch) * (0.5 if encoding == "binary" else 1)
    if param:
        ms *= param[1] / 8
    par = min(clients, 1 if target == "faissx" else 8)
    rps = rate * 0.99 if rate else par * 1000.0 / ms
    p50 = ms * clients / par if not rate else ms
    e = {"scenario": scenario, "about": "", "dataset": dataset, "n": n, "d": d, "index": index,
         "index_type": index_type, "target": target, "encoding": encoding, "mode": mode, "op": op,
         "clients": clients, "batch": batch, "k": 10, "offered_rps": rate, "requests": int(rps * 2),
         "errors": errors, "errors_by_kind": {"timeout": errors} if errors else {},
         "late_starts": 0, "duration_s": 2.0, "throughput_rps": rps,
         ("queries_per_s" if op == "search" else "vectors_per_s"): rps * batch,
         "latency_ms": {"p50": p50, "p90": p50 * 1.3, "p99": p50 * 2, "p999": p50 * 3,
                        "max": p50 * 4, "mean": p50 * 1.1},
         "recall_at_k": recall if op == "search" else None}
    if param:
        e[param[0]] = param[1]
    return e


def full_report():
    three = ["vecgpu", "faiss", "faissx"]
    r = []
    r += [entry("latency-flat", t) for t in three]
    r += [entry("concurrency-flat", t, clients=c, errors=2 if t == "faissx" and c == 16 else 0)
          for t in three for c in (1, 4, 16)]
    r += [entry("batch-flat", t, batch=b) for t in ("vecgpu", "faiss") for b in (1, 16, 256)]
    r += [entry("open-flat", t, mode="open", clients=64, rate=q)
          for t in ("vecgpu", "faiss") for q in (50, 200, 800)]
    r += [entry("ingest-flat", t, dataset="synth-20k", op="add", clients=c, batch=1000)
          for t in three for c in (1, 4)]
    r += [entry("mixed-flat", t, dataset="synth-20k", op="mixed", clients=8) for t in three]
    r += [entry("concurrency-ivf", t, index="ivf", index_type="IVF", clients=c, recall=0.93)
          for t in three for c in (1, 4, 16)]
    r += [entry("recall-ivf", t, index="ivf", index_type="IVF", clients=4,
                param=("nprobe", p), recall=1 - 0.4 / p) for t in ("vecgpu", "faiss")
          for p in (1, 4, 16)]
    r += [entry("concurrency-hnsw", t, dataset="synth-20k", index="hnsw", index_type="HNSW32",
                clients=c, recall=0.95) for t in ("vecgpu", "faiss") for c in (1, 4, 16)]
    r.append({"scenario": "concurrency-hnsw", "target": "faissx", "encoding": "list",
              "error": "UNAVAILABLE: HNSW32 | not supported"})
    r += [entry("recall-hnsw", t, dataset="synth-20k", index="hnsw", index_type="HNSW32",
                clients=4, param=("efSearch", p), recall=1 - 2.0 / p)
          for t in ("vecgpu", "faiss") for p in (16, 64, 256)]
    r += [entry("batch-encoding", "vecgpu", dataset="synth-20k", encoding=enc, batch=b)
          for enc in ("list", "binary") for b in (1, 64, 1024)]
    ratios = [{"scenario": "latency-flat", "clients": 1, "batch": 1, "offered_rps": None,
               "vecgpu_over_faiss_throughput": 1.5, "vecgpu_over_faiss_p50": 0.6667,
               "vecgpu_over_faissx_throughput": 150.0, "vecgpu_over_faissx_p50": 0.00667}]
    ratios += [{"scenario": "concurrency-flat", "clients": c, "batch": 1, "offered_rps": None,
                "vecgpu_over_faiss_throughput": 1.25, "vecgpu_over_faiss_p50": 0.8,
                "vecgpu_over_faissx_throughput": 100.0 * c, "vecgpu_over_faissx_p50": 0.5}
               for c in (1, 4, 16)]
    # A ratio row for a scenario the summary leaves out.
    ratios.append({"scenario": "recall-ivf", "clients": 4, "batch": 1, "offered_rps": None,
                   "vecgpu_over_faiss_throughput": 9.75, "vecgpu_over_faiss_p50": 0.1})
    return {"tool": "vecgpu-bench 0.1.0", "commit": "deadbee", "started_at": "2025-01-01T00:00:00Z",
            "machine": {"hostname": "h", "cpus": 16, "cpu_model": "Test CPU @ 3.0GHz",
                        "memory_bytes": 1 << 34, "gpu": "none"},
            "options": {"vecgpu": "tcp://127.0.0.1:1", "faissx": "tcp://127.0.0.1:2",
                        "in_process": True, "time_scale": 1.0, "k": 10},
            "results": r, "ratios": ratios}


def run_plot(tmp_path, report):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    out = tmp_path / "plots"
    proc = subprocess.run([PYTHON, str(PLOT), str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"plot.py failed:\n{proc.stdout}\n{proc.stderr}"
    assert "warning" not in proc.stderr, proc.stderr
    return out, proc


def assert_png(path):
    assert path.is_file(), f"missing {path.name}"
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC), f"{path.name} is not a PNG"


def test_full_report_plots_and_summary(tmp_path):
    out, proc = run_plot(tmp_path, full_report())
    expected = ["concurrency-flat_throughput.png", "concurrency-ivf_throughput.png",
                "concurrency-hnsw_throughput.png", "open-flat_latency.png",
                "recall-ivf_recall.png", "recall-hnsw_recall.png", "batch-flat_batch.png",
                "batch-encoding_batch.png"]
    for name in expected:
        assert_png(out / name)
    produced = {p.name for p in out.glob("*.png")}
    # One-client latency scenarios and add/mixed scenarios get no plot of their own.
    assert not {p for p in produced if p.startswith(("latency-", "ingest-", "mixed-"))}, produced

    summary = (out / "summary.md").read_text()
    assert proc.stdout.strip() == summary.strip()
    assert "commit deadbee" in summary and "Test CPU @ 3.0GHz" in summary
    # Every search point, with its sweep parameter or offered rate.
    assert "| recall-ivf | vecgpu | list | 4 | 1 | nprobe=16 |" in summary
    assert "| recall-hnsw | faiss | list | 4 | 1 | efSearch=64 |" in summary
    assert "| open-flat | faiss | list | 64 | 1 | rate=800 |" in summary
    assert "| batch-encoding | vecgpu | binary | 1 | 1024 | - |" in summary
    assert "| ingest-flat | faissx | list | add | 4 | 1000 |" in summary
    assert "UNAVAILABLE: HNSW32 \\| not supported" in summary
    # The ratios of latency-flat and concurrency-flat, and only those.
    ratios = summary[summary.index("## Ratios"):]
    assert "| latency-flat | 1 | 1 | 1.50x | 150.0x | 0.67x | 0.0067x |" in ratios
    for c in (1, 4, 16):
        assert f"| concurrency-flat | {c} | 1 | 1.25x | {100.0 * c:.1f}x | 0.80x | 0.50x |" in ratios
    assert "9.75x" not in ratios


def test_partial_report_is_skipped_gracefully(tmp_path):
    report = full_report()
    report["results"] = [e for e in report["results"]
                         if e["scenario"] in ("latency-flat", "concurrency-flat")
                         and e["target"] == "vecgpu"]
    report["results"].append({"scenario": "concurrency-flat", "target": "faissx",
                              "encoding": "list", "error": "connect refused"})
    del report["ratios"]
    del report["machine"]
    out, _ = run_plot(tmp_path, report)
    assert {p.name for p in out.glob("*.png")} == {"concurrency-flat_throughput.png"}
    assert_png(out / "concurrency-flat_throughput.png")
    summary = (out / "summary.md").read_text()
    assert "| concurrency-flat | vecgpu | list | 16 | 1 |" in summary
    assert "no ratios" in summary


def test_ratios_computed_when_report_has_none(tmp_path):
    report = full_report()
    del report["ratios"]
    out, _ = run_plot(tmp_path, report)
    ratios = (out / "summary.md").read_text().split("## Ratios", 1)[1]
    # As Ratios() in bench/runner.cc: vecgpu 952 req/s over faiss 635 and faissx 6.35.
    assert "| latency-flat | 1 | 1 | 1.50x | 150.0x | 0.67x | 0.0067x |" in ratios
    assert "| concurrency-flat | 16 | 1 |" in ratios


def test_empty_report(tmp_path):
    out, _ = run_plot(tmp_path, {"results": []})
    assert list(out.glob("*.png")) == []
    assert "no search results" in (out / "summary.md").read_text()
