"""An auditor's search of the node's own ledger: the entries recorded in a time range
that match what they record (direction, parties, partner, officer, purpose, decision,
outcome, subject), page by page, and every match of a range for an export of any size.

What it promises:

* **Bounded work per page.** A page reads at most ``scan_rows`` rows
  (:data:`SEARCH_SCAN_ROWS`) and returns at most ``limit`` entries
  (:data:`SEARCH_PAGE_LIMIT`); where it stopped is its ``next_cursor``, an entry index
  to resume from. However large the log and however rare the matches, no page costs
  more than that, so a search never holds a request (or a database connection) for
  long; a caller pages on, or exports, to see the rest.
* **The time range costs no scan of the past.** Both ends of the range are found by
  the binary search over the entries' own recorded times that the peers' listings
  use (:func:`~creditexchange.node.ledger.listing.first_recorded_at`, allowing for
  :data:`~creditexchange.node.ledger.listing.CLOCK_SLACK_US`); only the rows between
  are read, and each entry listed is in the range by its own recorded time.
* **Subjects by their HMAC only.** The filter holds the subject's HMAC, computed once
  by the caller with the node's key (:func:`~creditexchange.node.ledger.entries.subject_hmac`);
  it matches an entry's ``subject_hmac`` and each of its ``subject_hmacs`` (a batch
  check). No identifier is ever in a filter, a page or an error.
* **Every key the node has held.** A node that rotated its subject-HMAC key wrote
  the entries before the rotation under the old key; the filter then holds the
  subject's HMAC under each key (``SubjectKeyRing.hmacs`` in
  ``creditexchange.node.app.keys``), and an entry matches when it holds any of them.
  An HMAC under one key never equals another key's, so nothing else is found.
* **Decode only what may match.** Every value the filter names must appear in an
  entry's stored bytes (proto3 stores strings and bytes as they are), so a row
  without them is passed over without being decoded; the rest are decoded and
  matched field by field, exactly.
* **Pruned entries are not guessed at.** An entry whose body retention dropped has
  no time, parties or subject left: a search that names no field lists it (index
  and leaf hash, ``entry`` None) where it is met; a search that names one cannot say
  whether it matched, and counts it (``SearchPage.pruned``) instead.
* **Read only.** Nothing here writes; recording the search is its caller's duty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from creditexchange.errors import LedgerError
from creditexchange.node.ledger.listing import CLOCK_SLACK_US, first_recorded_at
from creditexchange.node.ledger.log import AuditLog
from creditexchange.v1 import audit_pb2

__all__ = [
    "SEARCH_PAGE_LIMIT",
    "SEARCH_SCAN_ROWS",
    "EntryFilter",
    "Found",
    "SearchPage",
    "entry_at",
    "matching_entries",
    "search",
]

SEARCH_PAGE_LIMIT = 500
"""The most entries one page returns."""
SEARCH_SCAN_ROWS = 20_000
"""The most rows one page reads, matching or not (a few tens of milliseconds on SQLite)."""
_READ_ROWS = 1000
"""Rows fetched per database round trip while a page scans."""
_HMAC_BYTES = 32


@dataclass(frozen=True)
class EntryFilter:
    """What an entry must hold to be found; a field left None asks nothing of it.

    ``from_us`` and ``to_us`` bound the time the entry was recorded, [from, to), in µs
    since the epoch (UTC). ``provider`` is the entry's responder; ``allowed`` its
    decision (True: allowed, False: denied; an entry without a decision matches
    neither); ``status`` its outcome status (``OK``, ``PERMISSION_DENIED`` …);
    ``subject_hmac`` the HMAC of the subject under this node's key, or a tuple of its
    HMACs under every key the node has held (any of them matches). A filter that cannot
    match anything (a range that ends before it begins, an HMAC of the wrong length, an
    empty tuple of HMACs) is refused with :class:`LedgerError`.
    """

    from_us: int | None = None
    to_us: int | None = None
    direction: int | None = None  # an audit_pb2.Direction value
    requester: str | None = None
    provider: str | None = None
    partner: str | None = None
    officer: str | None = None
    purpose: str | None = None
    allowed: bool | None = None
    status: str | None = None
    subject_hmac: bytes | tuple[bytes, ...] | None = None
    _subject_hmacs: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _needles: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.from_us is not None and self.to_us is not None and self.to_us <= self.from_us:
            raise LedgerError(
                "the time range ends before it begins (or where it begins): give a start "
                "earlier than its end"
            )
        wanted = self.subject_hmac
        hmacs = () if wanted is None else (wanted,) if isinstance(wanted, bytes) else wanted
        if wanted is not None and not hmacs:
            raise LedgerError(
                "a subject filter holds at least one HMAC: compute them with "
                "ledger.entries.subject_hmac (or SubjectKeyRing.hmacs)"
            )
        for one in hmacs:
            if len(one) != _HMAC_BYTES:
                raise LedgerError(
                    f"a subject HMAC has {_HMAC_BYTES} bytes, this one {len(one)}: "
                    "compute it with ledger.entries.subject_hmac"
                )
        object.__setattr__(self, "_subject_hmacs", tuple(dict.fromkeys(hmacs)))
        object.__setattr__(self, "_needles", self._find_needles())

    @property
    def names_fields(self) -> bool:
        """Whether it asks anything of an entry's content beyond when it was recorded."""
        return any(
            value is not None
            for value in (
                self.direction,
                self.requester,
                self.provider,
                self.partner,
                self.officer,
                self.purpose,
                self.allowed,
                self.status,
                self.subject_hmac,
            )
        )

    def needles(self) -> tuple[bytes, ...]:
        """Byte strings every matching entry's stored bytes contain: the texts and the
        HMAC the filter names, when it names one (a proto3 string or bytes field is stored
        as it is)."""
        return self._needles

    def _find_needles(self) -> tuple[bytes, ...]:
        texts = (
            self.requester,
            self.provider,
            self.partner,
            self.officer,
            self.purpose,
            self.status,
        )
        found = [t.encode() for t in texts if t]
        if len(self._subject_hmacs) == 1:
            found.append(self._subject_hmacs[0])
        return tuple(found)

    def might_match(self, body: bytes) -> bool:
        """Whether an entry's stored bytes hold every needle and, when the filter names a
        subject's HMACs under several keys, one of them: false rules the entry out without
        decoding it."""
        if not all(needle in body for needle in self._needles):
            return False
        hmacs = self._subject_hmacs
        return len(hmacs) < 2 or any(h in body for h in hmacs)

    def matches(self, entry: audit_pb2.AuditEntry) -> bool:
        """Whether ``entry`` (decoded, with its body) is one this filter finds."""
        t = entry.time_unix_micros
        if self.from_us is not None and t < self.from_us:
            return False
        if self.to_us is not None and t >= self.to_us:
            return False
        if self.direction is not None and entry.direction != self.direction:
            return False
        texts = (
            (self.requester, entry.requester),
            (self.provider, entry.responder),
            (self.partner, entry.partner),
            (self.officer, entry.officer),
            (self.purpose, entry.purpose),
            (self.status, entry.outcome.status),
        )
        if any(wanted is not None and wanted != held for wanted, held in texts):
            return False
        if self.allowed is not None and (
            not entry.HasField("decision") or entry.decision.allowed != self.allowed
        ):
            return False
        return not self._subject_hmacs or any(
            h == entry.subject_hmac or h in entry.subject_hmacs for h in self._subject_hmacs
        )


