"""The auditors' search of a node's own ledger (``ledger.search``), on a real log in the
database: each filter finds exactly the entries a plain reading of the specification
finds, subjects match by HMAC (single and batch), the time range is found without
scanning the past, pages are bounded and resume where they stopped, an export sees
every match of its range and nothing appended after it began, and pruned or foreign
bodies are never guessed at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from nacl.signing import SigningKey
from sqlalchemy import Engine

from creditexchange.clock import CST
from creditexchange.errors import LedgerError
from creditexchange.node.ledger import AuditLog
from creditexchange.node.ledger.entries import encode, subject_hmac
from creditexchange.node.ledger.listing import CLOCK_SLACK_US
from creditexchange.node.ledger.note import Signer
from creditexchange.node.ledger.search import (
    SEARCH_PAGE_LIMIT,
    EntryFilter,
    Found,
    matching_entries,
    search,
)
from creditexchange.v1 import audit_pb2

ME = "huizhou"
PEERS = ("shenzhen", "customs")
SECRET = b"k" * 32
SUBJECTS = ("91441300MA4UXXXX0A", "91440300MA5FYYYY1B", "441302199001011234", "X4")
MINUTE = 60_000_000
T0 = int(dt.datetime(2026, 12, 1, tzinfo=CST).timestamp()) * 1_000_000
DIRECTIONS = (audit_pb2.INCOMING, audit_pb2.OUTGOING, audit_pb2.LOCAL)


def h(subject: str) -> bytes:
    return subject_hmac(SECRET, subject)


@dataclass(frozen=True)
class Spec:
    """What entry ``i`` of the test log records, as plain data."""

    i: int
    time_us: int
    direction: int
    requester: str
    responder: str
    partner: str
    officer: str
    purpose: str
    allowed: bool | None
    status: str
    subjects: tuple[str, ...]

    def entry(self) -> audit_pb2.AuditEntry:
        entry = audit_pb2.AuditEntry(
            time_unix_micros=self.time_us,
            requester=self.requester,
            responder=self.responder,
            direction=self.direction,  # type: ignore[arg-type]
            kind=audit_pb2.QUERY if self.direction != audit_pb2.LOCAL else audit_pb2.API_CALL,
            partner=self.partner,
            officer=self.officer,
            purpose=self.purpose,
            outcome=audit_pb2.Outcome(status=self.status),
            subject_count=len(self.subjects),
        )
        if self.allowed is not None:
            entry.decision.CopyFrom(audit_pb2.Decision(allowed=self.allowed, mode="full"))
        if len(self.subjects) == 1:
            entry.subject_hmac = h(self.subjects[0])
        else:
            entry.subject_hmacs.extend(h(s) for s in self.subjects)
        return entry


def spec(i: int, time_us: int | None = None) -> Spec:
    direction = DIRECTIONS[i % 3]
    peer = PEERS[i % 2]
    requester, responder = {
        audit_pb2.INCOMING: (peer, ME),
        audit_pb2.OUTGOING: (ME, peer),
        audit_pb2.LOCAL: (ME, ME),
    }[direction]
    allowed = None if direction == audit_pb2.LOCAL else i % 7 != 0
    subjects = (SUBJECTS[0], SUBJECTS[1]) if i % 10 == 9 else (SUBJECTS[i % 4],)
    return Spec(
        i=i,
        time_us=T0 + i * MINUTE if time_us is None else time_us,
        direction=direction,
        requester=requester,
        responder=responder,
        partner="land-centre" if i % 4 == 0 else "",
        officer=f"officer-{i % 5}",
        purpose="bank_credit" if i % 2 else "public_procurement",
        allowed=allowed,
        status="PERMISSION_DENIED" if allowed is False else "OK",
        subjects=subjects,
    )


SPECS = [spec(i) for i in range(60)]


@pytest.fixture
def log(engine: Engine) -> AuditLog:
    store = AuditLog(engine, Signer("credit-exchange/3plus2/huizhou/audit", SigningKey(b"s" * 32)))
    store.commit([encode(s.entry()) for s in SPECS])
    return store


def indices(found: list[Found]) -> list[int]:
    return [f.index for f in found]


CASES: dict[str, tuple[EntryFilter, Callable[[Spec], bool]]] = {
    "everything": (EntryFilter(), lambda s: True),
    "incoming": (EntryFilter(direction=audit_pb2.INCOMING), lambda s: s.i % 3 == 0),
    "local": (EntryFilter(direction=audit_pb2.LOCAL), lambda s: s.i % 3 == 2),
    "asked by shenzhen": (EntryFilter(requester="shenzhen"), lambda s: s.requester == "shenzhen"),
    "answered by customs": (EntryFilter(provider="customs"), lambda s: s.responder == "customs"),
    "through a partner": (EntryFilter(partner="land-centre"), lambda s: s.i % 4 == 0),
    "by one officer": (EntryFilter(officer="officer-3"), lambda s: s.i % 5 == 3),
    "for a purpose": (EntryFilter(purpose="bank_credit"), lambda s: s.i % 2 == 1),
    "allowed": (EntryFilter(allowed=True), lambda s: s.allowed is True),
    "denied": (EntryFilter(allowed=False), lambda s: s.allowed is False),
    "refused": (EntryFilter(status="PERMISSION_DENIED"), lambda s: s.allowed is False),
    "a subject, alone or in a batch": (
        EntryFilter(subject_hmac=h(SUBJECTS[1])),
        lambda s: SUBJECTS[1] in s.subjects,
    ),
    "a subject never asked about": (EntryFilter(subject_hmac=h("nobody")), lambda s: False),
    "a range of ten minutes": (
        EntryFilter(from_us=T0 + 20 * MINUTE, to_us=T0 + 30 * MINUTE),
        lambda s: 20 <= s.i < 30,
    ),
    "several at once": (
        EntryFilter(
            from_us=T0 + 5 * MINUTE,
            direction=audit_pb2.OUTGOING,
            provider="customs",
            purpose="bank_credit",
            allowed=True,
        ),
        lambda s: s.i >= 5 and s.i % 3 == 1 and s.i % 2 == 1 and s.i % 7 != 0,
    ),
    "an officer of another entry's partner": (
        EntryFilter(partner="land-centre", officer="officer-1"),
        lambda s: s.i % 4 == 0 and s.i % 5 == 1,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_filter_finds_exactly_the_entries_it_describes(log: AuditLog, name: str) -> None:
    where, expected = CASES[name]
    page = search(log, where, limit=SEARCH_PAGE_LIMIT)
    wanted = [s.i for s in SPECS if expected(s)]
    assert indices(page.entries) == wanted
    assert wanted or name == "a subject never asked about"  # every other case finds some
    assert page.next_cursor is None and page.size == len(SPECS)
    for found in page.entries:
        assert found.entry is not None and where.matches(found.entry)


def test_a_subject_is_found_in_a_batch_check_s_list_of_hmacs(log: AuditLog) -> None:
    page = search(log, EntryFilter(subject_hmac=h(SUBJECTS[0])), limit=SEARCH_PAGE_LIMIT)
    batches = [f for f in page.entries if f.entry is not None and len(f.entry.subject_hmacs) > 1]
    assert [f.index for f in batches] == [9, 19, 29, 39, 49, 59]


def test_paging_by_cursor_returns_every_match_once_in_index_order(log: AuditLog) -> None:
    where = EntryFilter(purpose="public_procurement")
    seen: list[int] = []
    cursor: int | None = None
    for _ in range(100):
        page = search(log, where, cursor=cursor, limit=4)
        assert len(page.entries) <= 4
        seen += indices(page.entries)
        if page.next_cursor is None:
            break
        assert page.next_cursor > (cursor or 0)
        cursor = page.next_cursor
    assert seen == [s.i for s in SPECS if s.i % 2 == 0]


def test_a_page_reads_no_more_rows_than_its_bound_however_rare_the_matches(
    log: AuditLog,
) -> None:
    where = EntryFilter(officer="officer-4", partner="land-centre")  # i % 20 == 4
    seen: list[int] = []
    cursor: int | None = None
    pages = 0
    while True:
        page = search(log, where, cursor=cursor, limit=100, scan_rows=7)
        pages += 1
        assert page.scanned <= 7
        seen += indices(page.entries)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [4, 24, 44]
    assert pages == -(-len(SPECS) // 7)


def test_a_recent_range_of_a_long_log_is_found_without_scanning_its_past(
    engine: Engine,
) -> None:
    store = AuditLog(engine, Signer("credit-exchange/3plus2/huizhou/audit", SigningKey(b"t" * 32)))
    store.commit([encode(spec(i).entry()) for i in range(3000)])
    where = EntryFilter(from_us=T0 + 2990 * MINUTE, to_us=T0 + 2995 * MINUTE)
    page = search(store, where)
    assert indices(page.entries) == list(range(2990, 2995))
    slack_rows = CLOCK_SLACK_US // MINUTE
    assert page.scanned <= 5 + 2 * slack_rows + 2


def test_an_entry_recorded_slightly_out_of_time_order_is_still_in_its_range(
    engine: Engine,
) -> None:
    store = AuditLog(engine, Signer("credit-exchange/3plus2/huizhou/audit", SigningKey(b"u" * 32)))
    times = [T0 + i * MINUTE for i in range(40)]
    times[13] = T0 + 10 * MINUTE + 1  # built 3 minutes before its neighbours, committed late
    times[12] = T0 + 14 * MINUTE  # recorded 2 minutes ahead of its neighbours
    store.commit([encode(spec(i, t).entry()) for i, t in enumerate(times)])
    page = search(store, EntryFilter(from_us=T0 + 10 * MINUTE, to_us=T0 + 11 * MINUTE))
    assert indices(page.entries) == [10, 13]
    page = search(store, EntryFilter(from_us=T0 + 14 * MINUTE, to_us=T0 + 15 * MINUTE))
    assert indices(page.entries) == [12, 14]


def test_an_export_sees_every_match_of_its_range_and_nothing_appended_after(
    log: AuditLog,
) -> None:
    size = log.size()
    where = EntryFilter(direction=audit_pb2.INCOMING)
    exported = matching_entries(log, where, end=size, scan_rows=5)
    first = next(exported)
    log.commit([encode(spec(60).entry()), encode(spec(63).entry())])  # two more INCOMING
    assert [first.index, *indices(list(exported))] == [s.i for s in SPECS if s.i % 3 == 0]
    assert indices(list(matching_entries(log, where)))[-2:] == [60, 61]


def test_pruned_entries_are_listed_as_pruned_or_counted_never_matched(engine: Engine) -> None:
    store = AuditLog(engine, Signer("credit-exchange/3plus2/huizhou/audit", SigningKey(b"v" * 32)))
    old = T0 - 4 * 365 * 86_400_000_000
    store.commit([encode(spec(i, old + i * MINUTE).entry()) for i in range(6)])
    store.commit([encode(s.entry()) for s in SPECS[6:20]])
    pruned = store.prune(T0, ME)
    assert pruned is not None and pruned.count == 6
    everything = search(store, EntryFilter())
    assert [f.index for f in everything.entries if f.entry is None] == list(range(6))
    assert everything.pruned == 0
    incoming = search(store, EntryFilter(direction=audit_pb2.INCOMING))
    assert indices(incoming.entries) == [i for i in range(6, 20) if i % 3 == 0]
    assert incoming.pruned == 6
    recent = search(store, EntryFilter(from_us=T0))  # the binary search passes over them
    assert all(f.entry is not None for f in recent.entries) and recent.scanned <= 20 - 6 + 1


def test_a_body_that_is_not_an_entry_is_passed_over(engine: Engine) -> None:
    store = AuditLog(engine, Signer("credit-exchange/3plus2/huizhou/audit", SigningKey(b"w" * 32)))
    store.commit([encode(SPECS[0].entry()), b"\xff\xff not an entry", encode(SPECS[3].entry())])
    assert indices(search(store, EntryFilter(officer="officer-0")).entries) == [0]
    assert indices(search(store, EntryFilter()).entries) == [0, 2]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: EntryFilter(from_us=T0, to_us=T0), "ends before it begins"),
        (lambda: EntryFilter(from_us=T0, to_us=T0 - 1), "ends before it begins"),
        (lambda: EntryFilter(subject_hmac=b"short"), "32 bytes"),
    ],
)
def test_a_filter_that_cannot_match_is_refused(make: Callable[[], EntryFilter], says: str) -> None:
    with pytest.raises(LedgerError, match=says):
        make()


@pytest.mark.parametrize("limit", [0, SEARCH_PAGE_LIMIT + 1])
def test_a_page_larger_than_the_bound_is_refused(log: AuditLog, limit: int) -> None:
    with pytest.raises(LedgerError, match="a page holds 1 to"):
        search(log, EntryFilter(), limit=limit)


def test_a_cursor_past_the_range_gives_an_empty_complete_page(log: AuditLog) -> None:
    page = search(log, EntryFilter(), cursor=len(SPECS) + 5)
    assert page.entries == [] and page.next_cursor is None
