"""The subscriber's side of a change feed: verify each batch, apply it with its cursor.

A member the memorandum lets sync a theme of another member's feed (customs data
above all) keeps a *cursor* per feed (``sync_cursors``): the size and root of the
feed's tree it verified, the publisher's signed checkpoint that vouches for them,
and the tree's frontier. A batch from the publisher is taken only when
:func:`check_batch` finds, in this order:

1. its checkpoint signed by a key the memorandum lists for the publisher, under
   the feed's origin ``credit-exchange/<federation>/<publisher>/feed/<theme>``;
2. the batch of this publisher's feed of this theme;
3. its first change right after the cursor (before it: a replay; after it: a gap);
4. the checkpoint's size the cursor's plus the number of changes;
5. the checkpoint's tree an extension of the cursor's (RFC 9162 consistency proof);
   a proof that fails means the publisher signed two trees no one append-only log
   can hold: its **history was rewritten**;
6. the cursor's frontier, extended with the leaf hashes of the changes, giving the
   checkpoint's root: every change is there, unaltered, in order, none added or
   left out;
7. every change decoding, of this publisher and theme, and sane (record key,
   subject identifier with its check character, dates, fields as a JSON object).

Invariants:

* **Nothing unverified is applied.** A refused batch writes nothing but the
  refusal: the cursor's ``last_error``, an alarm (``credit_node_sync_alarms_total``,
  a WARNING log line, a LOCAL ``SYNC`` ledger entry with outcome ``ALARM``), raised
  once per distinct refusal; the batch is asked for again later.
* **A rewritten history stops the feed**: both signed checkpoints are kept in the
  alarm's entry as evidence, and the feed is not synced again until the operator,
  having settled it with the publisher, resets it (:func:`reset_feed`,
  ``credit-node sync reset``), which drops the feed's copy and cursor so that the
  next sync starts over from the publisher's present history.
* **A batch, its records and its cursor commit together**, with the ledger entry
  that records the batch (:func:`apply_write` is a side write of that entry): a
  crash at any moment leaves the copy at a verified cursor, and the next sync
  resumes from it without loss or duplication.
* **Applying is idempotent.** The cursor moves only from the size the batch was
  verified against; when it has moved already, the batch writes nothing. A record's
  state is replaced only by a later leaf of the feed.
* **Synced records are kept apart** from the city's own (``synced_records``), marked
  with the member they came from; a removal or an ended publicity at the source
  deletes the copy, a correction or a repair replaces it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Dialect, Engine, and_, bindparam, delete, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from creditexchange.clock import CST, china_today, now_us
from creditexchange.errors import (
    AnswerRejected,
    CreditExchangeError,
    DatabaseError,
    InvalidIdentifier,
    NoteError,
    ProofError,
    QueryRefused,
    excerpt,
)
from creditexchange.identifiers import validate_subject_id
from creditexchange.node.database.driver import Prepared, sql_date
from creditexchange.node.database.models import SYNC_CURSORS, SYNCED_RECORDS
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.federation import FederationView
from creditexchange.node.ledger import Ledger, SideWrite, merkle
from creditexchange.node.ledger.entries import encode
from creditexchange.node.ledger.note import Checkpoint, Verifier, key_id, open_note
from creditexchange.node.sync.feed import feed_origin
from creditexchange.node.sync.service import MAX_PAGE_CHANGES
from creditexchange.subjects import SUBJECT_TYPES
from creditexchange.v1 import audit_pb2, sync_pb2, sync_pb2_grpc

__all__ = [
    "CAUGHT_UP",
    "REFUSED",
    "STOPPED",
    "UNREACHABLE",
    "Alarm",
    "CursorState",
    "FeedResult",
    "FeedSource",
    "FeedStatus",
    "FeedTrust",
    "Refusal",
    "Subscriber",
    "SyncMetrics",
    "VerifiedBatch",
    "apply_write",
    "batch_entry",
    "check_batch",
    "frontier_bytes",
    "frontier_from_bytes",
    "read_cursor",
    "reset_feed",
    "sync_status",
    "verify_batch",
]

log = logging.getLogger("node.sync")

FORMAT_VERSION: Final = 1
"""The ``FeedChange.format_version`` this node reads."""

STOPPED_MARK: Final = "stopped: "
"""How a stopped feed's ``last_error`` begins: nothing syncs it until it is reset."""

# outcomes of syncing one feed
CAUGHT_UP: Final = "caught-up"
REFUSED: Final = "refused"
STOPPED: Final = "stopped"
UNREACHABLE: Final = "unreachable"


class Alarm:
    """The kinds of refused batch, as alarms are labelled (metrics, ledger entries)."""

    SIGNATURE: Final = "signature"  # checkpoint not signed by the publisher's memorandum key
    FEED: Final = "feed"  # a batch of another publisher or theme than asked
    REPLAY: Final = "replay"  # starts before the cursor
    GAP: Final = "gap"  # starts after the cursor
    SIZE: Final = "size"  # checkpoint size is not start + number of changes
    REWRITTEN: Final = "rewritten"  # not an extension of the checkpoint applied before
    LEAVES: Final = "leaves"  # the changes do not hash to the signed root
    CHANGE: Final = "change"  # a change that does not decode or is not sane


_UPSERT_KINDS: Final = frozenset({sync_pb2.NEW, sync_pb2.CORRECTION, sync_pb2.REPAIR})
_DELETE_KINDS: Final = frozenset({sync_pb2.REMOVAL, sync_pb2.PUBLICITY_ENDED})
_MAX_FIELDS_JSON: Final = 1 << 20  # a record's fields: long case facts, well within a page
_MAX_ERROR_CHARS: Final = 4000  # of a last_error kept
_MAX_HEAD: Final = 2**62  # the largest head size taken from a publisher (a column holds 2**63)
_CLOCK_SLACK_US: Final = 300_000_000
_LIMITS: Final = {  # column widths of synced_records
    "record_key": 128,
    "subject_name": 256,
    "source_department": 64,
    "status": 16,
}


_EMPTY_FRONTIER: Final = merkle.Frontier(0, ())


# --- the cursor ------------------------------------------------------------------------


