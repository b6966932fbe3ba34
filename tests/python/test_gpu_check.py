"""scripts/gpu-check.sh without a GPU: the skip, the budgets, the two files it writes; its GPU
path driven by stand-in binaries and a stand-in nvidia-smi (the JSON a GPU machine would get,
failures, timeouts, a preflight that stops in seconds); its server steps with the real
server on fake GPUs (a real gpu-host child killed and restarted); vecgpu-serve-check against
a CPU server; and scripts/gpu-bundle.sh's size limit."""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import BINARY, Server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/gpu-check.sh"
SERVE_CHECK = BINARY.parent / "vecgpu-serve-check"
STEPS = ["preflight", "parity", "serve", "rebuild", "crash", "stop", "bench", "single_adds",
         "oom"]


def visible_gpus():
    if not shutil.which("nvidia-smi"):
        return 0
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return r.stdout.count("GPU ") if r.returncode == 0 else 0


def run_check(out_dir, env=None, timeout=120):
    out = out_dir / "gpu-check.json"
    full_env = dict(os.environ)
    full_env.update(env or {})
    t0 = time.time()
    r = subprocess.run(["bash", str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                       timeout=timeout, env=full_env, cwd=out_dir)
    r.seconds = time.time() - t0
    r.result = json.loads(out.read_text()) if out.exists() else None
    return r


def check_budgets(result):
    budgets = result["budget_s"]
    assert sorted(s for s in budgets if s in STEPS) == sorted(STEPS)
    assert budgets["total"] == sum(budgets[s] for s in STEPS)
    assert budgets["worst_case"] == budgets["total"] + budgets["grace_per_step"] * len(STEPS)
    assert budgets["worst_case"] < 300
    assert list(result["steps"]) == STEPS
    for s in STEPS:
        assert result["steps"][s]["budget_s"] == budgets[s]


def test_gpu_check_without_a_gpu_skips_cleanly(tmp_path):
    if visible_gpus():
        pytest.skip("a GPU is visible: gpu-check.sh runs the real check here")
    r = run_check(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "gpu-check: no GPU: skipped" in r.stdout + r.stderr
    result = r.result
    assert result["gpu"] is None
    assert result["skipped"].startswith("no GPU")
    assert result["ok"] is None and result["complete"] is True and result["failures"] == []
    check_budgets(result)
    assert result["steps"]["preflight"]["status"] == "skipped"
    assert all(result["steps"][s]["status"] == "not run" for s in STEPS[1:])
    # Exactly one JSON file and one log, the log opening with the budget table.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-check.json", "gpu-check.log"]
    log = (tmp_path / "gpu-check.log").read_text()
    assert re.search(r"^  total +%d \(with the grace: %d\)$" % (
        result["budget_s"]["total"], result["budget_s"]["worst_case"]), log, re.M), log
    assert r.seconds < 30


def test_budgets_that_reach_300_seconds_are_refused(tmp_path):
    r = run_check(tmp_path, env={"VECGPU_CHECK_BUDGET_PARITY": "120"})
    assert r.returncode == 2
    assert "not under 300 s" in r.stderr
    r = run_check(tmp_path, env={"VECGPU_CHECK_BUDGET_BENCH": "ten"})
    assert r.returncode == 2
    assert "whole number" in r.stderr


# --- the GPU path, with stand-ins --------------------------------------------------------

NVIDIA_SMI = """\
#!/usr/bin/env bash
case "$*" in
  *--query-gpu*) echo "0, NVIDIA H100 80GB HBM3, 81559, 580.159.04, ${FAKE_CC:-9.0}" ;;
  *) echo "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: ${FAKE_DRIVER_CUDA:-13.0} |" ;;
esac
"""

# Each stand-in prints what the real binary prints on a healthy GPU machine; FAKE_* variables
# make one fail, hang or crash.
STANDINS = {
    "vecgpu": """\
        case "$1" in
          --version) echo "vecgpu 0.1.0"; echo "FAISS: 1.7.3, GPU: yes" ;;
          serve)
            [ "$*" = "${*/--help/}" ] || { echo "  --grpc-port INT"; exit 0; }
            echo "[t] [info] [vecgpu] gpus: GPU 0 NVIDIA H100 80GB HBM3, budget 60 GiB"
            if [ -n "${FAKE_SERVER_DIES:-}" ]; then
              sleep 0.5; echo "CUDA error: an illegal memory access"; ulimit -c 0; kill -ABRT $$
            fi
            trap 'exit 0' TERM
            sleep 60 & wait ;;
        esac
    """,
    "gpu/gpu_test": """\
        echo "[ RUN      ] GpuParityTest.FlatL2"
        echo "[       OK ] GpuParityTest.FlatL2 (12 ms)"
        echo "[ RUN      ] GpuParityTest.KAndNprobeOf2048"
        if [ -n "${FAKE_PARITY_FAIL:-}" ]; then
          echo "[  FAILED  ] GpuParityTest.KAndNprobeOf2048 (40 ms)"; exit 1
        fi
        echo "[       OK ] GpuParityTest.KAndNprobeOf2048 (40 ms)"
    """,
    "gpu/vecgpu-gpu-bench": """\
        [ -z "${FAKE_BENCH_HANG:-}" ] || sleep 100
        echo '{"device": "NVIDIA H100 80GB HBM3", "gpu_qps": 250000.0, "cpu_qps": 9000.0, "speedup": 27.78, "gpu_one_query_ms_p50": 0.2, "cpu_one_query_ms_p50": 20.0}'
    """,
    "gpu/vecgpu-gpu-check": """\
        case "$*" in
          *probe*)
            [ -z "${FAKE_NO_CUDA:-}" ] || { echo '{"cuda_runtime": "13.0", "cuda_driver": null, "skipped": "CUDA: cudaGetDeviceCount: no CUDA-capable device"}'; exit 0; }
            echo '{"count": 1, "cuda_driver": "13.0", "cuda_runtime": "13.0", "devices": [{"compute_capability": "9.0", "free_bytes": 84000000000, "id": 0, "name": "NVIDIA H100 80GB HBM3", "total_bytes": 85000000000}], "ok": true, "problems": []}' ;;
          *single-adds*)
            echo '{"adds": 10000, "adds_done": 10000, "slow_adds": 3, "free_bytes_before_copy": 84000000000, "free_bytes_after_adds": 83400000000, "ok": true, "problems": []}' ;;
          *oom*)
            [ -z "${FAKE_OOM_ABORT:-}" ] || { echo "Faiss assertion failed" >&2; ulimit -c 0; kill -ABRT $$; }
            echo '{"build": {"status": "RESOURCE_EXHAUSTED: GPU build: alloc fail"}, "ok": true, "problems": []}' ;;
        esac
    """,
    "vecgpu-serve-check": """\
        case "$*" in
          *" wait"*) echo '{"ready": true, "ok": true, "problems": []}' ;;
          *setup*) [ -z "${FAKE_SERVER_DIES:-}" ] || sleep 1; echo '{"served_from": {"device": "gpu:0", "gpu_copy": "current"}, "k2048_ok": true, "ok": true, "problems": []}' ;;
          *rebuild*)
            [ -z "${FAKE_REBUILD_FAIL:-}" ] || { echo '{"ok": false, "problems": ["3 searches failed"]}'; exit 1; }
            echo '{"searches": {"answered": 900, "failed": 0}, "ok": true, "problems": []}' ;;
          *crash*) echo '{"server_pid": 1, "skipped": "no gpu-host child found"}' ;;
        esac
    """,
}


@pytest.fixture
def fake_gpu(tmp_path):
    """A build directory of stand-ins and a PATH whose nvidia-smi reports one H100."""
    build = tmp_path / "build"
    (build / "gpu").mkdir(parents=True)
    for name, body in STANDINS.items():
        p = build / name
        p.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    faiss = tmp_path / "faiss"
    faiss.mkdir()
    (faiss / "vecgpu-faiss.txt").write_text("version=1.7.3-2\nsimd=avx2\ngpu=cuda-13.0 sm_90\n")
    (build / "CMakeCache.txt").write_text(f"VECGPU_FAISS_ROOT:PATH={faiss}\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(NVIDIA_SMI)
    smi.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {"VECGPU_BUILD_DIR": str(build), "PATH": f"{bindir}:{os.environ['PATH']}"}
    return out, env


def test_gpu_path_writes_every_step_into_one_json(fake_gpu):
    out, env = fake_gpu
    r = run_check(out, env=env)
    assert r.returncode == 0, r.stderr
    result = r.result
    assert result["ok"] is True and result["complete"] is True and "skipped" not in result
    check_budgets(result)
    assert result["gpu"]["count"] == 1 and result["gpu"]["source"] == "nvidia-smi"
    assert result["gpu"]["driver_cuda"] == "13.0"
    assert result["gpu"]["devices"][0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3",
                                           "memory_total_mib": 81559, "compute_cap": "9.0"}
    steps = result["steps"]
    pre = steps["preflight"]
    assert pre["status"] == "passed" and pre["problems"] == []
    assert pre["build"] == {"faiss_gpu": "cuda-13.0 sm_90", "cuda": "13.0", "archs": "90"}
    assert pre["probe"]["devices"][0]["compute_capability"] == "9.0"
    assert steps["parity"]["passed"] == 2 and steps["parity"]["failed"] == 0
    assert steps["serve"]["result"]["served_from"]["device"] == "gpu:0"
    assert steps["serve"]["server"]["port"] > 0
    assert steps["serve"]["server_gpu_log"] == ["gpus: GPU 0 NVIDIA H100 80GB HBM3, budget 60 GiB"]
    assert steps["crash"] == {**steps["crash"], "status": "skipped",
                              "reason": "no gpu-host child found"}
    assert steps["stop"]["status"] == "passed"
    assert steps["bench"]["result"]["speedup"] == 27.78
    for s in ["rebuild", "single_adds", "oom"]:
        assert steps[s]["status"] == "passed", steps[s]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "gpu-check.log"]
    log = (out / "gpu-check.log").read_text()
    assert "===== parity" in log and "GpuParityTest.FlatL2" in log
    assert "----- vecgpu serve log" in log


def test_failures_timeouts_and_aborts_are_reported_and_the_run_goes_on(fake_gpu):
    out, env = fake_gpu
    env.update({"FAKE_PARITY_FAIL": "1", "FAKE_REBUILD_FAIL": "1", "FAKE_BENCH_HANG": "1",
                "FAKE_OOM_ABORT": "1", "VECGPU_CHECK_BUDGET_BENCH": "3"})
    r = run_check(out, env=env)
    assert r.returncode == 1
    result = r.result
    assert result["ok"] is False and result["complete"] is True
    steps = result["steps"]
    assert steps["parity"]["status"] == "failed"
    assert steps["parity"]["failed_tests"] == ["GpuParityTest.KAndNprobeOf2048"]
    assert steps["rebuild"]["status"] == "failed"
    assert "3 searches failed" in steps["rebuild"]["reason"]
    assert steps["bench"]["status"] == "timed out" and steps["bench"]["seconds"] <= 3 + 2
    assert steps["oom"]["status"] == "failed" and "SIGABRT" in steps["oom"]["reason"]
    assert steps["single_adds"]["status"] == "passed"  # after the timeout, the run went on
    assert sorted(f.split(":")[0] for f in result["failures"]) == ["bench", "oom", "parity",
                                                                   "rebuild"]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "gpu-check.log"]


def test_server_steps_with_the_real_server_on_fake_gpus(fake_gpu):
    """The serve, rebuild, crash and stop steps as on a GPU machine, with the real vecgpu (its
    GPU work in a real `vecgpu gpu-host` child, over fake GPUs: `--fake-gpus`) and the real
    vecgpu-serve-check; stand-ins for the steps that need CUDA."""
    if not SERVE_CHECK.exists():
        pytest.skip(f"{SERVE_CHECK} is not built")
    if "--fake-gpus" not in subprocess.run([str(BINARY), "serve", "--help"], capture_output=True,
                                           text=True, timeout=20).stdout:
        pytest.skip("this vecgpu has no --fake-gpus")
    out, env = fake_gpu
    build = Path(env["VECGPU_BUILD_DIR"])
    for name, real in [("vecgpu", BINARY), ("vecgpu-serve-check", SERVE_CHECK)]:
        (build / name).unlink()
        (build / name).symlink_to(real)
    env.update({"VECGPU_CHECK_SERVE_ARGS": "--fake-gpus 1024", "VECGPU_CHECK_SERVE_N": "20000"})
    r = run_check(out, env=env)
    assert r.returncode == 0, (r.stderr[-3000:], r.result and r.result["failures"])
    steps = r.result["steps"]
    serve = steps["serve"]
    assert serve["status"] == "passed", serve
    assert serve["result"]["served_from"]["device"] == "gpu:0"
    assert serve["result"]["served_from"]["gpu_copy"] == "current"
    assert serve["result"]["served_from"]["ntotal"] == 20000
    assert serve["result"]["k2048_ok"] is True
    rebuild = steps["rebuild"]
    assert rebuild["status"] == "passed", rebuild
    assert rebuild["result"]["after"]["ntotal"] == 19900
    assert rebuild["result"]["searches"]["answered"] > 0
    crash = steps["crash"]
    assert crash["status"] == "passed", crash
    assert crash["result"]["new_pid"] != crash["result"]["killed_pid"]
    assert crash["result"]["searches"]["failed"] == 0
    assert crash["result"]["searches_while_recovering"] > 0
    restarts = 'vecgpu_gpu_host_restarts_total{gpu="0"}'
    assert crash["result"]["metrics_after"][restarts] >= crash["result"]["metrics_before"][
        restarts] + 1
    assert crash["result"]["metrics_after"]['vecgpu_gpu_healthy{gpu="0"}'] == 1
    assert steps["stop"] == {**steps["stop"], "status": "passed", "exit_code": 0}
    log = (out / "gpu-check.log").read_text()
    assert "----- vecgpu serve log" in log and "serving FAISSx" in log
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "gpu-check.log"]


