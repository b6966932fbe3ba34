"""The CUDA image, built by docker/build.sh with the CUDA toolkit installed here: its binary
links the CUDA libraries of its runtime base, says GPU support is compiled in, and with no
GPU (as here) serves from the CPU and says why."""
import numpy as np

from conftest import ChrootContainer, image_fixtures, raw_call, serve, wait_for_ping

TAG = "vecgpu:cuda"
# The CUDA runtime base carries cuBLAS (libcublasLt alone is ~540 MB); a devel toolkit or
# the build stage leaking in would add gigabytes.
MAX_CUDA_IMAGE_BYTES = 1400 * 1024 * 1024


image, rootfs = image_fixtures(TAG)


def test_cuda_image_metadata_and_contents(image, rootfs):
    assert image["Size"] < MAX_CUDA_IMAGE_BYTES, f"CUDA image is {image['Size']} bytes"
    cfg = image["Config"]
    assert cfg["Labels"]["io.vecgpu.variant"] == "cuda"
    assert "cuda" in cfg["Labels"]["io.vecgpu.faiss.build"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "compute" in env["NVIDIA_DRIVER_CAPABILITIES"]
    assert cfg["User"] == "10001:10001"
    for tool in ("nvcc", "gcc", "g++", "cmake", "ptxas"):
        assert not list(rootfs.glob(f"usr/**/bin/{tool}")), f"{tool} is in the runtime image"
    assert not (rootfs / "src").exists()
    assert not (rootfs / "usr/local/cuda/include").exists()


def test_binary_links_the_cuda_libraries(image, rootfs):
    c = ChrootContainer(rootfs, image["Config"], args=["ldd", "/usr/local/bin/vecgpu"])
    assert c.wait() == 0, c.output
    assert "not found" not in c.output, c.output
    for lib in ("libcudart.so.13", "libcublas.so.13", "libfaiss.so"):
        assert lib in c.output, c.output


def test_version_says_gpu_support_is_compiled_in(image, rootfs):
    c = ChrootContainer(rootfs, image["Config"], args=["--version"])
    assert c.wait() == 0, c.output
    assert "GPU: yes (cuda-13" in c.output, c.output


def test_serves_from_the_cpu_without_a_gpu_and_says_why(image, rootfs):
    c = serve(rootfs, image, {"VECGPU_ENABLE_AUTH": "true", "VECGPU_AUTH_KEYS": "k:acme",
                              "VECGPU_GPUS": "all"})
    endpoint = c.endpoint
    try:
        wait_for_ping(c, endpoint)
        assert raw_call(endpoint, {"action": "create_index", "index_id": "v", "dimension": 8,
                                   "index_type": "L2", "api_key": "k"})["success"]
        xb = np.eye(8, dtype=np.float32)
        assert raw_call(endpoint, {"action": "add_vectors", "index_id": "v",
                                   "vectors": xb.tolist(), "api_key": "k"})["success"]
        reply = raw_call(endpoint, {"action": "search", "index_id": "v", "k": 1,
                                    "query_vectors": xb[3:4].tolist(), "api_key": "k"})
        assert reply["success"] and reply["results"][0]["indices"] == [3], reply
        info = raw_call(endpoint, {"action": "get_index_info", "index_id": "v", "api_key": "k"})
        assert info["success"] and info["status"]["device"] == "cpu", info
    finally:
        assert c.stop() == 0, c.output
    assert "no usable GPU" in c.output and "serving from the CPU" in c.output, c.output
