"""deploy/compose/: the six-member federation with PostgreSQL, Prometheus and Grafana.

The file is resolved by a compose client (``docker compose config``, or Debian's
docker-compose), which checks it against the Compose specification and fills in what
.env gives; the checks below read that resolved form. They hold what an operator relies
on: every member runs as a hardened node with its own home volume and its image's health
check; the nodes reach each other and PostgreSQL on internal networks only; Prometheus
scrapes deploy/monitoring/prometheus.yml's targets, and each of them is a node's metrics
port; Grafana shows the dashboard from that Prometheus.

provision.py, which makes the homes before the first ``up``, is run for real on the
PostgreSQL of the tests: six homes on six databases, each with its own role, and a home
the node serves from.

Locally a missing compose client skips the tests that need it; with CI=true it fails them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from conftest import PG_URL, require_postgres
from ports import free_ports
from sqlalchemy import make_url
from test_deploy_container import healthcheck_command, image_home, image_uid, serving_node

from creditexchange.devtools.provision import MEMBERS
from creditexchange.node.app.config import load_config
from creditexchange.node.database import create_database_engine, current_revision, head_revision

TESTS = Path(__file__).resolve().parent
DEPLOY = TESTS.parent / "deploy"
COMPOSE = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE / "compose.yaml"
PROVISION = COMPOSE / "provision.py"
MONITORING = DEPLOY / "monitoring"
GRAFANA = COMPOSE / "grafana" / "provisioning"
IN_CI = os.environ.get("CI") == "true"
PASSWORDS = {"POSTGRES_PASSWORD": "a-postgres-password", "GRAFANA_ADMIN_PASSWORD": "a-grafana-one"}
NODE_NETWORKS = {"federation", "database", "metrics"}


def provisioning() -> Any:
    """deploy/compose/provision.py as a module: its ports and names are the ones checked."""
    spec = importlib.util.spec_from_file_location("compose_provision", PROVISION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_client() -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        plugin = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if plugin.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    reason = (
        "no compose client: neither 'docker compose' nor docker-compose (Debian: docker-compose)"
    )
    if IN_CI:
        pytest.fail(f"{reason}; CI must check compose.yaml", pytrace=False)
    pytest.skip(reason)


def compose_config(env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """``compose config`` of the file with ``env`` as its only variables (an operator's
    .env beside the file is not read: --env-file names an empty one)."""
    empty = tmp / "empty.env"
    empty.write_text("")
    environment = {k: v for k, v in os.environ.items() if k not in PASSWORDS}
    options = ["--file", str(COMPOSE_FILE), "--env-file", str(empty), "--profile", "setup"]
    return subprocess.run(
        [*compose_client(), *options, "config"],
        cwd=COMPOSE,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **env},
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    done = compose_config(PASSWORDS, tmp_path_factory.mktemp("compose"))
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = yaml.safe_load(done.stdout)
    return loaded


def services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = resolved["services"]
    return found


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service, in either form a client prints."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *_ = volume.split(":")
        else:
            source, target = volume["source"], volume["target"]
        found.append((source, target))
    return found


def networks(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = service.get("networks", {})
    if isinstance(listed, list):
        return {name: {} for name in listed}
    return {name: settings or {} for name, settings in listed.items()}


def test_compose_config_refuses_to_run_without_the_passwords_of_env(tmp_path: Path) -> None:
    done = compose_config({"GRAFANA_ADMIN_PASSWORD": "x"}, tmp_path)
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/compose/.env" in done.stderr
    done = compose_config({"POSTGRES_PASSWORD": "x"}, tmp_path)
    assert done.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD in deploy/compose/.env" in done.stderr


def test_the_services_are_the_six_members_and_what_watches_them(resolved: dict[str, Any]) -> None:
    assert set(services(resolved)) == {*MEMBERS, "provision", "postgres", "prometheus", "grafana"}


@pytest.mark.parametrize("member", MEMBERS)
def test_each_member_runs_a_hardened_node_with_the_images_health_check(
    member: str, resolved: dict[str, Any]
) -> None:
    node = services(resolved)[member]
    assert node["image"] == services(resolved)["provision"]["image"]
    assert node["command"] == ["serve"]
    assert node["read_only"] is True
    assert node["cap_drop"] == ["ALL"] and "cap_add" not in node
    assert "no-new-privileges:true" in node["security_opt"]
    assert "user" not in node, "the image's unprivileged user"
    assert "ports" not in node, "the nodes are reached on the compose networks only"
    health = node["healthcheck"]
    assert health["test"] == ["CMD", *healthcheck_command()]
    assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert node["restart"] == "unless-stopped"
    assert mounts(node) == [(f"{member}-home", image_home())]


def test_each_home_volume_is_one_members_and_provision_fills_them_all(
    resolved: dict[str, Any],
) -> None:
    every = services(resolved)
    owners: dict[str, list[str]] = {}
    for name, service in every.items():
        for source, _ in mounts(service):
            owners.setdefault(source, []).append(name)
    for member in MEMBERS:
        assert sorted(owners[f"{member}-home"]) == sorted([member, "provision"])
    assert owners["federation-ca"] == ["provision"], "the CA's key is in no node"
    provision = every["provision"]
    root = provision["entrypoint"][provision["entrypoint"].index("--root") + 1]
    targets = dict(mounts(provision))
    assert targets["federation-ca"] == f"{root}/ca"
    for member in MEMBERS:
        assert targets[f"{member}-home"] == f"{root}/{member}"
    [script] = [s for s, t in mounts(provision) if t in provision["entrypoint"]]
    assert Path(script) == PROVISION
    assert provision["profiles"] == ["setup"], "provision runs only when asked"
    assert set(provision["cap_add"]) == {"CHOWN", "SETUID", "SETGID"}
    owner = provisioning().NODE_OWNER
    assert owner == f"{image_uid()}:{image_uid()}", "provision hands the homes to the image's user"


def test_the_nodes_reach_each_other_and_postgresql_on_internal_networks(
    resolved: dict[str, Any],
) -> None:
    every = services(resolved)
    module = provisioning()
    for member in MEMBERS:
        host, port = module.PEER_ADDRESS.format(member=member).rsplit(":", 1)
        assert host == member and int(port) == module.GRPC_PORT
        assert set(networks(every[member])) == NODE_NETWORKS
    assert set(networks(every["postgres"])) == {"database"}
    assert module.GRPC_PORT == 7443 and module.METRICS_PORT == 9464
    for name in NODE_NETWORKS:
        assert resolved["networks"][name].get("internal") is True, name
    for name, service in every.items():
        if name not in {"prometheus", "grafana"}:
            assert "ports" not in service, name
        else:
            assert all(
                str(p).startswith("127.0.0.1:") or _published_on_loopback(p)
                for p in service["ports"]
            )


def _published_on_loopback(port: Any) -> bool:
    return isinstance(port, dict) and port.get("host_ip") == "127.0.0.1"


def scrape_targets() -> list[tuple[str, int, str]]:
    """(host, port, node label) of every target of deploy/monitoring/prometheus.yml."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    found = []
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                found.append((host, int(port), static["labels"]["node"]))
    return found


