"""What this node knows of the other members' logs, and what they vouch for its own.

Members witness each other's audit logs (``creditexchange.node.federation.witness``):
each fetches a peer's latest checkpoint, checks it against the ones it saw before
and cosigns it (``cosignature``). This module keeps what that needs, in the node's
database (``peer_checkpoints``, ``cosignatures``, ``witness_alarms``):

* **The peers' checkpoints seen** (:class:`SeenCheckpoint`), per peer and source.
  The "witnessed" one is moved only by the witness, after it verified the peer's
  signature and the consistency with the one before (:meth:`WitnessRecords.witnessed`).
  The "receipt" one is the largest checkpoint found in the peer's receipts; it only
  grows, and it is written as a side write of the requester's own entry holding
  the receipt (:meth:`WitnessRecords.receipt_write`), so it is durable exactly when
  that entry is.
* **Cosignatures** (:class:`HeldCosignature`), the latest per role and member:
  those this node made on its peers' checkpoints and those its peers made on its
  own. A cosignature on a smaller checkpoint never replaces one on a larger.
* **Alarms** (:class:`Alarm`): a peer that showed two checkpoints that cannot both
  be true. Both signed notes are kept as evidence; an alarm is written as a side
  write of its ledger entry (:meth:`WitnessRecords.alarm_write`), so it is stored
  exactly when it is recorded.

:class:`CosignatureBook` keeps the cosignatures received on the node's latest
checkpoints in memory, so that an answer's receipt finds its checkpoint's
cosignatures without a query. It knows what this process received (and what the
database held when it was loaded). A cosignature is received only on
:func:`own_checkpoint`: one of this log's checkpoints as the log stands.

:class:`ReceiptCheckpoints` is the requester's check of every receipt's checkpoint
against the largest it has seen of that provider's log.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Engine, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from creditexchange.clock import now_us
from creditexchange.errors import LedgerError, NoteError, ProofError
from creditexchange.node.database.driver import Prepared
from creditexchange.node.database.models import COSIGNATURES, PEER_CHECKPOINTS, WITNESS_ALARMS
from creditexchange.node.ledger import merkle
from creditexchange.node.ledger.log import AuditLog, SideWrite
from creditexchange.node.ledger.note import Checkpoint, _split_note, open_note

__all__ = [
    "FORK",
    "MADE",
    "RECEIPT",
    "RECEIVED",
    "ROLLBACK",
    "WITNESSED",
    "Alarm",
    "CosignatureBook",
    "HeldCosignature",
    "ReceiptCheckpoints",
    "SeenCheckpoint",
    "WitnessRecords",
    "checkpoint_of",
    "own_checkpoint",
]

WITNESSED = "witnessed"
"""Source of a peer checkpoint verified and cosigned by this node's witness."""
RECEIPT = "receipt"
"""Source of the largest peer checkpoint found in a receipt this node was given."""
MADE = "made"
"""Role of a cosignature this node made on a peer's checkpoint."""
RECEIVED = "received"
"""Role of a cosignature a peer made on this node's checkpoint."""
FORK = "fork"
"""Alarm: two checkpoints of a peer's log that no one append-only log can both have signed."""
ROLLBACK = "rollback"
"""Alarm: a peer showed a smaller tree than one it showed before."""


@dataclass(frozen=True)
class SeenCheckpoint:
    """A peer's checkpoint as this node saw it: signed note, size, root, when."""

    peer: str
    source: str  # WITNESSED or RECEIPT
    origin: str
    size: int
    root_hash: bytes
    note: str  # exactly as the peer signed it
    seen_us: int

    @classmethod
    def of(cls, peer: str, source: str, checkpoint: Checkpoint, note: str) -> SeenCheckpoint:
        """``checkpoint`` (of the signed ``note``) of ``peer``, seen now through ``source``."""
        return cls(
            peer, source, checkpoint.origin, checkpoint.size, checkpoint.root_hash, note, now_us()
        )


@dataclass(frozen=True)
class HeldCosignature:
    """A cosignature line on a checkpoint, held by this node."""

    role: str  # MADE or RECEIVED
    member: str  # MADE: the peer whose log; RECEIVED: the witness
    origin: str
    size: int
    root_hash: bytes
    note: str  # the checkpoint cosigned, as its log signed it
    line: str
    timestamp: int  # the cosignature's own time, POSIX seconds
    recorded_us: int


@dataclass(frozen=True)
class Alarm:
    """A fork or a rollback of a peer's log, with both checkpoints as evidence."""

    peer: str
    kind: str  # FORK or ROLLBACK
    detail: str
    earlier_note: str
    later_note: str
    raised_us: int
    id: int = 0  # 0 until stored
    resolved_us: int | None = None  # when the operator reset the witness's view of the peer
    resolution: str = ""  # and why


