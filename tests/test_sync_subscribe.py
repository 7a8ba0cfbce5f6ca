"""The subscriber of a change feed: every bad batch refused, good ones applied exactly once.

The publisher here is a small simulator built from the ledger's own parts (Merkle
tree, signed notes), served through the subscriber's ``FeedSource`` interface;
the subscriber's store is a real SQLite file migrated to head, and its ledger a
real one. What the publisher signs is what a real publisher signs: leaves are
``FeedChange`` bytes, checkpoints C2SP notes under the feed's origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from creditexchange.clock import now_us
from creditexchange.errors import AnswerRejected, NoteError, ProofError, QueryRefused
from creditexchange.identifiers import uscc_check_character
from creditexchange.node.app.wiring import open_ledger, open_node
from creditexchange.node.cli import app
from creditexchange.node.cli.sync import sync_app
from creditexchange.node.database import create_database_engine, upgrade
from creditexchange.node.database.models import SYNC_CURSORS, SYNCED_RECORDS
from creditexchange.node.ledger import AuditLog, Ledger, merkle
from creditexchange.node.ledger.entries import decode
from creditexchange.node.ledger.note import Checkpoint, Signer, sign_note
from creditexchange.node.sync.feed import feed_origin
from creditexchange.node.sync.subscribe import (
    CAUGHT_UP,
    REFUSED,
    STOPPED,
    STOPPED_MARK,
    UNREACHABLE,
    Alarm,
    CursorState,
    Refusal,
    Subscriber,
    SyncMetrics,
    VerifiedBatch,
    apply_write,
    batch_entry,
    check_batch,
    frontier_bytes,
    frontier_from_bytes,
    read_cursor,
    reset_feed,
    sync_status,
    verify_batch,
)
from creditexchange.v1 import sync_pb2

PUBLISHER = "customs"
THEME = "customs_credit_grade"
ME = "huizhou"
ORIGIN = feed_origin("3plus2", PUBLISHER, THEME)
SEED = bytes(range(32))
CHANGED_US = now_us() - 3_600_000_000  # the publisher's changes were made an hour ago


def uscc(n: int) -> str:
    first17 = f"9144130{n:010d}"
    return first17 + uscc_check_character(first17)


def change(
    n: int, kind: int = sync_pb2.NEW, grade: str = "A", publisher: str = PUBLISHER
) -> sync_pb2.FeedChange:
    return sync_pb2.FeedChange(
        format_version=1,
        publisher=publisher,
        theme=THEME,
        kind=kind,  # type: ignore[arg-type]
        record_key=f"GRADE-{n}",
        version=1,
        subject_id=uscc(n),
        subject_type="enterprise",
        subject_name=f"惠州进出口贸易有限公司{n}",
        source_department="customs",
        fields_json=json.dumps({"grade": grade}, sort_keys=True),
        decision_date="2026-03-01",
        status="active",
        changed_unix_micros=CHANGED_US + n,
    )


@dataclass
class FeedPublisher:
    """A publisher's feed of one theme: leaves, every perfect subtree, a signing key."""

    signer: Signer = field(default_factory=lambda: Signer(ORIGIN, SigningKey(SEED)))
    leaves: list[bytes] = field(default_factory=list)
    nodes: dict[merkle.NodeId, bytes] = field(default_factory=dict)
    frontier: merkle.Frontier = field(default_factory=lambda: merkle.Frontier(0, ()))

    def add(self, *changes: sync_pb2.FeedChange) -> FeedPublisher:
        raw = [c.SerializeToString(deterministic=True) for c in changes]
        self.frontier, created = merkle.extend(self.frontier, [merkle.leaf_hash(r) for r in raw])
        self.nodes.update(((level, index), value) for level, index, value in created)
        self.leaves.extend(raw)
        return self

    def batch(self, start: int, count: int | None = None) -> sync_pb2.FeedBatch:
        end = len(self.leaves) if count is None else min(len(self.leaves), start + count)
        root = merkle.root(end, self.nodes.__getitem__)
        note = sign_note(Checkpoint(ORIGIN, end, root).body(), self.signer)
        proof = merkle.consistency_proof(start, end, self.nodes.__getitem__) if start else []
        return sync_pb2.FeedBatch(
            publisher=PUBLISHER,
            theme=THEME,
            start=start,
            changes=self.leaves[start:end],
            checkpoint=note,
            consistency=proof,
        )

    def state(self) -> dict[str, tuple[int, str]]:
        """What a subscriber's copy must hold: record key -> (leaf index, fields)."""
        held: dict[str, tuple[int, str]] = {}
        for index, raw in enumerate(self.leaves):
            c = sync_pb2.FeedChange.FromString(raw)
            if c.kind in (sync_pb2.REMOVAL, sync_pb2.PUBLICITY_ENDED):
                held.pop(c.record_key, None)
            else:
                held[c.record_key] = (index, c.fields_json)
        return held


