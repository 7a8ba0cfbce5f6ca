"""The node's audit log: an append-only RFC 9162 Merkle log in the node's database.

:class:`AuditLog` is the synchronous side of the ledger: it commits batches of
entries, reads entries, roots and proofs, and prunes old bodies. The
asynchronous group commit is :class:`~creditexchange.node.ledger.appender.Ledger`;
verification is :func:`~creditexchange.node.ledger.verify.verify`.

Invariants this module keeps:

* **Durable before acknowledged.** :meth:`AuditLog.commit` returns only after the
  batch's transaction has committed (SQLite ``synchronous=FULL`` in WAL mode,
  PostgreSQL's default ``fsync``), so a crash at any moment loses nothing
  acknowledged.
* **No gap, no half batch, several writers.** Entries, tree nodes, the checkpoint,
  the head and the batch's side writes move in one transaction, which first locks
  the head row (an ``UPDATE … RETURNING`` of it: PostgreSQL's row lock, SQLite's
  write lock). Several processes sharing one database (``serve --workers``, pods)
  therefore append one after another: a writer that finds the head moved since its
  last batch reads the new frontier inside that transaction and appends on top of
  it, so indices stay gap-free and every checkpoint is of the one tree.
* **Claims are judged under that lock.** A side write that may refuse its entry
  (:class:`Claim`: a nonce another process already spent, a quota another process
  filled) is judged in the batch's transaction after the head is locked, so every
  process sees what the others committed before it; an entry with a refused claim
  is left out of the batch and its appender told why.
* **The ledger knows nothing of what else commits with it.** A write that must be
  durable exactly when an entry is (a spent nonce, a quota count) is a
  :class:`SideWrite` its owner provides; the log runs it in the batch's
  transaction without knowing its table.
* **Consistent checkpoints.** A checkpoint is only ever signed for the head of the
  one append-only tree, so any two checkpoints the node signed are consistent.
* **Every head is signed.** A commit signs a checkpoint for exactly the head it
  writes; rows appended or rewritten by SQL, without the key, fail verification.
* **O(log n) reads.** Every perfect subtree hash is stored (``ledger_nodes``, the
  leaves in ``ledger_entries``); a root or proof at any size needs O(log n) of them,
  fetched in two queries.
* **The bytes hashed are the bytes stored.** Pruning removes a body but never its
  leaf hash, so roots and proofs still verify after it; and a prune is itself an
  entry of the log, committed in the transaction that drops the bodies
  (:meth:`AuditLog.prune`).
* **Nothing unhashed decides anything.** An entry's row is its index, its leaf hash
  and its body; how old an entry is (what a prune goes by) is the time inside the
  hashed body, so no column that could be edited unseen changes what is dropped.
* **Bounded entries.** No entry larger than
  :data:`~creditexchange.node.ledger.entries.MAX_ENTRY_BYTES` is committed
  (:meth:`AuditLog.commit_with_proofs` refuses the batch whole, writing nothing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, cast

from sqlalchemy import Dialect, Engine, bindparam, insert, null, select, update

from creditexchange.clock import now_us
from creditexchange.errors import ConcurrentWriter, LedgerError
from creditexchange.node.database.driver import Prepared, select_keyed
from creditexchange.node.database.models import CHECKPOINTS, ENTRIES, HEAD, NODES
from creditexchange.node.ledger import entries, merkle
from creditexchange.node.ledger.note import Checkpoint, Signer, sign_note

__all__ = [
    "MIN_RETENTION_DAYS",
    "AuditLog",
    "Claim",
    "Committed",
    "ConsistencyProof",
    "InclusionProof",
    "Pending",
    "Pruned",
    "Receipt",
    "SideWrite",
    "StoredEntry",
    "origin_for",
]

MIN_RETENTION_DAYS = 1096
"""Entry bodies are kept at least three years (PIPL Art. 56 impact records; a node's
``audit_retention_days`` may be longer, never shorter)."""


@dataclass(frozen=True)
class Receipt:
    """Proof that an entry is in the log: its index, leaf hash and a signed checkpoint."""

    index: int
    leaf_hash: bytes
    checkpoint: str  # the signed note, exactly as signed
    proof: tuple[bytes, ...] = ()  # RFC 9162 inclusion proof of the leaf in that checkpoint


class SideWrite(Protocol):
    """A write that must be durable exactly when the entries of its batch are.

    Its owner (the replay guard's spent nonce, the quota counter's count) says how
    to make it; the log calls :meth:`write` in the batch's transaction, on the
    driver's cursor, and knows nothing of the table it writes.
    """

    def write(self, cursor: Any, dialect: Dialect) -> None: ...


class Claim(SideWrite, Protocol):
    """A side write that may refuse the entry it comes with.

    In an entry appended as *conditional* (an answer, which must not be given twice
    nor beyond a quota), the claims of one kind (one class) in the batch are judged
    together by :meth:`judge` of the first of them, in the batch's transaction and
    after the head is locked: ``claims[k]`` are the claims of that kind of the k-th
    entry offered, in batch order. ``judge`` reads, never writes, and returns the
    positions (k) it refuses with the exception that entry's appender gets; the
    accepted claims are then written with :meth:`write`. In an unconditional entry (a
    refusal) a claim is only written.
    """

    def judge(
        self, cursor: Any, dialect: Dialect, claims: Sequence[Sequence[Any]]
    ) -> dict[int, Exception]: ...


@dataclass(frozen=True, slots=True)
class Pending:
    """An entry to commit: its bytes, the writes durable with it, and whether its claims
    are judged (``conditional``) or only written."""

    body: bytes
    writes: Sequence[SideWrite] = ()
    conditional: bool = False


@dataclass(frozen=True, slots=True)
class Committed:
    """What a commit wrote: the index of its first entry, the signed checkpoint, the
    inclusion proofs of the entries written (in order), and the positions of the
    entries left out, with why."""

    first: int
    note: str
    proofs: list[list[bytes]]
    refused: dict[int, Exception]
    leaves: list[bytes]  # the leaf hashes of the entries written, in order


class InclusionProof(TypedDict):
    """RFC 9162 proof that entry ``index`` is in the tree of ``size`` entries."""

    index: int
    size: int
    leaf_hash: bytes
    root_hash: bytes
    proof: list[bytes]


class ConsistencyProof(TypedDict):
    """RFC 9162 proof that the tree of ``old_size`` entries is a prefix of ``new_size``'s."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    proof: list[bytes]


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored: its index, leaf hash and bytes (None once pruned).

    When it was recorded is inside the bytes
    (:func:`~creditexchange.node.ledger.entries.recorded_time`), and gone with them.
    """

    index: int
    leaf_hash: bytes
    body: bytes | None  # None once pruned


@dataclass(frozen=True)
class Pruned:
    """What a prune dropped (entries ``first``-``last``, ``count`` bodies) and the index
    of the entry that records it."""

    count: int
    first: int
    last: int
    recorded_as: int
    note: str


def origin_for(member_id: str, federation: str = "3plus2") -> str:
    """The checkpoint origin of a member's log: unique per federation and member."""
    return f"credit-exchange/{federation}/{member_id}/audit"