def frontier_bytes(frontier: merkle.Frontier) -> bytes:
    """A frontier as the ``frontier`` column keeps it: its hashes, largest subtree first
    (its size is the cursor's ``size``)."""
    return b"".join(frontier.hashes)


def frontier_from_bytes(size: int, raw: bytes) -> merkle.Frontier:
    """The frontier of a tree of ``size`` leaves from :func:`frontier_bytes`;
    ``ValueError`` when ``raw`` holds the wrong number of hashes."""
    step = merkle.HASH_SIZE
    if len(raw) != step * size.bit_count():
        raise ValueError(
            f"a frontier of {size} leaves is {size.bit_count()} hashes "
            f"({step * size.bit_count()} bytes), found {len(raw)} bytes"
        )
    return merkle.Frontier(size, tuple(raw[i : i + step] for i in range(0, len(raw), step)))


@dataclass(frozen=True)
class CursorState:
    """Where this node stands in one publisher's feed of one theme."""

    publisher: str
    theme: str
    size: int = 0
    root_hash: bytes = merkle.EMPTY_ROOT
    checkpoint: str = ""  # the publisher's signed note for (size, root); "" at size 0
    frontier: merkle.Frontier = _EMPTY_FRONTIER
    applied_us: int = 0
    head_size: int = 0  # the publisher's largest size seen
    head_us: int = 0  # the newest change time seen
    last_error: str = ""
    last_error_us: int = 0

    @property
    def stopped(self) -> bool:
        """A rewritten history was found: nothing syncs this feed until it is reset."""
        return self.last_error.startswith(STOPPED_MARK)


@dataclass(frozen=True)
class VerifiedBatch:
    """A batch that passed every check of :func:`check_batch`, ready to apply."""

    publisher: str
    theme: str
    start: int  # = the cursor's size it was verified against
    previous_root: bytes
    checkpoint: str  # the signed note of the new size
    root_hash: bytes
    frontier: merkle.Frontier  # the cursor's frontier extended with the changes
    changes: tuple[sync_pb2.FeedChange, ...]
    head_size: int
    head_us: int

    @property
    def end(self) -> int:
        return self.start + len(self.changes)


@dataclass(frozen=True)
class Refusal:
    """Why a batch was refused: an :class:`Alarm` kind and the error, which says what is
    wrong. ``stops`` the feed when the publisher's history was rewritten."""

    kind: str
    error: CreditExchangeError

    @property
    def stops(self) -> bool:
        return self.kind == Alarm.REWRITTEN


# --- verifying -------------------------------------------------------------------------


def check_batch(
    cursor: CursorState, batch: sync_pb2.FeedBatch, publisher_keys: Iterable[bytes], origin: str
) -> VerifiedBatch | Refusal:
    """Verify ``batch`` against ``cursor`` (pure: no I/O). ``publisher_keys`` are the
    Ed25519 public keys the memorandum lists for the publisher, ``origin`` the feed's
    (``feed.feed_origin``). The checks and their order are the module's."""
    feed = f"{cursor.publisher}'s {cursor.theme} feed"
    verifiers = [Verifier(origin, key_id(origin, bytes(k)), bytes(k)) for k in publisher_keys]
    if not verifiers:
        return Refusal(
            Alarm.SIGNATURE,
            NoteError(f"the memorandum lists no key of {cursor.publisher} to verify {feed} with"),
        )
    try:
        text, _ = open_note(batch.checkpoint, verifiers)
        checkpoint = Checkpoint.parse(text)
    except NoteError as exc:
        return Refusal(Alarm.SIGNATURE, NoteError(f"the checkpoint of {feed} is refused: {exc}"))
    if checkpoint.origin != origin:
        return Refusal(
            Alarm.SIGNATURE,
            NoteError(
                f"the checkpoint of {feed} is of {excerpt(checkpoint.origin)}, not {origin!r}"
            ),
        )
    if batch.publisher != cursor.publisher or batch.theme != cursor.theme:
        return Refusal(
            Alarm.FEED,
            AnswerRejected(
                f"asked for {feed}, the batch says it is {excerpt(batch.publisher)}'s "
                f"{excerpt(batch.theme)} feed"
            ),
        )
    if batch.start != cursor.size:
        kind, what = (
            (Alarm.REPLAY, "a replay of changes already applied")
            if batch.start < cursor.size
            else (Alarm.GAP, f"a gap: changes {cursor.size}-{batch.start - 1} are missing")
        )
        return Refusal(
            kind,
            AnswerRejected(
                f"a batch of {feed} starting at change {batch.start} after this node applied "
                f"{cursor.size}: {what}"
            ),
        )
    count = len(batch.changes)
    if checkpoint.size != batch.start + count:
        return Refusal(
            Alarm.SIZE,
            AnswerRejected(
                f"a batch of {feed} holds changes {batch.start}-{batch.start + count - 1} but its "
                f"checkpoint is of {checkpoint.size} changes, not {batch.start + count}"
            ),
        )
    if cursor.size:
        try:
            merkle.verify_consistency(
                cursor.size,
                checkpoint.size,
                cursor.root_hash,
                checkpoint.root_hash,
                list(batch.consistency),
            )
        except ProofError as exc:
            return Refusal(
                Alarm.REWRITTEN,
                ProofError(
                    f"{cursor.publisher} signed a checkpoint of {checkpoint.size} changes of its "
                    f"{cursor.theme} feed that does not extend the one of {cursor.size} it signed "
                    f"before ({exc}): its history was rewritten"
                ),
            )
    leaves = [merkle.leaf_hash(change) for change in batch.changes]
    frontier, _ = merkle.extend(cursor.frontier, leaves)
    if frontier.root() != checkpoint.root_hash:
        return Refusal(
            Alarm.LEAVES,
            ProofError(
                f"changes {batch.start}-{batch.start + count - 1} of {feed} do not hash to the "
                f"root {cursor.publisher} signed for {checkpoint.size} changes: a change was "
                "altered, reordered, added or left out"
            ),
        )
    changes: list[sync_pb2.FeedChange] = []
    newest = cursor.head_us
    latest = now_us() + _CLOCK_SLACK_US  # a change time from the future hides no lag
    for index, raw in enumerate(batch.changes, start=batch.start):
        try:
            change = sync_pb2.FeedChange.FromString(raw)
        except DecodeError:
            problem: str | None = "it is not a FeedChange message"
        else:
            problem = _change_problem(change, cursor.publisher, cursor.theme)
        if problem is not None:
            return Refusal(Alarm.CHANGE, AnswerRejected(f"change {index} of {feed}: {problem}"))
        changes.append(change)
        newest = max(newest, min(change.changed_unix_micros, latest))
    return VerifiedBatch(
        publisher=cursor.publisher,
        theme=cursor.theme,
        start=batch.start,
        previous_root=cursor.root_hash,
        checkpoint=batch.checkpoint,
        root_hash=checkpoint.root_hash,
        frontier=frontier,
        changes=tuple(changes),
        # the publisher's own word for its size (unsigned, for the lag figures only, bounded)
        head_size=max(cursor.head_size, checkpoint.size, min(batch.head_size, _MAX_HEAD)),
        head_us=newest,
    )


