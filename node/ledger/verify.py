"""Verifying a node's audit log from what its database holds.

:func:`verify` recomputes the whole log from the stored bytes and checks every
stored thing against it: leaf hashes against bodies, indices without a gap, every
stored tree node, the head, and every checkpoint's signature, origin and root.
Last, the head itself must be signed: a non-empty log needs a checkpoint at the
head's size whose root is the recomputed root, or whoever wrote the last entries
did not hold the node's key.

* **One snapshot.** Everything is read in one read transaction (SQLite: one
  deferred ``BEGIN``; PostgreSQL: ``REPEATABLE READ READ ONLY``), so appends
  committed while it runs are neither seen nor mistaken for tampering.
* **Problems in order.** The first problem named is the first bad index or
  checkpoint; checking stops at the first bad leaf, since everything after it is
  computed from it.

What verification cannot tell: an entry whose body was deleted (set to NULL)
looks exactly like a pruned one. Its leaf hash remains, so the tree, the proofs
and the checkpoints still verify, and ``verify`` counts it as pruned. Which bodies
were dropped on purpose is recorded by the maintenance entry that every prune
commits with it (its range and cutoff); an auditor compares the pruned entries
with those.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, or_, select

from creditexchange.errors import NoteError
from creditexchange.node.database.driver import Prepared
from creditexchange.node.database.models import CHECKPOINTS, ENTRIES, HEAD, NODES
from creditexchange.node.ledger import merkle
from creditexchange.node.ledger.log import AuditLog
from creditexchange.node.ledger.note import Checkpoint, Verifier, open_note

__all__ = ["VerifyReport", "verify"]


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


_LEAF_PAGE = Prepared(
    select(ENTRIES.c.idx, ENTRIES.c.leaf_hash, ENTRIES.c.body)
    .where(ENTRIES.c.idx >= bindparam("start"))
    .order_by(ENTRIES.c.idx)
    .limit(bindparam("page"))
)


@lru_cache(maxsize=64)
def _nodes_in_spans(levels: int) -> Prepared:
    """The stored tree nodes of ``levels`` levels, each within an index span."""
    return Prepared(
        select(NODES.c.level, NODES.c.idx, NODES.c.hash).where(
            or_(
                *(
                    and_(
                        NODES.c.level == bindparam(f"level{k}"),
                        NODES.c.idx.between(bindparam(f"low{k}"), bindparam(f"high{k}")),
                    )
                    for k in range(levels)
                )
            )
        )
    )


class _Pass:
    """One pass over the leaves, a page at a time: the tree rebuilt as it is read."""

    def __init__(self, conn: Connection, report: VerifyReport, marks: list[int]) -> None:
        self.conn = conn
        self.cursor: Any = conn.connection.cursor()
        self.report = report
        self.marks = marks  # the sizes checkpoints were signed at
        self.roots: dict[int, bytes] = {}  # size -> recomputed root, at each mark
        self.frontier = merkle.Frontier(0, ())

    def run(self, page: int) -> None:
        while not self.report.problems:
            rows = _LEAF_PAGE.execute(
                self.cursor, self.conn.dialect, {"start": self.frontier.size, "page": page}
            ).fetchall()
            if not rows:
                return
            leaves = self._leaves(rows)
            if self.report.problems:
                return
            self._extend(leaves)

    def _leaves(self, rows: list[Any]) -> list[bytes]:
        """The page's leaf hashes, each checked against its body and its index."""
        start = self.frontier.size
        leaves: list[bytes] = []
        for offset, (idx, stored_leaf, body) in enumerate(rows):
            if idx != start + offset:
                self.report.problems.append(
                    f"entry {start + offset} is missing: the log jumps from entry "
                    f"{start + offset - 1} to {idx} (entries deleted)"
                )
                break
            leaf = bytes(stored_leaf)
            if body is None:
                self.report.pruned_bodies += 1
            else:
                self.report.checked_bodies += 1
                actual = merkle.leaf_hash(bytes(body))
                if actual != leaf:
                    self.report.problems.append(
                        f"entry {idx}: its stored bytes hash to {_short(actual)}, the log "
                        f"holds {_short(leaf)} (the entry was altered)"
                    )
                    break
            leaves.append(leaf)
        return leaves

    def _extend(self, leaves: list[bytes]) -> None:
        """Grow the tree by a page of leaves, noting the root at every checkpoint's size,
        and compare the nodes it completes with the stored ones."""
        start = self.frontier.size
        created: list[tuple[int, int, bytes]] = []
        cut = start
        end = start + len(leaves)
        for mark in [m for m in self.marks if start < m <= end] + [None]:
            upto = end if mark is None else mark
            self.frontier, nodes = merkle.extend(self.frontier, leaves[cut - start : upto - start])
            created.extend(nodes)
            if mark is not None:
                self.roots[mark] = self.frontier.root()
            cut = upto
        self.report.problems.extend(self._compare_nodes(created))

    def _compare_nodes(self, created: list[tuple[int, int, bytes]]) -> list[str]:
        spans: dict[int, tuple[int, int]] = {}
        for level, idx, _ in created:
            if level:
                low, high = spans.get(level, (idx, idx))
                spans[level] = (min(low, idx), max(high, idx))
        if not spans:
            return []
        values: dict[str, int] = {}
        for k, (level, (low, high)) in enumerate(spans.items()):
            values[f"level{k}"], values[f"low{k}"], values[f"high{k}"] = level, low, high
        rows = _nodes_in_spans(len(spans)).execute(self.cursor, self.conn.dialect, values)
        stored = {(level, idx): bytes(h) for level, idx, h in rows.fetchall()}
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