_HEAD_SIZE = Prepared(select(HEAD.c.size).where(HEAD.c.id == 1))
_LOCK_HEAD = Prepared(  # the first statement of a commit: the lock every writer queues on
    update(HEAD).where(HEAD.c.id == 1).values(size=HEAD.c.size).returning(HEAD.c.size)
)
_MOVE_HEAD = Prepared(
    update(HEAD)
    .where(HEAD.c.id == 1, HEAD.c.size == bindparam("old_size"))
    .values(size=bindparam("size"), root_hash=bindparam("root"))
)
_INSERT_ENTRY = Prepared(
    insert(ENTRIES).values(
        idx=bindparam("idx"),
        leaf_hash=bindparam("leaf"),
        body=bindparam("body"),
    ),
    row=("idx", "leaf", "body"),
)
_INSERT_NODE = Prepared(
    insert(NODES).values(level=bindparam("level"), idx=bindparam("idx"), hash=bindparam("hash")),
    row=("level", "idx", "hash"),
)
_INSERT_CHECKPOINT = Prepared(
    insert(CHECKPOINTS).values(
        size=bindparam("size"),
        root_hash=bindparam("root"),
        note=bindparam("note"),
        signed_us=bindparam("us"),
    )
)
_LATEST_CHECKPOINT = Prepared(
    select(CHECKPOINTS.c.note).order_by(CHECKPOINTS.c.size.desc()).limit(1)
)
_ENTRY_PAGE = Prepared(
    select(ENTRIES.c.idx, ENTRIES.c.leaf_hash, ENTRIES.c.body)
    .where(ENTRIES.c.idx >= bindparam("start"), ENTRIES.c.idx < bindparam("end"))
    .order_by(ENTRIES.c.idx)
    .limit(bindparam("page"))
)


