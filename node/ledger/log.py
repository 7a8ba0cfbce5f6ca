"""The node's audit log: an append-only RFC 9162 Merkle log in the node's database.

Invariants this module keeps:

* **Durable before acknowledged.** ``append`` resolves only after the entry's
  transaction has committed (SQLite ``synchronous=FULL`` in WAL mode, PostgreSQL's
  default ``fsync``), so a crash at any moment loses nothing acknowledged.
* **Group commit.** Concurrent appends share one transaction and one flush: the
  committer takes whatever has queued up (at most ``max_batch``; when the last
  batch held more than one entry, after waiting ``max_wait`` seconds for more, so
  an idle node never waits), writes the entries, the perfect subtree hashes they
  complete, a newly signed checkpoint and the appends' side writes, and commits once.
* **No gap, no half batch.** Entries, tree nodes, the checkpoint and the head move
  in one transaction; the head is advanced with ``WHERE size = <old size>``, so a
  second writer on the same database cannot interleave. The loser's commit fails
  with :class:`ConcurrentWriter` and writes nothing; the :class:`Ledger` then
  reloads the head and commits the batch once more on top of it (``audit prune``
  appends its own entry from another process, so this happens in normal use).
* **Consistent checkpoints.** A checkpoint is only ever signed for the head of the
  one append-only tree, so any two checkpoints the node signed are consistent.
* **O(log n) reads.** Every perfect subtree hash is stored (``ledger_nodes``, the
  leaves in ``ledger_entries``); a root or proof at any size needs O(log n) of them,
  fetched in two queries.
* **The bytes hashed are the bytes stored.** Pruning removes a body but never its
  leaf hash, so roots and proofs still verify after it.
* **Every head is signed.** A commit signs a checkpoint for exactly the head it
  writes, so ``verify`` requires a checkpoint signed by the node's key at the head's
  size with the recomputed root: rows appended or rewritten by SQL, without the
  key, fail verification even when their tree and head are recomputed correctly.
* **Verification reads one snapshot.** ``verify`` reads everything in one read
  transaction (SQLite: one deferred ``BEGIN``; PostgreSQL: ``REPEATABLE READ READ
  ONLY``), so appends committed while it runs are not mistaken for tampering.

What verification cannot tell: an entry whose body was deleted (set to NULL)
looks exactly like a pruned one. Its leaf hash remains, so the tree, the proofs
and the checkpoints still verify, and ``verify`` counts it as pruned. Which bodies
were dropped on purpose is recorded by the maintenance entry that ``audit prune``
appends (its range and cutoff); an auditor compares the pruned entries with those.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from creditexchange.clock import now_us
from creditexchange.errors import ConcurrentWriter, LedgerError, NoteError
from creditexchange.node.ledger import merkle
from creditexchange.node.ledger.note import Checkpoint, Signer, Verifier, open_note, sign_note
from creditexchange.node.store.database import driver_sql

DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_WAIT = 0.0
"""Seconds the committer waits for more appends; 0 batches what queued during a flush."""


@dataclass(frozen=True)
class Receipt:
    """Proof that an entry is in the log: its index, leaf hash and a signed checkpoint."""

    index: int
    leaf_hash: bytes
    checkpoint: str  # the signed note, exactly as signed
    proof: tuple[bytes, ...] = ()  # RFC 9162 inclusion proof of the leaf in that checkpoint


@dataclass(frozen=True)
class SideWrite:
    """A statement to run in the transaction that appends an entry (``?`` placeholders)."""

    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class StoredEntry:
    index: int
    leaf_hash: bytes
    body: bytes | None  # None once pruned
    recorded_us: int


_MOVE_HEAD = "UPDATE ledger_head SET size = ?, root_hash = ? WHERE id = 1 AND size = ?"
_INSERT_ENTRY = "INSERT INTO ledger_entries (idx, leaf_hash, body, recorded_us) VALUES (?, ?, ?, ?)"
_INSERT_NODE = "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)"
_INSERT_CHECKPOINT = (
    "INSERT INTO ledger_checkpoints (size, root_hash, note, signed_us) VALUES (?, ?, ?, ?)"
)


def origin_for(member_id: str, federation: str = "3plus2") -> str:
    """The checkpoint origin of a member's log: unique per federation and member."""
    return f"credit-exchange/{federation}/{member_id}/audit"


