"""The entries of a log about one counterpart, page by page: what a peer's
``Audit.ListEntries`` is answered with, and what reconciliation reads of its own side.

A page is bounded (:data:`LISTING_PAGE_ENTRIES`, :data:`LISTING_PAGE_BYTES`,
:data:`LISTING_SCAN_ROWS`); the first page of a range is found by a binary search over
the entries' own recorded times (inside the hashed bodies), so a recent range of a
years-long log costs no scan of its past.
"""

from __future__ import annotations

from dataclasses import dataclass

from creditexchange.clock import now_us
from creditexchange.node.ledger.log import AuditLog, StoredEntry
from creditexchange.v1 import audit_pb2

__all__ = [
    "CLOCK_SLACK_US",
    "LISTING_PAGE_BYTES",
    "LISTING_PAGE_ENTRIES",
    "LISTING_SCAN_ROWS",
    "EntryListing",
    "entries_about",
    "first_recorded_at",
]

LISTING_PAGE_ENTRIES = 256
"""The most entries one page of a listing holds (each carries its inclusion proof)."""
LISTING_PAGE_BYTES = 4 << 20
"""The most entry bytes one page holds: a page stays well within a gRPC message."""
LISTING_SCAN_ROWS = 20_000
"""The most rows one page reads, listed or not: a page costs a bounded time."""
CLOCK_SLACK_US = 300_000_000
"""How far out of time order (5 minutes) entries may stand in index order: an entry's time
is taken when it is built, and appends of concurrent calls (or of several processes
sharing the database) commit in the order they reach the log."""

_EXCHANGE_KINDS = frozenset({audit_pb2.QUERY, audit_pb2.CHECK, audit_pb2.BATCH_CHECK})


@dataclass(frozen=True)
class EntryListing:
    """One page of the entries about a counterpart.

    ``entries`` are in index order: every query, check and batch check between this node
    and the counterpart (INCOMING from it, OUTGOING to it) recorded in the range, and any
    pruned entry met among them (``body`` None: its time and parties are gone).
    ``next_index`` is where the next page starts (None: the range is complete).
    ``pruned_before_us`` (first page): bodies of entries recorded before that time may
    be pruned here (the entry just before the range's first is pruned); 0 otherwise.
    """

    entries: list[StoredEntry]
    next_index: int | None
    pruned_before_us: int


def entries_about(
    log: AuditLog,
    counterpart: str,
    from_us: int,
    to_us: int,
    start: int | None,
    end: int,
) -> EntryListing:
    """A page of the entries about ``counterpart`` recorded in [``from_us``, ``to_us``)
    among the log's first ``end`` entries, from index ``start`` (None: the first page,
    whose start is found by a binary search over the entries' recorded times, O(log n)
    reads, so a recent range of a years-long log costs no scan of its past).

    Entries stand in index order nearly in time order (within :data:`CLOCK_SLACK_US`);
    the search and the scan allow for that, and each entry listed is in the range by its
    own recorded time. A pruned entry has no time: the search takes it as older than any
    range, since retention prunes the oldest bodies."""
    pruned_before = 0
    if start is None:
        start = first_recorded_at(log, from_us - CLOCK_SLACK_US, end)
        before = _stored(log, start - 1) if start > 0 else None
        if before is not None and before.body is None:
            first = _stored(log, start) if start < end else None
            recorded = _recorded_us(first)
            pruned_before = recorded if recorded is not None else now_us()
    listed: list[StoredEntry] = []
    size = scanned = 0
    for stored in log.entries(start, end, page=1000):
        if (
            scanned >= LISTING_SCAN_ROWS
            or len(listed) >= LISTING_PAGE_ENTRIES
            or size >= LISTING_PAGE_BYTES
        ):
            return EntryListing(listed, stored.index, pruned_before)
        scanned += 1
        if stored.body is None:
            listed.append(stored)
            continue
        entry = audit_pb2.AuditEntry()
        try:
            entry.ParseFromString(stored.body)
        except Exception:
            continue  # not an entry this node wrote; `audit verify` reports it
        if entry.time_unix_micros >= to_us + CLOCK_SLACK_US:
            break
        if from_us <= entry.time_unix_micros < to_us and _is_about(entry, counterpart):
            listed.append(stored)
            size += len(stored.body)
    return EntryListing(listed, None, pruned_before)


def _is_about(entry: audit_pb2.AuditEntry, counterpart: str) -> bool:
    """A query, check or batch check between this node and ``counterpart``, either way."""
    return entry.kind in _EXCHANGE_KINDS and (
        (entry.direction == audit_pb2.INCOMING and entry.requester == counterpart)
        or (entry.direction == audit_pb2.OUTGOING and entry.responder == counterpart)
    )


def _stored(log: AuditLog, index: int) -> StoredEntry | None:
    return next(iter(log.entries(index, index + 1)), None)


def _recorded_us(stored: StoredEntry | None) -> int | None:
    if stored is None or stored.body is None:
        return None
    entry = audit_pb2.AuditEntry()
    try:
        entry.ParseFromString(stored.body)
    except Exception:
        return None
    return entry.time_unix_micros or None


def first_recorded_at(log: AuditLog, time_us: int, end: int) -> int:
    """The first index among the log's first ``end`` whose entry was recorded at
    ``time_us`` or later, by a binary search (O(log n) reads), taking a pruned or
    undatable entry as older than any time.

    Entries stand in index order within :data:`CLOCK_SLACK_US` of time order: a caller
    that must not miss an entry of a range searches from ``from_us - CLOCK_SLACK_US``
    (every entry before the index found is older than ``from_us``) and stops at the
    index found for ``to_us + CLOCK_SLACK_US`` (every entry from it on is newer than
    ``to_us``). ``entries_about`` and the auditors' search (``ledger.search``) both do."""
    low, high = 0, end
    while low < high:
        middle = (low + high) // 2
        recorded = _recorded_us(_stored(log, middle))
        if recorded is None or recorded < time_us:
            low = middle + 1
        else:
            high = middle
    return low
