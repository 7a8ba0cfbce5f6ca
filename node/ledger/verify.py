"""Verifying a node's audit log from what its database holds.

:func:`verify` recomputes the whole log from the stored bytes and checks every
stored thing against it: leaf hashes against bodies, indices without a gap, every
stored tree node, the head, and every checkpoint's signature, origin and root.
Last, the head itself must be signed: a non-empty log needs a checkpoint at the
head's size whose root is the recomputed root, or whoever wrote the last entries
did not hold the node's key.

* **The key in force at each size.** A node that rotated its signing key signed its
  checkpoints with one key up to the rotation and another after it. :func:`verify`
  takes the keys with the sizes each signed (:class:`KeyInForce`, from the node's key
  history) and checks every checkpoint with the key in force at its size: one signed
  by a retired key after its retirement (a process that kept the old key, or a stolen
  one) is a problem, named as such.

* **One snapshot.** Everything is read in one read transaction (SQLite: one
  deferred ``BEGIN``; PostgreSQL: ``REPEATABLE READ READ ONLY``), so appends
  committed while it runs are neither seen nor mistaken for tampering.
* **Every problem once, root causes first.** The tree is rebuilt from what the
  bodies hash to, so an altered body shows where it is (its leaf hash) and in
  everything computed from it: the tree nodes above it, the checkpoints after it,
  the head. Those are its consequences. ``problems`` lists the root causes in log
  order — an altered or missing entry, a stored tree node that differs from entries
  that are otherwise sound, a truncated tail, a checkpoint that is not the node's
  or not the log's, an unsigned head — each once, then one line summing up the
  consequences. The whole log is read even after a problem, so a second, independent
  tampering further on is reported too. Past a gap (entries deleted) the tree
  cannot be rebuilt; the bodies after it are still checked against their leaf
  hashes.

What verification cannot tell: an entry whose body was deleted (set to NULL)
looks exactly like a pruned one. Its leaf hash remains, so the tree, the proofs
and the checkpoints still verify, and ``verify`` counts it as pruned. Which bodies
were dropped on purpose is recorded by the maintenance entry that every prune
commits with it (its range and cutoff); an auditor compares the pruned entries
with those.

:func:`verify_witnessed` checks the log against what the node's peers vouch for
(their cosignatures on its checkpoints): a head smaller than a checkpoint a peer
cosigned, or no longer holding its root, means the log was rolled back or
rewritten after the peers saw it — which nothing inside the database can show.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select

from creditexchange.errors import NoteError
from creditexchange.node.database import read_snapshot
from creditexchange.node.database.driver import Prepared
from creditexchange.node.database.models import CHECKPOINTS, ENTRIES, HEAD, NODES
from creditexchange.node.ledger import merkle
from creditexchange.node.ledger.cosignature import CosignatureVerifier, verify_cosignatures
from creditexchange.node.ledger.log import AuditLog
from creditexchange.node.ledger.note import Checkpoint, Verifier, open_note

__all__ = [
    "KeyInForce",
    "VerifyReport",
    "Vouched",
    "WitnessedReport",
    "verify",
    "verify_witnessed",
]


@dataclass(frozen=True)
class KeyInForce:
    """A key that signed the log's checkpoints of sizes ``first`` to ``last`` (inclusive;
    None: every size from ``first`` on)."""

    verifier: Verifier
    first: int = 0
    last: int | None = None

    def covers(self, size: int) -> bool:
        return self.first <= size and (self.last is None or size <= self.last)

    def describe(self) -> str:
        sizes = (
            f"sizes {self.first}-{self.last}"
            if self.last is not None
            else (f"sizes from {self.first} on")
        )
        return f"key {self.verifier.key_id.hex()} ({sizes})"


Keys = Verifier | Sequence[KeyInForce]
"""The node's key, or its keys with the sizes each signed."""


def _in_force(keys: Keys) -> tuple[KeyInForce, ...]:
    if isinstance(keys, Verifier):
        return (KeyInForce(keys),)
    if not keys:
        raise ValueError("at least one key is needed to verify a log")
    return tuple(keys)


def _open_own(note: str, keys: tuple[KeyInForce, ...]) -> tuple[str, KeyInForce]:
    """The text of a checkpoint the node signed, and the key that signed it; NoteError
    when no key of the node's verifies it."""
    text, signed_by = open_note(note, [k.verifier for k in keys])
    key = next(k for k in keys if k.verifier in signed_by)
    return text, key


@dataclass
class VerifyReport:
    """What :func:`verify` found: ``problems`` holds the root causes in log order, each
    once, then at most one line summing up their consequences."""

    size: int = 0
    checked_bodies: int = 0
    pruned_bodies: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    root_causes: int = 0  # how many of ``problems`` are root causes (the rest sum up)

    @property
    def ok(self) -> bool:
        return not self.problems


