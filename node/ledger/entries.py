"""Audit entries: building them, encoding them deterministically, showing them.

An entry is the ``creditexchange.v1.AuditEntry`` protobuf message (``proto/``), so
any language can decode a node's log. The node serializes it once, with
deterministic encoding, and the ledger hashes and stores exactly those bytes;
nothing re-encodes a stored entry.

The subject is never in an entry: only ``HMAC-SHA-256(node secret, subject id)``,
so the ledger can show that two lookups concerned the same subject without
revealing who it was.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from google.protobuf.json_format import MessageToDict

from creditexchange.v1 import audit_pb2

__all__ = [
    "FORMAT_VERSION",
    "AuditEntry",
    "Direction",
    "Kind",
    "decode",
    "encode",
    "maintenance",
    "subject_hmac",
]

FORMAT_VERSION = 1
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
