"""Lint of the container files: hadolint on both Dockerfiles, the Kubernetes manifests
against the Kubernetes API's JSON schemas (kubernetes-validate), compose.yaml against the
compose specification's schema (check-jsonschema), and the pieces that tie them together."""
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
DOCKER = ROOT / "docker"
KUBE = ROOT / "deploy" / "kubernetes"  # the single server
CLUSTER = KUBE / "cluster"  # gateways, agents, etcd
KUBE_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on


def run(*args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_hadolint(dockerfile):
    r = run(BIN / "hadolint", "--config", DOCKER / "hadolint.yaml", DOCKER / dockerfile)
    assert r.returncode == 0, r.stdout + r.stderr


def kube_files():
    """The manifests under deploy/kubernetes/ (relative paths), the kustomization.yaml files
    aside."""
    return sorted(str(p.relative_to(KUBE)) for p in KUBE.rglob("*.yaml")
                  if p.name != "kustomization.yaml")


def kustomizations():
    """The directories under deploy/kubernetes/ that hold a kustomization.yaml."""
    return sorted(p.parent for p in KUBE.rglob("kustomization.yaml"))


def kustomization_files(directory):
    """The manifests a kustomization takes in, its directory resources followed (what
    `kubectl kustomize` reads, without the transformations)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files = []
    for resource in k["resources"]:
        path = (directory / resource).resolve()
        files += kustomization_files(path) if path.is_dir() else [path]
    return files


def kube_docs(directory=KUBE):
    """(file, object) for every object the kustomization in `directory` applies; by default
    the single server's."""
    return [(str(path.relative_to(KUBE)), d) for path in kustomization_files(directory)
            for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind_and_name(directory):
    docs = {}
    for _, d in kube_docs(directory):
        key = d["kind"] + "/" + d["metadata"]["name"]
        assert key not in docs, f"{key} twice in {directory}"
        docs[key] = d
    return docs


@pytest.mark.parametrize("path", kube_files())
def test_kubernetes_manifests_match_the_api_schemas(path):
    r = run(BIN / "kubernetes-validate", "--strict", "--kubernetes-version", KUBE_VERSION,
            KUBE / path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kustomization_lists_every_manifest():
    """Each kustomization lists every manifest of its directory, and every directory it names
    is a kustomization: the single server shares the namespace and the keys with the cluster."""
    for directory in kustomizations():
        k = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed = [r for r in k["resources"] if not (directory / r).is_dir()]
        here = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert set(listed) == here, directory
        for r in k["resources"]:
            if (directory / r).is_dir():
                assert (directory / r / "kustomization.yaml").exists(), (directory, r)
    assert {d.relative_to(KUBE).as_posix() for d in kustomizations()} == {".", "common", "cluster"}
    assert "common" in yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    cluster = yaml.safe_load((CLUSTER / "kustomization.yaml").read_text())
    assert "../common" in cluster["resources"]
    # Every manifest is applied by the single server's or the cluster's kustomization.
    applied = {str(p.relative_to(KUBE)) for d in (KUBE, CLUSTER)
               for p in kustomization_files(d)}
    assert applied == set(kube_files())


def test_statefulset_wires_probes_ports_gpu_secret_and_volume():
    docs = by_kind_and_name(KUBE)
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
    workloads = [(name, d) for directory in (KUBE, CLUSTER)
                 for name, d in kube_docs(directory) if d["kind"] in ("StatefulSet", "Deployment")]
    assert workloads
    for name, d in workloads:
        pod = d["spec"]["template"]["spec"]
        assert pod.get("enableServiceLinks") is False, (name, d["metadata"]["name"])


def container(workload):
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c):
    return {e["name"]: e for e in c["env"]}


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector, labels):
    """Whether a label selector (matchLabels, matchExpressions with In) selects `labels`."""
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In", e
        ok = ok and labels.get(e["key"]) in e["values"]
    return ok


def flags(args):
    """{"--name": "value"} of "--name=value" arguments."""
    return dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)


def etcd_member_urls(docs, port):
    """The URL of each etcd member on `port`, by its stable DNS name."""
    etcd = docs["StatefulSet/vecgpu-etcd"]
    name, service = etcd["metadata"]["name"], etcd["spec"]["serviceName"]
    return [f"http://{name}-{i}.{service}.$(POD_NAMESPACE).svc:{port}"
            for i in range(etcd["spec"]["replicas"])]


