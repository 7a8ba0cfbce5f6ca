"""A published theme's feed: an RFC 9162 Merkle log per theme, with signed checkpoints.

:class:`FeedLog` keeps every feed this node publishes in ``feed_leaves`` (each
leaf's FeedChange bytes and leaf hash), ``feed_nodes`` (every perfect subtree
above the leaves) and ``feed_heads`` (size, root and the latest signed
checkpoint per theme), with the audit ledger's arithmetic
(``creditexchange.node.ledger.merkle``) and its signed-note format
(``creditexchange.node.ledger.note``). What becomes a leaf is decided by
``creditexchange.node.sync.publish``; serving the feed is
``creditexchange.node.sync.service``.

Invariants this module keeps:

* **Append-only, one tree per theme.** :meth:`FeedLog.append` extends the tree
  from the head as stored and moves the head with ``WHERE size = <old size>``:
  a second writer on the same feed cannot interleave (the loser's transaction
  raises :class:`~creditexchange.errors.ConcurrentWriter` and must roll back).
  A caller that decided what to append from what it read may pin the size it
  read (``expected_size``), so a change decided on a stale view is never appended.
* **In the caller's transaction.** An append writes leaves, nodes and head on the
  caller's connection, so the change and whatever records it was made (the
  publisher's ``feed_published`` row) commit together or not at all.
* **Every head is signed.** Each append signs one checkpoint (C2SP signed note)
  for exactly the head it writes, with the node's signing key under the feed's
  origin ``credit-exchange/<federation>/<publisher>/feed/<theme>`` (also the key
  name, as for the audit ledger). A checkpoint for an earlier size is signed on
  demand (:meth:`FeedLog.checkpoint`): Ed25519 signatures are deterministic, so
  the note for a size is always the same bytes, and since every size is a prefix
  of the one tree, any two checkpoints of a feed are consistent.
* **The bytes hashed are the bytes stored**, and reads are batched: a page of
  leaves is one query, a root or a proof at any size reads O(log n) stored
  hashes in at most two queries, an append is one ``executemany`` per table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from creditexchange.clock import now_us
from creditexchange.errors import ConcurrentWriter, LedgerError, NoteError
from creditexchange.node.database.driver import Prepared, padded, select_keyed
from creditexchange.node.database.models import FEED_HEADS, FEED_LEAVES, FEED_NODES
from creditexchange.node.ledger import merkle
from creditexchange.node.ledger.note import Checkpoint, Signer, Verifier, open_note, sign_note

__all__ = ["FeedHead", "FeedLog", "feed_origin"]


def feed_origin(federation: str, publisher: str, theme: str) -> str:
    """The checkpoint origin (and key name) of ``publisher``'s feed of ``theme``."""
    return f"credit-exchange/{federation}/{publisher}/feed/{theme}"


@dataclass(frozen=True)
class FeedHead:
    """A feed as it stands: its size, root and the checkpoint signed for them."""

    theme: str
    size: int
    root_hash: bytes
    checkpoint: str  # the signed note, exactly as signed
    signed_us: int


_HEAD = Prepared(
    select(
        FEED_HEADS.c.size, FEED_HEADS.c.root_hash, FEED_HEADS.c.checkpoint, FEED_HEADS.c.signed_us
    ).where(FEED_HEADS.c.theme == bindparam("theme"))
)
_THEMES = Prepared(select(FEED_HEADS.c.theme).order_by(FEED_HEADS.c.theme))
_MOVE_HEAD = Prepared(
    update(FEED_HEADS)
    .where(FEED_HEADS.c.theme == bindparam("theme"), FEED_HEADS.c.size == bindparam("old_size"))
    .values(
        size=bindparam("size"),
        root_hash=bindparam("root"),
        checkpoint=bindparam("note"),
        signed_us=bindparam("us"),
    )
)
_INSERT_LEAF = Prepared(
    insert(FEED_LEAVES).values(
        theme=bindparam("theme"),
        idx=bindparam("idx"),
        leaf_hash=bindparam("leaf"),
        body=bindparam("body"),
    ),
    row=("theme", "idx", "leaf", "body"),
)
_INSERT_NODE = Prepared(
    insert(FEED_NODES).values(
        theme=bindparam("theme"),
        level=bindparam("level"),
        idx=bindparam("idx"),
        hash=bindparam("hash"),
    ),
    row=("theme", "level", "idx", "hash"),
)
_LEAF_PAGE = Prepared(
    select(FEED_LEAVES.c.idx, FEED_LEAVES.c.body)
    .where(
        FEED_LEAVES.c.theme == bindparam("theme"),
        FEED_LEAVES.c.idx >= bindparam("start"),
        FEED_LEAVES.c.idx < bindparam("end"),
    )
    .order_by(FEED_LEAVES.c.idx)
)


