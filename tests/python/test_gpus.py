"""--gpus on the real binary: without a usable GPU it serves from the CPU and says why;
placement shows in get_index_info / get_index_stats and /metrics; --version names the FAISS
build."""
import subprocess
import urllib.request

import pytest

from conftest import BINARY, Server, call, fail, ok, rand, rows, uid


def has_gpu(output):
    return "budget" in output and "gpus: GPU" in output


def serve_and_stop(*args):
    srv = Server("--log-level", "info", *args)
    try:
        name = uid("gpu")
        ok(call(srv, action="create_index", index_id=name, dimension=8, index_type="L2"))
        ok(call(srv, action="add_vectors", index_id=name, vectors=rows(rand(20, 8, 1))))
        info = ok(call(srv, action="get_index_info", index_id=name))
        found = ok(call(srv, action="search", index_id=name, query_vectors=rows(rand(1, 8, 1)),
                        k=1))
        assert found["results"][0]["indices"] == [0]
    finally:
        assert srv.stop() == 0
    return srv.output, info


@pytest.mark.parametrize("gpus", ["0", "all", "0,1"])
def test_without_a_usable_gpu_it_serves_from_the_cpu_and_says_why(gpus):
    output, info = serve_and_stop("--gpus", gpus)
    if has_gpu(output):
        pytest.skip("a GPU is usable here")
    # Either this build has no GPU backend, or CUDA finds no device: the log names it.
    assert ("this build has no GPU support" in output or "no usable GPU (CUDA" in output), output
    assert "serving from the CPU" in output
    assert info["status"]["device"] == "cpu"
    assert info["status"]["placement"] == "on the CPU: no GPU in use"
    assert info["status"]["gpu_copy"] == "none"


def test_gpus_none_is_documented_behaviour():
    output, info = serve_and_stop("--gpus", "none")
    assert "gpus: none requested; every collection is served from the CPU" in output
    assert info["status"]["device"] == "cpu"
    assert info["status"]["placement"] == "on the CPU: no GPU in use"


def test_start_up_log_names_the_faiss_build():
    output, _ = serve_and_stop("--gpus", "none")
    assert "FAISS 1.7.3" in output
    assert "SIMD:" in output and "BLAS:" in output


@pytest.mark.parametrize("args,needle", [
    (["--gpus", "bogus"], "gpus: 'bogus' is not"),
    (["--gpus", "0,0"], "named twice"),
    (["--gpu-memory-fraction", "0"], "gpu_memory_fraction"),
    (["--gpu-memory-fraction", "1.5"], "gpu_memory_fraction"),
    (["--gpu-workers", "0"], "gpu_workers: must be positive"),
    (["--gpu-temp-memory-mb", "2000"], "gpu-temp-memory-mb: must be within 0..1536"),
    (["--gpu-reserve-mb", "-1"], "gpu-reserve-mb: must be >= 0"),
])
def test_bad_gpu_flags_are_refused(args, needle):
    r = subprocess.run([str(BINARY), "serve", *args], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert needle in r.stderr + r.stdout


def test_version_reports_faiss_simd_gpu_and_blas():
    r = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("vecgpu ")
    assert lines[1].startswith("FAISS 1.7.3")
    assert any(line.strip().startswith("SIMD: ") for line in lines)
    assert any(line.strip().startswith("GPU: ") for line in lines)
    assert any(line.strip().startswith("BLAS: ") for line in lines)


def test_device_hint_and_placement_in_info_stats_and_metrics(server):
    name = uid("hint")
    created = ok(call(server, action="create_index", index_id=name, dimension=4,
                      index_type="L2", device="cpu"))
    assert created["device"] == "cpu"
    assert created["placement"] == "on the CPU, as its device hint asks"
    stats = ok(call(server, action="get_index_stats", index_id=name))
    assert stats["stats"]["placement"] == "on the CPU, as its device hint asks"
    assert stats["stats"]["device"] == "cpu"
    info = ok(call(server, action="get_index_info", index_id=name))
    assert info["storage"]["placement"] == "on the CPU, as its device hint asks"
    assert info["status"]["gpu_copy"] == "none"
    fail(call(server, action="create_index", index_id=uid("hint"), dimension=4,
              index_type="L2", device="tpu"), "device", "tpu")
    fail(call(server, action="create_index", index_id=uid("hint"), dimension=4,
              index_type="L2", device=7), "device")
    metrics = urllib.request.urlopen(server.metrics_url + "/metrics", timeout=5).read().decode()
    cpu = [line for line in metrics.splitlines()
           if line.startswith('vecgpu_device_collections{device="cpu"}')]
    assert cpu and float(cpu[0].split()[-1]) >= 1, metrics
    assert 'vecgpu_workers{class="gpu"}' in metrics
