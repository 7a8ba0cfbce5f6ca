"""Opening a node's parts from its home: the one place that turns settings and key
files into running objects.

Everything below the application (the ledger, the exchange, the records) is
built from explicit parts and never reads a configuration; these functions read
one and hand the parts over. A home is read only through
:func:`~creditexchange.node.app.config.load_config`, which refuses one whose
private files other users can reach; ``config.database_url`` carries the password
of ``database_password_file`` or ``CREDIT_NODE_DATABASE_PASSWORD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from creditexchange.node.app.config import NodeConfig, load_config
from creditexchange.node.app.keys import load_hmac_key, load_signing_key
from creditexchange.node.app.tls import channel_credentials, tls_credentials
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.node.database import open_database
from creditexchange.node.exchange.client import FederationClient, Requester
from creditexchange.node.exchange.federation import FederationView
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.federation.breaker import Breakers
from creditexchange.node.federation.fanout import RegionalClient
from creditexchange.node.ledger import AuditLog, Ledger, origin_for
from creditexchange.node.ledger.note import Signer
from creditexchange.policy.trust import TrustStore

__all__ = [
    "OpenedNode",
    "federation_view",
    "open_audit_log",
    "open_client",
    "open_ledger",
    "open_node",
    "open_regional_client",
    "requester_from",
]


@dataclass
class OpenedNode:
    """A node home opened for a command: its configuration, database and catalog."""

    config: NodeConfig
    database: Engine
    catalog: Catalog


def open_node(home: Path) -> OpenedNode:
    """The home's configuration (refused when others can reach its private files), its
    database at the current schema, and its catalog."""
    config = load_config(home)
    return OpenedNode(config, open_database(config.database_url), load_catalog(config.catalog_path))


def open_audit_log(config: NodeConfig, database: Engine) -> AuditLog:
    """The node's audit log: its origin from the federation and member id, its
    checkpoints signed with the node's signing key."""
    origin = origin_for(config.member_id, config.settings.federation)
    return AuditLog(database, Signer(origin, load_signing_key(config.signing_key_path)))


def open_ledger(config: NodeConfig, database: Engine) -> Ledger:
    """The appender, batching as ``ledger_max_batch`` and ``ledger_max_wait_ms`` say;
    use as ``async with open_ledger(...) as ledger``."""
    return Ledger(
        open_audit_log(config, database),
        max_batch=config.settings.ledger_max_batch,
        max_wait=config.settings.ledger_max_wait_ms / 1000,
    )


def federation_view(config: NodeConfig, catalog: Catalog | None = None) -> FederationView:
    """The node's view of the installed memorandum (not read until first asked)."""
    return FederationView(
        TrustStore(config.policy_dir),
        catalog if catalog is not None else load_catalog(config.catalog_path),
        config.member_id,
    )


def requester_from(config: NodeConfig) -> Requester:
    """This node as it asks the others."""
    return Requester(
        member_id=config.member_id,
        signing_key=load_signing_key(config.signing_key_path),
        hmac_key=load_hmac_key(config.subject_hmac_key_path),
        credentials=channel_credentials(tls_credentials(config)),
        federation=federation_view(config),
        peers=dict(config.settings.peers),
        timeout_s=config.settings.query_timeout_s,
    )


def open_client(config: NodeConfig, *, ledger: Ledger | None = None) -> FederationClient:
    """A client asking as this node: ``async with open_client(config) as client``.

    Without ``ledger`` it records its OUTGOING entries in a ledger of its own,
    started and stopped with it; a serving node passes its running one.
    """
    if ledger is not None:
        return FederationClient(requester_from(config), ledger=ledger)
    own = open_ledger(config, open_database(config.database_url))
    return FederationClient(requester_from(config), ledger=own, owns_ledger=True)


def open_regional_client(
    config: NodeConfig,
    *,
    ledger: Ledger | None = None,
    database: Engine | None = None,
    metrics: Metrics | None = None,
) -> RegionalClient:
    """A client asking the whole region as this node, for consolidated reports and
    fan-outs: ``async with open_regional_client(config) as region``.

    Like :func:`open_client` it records in a ledger of its own unless a serving node
    passes its running ``ledger`` (and its ``database``, the store its own records are
    read from); ``metrics`` receives the members' circuit states
    (``credit_node_member_circuit``). Its breakers live as long as it does.
    """
    store = database if database is not None else open_database(config.database_url)
    requester = requester_from(config)
    catalog = requester.federation.catalog
    if ledger is not None:
        client = FederationClient(requester, ledger=ledger)
    else:
        client = FederationClient(requester, ledger=open_ledger(config, store), owns_ledger=True)
    gauge = metrics.member_circuit if metrics is not None else None
    return RegionalClient(client, store=store, catalog=catalog, breakers=Breakers(gauge=gauge))
