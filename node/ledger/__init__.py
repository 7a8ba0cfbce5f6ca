"""The node's audit ledger: an RFC 9162 Merkle log of every cross-city lookup,
with signed checkpoints.

``merkle`` is the tree arithmetic, ``note`` the C2SP signed-note and checkpoint
formats, ``entries`` the entry encoding, ``log`` the storage, group commit and
verification. ``open_store`` and ``open_ledger`` build a node's ledger from its
configuration: the origin from the federation and member id, the checkpoint key
from the node's signing key, the batching from ``ledger_max_batch`` and
``ledger_max_wait_ms``.
"""

from __future__ import annotations

from sqlalchemy import Engine

from creditexchange.node.config import NodeConfig
from creditexchange.node.keys import load_signing_key
from creditexchange.node.ledger.log import Ledger, LedgerStore, origin_for
from creditexchange.node.ledger.note import Signer


def open_store(config: NodeConfig, engine: Engine) -> LedgerStore:
    origin = origin_for(config.member_id, config.settings.federation)
    return LedgerStore(engine, Signer(origin, load_signing_key(config.signing_key_path)))


def open_ledger(config: NodeConfig, engine: Engine) -> Ledger:
    """The appender, configured; use as ``async with open_ledger(...) as ledger``."""
    return Ledger(
        open_store(config, engine),
        max_batch=config.settings.ledger_max_batch,
        max_wait=config.settings.ledger_max_wait_ms / 1000,
    )
