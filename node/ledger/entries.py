"""Audit entries: building them, encoding them deterministically, showing them.

An entry is the ``creditexchange.v1.AuditEntry`` protobuf message (``proto/``), so
any language can decode a node's log. The node serializes it once, with
deterministic encoding, and the ledger hashes and stores exactly those bytes;
nothing re-encodes a stored entry.

The subject is never in an entry: only ``HMAC-SHA-256(node secret, subject id)``,
so the ledger can show that two lookups concerned the same subject without
revealing who it was.

No entry exceeds :data:`MAX_ENTRY_BYTES` (64 KiB): the ledger refuses to commit a
larger one (:func:`check_size`), so reading, decoding or verifying an entry costs a
bounded amount whatever a caller put into it.

When an entry was recorded is its own ``time_unix_micros`` (:func:`recorded_time`),
inside the hashed bytes: nothing beside the entry, which the leaf hash would not
cover, says how old it is.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError

from creditexchange.errors import LedgerError
from creditexchange.v1 import audit_pb2

__all__ = [
    "FORMAT_VERSION",
    "MAX_ENTRY_BYTES",
    "AuditEntry",
    "Direction",
    "Kind",
    "check_size",
    "decode",
    "encode",
    "maintenance",
    "operator_call",
    "recorded_time",
    "subject_hmac",
]

FORMAT_VERSION = 1
MAX_ENTRY_BYTES = 64 * 1024
"""The largest entry the ledger commits, in bytes (an entry is one lookup's metadata)."""
AuditEntry = audit_pb2.AuditEntry
Direction = audit_pb2.Direction
Kind = audit_pb2.Kind


def subject_hmac(secret: bytes, subject_id: str) -> bytes:
    return hmac.new(secret, subject_id.strip().upper().encode(), hashlib.sha256).digest()


def encode(entry: audit_pb2.AuditEntry) -> bytes:
    """The entry's bytes as the ledger stores and hashes them."""
    if entry.format_version == 0:
        entry.format_version = FORMAT_VERSION
    return entry.SerializeToString(deterministic=True)


def check_size(body: bytes) -> None:
    """Refuse an entry larger than :data:`MAX_ENTRY_BYTES`; the ledger calls this for every
    entry before it is queued or committed."""
    if len(body) > MAX_ENTRY_BYTES:
        raise LedgerError(
            f"the audit entry is {len(body)} bytes, over the ledger's limit of "
            f"{MAX_ENTRY_BYTES} bytes (MAX_ENTRY_BYTES); it was not recorded. An entry holds "
            "one lookup's metadata: find what made it this large (e.g. a batch check of too "
            "many subjects: lower max_batch_subjects) rather than raising the limit"
        )


def recorded_time(body: bytes) -> int | None:
    """When the node recorded the entry (``time_unix_micros``, µs since the epoch, UTC).

    None when ``body`` is not an ``AuditEntry`` or carries no time (0 or less): such an
    entry cannot be dated, and whoever asks (``audit prune``) must not guess its age.
    """
    entry = audit_pb2.AuditEntry()
    try:
        entry.ParseFromString(body)
    except DecodeError:
        return None
    return entry.time_unix_micros if entry.time_unix_micros > 0 else None


def decode(body: bytes) -> dict[str, Any]:
    """An entry as data for people and tools (bytes fields in base64)."""
    entry = audit_pb2.AuditEntry()
    entry.ParseFromString(body)
    return MessageToDict(entry, preserving_proto_field_name=True)


def maintenance(note: str, member_id: str, time_unix_micros: int) -> bytes:
    """An entry recording the ledger's own housekeeping (e.g. pruning)."""
    return encode(
        audit_pb2.AuditEntry(
            time_unix_micros=time_unix_micros,
            requester=member_id,
            responder=member_id,
            direction=audit_pb2.LOCAL,
            kind=audit_pb2.MAINTENANCE,
            note=note,
            outcome=audit_pb2.Outcome(status="OK"),
        )
    )


def operator_call(
    member_id: str,
    officer: str,
    note: str,
    subject_hmac: bytes | None,
    time_unix_micros: int,
) -> bytes:
    """An entry recording what the node's own operator looked up from the command line
    without asking a member (an auditor's subject search): LOCAL, kind ``API_CALL``, no
    partner (the operator), the subject as its HMAC under the key in force, never in
    clear; ``note`` says what was asked and found."""
    entry = audit_pb2.AuditEntry(
        time_unix_micros=time_unix_micros,
        requester=member_id,
        responder=member_id,
        direction=audit_pb2.LOCAL,
        kind=audit_pb2.API_CALL,
        officer=officer,
        note=note[:4000],
        outcome=audit_pb2.Outcome(status="OK"),
    )
    if subject_hmac is not None:
        entry.subject_hmac = subject_hmac
        entry.subject_count = 1
    return encode(entry)