def _check_head(report: VerifyReport, tree: _Pass, head_root: bytes) -> None:
    size = tree.frontier.size
    if size != report.size:
        report.problems.append(
            f"the log ends after entry {size - 1} but its head says {report.size} entries: "
            f"entries {size}-{report.size - 1} are missing (tail truncated)"
            if size < report.size
            else f"the log has {size} entries but its head says {report.size}"
        )
    elif tree.frontier.root() != head_root:
        report.problems.append(f"the head's root differs from the tree of {report.size} entries")


def _check_checkpoints(
    report: VerifyReport,
    tree: _Pass,
    stored: dict[int, tuple[bytes, str]],
    log: AuditLog,
    verifier: Verifier,
) -> None:
    """Every stored checkpoint: signed by the node, for its row, for the log's root."""
    verified = tree.frontier.size
    for size, (root, note) in stored.items():
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
        if (parsed.origin, parsed.size, parsed.root_hash) != (log.origin, size, root):
            report.problems.append(f"{where}: the signed note does not match the stored row")
        elif size > verified:
            report.problems.append(f"{where}: it commits to {size} entries, the log has {verified}")
        elif tree.roots.get(size, merkle.EMPTY_ROOT if size == 0 else None) != root:
            report.problems.append(
                f"{where}: its root {_short(root)} is not the root of the log's first {size} "
                "entries (entries altered, reordered or replaced)"
            )


def _check_head_signed(report: VerifyReport, marks: list[int]) -> None:
    """A non-empty head must have a checkpoint at its size (checked above when present)."""
    if not report.size or report.size in marks:
        return
    below = [m for m in marks if m < report.size]
    nearest = f"the nearest is at size {below[-1]}" if below else "none is stored at all"
    report.problems.append(
        f"the head ({report.size} entries) has no checkpoint signed by the node at its size "
        f"({nearest}): the log was appended to, rewritten or truncated in the database "
        "without the node's key; keep the database as evidence, restore the ledger tables "
        "from a backup and investigate"
    )


def verify(log: AuditLog, verifier: Verifier, page: int = 50_000) -> VerifyReport:
    """Recompute the whole log from the stored bytes and check everything stored.

    Problems are listed in order; the first names the first bad index or
    checkpoint. See the module's docstring for what is checked.
    """
    report = VerifyReport()
    with _read_snapshot(log.engine) as conn:
        head_size, head_root = conn.execute(
            select(HEAD.c.size, HEAD.c.root_hash).where(HEAD.c.id == 1)
        ).one()
        checkpoints = conn.execute(
            select(CHECKPOINTS.c.size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note).order_by(
                CHECKPOINTS.c.size
            )
        ).all()
        report.size = int(head_size)
        stored = {int(size): (bytes(root), str(note)) for size, root, note in checkpoints}
        marks = sorted(stored)
        tree = _Pass(conn, report, marks)
        tree.run(page)
    if not report.problems:
        _check_head(report, tree, bytes(head_root))
    _check_checkpoints(report, tree, stored, log, verifier)
    _check_head_signed(report, marks)
    return report
