"""The cluster's chaos loop (tests/cluster/chaos.py), short: 3 etcd members, 3 agents, R = 2,
S = 2, four faissx clients writing and searching, one round of each fault (kill -9,
SIGSTOP/SIGCONT, an agent's API blackholed, a primary blackholed from everything, an etcd
member killed or blackholed, 200 ms of delay on an agent), lease TTL 2 s, faults of 3 s,
within 90 s. No acknowledged write may be lost, no search answered OK without the id it
looked for, every round back to R in-sync replicas, the replicas identical at the end and
one primary per epoch in etcd's history. By hand: `tests/cluster/chaos.py --rounds 50`."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import BINARY, ROOT

SCRIPT = ROOT / "tests" / "cluster" / "chaos.py"

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd (Debian's etcd-server) is not installed")


def help_of(command):
    return subprocess.run([str(BINARY), command, "--help"], capture_output=True, text=True,
                          timeout=20).stdout


def test_chaos_loses_nothing_and_heals(tmp_path):
    serve = help_of("serve")
    if "--join" not in serve:
        pytest.skip("built without the etcd client")
    if "--agent-port" not in serve:
        pytest.skip("`vecgpu serve` has no --agent-port: no proxy can sit in front of an agent")
    out = tmp_path / "chaos.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "6", "--max-seconds", "90",
                        "--lease-ttl", "2", "--fault-seconds", "3", "--client-timeout", "2",
                        "--rereplicate-after", "5", "--catch-up-seconds", "30",
                        "--json", str(out)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=150)
    assert out.exists(), r.stderr[-6000:]
    s = json.loads(out.read_text())
    why = f"{s.get('reasons')}\n{r.stderr[-6000:]}"
    assert s["rounds"] >= 4, why
    assert s["acked_ids"] > 0, why
    assert s["lost_writes"] == 0 and s["unverified_ids"] == 0, why
    assert s["searches_ok_without_the_id"] == 0, why
    assert all(rd["recovered"] for rd in s["per_round"]), why
    assert s["replicas_identical"] and not s["epoch_violations"], why
    assert r.returncode == 0 and s["verdict"] == "pass", why