def verify_batch(
    cursor: CursorState, batch: sync_pb2.FeedBatch, publisher_keys: Iterable[bytes], origin: str
) -> VerifiedBatch:
    """:func:`check_batch`, raising the refusal's error (``NoteError``, ``ProofError`` or
    ``AnswerRejected``, saying what is wrong) instead of returning it."""
    checked = check_batch(cursor, batch, publisher_keys, origin)
    if isinstance(checked, Refusal):
        raise checked.error
    return checked


def _text_problem(name: str, value: str, *, required: bool) -> str | None:
    limit = _LIMITS.get(name)
    if required and not value.strip():
        return f"its {name} is empty"
    if limit is not None and len(value) > limit:
        return f"its {name} has {len(value)} characters, at most {limit} are kept"
    if not value.isprintable():
        return f"its {name} {excerpt(value)} holds control or formatting characters"
    return None


def _change_problem(change: sync_pb2.FeedChange, publisher: str, theme: str) -> str | None:
    """What is wrong with one decoded change, or None (messages never quote an identifier)."""
    if change.format_version != FORMAT_VERSION:
        return f"format version {change.format_version}, this node reads {FORMAT_VERSION}"
    if change.publisher != publisher or change.theme != theme:
        return (
            f"it is a change of {excerpt(change.publisher)}'s {excerpt(change.theme)} feed, "
            f"not of {publisher}'s {theme} feed"
        )
    if change.kind not in _UPSERT_KINDS and change.kind not in _DELETE_KINDS:
        return f"unknown change kind {change.kind}"
    problem = _text_problem("record_key", change.record_key, required=True)
    if problem is not None:
        return problem
    if change.changed_unix_micros <= 0:
        return "it carries no change time"
    if change.kind in _DELETE_KINDS:
        return None
    if change.version < 1:
        return f"record version {change.version}; versions count from 1"
    if change.subject_type not in SUBJECT_TYPES:
        return f"unknown subject type {excerpt(change.subject_type)}"
    try:
        canonical = validate_subject_id(change.subject_id, change.subject_type)
    except InvalidIdentifier as exc:
        return f"its subject identifier is invalid ({exc})"
    if canonical != change.subject_id:
        return "its subject identifier is not written in its canonical form"
    for name, required in (
        ("subject_name", True),
        ("source_department", True),
        ("status", True),
    ):
        problem = _text_problem(name, getattr(change, name), required=required)
        if problem is not None:
            return problem
    for name in ("decision_date", "valid_until", "publicity_end"):
        value = getattr(change, name)
        if value:
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                return f"its {name} {excerpt(value)} is not an ISO date"
    if len(change.fields_json) > _MAX_FIELDS_JSON:
        return f"its fields are {len(change.fields_json)} characters, over {_MAX_FIELDS_JSON}"
    try:
        fields = json.loads(change.fields_json)
    except ValueError:
        return "its fields are not JSON"
    if not isinstance(fields, dict):
        return "its fields are not a JSON object"
    return None


# --- applying --------------------------------------------------------------------------


def _upsert(
    table: Any, keys: tuple[str, ...], where: Callable[[Any], Any], extra: tuple[str, ...] = ()
) -> Prepared:
    """Insert a row, or replace the one with the same ``keys`` when ``where(excluded)``
    (whose own parameters are ``extra``)."""
    columns = tuple(c.name for c in table.columns)

    def build(dialect: str) -> ClauseElement:
        stmt = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        stmt = stmt.values({name: bindparam(name) for name in columns})
        replace = {name: stmt.excluded[name] for name in columns if name not in keys}
        upsert: ClauseElement = stmt.on_conflict_do_update(
            index_elements=list(keys), set_=replace, where=where(stmt.excluded)
        )
        return upsert

    return Prepared(build, row=(*columns, *extra))


_RECORD_COLUMNS: Final = tuple(c.name for c in SYNCED_RECORDS.columns)
_CURSOR_COLUMNS: Final = tuple(c.name for c in SYNC_CURSORS.columns)
_PUT_RECORD = _upsert(
    SYNCED_RECORDS,
    ("origin", "theme", "record_key"),
    lambda new: SYNCED_RECORDS.c.feed_idx < new.feed_idx,
)
_DROP_RECORD = Prepared(
    delete(SYNCED_RECORDS).where(
        SYNCED_RECORDS.c.origin == bindparam("origin"),
        SYNCED_RECORDS.c.theme == bindparam("theme"),
        SYNCED_RECORDS.c.record_key == bindparam("record_key"),
        SYNCED_RECORDS.c.feed_idx < bindparam("feed_idx"),
    ),
    row=("origin", "theme", "record_key", "feed_idx"),
)


