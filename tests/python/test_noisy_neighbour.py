"""The noisy-neighbour benchmark (bench/noisy_neighbour.py) in a short version: every row runs,
against the real binary, and reports tenant B's latencies with the server's memory and
threads. Latency targets are the benchmark's to report (bench/README.md), not asserted here;
what is checked is that each row ran, B was answered throughout, and memory and threads
stayed bounded."""
import json
import subprocess
import sys

from conftest import ROOT, built_with_grpc


def test_noisy_neighbour_short_run(tmp_path):
    out = tmp_path / "noisy.json"
    rows = "train+snapshot,big-snapshot,clustering,flood"
    if built_with_grpc():
        rows += ",idle-streams,grpc-insert"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "noisy_neighbour.py"),
                        "--seconds", "1.5", "--snapshot-mb", "48", "--idle-streams", "300",
                        "--flood-clients", "1",
                        "--rows", rows, "--out", str(out), "--plot", str(tmp_path / "n.png")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())["rows"]
    assert set(rows.split(",")) | {"alone"} <= set(report)
    for name, row in report.items():
        assert row["n"] > 5, (name, row)  # B was answered throughout
        assert row.get("error") is None, (name, row)
        if name.startswith("alone"):
            continue
        assert row["rss_mb"] < 4000, (name, row)
        assert row["threads"] < 400, (name, row)  # 300 idle streams do not take 300 threads
    assert (tmp_path / "n.png").stat().st_size > 0
