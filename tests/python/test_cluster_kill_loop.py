"""The cluster's kill -9 loop (tests/cluster/kill_loop.py), three rounds: a real etcd, three
`serve --join` agents with data directories and a gateway; each round kills an agent with
SIGKILL while four faissx clients add and search, and restarts it on its data. No
acknowledged write may be lost. With replication (the gateway's --replicas 2) no search may
fail later than one lease TTL after a kill; with R = 1 (a build whose gateway has no
--replicas) that check does not apply (a killed agent's collections wait for it)."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import BINARY, ROOT

SCRIPT = ROOT / "tests" / "cluster" / "kill_loop.py"

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd (Debian's etcd-server) is not installed")


def help_of(command):
    return subprocess.run([str(BINARY), command, "--help"], capture_output=True, text=True,
                          timeout=20).stdout


def test_kill_loop_loses_no_acknowledged_write(tmp_path):
    if "--join" not in help_of("serve"):
        pytest.skip("built without the etcd client")
    replicas = 2 if "--replicas" in help_of("gateway") else 1
    out = tmp_path / "kill-loop.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "3", "--max-seconds", "90",
                        "--agents", "3", "--clients", "4", "--replicas", str(replicas),
                        "--lease-ttl", "3", "--json", str(out)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=150)
    assert out.exists(), r.stderr[-6000:]
    s = json.loads(out.read_text())
    why = f"{s.get('reasons')}\n{r.stderr[-6000:]}"
    assert s["rounds"] >= 1, why
    assert s["acked_ids"] > 0, why
    assert s["lost_writes"] == 0 and s["unverified_ids"] == 0, why
    assert all(rd["recovered"] for rd in s["per_round"]), why
    assert s["late_check_applies"] == (s["replication"] >= 2), why
    if s["late_check_applies"]:
        assert s["late_search_failures"] == 0, why
    assert r.returncode == 0 and s["verdict"] == "pass", why