_NOT_STOPPED = SYNC_CURSORS.c.last_error.not_like(bindparam("stop_like"))
_AS_VERIFIED = and_(  # the cursor a batch was verified against, of a feed not stopped
    SYNC_CURSORS.c.publisher == bindparam("publisher"),
    SYNC_CURSORS.c.theme == bindparam("theme"),
    SYNC_CURSORS.c.size == bindparam("old_size"),
    _NOT_STOPPED,
)
# A feed's first batch (from size 0): the cursor made, or moved from 0 — never over a
# stopped feed's.
_START_CURSOR = _upsert(
    SYNC_CURSORS,
    ("publisher", "theme"),
    lambda _new: and_(SYNC_CURSORS.c.size == literal_column("0"), _NOT_STOPPED),
    extra=("stop_like",),
)
# A later batch only moves a cursor that stands where the batch was verified to start (a
# cursor reset meanwhile is gone: nothing is applied over a copy that lacks the feed's
# earlier changes) and only a feed not stopped.
_MOVE_CURSOR = Prepared(
    SYNC_CURSORS.update()
    .where(_AS_VERIFIED)
    .values(
        {name: bindparam(name) for name in _CURSOR_COLUMNS if name not in ("publisher", "theme")}
    )
)


def _put_error(*, over_stop: bool) -> Prepared:
    """Set a feed's last error (creating its cursor at size 0 if it has none); unless
    ``over_stop``, a stopped feed keeps the error that stopped it."""

    def build(dialect: str) -> ClauseElement:
        stmt = (postgresql if dialect == "postgresql" else sqlite).insert(SYNC_CURSORS)
        stmt = stmt.values({name: bindparam(name) for name in _CURSOR_COLUMNS})
        where = None if over_stop else _NOT_STOPPED
        upsert: ClauseElement = stmt.on_conflict_do_update(
            index_elements=["publisher", "theme"],
            set_={
                "last_error": stmt.excluded.last_error,
                "last_error_us": stmt.excluded.last_error_us,
            },
            where=where,
        )
        return upsert

    return Prepared(build)


_PUT_ERROR = _put_error(over_stop=False)
_PUT_STOP = _put_error(over_stop=True)
_CLEAR = Prepared(
    SYNC_CURSORS.update()
    .where(_AS_VERIFIED)
    .values(last_error="", last_error_us=0, head_size=bindparam("head_size"))
)
_DROP_CURSOR = Prepared(
    delete(SYNC_CURSORS).where(
        SYNC_CURSORS.c.publisher == bindparam("publisher"),
        SYNC_CURSORS.c.theme == bindparam("theme"),
    )
)
_DROP_FEED_RECORDS = Prepared(
    delete(SYNCED_RECORDS).where(
        SYNCED_RECORDS.c.origin == bindparam("publisher"),
        SYNCED_RECORDS.c.theme == bindparam("theme"),
    )
)


def _record_row(index: int, change: sync_pb2.FeedChange) -> tuple[Any, ...]:
    values = {
        "origin": change.publisher,
        "theme": change.theme,
        "record_key": change.record_key,
        "version": change.version,
        "subject_id": change.subject_id,
        "subject_type": change.subject_type,
        "subject_name": change.subject_name,
        "source_department": change.source_department,
        "fields": change.fields_json,
        "decision_date": sql_date(change.decision_date or None),
        "valid_until": sql_date(change.valid_until or None),
        "publicity_end": sql_date(change.publicity_end or None),
        "status": change.status,
        "feed_idx": index,
        "changed_us": change.changed_unix_micros,
    }
    return tuple(values[name] for name in _RECORD_COLUMNS)


@dataclass
class _ApplyBatch:
    """The side write of a batch's ledger entry: its records and the cursor's move.

    ``applied`` tells, after the commit, whether the cursor moved (False: the batch
    had been applied already, and nothing was written)."""

    batch: VerifiedBatch
    applied_us: int
    applied: bool = False

    def write(self, cursor: Any, dialect: Dialect) -> None:
        b = self.batch
        moved = (_START_CURSOR if b.start == 0 else _MOVE_CURSOR).execute(
            cursor,
            dialect,
            {
                "publisher": b.publisher,
                "theme": b.theme,
                "size": b.end,
                "root_hash": b.root_hash,
                "checkpoint": b.checkpoint,
                "frontier": frontier_bytes(b.frontier),
                "applied_us": self.applied_us,
                "head_size": b.head_size,
                "head_us": b.head_us,
                "last_error": "",
                "last_error_us": 0,
                "old_size": b.start,
                "stop_like": STOPPED_MARK + "%",
            },
        )
        self.applied = moved.rowcount == 1
        if not self.applied:
            return
        # Each change carries the record's whole state: its last change in the batch is
        # what applying them one by one would leave.
        last: dict[str, tuple[int, sync_pb2.FeedChange]] = {}
        for index, change in enumerate(b.changes, start=b.start):
            last[change.record_key] = (index, change)
        upserts = [_record_row(i, c) for i, c in last.values() if c.kind in _UPSERT_KINDS]
        drops = [
            (c.publisher, c.theme, c.record_key, i)
            for i, c in last.values()
            if c.kind in _DELETE_KINDS
        ]
        if upserts:
            _PUT_RECORD.executemany_rows(cursor, dialect, upserts)
        if drops:
            _DROP_RECORD.executemany_rows(cursor, dialect, drops)


def apply_write(verified: VerifiedBatch, applied_us: int | None = None) -> SideWrite:
    """The side write that applies ``verified``: in the transaction of its ledger entry
    (``Ledger.append(batch_entry(...), [apply_write(verified)])``), the feed's records
    upserted or deleted and the cursor moved, or nothing when the cursor has moved
    past the batch's start already."""
    return _ApplyBatch(verified, now_us() if applied_us is None else applied_us)


def batch_entry(member_id: str, verified: VerifiedBatch, time_us: int | None = None) -> bytes:
    """The subscriber's ledger entry for an applied batch (OUTGOING, SYNC): the feed, the
    changes' range and the checkpoint they were verified against."""
    return encode(
        audit_pb2.AuditEntry(
            time_unix_micros=now_us() if time_us is None else time_us,
            requester=member_id,
            responder=verified.publisher,
            direction=audit_pb2.OUTGOING,
            kind=audit_pb2.SYNC,
            themes_asked=[verified.theme],
            themes_answered=[verified.theme],
            answer_digest=hashlib.sha256(verified.checkpoint.encode()).digest(),
            note=(
                f"{verified.theme}: applied changes {verified.start}-{verified.end - 1}; "
                f"checkpoint size {verified.end}\n{verified.checkpoint}"
            ),
            outcome=audit_pb2.Outcome(status="OK"),
        )
    )