def _upsert(table: Table, keys: tuple[str, ...], grow_only: bool) -> Prepared:
    """Insert a row, or replace the one with the same ``keys``. With ``grow_only`` a peer
    checkpoint is replaced only by a larger one, a cosignature only by one on a checkpoint
    at least as large (a later cosignature of the same checkpoint replaces the earlier)."""
    columns = [c.name for c in table.columns]

    def build(dialect: str) -> ClauseElement:
        stmt = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        stmt = stmt.values({name: bindparam(name) for name in columns})
        replace = {name: stmt.excluded[name] for name in columns if name not in keys}
        where = None
        if grow_only:
            where = (
                table.c.size <= stmt.excluded.size
                if table is COSIGNATURES
                else table.c.size < stmt.excluded.size
            )
        upsert: ClauseElement = stmt.on_conflict_do_update(
            index_elements=list(keys), set_=replace, where=where
        )
        return upsert

    return Prepared(build)


_PUT_WITNESSED = _upsert(PEER_CHECKPOINTS, ("peer", "source"), grow_only=False)
_GROW_RECEIPT = _upsert(PEER_CHECKPOINTS, ("peer", "source"), grow_only=True)
_GROW_COSIGNATURE = _upsert(COSIGNATURES, ("role", "member"), grow_only=True)
_INSERT_ALARM = Prepared(
    insert(WITNESS_ALARMS).values(
        {
            c.name: bindparam(c.name)
            for c in WITNESS_ALARMS.columns
            if c.name not in ("id", "resolved_us", "resolution")
        }
    )
)
_FORGET_PEER = Prepared(
    delete(PEER_CHECKPOINTS).where(PEER_CHECKPOINTS.c.peer == bindparam("peer"))
)
_RESOLVE_ALARMS = Prepared(
    update(WITNESS_ALARMS)
    .where(WITNESS_ALARMS.c.peer == bindparam("peer"), WITNESS_ALARMS.c.resolved_us.is_(None))
    .values(resolved_us=bindparam("now"), resolution=bindparam("reason"))
)


@dataclass(frozen=True)
class _Writes:
    """Several side writes made as one."""

    writes: tuple[SideWrite, ...]

    def write(self, cursor: Any, dialect: Dialect) -> None:
        for w in self.writes:
            w.write(cursor, dialect)


def _seen_values(seen: SeenCheckpoint) -> dict[str, Any]:
    return {
        "peer": seen.peer,
        "source": seen.source,
        "origin": seen.origin,
        "size": seen.size,
        "root_hash": seen.root_hash,
        "note": seen.note,
        "seen_us": seen.seen_us,
    }


def _cosignature_values(held: HeldCosignature) -> dict[str, Any]:
    return {
        "role": held.role,
        "member": held.member,
        "origin": held.origin,
        "size": held.size,
        "root_hash": held.root_hash,
        "note": held.note,
        "line": held.line,
        "timestamp": held.timestamp,
        "recorded_us": held.recorded_us,
    }


@dataclass(frozen=True)
class _Write:
    """A side write of the ledger: one prepared statement with its values."""

    statement: Prepared
    values: dict[str, Any]

    def write(self, cursor: Any, dialect: Dialect) -> None:
        self.statement.execute(cursor, dialect, self.values)