def test_cluster_etcd_has_three_members_each_with_a_volume():
    docs = by_kind_and_name(CLUSTER)
    etcd = docs["StatefulSet/vecgpu-etcd"]
    spec = etcd["spec"]
    assert spec["replicas"] == 3
    # Every member must start before any is ready (a quorum needs two).
    assert spec["podManagementPolicy"] == "Parallel"
    headless = docs["Service/" + spec["serviceName"]]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert headless["selector"] == spec["selector"]["matchLabels"]

    c = container(etcd)
    assert c["image"] == "vecgpu-cpu" and c["command"] == ["/usr/local/bin/etcd"]
    dockerfile = (DOCKER / "Dockerfile.cpu").read_text()
    assert re.search(r"ln -s [^&]*/opt/vecgpu/bin/etcd[^&]* /usr/local/bin/", dockerfile)
    env = env_of(c)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    f = flags(c["args"])
    peer = f"http://$(POD_NAME).{spec['serviceName']}.$(POD_NAMESPACE).svc"
    assert f["--name"] == "$(POD_NAME)"
    assert f["--initial-advertise-peer-urls"] == peer + ":2380"
    assert f["--advertise-client-urls"] == peer + ":2379"
    # initial-cluster names the three pods, each at the name it advertises.
    members = dict(m.split("=", 1) for m in f["--initial-cluster"].split(","))
    names = [f"vecgpu-etcd-{i}" for i in range(3)]
    assert list(members) == names
    assert list(members.values()) == etcd_member_urls(docs, 2380)
    assert all(url == peer.replace("$(POD_NAME)", n) + ":2380" for n, url in members.items())
    assert f["--initial-cluster-state"] == "new"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"client": 2379, "peer": 2380, "metrics": 2381}
    for flag, port in (("--listen-client-urls", "client"), ("--listen-peer-urls", "peer"),
                       ("--listen-metrics-urls", "metrics")):
        assert f[flag] == f"http://0.0.0.0:{ports[port]}"
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert "httpGet" not in c["livenessProbe"]  # /health fails on every member without quorum

    # A volume each, holding the data directory.
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert f["--data-dir"].startswith(mounts[claim["metadata"]["name"]] + "/")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]

    client = docs["Service/vecgpu-etcd"]["spec"]
    assert client["selector"] == spec["selector"]["matchLabels"]
    assert [p["targetPort"] for p in client["ports"]] == ["client"]
    pdb = docs["PodDisruptionBudget/vecgpu-etcd"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"] == spec["selector"]


def test_cluster_agents_have_a_gpu_a_volume_a_stable_name_and_catch_up_readiness():
    docs = by_kind_and_name(CLUSTER)
    agents = docs["StatefulSet/vecgpu-agent"]
    spec = agents["spec"]
    pod = spec["template"]["spec"]
    c = container(agents)
    assert c["image"] == "vecgpu-cuda" and c["args"] == ["serve"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == 45679
    # Ready only once every copy it holds is in the in-sync set (the agent's /readyz).
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert pod["terminationGracePeriodSeconds"] >= 60  # the final snapshot

    env = env_of(c)
    names = list(env)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["VECGPU_AGENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The advertised address is the pod's stable DNS name under the headless Service, on the
    # agent port; $(VAR) expands only variables defined before it.
    advertise = env["VECGPU_ADVERTISE"]["value"]
    service = spec["serviceName"]
    assert advertise == f"$(POD_NAME).{service}.$(POD_NAMESPACE).svc:{ports['agent']}"
    for var in ("POD_NAME", "POD_NAMESPACE"):
        assert names.index(var) < names.index("VECGPU_ADVERTISE")
    assert names.index("POD_NAMESPACE") < names.index("VECGPU_JOIN")
    assert env["VECGPU_JOIN"]["value"].split(",") == etcd_member_urls(docs, 2379)
    headless = docs["Service/" + service]["spec"]
    assert headless["clusterIP"] == "None"
    # An agent catching up (not ready) is reached at that name by its shards' primaries.
    assert headless["publishNotReadyAddresses"] is True
    assert headless["selector"] == spec["selector"]["matchLabels"]
    assert "agent" in {p["targetPort"] for p in headless["ports"]}

    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["VECGPU_DATA_DIR"]["value"] == "/data"
    assert env["VECGPU_ENABLE_AUTH"]["value"] == "true"
    assert env["VECGPU_AUTH_FILE"]["value"].startswith(mounts["keys"] + "/")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["keys"]["secret"]["secretName"] == "vecgpu-keys"
    assert pod["securityContext"]["runAsUser"] == 10001

    gateway_env = env_of(container(docs["Deployment/vecgpu-gateway"]))
    assert spec["replicas"] >= int(gateway_env["VECGPU_REPLICAS"]["value"])
    pdb = docs["PodDisruptionBudget/vecgpu-agent"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"] == spec["selector"]


def test_cluster_gateways_serve_clients_through_the_single_servers_service_names():
    docs = by_kind_and_name(CLUSTER)
    gateway = docs["Deployment/vecgpu-gateway"]
    spec = gateway["spec"]
    pod = spec["template"]["spec"]
    c = container(gateway)
    assert spec["replicas"] >= 2
    assert c["image"] == "vecgpu-cpu" and c["args"] == ["gateway"]
    assert "nvidia.com/gpu" not in str(c["resources"])  # no indexes, no GPU
    env = env_of(c)
    agent_env = env_of(container(docs["StatefulSet/vecgpu-agent"]))
    assert env["VECGPU_ETCD"]["value"] == agent_env["VECGPU_JOIN"]["value"]
    assert not {"VECGPU_JOIN", "VECGPU_DATA_DIR", "VECGPU_ADVERTISE"} & set(env)
    assert env["VECGPU_ENABLE_AUTH"]["value"] == "true"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert env["VECGPU_AUTH_FILE"]["value"].startswith(mounts["keys"] + "/")
    assert {v["name"]: v for v in pod["volumes"]}["keys"]["secret"]["secretName"] == "vecgpu-keys"
    assert pod["securityContext"]["fsGroup"] == 10001  # the key file is mode 0440
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"

    # Clients connect as to the single server: the same Service names and ports.
    single = by_kind_and_name(KUBE)
    labels = spec["selector"]["matchLabels"]
    for name in ("Service/vecgpu", "Service/vecgpu-metrics"):
        assert docs[name]["spec"]["selector"] == labels
        assert docs[name]["spec"]["ports"] == single[name]["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"faissx": 45678, "grpc": 8081, "metrics": 45679}
    pdb = docs["PodDisruptionBudget/vecgpu-gateway"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"] == spec["selector"]


def test_cluster_selectors_and_named_ports_meet_their_pods():
    """Every Service, PodDisruptionBudget and NetworkPolicy selects the pods of exactly one
    workload, and the ports it names are that workload's; the agent API and etcd's client port
    admit gateways and agents, etcd's peer port only etcd."""
    docs = by_kind_and_name(CLUSTER)
    workloads = {k: d for k, d in docs.items() if d["kind"] in ("StatefulSet", "Deployment")}
    assert set(workloads) == {"StatefulSet/vecgpu-etcd", "StatefulSet/vecgpu-agent",
                              "Deployment/vecgpu-gateway"}
    for w in workloads.values():
        assert selects(w["spec"]["selector"], pod_labels(w))

    def selected(selector):
        (w,) = [w for w in workloads.values() if selects(selector, pod_labels(w))]
        return {p["name"] for p in container(w)["ports"]}

    for key, d in docs.items():
        if d["kind"] == "Service":
            named = selected({"matchLabels": d["spec"]["selector"]})
            assert {p["targetPort"] for p in d["spec"]["ports"]} <= named, key
        elif d["kind"] == "PodDisruptionBudget":
            selected(d["spec"]["selector"])
        elif d["kind"] == "NetworkPolicy":
            named = selected(d["spec"]["podSelector"])
            for rule in d["spec"]["ingress"]:
                assert {p["port"] for p in rule["ports"]} <= named, key

    def admitted(policy, port):
        """The components whose pods may reach `port` (None: every source)."""
        for rule in docs["NetworkPolicy/" + policy]["spec"]["ingress"]:
            if port in {p["port"] for p in rule["ports"]}:
                if "from" not in rule:
                    return None
                return {pod_labels(w)["app.kubernetes.io/component"] for w in workloads.values()
                        if any(selects(f["podSelector"], pod_labels(w)) for f in rule["from"])}
        return set()

    assert admitted("vecgpu-agent", "agent") == {"gateway", "agent"}
    assert admitted("vecgpu-agent", "faissx") == set()  # clients go through the gateways
    assert admitted("vecgpu-agent", "metrics") is None  # probes and Prometheus
    assert admitted("vecgpu-etcd", "client") == {"gateway", "agent", "etcd"}
    assert admitted("vecgpu-etcd", "peer") == {"etcd"}
    assert admitted("vecgpu-etcd", "metrics") is None


def test_cluster_tls_secret_is_mounted_but_off_until_turned_on():
    """Agents and gateways mount the optional Secret vecgpu-cluster-tls and pass no TLS
    setting; their commented-out variables, which turn it on, name files in that mount."""
    docs = by_kind_and_name(CLUSTER)
    for key, name in (("StatefulSet/vecgpu-agent", "agent.yaml"),
                      ("Deployment/vecgpu-gateway", "gateway.yaml")):
        pod = docs[key]["spec"]["template"]["spec"]
        secret = {v["name"]: v for v in pod["volumes"]}["cluster-tls"]["secret"]
        assert secret["secretName"] == "vecgpu-cluster-tls" and secret["optional"] is True
        c = container(docs[key])
        assert not [e for e in env_of(c) if "TLS" in e or e.startswith("VECGPU_ETCD_")]
        mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["cluster-tls"]
        text = (CLUSTER / name).read_text()
        commented = re.findall(r"#\s+- name: (VECGPU_\w+)\n\s+#\s+value: (\S+)", text)
        assert {v for v, _ in commented} == {
            "VECGPU_CLUSTER_TLS_CERT", "VECGPU_CLUSTER_TLS_KEY", "VECGPU_CLUSTER_TLS_CA",
            "VECGPU_ETCD_CACERT", "VECGPU_ETCD_CERT", "VECGPU_ETCD_KEY"}, name
        assert all(path.startswith(mount + "/") for _, path in commented), name


def test_cluster_kustomization_picks_the_cuda_image_for_agents_only():
    k = yaml.safe_load((CLUSTER / "kustomization.yaml").read_text())
    assert k["namespace"] == "vecgpu"
    images = {i["name"]: i["newTag"] for i in k["images"]}
    assert images == {"vecgpu-cuda": "cuda", "vecgpu-cpu": "cpu"}
    used = {container(d)["image"] for _, d in kube_docs(CLUSTER)
            if d["kind"] in ("StatefulSet", "Deployment")}
    assert used == set(images)


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
@pytest.mark.parametrize("directory", [".", "cluster"])
def test_kustomize_renders_what_the_files_hold(directory, tmp_path):
    """`kubectl kustomize` renders each kustomization: the objects of its files, every one
    in the namespace vecgpu, the images set, and the result valid against the API schemas."""
    r = run("kubectl", "kustomize", KUBE / directory)
    assert r.returncode == 0, r.stderr
    rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
    expected = by_kind_and_name(KUBE / directory)
    assert {d["kind"] + "/" + d["metadata"]["name"] for d in rendered} == set(expected)
    for d in rendered:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "vecgpu", d["metadata"]["name"]
    images = {d["metadata"]["name"]: container(d)["image"] for d in rendered
              if d["kind"] in ("StatefulSet", "Deployment")}
    if directory == ".":
        assert images == {"vecgpu": "vecgpu:cuda"}
    else:
        assert images == {"vecgpu-agent": "vecgpu:cuda", "vecgpu-gateway": "vecgpu:cpu",
                          "vecgpu-etcd": "vecgpu:cpu"}
    out = tmp_path / "rendered.yaml"
    out.write_text(r.stdout)
    r = run(BIN / "kubernetes-validate", "--strict", "--kubernetes-version", KUBE_VERSION, out)
    assert r.returncode == 0, r.stdout + r.stderr


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
    agents joining it, each on a volume of its own and none publishing a port, healthy once
    caught up (/readyz), and a gateway publishing the client ports; agents and gateway wait
    for a healthy etcd, the gateway for the agents to start."""
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
        # Healthy: caught up, every copy it holds in its shard's in-sync set.
        assert agent["healthcheck"]["test"] == [
            "CMD", "/usr/local/bin/vecgpu", "healthcheck", "--ready"]
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
    for name in agents:
        assert gateway["depends_on"][name]["condition"] == "service_started"
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
