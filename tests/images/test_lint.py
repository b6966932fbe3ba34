"""Lint of the container files: hadolint on both Dockerfiles, the Kubernetes manifests
against the Kubernetes API's JSON schemas (kubernetes-validate), compose.yaml against the
compose specification's schema (check-jsonschema), and the pieces that tie them together."""
import json
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
DOCKER = ROOT / "docker"
KUBE = ROOT / "deploy" / "kubernetes"
KUBE_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on


def run(*args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_hadolint(dockerfile):
    r = run(BIN / "hadolint", "--config", DOCKER / "hadolint.yaml", DOCKER / dockerfile)
    assert r.returncode == 0, r.stdout + r.stderr


def kube_files():
    """The manifests in deploy/kubernetes/, kustomization.yaml aside."""
    return sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def kube_docs():
    return [(name, d) for name in kube_files()
            for d in yaml.safe_load_all((KUBE / name).read_text()) if d]


@pytest.mark.parametrize("path", kube_files())
def test_kubernetes_manifests_match_the_api_schemas(path):
    r = run(BIN / "kubernetes-validate", "--strict", "--kubernetes-version", KUBE_VERSION,
            KUBE / path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert set(k["resources"]) == set(kube_files())


def test_statefulset_wires_probes_ports_gpu_secret_and_volume():
    docs = {d["kind"] + "/" + d["metadata"]["name"]: d for _, d in kube_docs()}
    sts = docs["StatefulSet/vecgpu"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"faissx": 45678, "grpc": 8081, "metrics": 45679}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VECGPU_ENABLE_AUTH"] == "true"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == env["VECGPU_DATA_DIR"] == "/data"
    assert env["VECGPU_AUTH_FILE"].startswith(mounts["keys"] + "/")
    secret = docs["Secret/vecgpu-keys"]
    key_file = env["VECGPU_AUTH_FILE"].rsplit("/", 1)[1]
    assert json.loads(secret["stringData"][key_file])  # the key file is valid JSON
    keys_volume = next(v for v in pod["volumes"] if v["name"] == "keys")
    assert keys_volume["secret"]["secretName"] == "vecgpu-keys"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    selector = sts["spec"]["selector"]["matchLabels"]
    assert docs["Service/vecgpu"]["spec"]["selector"] == selector
    # The metrics port is on a Service of its own, never behind the client Service.
    client_ports = {p["name"] for p in docs["Service/vecgpu"]["spec"]["ports"]}
    assert client_ports == {"faissx", "grpc"}
    metrics = docs["Service/vecgpu-metrics"]["spec"]
    assert metrics["selector"] == selector
    assert [p["targetPort"] for p in metrics["ports"]] == ["metrics"]
    assert docs["PodDisruptionBudget/vecgpu"]["spec"]["selector"]["matchLabels"] == selector
    assert docs["Service/" + sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"


def test_pods_get_no_service_link_variables():
    """A Service named "vecgpu" makes Kubernetes set VECGPU_PORT=tcp://IP:45678 in every pod
    of its namespace created after it ("vecgpu-metrics": VECGPU_METRICS_PORT), which vecgpu
    reads as --port (--metrics-port) and refuses; every pod template turns the links off."""
    workloads = [(name, d) for name, d in kube_docs() if d["kind"] in ("StatefulSet", "Deployment")]
    assert workloads
    for name, d in workloads:
        pod = d["spec"]["template"]["spec"]
        assert pod.get("enableServiceLinks") is False, (name, d["metadata"]["name"])


def test_compose_file_matches_the_compose_spec():
    r = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec",
            DOCKER / "compose.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_reserves_a_gpu_and_scrapes_metrics():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    gpu = services["vecgpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "cpu" in services["vecgpu-cpu"]["profiles"]
    for name in ("vecgpu", "vecgpu-cpu"):
        assert "vecgpu-data:/data" in services[name]["volumes"]
        assert services[name]["environment"]["VECGPU_ENABLE_AUTH"] == "true"
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["vecgpu-server:45679"]
    aliases = services["vecgpu"]["networks"]["default"]["aliases"]
    assert "vecgpu-server" in aliases


def test_compose_cluster_profile_wires_etcd_agents_and_a_gateway():
    """The cluster profile: etcd (from the CPU image, which carries Debian's etcd), three
    agents joining it, each on a volume of its own and none publishing a port, and a gateway
    publishing the client ports; agents and gateway wait for a healthy etcd."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    cluster = {n: s for n, s in compose["services"].items()
               if "cluster" in s.get("profiles", [])}
    agents = sorted(n for n in cluster if n.startswith("agent"))
    assert agents == ["agent1", "agent2", "agent3"]
    assert set(cluster) == {"etcd", "gateway", "prometheus", *agents}
    etcd_url = "http://etcd:2379"

    etcd = cluster["etcd"]
    assert etcd["image"] == "vecgpu:cpu" and etcd["command"][0] == "etcd"
    assert f"--advertise-client-urls={etcd_url}" in etcd["command"]
    (data_dir,) = [a.split("=", 1)[1] for a in etcd["command"] if a.startswith("--data-dir=")]
    (etcd_volume,) = etcd["volumes"]
    assert data_dir.startswith(etcd_volume.split(":")[1] + "/")
    assert "/health" in " ".join(etcd["healthcheck"]["test"])
    dockerfile = (DOCKER / "Dockerfile.cpu").read_text()
    assert "etcd-server" in dockerfile and "/opt/vecgpu/bin/etcd" in dockerfile

    volumes = {}
    for name in agents:
        agent = cluster[name]
        env = agent["environment"]
        assert agent["image"] == "vecgpu:cpu" and agent["command"] == ["serve"]
        assert env["VECGPU_JOIN"] == etcd_url
        assert env["VECGPU_AGENT_ID"] == name
        assert env["VECGPU_ADVERTISE"].rsplit(":", 1)[0] == name  # its compose host name
        assert env["VECGPU_ENABLE_AUTH"] == "true"
        assert agent["depends_on"]["etcd"]["condition"] == "service_healthy"
        assert "ports" not in agent  # the agent API is for gateways on the compose network
        (volume,) = [v for v in agent["volumes"] if v.endswith(":/data")]
        volumes[name] = volume.split(":")[0]
    assert len(set(volumes.values())) == len(agents), volumes
    assert set(volumes.values()) | {etcd_volume.split(":")[0]} <= set(compose["volumes"])

    gateway = cluster["gateway"]
    env = gateway["environment"]
    assert gateway["image"] == "vecgpu:cpu" and gateway["command"] == ["gateway"]
    assert env["VECGPU_ETCD"] == etcd_url
    assert "VECGPU_JOIN" not in env and "VECGPU_DATA_DIR" not in env
    assert not any(v.endswith(":/data") for v in gateway.get("volumes", []))
    assert env["VECGPU_ENABLE_AUTH"] == "true" and "vecgpu-keys" in gateway["secrets"]
    assert gateway["depends_on"]["etcd"]["condition"] == "service_healthy"
    assert {"45678:45678", "8081:8081", "127.0.0.1:45679:45679"} <= set(gateway["ports"])
    assert "vecgpu-server" in gateway["networks"]["default"]["aliases"]  # Prometheus's target


def test_compose_profiles_publish_each_host_port_once():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    profiles = {p for s in compose["services"].values() for p in s.get("profiles", [])}
    assert {"gpu", "cpu", "cluster"} <= profiles
    for profile in profiles:
        published = [p.rsplit(":", 1)[0] for s in compose["services"].values()
                     if profile in s.get("profiles", []) for p in s.get("ports", [])]
        assert len(published) == len(set(published)), (profile, published)


def test_shell_scripts_parse():
    for script in ("build.sh", "entrypoint.sh", "collect-runtime.sh", "install-cuda-toolkit.sh"):
        r = run("bash", "-n", DOCKER / script)
        assert r.returncode == 0, f"{script}: {r.stderr}"


def test_docker_readme_lists_every_serve_flag_as_a_variable():
    binary = ROOT / "build" / "vecgpu"
    if not binary.exists():
        pytest.skip("build/vecgpu is not built (scripts/setup.sh)")
    help_text = run(binary, "serve", "--help").stdout
    flags = {f for f in re.findall(r"^\s+(--[a-z0-9-]+)", help_text, re.M) if f != "--help"}
    assert len(flags) > 40
    readme = (DOCKER / "README.md").read_text()
    missing = [f for f in sorted(flags)
               if f"`VECGPU_{f[2:].upper().replace('-', '_')}` | `{f}`" not in readme]
    assert not missing, f"docker/README.md does not list {missing}"