class WitnessRecords:
    """The witnessing tables of one node's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _run(self, *writes: _Write) -> None:
        with self.engine.begin() as conn:
            cursor = conn.connection.cursor()
            try:
                for w in writes:
                    w.write(cursor, conn.dialect)
            finally:
                cursor.close()

    # --- the peers' checkpoints ---------------------------------------------------

    def seen(self, peer: str, source: str) -> SeenCheckpoint | None:
        c = PEER_CHECKPOINTS.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(PEER_CHECKPOINTS).where(c.peer == peer, c.source == source)
            ).first()
        return None if row is None else _seen(row)

    def all_seen(self) -> list[SeenCheckpoint]:
        c = PEER_CHECKPOINTS.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(PEER_CHECKPOINTS).order_by(c.peer, c.source)).all()
        return [_seen(row) for row in rows]

    def witnessed(self, seen: SeenCheckpoint, made: HeldCosignature) -> None:
        """The witness verified ``seen`` and cosigned it (``made``): both, in one transaction."""
        self._run(
            _Write(_PUT_WITNESSED, _seen_values(seen)),
            _Write(_GROW_COSIGNATURE, _cosignature_values(made)),
        )

    def receipt_write(self, seen: SeenCheckpoint) -> SideWrite:
        """The side write recording ``seen`` as the largest checkpoint of its peer found in a
        receipt, unless a larger one is recorded already."""
        return _Write(_GROW_RECEIPT, _seen_values(seen))

    # --- cosignatures ---------------------------------------------------------------

    def keep(self, held: HeldCosignature) -> None:
        """Keep ``held`` as its member's latest cosignature in its role, unless one on a
        larger checkpoint is kept already."""
        self._run(_Write(_GROW_COSIGNATURE, _cosignature_values(held)))

    def cosignatures(self, role: str) -> list[HeldCosignature]:
        c = COSIGNATURES.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(COSIGNATURES).where(c.role == role).order_by(c.member)).all()
        return [_held(row) for row in rows]

    # --- alarms ---------------------------------------------------------------------

    def alarm_write(self, alarm: Alarm) -> SideWrite:
        """The side write storing ``alarm``, made in the transaction of its ledger entry."""
        return _Write(
            _INSERT_ALARM,
            {
                "peer": alarm.peer,
                "kind": alarm.kind,
                "detail": alarm.detail,
                "earlier_note": alarm.earlier_note,
                "later_note": alarm.later_note,
                "raised_us": alarm.raised_us,
            },
        )

    def reset_write(self, peer: str, reason: str, now: int) -> SideWrite:
        """The side write resetting what this node's witness knows of ``peer``: the
        checkpoints seen of it are forgotten (the next round starts from the peer's
        checkpoint then, as on first contact) and its standing alarms resolved, with the
        operator's ``reason``; made in the transaction of the reset's ledger entry."""
        values = {"peer": peer, "now": now, "reason": reason}
        return _Writes((_Write(_FORGET_PEER, values), _Write(_RESOLVE_ALARMS, values)))

    def alarms(self, peer: str | None = None) -> list[Alarm]:
        c = WITNESS_ALARMS.c
        query = select(WITNESS_ALARMS).order_by(c.id)
        if peer is not None:
            query = query.where(c.peer == peer)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            Alarm(
                peer=row.peer,
                kind=row.kind,
                detail=row.detail,
                earlier_note=row.earlier_note,
                later_note=row.later_note,
                raised_us=int(row.raised_us),
                id=int(row.id),
                resolved_us=None if row.resolved_us is None else int(row.resolved_us),
                resolution=row.resolution or "",
            )
            for row in rows
        ]


def _seen(row: Any) -> SeenCheckpoint:
    return SeenCheckpoint(
        peer=row.peer,
        source=row.source,
        origin=row.origin,
        size=int(row.size),
        root_hash=bytes(row.root_hash),
        note=row.note,
        seen_us=int(row.seen_us),
    )


def _held(row: Any) -> HeldCosignature:
    return HeldCosignature(
        role=row.role,
        member=row.member,
        origin=row.origin,
        size=int(row.size),
        root_hash=bytes(row.root_hash),
        note=row.note,
        line=row.line,
        timestamp=int(row.timestamp),
        recorded_us=int(row.recorded_us),
    )


class CosignatureBook:
    """The cosignatures received on this node's latest checkpoints, by checkpoint note.

    :meth:`lines_for` is a dictionary lookup, for every answer's receipt. It holds the
    notes of the ``keep`` largest checkpoints cosigned; :meth:`keep` stores a
    cosignature durably, then here.
    """

    def __init__(self, records: WitnessRecords, keep: int = 8) -> None:
        self.records = records
        self.limit = keep
        self._lock = threading.Lock()
        self._by_note: dict[str, dict[str, str]] = {}  # note -> witness -> line
        self._sizes: dict[str, int] = {}
        self._loaded = False

    def load(self) -> None:
        """Read the cosignatures received so far (once; later calls do nothing)."""
        if self._loaded:
            return
        held = self.records.cosignatures(RECEIVED)
        with self._lock:
            for h in held:
                self._remember(h)
            self._loaded = True

    def keep(self, held: HeldCosignature) -> None:
        """Store a cosignature received on this node's checkpoint, then hold it here."""
        self.records.keep(held)
        with self._lock:
            self._remember(held)

    def _remember(self, held: HeldCosignature) -> None:
        self._by_note.setdefault(held.note, {})[held.member] = held.line
        self._sizes[held.note] = held.size
        if len(self._by_note) > self.limit:
            smallest = min(self._sizes, key=self._sizes.__getitem__)
            del self._by_note[smallest], self._sizes[smallest]

    def holds(self, note: str, member: str) -> bool:
        """Whether ``member`` has already cosigned the checkpoint ``note``."""
        with self._lock:
            return member in self._by_note.get(note, {})

    def lines_for(self, note: str) -> tuple[str, ...]:
        """The cosignature lines held for exactly the checkpoint ``note``, by witness name."""
        with self._lock:
            found = self._by_note.get(note)
            return tuple(found[m] for m in sorted(found)) if found else ()