KEYS = [FeedPublisher().signer.public_key]


def verified(cursor: CursorState, publisher: FeedPublisher, count: int | None = None) -> Any:
    return verify_batch(cursor, publisher.batch(cursor.size, count), KEYS, ORIGIN)


def after(cursor: CursorState, batch: VerifiedBatch) -> CursorState:
    return CursorState(
        PUBLISHER, THEME, batch.end, batch.root_hash, batch.checkpoint, batch.frontier
    )


def start() -> CursorState:
    return CursorState(PUBLISHER, THEME)


# --- verify_batch: each refusal says what is wrong -------------------------------------


def test_a_good_batch_verifies_and_extends_the_cursor() -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(5)))
    first = verified(start(), publisher, 3)
    assert (first.start, first.end) == (0, 3)
    second = verified(after(start(), first), publisher)
    assert (second.start, second.end) == (3, 5)
    assert second.frontier.root() == merkle.root_from_leaf_hashes(
        [merkle.leaf_hash(x) for x in publisher.leaves]
    )
    assert [c.record_key for c in second.changes] == ["GRADE-3", "GRADE-4"]


def test_a_gap_is_refused_naming_the_missing_changes() -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(5)))
    with pytest.raises(AnswerRejected, match=r"a gap: changes 0-1 are missing"):
        verify_batch(start(), publisher.batch(2), KEYS, ORIGIN)


def test_a_replayed_batch_is_refused_as_a_replay() -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(5)))
    cursor = after(start(), verified(start(), publisher, 4))
    refused = check_batch(cursor, publisher.batch(2), KEYS, ORIGIN)
    assert isinstance(refused, Refusal) and refused.kind == Alarm.REPLAY
    with pytest.raises(AnswerRejected, match="a replay of changes already applied"):
        verify_batch(cursor, publisher.batch(0, 2), KEYS, ORIGIN)


def test_reordered_changes_do_not_hash_to_the_signed_root() -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(4)))
    batch = publisher.batch(0)
    batch.changes[1], batch.changes[2] = batch.changes[2], batch.changes[1]
    with pytest.raises(ProofError, match="altered, reordered, added or left out"):
        verify_batch(start(), batch, KEYS, ORIGIN)


def test_a_forged_change_does_not_hash_to_the_signed_root() -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(4)))
    batch = publisher.batch(0)
    batch.changes[3] = change(3, grade="D").SerializeToString(deterministic=True)
    refused = check_batch(start(), batch, KEYS, ORIGIN)
    assert isinstance(refused, Refusal) and refused.kind == Alarm.LEAVES


def test_a_dropped_change_is_refused() -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(4)))
    batch = publisher.batch(0)
    del batch.changes[3]
    with pytest.raises(AnswerRejected, match="checkpoint is of 4 changes, not 3"):
        verify_batch(start(), batch, KEYS, ORIGIN)