@lru_cache(maxsize=64)
def _leaf_hashes_statement(n: int) -> Prepared:
    return Prepared(
        select(FEED_LEAVES.c.idx, FEED_LEAVES.c.leaf_hash).where(
            FEED_LEAVES.c.theme == bindparam("theme"),
            FEED_LEAVES.c.idx.in_([bindparam(f"i{k}") for k in range(n)]),
        )
    )


def _head_row(cursor: Any, dialect: Dialect, theme: str) -> tuple[Any, ...] | None:
    row = _HEAD.execute(cursor, dialect, {"theme": theme}).fetchone()
    return None if row is None else tuple(row)


class FeedLog:
    """The feeds this node publishes: append (in a caller's transaction), read, prove.

    ``signer`` is the node's signing key (the audit ledger's); each feed signs with
    it under its own origin, ``origin_for_theme(theme)``. Safe to share between
    threads: every call uses a connection of its own (or the caller's).
    """

    def __init__(
        self, engine: Engine, signer: Signer, origin_for_theme: Callable[[str], str]
    ) -> None:
        self.engine = engine
        self.signer = signer
        self.origin_for_theme = origin_for_theme
        self._signers: dict[str, Signer] = {}
        # theme -> the frontier last appended; used only while the stored head matches it
        self._frontiers: dict[str, merkle.Frontier] = {}
        self._lock = threading.Lock()

    # --- keys ----------------------------------------------------------------------

    def signer_for(self, theme: str) -> Signer:
        """The node's key under the feed's origin: what signs the feed's checkpoints."""
        with self._lock:
            signer = self._signers.get(theme)
            if signer is None:
                signer = Signer(self.origin_for_theme(theme), self.signer.key)
                self._signers[theme] = signer
            return signer

    def verifier_for(self, theme: str) -> Verifier:
        """The verifier a subscriber needs for the feed's checkpoints."""
        return self.signer_for(theme).verifier()

    # --- writing --------------------------------------------------------------------

    def size_in(self, conn: Connection, theme: str) -> int:
        """The feed's size as ``conn`` sees it (0 before its first change): read it before
        deciding what to append, and pass it to :meth:`append` as ``expected_size``."""
        cursor = conn.connection.cursor()
        try:
            row = _head_row(cursor, conn.dialect, theme)
        finally:
            cursor.close()
        return 0 if row is None else int(row[0])

    def append(
        self,
        conn: Connection,
        theme: str,
        bodies: Sequence[bytes],
        *,
        expected_size: int | None = None,
    ) -> int:
        """Append ``bodies`` (FeedChange bytes, in order) to the feed of ``theme`` on
        ``conn``, inside the caller's transaction, with one signed checkpoint; returns
        the new size.

        Raises :class:`ConcurrentWriter` when the feed is not at ``expected_size`` (when
        given) or another writer moved it meanwhile; the caller's transaction must then
        roll back. Nothing is written for an empty ``bodies``.
        """
        cursor = conn.connection.cursor()
        dialect = conn.dialect
        try:
            row = _head_row(cursor, dialect, theme)
            size = 0 if row is None else int(row[0])
            root = merkle.EMPTY_ROOT if row is None else bytes(row[1])
            if expected_size is not None and size != expected_size:
                raise ConcurrentWriter(
                    f"the feed of {theme} is at size {size}, not {expected_size} as read "
                    "before deciding what to append: another publisher appended meanwhile; "
                    "nothing was written, read the records again"
                )
            if not bodies:
                return size
            old = self._frontier(cursor, dialect, theme, size, root)
            leaves = [merkle.leaf_hash(body) for body in bodies]
            new, created = merkle.extend(old, leaves)
            new_root = new.root()
            note = sign_note(
                Checkpoint(self.origin_for_theme(theme), new.size, new_root).body(),
                self.signer_for(theme),
            )
            values = {
                "theme": theme,
                "size": new.size,
                "root": new_root,
                "note": note,
                "us": now_us(),
                "old_size": size,
            }
            if row is None:
                self._insert_head(conn, values)
            elif _MOVE_HEAD.execute(cursor, dialect, values).rowcount != 1:
                raise ConcurrentWriter(
                    f"the feed of {theme} moved past size {size} under this writer; "
                    "nothing was written"
                )
            _INSERT_LEAF.executemany_rows(
                cursor,
                dialect,
                [
                    (theme, size + i, leaf, body)
                    for i, (leaf, body) in enumerate(zip(leaves, bodies, strict=True))
                ],
            )
            inner = [(theme, level, idx, h) for level, idx, h in created if level > 0]
            if inner:
                _INSERT_NODE.executemany_rows(cursor, dialect, inner)
        finally:
            cursor.close()
        with self._lock:  # trusted only while the stored head still matches it
            self._frontiers[theme] = new
        return new.size

    @staticmethod
    def _insert_head(conn: Connection, values: dict[str, Any]) -> None:
        try:
            conn.execute(
                insert(FEED_HEADS).values(
                    theme=values["theme"],
                    size=values["size"],
                    root_hash=values["root"],
                    checkpoint=values["note"],
                    signed_us=values["us"],
                )
            )
        except IntegrityError:  # the transaction is spoilt: the caller rolls it back
            raise ConcurrentWriter(
                f"the feed of {values['theme']} was started by another writer meanwhile; "
                "nothing was written"
            ) from None

    def _frontier(
        self, cursor: Any, dialect: Dialect, theme: str, size: int, root: bytes
    ) -> merkle.Frontier:
        with self._lock:
            cached = self._frontiers.get(theme)
        if cached is not None and cached.size == size and cached.root() == root:
            return cached
        needed = merkle.nodes_for([(0, size)]) if size else set()
        frontier = merkle.frontier_from(size, _lookup(cursor, dialect, theme, needed))
        if frontier.root() != root:
            raise LedgerError(
                f"the stored tree of the feed of {theme} does not lead to its head's root at "
                f"size {size}: the feed's tables were altered; nothing was appended"
            )
        return frontier

    # --- reading --------------------------------------------------------------------

    def themes(self) -> list[str]:
        """The themes this node has published at least one change of."""
        with self.engine.connect() as conn:
            rows = _THEMES.execute(conn.connection.cursor(), conn.dialect).fetchall()
        return [str(theme) for (theme,) in rows]

    def head(self, theme: str) -> FeedHead | None:
        """The feed's head; None before its first change."""
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                row = _head_row(cursor, conn.dialect, theme)
            finally:
                cursor.close()
        if row is None:
            return None
        return FeedHead(theme, int(row[0]), bytes(row[1]), str(row[2]), int(row[3]))

    def size(self, theme: str) -> int:
        head = self.head(theme)
        return 0 if head is None else head.size

    def _require(self, theme: str, size: int) -> None:
        current = self.size(theme)
        if not 0 <= size <= current:
            raise LedgerError(
                f"size {size} is outside the feed of {theme}, which has {current} changes"
            )

    def leaves(
        self, theme: str, start: int, end: int, *, max_bytes: int | None = None
    ) -> list[bytes]:
        """The FeedChange bytes of leaves ``start`` to ``end - 1``, in order, in one query.

        With ``max_bytes`` the list stops before the leaf that would take it past that
        many bytes (but holds at least one leaf when the range is not empty). Raises
        :class:`LedgerError` for a range outside the feed or a leaf missing from it.
        """
        self._require(theme, end)
        if not 0 <= start <= end:
            raise LedgerError(f"[{start}, {end}) is not a range of the feed of {theme}")
        if start == end:
            return []
        bodies: list[bytes] = []
        taken = 0
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                rows = _LEAF_PAGE.execute(
                    cursor, conn.dialect, {"theme": theme, "start": start, "end": end}
                )
                while chunk := rows.fetchmany(256):  # read no further than the page needs
                    for idx, body in chunk:
                        if idx != start + len(bodies):
                            raise LedgerError(
                                f"leaf {start + len(bodies)} of the feed of {theme} is missing "
                                "from the database: the feed's tables were altered"
                            )
                        data = bytes(body)
                        taken += len(data)
                        if max_bytes is not None and bodies and taken > max_bytes:
                            return bodies
                        bodies.append(data)
            finally:
                cursor.close()
        if len(bodies) != end - start:
            raise LedgerError(
                f"leaves {start + len(bodies)} to {end - 1} of the feed of {theme} are missing "
                "from the database: the feed's tables were altered"
            )
        return bodies

    def root(self, theme: str, size: int) -> bytes:
        """The feed's root (MTH) at ``size``."""
        self._require(theme, size)
        with self.engine.connect() as conn:
            lookup = self._reader(conn, theme, [(0, size)] if size else [])
            return merkle.root(size, lookup)

    def consistency_proof(self, theme: str, old_size: int, new_size: int) -> list[bytes]:
        """The RFC 9162 proof that the feed at ``old_size`` is a prefix of it at ``new_size``."""
        self._require(theme, new_size)
        if not 0 <= old_size <= new_size:
            raise LedgerError(
                f"there is no consistency proof of the feed of {theme} from size {old_size} "
                f"to {new_size}"
            )
        ranges = merkle.consistency_proof_ranges(old_size, new_size)
        with self.engine.connect() as conn:
            lookup = self._reader(conn, theme, ranges)
            return merkle.consistency_proof(old_size, new_size, lookup)

    def checkpoint(self, theme: str, size: int | None = None) -> str:
        """The feed's signed checkpoint at ``size`` (default: its head): the stored one
        for the head, one signed now for an earlier size (the same bytes every time)."""
        head = self.head(theme)
        current = 0 if head is None else head.size
        if size is None:
            size = current
        if not 0 <= size <= current:
            raise LedgerError(
                f"size {size} is outside the feed of {theme}, which has {current} changes"
            )
        if head is not None and size == head.size:
            try:
                open_note(head.checkpoint, [self.verifier_for(theme)])
                return head.checkpoint
            except NoteError:
                pass  # signed before a rotation of the node's key: signed again below
        root = merkle.EMPTY_ROOT if size == 0 else self.root(theme, size)
        body = Checkpoint(self.origin_for_theme(theme), size, root).body()
        return sign_note(body, self.signer_for(theme))

    def _reader(
        self, conn: Connection, theme: str, ranges: Iterable[tuple[int, int]]
    ) -> merkle.Lookup:
        cursor = conn.connection.cursor()
        try:
            return _lookup(cursor, conn.dialect, theme, merkle.nodes_for(ranges))
        finally:
            cursor.close()