_UNPRUNED_PAGE = Prepared(
    select(ENTRIES.c.idx, ENTRIES.c.body)
    .where(
        ENTRIES.c.idx > bindparam("after"),
        ENTRIES.c.idx < bindparam("end"),
        ENTRIES.c.body.is_not(None),
    )
    .order_by(ENTRIES.c.idx)
    .limit(bindparam("page"))
)


@dataclass(frozen=True)
class _DropBodies:
    """The side write of a prune: drop the bodies it records dropping.

    ``runs`` are inclusive index ranges in which every body still stored was found
    old; a run may span bodies already pruned, never one that is kept.
    """

    runs: tuple[tuple[int, int], ...]

    def write(self, cursor: Any, dialect: Dialect) -> None:
        _DROP_BODIES.executemany_rows(cursor, dialect, self.runs)


_DROP_BODIES = Prepared(
    update(ENTRIES)
    .where(
        ENTRIES.c.idx.between(bindparam("first"), bindparam("last")),
        ENTRIES.c.body.is_not(None),
    )
    .values(body=null()),
    row=("first", "last"),
)


def _judge(cursor: Any, dialect: Dialect, pending: Sequence[Pending]) -> dict[int, Exception]:
    """Judge the claims of the conditional entries, kind by kind in the order the kinds
    first appear; an entry refused by one kind is not offered to the next."""
    refused: dict[int, Exception] = {}
    kinds: dict[type, dict[int, list[Claim]]] = {}
    for i, item in enumerate(pending):
        if item.conditional:
            for write in item.writes:
                if hasattr(write, "judge"):
                    kinds.setdefault(type(write), {}).setdefault(i, []).append(cast(Claim, write))
    for by_entry in kinds.values():
        offered = [(i, claims) for i, claims in by_entry.items() if i not in refused]
        if not offered:
            continue
        judge = offered[0][1][0].judge
        for k, why in judge(cursor, dialect, [claims for _, claims in offered]).items():
            refused[offered[k][0]] = why
    return refused


def _write_all(cursor: Any, dialect: Dialect, writes: Sequence[SideWrite]) -> None:
    """Make the side writes of a batch, one statement per kind where the kind can
    (``write_all``: every spent nonce of the batch in one INSERT), else one by one."""
    kinds: dict[type, list[SideWrite]] = {}
    for write in writes:
        kinds.setdefault(type(write), []).append(write)
    for kind, same in kinds.items():
        write_all = getattr(kind, "write_all", None)
        if write_all is not None:
            write_all(cursor, dialect, same)
        else:
            for write in same:
                write.write(cursor, dialect)