def test_a_server_that_dies_is_a_failure_of_its_own(fake_gpu):
    out, env = fake_gpu
    r = run_check(out, env={**env, "FAKE_SERVER_DIES": "1"})
    assert r.returncode == 1
    result = r.result
    died = [f for f in result["failures"] if f.startswith("server: ")]
    assert died and "died during the serve step (aborted (SIGABRT" in died[0], result["failures"]
    assert "illegal memory access" in died[0]
    for s in ["rebuild", "crash"]:
        assert result["steps"][s]["status"] == "not run"
        assert "not serving" in result["steps"][s]["reason"]
    assert result["steps"]["stop"]["status"] == "failed"
    assert result["steps"]["bench"]["status"] == "passed"  # the GPU steps after it still run


@pytest.mark.parametrize("env,needle", [
    ({"FAKE_NO_CUDA": "1"}, "nvidia-smi sees 1 GPU(s) but CUDA does not"),
    ({"FAKE_CC": "7.0"}, "compute capability 7.0 is older than this build's lowest "
                         "architecture sm_90"),
    ({"FAKE_DRIVER_CUDA": "12.4"}, "the driver supports CUDA 12.4; this build needs CUDA 13.x"),
])
def test_preflight_ends_the_run_in_seconds_with_the_reason(fake_gpu, env, needle):
    out, base = fake_gpu
    r = run_check(out, env={**base, **env})
    assert r.returncode == 1
    assert r.seconds < 15
    result = r.result
    assert result["ok"] is False and result["complete"] is True
    assert result["gpu"]["count"] == 1
    assert result["steps"]["preflight"]["status"] == "failed"
    assert needle in result["steps"]["preflight"]["reason"]
    assert result["failures"][0].startswith("preflight: ")
    assert all(result["steps"][s]["status"] == "not run" for s in STEPS[1:])
    assert "preflight failed" in r.stdout