def _lookup(cursor: Any, dialect: Dialect, theme: str, needed: set[merkle.NodeId]) -> merkle.Lookup:
    """Fetch the perfect subtree hashes ``needed`` of a feed in at most two queries."""
    found: dict[merkle.NodeId, bytes] = {}
    leaves = sorted(idx for level, idx in needed if level == 0)
    inner = sorted((level, idx) for level, idx in needed if level > 0)
    if leaves:
        values: dict[str, Any] = padded(leaves, "i")
        values["theme"] = theme
        rows = _leaf_hashes_statement(len(values) - 1).execute(cursor, dialect, values)
        for idx, h in rows.fetchall():
            found[(0, int(idx))] = bytes(h)
    # each key whole, the theme in it: with the theme outside the OR, SQLite gives up the
    # OR's per-term lookups beyond a dozen terms and scans every node of the feed instead
    key = ("theme", "level", "idx")
    keys = [(theme, level, idx) for level, idx in inner]
    for _, level, idx, h in select_keyed(cursor, dialect, FEED_NODES, (*key, "hash"), key, keys):
        found[(int(level), int(idx))] = bytes(h)

    def lookup(node: merkle.NodeId) -> bytes:
        try:
            return found[node]
        except KeyError:
            raise LedgerError(
                f"the feed of {theme} lacks its tree node at level {node[0]}, index {node[1]}: "
                "the feed's tables were altered"
            ) from None

    return lookup