def _short(h: bytes) -> str:
    return base64.b64encode(h).decode()[:12] + "…"


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


class _Findings:
    """The problems found so far: root causes (by where they are) and their consequences."""

    def __init__(self) -> None:
        self.roots: list[tuple[int, int, str]] = []  # (position, order found, text)
        self.bad_spans: list[tuple[int, int]] = []  # entry ranges a root cause lies in
        self.bad_nodes = 0  # stored tree nodes above a root cause that differ
        self.bad_checkpoints: list[int] = []  # sizes of checkpoints a root cause spoils
        self.unchecked: list[int] = []  # sizes of checkpoints past a gap, not checkable
        self.beyond: list[int] = []  # sizes of checkpoints past a truncated tail
        self.head_spoiled = False

    def root(self, position: int, text: str, span: tuple[int, int] | None = None) -> None:
        self.roots.append((position, len(self.roots), text))
        if span is not None:
            self.bad_spans.append(span)

    def spoiled(self, low: int, high: int) -> bool:
        """Whether entries ``low``-``high`` hold a root cause found already."""
        return any(lo <= high and low <= hi for lo, hi in self.bad_spans)

    def lines(self) -> list[str]:
        lines = [text for _, _, text in sorted(self.roots)]
        parts = []
        if self.bad_nodes:
            parts.append(f"{self.bad_nodes} stored tree node(s) above them differ")
        if self.bad_checkpoints:
            parts.append(
                f"{len(self.bad_checkpoints)} checkpoint(s) {_sizes(self.bad_checkpoints)} no "
                "longer match the log's root at their size"
            )
        if self.beyond:
            parts.append(
                f"{len(self.beyond)} checkpoint(s) {_sizes(self.beyond)} commit to entries "
                "that are gone"
            )
        if self.unchecked:
            parts.append(
                f"{len(self.unchecked)} checkpoint(s) {_sizes(self.unchecked)} cannot be "
                "checked past the missing entries"
            )
        if self.head_spoiled:
            parts.append("the head's root differs from the recomputed tree")
        if parts:
            lines.append("because of the problems above: " + "; ".join(parts))
        return lines


def _sizes(sizes: list[int]) -> str:
    """``at size 10``, ``at sizes 10 and 20``, ``at sizes 10, 20, … 200`` (first and last)."""
    ordered = sorted(sizes)
    if len(ordered) == 1:
        return f"at size {ordered[0]}"
    if len(ordered) <= 3:
        return "at sizes " + ", ".join(map(str, ordered[:-1])) + f" and {ordered[-1]}"
    return f"at sizes {ordered[0]}, {ordered[1]}, … {ordered[-1]}"


class _Pass:
    """One pass over the leaves, a page at a time: the tree rebuilt as it is read, from
    what the bodies hash to (the stored leaf hash of a pruned body), until a gap."""

    def __init__(
        self, conn: Connection, report: VerifyReport, findings: _Findings, marks: list[int]
    ) -> None:
        self.conn = conn
        self.cursor: Any = conn.connection.cursor()
        self.report = report
        self.findings = findings
        self.marks = marks  # the sizes checkpoints were signed at
        self.roots: dict[int, bytes] = {}  # size -> recomputed root, at each mark
        self.frontier = merkle.Frontier(0, ())
        self.next_index = 0  # the index the next row should have
        self.gap: int | None = None  # the first missing entry: the tree stops there

    def run(self, page: int) -> None:
        while rows := _LEAF_PAGE.execute(
            self.cursor, self.conn.dialect, {"start": self.next_index, "page": page}
        ).fetchall():
            leaves = self._leaves(rows)
            if leaves:
                self._extend(leaves)

    def _leaves(self, rows: list[Any]) -> list[bytes]:
        """Check the page's rows (index and body); the leaves the tree grows by."""
        leaves: list[bytes] = []
        for idx, stored_leaf, body in rows:
            if idx != self.next_index:
                first, last = self.next_index, idx - 1
                missing = f"entry {first} is" if first == last else f"entries {first}-{last} are"
                self.findings.root(
                    first,
                    f"{missing} missing: the log jumps from entry {first - 1} to {idx} "
                    "(entries deleted)",
                    (first, last),
                )
                if self.gap is None:
                    self.gap = first
            leaf = bytes(stored_leaf)
            if body is None:
                self.report.pruned_bodies += 1
            else:
                self.report.checked_bodies += 1
                actual = merkle.leaf_hash(bytes(body))
                if actual != leaf:
                    self.findings.root(
                        idx,
                        f"entry {idx}: its stored bytes hash to {_short(actual)}, the log "
                        f"holds {_short(leaf)} (the entry was altered)",
                        (idx, idx),
                    )
                    leaf = actual  # what the checkpoints are checked against: these bytes
            if self.gap is None:
                leaves.append(leaf)
            self.next_index = idx + 1
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
        self._compare_nodes(created)

    def _compare_nodes(self, created: list[tuple[int, int, bytes]]) -> None:
        spans: dict[int, tuple[int, int]] = {}
        for level, idx, _ in created:
            if level:
                low, high = spans.get(level, (idx, idx))
                spans[level] = (min(low, idx), max(high, idx))
        if not spans:
            return
        values: dict[str, int] = {}
        for k, (level, (low, high)) in enumerate(spans.items()):
            values[f"level{k}"], values[f"low{k}"], values[f"high{k}"] = level, low, high
        rows = _nodes_in_spans(len(spans)).execute(self.cursor, self.conn.dialect, values)
        stored = {(level, idx): bytes(h) for level, idx, h in rows.fetchall()}
        # Smallest first: a bad node over a damaged span found already (or below it) is a
        # consequence; one over sound entries pins down a damage of its own.
        bad = sorted(
            (level, idx, (level, idx) in stored)
            for level, idx, h in created
            if level and stored.get((level, idx)) != h
        )
        for level, idx, present in bad:
            low, high = idx << level, ((idx + 1) << level) - 1
            if self.findings.spoiled(low, high):
                self.findings.bad_nodes += 1
                continue
            span = f"entries {low}-{high}"
            self.findings.root(
                low,
                f"the tree node over {span} (level {level}, index {idx}) is missing"
                if not present
                else f"{span} do not match the stored tree node (level {level}, index {idx}): "
                "entries were reordered or replaced, or the node altered",
                (low, high),
            )