def test_without_nvidia_smi_the_cuda_provider_decides(fake_gpu):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has its own nvidia-smi")
    out, env = fake_gpu
    Path(env["PATH"].split(":")[0], "nvidia-smi").unlink()
    r = run_check(out, env=env)
    assert r.returncode == 0, r.stderr
    result = r.result
    assert result["steps"]["preflight"]["nvidia_smi"] == "missing"
    assert result["gpu"]["source"] == "CUDA provider" and result["gpu"]["count"] == 1
    assert result["gpu"]["devices"][0]["compute_capability"] == "9.0"
    # The compute capability check reads the probe's.
    stub = Path(env["VECGPU_BUILD_DIR"], "gpu/vecgpu-gpu-check")
    stub.write_text(stub.read_text().replace('"compute_capability": "9.0"',
                                             '"compute_capability": "8.0"'))
    r = run_check(out, env=env)
    assert r.returncode == 1
    assert "compute capability 8.0 is older" in r.result["steps"]["preflight"]["reason"]


def test_missing_binaries_with_a_gpu_fail_the_preflight(fake_gpu):
    out, env = fake_gpu
    Path(env["VECGPU_BUILD_DIR"], "vecgpu-serve-check").unlink()
    r = run_check(out, env=env)
    assert r.returncode == 1
    assert "not built:" in r.result["steps"]["preflight"]["reason"]
    assert r.result["steps"]["preflight"]["missing_binaries"][0].endswith("vecgpu-serve-check")


