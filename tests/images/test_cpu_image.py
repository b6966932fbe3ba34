"""The CPU image, built by docker/build.sh from Debian-made bases: unpacked and run under
chroot with its own entrypoint, environment and user, driven by the real faissx client."""
import pathlib
import subprocess

import numpy as np

from conftest import (ChrootContainer, free_port, image_fixtures, raw_call, serve,
                      wait_for_ping)

TAG = "vecgpu:cpu"
# The CPU runtime image: Debian slim (~75 MB), the binary and the libraries it loads (~70 MB
# stripped). A toolchain, the build stage or a CUDA library leaking in would blow past this.
MAX_CPU_IMAGE_BYTES = 250 * 1024 * 1024


image, rootfs = image_fixtures(TAG)


def test_runtime_image_holds_no_toolchain_or_build_tree(image, rootfs):
    assert image["Size"] < MAX_CPU_IMAGE_BYTES, f"runtime image is {image['Size']} bytes"
    for tool in ("gcc", "g++", "cc", "c++", "clang", "nvcc", "cmake", "make", "ninja", "ld",
                 "as"):
        for d in ("usr/bin", "usr/local/bin", "bin"):
            assert not (rootfs / d / tool).exists(), f"{d}/{tool} is in the runtime image"
    assert not (rootfs / "src").exists()
    # docker/build.sh mounts the build cache there for every RUN step; podman leaves the
    # empty mount point behind in the runtime stage, and nothing else may be there.
    cache = rootfs / "var/cache/vecgpu"
    assert not cache.exists() or not any(cache.iterdir())
    assert not (rootfs / "usr/include/faiss").exists()
    leftovers = [p for p in rootfs.rglob("*") if p.name in ("CMakeCache.txt", "build.ninja")
                 or p.suffix == ".o"]
    assert not leftovers, leftovers[:5]
    # Only what the binary loads: every library in /opt/vecgpu/lib is in its closure.
    libs = sorted(p.name for p in (rootfs / "opt/vecgpu/lib").iterdir())
    assert "libfaiss.so" in libs and any(n.startswith("libzmq") for n in libs)
    assert not any(n.startswith(("libcudart", "libcublas")) for n in libs)


def test_image_metadata(image):
    cfg = image["Config"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    # The commit the image was built from (docker/build.sh adds "-dirty" for local changes).
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, cwd=pathlib.Path(__file__).parent).stdout.strip()
    assert labels["org.opencontainers.image.revision"].startswith(head or "?"), labels
    assert "avx2" in labels["io.vecgpu.faiss.build"]
    assert cfg["User"] == "10001:10001"
    assert "/data" in cfg["Volumes"]
    assert set(cfg["ExposedPorts"]) == {"45678/tcp", "8081/tcp", "45679/tcp"}
    assert cfg["Entrypoint"] == ["/usr/local/bin/vecgpu-entrypoint"]
    # podman shows the HEALTHCHECK beside Config (Docker-format images keep it).
    assert image["Healthcheck"]["Test"] == ["CMD", "/usr/local/bin/vecgpu", "healthcheck"]


def test_version_inside_the_image(image, rootfs):
    c = ChrootContainer(rootfs, image["Config"], args=["--version"])
    assert c.wait() == 0, c.output
    assert "SIMD: AVX2" in c.output and "GPU: no" in c.output, c.output


def test_refuses_unauthenticated_remote_by_default(image, rootfs):
    # The image binds 0.0.0.0 unless told otherwise: without keys it must not start.
    c = ChrootContainer(rootfs, image["Config"], env={"VECGPU_PORT": str(free_port())})
    assert c.wait() == 2, c.output
    assert "refusing to serve 0.0.0.0 without authentication" in c.output
    assert "VECGPU_ENABLE_AUTH" in c.output


def test_unauthenticated_remote_when_told_so(image, rootfs):
    # Told so, the entrypoint hands over to the binary, which here stops at a bad setting
    # before it binds anything: its own message, not the entrypoint's refusal.
    c = ChrootContainer(rootfs, image["Config"], env={
        "VECGPU_ALLOW_UNAUTHENTICATED_REMOTE": "true", "VECGPU_IO_THREADS": "0"})
    assert c.wait() == 2, c.output
    assert "refusing" not in c.output
    assert "io-threads" in c.output