@dataclass(frozen=True)
class _ErrorWrite:
    """Set a feed's ``last_error``; a stopping error overrides any other."""

    publisher: str
    theme: str
    message: str
    at_us: int
    stops: bool = False

    def write(self, cursor: Any, dialect: Dialect) -> None:
        values = {
            "publisher": self.publisher,
            "theme": self.theme,
            "size": 0,
            "root_hash": merkle.EMPTY_ROOT,
            "checkpoint": "",
            "frontier": b"",
            "applied_us": 0,
            "head_size": 0,
            "head_us": 0,
            "last_error": self.message,
            "last_error_us": self.at_us,
            "stop_like": STOPPED_MARK + "%",
        }
        (_PUT_STOP if self.stops else _PUT_ERROR).execute(cursor, dialect, values)


@dataclass(frozen=True)
class _ResetWrite:
    publisher: str
    theme: str

    def write(self, cursor: Any, dialect: Dialect) -> None:
        values = {"publisher": self.publisher, "theme": self.theme}
        _DROP_FEED_RECORDS.execute(cursor, dialect, values)
        _DROP_CURSOR.execute(cursor, dialect, values)


def _run_write(engine: Engine, write: SideWrite) -> None:
    """A write of this module's own, outside any ledger entry, in a transaction of its own."""
    with engine.begin() as conn:
        cursor = conn.connection.cursor()
        try:
            write.write(cursor, engine.dialect)
        finally:
            cursor.close()


# --- reading ---------------------------------------------------------------------------


def _cursor_of(row: Any) -> CursorState:
    m = row._mapping
    size = int(m["size"])
    where = f"the stored cursor of {m['publisher']}'s {m['theme']} feed"
    try:
        frontier = frontier_from_bytes(size, bytes(m["frontier"]))
    except ValueError as exc:
        raise DatabaseError(f"{where} is damaged: {exc}") from None
    if frontier.root() != bytes(m["root_hash"]):
        raise DatabaseError(
            f"{where} is damaged: its frontier does not give its root; reset the feed "
            f"(credit-node sync reset --from {m['publisher']} --theme {m['theme']})"
        )
    return CursorState(
        publisher=m["publisher"],
        theme=m["theme"],
        size=size,
        root_hash=bytes(m["root_hash"]),
        checkpoint=m["checkpoint"],
        frontier=frontier,
        applied_us=int(m["applied_us"]),
        head_size=int(m["head_size"]),
        head_us=int(m["head_us"]),
        last_error=m["last_error"],
        last_error_us=int(m["last_error_us"]),
    )


def read_cursor(engine: Engine, publisher: str, theme: str) -> CursorState:
    """The feed's cursor as committed; at size 0 when the feed was never synced.
    ``DatabaseError`` when the stored frontier does not give the stored root."""
    with engine.connect() as conn:
        row = conn.execute(
            select(SYNC_CURSORS).where(
                SYNC_CURSORS.c.publisher == publisher, SYNC_CURSORS.c.theme == theme
            )
        ).first()
    return CursorState(publisher, theme) if row is None else _cursor_of(row)


@dataclass(frozen=True)
class FeedStatus:
    """One feed as ``credit-node sync status`` shows it (times in µs since the epoch)."""

    publisher: str
    theme: str
    size: int
    head_size: int  # the publisher's size, as last seen
    lag_entries: int
    lag_seconds: float  # 0 when caught up with what was last seen
    records: int  # synced records held
    applied_us: int
    head_us: int
    last_error: str
    last_error_us: int
    stopped: bool

    def as_dict(self) -> dict[str, Any]:
        def china(us: int) -> str | None:
            if not us:
                return None
            return dt.datetime.fromtimestamp(us / 1e6, CST).isoformat(timespec="seconds")

        return {
            "publisher": self.publisher,
            "theme": self.theme,
            "size": self.size,
            "head_size": self.head_size,
            "lag_entries": self.lag_entries,
            "lag_seconds": round(self.lag_seconds, 3),
            "records": self.records,
            "applied": china(self.applied_us),
            "newest_change": china(self.head_us),
            "last_error": self.last_error or None,
            "last_error_at": china(self.last_error_us),
            "stopped": self.stopped,
        }


def _lag(size: int, head_size: int, head_us: int, at_us: int, *, behind: bool) -> tuple[int, float]:
    """Lag in changes (the publisher's size as last seen minus the cursor's) and in
    seconds: now minus the newest change seen, when behind (known to be, or not known
    to be caught up: ``behind``); 0 when caught up."""
    entries = max(0, head_size - size)
    if not (behind or entries) or not head_us:
        return entries, 0.0
    return entries, max(0.0, (at_us - head_us) / 1e6)


def sync_status(engine: Engine, at_us: int | None = None) -> list[FeedStatus]:
    """Every feed this node has a cursor for, by publisher and theme."""
    now = now_us() if at_us is None else at_us
    with engine.connect() as conn:
        rows = conn.execute(
            select(SYNC_CURSORS).order_by(SYNC_CURSORS.c.publisher, SYNC_CURSORS.c.theme)
        ).all()
        counts = {
            (origin, theme): int(n)
            for origin, theme, n in conn.execute(
                select(SYNCED_RECORDS.c.origin, SYNCED_RECORDS.c.theme, func.count()).group_by(
                    SYNCED_RECORDS.c.origin, SYNCED_RECORDS.c.theme
                )
            )
        }
    result = []
    for row in rows:
        m = row._mapping
        size, head_size = int(m["size"]), max(int(m["head_size"]), int(m["size"]))
        behind, seconds = _lag(
            size, head_size, int(m["head_us"]), now, behind=bool(m["last_error"])
        )
        result.append(
            FeedStatus(
                publisher=m["publisher"],
                theme=m["theme"],
                size=size,
                head_size=head_size,
                lag_entries=behind,
                lag_seconds=seconds,
                records=counts.get((m["publisher"], m["theme"]), 0),
                applied_us=int(m["applied_us"]),
                head_us=int(m["head_us"]),
                last_error=m["last_error"],
                last_error_us=int(m["last_error_us"]),
                stopped=m["last_error"].startswith(STOPPED_MARK),
            )
        )
    return result


