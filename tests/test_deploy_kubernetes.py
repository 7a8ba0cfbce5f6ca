"""deploy/kubernetes/: one overlay per member on a shared base, checked offline.

Each overlay is built with ``kubectl kustomize`` and every resource it makes is validated
against the Kubernetes API schemas (kubernetes-validate, strict: an unknown field fails).
Then what the schemas cannot see: each overlay names its member everywhere, runs several
replicas, probes the gRPC health service on the port the node listens on, selects its own
pods with the PodDisruptionBudget, the Service and the NetworkPolicy, runs unprivileged
on a read-only root file system, and takes its keys from the documented Secrets, never
from the repository.

Last, the init container's script is run for real: it assembles a node home from files
laid out as the pod mounts the overlay's ConfigMap and the Secrets, on the real
PostgreSQL, and the node serves from that home until the Deployment's own probe command
says SERVING.

Locally a missing kubectl or kubernetes-validate skips the tests that need it; with
CI=true it fails them.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ports import free_ports
from test_deploy_container import image_uid, serving_node

from creditexchange.devtools.provision import MEMBERS, provision
from creditexchange.node.app.config import NodeSettings

TESTS = Path(__file__).resolve().parent
KUBERNETES = TESTS.parent / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = KUBERNETES / "overlays"
README = KUBERNETES / "README.md"
ASSEMBLE = BASE / "assemble-home.sh"
IN_CI = os.environ.get("CI") == "true"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
"""The oldest Kubernetes the manifests are meant for, and the newest the schemas know."""
SECRETS = {
    "credit-node-keys": {"signing.key", "subject-hmac.key"},
    "credit-node-tls": {"tls.crt", "tls.key"},
    "credit-node-database": {"password"},
}
"""The Secrets an operator makes (README.md), with the keys the pods read."""
FEDERATION_CONFIGMAP = "credit-node-federation"
NAMESPACED = {
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "NetworkPolicy",
}


def missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI must run this test", pytrace=False)
    pytest.skip(reason)


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        missing("kubectl is not installed (it builds the overlays: kubectl kustomize)")
    assert found is not None
    return found


def build(overlay: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {member: build(OVERLAYS / member) for member in MEMBERS}


def the(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(resources: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = the(resources, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(resources: list[dict[str, Any]], name: str = "node") -> dict[str, Any]:
    spec = pod_spec(resources)
    every: list[dict[str, Any]] = spec["containers"] + spec.get("initContainers", [])
    [found] = [c for c in every if c["name"] == name]
    return found


def node_settings(resources: list[dict[str, Any]]) -> NodeSettings:
    """The overlay's node.toml, as the node reads it."""
    [config] = [
        r
        for r in resources
        if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("credit-node-config")
    ]
    return NodeSettings(**tomllib.loads(config["data"]["node.toml"]))


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- the overlays build and validate ----------------------------------------------------


def test_there_is_one_overlay_per_member_and_nothing_else() -> None:
    assert sorted(p.name for p in OVERLAYS.iterdir() if p.is_dir()) == sorted(MEMBERS)