@dataclass(frozen=True)
class Found:
    """An entry found: its index, its leaf hash, and the entry decoded (None: pruned)."""

    index: int
    leaf_hash: bytes
    entry: audit_pb2.AuditEntry | None


@dataclass(frozen=True)
class SearchPage:
    """One page of a search.

    ``entries`` in index order; ``next_cursor`` is the index the next page starts at
    (None: the search is complete); ``size`` the log's size the page was read against;
    ``scanned`` the rows read; ``pruned`` the pruned entries met that a filter naming
    fields could not be matched against (not listed).
    """

    entries: list[Found]
    next_cursor: int | None
    size: int
    scanned: int
    pruned: int


def _decoded(body: bytes) -> audit_pb2.AuditEntry | None:
    entry = audit_pb2.AuditEntry()
    try:
        entry.ParseFromString(body)
    except Exception:
        return None  # not an entry this node wrote; `audit verify` reports it
    return entry


def _bounds(log: AuditLog, where: EntryFilter, size: int) -> tuple[int, int]:
    """The index range that holds every entry recorded in the filter's time range."""
    start = (
        0 if where.from_us is None else first_recorded_at(log, where.from_us - CLOCK_SLACK_US, size)
    )
    stop = (
        size if where.to_us is None else first_recorded_at(log, where.to_us + CLOCK_SLACK_US, size)
    )
    return start, max(start, stop)