async def reset_feed(ledger: Ledger, member_id: str, publisher: str, theme: str) -> CursorState:
    """Drop a feed's copy and cursor, recorded in the ledger (LOCAL, SYNC), so that the
    next sync starts over from the publisher's present history: what the operator does
    once a rewritten history has been settled with the publisher. Returns the cursor as
    it was."""
    was = await asyncio.to_thread(read_cursor, ledger.log.engine, publisher, theme)
    note = (
        f"{theme}: the operator reset {publisher}'s {theme} feed at {was.size} changes; "
        f"its copy was dropped and it syncs again from the start"
    )
    if was.last_error:
        note += f" (its last error: {was.last_error})"
    entry = audit_pb2.AuditEntry(
        time_unix_micros=now_us(),
        requester=member_id,
        responder=publisher,
        direction=audit_pb2.LOCAL,
        kind=audit_pb2.SYNC,
        themes_asked=[theme],
        note=note[:8000],
        outcome=audit_pb2.Outcome(status="OK", message="reset"),
    )
    await ledger.append(encode(entry), [_ResetWrite(publisher, theme)])
    return was


# --- metrics ---------------------------------------------------------------------------


@dataclass
class SyncMetrics:
    """The subscriber's metrics, on the node's registry; labels are member ids and themes."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.lag_entries = Gauge(
            "credit_node_sync_lag_entries",
            "Changes of a feed the publisher has that this node has not applied (as last seen)",
            ["publisher", "theme"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "credit_node_sync_lag_seconds",
            "Seconds since the newest change seen of a feed this node is behind on; 0 when "
            "caught up (alert when it stays high)",
            ["publisher", "theme"],
            registry=r,
        )
        self.applied = Counter(
            "credit_node_sync_applied",
            "Changes of a feed verified and applied",
            ["publisher", "theme"],
            registry=r,
        )
        self.alarms = Counter(
            "credit_node_sync_alarms",
            "Batches of a feed refused, by kind: signature, feed, replay, gap, size, "
            "rewritten (the feed stops), leaves, change",
            ["publisher", "theme", "kind"],
            registry=r,
        )

    def observe(self, cursor: CursorState, *, caught_up: bool, at_us: int) -> None:
        """Set the feed's lag gauges: zero when ``caught_up``, else as :func:`_lag` says
        of a feed not known to be caught up (mid-way, refused, unreachable)."""
        labels = (cursor.publisher, cursor.theme)
        head = max(cursor.head_size, cursor.size)
        behind, seconds = _lag(cursor.size, head, cursor.head_us, at_us, behind=not caught_up)
        self.lag_entries.labels(*labels).set(0 if caught_up else behind)
        self.lag_seconds.labels(*labels).set(0.0 if caught_up else seconds)


# --- the subscriber --------------------------------------------------------------------


class FeedSource(Protocol):
    """Where batches come from: the publisher's ``Sync`` service, or a double in tests.

    A transport failure (unreachable, cut, deadline) raises :class:`QueryRefused` with
    ``verified=False``; whatever a batch holds is for :func:`check_batch` to judge.
    """

    async def pull(self, publisher: str, request: sync_pb2.PullRequest) -> sync_pb2.FeedBatch: ...

    def follow(
        self, publisher: str, request: sync_pb2.PullRequest
    ) -> AsyncIterator[sync_pb2.FeedBatch]: ...


class FeedTrust(Protocol):
    """What the memorandum says about feeds, as the subscriber needs it."""

    def federation_name(self) -> str: ...

    def publisher_keys(self, publisher: str) -> list[bytes]: ...

    def subscriptions(self, subscriber: str, today: dt.date) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class _GrpcSource:
    """The publishers' ``Sync`` services over this node's mutual-TLS channels."""

    client: FederationClient
    timeout_s: float

    async def pull(self, publisher: str, request: sync_pb2.PullRequest) -> sync_pb2.FeedBatch:
        stub = sync_pb2_grpc.SyncStub(self.client.channel(publisher))
        try:
            batch: sync_pb2.FeedBatch = await stub.Pull(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _transport(publisher, exc) from None
        return batch

    async def follow(
        self, publisher: str, request: sync_pb2.PullRequest
    ) -> AsyncIterator[sync_pb2.FeedBatch]:
        stub = sync_pb2_grpc.SyncStub(self.client.channel(publisher))
        call = stub.Follow(request)
        try:
            async for batch in call:
                yield batch
        except grpc.aio.AioRpcError as exc:
            raise _transport(publisher, exc) from None
        finally:
            call.cancel()


def _transport(publisher: str, exc: grpc.aio.AioRpcError) -> QueryRefused:
    return QueryRefused(publisher, exc.code().name, exc.details() or "", None, verified=False)


@dataclass(frozen=True)
class _MemorandumTrust:
    view: FederationView

    def federation_name(self) -> str:
        return self.view.current().memorandum.federation

    def publisher_keys(self, publisher: str) -> list[bytes]:
        return [bytes(k) for k in self.view.current().keys.get(publisher, {}).values()]

    def subscriptions(self, subscriber: str, today: dt.date) -> list[tuple[str, str]]:
        return self.view.current().engine.subscriptions(subscriber, today)


@dataclass(frozen=True)
class FeedResult:
    """What syncing one feed did: its outcome (caught-up, refused, stopped, unreachable),
    the changes applied, the cursor's size, and what went wrong if anything did."""

    publisher: str
    theme: str
    outcome: str
    applied: int
    size: int
    detail: str = ""