def test_a_signed_change_of_another_publisher_is_refused() -> None:
    publisher = FeedPublisher().add(change(0), change(1, publisher="shenzhen"))
    with pytest.raises(AnswerRejected, match=r"change 1 of customs's .*'shenzhen'"):
        verify_batch(start(), publisher.batch(0), KEYS, ORIGIN)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda c: setattr(c, "subject_id", c.subject_id[:-1] + "0"), "subject identifier"),
        (lambda c: setattr(c, "record_key", ""), "record_key is empty"),
        (lambda c: setattr(c, "record_key", "K\x1b[2J"), "control or formatting"),
        (lambda c: setattr(c, "fields_json", "[1]"), "not a JSON object"),
        (lambda c: setattr(c, "decision_date", "2026/03/01"), "not an ISO date"),
        (lambda c: setattr(c, "subject_type", "alien"), "unknown subject type"),
        (lambda c: setattr(c, "format_version", 2), "format version 2"),
        (lambda c: setattr(c, "kind", 0), "unknown change kind"),
    ],
)
def test_an_insane_change_is_refused_even_when_signed(
    edit: Callable[[sync_pb2.FeedChange], None], problem: str
) -> None:
    bad = change(1)
    edit(bad)
    publisher = FeedPublisher().add(change(0), bad)
    refused = check_batch(start(), publisher.batch(0), KEYS, ORIGIN)
    assert isinstance(refused, Refusal) and refused.kind == Alarm.CHANGE
    assert "change 1 of" in str(refused.error) and problem in str(refused.error)
    assert bad.subject_id not in str(refused.error)


def test_a_bad_signature_is_refused() -> None:
    publisher = FeedPublisher().add(change(0))
    batch = publisher.batch(0)
    text, signature = batch.checkpoint.rsplit(" ", 1)
    flipped = ("B" if signature[10] != "B" else "C").join((signature[:10], signature[11:]))
    batch.checkpoint = f"{text} {flipped}"
    with pytest.raises(NoteError, match="does not verify"):
        verify_batch(start(), batch, KEYS, ORIGIN)


def test_a_key_the_memorandum_does_not_list_is_refused() -> None:
    impostor = FeedPublisher(signer=Signer(ORIGIN, SigningKey(bytes(32)))).add(change(0))
    with pytest.raises(NoteError, match="no signature by a known key"):
        verify_batch(start(), impostor.batch(0), KEYS, ORIGIN)


def test_a_checkpoint_of_another_feed_is_refused() -> None:
    publisher = FeedPublisher().add(change(0))
    other = feed_origin("3plus2", PUBLISHER, "customs_case")
    with pytest.raises(NoteError, match="no signature by a known key"):
        verify_batch(start(), publisher.batch(0), KEYS, other)


def test_a_rewritten_history_is_caught_by_the_consistency_proof() -> None:
    honest = FeedPublisher().add(*(change(n) for n in range(6)))
    cursor = after(start(), verified(start(), honest, 4))
    rewritten = FeedPublisher().add(
        change(0), change(1, grade="C"), *(change(n) for n in range(2, 8))
    )
    refused = check_batch(cursor, rewritten.batch(4), KEYS, ORIGIN)
    assert isinstance(refused, Refusal) and refused.kind == Alarm.REWRITTEN and refused.stops
    assert isinstance(refused.error, ProofError)
    assert "history was rewritten" in str(refused.error)


def test_an_empty_batch_at_the_cursor_must_carry_the_same_root() -> None:
    honest = FeedPublisher().add(*(change(n) for n in range(3)))
    cursor = after(start(), verified(start(), honest, 3))
    assert verify_batch(cursor, honest.batch(3), KEYS, ORIGIN).changes == ()
    forked = FeedPublisher().add(change(0), change(1), change(2, grade="B"))
    refused = check_batch(cursor, forked.batch(3), KEYS, ORIGIN)
    assert isinstance(refused, Refusal) and refused.kind == Alarm.REWRITTEN


def test_a_frontier_round_trips_and_a_damaged_one_is_refused() -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(7)))
    raw = frontier_bytes(publisher.frontier)
    assert frontier_from_bytes(7, raw) == publisher.frontier
    with pytest.raises(ValueError, match="3 hashes"):
        frontier_from_bytes(7, raw[:-1])


# --- applying, with a real store and ledger --------------------------------------------