# --- vecgpu-serve-check against a real CPU server --------------------------------------------

def serve_check(srv, *args, expect="cpu", timeout=60):
    r = subprocess.run([str(SERVE_CHECK), "--endpoint", srv.endpoint, "--expect", expect,
                        "--index", "sc", *args], capture_output=True, text=True,
                       timeout=timeout)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert lines, r.stdout + r.stderr
    return r.returncode, json.loads(lines[-1])


@pytest.fixture
def cpu_server(tmp_path):
    if not SERVE_CHECK.exists():
        pytest.skip(f"{SERVE_CHECK} is not built")
    srv = Server("--gpus", "none", "--data-dir", str(tmp_path / "data"), "--log-level", "warning")
    yield srv
    assert srv.stop() == 0


def test_serve_check_setup_and_rebuild_against_a_cpu_server(cpu_server):
    rc, r = serve_check(cpu_server, "--seconds", "5", "wait")
    assert rc == 0 and r["ready"] is True
    rc, r = serve_check(cpu_server, "--seconds", "20", "setup", "--n", "5000", "--device", "")
    assert rc == 0, r
    assert r["served_from"] == {"device": "cpu", "gpu_copy": "none", "ntotal": 5000,
                                "placement": "on the CPU: no GPU in use"}
    assert r["k2048_ok"] is True and r["problems"] == []
    rc, r = serve_check(cpu_server, "--seconds", "10", "--threads", "2", "rebuild")
    assert rc == 0, r
    assert r["after"]["ntotal"] == 4900
    assert r["searches"]["answered"] > 0
    assert r["searches"]["failed"] == 0 and r["searches"]["wrong"] == 0
    # A device the index is not on fails, and says so.
    rc, r = serve_check(cpu_server, "--seconds", "1", "rebuild", expect="gpu:0")
    assert rc == 1 and not r["ok"]
    assert any("not served from gpu:0" in p for p in r["problems"]), r