class _Refused(Exception):
    """A batch was refused (internal: the alarm is raised already)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal.error))
        self.refusal = refusal


class Subscriber:
    """This node's subscriptions to the other members' feeds.

    ``await subscriber.run_once()`` brings every feed the memorandum lets this node
    sync up to the publisher's head and returns; ``await subscriber.run()`` follows
    them until cancelled, asking again after an error with a growing pause. Batches
    are verified, applied and recorded as the module says; the ``ledger`` is the
    node's running appender.
    """

    def __init__(
        self,
        member_id: str,
        ledger: Ledger,
        trust: FeedTrust,
        source: FeedSource,
        metrics: SyncMetrics | None = None,
        *,
        page: int = MAX_PAGE_CHANGES,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.member_id = member_id
        self.ledger = ledger
        self.engine = ledger.log.engine
        self.trust = trust
        self.source = source
        self.metrics = metrics
        self.page = page
        self.backoff = backoff
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    def of_client(
        cls,
        client: FederationClient,
        ledger: Ledger,
        metrics: SyncMetrics | None = None,
        **options: Any,
    ) -> Subscriber:
        """A subscriber asking through ``client``'s channels under its memorandum."""
        source = _GrpcSource(client, client.requester.timeout_s)
        trust = _MemorandumTrust(client.requester.federation)
        return cls(client.member_id, ledger, trust, source, metrics, **options)

    def feeds(
        self, publisher: str | None = None, theme: str | None = None
    ) -> list[tuple[str, str]]:
        """The feeds the memorandum lets this node sync today (China's date), narrowed to
        ``publisher`` and ``theme``; ``AnswerRejected`` when that leaves none."""
        allowed = self.trust.subscriptions(self.member_id, china_today())
        chosen = [
            (p, t)
            for p, t in allowed
            if (publisher is None or p == publisher) and (theme is None or t == theme)
        ]
        if not chosen:
            asked = " ".join(x for x in (publisher, theme) if x) or "any feed"
            listed = ", ".join(f"{p}/{t}" for p, t in allowed) or "none"
            raise AnswerRejected(
                f"the memorandum does not let {self.member_id} sync {asked} today "
                f"(it may sync: {listed})"
            )
        return chosen

    async def run_once(
        self, publisher: str | None = None, theme: str | None = None
    ) -> list[FeedResult]:
        """Catch up every feed once, all at the same time; one result per feed."""
        feeds = self.feeds(publisher, theme)
        return list(await asyncio.gather(*(self.catch_up(p, t) for p, t in feeds)))

    async def catch_up(self, publisher: str, theme: str) -> FeedResult:
        """Pull pages of one feed from its cursor until the publisher has no more.

        While a page is verified and applied the next one is already asked for (from
        where the page ends), so the publisher's reading and the network overlap this
        node's writing; a page refused, or applied by another process meanwhile, drops
        the page asked for ahead."""
        applied = 0
        ahead: asyncio.Task[sync_pb2.FeedBatch] | None = None

        def ask(from_size: int) -> asyncio.Task[sync_pb2.FeedBatch]:
            request = sync_pb2.PullRequest(theme=theme, from_size=from_size, max_changes=self.page)
            return asyncio.create_task(self.source.pull(publisher, request))

        async with self._lock(publisher, theme):
            cursor = await asyncio.to_thread(read_cursor, self.engine, publisher, theme)
            try:
                while True:
                    if cursor.stopped:
                        return FeedResult(
                            publisher, theme, STOPPED, applied, cursor.size, cursor.last_error
                        )
                    try:
                        batch = await (ahead if ahead is not None else ask(cursor.size))
                        ahead = None
                        end = batch.start + len(batch.changes)
                        if batch.changes and batch.start == cursor.size:
                            ahead = ask(end)
                        cursor, count = await self._take(cursor, batch)
                        if ahead is not None and cursor.size != end:
                            ahead.cancel()
                            ahead = None
                    except QueryRefused as exc:
                        await self._transient(cursor, str(exc))
                        return FeedResult(
                            publisher, theme, UNREACHABLE, applied, cursor.size, str(exc)
                        )
                    except _Refused as refused:
                        outcome = STOPPED if refused.refusal.stops else REFUSED
                        return FeedResult(
                            publisher, theme, outcome, applied, cursor.size, str(refused)
                        )
                    applied += count
                    if not count:
                        return FeedResult(publisher, theme, CAUGHT_UP, applied, cursor.size)
            finally:
                if ahead is not None:
                    ahead.cancel()
                    await asyncio.gather(ahead, return_exceptions=True)

    async def run(
        self,
        publisher: str | None = None,
        theme: str | None = None,
        *,
        recheck_s: float = 60.0,
    ) -> None:
        """Follow the feeds until cancelled; which feeds is asked of the memorandum again
        every ``recheck_s`` seconds (a feed it no longer lists is left)."""
        tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    wanted = set(self.feeds(publisher, theme))
                except CreditExchangeError as exc:  # none listed (yet): nothing to follow
                    log.debug("no feed to sync", extra={"data": {"error": str(exc)}})
                    wanted = set()
                for key in list(tasks):
                    task = tasks[key]
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        log.error(
                            "following a feed failed; it starts again",
                            exc_info=task.exception(),
                            extra={"data": {"publisher": key[0], "theme": key[1]}},
                        )
                    if key not in wanted or task.done():
                        tasks.pop(key).cancel()
                for key in wanted - tasks.keys():
                    tasks[key] = asyncio.create_task(self.follow(*key), name=f"sync-{key}")
                await asyncio.sleep(recheck_s)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def follow(self, publisher: str, theme: str) -> None:
        """Follow one feed until cancelled: catch up, then take each batch as it comes;
        after an error, ask again from the cursor after a pause that doubles (with
        jitter) up to the longest; a stopped feed waits for its reset."""
        low, high = self.backoff
        pause = low
        while True:
            result = await self.catch_up(publisher, theme)
            if result.outcome == CAUGHT_UP:
                pause = low
                try:  # the publisher may end the stream: then ask again after a pause
                    await self._stream(publisher, theme)
                except QueryRefused as exc:
                    cursor = await asyncio.to_thread(read_cursor, self.engine, publisher, theme)
                    await self._transient(cursor, str(exc))
                except _Refused:
                    pass
            elif result.outcome == STOPPED:
                pause = high
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(high, pause * 2)

    async def _stream(self, publisher: str, theme: str) -> None:
        async with self._lock(publisher, theme):
            cursor = await asyncio.to_thread(read_cursor, self.engine, publisher, theme)
            request = sync_pb2.PullRequest(
                theme=theme, from_size=cursor.size, max_changes=self.page
            )
            async for batch in self.source.follow(publisher, request):
                end = batch.start + len(batch.changes)
                cursor, _ = await self._take(cursor, batch)
                if batch.changes and cursor.size != end:
                    return  # the cursor moved elsewhere (a reset, another process): resume

    def _lock(self, publisher: str, theme: str) -> asyncio.Lock:
        return self._locks.setdefault((publisher, theme), asyncio.Lock())

    async def _take(
        self, cursor: CursorState, batch: sync_pb2.FeedBatch
    ) -> tuple[CursorState, int]:
        """Verify and apply one batch; the cursor after it and the changes applied.
        Raises :class:`_Refused` (the alarm raised) for a batch that does not verify."""
        feed = (cursor.publisher, cursor.theme)
        if feed not in self.trust.subscriptions(self.member_id, china_today()):
            refusal = Refusal(
                Alarm.FEED,
                AnswerRejected(
                    f"the memorandum no longer lets {self.member_id} sync {cursor.publisher}'s "
                    f"{cursor.theme} feed; the batch was not applied"
                ),
            )
            await self._transient(cursor, str(refusal.error))
            raise _Refused(refusal)
        origin = feed_origin(self.trust.federation_name(), cursor.publisher, cursor.theme)
        keys = self.trust.publisher_keys(cursor.publisher)
        checked = await asyncio.to_thread(check_batch, cursor, batch, keys, origin)
        if isinstance(checked, Refusal):
            await self._alarm(cursor, checked, batch)
            raise _Refused(checked)
        now = now_us()
        if not checked.changes:  # caught up: the publisher's head is where the cursor is
            caught = replace(cursor, head_size=cursor.size)
            if cursor.last_error or cursor.head_size != caught.head_size:
                await asyncio.to_thread(self._clear, caught)
                caught = replace(caught, last_error="", last_error_us=0)
            if self.metrics is not None:
                self.metrics.observe(caught, caught_up=True, at_us=now)
            return caught, 0
        write = _ApplyBatch(checked, now)
        receipt = await self.ledger.append(batch_entry(self.member_id, checked, now), [write])
        after = CursorState(
            publisher=cursor.publisher,
            theme=cursor.theme,
            size=checked.end,
            root_hash=checked.root_hash,
            checkpoint=checked.checkpoint,
            frontier=checked.frontier,
            applied_us=now,
            head_size=checked.head_size,
            head_us=checked.head_us,
        )
        if not write.applied:  # another process applied it first: take the cursor as stored
            after = await asyncio.to_thread(read_cursor, self.engine, after.publisher, after.theme)
        elif self.metrics is not None:
            self.metrics.applied.labels(cursor.publisher, cursor.theme).inc(len(checked.changes))
        if self.metrics is not None:
            self.metrics.observe(after, caught_up=False, at_us=now)
        log.info(
            "sync batch applied",
            extra={
                "data": {
                    "publisher": cursor.publisher,
                    "theme": cursor.theme,
                    "from": checked.start,
                    "to": checked.end,
                    "entry": receipt.index,
                    "applied": write.applied,
                }
            },
        )
        return after, len(checked.changes) if write.applied else 0

    def _clear(self, caught: CursorState) -> None:
        values = {
            "publisher": caught.publisher,
            "theme": caught.theme,
            "old_size": caught.size,
            "head_size": caught.head_size,
            "stop_like": STOPPED_MARK + "%",
        }
        with self.engine.begin() as conn:
            cursor = conn.connection.cursor()
            try:
                _CLEAR.execute(cursor, self.engine.dialect, values)
            finally:
                cursor.close()

    async def _transient(self, cursor: CursorState, message: str) -> None:
        """Note an error that is no alarm (the publisher unreachable, the stream cut)."""
        log.info(
            "sync interrupted",
            extra={
                "data": {"publisher": cursor.publisher, "theme": cursor.theme, "error": message}
            },
        )
        now = now_us()
        write = _ErrorWrite(cursor.publisher, cursor.theme, message[:_MAX_ERROR_CHARS], now)
        await asyncio.to_thread(_run_write, self.engine, write)
        if self.metrics is not None:
            self.metrics.observe(cursor, caught_up=False, at_us=now)

    async def _alarm(
        self, cursor: CursorState, refusal: Refusal, batch: sync_pb2.FeedBatch
    ) -> None:
        """Raise the alarm for a refused batch, once per distinct refusal: recorded with
        the error (and, for a rewritten history, both signed checkpoints), counted, logged."""
        message = str(refusal.error)
        if refusal.stops:
            message = (
                f"{STOPPED_MARK}{message}; the feed is stopped: settle it with "
                f"{cursor.publisher}, then run 'credit-node sync reset --from {cursor.publisher} "
                f"--theme {cursor.theme}' to drop the copy and sync the present history"
            )
        message = message[:_MAX_ERROR_CHARS]
        if self.metrics is not None:
            self.metrics.observe(cursor, caught_up=False, at_us=now_us())
        if message == cursor.last_error:
            return  # this very refusal was raised and recorded already
        note = f"{refusal.kind}: {message}"
        if refusal.stops:
            note += (
                f"\nearlier checkpoint (applied, {cursor.size} changes):\n{cursor.checkpoint}"
                f"\nlater checkpoint (refused):\n{batch.checkpoint}"
            )
        now = now_us()
        entry = audit_pb2.AuditEntry(
            time_unix_micros=now,
            requester=self.member_id,
            responder=cursor.publisher,
            direction=audit_pb2.LOCAL,
            kind=audit_pb2.SYNC,
            themes_asked=[cursor.theme],
            note=note[:32000],
            outcome=audit_pb2.Outcome(status="ALARM", message=refusal.kind),
        )
        write = _ErrorWrite(cursor.publisher, cursor.theme, message, now, refusal.stops)
        receipt = await self.ledger.append(encode(entry), [write])
        if self.metrics is not None:
            self.metrics.alarms.labels(cursor.publisher, cursor.theme, refusal.kind).inc()
        log.warning(
            "sync batch refused",
            extra={
                "data": {
                    "publisher": cursor.publisher,
                    "theme": cursor.theme,
                    "kind": refusal.kind,
                    "error": message,
                    "entry": receipt.index,
                }
            },
        )