@pytest.mark.parametrize("member", MEMBERS)
def test_every_resource_passes_the_kubernetes_schemas(
    member: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    validate = kubernetes_validate().validate
    kinds = {r["kind"] for r in built[member]}
    assert kinds >= {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    for version in KUBERNETES_VERSIONS:
        for resource in built[member]:
            validate(resource, version, True)  # raises on any problem, a missing schema too


def kubernetes_validate() -> Any:
    """The kubernetes_validate module (it has no type information)."""
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        missing("kubernetes-validate is not installed (pip install kubernetes-validate)")
        raise


def test_the_schema_check_refuses_an_unknown_or_mistyped_field(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    checker = kubernetes_validate()
    validate, invalid = checker.validate, checker.ValidationError

    deployment = the(built["huizhou"], "Deployment")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(invalid):
        validate(misspelt, KUBERNETES_VERSIONS[-1], True)
    pdb = the(built["huizhou"], "PodDisruptionBudget")
    mistyped = {**pdb, "spec": {**pdb["spec"], "selector": "node"}}
    with pytest.raises(invalid):
        validate(mistyped, KUBERNETES_VERSIONS[-1], True)


# --- what the schemas cannot see ----------------------------------------------------------


@pytest.mark.parametrize("member", MEMBERS)
def test_each_overlay_names_its_member_everywhere(
    member: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    resources = built[member]
    namespace = f"credit-node-{member}"
    assert the(resources, "Namespace")["metadata"]["name"] == namespace
    for resource in resources:
        labels = resource["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == member, resource["metadata"]["name"]
        if resource["kind"] in NAMESPACED:
            assert resource["metadata"]["namespace"] == namespace
    assert node_settings(resources).member_id == member


@pytest.mark.parametrize("member", MEMBERS)
def test_the_node_runs_on_postgresql_in_several_replicas(
    member: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    deployment = the(built[member], "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    settings = node_settings(built[member])
    # several processes share one node only on PostgreSQL (SQLite is one process's)
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert f"/credit_{member}" in settings.database_url
    user, at, _ = settings.database_url.removeprefix("postgresql+psycopg://").partition("@")
    assert at and ":" not in user, "the password comes from the Secret, not the URL"


@pytest.mark.parametrize("member", MEMBERS)
def test_the_probes_ask_the_grpc_health_service_where_the_node_listens(
    member: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    resources = built[member]
    node = container(resources)
    settings = node_settings(resources)
    ports = {p["name"]: p["containerPort"] for p in node["ports"]}
    assert ports["grpc"] == settings.grpc_port
    assert ports["metrics"] == settings.metrics_port
    assert settings.grpc_host == "0.0.0.0", "the Service reaches the pod's address"
    assert settings.metrics_host == "0.0.0.0"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = node[kind]
        command = probe["exec"]["command"]
        # credit-node health dials grpc_port of the home's node.toml (no --address)
        assert command[:2] == ["credit-node", "health"] and "--address" not in command, kind
        wait = float(command[command.index("--timeout") + 1])
        assert probe["timeoutSeconds"] > wait, f"{kind}: the kubelet gives up before the probe"
    service_ports = {p["name"]: p for p in the(resources, "Service")["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc"
    assert service_ports["grpc"]["port"] == settings.grpc_port


@pytest.mark.parametrize("member", MEMBERS)
def test_the_budget_the_service_and_the_policy_select_the_nodes_pods(
    member: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    resources = built[member]
    deployment = the(resources, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert labels["app.kubernetes.io/instance"] == member
    pdb = the(resources, "PodDisruptionBudget")["spec"]
    assert matches(pdb["selector"]["matchLabels"], labels)
    assert 1 <= pdb["minAvailable"] < deployment["spec"]["replicas"], "drains must be possible"
    assert matches(the(resources, "Service")["spec"]["selector"], labels)
    policy = the(resources, "NetworkPolicy")["spec"]
    assert matches(policy["podSelector"]["matchLabels"], labels)
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    grpc_rule, metrics_rule = policy["ingress"]
    assert [p["port"] for p in grpc_rule["ports"]] == ["grpc"] and "from" not in grpc_rule
    assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"] and metrics_rule["from"]


@pytest.mark.parametrize("member", MEMBERS)
def test_the_pods_run_unprivileged_on_a_read_only_root(
    member: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    spec = pod_spec(built[member])
    pod = spec["securityContext"]
    uid = image_uid()
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == uid
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for each in spec["containers"] + spec["initContainers"]:
        context = each["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, each["name"]
        assert context["allowPrivilegeEscalation"] is False, each["name"]
        assert context["capabilities"]["drop"] == ["ALL"], each["name"]
        assert "memory" in each["resources"]["limits"], each["name"]
    namespace = the(built[member], "Namespace")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("member", MEMBERS)
def test_keys_come_from_the_documented_secrets_only(
    member: str, built: dict[str, list[dict[str, Any]]]
) -> None:
    resources = built[member]
    assert not [r for r in resources if r["kind"] == "Secret"], "no Secret is built from files"
    spec = pod_spec(resources)
    used: dict[str, set[str]] = {}
    for volume in spec["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] == 0o440, volume["name"]
            used.setdefault(volume["secret"]["secretName"], set())
    for each in spec["containers"] + spec["initContainers"]:
        for variable in each.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                used.setdefault(reference["name"], set()).add(reference["key"])
    assert set(used) == set(SECRETS)
    assert used["credit-node-database"] == SECRETS["credit-node-database"]
    script = ASSEMBLE.read_text()
    for secret in ("credit-node-keys", "credit-node-tls"):
        for key in SECRETS[secret]:
            assert key in script, f"assemble-home.sh does not read {secret}/{key}"
    guide = README.read_text()
    for name in [*SECRETS, FEDERATION_CONFIGMAP]:
        assert name in guide, f"README.md does not say how to make {name}"


def test_no_key_material_is_in_the_manifests() -> None:
    for path in KUBERNETES.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "PRIVATE KEY-----" not in text, path
            assert "password =" not in text.lower(), path


# --- the init container's script, run for real ----------------------------------------------


@pytest.fixture
def pod_mounts(tmp_path: Path, built: dict[str, list[dict[str, Any]]]) -> Path:
    """A provisioned huizhou laid out as the pod mounts its ConfigMaps and Secrets: files
    of a Secret readable by the group (defaultMode 0440), in folders others may read."""
    (port,) = free_ports(1)
    [node] = provision(tmp_path / "federation", members=("huizhou",), ports=[port]).values()
    mounts = tmp_path / "etc-credit-node"
    [config] = [
        r
        for r in built["huizhou"]
        if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("credit-node-config")
    ]
    layout = {
        "config/node.toml": config["data"]["node.toml"].encode(),
        "keys/signing.key": (node.home / "keys/signing.key").read_bytes(),
        "keys/subject-hmac.key": (node.home / "keys/subject-hmac.key").read_bytes(),
        "keys/retired.subject-hmac-0a1b.key": os.urandom(32).hex().encode(),
        "tls/tls.crt": (node.home / "tls/node.crt").read_bytes(),
        "tls/tls.key": (node.home / "tls/node.key").read_bytes(),
        "federation/ca.crt": (node.home / "tls/ca.crt").read_bytes(),
        "federation/crl.pem": (node.home / "tls/crl.pem").read_bytes(),
        "federation/memorandum-v1.json": (node.home / "policy/v1.json").read_bytes(),
    }
    for name, content in layout.items():
        path = mounts / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o755)
        path.write_bytes(content)
        path.chmod(0o440)
    return mounts


def pod_environment(mounts: Path, home: Path, database_url: str) -> dict[str, str]:
    """What the Deployment gives both containers, with the paths of this test's layout
    and its database in place of the cluster's."""
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CREDIT_NODE_HOME": str(home),
        "MOUNTS": str(mounts),
        "CREDIT_NODE_TLS_CA": str(mounts / "federation/ca.crt"),
        "CREDIT_NODE_TLS_CRL": str(mounts / "federation/crl.pem"),
        "CREDIT_NODE_DATABASE_URL": database_url,
    }


@pytest.mark.postgres
def test_the_init_container_assembles_a_home_the_node_serves_from(
    pod_mounts: Path, postgres_url: str, tmp_path: Path, built: dict[str, list[dict[str, Any]]]
) -> None:
    deployment = the(built["huizhou"], "Deployment")
    [init] = deployment["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    home = tmp_path / "emptydir" / Path(env["CREDIT_NODE_HOME"]).name
    home.parent.mkdir(mode=0o777)
    assert init["command"][:2] == ["sh", "/etc/credit-node/scripts/assemble-home.sh"]
    environment = pod_environment(pod_mounts, home, postgres_url)
    done = subprocess.run(
        ["sh", str(ASSEMBLE)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **environment},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    private = [home, home / "node.toml", home / "keys", home / "tls", home / "tls/node.key"]
    retired = home / "keys/retired/subject-hmac-0a1b.key"
    assert retired.read_bytes() == (pod_mounts / "keys/retired.subject-hmac-0a1b.key").read_bytes()
    for path in [*private, *(home / "keys").iterdir(), retired]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is reachable by others"

    node = container(built["huizhou"])
    (port,) = free_ports(1)
    listening = {**environment, "CREDIT_NODE_GRPC_HOST": "127.0.0.1"}
    listening |= {"CREDIT_NODE_GRPC_PORT": str(port), "CREDIT_NODE_METRICS_PORT": "0"}
    with serving_node(home, tmp_path / "serve.log", listening):
        probe = subprocess.run(
            node["readinessProbe"]["exec"]["command"],
            capture_output=True,
            text=True,
            timeout=node["readinessProbe"]["timeoutSeconds"],
            env={**os.environ, **listening},
        )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == f"huizhou at 127.0.0.1:{port}: SERVING"


@pytest.mark.postgres
def test_the_init_container_refuses_to_start_a_node_without_a_memorandum(
    pod_mounts: Path, postgres_url: str, tmp_path: Path
) -> None:
    (pod_mounts / "federation/memorandum-v1.json").unlink()
    home = tmp_path / "emptydir" / "home"
    done = subprocess.run(
        ["sh", str(ASSEMBLE)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **pod_environment(pod_mounts, home, postgres_url)},
    )
    assert done.returncode == 2
    assert "no memorandum-v<N>.json in the ConfigMap credit-node-federation" in done.stderr