def test_prometheus_scrapes_every_nodes_metrics_port_by_the_monitoring_files(
    resolved: dict[str, Any],
) -> None:
    every = services(resolved)
    prometheus = every["prometheus"]
    reachable: dict[str, str] = {}  # a name Prometheus can resolve -> the service it names
    for name, service in every.items():
        for network, settings in networks(service).items():
            if network in networks(prometheus):
                for alias in [name, *settings.get("aliases", [])]:
                    reachable[alias] = name
    targets = scrape_targets()
    assert sorted(label for _, _, label in targets) == sorted(MEMBERS)
    for host, port, label in targets:
        assert reachable.get(host) == label, (
            f"{host} is not the {label} node on Prometheus's network"
        )
        assert port == provisioning().METRICS_PORT
    files = {Path(source).resolve(): target for source, target in mounts(prometheus)}
    config_file = files[(MONITORING / "prometheus.yml").resolve()]
    assert f"--config.file={config_file}" in prometheus["command"]
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    for rules in config["rule_files"]:
        assert files[(MONITORING / rules).resolve()] == str(Path(config_file).parent / rules)


def test_grafana_shows_the_dashboard_from_that_prometheus(resolved: dict[str, Any]) -> None:
    every = services(resolved)
    grafana, prometheus = every["grafana"], every["prometheus"]
    assert set(networks(grafana)) & set(networks(prometheus))
    files = {Path(source).resolve(): target for source, target in mounts(grafana)}
    assert files[GRAFANA.resolve()] == "/etc/grafana/provisioning"
    [source] = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    listen = [a for a in prometheus["command"] if a.startswith("--web.listen-address=")]
    assert source["url"] == f"http://prometheus{listen[0].split('=')[1]}"
    assert source["type"] == "prometheus" and source["isDefault"] is True
    [provider] = yaml.safe_load((GRAFANA / "dashboards" / "credit-node.yaml").read_text())[
        "providers"
    ]
    dashboard_file = files[(MONITORING / "grafana-dashboard.json").resolve()]
    assert Path(dashboard_file).parent == Path(provider["options"]["path"])
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert (variable["type"], variable["query"]) == ("datasource", source["type"])