def faissx_session(endpoint, api_key):
    from faissx import client as fx
    from faissx.client import client as fx_client_module
    existing = fx_client_module._client
    if existing is not None:
        existing.tenant_id = ""
        existing.api_key = ""
    fx.configure(server=endpoint, api_key=api_key)
    return fx


def test_serves_persists_and_enforces_auth(image, rootfs):
    data = rootfs / "data"
    for p in data.iterdir():  # a fresh volume
        subprocess.run(["rm", "-rf", str(p)], check=True)
    # First with the image's default data directory and keys in the environment, then (the
    # restart) with the FAISSx server's own FAISSX_DATA_DIR and FAISSX_AUTH_FILE.
    env = {"FAISSX_ENABLE_AUTH": "true", "FAISSX_AUTH_KEYS": "key-acme:acme,key-globex:globex",
           "VECGPU_LOG_LEVEL": "info"}
    c = serve(rootfs, image, env)
    rng = np.random.default_rng(7)
    xb = rng.random((500, 32), dtype=np.float32)
    try:
        wait_for_ping(c, c.endpoint)
        fx = faissx_session(c.endpoint, "key-acme")
        index = fx.IndexFlatL2(32)
        index.add(xb)
        D, I = index.search(xb[:5], k=3)
        assert I[:, 0].tolist() == [0, 1, 2, 3, 4]
        index_id = index.index_id
        # Auth: no key, a wrong key, another tenant's key.
        assert raw_call(c.endpoint, {"action": "list_indexes"})["success"] is False
        bad = raw_call(c.endpoint, {"action": "list_indexes", "api_key": "nope"})
        assert bad["success"] is False
        other = raw_call(c.endpoint, {"action": "get_index_stats", "index_id": index_id,
                                      "api_key": "key-globex"})
        assert other["success"] is False
        # The image's healthcheck, run inside it as Docker would.
        h = ChrootContainer(rootfs, image["Config"], args=["healthcheck"],
                            env={"VECGPU_METRICS_PORT": str(c.metrics_port)})
        assert h.wait() == 0, h.output
    finally:
        assert c.stop() == 0, c.output
    assert "data-dir /data: loaded" in c.output, c.output
    # The data landed in the volume, owned by the image's user.
    assert any(data.iterdir())
    assert all(p.stat().st_uid == 10001 for p in data.iterdir())

    (rootfs / "tmp/keys.json").write_text('{"key-acme": "acme"}')
    env = {"FAISSX_ENABLE_AUTH": "true", "FAISSX_AUTH_FILE": "/tmp/keys.json",
           "FAISSX_DATA_DIR": "/data"}
    c = serve(rootfs, image, env)
    try:
        wait_for_ping(c, c.endpoint)
        stats = raw_call(c.endpoint, {"action": "get_index_stats", "index_id": index_id,
                                      "api_key": "key-acme"})
        assert stats["success"] is True, stats
        assert stats["stats"]["vector_count"] == 500
        reply = raw_call(c.endpoint, {"action": "search", "index_id": index_id, "k": 1,
                                      "query_vectors": xb[10:12].tolist(),
                                      "api_key": "key-acme"})
        assert reply["success"] is True, reply
        assert [r["indices"][0] for r in reply["results"]] == [10, 11]
    finally:
        assert c.stop() == 0, c.output


def test_auth_from_a_config_file_is_left_to_the_binary(image, rootfs):
    # The entrypoint cannot read the config file, so it does not refuse; the binary reads it
    # (auth on) and here stops at the config's bad setting before binding anything.
    (rootfs / "tmp/vecgpu.json").write_text(
        '{"enable-auth": true, "auth-keys": "k:acme", "io-threads": 0}')
    c = ChrootContainer(rootfs, image["Config"], env={"VECGPU_CONFIG": "/tmp/vecgpu.json"})
    assert c.wait() == 2, c.output
    assert "refusing" not in c.output
    assert "io-threads" in c.output