def _check_head(report: VerifyReport, findings: _Findings, tree: _Pass, head_root: bytes) -> None:
    rows = tree.next_index  # one past the last entry stored
    if rows < report.size:
        findings.root(
            rows,
            f"the log ends after entry {rows - 1} but its head says {report.size} entries: "
            f"entries {rows}-{report.size - 1} are missing (tail truncated)",
            (rows, report.size - 1),
        )
    elif rows > report.size:
        findings.root(report.size, f"the log has {rows} entries but its head says {report.size}")
    elif tree.gap is None and tree.frontier.root() != head_root:
        if findings.spoiled(0, report.size - 1):
            findings.head_spoiled = True
        else:
            findings.root(
                report.size, f"the head's root differs from the tree of {report.size} entries"
            )


def _check_checkpoints(
    report: VerifyReport,
    findings: _Findings,
    tree: _Pass,
    stored: dict[int, tuple[bytes, str]],
    log: AuditLog,
    keys: tuple[KeyInForce, ...],
) -> None:
    """Every stored checkpoint: signed by the node's key in force at its size, for its
    row, for the log's root."""
    rebuilt = tree.frontier.size
    for size, (root, note) in stored.items():
        report.checkpoints += 1
        where = f"checkpoint at size {size}"
        try:
            text, key = _open_own(note, keys)
            parsed = Checkpoint.parse(text)
        except (NoteError, ValueError) as exc:
            findings.root(size, f"{where}: its signature does not verify with the node key: {exc}")
            continue
        if not key.covers(size):
            in_force = [k.describe() for k in keys if k.covers(size)]
            findings.root(
                size,
                f"{where}: signed by the node's {key.describe()}, which was not in force at "
                f"that size (in force: {', '.join(in_force) or 'none'}): a process kept a "
                "retired key, or someone else holds it",
            )
            continue
        if (parsed.origin, parsed.size, parsed.root_hash) != (log.origin, size, root):
            findings.root(size, f"{where}: the signed note does not match the stored row")
        elif size > rebuilt:
            if tree.gap is not None and tree.gap < size:
                findings.unchecked.append(size)
            elif findings.spoiled(rebuilt, size - 1):  # the tail is missing: said above
                findings.beyond.append(size)
            else:
                findings.root(size, f"{where}: it commits to {size} entries, the log has {rebuilt}")
        elif tree.roots.get(size, merkle.EMPTY_ROOT if size == 0 else None) != root:
            if findings.spoiled(0, size - 1):
                findings.bad_checkpoints.append(size)
            else:
                findings.root(
                    size,
                    f"{where}: its root {_short(root)} is not the root of the log's first "
                    f"{size} entries (entries altered, reordered or replaced)",
                )


def _check_head_signed(report: VerifyReport, findings: _Findings, marks: list[int]) -> None:
    """A non-empty head must have a checkpoint at its size (checked above when present)."""
    if not report.size or report.size in marks:
        return
    below = [m for m in marks if m < report.size]
    nearest = f"the nearest is at size {below[-1]}" if below else "none is stored at all"
    findings.root(
        report.size,
        f"the head ({report.size} entries) has no checkpoint signed by the node at its size "
        f"({nearest}): the log was appended to, rewritten or truncated in the database "
        "without the node's key; keep the database as evidence, restore the ledger tables "
        "from a backup and investigate",
    )