class AuditLog:
    """Synchronous access to the ledger tables: the writer's and the auditor's side."""

    def __init__(self, engine: Engine, signer: Signer) -> None:
        self.engine = engine
        self.signer = signer
        self.origin = signer.name
        self._frontier: merkle.Frontier | None = None

    # --- writing ---------------------------------------------------------------

    def frontier(self) -> merkle.Frontier:
        if self._frontier is None:
            with self.engine.connect() as conn:
                cursor = conn.connection.cursor()
                size = int(_HEAD_SIZE.execute(cursor, conn.dialect).fetchone()[0])
                self._frontier = self._frontier_at(conn, size)
        return self._frontier

    def _frontier_at(self, conn: Any, size: int) -> merkle.Frontier:
        lookup = self._lookup(conn, merkle.nodes_for([(0, size)]) if size else set())
        return merkle.frontier_from(size, lookup)

    def commit(
        self, bodies: Sequence[bytes], *, side_writes: Sequence[SideWrite] = ()
    ) -> tuple[int, str]:
        """Append ``bodies`` durably in one transaction; returns (first index, signed note)."""
        first, note, _ = self.commit_with_proofs(bodies, proofs=False, side_writes=side_writes)
        return first, note

    def commit_with_proofs(
        self,
        bodies: Sequence[bytes],
        *,
        proofs: bool = True,
        side_writes: Sequence[SideWrite] = (),
    ) -> tuple[int, str, list[list[bytes]]]:
        """As :meth:`commit`, with each entry's inclusion proof in the signed checkpoint.

        ``side_writes`` are made in the same transaction, so what they record is
        durable exactly when the entries are. Raises :class:`LedgerError` (writing
        nothing) when an entry is larger than
        :data:`~creditexchange.node.ledger.entries.MAX_ENTRY_BYTES`.
        """
        pending = [Pending(body) for body in bodies]
        if pending and side_writes:
            pending[0] = Pending(bodies[0], side_writes)
        done = self.commit_entries(pending, proofs=proofs)
        return done.first, done.note, done.proofs

    def commit_entries(self, pending: Sequence[Pending], *, proofs: bool = True) -> Committed:
        """Append the entries of ``pending`` that no claim refuses, with their writes, in
        one transaction; what was written, and what was refused and why.

        The transaction first locks the head; if another process appended since this
        one last did, the frontier is read again inside it, so the batch goes on top of
        the real head. Raises :class:`LedgerError` (writing nothing) when an entry is
        larger than :data:`~creditexchange.node.ledger.entries.MAX_ENTRY_BYTES`.
        """
        for item in pending:
            entries.check_size(item.body)
        dialect = self.engine.dialect
        try:
            with self.engine.begin() as conn:
                # The driver's own cursor, in the transaction that engine.begin()
                # commits: this runs for every batch, and SQLAlchemy's statement layer
                # cost more than the statements themselves.
                cursor = conn.connection.cursor()
                try:
                    size = int(_LOCK_HEAD.execute(cursor, dialect).fetchone()[0])
                    old = self._frontier
                    if old is None or old.size != size:  # another process appended
                        old = self._frontier_at(conn, size)
                    refused = _judge(cursor, dialect, pending)
                    kept = [item for i, item in enumerate(pending) if i not in refused]
                    bodies = [item.body for item in kept]
                    leaves = [merkle.leaf_hash(b) for b in bodies]
                    new, nodes = merkle.extend(old, leaves)
                    root = new.root()
                    note = sign_note(Checkpoint(self.origin, new.size, root).body(), self.signer)
                    if bodies:
                        self._write(cursor, dialect, old, new, root, note, nodes, leaves, bodies)
                    _write_all(cursor, dialect, [w for item in kept for w in item.writes])
                finally:
                    cursor.close()
        except BaseException:
            self._frontier = None  # reload from what is really committed
            raise
        self._frontier = new
        paths = merkle.batch_inclusion_proofs(old, nodes, new.size) if proofs and bodies else []
        return Committed(old.size, note, paths, refused, leaves)

    def _write(
        self,
        cursor: Any,
        dialect: Dialect,
        old: merkle.Frontier,
        new: merkle.Frontier,
        root: bytes,
        note: str,
        nodes: Sequence[tuple[int, int, bytes]],
        leaves: Sequence[bytes],
        bodies: Sequence[bytes],
    ) -> None:
        moved = _MOVE_HEAD.execute(
            cursor, dialect, {"size": new.size, "root": root, "old_size": old.size}
        )
        if moved.rowcount != 1:  # the head is locked: only a bug or a hand edit gets here
            raise ConcurrentWriter(f"the log moved past size {old.size} under this writer")
        _INSERT_ENTRY.executemany_rows(
            cursor,
            dialect,
            [(old.size + i, h, b) for i, (h, b) in enumerate(zip(leaves, bodies, strict=True))],
        )
        inner = [node for node in nodes if node[0] > 0]
        if inner:
            _INSERT_NODE.executemany_rows(cursor, dialect, inner)
        _INSERT_CHECKPOINT.execute(
            cursor, dialect, {"size": new.size, "root": root, "note": note, "us": now_us()}
        )

    def prune(self, before_us: int, member_id: str, *, page: int = 4096) -> Pruned | None:
        """Drop the bodies of entries recorded before ``before_us`` and record that.

        An entry's age is the time inside its own bytes (``time_unix_micros``), which
        its leaf hash covers; an entry that cannot be dated (not an ``AuditEntry``, or
        no time) is kept. The maintenance entry (which entries, recorded before when)
        is committed in the same transaction that drops the bodies: a prune is never
        unrecorded. Leaf hashes stay, so roots and proofs still verify. None when no
        body is that old (nothing is dropped, nothing recorded).

        Cost: every body still stored is read once, ``page`` rows at a time, and
        parsed for its time: O(unpruned entries) reads and parses (roughly 5 s per
        million bodies on SQLite, 20 s on PostgreSQL, on a developer's machine), and
        memory for one page plus the dropped index ranges. No index serves it, so
        appends pay nothing for it; it is a rare maintenance job.
        """
        runs = self._old_runs(before_us, page)
        if not runs:
            return None
        first, last = runs[0][0], runs[-1][1]
        count = sum(n for _, _, n in runs)
        when = dt.datetime.fromtimestamp(before_us / 1e6, dt.UTC).date()
        note = f"pruned the bodies of {count} entries ({first}-{last}) recorded before {when}"
        index, _ = self.commit(
            [entries.maintenance(note, member_id, now_us())],
            side_writes=[_DropBodies(tuple((low, high) for low, high, _ in runs))],
        )
        return Pruned(count, first, last, index, note)

    def _old_runs(self, before_us: int, page: int) -> list[tuple[int, int, int]]:
        """The stored bodies recorded before ``before_us``, as (first, last, count) runs
        of indices with no kept body inside, over the log as it was when the scan began."""
        runs: list[tuple[int, int, int]] = []
        extends = False  # the last stored body scanned was old: the next old one joins its run
        after = -1
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                end = int(_HEAD_SIZE.execute(cursor, conn.dialect).fetchone()[0])
                while rows := _UNPRUNED_PAGE.execute(
                    cursor, conn.dialect, {"after": after, "end": end, "page": page}
                ).fetchall():
                    for idx, body in rows:
                        recorded = entries.recorded_time(bytes(body))
                        if recorded is None or recorded >= before_us:
                            extends = False
                        elif extends:
                            low, _, n = runs[-1]
                            runs[-1] = (low, idx, n + 1)
                        else:
                            runs.append((idx, idx, 1))
                            extends = True
                    after = rows[-1][0]
            finally:
                cursor.close()
        return runs

    # --- reading -----------------------------------------------------------------

    def _lookup(self, conn: Any, needed: set[merkle.NodeId]) -> merkle.Lookup:
        """Fetch the perfect subtree hashes ``needed`` in at most two queries."""
        found: dict[merkle.NodeId, bytes] = {}
        leaves = sorted((idx,) for level, idx in needed if level == 0)
        inner = sorted((level, idx) for level, idx in needed if level > 0)
        cursor, dialect = conn.connection.cursor(), conn.dialect
        try:
            for idx, h in select_keyed(
                cursor, dialect, ENTRIES, ("idx", "leaf_hash"), ("idx",), leaves
            ):
                found[(0, int(idx))] = bytes(h)
            key = ("level", "idx")
            for level, idx, h in select_keyed(cursor, dialect, NODES, (*key, "hash"), key, inner):
                found[(int(level), int(idx))] = bytes(h)
        finally:
            cursor.close()

        def lookup(node: merkle.NodeId) -> bytes:
            try:
                return found[node]
            except KeyError:
                raise LedgerError(
                    f"the tree node at level {node[0]}, index {node[1]} is missing from the "
                    "database; run 'credit-node audit verify'"
                ) from None

        return lookup

    def size(self) -> int:
        with self.engine.connect() as conn:
            return int(_HEAD_SIZE.execute(conn.connection.cursor(), conn.dialect).fetchone()[0])

    def _require_size(self, size: int | None) -> int:
        current = self.size()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise LedgerError(f"size {size} is outside the log, which has {current} entries")
        return size

    def root(self, size: int | None = None) -> tuple[int, bytes]:
        size = self._require_size(size)
        with self.engine.connect() as conn:
            lookup = self._lookup(conn, merkle.nodes_for([(0, size)]) if size else set())
            return size, merkle.root(size, lookup)

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        size = self._require_size(size)
        if not 0 <= index < size:
            raise LedgerError(f"entry {index} is not in a log of size {size}")
        ranges = merkle.inclusion_proof_ranges(index, size)
        with self.engine.connect() as conn:
            lookup = self._lookup(conn, merkle.nodes_for([*ranges, (0, size), (index, index + 1)]))
            return {
                "index": index,
                "size": size,
                "leaf_hash": lookup((0, index)),
                "root_hash": merkle.root(size, lookup),
                "proof": merkle.inclusion_proof(index, size, lookup),
            }

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        new_size = self._require_size(new_size)
        if not 0 <= old_size <= new_size:
            raise LedgerError(f"old size {old_size} must be between 0 and {new_size}")
        ranges = merkle.consistency_proof_ranges(old_size, new_size)
        spans = [*ranges, (0, new_size)] + ([(0, old_size)] if old_size else [])
        with self.engine.connect() as conn:
            lookup = self._lookup(conn, merkle.nodes_for(spans) if new_size else set())
            return {
                "old_size": old_size,
                "new_size": new_size,
                "old_root": merkle.root(old_size, lookup),
                "new_root": merkle.root(new_size, lookup),
                "proof": merkle.consistency_proof(old_size, new_size, lookup),
            }

    def latest_checkpoint(self) -> str:
        with self.engine.connect() as conn:
            row = _LATEST_CHECKPOINT.execute(conn.connection.cursor(), conn.dialect).fetchone()
        if row is None:
            return sign_note(Checkpoint(self.origin, 0, merkle.EMPTY_ROOT).body(), self.signer)
        return str(row[0])

    def entries(self, start: int, end: int, page: int = 10_000) -> Iterator[StoredEntry]:
        """Entries with start <= index < end, in order, read a page at a time."""
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            while start < end:
                rows = _ENTRY_PAGE.execute(
                    cursor, conn.dialect, {"start": start, "end": end, "page": page}
                ).fetchall()
                if not rows:
                    return
                for idx, h, body in rows:
                    yield StoredEntry(idx, bytes(h), None if body is None else bytes(body))
                start = rows[-1][0] + 1