def test_serve_check_crash_kills_the_gpu_host_child_and_sees_a_new_one(cpu_server):
    rc, r = serve_check(cpu_server, "--seconds", "20", "setup", "--n", "3000", "--device", "")
    assert rc == 0, r
    # No such child: skipped.
    rc, r = serve_check(cpu_server, "crash", "--server-pid", str(cpu_server.proc.pid))
    assert rc == 0 and r == {"skipped": "no gpu-host child found",
                             "server_pid": cpu_server.proc.pid}
    # A stand-in parent that restarts its `gpu-host` child, as the server's supervisor would.
    parent = subprocess.Popen(
        ["bash", "-c", "while :; do bash -c 'sleep 20; :' vecgpu gpu-host; sleep 0.3; done"],
        start_new_session=True)
    try:
        time.sleep(0.5)
        rc, r = serve_check(cpu_server, "--seconds", "10", "--threads", "2", "crash",
                            "--server-pid", str(parent.pid), "--metrics-port",
                            str(cpu_server.metrics_port))
        assert rc == 0, json.dumps(r, indent=1)
        assert r["killed_pid"] != r["new_pid"] and r["new_pid"] > 0
        assert r["searches"]["failed"] == 0 and r["searches"]["answered"] > 0
        assert r["metrics_after"] == {'vecgpu_gpu_healthy{gpu="0"}': None,
                                      'vecgpu_gpu_host_restarts_total{gpu="0"}': None}
        assert any("SIGKILL gpu-host" in e.get("event", "") for e in r["timeline"])
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


# --- the bundle ---------------------------------------------------------------------------

def test_bundle_stays_under_50_mib(tmp_path):
    """Packs the bundle (a minute or two with xz) where a GPU FAISS build exists."""
    cache = Path(ROOT / "build" / "CMakeCache.txt")
    faiss_root = ""
    if cache.exists():
        m = re.search(r"^VECGPU_FAISS_ROOT:[A-Z]*=(.*)$", cache.read_text(), re.M)
        faiss_root = m.group(1) if m else ""
    info = Path(faiss_root, "vecgpu-faiss.txt") if faiss_root else None
    if not info or not info.exists() or "gpu=cuda" not in info.read_text():
        pytest.skip("no GPU FAISS build here: nothing to bundle")
    if not (ROOT / "build" / "gpu" / "gpu_test").exists():
        pytest.skip("the GPU targets are not built (configure with the tests on)")
    tarball = tmp_path / "bundle.tar.xz"
    r = subprocess.run(["bash", str(ROOT / "scripts/gpu-bundle.sh"), str(tarball)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(tarball)
    size = tarball.stat().st_size
    assert size <= 50 * 1024 * 1024
    assert f"{size} bytes" in r.stderr
    names = subprocess.run(["tar", "-tJf", str(tarball)], capture_output=True, text=True,
                           check=True).stdout.split()
    for name in ["gpu-check.sh", "faiss-build.txt", "MANIFEST.txt", "bin/vecgpu", "bin/gpu_test",
                 "bin/vecgpu-gpu-bench", "bin/vecgpu-gpu-check", "bin/vecgpu-serve-check",
                 "lib/libfaiss.so"]:
        assert f"vecgpu-gpu-check/{name}" in names
