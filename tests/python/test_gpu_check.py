"""scripts/gpu-check.sh on a machine without a GPU: a clear skip, exit 0, one JSON file."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def visible_gpus():
    if not shutil.which("nvidia-smi"):
        return 0
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return r.stdout.count("GPU ") if r.returncode == 0 else 0


def test_gpu_check_without_a_gpu_skips_cleanly(tmp_path):
    if visible_gpus():
        pytest.skip("a GPU is visible: gpu-check.sh runs the real check here")
    out = tmp_path / "gpu-check.json"
    r = subprocess.run(["bash", str(ROOT / "scripts/gpu-check.sh"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "gpu-check: no GPU: skipped" in r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert result["gpu"] is None
    assert result["skipped"].startswith("no GPU")