def search(
    log: AuditLog,
    where: EntryFilter,
    *,
    cursor: int | None = None,
    limit: int = 100,
    end: int | None = None,
    scan_rows: int = SEARCH_SCAN_ROWS,
) -> SearchPage:
    """A page of the entries among the log's first ``end`` (default: all it holds now)
    that ``where`` finds, from index ``cursor`` (None or 0: the beginning of the range).

    At most ``limit`` entries (1 to :data:`SEARCH_PAGE_LIMIT`) and ``scan_rows`` rows
    read. A cursor before the range starts where the range does; one past it gives an
    empty, complete page.
    """
    if not 1 <= limit <= SEARCH_PAGE_LIMIT:
        raise LedgerError(f"a page holds 1 to {SEARCH_PAGE_LIMIT} entries, not {limit}")
    if scan_rows < 1:
        raise LedgerError(f"a page must read at least one row, not {scan_rows}")
    size = log.size() if end is None else end
    start, stop = _bounds(log, where, size)
    if cursor is not None:
        start = max(start, cursor)
    listed: list[Found] = []
    scanned = pruned = 0
    for stored in log.entries(start, stop, page=min(scan_rows, _READ_ROWS)):
        if len(listed) >= limit or scanned >= scan_rows:
            return SearchPage(listed, stored.index, size, scanned, pruned)
        scanned += 1
        body = stored.body
        if body is None:
            if where.names_fields:
                pruned += 1
            else:
                listed.append(Found(stored.index, stored.leaf_hash, None))
            continue
        if not where.might_match(body):
            continue
        entry = _decoded(body)
        if entry is not None and where.matches(entry):
            listed.append(Found(stored.index, stored.leaf_hash, entry))
    return SearchPage(listed, None, size, scanned, pruned)


def matching_entries(
    log: AuditLog,
    where: EntryFilter,
    *,
    end: int | None = None,
    scan_rows: int = SEARCH_SCAN_ROWS,
) -> Iterator[Found]:
    """Every entry among the log's first ``end`` (default: all it holds when the first
    page is read) that ``where`` finds, in index order, one page at a time: memory for
    one page whatever the range, for an export of any size."""
    size = log.size() if end is None else end
    cursor: int | None = None
    while True:
        page = search(
            log, where, cursor=cursor, limit=SEARCH_PAGE_LIMIT, end=size, scan_rows=scan_rows
        )
        yield from page.entries
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def entry_at(log: AuditLog, index: int) -> Found:
    """Entry ``index`` decoded (``entry`` None once pruned), as a search shows it.

    :class:`LedgerError` when the log does not hold it, or holds bytes that are not an
    audit entry (``credit-node audit verify`` reports those).
    """
    stored = next(iter(log.entries(index, index + 1)), None)
    if stored is None:
        raise LedgerError(f"entry {index} is not in the log, which has {log.size()} entries")
    if stored.body is None:
        return Found(stored.index, stored.leaf_hash, None)
    entry = _decoded(stored.body)
    if entry is None:
        raise LedgerError(
            f"entry {index} is not an audit entry this node wrote: run 'credit-node audit verify'"
        )
    return Found(stored.index, stored.leaf_hash, entry)