@pytest.fixture
def database(database_url: str) -> str:
    """A node store migrated to head: SQLite, and PostgreSQL."""
    engine = create_database_engine(database_url)
    upgrade(engine)
    engine.dispose()
    return database_url


def audit_log(url: str) -> AuditLog:
    return AuditLog(
        create_database_engine(url), Signer(f"credit-exchange/3plus2/{ME}/audit", SigningKey(SEED))
    )


def copy_of(engine: Engine) -> dict[str, tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(SYNCED_RECORDS.c.record_key, SYNCED_RECORDS.c.feed_idx, SYNCED_RECORDS.c.fields)
        ).all()
    return {key: (idx, fields) for key, idx, fields in rows}


def cursors(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(SYNC_CURSORS)).all()]


async def apply(ledger: Ledger, batch: VerifiedBatch) -> None:
    await ledger.append(batch_entry(ME, batch), [apply_write(batch)])


def test_applying_the_same_batch_twice_changes_nothing(database: str) -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(5)))
    batch = verified(start(), publisher)

    async def go() -> tuple[Any, ...]:
        async with Ledger(audit_log(database)) as ledger:
            await apply(ledger, batch)
            first = (copy_of(ledger.log.engine), cursors(ledger.log.engine))
            await apply(ledger, batch)
            return first, (copy_of(ledger.log.engine), cursors(ledger.log.engine))

    first, second = asyncio.run(go())
    assert first == second
    assert first[0] == publisher.state()
    engine = create_database_engine(database)
    cursor = read_cursor(engine, PUBLISHER, THEME)
    assert (cursor.size, cursor.root_hash, cursor.checkpoint) == (
        5,
        batch.root_hash,
        batch.checkpoint,
    )


def test_removal_deletes_and_correction_replaces_the_copy(database: str) -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(4)))

    async def go() -> None:
        async with Ledger(audit_log(database)) as ledger:
            first = verified(start(), publisher)
            await apply(ledger, first)
            publisher.add(
                change(1, sync_pb2.REMOVAL),
                change(2, sync_pb2.CORRECTION, grade="C"),
                change(3, sync_pb2.PUBLICITY_ENDED),
                change(3, sync_pb2.NEW, grade="B"),  # published again in the same batch
                change(0, sync_pb2.REPAIR, grade="A"),
            )
            await apply(ledger, verified(after(start(), first), publisher))

    asyncio.run(go())
    copy = copy_of(create_database_engine(database))
    assert copy == publisher.state()
    assert set(copy) == {"GRADE-0", "GRADE-2", "GRADE-3"}
    assert json.loads(copy["GRADE-2"][1]) == {"grade": "C"}


# --- the subscriber, against a simulated publisher -------------------------------------


@dataclass
class Trust:
    keys: list[bytes] = field(default_factory=lambda: list(KEYS))
    feeds: list[tuple[str, str]] = field(default_factory=lambda: [(PUBLISHER, THEME)])

    def federation_name(self) -> str:
        return "3plus2"

    def publisher_keys(self, publisher: str) -> list[bytes]:
        return self.keys if publisher == PUBLISHER else []

    def subscriptions(self, subscriber: str, today: Any) -> list[tuple[str, str]]:
        return list(self.feeds) if subscriber == ME else []


@dataclass
class Source:
    """The publisher's Sync service as the subscriber sees it, with faults to inject:
    ``tamper`` rewrites the n-th batch served, ``cut_after`` fails every pull after it."""

    publisher: FeedPublisher
    tamper: dict[int, Callable[[sync_pb2.FeedBatch], sync_pb2.FeedBatch]] = field(
        default_factory=dict
    )
    cut_after: int | None = None
    served: int = 0

    async def pull(self, publisher: str, request: sync_pb2.PullRequest) -> sync_pb2.FeedBatch:
        if self.cut_after is not None and self.served >= self.cut_after:
            raise QueryRefused(publisher, "UNAVAILABLE", "connection reset", None, verified=False)
        batch = self.publisher.batch(request.from_size, request.max_changes)
        tamper = self.tamper.get(self.served)
        if tamper is not None:
            batch = tamper(batch)
        self.served += 1
        return batch

    async def follow(
        self, publisher: str, request: sync_pb2.PullRequest
    ) -> AsyncIterator[sync_pb2.FeedBatch]:
        yield await self.pull(publisher, request)