class LedgerStore:
    """Synchronous access to the ledger tables: the writer's and the auditor's side."""

    def __init__(self, engine: Engine, signer: Signer) -> None:
        self.engine = engine
        self.signer = signer
        self.origin = signer.name
        self._frontier: merkle.Frontier | None = None

    def _sql(self, conn: Connection, sql: str) -> str:
        return driver_sql(conn.dialect.name, sql)

    # --- writing ---------------------------------------------------------------

    def frontier(self) -> merkle.Frontier:
        if self._frontier is None:
            with self.engine.connect() as conn:
                size = conn.exec_driver_sql(
                    "SELECT size FROM ledger_head WHERE id = 1"
                ).scalar_one()
                lookup = self._lookup(conn, merkle.nodes_for([(0, size)]) if size else set())
                self._frontier = merkle.frontier_from(size, lookup)
        return self._frontier

    def commit(self, bodies: Sequence[bytes], recorded_us: int | None = None) -> tuple[int, str]:
        """Append ``bodies`` durably in one transaction; returns (first index, signed note)."""
        first, note, _ = self.commit_with_proofs(bodies, recorded_us, proofs=False)
        return first, note

    def commit_with_proofs(
        self,
        bodies: Sequence[bytes],
        recorded_us: int | None = None,
        *,
        proofs: bool = True,
        side_writes: Sequence[SideWrite] = (),
    ) -> tuple[int, str, list[list[bytes]]]:
        """As :meth:`commit`, with each entry's inclusion proof in the signed checkpoint.

        ``side_writes`` are executed in the same transaction, so what they record
        (a request's nonce, a quota count) is durable exactly when the entries are.
        """
        old = self.frontier()
        leaves = [merkle.leaf_hash(b) for b in bodies]
        new, nodes = merkle.extend(old, leaves)
        root = new.root()
        note = sign_note(Checkpoint(self.origin, new.size, root).body(), self.signer)
        stamp = recorded_us if recorded_us is not None else now_us()
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for write in side_writes:
            grouped.setdefault(write.sql, []).append(write.params)
        dialect = self.engine.dialect.name
        try:
            with self.engine.begin() as conn:
                # The driver's own cursor, in the transaction that engine.begin()
                # commits: this runs for every batch, and SQLAlchemy's statement layer
                # cost more than the statements themselves.
                cursor = conn.connection.cursor()
                try:
                    cursor.execute(driver_sql(dialect, _MOVE_HEAD), (new.size, root, old.size))
                    if cursor.rowcount != 1:
                        raise ConcurrentWriter(
                            f"the log moved past size {old.size} under this writer; it reloads"
                        )
                    cursor.executemany(
                        driver_sql(dialect, _INSERT_ENTRY),
                        [
                            (old.size + i, h, b, stamp)
                            for i, (h, b) in enumerate(zip(leaves, bodies, strict=True))
                        ],
                    )
                    inner = [(level, idx, h) for level, idx, h in nodes if level > 0]
                    if inner:
                        cursor.executemany(driver_sql(dialect, _INSERT_NODE), inner)
                    cursor.execute(
                        driver_sql(dialect, _INSERT_CHECKPOINT), (new.size, root, note, stamp)
                    )
                    for sql, rows in grouped.items():
                        cursor.executemany(driver_sql(dialect, sql), rows)
                finally:
                    cursor.close()
        except BaseException:
            self._frontier = None  # reload from what is really committed
            raise
        self._frontier = new
        paths = merkle.batch_inclusion_proofs(old, nodes, new.size) if proofs else []
        return old.size, note, paths

    # --- reading -----------------------------------------------------------------

    def _lookup(self, conn: Connection, needed: set[merkle.NodeId]) -> merkle.Lookup:
        """Fetch the perfect subtree hashes ``needed`` in at most two queries."""
        found: dict[merkle.NodeId, bytes] = {}
        leaves = sorted(idx for level, idx in needed if level == 0)
        inner = sorted((level, idx) for level, idx in needed if level > 0)
        if leaves:
            marks = ",".join("?" * len(leaves))
            for idx, h in conn.exec_driver_sql(
                self._sql(
                    conn, f"SELECT idx, leaf_hash FROM ledger_entries WHERE idx IN ({marks})"
                ),
                tuple(leaves),
            ):
                found[(0, idx)] = bytes(h)
        if inner:
            pairs = " OR ".join("(level = ? AND idx = ?)" for _ in inner)
            flat = tuple(x for pair in inner for x in pair)
            for level, idx, h in conn.exec_driver_sql(
                self._sql(conn, f"SELECT level, idx, hash FROM ledger_nodes WHERE {pairs}"), flat
            ):
                found[(level, idx)] = bytes(h)

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
            return int(
                conn.exec_driver_sql("SELECT size FROM ledger_head WHERE id = 1").scalar_one()
            )

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

    def inclusion_proof(self, index: int, size: int | None = None) -> dict[str, object]:
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

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> dict[str, object]:
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
            note = conn.exec_driver_sql(
                "SELECT note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1"
            ).scalar()
        if note is None:
            return sign_note(Checkpoint(self.origin, 0, merkle.EMPTY_ROOT).body(), self.signer)
        return str(note)

    def entries(self, start: int, end: int, page: int = 10_000) -> Iterator[StoredEntry]:
        """Entries with start <= index < end, in order, read a page at a time."""
        with self.engine.connect() as conn:
            while start < end:
                rows = conn.exec_driver_sql(
                    self._sql(
                        conn,
                        "SELECT idx, leaf_hash, body, recorded_us FROM ledger_entries "
                        "WHERE idx >= ? AND idx < ? ORDER BY idx LIMIT ?",
                    ),
                    (start, end, page),
                ).all()
                if not rows:
                    return
                for idx, h, body, us in rows:
                    yield StoredEntry(idx, bytes(h), None if body is None else bytes(body), us)
                start = rows[-1][0] + 1

    def prune_bodies(self, before_us: int) -> tuple[int, int | None, int | None]:
        """Drop the bodies of entries recorded before ``before_us``; leaf hashes stay.

        Returns (count, first index, last index) of the bodies dropped.
        """
        with self.engine.begin() as conn:
            first, last, count = conn.exec_driver_sql(
                self._sql(
                    conn,
                    "SELECT MIN(idx), MAX(idx), COUNT(*) FROM ledger_entries "
                    "WHERE recorded_us < ? AND body IS NOT NULL",
                ),
                (before_us,),
            ).one()
            if count:
                conn.exec_driver_sql(
                    self._sql(
                        conn,
                        "UPDATE ledger_entries SET body = NULL "
                        "WHERE recorded_us < ? AND body IS NOT NULL",
                    ),
                    (before_us,),
                )
        return int(count), first, last


