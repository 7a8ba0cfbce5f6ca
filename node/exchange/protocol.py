"""The exchange protocol as both sides speak it: methods, payload types, trailers,
statuses and the audit entry of a call.

The provider (``provider``) and the requester (``client``) take everything they
must agree on from here, so that they cannot drift apart:

* :data:`METHODS`: each signed method's payload type, request message, audit
  kind and policy mode;
* :data:`LEAF_INDEX_TRAILER` and :data:`REFUSAL_TRAILER`: the trailing metadata
  that carry a refusal's audit entry index and the provider's signed
  :class:`Refusal` to the caller;
* :data:`HEADER_TEXT_LIMITS` and :func:`header_text_problem`: what the text of a
  request header may hold (NFKC, visible characters, no control or format
  characters, bounded), which the requester applies before it signs and the
  provider checks;
* :func:`call_entry`: the audit entry of a call, as either side records it (who
  asked whom, the request's header and digest, the subjects as keyed HMACs: one
  for a query or a check, the list for a batch);
* :func:`grpc_code` and :func:`status_of`: how the project's errors and statuses
  travel as gRPC status codes, in one table.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc

from creditexchange.clock import now_us
from creditexchange.errors import (
    CertificateError,
    CreditExchangeError,
    EnvelopeError,
    InvalidIdentifier,
    LedgerError,
    Refused,
    RevocationListExpired,
)
from creditexchange.node.exchange.replay import MAX_NONCE_BYTES
from creditexchange.node.ledger.entries import subject_hmac
from creditexchange.policy.document import Mode
from creditexchange.v1 import audit_pb2, exchange_pb2

__all__ = [
    "ANSWER",
    "BATCH_CHECK_REQUEST",
    "CHECK_REQUEST",
    "HEADER_TEXT_LIMITS",
    "LEAF_INDEX_TRAILER",
    "MAX_BATCH_SUBJECTS",
    "METHODS",
    "QUERY_REQUEST",
    "REFUSAL",
    "REFUSAL_TRAILER",
    "Method",
    "call_entry",
    "clipped_header",
    "grpc_code",
    "header_text_problem",
    "leaf_index_of",
    "refusal_of",
    "status_of",
    "subject_hmacs",
    "subject_tag",
]

_PREFIX = "application/vnd.creditexchange.v1."
QUERY_REQUEST: Final = _PREFIX + "QueryRequest+protobuf"
CHECK_REQUEST: Final = _PREFIX + "CheckRequest+protobuf"
BATCH_CHECK_REQUEST: Final = _PREFIX + "BatchCheckRequest+protobuf"
ANSWER: Final = _PREFIX + "Answer+protobuf"
"""The payload type of every signed answer."""

REFUSAL: Final = _PREFIX + "Refusal+protobuf"
"""The payload type of every signed refusal."""

LEAF_INDEX_TRAILER: Final = "audit-leaf-index"
"""Trailing metadata of a refused call: the index of the refusal's audit entry."""

REFUSAL_TRAILER: Final = "audit-refusal-bin"
"""Trailing metadata of a refused call: the provider's signed ``Refusal`` envelope."""

MAX_BATCH_SUBJECTS: Final = 1000
"""The most subjects one call may ask about; a provider may accept fewer."""

HEADER_TEXT_LIMITS: Final[Mapping[str, int]] = {
    "purpose": 64,
    "legal_basis": 512,
    "case_reference": 128,
    "officer": 128,
    "partner": 64,
}
"""The text fields of a request header and the most characters each may hold."""