def verify(log: AuditLog, keys: Keys, page: int = 50_000) -> VerifyReport:
    """Recompute the whole log from the stored bytes and check everything stored.

    ``keys`` is the node's key, or every key it has signed with and the sizes each
    signed (:class:`KeyInForce`). Every problem is reported once, root causes first, in
    log order; see the module's docstring for what is checked.
    """
    in_force = _in_force(keys)
    report = VerifyReport()
    findings = _Findings()
    with read_snapshot(log.engine) as conn:
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
        tree = _Pass(conn, report, findings, marks)
        tree.run(page)
    _check_head(report, findings, tree, bytes(head_root))
    _check_checkpoints(report, findings, tree, stored, log, in_force)
    _check_head_signed(report, findings, marks)
    report.root_causes = len(findings.roots)
    report.problems = findings.lines()
    return report


# --- what the peers vouch for ---------------------------------------------------------------


@dataclass(frozen=True)
class Vouched:
    """A checkpoint of this node's log that a witness vouches for: the note as the node
    signed it, the witness's cosignature line on it, and the witness's known keys."""

    witness: str  # the witnessing member
    note: str
    cosignature: str
    verifiers: tuple[CosignatureVerifier, ...]


@dataclass
class WitnessedReport:
    """What :func:`verify_witnessed` found: the witnesses whose cosignatures count, and
    every problem, once per checkpoint vouched for."""

    size: int = 0
    witnesses: list[str] = field(default_factory=list)  # whose cosignature verified
    largest: int = 0  # the largest checkpoint a witness vouches for
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem, and at least one witness vouches: a node no peer vouches for (its
        peers unreachable, or none ever cosigned) cannot show it was not rolled back."""
        return not self.problems and bool(self.witnesses)


def verify_witnessed(
    log: AuditLog, vouched: Iterable[Vouched], keys: Keys | None = None
) -> WitnessedReport:
    """The log's head against the checkpoints its witnesses cosigned.

    A vouched-for checkpoint counts when it is signed by the node's key and the
    witness's cosignature on it verifies; one that does not is a problem of its own
    (a witness presenting it is mistaken or lying). A head smaller than a checkpoint
    that counts is a rollback; a log whose first entries no longer hash to its root
    was rewritten. Several witnesses of the same checkpoint make one problem naming
    them all. ``keys`` are the node's keys with the sizes each signed (default: its
    present key alone), as for :func:`verify`.
    """
    report = WitnessedReport(size=log.size())
    own = _in_force(log.signer.verifier() if keys is None else keys)
    by_checkpoint: dict[tuple[int, bytes], tuple[Checkpoint, list[str], int]] = {}
    for v in vouched:
        try:
            text, signer = _open_own(v.note, own)
            checkpoint = Checkpoint.parse(text)
            if not signer.covers(checkpoint.size):
                raise NoteError(
                    f"its checkpoint of size {checkpoint.size} is signed by the node's "
                    f"{signer.describe()}, which was not in force at that size"
                )
            cosignatures = verify_cosignatures(text, [v.cosignature], v.verifiers)
        except NoteError as exc:
            report.problems.append(
                f"{v.witness} vouches for a checkpoint that does not verify: {exc}"
            )
            continue
        if not cosignatures:
            report.problems.append(
                f"{v.witness}'s cosignature is not by a key the memorandum lists for it"
            )
            continue
        if checkpoint.origin != log.origin:
            report.problems.append(
                f"{v.witness} vouches for a checkpoint of {checkpoint.origin!r}, not of this log"
            )
            continue
        key = (checkpoint.size, checkpoint.root_hash)
        _, names, when = by_checkpoint.get(key, (checkpoint, [], 0))
        if v.witness not in names:
            names.append(v.witness)
        by_checkpoint[key] = (checkpoint, names, max(when, cosignatures[0].timestamp))
        if v.witness not in report.witnesses:
            report.witnesses.append(v.witness)
    for (size, root), (_, names, when) in sorted(by_checkpoint.items()):
        report.largest = max(report.largest, size)
        who = " and ".join(sorted(names))
        at = dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")
        if size > report.size:
            report.problems.append(
                f"the log has {report.size} entries, but {who} cosigned a checkpoint of {size} "
                f"entries that this node signed (cosigned at {at}): the log was rolled back to "
                "an earlier state; keep the database as evidence and restore the ledger from a "
                "backup at least that recent"
            )
        elif log.root(size)[1] != root:
            report.problems.append(
                f"the log's first {size} entries no longer hash to the root {_short(root)} that "
                f"{who} cosigned (at {at}): the log was rewritten after the witnesses saw it"
            )
    return report
