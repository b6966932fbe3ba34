"""Helpers for the container image tests: the images docker/build.sh made (podman, vfs
storage), unpacked and run with chroot, as `podman run` cannot run in this sandbox."""
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest
import zmq

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _integration_helpers():
    """tests/python/conftest.py, loaded under another name (both files are "conftest")."""
    spec = importlib.util.spec_from_file_location("vecgpu_integration_conftest",
                                                  ROOT / "tests" / "python" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _integration_helpers()
free_port, raw_call = _helpers.free_port, _helpers.raw_call
PODMAN = ["podman", "--storage-driver", "vfs"]
# Set by scripts/test.sh to the variants docker/build.sh built in this run ("cpu cuda"; empty
# when it built none): those must be there, and no older image stands in for the others.
# Unset (pytest run by hand): whatever images are there are tested.
IMAGES_BUILT = os.environ.get("VECGPU_IMAGES_BUILT")


def tools_missing():
    missing = [t for t in ("podman", "debootstrap", "unshare", "chroot") if not shutil.which(t)]
    return missing


def require_image(tag):
    """Skips (tools missing) or fails (the build said it made the image) without `tag`."""
    missing = tools_missing()
    if missing:
        pytest.skip(f"container image tests need {', '.join(missing)} (scripts/setup.sh "
                    "installs podman and debootstrap)")
    variant = tag.split(":")[1]
    if IMAGES_BUILT is not None and variant not in IMAGES_BUILT.split():
        pytest.skip(f"{tag} was not built in this run (scripts/test.sh says why above)")
    have = subprocess.run([*PODMAN, "image", "exists", tag]).returncode == 0
    if not have:
        if IMAGES_BUILT is not None:
            pytest.fail(f"docker/build.sh reported success but {tag} is missing")
        pytest.skip(f"{tag} is not built (docker/build.sh; scripts/test.sh runs it)")


def inspect(tag):
    out = subprocess.run([*PODMAN, "image", "inspect", tag], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)[0]


def unpack(tag, dest):
    """The image's filesystem in `dest` (podman create + export: no runtime needed)."""
    dest = pathlib.Path(dest)
    cid = subprocess.run([*PODMAN, "create", tag], check=True, capture_output=True,
                         text=True).stdout.strip()
    archive = dest.parent / (dest.name + ".tar")
    try:
        subprocess.run([*PODMAN, "export", "-o", str(archive), cid], check=True)
    finally:
        subprocess.run([*PODMAN, "rm", "-f", cid], capture_output=True)
    subprocess.run(["tar", "-x", "--numeric-owner", "-C", str(dest), "-f", str(archive)],
                   check=True)
    archive.unlink()
    dest.chmod(0o755)  # the image's "/", which mktemp made 0700: the image's user must enter it
    return dest


class ChrootContainer:
    """Runs a command of an unpacked image as the container would: its Env, its User, its
    Entrypoint, with /proc and /dev mounted in a private mount namespace (gone when the
    process ends), on the host's network."""

    def __init__(self, rootfs, config, args=(), env=None, user=None):
        self.rootfs = pathlib.Path(rootfs)
        full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        for item in config.get("Env") or []:
            k, _, v = item.partition("=")
            full_env[k] = v
        full_env.update(env or {})
        user = user or config.get("User") or "0:0"
        argv = [*(config.get("Entrypoint") or []), *(args or config.get("Cmd") or [])]
        workdir = config.get("WorkingDir") or "/"
        r = str(self.rootfs)
        script = (f"mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && "
                  f"exec chroot --userspec={user} {r} /bin/sh -c 'cd {workdir} && exec \"$@\"' "
                  "sh \"$@\"")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--fork", "--", "/bin/sh", "-c", script, "sh", *argv],
            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output = ""

    def child_pid(self):
        """The process unshare forked (the entrypoint, exec'd into vecgpu)."""
        for _ in range(100):
            try:
                kids = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                pids = kids.read_text().split()
                if pids:
                    return int(pids[0])
            except FileNotFoundError:
                return None
            time.sleep(0.05)
        return None

    def wait(self, timeout=60):
        out, _ = self.proc.communicate(timeout=timeout)
        self.output += out
        return self.proc.returncode

    def stop(self, sig=signal.SIGTERM, timeout=60):
        pid = self.child_pid()
        if pid:
            os.kill(pid, sig)
        return self.wait(timeout)


def serve(rootfs, image, env):
    """`vecgpu serve` from the unpacked image, on loopback with free ports (FAISSx through the
    FAISSx server's own FAISSX_PORT), with `env` on top; `.endpoint`, `.metrics_port`."""
    port, metrics, grpc = free_port(), free_port(), free_port()
    env = {"FAISSX_PORT": str(port), "VECGPU_METRICS_PORT": str(metrics),
           "VECGPU_GRPC_PORT": str(grpc), "VECGPU_BIND_ADDRESS": "127.0.0.1",
           "VECGPU_METRICS_ADDRESS": "127.0.0.1", **env}
    c = ChrootContainer(rootfs, image["Config"], env=env)
    c.endpoint = f"tcp://127.0.0.1:{port}"
    c.metrics_port = metrics
    return c


def wait_for_ping(container, endpoint, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if container.proc.poll() is not None:
            container.wait()
            raise RuntimeError(f"vecgpu exited with {container.proc.returncode}:\n"
                               f"{container.output}")
        try:
            if raw_call(endpoint, {"action": "ping"}, timeout_ms=300).get("success"):
                return
        except zmq.error.Again:
            pass
        time.sleep(0.2)
    container.stop(signal.SIGKILL)
    raise RuntimeError(f"vecgpu did not answer on {endpoint}:\n{container.output}")


def image_fixtures(tag):
    """Module fixtures `image` (podman's inspection of `tag`) and `rootfs` (its filesystem,
    unpacked once per module): `image, rootfs = image_fixtures(TAG)`."""
    @pytest.fixture(scope="module")
    def image():
        require_image(tag)
        return inspect(tag)

    @pytest.fixture(scope="module")
    def rootfs(image, tmp_path_factory):
        path = unpack(tag, tmp_path_factory.mktemp(tag.replace(":", "-")))
        yield path
        shutil.rmtree(path, ignore_errors=True)  # up to a gigabyte: not left for pytest's keep

    return image, rootfs