# control (Cc), format (Cf: zero-width and bidirectional marks), surrogates, private use,
# unassigned: nothing an officer types, and what disguises one text as another
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_INVISIBLE_CATEGORIES: Final = frozenset({"Zs", "Zl", "Zp", "Mn", "Mc", "Me"})
# letters and symbols that render as nothing: Hangul fillers, the Braille blank
_BLANK_CHARACTERS: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def header_text_problem(name: str, value: str) -> str | None:
    """What is wrong with a header text field, or None: too long, not NFKC, a control or
    format character, or (when not empty) no visible character at all."""
    limit = HEADER_TEXT_LIMITS[name]
    if len(value) > limit:
        return f"{name} has {len(value)} characters; at most {limit} are accepted"
    if not value:
        return None
    if value.isascii() and value.isprintable():
        # printable ASCII has no control or format character and is its own NFKC form,
        # and its one invisible character is the space: the same rules, without the
        # character database, for the texts of most requests
        return None if value.strip(" ") else f"{name} holds no visible character"
    return _text_problem(name, value)


@functools.lru_cache(maxsize=1024)
def _text_problem(name: str, value: str) -> str | None:
    """:func:`header_text_problem` of a text that is not printable ASCII (a legal basis in
    Chinese repeats from one request to the next: it is looked at once)."""
    for position, char in enumerate(value):
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return (
                f"{name} holds the control or format character U+{ord(char):04X} at position "
                f"{position + 1}: remove it"
            )
    if not unicodedata.is_normalized("NFKC", value):
        return f"{name} is not in Unicode NFKC form: normalise it before signing"
    if all(
        unicodedata.category(c) in _INVISIBLE_CATEGORIES or c in _BLANK_CHARACTERS for c in value
    ):
        return f"{name} holds no visible character"
    return None


def clipped_header(header: exchange_pb2.RequestHeader) -> exchange_pb2.RequestHeader:
    """The header as a refusal's audit entry keeps it: every text within its limit, so that
    an oversized request cannot grow the ledger."""
    if (
        all(len(getattr(header, n)) <= limit for n, limit in HEADER_TEXT_LIMITS.items())
        and len(header.nonce) <= MAX_NONCE_BYTES
    ):
        return header
    clipped = exchange_pb2.RequestHeader()
    clipped.CopyFrom(header)
    for name, limit in HEADER_TEXT_LIMITS.items():
        value = getattr(header, name)
        if len(value) > limit:
            setattr(clipped, name, value[: limit - 1] + "…")
    clipped.nonce = header.nonce[:MAX_NONCE_BYTES]
    return clipped


@dataclass(frozen=True)
class Method:
    """A signed method of the ``CreditExchange`` service."""

    name: str
    payload_type: str  # of the request envelope
    request: type[Any]  # the request message
    kind: audit_pb2.Kind  # its audit entries' kind
    mode: Mode  # what the policy is asked: full records, or hit / no-hit
    batch: bool  # many subjects (subject_ids) rather than one (subject_id)

    def subjects(self, request: Any) -> list[str]:
        """The subjects a request of this method asks about."""
        return list(request.subject_ids) if self.batch else [request.subject_id]

    def request_for(
        self, header: exchange_pb2.RequestHeader, subjects: Sequence[str], themes: Sequence[str]
    ) -> Any:
        """A request of this method about ``subjects`` (one, unless it is a batch)."""
        if self.batch:
            return self.request(header=header, subject_ids=subjects, themes=themes)
        (subject,) = subjects
        return self.request(header=header, subject_id=subject, themes=themes)


METHODS: Final[Mapping[str, Method]] = {
    m.name: m
    for m in (
        Method(
            "Query",
            QUERY_REQUEST,
            exchange_pb2.QueryRequest,
            audit_pb2.QUERY,
            Mode.FULL,
            batch=False,
        ),
        Method(
            "Check",
            CHECK_REQUEST,
            exchange_pb2.CheckRequest,
            audit_pb2.CHECK,
            Mode.CHECK,
            batch=False,
        ),
        Method(
            "BatchCheck",
            BATCH_CHECK_REQUEST,
            exchange_pb2.BatchCheckRequest,
            audit_pb2.BATCH_CHECK,
            Mode.CHECK,
            batch=True,
        ),
    )
}


