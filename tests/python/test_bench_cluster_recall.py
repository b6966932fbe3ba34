"""bench/cluster_recall.py on a small dataset: a sharded, replicated cluster answers as one node
does (flat: identical; IVF: the same recall), and the checks it exits on catch a mismatch."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from test_cluster_agent import joins

sys.path.insert(0, str(ROOT / "bench"))
import cluster_recall  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd (Debian's etcd-server) is not installed")


def test_small_run_matches_the_single_node(tmp_path):
    if not joins():
        pytest.skip("built without the etcd client")
    out = tmp_path / "report.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "cluster_recall.py"), "--n", "3000",
                        "--dim", "16", "--queries", "30", "--nlist", "16", "--nprobe", "4",
                        "--json", str(out)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(out.read_text())
    assert r["violations"] == [] and r["config"]["n"] == 3000
    flat, ivf = r["results"]["flat"], r["results"]["ivf"]
    assert flat["queries_identical"] == 30 and flat["recall_cluster"] == flat["recall_single"]
    assert flat["recall_single"] > 0.99
    assert abs(ivf["recall_cluster"] - ivf["recall_single"]) < 0.1
    for res in (flat, ivf):
        held = [s["replicas"][s["primary"]]["vector_count"] for s in res["shards"]]
        assert sum(held) == 3000 and min(held) > 0
        assert all(len(s["replicas"]) == 2 for s in res["shards"])


def test_check_reports_a_flat_mismatch_and_an_uneven_replica():
    shards = [{"shard": i, "primary": "a1",
               "replicas": {"a1": {"vector_count": 10}, "a2": {"vector_count": 10}}}
              for i in range(3)]
    good = {"shards": shards, "vector_count_cluster": 30, "vector_count_single": 30,
            "queries": 5, "queries_identical": 5, "distances_close": True,
            "max_abs_distance_diff": 0.0}
    assert cluster_recall.check("flat", good, 30) == []
    bad = dict(good, queries_identical=4)
    assert "differ" in cluster_recall.check("flat", bad, 30)[0]
    uneven = json.loads(json.dumps(good))
    uneven["shards"][1]["replicas"]["a2"]["vector_count"] = 9
    assert "disagree" in cluster_recall.check("flat", uneven, 30)[0]