def subscribe(
    ledger: Ledger, source: Source, metrics: SyncMetrics | None = None, page: int = 3
) -> Subscriber:
    return Subscriber(ME, ledger, Trust(), source, metrics, page=page)


def run_once(database: str, source: Source, metrics: SyncMetrics | None = None) -> list[Any]:
    async def go() -> list[Any]:
        async with Ledger(audit_log(database)) as ledger:
            return await subscribe(ledger, source, metrics).run_once()

    return asyncio.run(go())


def ledger_entries(database: str) -> list[dict[str, Any]]:
    log = audit_log(database)
    return [decode(e.body) for e in log.entries(0, log.size()) if e.body is not None]


def test_a_subscriber_catches_up_page_by_page_and_records_each_batch(database: str) -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(8)))
    metrics = SyncMetrics(CollectorRegistry())
    [result] = run_once(database, Source(publisher), metrics)
    assert (result.outcome, result.applied, result.size) == (CAUGHT_UP, 8, 8)
    assert copy_of(create_database_engine(database)) == publisher.state()
    recorded = [e for e in ledger_entries(database) if e["kind"] == "SYNC"]
    assert [e["note"].split("\n")[0] for e in recorded] == [
        f"{THEME}: applied changes 0-2; checkpoint size 3",
        f"{THEME}: applied changes 3-5; checkpoint size 6",
        f"{THEME}: applied changes 6-7; checkpoint size 8",
    ]
    assert {(e["direction"], e["requester"], e["responder"]) for e in recorded} == {
        ("OUTGOING", ME, PUBLISHER)
    }
    value = metrics.registry.get_sample_value
    assert value("credit_node_sync_applied_total", {"publisher": PUBLISHER, "theme": THEME}) == 8
    assert value("credit_node_sync_lag_entries", {"publisher": PUBLISHER, "theme": THEME}) == 0


def test_a_cut_resumes_from_the_persisted_cursor_after_a_restart(database: str) -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(10)))
    metrics = SyncMetrics(CollectorRegistry())
    [cut] = run_once(database, Source(publisher, cut_after=2), metrics)
    assert (cut.outcome, cut.size) == (UNREACHABLE, 6)
    labels = {"publisher": PUBLISHER, "theme": THEME}
    lag = metrics.registry.get_sample_value("credit_node_sync_lag_seconds", labels)
    newest = (now_us() - CHANGED_US) / 1e6  # the changes seen are this old (an hour and more)
    assert lag is not None and 3600 <= lag <= newest + 1  # not known to be caught up: behind
    assert (
        "connection reset"
        in read_cursor(create_database_engine(database), PUBLISHER, THEME).last_error
    )
    publisher.add(change(3, sync_pb2.REMOVAL), change(10))
    [resumed] = run_once(database, Source(publisher))  # a new process: everything reopened
    assert (resumed.outcome, resumed.applied, resumed.size) == (CAUGHT_UP, 6, 12)
    engine = create_database_engine(database)
    assert copy_of(engine) == publisher.state()
    assert read_cursor(engine, PUBLISHER, THEME).last_error == ""


def replay(batch: sync_pb2.FeedBatch) -> sync_pb2.FeedBatch:
    return FeedPublisher().add(*(change(n) for n in range(3))).batch(0)