def call_entry(
    *,
    direction: audit_pb2.Direction,
    method: Method,
    requester: str,
    responder: str,
    header: exchange_pb2.RequestHeader | None,
    request_digest: bytes,
    subject_hmacs: Iterable[bytes],
    themes_asked: Iterable[str],
    **known: Any,
) -> audit_pb2.AuditEntry:
    """The audit entry of a call, with what both sides know of it.

    The subjects are keyed HMACs (``ledger.entries.subject_hmac``), never in
    clear: one for a query or a check, every one of them for a batch. ``known``
    are the other fields of the entry that its side knows (the decision, the
    outcome, the receipts); the caller encodes it with ``ledger.entries.encode``.
    The entry's time is when it is built.
    """
    header = header or exchange_pb2.RequestHeader()
    entry = audit_pb2.AuditEntry(
        time_unix_micros=now_us(),
        requester=requester,
        responder=responder,
        direction=direction,
        kind=method.kind,
        nonce=header.nonce,
        request_digest=request_digest,
        purpose=header.purpose,
        legal_basis=header.legal_basis,
        case_reference=header.case_reference,
        officer=header.officer,
        partner=header.partner,
        themes_asked=list(themes_asked),
        **known,
    )
    hmacs = list(subject_hmacs)
    if method.batch:
        entry.subject_hmacs.extend(hmacs)
    elif hmacs:
        entry.subject_hmac = hmacs[0]
    if hmacs and not entry.subject_count:
        entry.subject_count = len(hmacs)
    return entry


def subject_tag(answer_key: bytes, subject_id: str) -> bytes:
    """Which subject a subject answer is about, for the requester only: masked ids of two
    people can coincide, their tags under the request's secret answer key do not."""
    return hmac.new(answer_key, subject_id.encode(), hashlib.sha256).digest()


def subject_hmacs(key: bytes, subjects: Iterable[str]) -> list[bytes]:
    """The subjects of a call as the audit ledger holds them."""
    return [subject_hmac(key, s) for s in subjects]


def refusal_of(metadata: Any) -> exchange_pb2.Envelope | None:
    """A refusal's signed envelope, from a call's trailing metadata (None if absent or
    not an envelope)."""
    for key, value in metadata or ():
        if key == REFUSAL_TRAILER and isinstance(value, bytes):
            envelope = exchange_pb2.Envelope()
            try:
                envelope.ParseFromString(value)
            except Exception:
                return None
            return envelope
    return None


def leaf_index_of(metadata: Any) -> int | None:
    """A refusal's audit entry index, from a call's trailing metadata (None if absent)."""
    for key, value in metadata or ():
        if key == LEAF_INDEX_TRAILER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


# --- statuses -----------------------------------------------------------------------

_CODES: Final = {code.name: code for code in grpc.StatusCode}

# Which status an error is answered with, most specific class first.
_STATUS_OF_ERROR: Final[tuple[tuple[type[CreditExchangeError], str], ...]] = (
    (RevocationListExpired, "FAILED_PRECONDITION"),  # this node's own list is stale
    (CertificateError, "UNAUTHENTICATED"),
    (EnvelopeError, "UNAUTHENTICATED"),
    (InvalidIdentifier, "INVALID_ARGUMENT"),
    (LedgerError, "OUT_OF_RANGE"),  # an index or size outside the log
    (CreditExchangeError, "FAILED_PRECONDITION"),  # this node cannot answer as it stands
)


def status_of(error: CreditExchangeError) -> str:
    """The gRPC status name a provider answers ``error`` with."""
    if isinstance(error, Refused):
        return error.status
    return next(status for kind, status in _STATUS_OF_ERROR if isinstance(error, kind))


def grpc_code(status: str) -> grpc.StatusCode:
    """The gRPC code of a status name (``PERMISSION_DENIED``…): the names are gRPC's."""
    return _CODES[status]