def own_checkpoint(log: AuditLog, note: str) -> Checkpoint:
    """``note`` as a checkpoint of ``log`` as it stands: signed by its key, of its origin,
    at most its size and with its root at that size.

    What a witness hands back a cosignature on must be this; a checkpoint the node
    signed before its log was rolled back is refused. :class:`NoteError` when the note
    is malformed or not the log's, :class:`LedgerError` when the log does not hold it.
    """
    text, _ = open_note(note, [log.signer.verifier()])
    checkpoint = Checkpoint.parse(text)
    if checkpoint.origin != log.origin:
        raise NoteError(
            f"the checkpoint is of the log {checkpoint.origin!r}, this node's is {log.origin!r}"
        )
    size = log.size()
    if checkpoint.size > size or log.root(checkpoint.size)[1] != checkpoint.root_hash:
        raise LedgerError(
            f"the checkpoint of {checkpoint.size} entries is signed by this node but is not "
            f"of its log as it stands ({size} entries): the log was rolled back or rewritten "
            "since; run 'credit-node audit verify --witnessed' here"
        )
    return checkpoint


def checkpoint_of(note: str) -> Checkpoint:
    """The checkpoint a signed note carries, parsed but not verified: for a note whose
    signature was verified already. :class:`NoteError` when it is malformed."""
    text, _ = _split_note(note)
    return Checkpoint.parse(text)


Prove = Callable[[int, int], Awaitable[Sequence[bytes]]]
"""Fetch a consistency proof of a peer's log between two sizes (the peer's own answer)."""


class ReceiptCheckpoints:
    """A requester's check of every receipt's checkpoint against the largest it has seen
    of that provider's log (in a receipt, or verified by this node's witness).

    * The same size with another root is a fork: refused.
    * A smaller checkpoint must be consistent with the largest: the provider proves it
      (``prove``), or the receipt is refused. A provider that cannot (its log is now
      smaller than a checkpoint it signed) has rolled back.
    * A larger one is recorded, in the transaction of the requester's own entry
      (:meth:`check` returns the side write); the witness proves it consistent with the
      provider's other checkpoints on its next round.

    Refusals raise :class:`ProofError` saying what the provider showed before.
    """

    def __init__(self, records: WitnessRecords) -> None:
        self.records = records
        self._largest: dict[str, SeenCheckpoint] = {}

    async def _known(self, peer: str) -> SeenCheckpoint | None:
        known = self._largest.get(peer)
        if known is None:
            found = await asyncio.to_thread(
                lambda: [self.records.seen(peer, RECEIPT), self.records.seen(peer, WITNESSED)]
            )
            seen = [s for s in found if s is not None]
            if seen:
                known = self._largest[peer] = max(seen, key=lambda s: s.size)
        return known

    def saw(self, seen: SeenCheckpoint) -> None:
        """Take ``seen`` (verified elsewhere, e.g. by the witness) as the largest of its peer,
        when it is larger than the largest known."""
        known = self._largest.get(seen.peer)
        if known is None or seen.size > known.size:
            self._largest[seen.peer] = seen

    async def check(self, peer: str, note: str, prove: Prove) -> list[SideWrite]:
        """Check the receipt checkpoint ``note`` of ``peer`` (its signature verified);
        the side writes recording it, when it is the largest seen."""
        checkpoint = checkpoint_of(note)
        known = await self._known(peer)
        if known is not None and checkpoint.size == known.size:
            if checkpoint.root_hash != known.root_hash:
                raise ProofError(
                    f"{peer} signed two different trees of {known.size} entries: the one in "
                    f"this receipt and one seen before ({known.source}): its log is forked"
                )
            return []
        if known is not None and checkpoint.size < known.size:
            try:
                proof = await prove(checkpoint.size, known.size)
            except Exception as exc:
                raise ProofError(
                    f"the receipt's checkpoint ({checkpoint.size} entries) is older than one "
                    f"{peer} signed before ({known.size} entries, {known.source}) and {peer} "
                    f"does not prove them consistent ({exc}): unless that failure passes, its "
                    "log was rolled back or forked"
                ) from None
            try:
                merkle.verify_consistency(
                    checkpoint.size, known.size, checkpoint.root_hash, known.root_hash, list(proof)
                )
            except ProofError as exc:
                raise ProofError(
                    f"the receipt's checkpoint ({checkpoint.size} entries) is not a prefix of "
                    f"the one of {known.size} entries {peer} signed before ({known.source}): "
                    f"{exc}; its log is forked"
                ) from None
            return []
        seen = SeenCheckpoint.of(peer, RECEIPT, checkpoint, note)
        self._largest[peer] = seen
        return [self.records.receipt_write(seen)]