def test_a_replayed_batch_raises_one_alarm_and_the_next_sync_recovers(database: str) -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(6)))
    metrics = SyncMetrics(CollectorRegistry())
    [refused] = run_once(database, Source(publisher, tamper={1: replay}), metrics)
    assert (refused.outcome, refused.size) == (REFUSED, 3)
    assert "a replay" in refused.detail
    [again] = run_once(database, Source(publisher, tamper={0: replay}), metrics)
    assert again.outcome == REFUSED  # the same refusal: no second alarm
    alarms = [e for e in ledger_entries(database) if e["outcome"]["status"] == "ALARM"]
    assert len(alarms) == 1
    assert alarms[0]["direction"] == "LOCAL" and alarms[0]["kind"] == "SYNC"
    assert alarms[0]["note"].startswith("replay: a batch of customs's")
    labels = {"publisher": PUBLISHER, "theme": THEME, "kind": "replay"}
    assert metrics.registry.get_sample_value("credit_node_sync_alarms_total", labels) == 1
    [done] = run_once(database, Source(publisher))
    assert done.outcome == CAUGHT_UP
    engine = create_database_engine(database)
    assert copy_of(engine) == publisher.state()
    assert read_cursor(engine, PUBLISHER, THEME).last_error == ""


def test_a_skipped_or_unsigned_batch_is_not_applied(database: str) -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(6)))
    impostor = FeedPublisher(signer=Signer(ORIGIN, SigningKey(bytes(32)))).add(
        *(change(n, grade="D") for n in range(6))
    )
    skip = {1: lambda b: publisher.batch(4)}
    [gap] = run_once(database, Source(publisher, tamper=skip))
    assert (gap.outcome, gap.size) == (REFUSED, 3) and "a gap" in gap.detail
    forged = {0: lambda b: impostor.batch(b.start, 3)}
    [unsigned] = run_once(database, Source(publisher, tamper=forged))
    assert (unsigned.outcome, unsigned.size) == (REFUSED, 3)
    assert "no signature by a known key" in unsigned.detail
    assert copy_of(create_database_engine(database)) == {
        k: v for k, v in publisher.state().items() if v[0] < 3
    }
    [done] = run_once(database, Source(publisher))
    assert done.outcome == CAUGHT_UP
    assert copy_of(create_database_engine(database)) == publisher.state()


def test_a_rewritten_history_stops_the_feed_with_evidence_until_reset(database: str) -> None:
    honest = FeedPublisher().add(*(change(n) for n in range(4)))
    run_once(database, Source(honest))
    rewritten = FeedPublisher().add(change(0, grade="D"), *(change(n) for n in range(1, 6)))
    source = Source(rewritten)
    [stopped] = run_once(database, source)
    assert stopped.outcome == STOPPED and "history was rewritten" in stopped.detail
    served = source.served  # the refused page, and the next one asked for ahead of it
    [still] = run_once(database, source)
    assert still.outcome == STOPPED and source.served == served  # not asked again
    [alarm] = [e for e in ledger_entries(database) if e["outcome"]["status"] == "ALARM"]
    assert alarm["outcome"]["message"] == "rewritten"
    cursor_note = read_cursor(create_database_engine(database), PUBLISHER, THEME).checkpoint
    assert cursor_note in alarm["note"]
    assert rewritten.batch(4).checkpoint in alarm["note"]
    [status] = sync_status(create_database_engine(database))
    assert status.stopped and "credit-node sync reset" in status.last_error

    async def reset() -> None:
        async with Ledger(audit_log(database)) as ledger:
            await reset_feed(ledger, ME, PUBLISHER, THEME)

    asyncio.run(reset())
    [done] = run_once(database, Source(rewritten))
    assert (done.outcome, done.size) == (CAUGHT_UP, 6)
    assert copy_of(create_database_engine(database)) == rewritten.state()


def test_status_shows_the_cursor_lag_and_record_count(database: str) -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(5)))
    run_once(database, Source(publisher))
    [status] = sync_status(create_database_engine(database), at_us=CHANGED_US + 60_000_000)
    assert (status.size, status.head_size, status.lag_entries, status.records) == (5, 5, 0, 5)
    assert status.lag_seconds == 0 and not status.stopped
    shown = status.as_dict()
    assert shown["newest_change"].endswith("+08:00") and shown["last_error"] is None