class Ledger:
    """The asynchronous appender: ``await ledger.append(body)`` returns a Receipt once durable.

    Appends go into a list; the committer swaps the list out (at most ``max_batch``
    at a time), commits it in a worker thread and resolves every waiter. Appends
    that arrive during a commit form the next batch, so batches grow with load.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.store = store
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._pending: list[tuple[bytes, Sequence[SideWrite], asyncio.Future[Receipt]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes of recent batches, for metrics (bounded)
        self.on_batch: Callable[[int], object] | None = None  # told each batch's size
        self._busy = False  # the last batch held more than one entry: waiting pays

    async def __aenter__(self) -> Ledger:
        await asyncio.to_thread(self.store.frontier)
        self._idle.set()
        self._task = asyncio.create_task(self._commit_loop(), name="ledger-committer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        while self._pending or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()
            await asyncio.sleep(0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def append(self, body: bytes, side_writes: Sequence[SideWrite] = ()) -> Receipt:
        """Append ``body``, running ``side_writes`` in its transaction; its receipt once durable."""
        if self._task is None:
            raise LedgerError("the ledger is not running; use 'async with Ledger(...)'")
        done: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._pending.append((body, side_writes, done))
        self._wake.set()
        return await done

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.max_wait and self._busy and len(self._pending) < self.max_batch:
                await asyncio.sleep(self.max_wait)  # under load: let the batch fill a little
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            if not self._pending:
                self._wake.clear()
            if not batch:
                continue
            self._idle.clear()
            try:
                first, note, proofs = await asyncio.to_thread(
                    self._commit, [b for b, _, _ in batch], [w for _, ws, _ in batch for w in ws]
                )
            except Exception as exc:  # every waiter hears of it; nothing was acknowledged
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(LedgerError(f"the audit entry was not recorded: {exc}"))
            else:
                for i, (body, _, done) in enumerate(batch):
                    if not done.done():
                        done.set_result(
                            Receipt(first + i, merkle.leaf_hash(body), note, tuple(proofs[i]))
                        )
                self.batches.append(len(batch))
                del self.batches[:-1000]
                self._busy = len(batch) > 1
                if self.on_batch is not None:
                    self.on_batch(len(batch))
            finally:
                self._idle.set()

    def _commit(
        self, bodies: list[bytes], side_writes: list[SideWrite]
    ) -> tuple[int, str, list[list[bytes]]]:
        """Commit one batch; if another process advanced the log, reload and retry once.

        The first attempt wrote nothing (the head did not move), so retrying cannot
        record an entry twice. A second conflict fails the batch: something else is
        appending continuously, which a node's ledger must not share.
        """
        try:
            return self.store.commit_with_proofs(bodies, side_writes=side_writes)
        except ConcurrentWriter:  # its frontier was dropped: this reloads
            return self.store.commit_with_proofs(bodies, side_writes=side_writes)


# --- verification --------------------------------------------------------------------


@dataclass
class VerifyReport:
    size: int = 0
    checked_bodies: int = 0
    pruned_bodies: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _short(h: bytes) -> str:
    return base64.b64encode(h).decode()[:12] + "…"


@contextlib.contextmanager
def _read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads, raw cursor included, all see one committed state.

    PostgreSQL: a ``REPEATABLE READ READ ONLY`` transaction, whose snapshot is taken
    at its first statement. SQLite: the driver opens transactions only before
    writes, so each SELECT would see the latest commit; an explicit deferred
    ``BEGIN`` makes the first read take a WAL snapshot that every later read shares
    (writers are not blocked). Nothing is written either way; the transaction is
    rolled back when the block ends.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        ) as conn:
            yield conn  # closing the connection rolls the transaction back
        return
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("BEGIN DEFERRED")
        try:
            yield conn
        finally:
            driver.rollback()


def verify(store: LedgerStore, verifier: Verifier, page: int = 50_000) -> VerifyReport:
    """Recompute the whole log from the stored bytes and check everything stored.

    Everything is read in one snapshot (:func:`_read_snapshot`), so appends that
    commit meanwhile are neither seen nor reported. One pass over the leaves, a page
    at a time: every leaf hash against its stored body; indices without a gap; every
    tree node the page completes against the stored one. Then the head, and every
    checkpoint's signature, origin and root against the recomputed tree. Last, the
    head itself must be signed: a non-empty log needs a checkpoint at the head's
    size whose root is the recomputed root, or whoever wrote the last entries did
    not hold the node's key. Problems are listed in order; the first names the
    first bad index or checkpoint.
    """
    report = VerifyReport()
    with _read_snapshot(store.engine) as conn:
        head_size, head_root = conn.exec_driver_sql(
            "SELECT size, root_hash FROM ledger_head WHERE id = 1"
        ).one()
        checkpoints = conn.exec_driver_sql(
            "SELECT size, root_hash, note FROM ledger_checkpoints ORDER BY size"
        ).all()
        report.size = head_size
        wanted = {size: (bytes(root), note) for size, root, note in checkpoints}
        marks = sorted(wanted)
        roots: dict[int, bytes] = {}
        frontier = merkle.Frontier(0, ())
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        select_page = driver_sql(
            conn.dialect.name,
            "SELECT idx, leaf_hash, body FROM ledger_entries WHERE idx >= ? ORDER BY idx LIMIT ?",
        )
        while not report.problems:
            cursor.execute(select_page, (frontier.size, page))
            rows = cursor.fetchall()
            if not rows:
                break
            start = frontier.size
            leaves: list[bytes] = []
            for offset, (idx, stored_leaf, body) in enumerate(rows):
                if idx != start + offset:
                    report.problems.append(
                        f"entry {start + offset} is missing: the log jumps from entry "
                        f"{start + offset - 1} to {idx} (entries deleted)"
                    )
                    break
                leaf = bytes(stored_leaf)
                if body is None:
                    report.pruned_bodies += 1
                else:
                    report.checked_bodies += 1
                    actual = merkle.leaf_hash(bytes(body))
                    if actual != leaf:
                        report.problems.append(
                            f"entry {idx}: its stored bytes hash to {_short(actual)}, the log "
                            f"holds {_short(leaf)} (the entry was altered)"
                        )
                        break
                leaves.append(leaf)
            if report.problems:
                break
            created: list[tuple[int, int, bytes]] = []
            cut = start
            for mark in [m for m in marks if start < m <= start + len(leaves)] + [None]:
                upto = start + len(leaves) if mark is None else mark
                frontier, nodes = merkle.extend(frontier, leaves[cut - start : upto - start])
                created.extend(nodes)
                if mark is not None:
                    roots[mark] = frontier.root()
                cut = upto
            report.problems.extend(_compare_nodes(cursor, conn.dialect.name, created))
    if not report.problems and frontier.size != head_size:
        last = frontier.size - 1
        report.problems.append(
            f"the log ends after entry {last} but its head says {head_size} entries: "
            f"entries {frontier.size}-{head_size - 1} are missing (tail truncated)"
            if frontier.size < head_size
            else f"the log has {frontier.size} entries but its head says {head_size}"
        )
    if not report.problems and frontier.root() != bytes(head_root):
        report.problems.append(f"the head's root differs from the tree of {head_size} entries")
    verified = frontier.size
    for size, (root, note) in wanted.items():
        report.checkpoints += 1
        where = f"checkpoint at size {size}"
        try:
            text, _ = open_note(note, [verifier])
            parsed = Checkpoint.parse(text)
        except (NoteError, ValueError) as exc:
            report.problems.append(
                f"{where}: its signature does not verify with the node key: {exc}"
            )
            continue
        if (parsed.origin, parsed.size, parsed.root_hash) != (store.origin, size, root):
            report.problems.append(f"{where}: the signed note does not match the stored row")
        elif size > verified:
            report.problems.append(f"{where}: it commits to {size} entries, the log has {verified}")
        elif roots.get(size, merkle.EMPTY_ROOT if size == 0 else None) != root:
            report.problems.append(
                f"{where}: its root {_short(root)} is not the root of the log's first {size} "
                "entries (entries altered, reordered or replaced)"
            )
    if head_size and head_size not in wanted:  # a checkpoint there is checked just above
        below = [m for m in marks if m < head_size]
        nearest = f"the nearest is at size {below[-1]}" if below else "none is stored at all"
        report.problems.append(
            f"the head ({head_size} entries) has no checkpoint signed by the node at its size "
            f"({nearest}): the log was appended to, rewritten or truncated in the database "
            "without the node's key; keep the database as evidence, restore the ledger tables "
            "from a backup and investigate"
        )
    return report


def _compare_nodes(cursor: Any, dialect: str, created: list[tuple[int, int, bytes]]) -> list[str]:
    """Compare the tree nodes a page of leaves completes with the stored ones."""
    spans: dict[int, tuple[int, int]] = {}
    for level, idx, _ in created:
        if level:
            low, high = spans.get(level, (idx, idx))
            spans[level] = (min(low, idx), max(high, idx))
    if not spans:
        return []
    where = " OR ".join("(level = ? AND idx BETWEEN ? AND ?)" for _ in spans)
    params = tuple(x for level, (low, high) in spans.items() for x in (level, low, high))
    cursor.execute(
        driver_sql(dialect, f"SELECT level, idx, hash FROM ledger_nodes WHERE {where}"), params
    )
    stored = {(level, idx): bytes(h) for level, idx, h in cursor.fetchall()}
    # The smallest bad node that ends earliest pins down where the damage is.
    bad = [
        (((idx + 1) << level) - 1, level, idx, (level, idx) in stored)
        for level, idx, h in created
        if level and stored.get((level, idx)) != h
    ]
    if not bad:
        return []
    last, level, idx, present = min(bad)
    span = f"entries {last - (1 << level) + 1}-{last}"
    if not present:
        return [f"the tree node over {span} (level {level}, index {idx}) is missing"]
    return [
        f"{span} do not match the stored tree node (level {level}, index {idx}): "
        "entries were reordered or replaced"
    ]
