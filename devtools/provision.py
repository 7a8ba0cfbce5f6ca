"""Provisioning a whole federation on one machine: the demo's, the tests' and the benchmarks'.

:func:`provision` does, for a set of members, what the six credit centers do
between them when they set up a real federation:

1. a federation CA (``certs/``) and one certificate per node;
2. a node home per member (config, signing key, subject HMAC key, migrated store);
3. the shipped "3+2" memorandum with every member's key and loopback endpoint,
   signed by every member and installed on every node (the TUF rules apply);
4. synthetic department data per member, imported with full validation.

Nothing here is a shortcut around a check: the nodes it builds are ordinary
nodes, started by ``credit-node serve --home``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from creditexchange.certs.authority import init_ca, issue
from creditexchange.devtools.sample import write_sample
from creditexchange.node.app.config import CONFIG_FILE, NodeConfig, load_config
from creditexchange.node.app.home import create_home
from creditexchange.node.app.keys import load_signing_key
from creditexchange.node.catalog import load_catalog
from creditexchange.node.database import open_database
from creditexchange.node.records.importer import FORMATS, import_file
from creditexchange.policy.document import parse_memorandum
from creditexchange.policy.trust import (
    TrustStore,
    shipped_memorandum_source,
    sign,
    signing_key_entry,
    to_json_data,
)

__all__ = [
    "MEMBERS",
    "ProvisionedNode",
    "provision",
    "set_settings",
    "signed_memorandum",
]

MEMBERS = ("huizhou", "shenzhen", "dongguan", "heyuan", "shanwei", "customs")


@dataclass(frozen=True)
class ProvisionedNode:
    member: str
    home: Path
    port: int
    metrics_port: int
    gateway_port: int = 0

    @property
    def config(self) -> NodeConfig:
        return load_config(self.home)


def provision(
    root: Path,
    *,
    members: Sequence[str] = MEMBERS,
    base_port: int = 7501,
    ports: Sequence[int] | None = None,
    metrics_base_port: int = 0,
    gateway_base_port: int = 0,
    database_urls: dict[str, str] | None = None,
    subjects: int = 200,
    seed: int = 2026,
    version: int = 1,
    witness_interval_s: float = 0.0,
    feeds: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, ProvisionedNode]:
    """Build a federation of ``members`` under ``root``; returns each member's node.

    Node ``i`` listens on ``ports[i]``, by default ``base_port + i`` (and serves
    metrics on ``metrics_base_port + i`` unless that is 0, and its REST gateway beside it
    on ``gateway_base_port + i`` unless that is 0). ``database_urls`` puts a
    member's store elsewhere (e.g. PostgreSQL); the default is SQLite in its home.
    The nodes witness each other every ``witness_interval_s`` seconds when serving
    (0, the default here: only when asked, so that tests and benchmarks see no
    background calls); with ``feeds`` a serving node publishes its feeds every 5 s and
    syncs the feeds the memorandum lets it (default off, for the same reason).
    """
    root.mkdir(parents=True, exist_ok=True)
    ca_dir = root / "ca"
    say(f"federation CA in {ca_dir}")
    init_ca(ca_dir)
    nodes: dict[str, ProvisionedNode] = {}
    for i, member in enumerate(members):
        home = root / member
        port = ports[i] if ports is not None else base_port + i
        metrics_port = metrics_base_port + i if metrics_base_port else 0
        gateway_port = gateway_base_port + i if gateway_base_port else 0
        create_home(
            home,
            member,
            database_url=(database_urls or {}).get(member),
            grpc_port=port,
            metrics_port=metrics_port,
            gateway_port=gateway_port,
        )
        # No loopback names: peers reach a node on 127.0.0.1 pinning the name
        # <member>.member.credit-exchange, which every certificate carries.
        issue(member, ca_dir, out_dir=home / "tls")
        tls = home / "tls"
        (tls / f"{member}.crt").rename(tls / "node.crt")
        (tls / f"{member}.key").rename(tls / "node.key")
        shutil.copy(ca_dir / "ca.crt", tls / "ca.crt")
        shutil.copy(ca_dir / "crl.pem", tls / "crl.pem")
        nodes[member] = ProvisionedNode(member, home.resolve(), port, metrics_port, gateway_port)
        say(f"node {member}: {home} on 127.0.0.1:{port}")
    peers = {m: f"127.0.0.1:{n.port}" for m, n in nodes.items()}
    for node in nodes.values():
        set_settings(
            node.home,
            peers=peers,
            grpc_host="127.0.0.1",
            witness_interval_s=witness_interval_s,
            publish_interval_s=5.0 if feeds else 0.0,
            sync_feeds=feeds,
        )
    envelope = signed_memorandum(nodes, version=version)
    for node in nodes.values():
        TrustStore(node.config.policy_dir).install(envelope, dt.datetime.now(dt.UTC))
    say(f"memorandum version {version} signed by {len(nodes)} members and installed on each")
    catalog = load_catalog()
    for node in nodes.values():
        config = node.config
        files = write_sample(catalog, node.member, subjects, seed, config.home / "incoming")
        database = open_database(config.database_url)
        accepted = 0
        for path in files:
            if path.suffix in FORMATS:
                summary = import_file(
                    database, catalog, path, path.stem, reject_dir=config.reject_dir
                )
                accepted += summary.accepted
        database.dispose()
        say(f"node {node.member}: {accepted} records imported")
    return nodes


def signed_memorandum(
    nodes: dict[str, ProvisionedNode], *, version: int = 1, keep_members: bool = False
) -> dict[str, Any]:
    """The shipped memorandum with the nodes' keys and endpoints, signed by every node.

    Members of the shipped file that are not among ``nodes`` are dropped (with
    the rules' references to them) unless ``keep_members``; the threshold is
    lowered to the number of members when needed.
    """
    data = shipped_memorandum_source()
    data["version"] = version
    present = set(nodes)
    if not keep_members:
        data["members"] = [m for m in data["members"] if m["id"] in present]
        for rule in data["rules"]:
            for key in ("providers", "requesters"):
                rule[key] = [m for m in rule[key] if m in present]
        data["rules"] = [r for r in data["rules"] if r["providers"] and r["requesters"]]
        for feed in data.get("feeds", []):
            feed["subscribers"] = [m for m in feed["subscribers"] if m in present]
        data["feeds"] = [
            f for f in data.get("feeds", []) if f["publisher"] in present and f["subscribers"]
        ]
        data["threshold"] = min(data["threshold"], len(data["members"]))
    for member in data["members"]:
        node = nodes.get(member["id"])
        if node is not None:
            signing_key = load_signing_key(node.config.signing_key_path)
            member["keys"] = [signing_key_entry(signing_key.verify_key)]
            member["endpoint"] = f"127.0.0.1:{node.port}"
    envelope: dict[str, Any] = {
        "signed": to_json_data(parse_memorandum(data, "the shipped memorandum")),
        "signatures": [],
    }
    for node in nodes.values():
        envelope = sign(envelope, load_signing_key(node.config.signing_key_path))
    return envelope


def set_settings(home: Path, **values: Any) -> None:
    """Add settings to a node's ``node.toml`` (the file stays the operator's to edit)."""
    import tomllib

    path = home / CONFIG_FILE
    current = tomllib.loads(path.read_text())
    current.update(values)
    header = path.read_text().splitlines()[0]
    path.write_text(header + "\n" + tomli_w.dumps(current))