def test_a_feed_the_memorandum_does_not_list_is_not_synced(database: str) -> None:
    async def go() -> None:
        async with Ledger(audit_log(database)) as ledger:
            subscriber = subscribe(ledger, Source(FeedPublisher()))
            with pytest.raises(
                AnswerRejected, match="does not let huizhou sync customs customs_case"
            ):
                await subscriber.run_once(PUBLISHER, "customs_case")

    asyncio.run(go())


# --- the command line ------------------------------------------------------------------


def test_sync_status_and_reset_commands_read_and_drop_the_feed(tmp_path: Path) -> None:
    home = tmp_path / "hz"
    runner = CliRunner()
    done = runner.invoke(app, ["init", ME, "--home", str(home)])
    assert done.exit_code == 0, done.output
    node = open_node(home)
    publisher = FeedPublisher().add(*(change(n) for n in range(4)))

    async def sync() -> None:
        async with open_ledger(node.config, node.database) as ledger:
            await subscribe(ledger, Source(publisher)).run_once()

    asyncio.run(sync())
    shown = runner.invoke(sync_app, ["status", "--json", "--home", str(home)])
    assert shown.exit_code == 0, shown.output
    [feed] = json.loads(shown.output)
    assert (feed["publisher"], feed["theme"], feed["size"], feed["records"]) == (
        PUBLISHER,
        THEME,
        4,
        4,
    )
    assert feed["applied"].endswith("+08:00")
    reset = runner.invoke(
        sync_app, ["reset", "--from", PUBLISHER, "--theme", THEME, "--home", str(home)]
    )
    assert reset.exit_code == 0, reset.output
    assert "copy and cursor (at 4) dropped" in reset.output
    after_reset = runner.invoke(sync_app, ["status", "--home", str(home)])
    assert "no feed synced yet" in after_reset.output
    assert copy_of(node.database) == {}


def test_following_takes_new_changes_as_they_come_until_cancelled(database: str) -> None:
    publisher = FeedPublisher().add(*(change(n) for n in range(5)))
    source = Source(publisher)

    async def go() -> dict[str, tuple[int, str]]:
        async with Ledger(audit_log(database)) as ledger:
            subscriber = Subscriber(ME, ledger, Trust(), source, page=2, backoff=(0.01, 0.05))
            task = asyncio.create_task(subscriber.run(recheck_s=0.05))
            engine = ledger.log.engine
            for _ in range(500):
                await asyncio.sleep(0.01)
                if read_cursor(engine, PUBLISHER, THEME).size == 5:
                    break
            publisher.add(change(1, sync_pb2.REMOVAL), change(7))
            for _ in range(500):
                await asyncio.sleep(0.01)
                if read_cursor(engine, PUBLISHER, THEME).size == 7:
                    break
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return copy_of(engine)

    assert asyncio.run(go()) == publisher.state()


def test_a_batch_verified_against_a_cursor_since_reset_or_stopped_moves_nothing(
    database: str,
) -> None:
    """The cursor moves only from where the batch was verified to start: after a reset
    (the cursor gone) a later batch is not applied over a copy lacking the feed's start,
    and a stopped feed is not moved on by a batch another process verified before."""
    publisher = FeedPublisher().add(*(change(n) for n in range(6)))
    first = verified(start(), publisher, 3)
    second = verified(after(start(), first), publisher)

    async def go() -> None:
        async with Ledger(audit_log(database)) as ledger:
            await apply(ledger, first)
            await reset_feed(ledger, ME, PUBLISHER, THEME)  # the operator, meanwhile
            await apply(ledger, second)  # the follower's next batch, from 3

    asyncio.run(go())
    engine = create_database_engine(database)
    assert cursors(engine) == [] and copy_of(engine) == {}  # starts over from 0, nothing half

    async def stopped() -> None:
        async with Ledger(audit_log(database)) as ledger:
            await apply(ledger, first)
            with engine.begin() as conn:
                conn.execute(
                    SYNC_CURSORS.update().values(last_error=STOPPED_MARK + "history rewritten")
                )
            await apply(ledger, second)

    asyncio.run(stopped())
    cursor = read_cursor(engine, PUBLISHER, THEME)
    assert cursor.size == 3 and cursor.stopped
