"""The node's audit ledger: an RFC 9162 Merkle log of every cross-city lookup,
with signed checkpoints.

``merkle`` is the tree arithmetic (pure: it never touches storage), ``note`` the
C2SP signed-note and checkpoint formats, ``cosignature`` the C2SP
tlog-cosignature a witness puts on a checkpoint, ``entries`` the entry encoding
and its size bound (:data:`MAX_ENTRY_BYTES`), ``log`` the storage
(:class:`AuditLog`: commit, read, prove, prune), ``appender`` the group commit
(:class:`Ledger`), ``verify`` the auditor's recomputation (and the check of the
head against what the witnesses cosigned), and ``witnessing`` what the node keeps
of its peers' logs and of their cosignatures on its own.
Building a node's ledger from its configuration is the application's wiring
(``creditexchange.node.app``), not the ledger's.
"""

from __future__ import annotations

from creditexchange.node.ledger.appender import Ledger
from creditexchange.node.ledger.entries import MAX_ENTRY_BYTES
from creditexchange.node.ledger.log import (
    AuditLog,
    ConsistencyProof,
    InclusionProof,
    Pruned,
    Receipt,
    SideWrite,
    StoredEntry,
    origin_for,
)
from creditexchange.node.ledger.verify import (
    VerifyReport,
    Vouched,
    WitnessedReport,
    verify,
    verify_witnessed,
)

__all__ = [
    "MAX_ENTRY_BYTES",
    "AuditLog",
    "ConsistencyProof",
    "InclusionProof",
    "Ledger",
    "Pruned",
    "Receipt",
    "SideWrite",
    "StoredEntry",
    "VerifyReport",
    "Vouched",
    "WitnessedReport",
    "origin_for",
    "verify",
    "verify_witnessed",
]