# --- provision.py on the real PostgreSQL ------------------------------------------------


@pytest.fixture
def provisioned(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The six homes provision.py makes, each member's database named PREFIX<member> in
    the tests' PostgreSQL; the databases and roles are dropped after."""
    require_postgres()
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    url = make_url(PG_URL)
    args = [
        sys.executable, str(PROVISION), "--root", str(tmp_path / "federation"),
        "--database-host", url.host or "127.0.0.1", "--database-port", str(url.port or 5432),
        "--admin-user", url.username or "postgres", "--database-prefix", prefix,
        "--subjects", "5", "--owner", f"{os.getuid()}:{os.getgid()}",
    ]  # fmt: skip
    admin = f"postgresql://{url.username}@{url.host}:{url.port or 5432}/{url.database}"
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        again = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2
        assert "already provisioned" in again.stderr and "nothing was changed" in again.stderr
        yield tmp_path / "federation", prefix
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            for member in MEMBERS:
                connection.execute(f'DROP DATABASE IF EXISTS "{prefix}{member}" WITH (FORCE)')
                connection.execute(f'DROP ROLE IF EXISTS "{prefix}{member}"')


@pytest.mark.postgres
def test_provision_makes_six_homes_each_on_its_own_database(
    provisioned: tuple[Path, str], tmp_path: Path
) -> None:
    root, prefix = provisioned
    module = provisioning()
    peers = {m: module.PEER_ADDRESS.format(member=m) for m in MEMBERS}
    url = make_url(PG_URL)
    admin = f"postgresql://{url.username}@{url.host}:{url.port or 5432}/{url.database}"
    for member in MEMBERS:
        home = root / member
        config = load_config(home)  # the node's own checks: modes, password file
        settings = config.settings
        assert settings.member_id == member
        assert dict(settings.peers) == peers
        assert (settings.grpc_host, settings.grpc_port) == ("0.0.0.0", module.GRPC_PORT)
        assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", module.METRICS_PORT)
        written = tomllib.loads((home / "node.toml").read_text())
        database = make_url(written["database_url"])
        assert database.password is None, "no password in node.toml"
        assert database.database == database.username == f"{prefix}{member}"
        password = home / written["database_password_file"]
        assert stat.S_IMODE(password.stat().st_mode) == 0o600
        engine = create_database_engine(config.database_url)
        try:
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()
    assert not (root / "ca" / "ca.key").stat().st_mode & 0o077
    with psycopg.connect(admin) as connection:
        rows = connection.execute(
            "SELECT datname, pg_get_userbyid(datdba), datacl::text[] FROM pg_database "
            "WHERE datname LIKE %s",
            (f"{prefix}%",),
        ).fetchall()
    assert sorted(name for name, _, _ in rows) == sorted(f"{prefix}{m}" for m in MEMBERS)
    for name, owner, acl in rows:
        assert owner == name
        assert not [item for item in acl if item.startswith("=")], f"PUBLIC may use {name}"

    (port,) = free_ports(1)
    listening = {"CREDIT_NODE_GRPC_HOST": "127.0.0.1", "CREDIT_NODE_GRPC_PORT": str(port)}
    listening |= {"CREDIT_NODE_METRICS_PORT": "0", "CREDIT_NODE_WITNESS_INTERVAL_S": "0"}
    with serving_node(root / "huizhou", tmp_path / "serve.log", listening) as address:
        assert address == f"127.0.0.1:{port}"
