"""A published theme's feed: a verifiable log of every change of its records, once each."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from nacl.signing import SigningKey
from sqlalchemy import Engine, insert, select

from creditexchange.errors import ConcurrentWriter, LedgerError
from creditexchange.node.database.models import (
    FEED_HEADS,
    FEED_LEAVES,
    FEED_NODES,
    FEED_PUBLISHED,
    IMPORT_BATCHES,
    RECORDS,
)
from creditexchange.node.ledger import merkle
from creditexchange.node.ledger.note import Checkpoint, Signer, open_note
from creditexchange.node.records.repository import (
    RecordStatus,
    add_subjects,
    find_record,
    insert_records,
    replace_records,
    set_status,
    stored_subjects,
)
from creditexchange.node.records.validation import ValidRow
from creditexchange.node.sync import publish as publish_module
from creditexchange.node.sync.feed import FeedLog, feed_origin
from creditexchange.node.sync.publish import canonical_fields, publish_changes
from creditexchange.v1 import sync_pb2

THEME = "customs_credit_grade"
TODAY = dt.date(2026, 12, 3)
NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def feeds(engine: Engine) -> FeedLog:
    signer = Signer("customs-node", SigningKey(hashlib.sha256(b"customs").digest()))
    return FeedLog(engine, signer, lambda theme: feed_origin("3plus2", "customs", theme))


def bodies(n: int, tag: str = "c") -> list[bytes]:
    return [f"{tag}{i}".encode() for i in range(n)]


def append(feeds: FeedLog, items: list[bytes], theme: str = THEME) -> int:
    with feeds.engine.begin() as conn:
        return feeds.append(conn, theme, items)


def opened(feeds: FeedLog, note: str, theme: str = THEME) -> Checkpoint:
    text, _ = open_note(note, [feeds.verifier_for(theme)])
    return Checkpoint.parse(text)


# --- the log ------------------------------------------------------------------------


def test_checkpoints_and_consistency_proofs_verify_between_any_two_sizes(feeds: FeedLog) -> None:
    everything: list[bytes] = []
    for n in (1, 3, 7, 20, 2, 31):
        batch = bodies(n, f"b{len(everything)}-")
        everything += batch
        assert append(feeds, batch) == len(everything)
    size = len(everything)
    head = feeds.head(THEME)
    assert head is not None and head.size == size
    checkpoint = opened(feeds, head.checkpoint)
    assert checkpoint.origin == "credit-exchange/3plus2/customs/feed/customs_credit_grade"
    assert checkpoint.size == size
    assert checkpoint.root_hash == merkle.root_from_leaf_hashes(
        [merkle.leaf_hash(b) for b in everything]
    )
    assert feeds.leaves(THEME, 0, size) == everything
    for old in (0, 1, 4, 11, 31, 32, 33, size):
        for new in {old, min(size, old + 1), 32, 63, size} - set(range(old)):
            old_root = opened(feeds, feeds.checkpoint(THEME, old)).root_hash
            new_root = opened(feeds, feeds.checkpoint(THEME, new)).root_hash
            proof = feeds.consistency_proof(THEME, old, new)
            merkle.verify_consistency(old, new, old_root, new_root, proof)


def test_a_checkpoint_of_an_earlier_size_is_the_same_note_every_time(feeds: FeedLog) -> None:
    append(feeds, bodies(10))
    first = feeds.checkpoint(THEME, 6)
    append(feeds, bodies(5, "more"))
    assert feeds.checkpoint(THEME, 6) == first
    assert opened(feeds, first).size == 6


def test_a_feed_not_yet_started_has_a_signed_empty_checkpoint(feeds: FeedLog) -> None:
    assert feeds.head(THEME) is None
    checkpoint = opened(feeds, feeds.checkpoint(THEME))
    assert (checkpoint.size, checkpoint.root_hash) == (0, merkle.EMPTY_ROOT)
    with pytest.raises(LedgerError, match="outside the feed"):
        feeds.checkpoint(THEME, 1)


def test_each_theme_is_a_log_of_its_own(feeds: FeedLog) -> None:
    append(feeds, bodies(3), "customs_case")
    append(feeds, bodies(5))
    assert feeds.themes() == ["customs_case", THEME]
    assert feeds.leaves("customs_case", 0, 3) == bodies(3)
    assert opened(feeds, feeds.checkpoint("customs_case"), "customs_case").size == 3


def test_an_append_decided_on_a_stale_size_is_refused_and_writes_nothing(feeds: FeedLog) -> None:
    append(feeds, bodies(4))
    with pytest.raises(ConcurrentWriter, match="not 3"), feeds.engine.begin() as conn:
        feeds.append(conn, THEME, bodies(2, "late"), expected_size=3)
    assert feeds.size(THEME) == 4
    assert feeds.leaves(THEME, 0, 4) == bodies(4)


def test_an_append_rolled_back_with_its_transaction_leaves_the_feed_as_it_was(
    feeds: FeedLog,
) -> None:
    append(feeds, bodies(4))
    with pytest.raises(RuntimeError), feeds.engine.begin() as conn:
        feeds.append(conn, THEME, bodies(3, "lost"))
        raise RuntimeError("the caller's own write failed")
    assert feeds.size(THEME) == 4
    append(feeds, bodies(2, "kept"))  # the writer rebuilds from what really committed
    everything = bodies(4) + bodies(2, "kept")
    checkpoint = opened(feeds, feeds.checkpoint(THEME))
    assert checkpoint.root_hash == merkle.root_from_leaf_hashes(
        [merkle.leaf_hash(b) for b in everything]
    )


def test_a_page_of_leaves_stops_at_its_byte_budget_but_never_empty(feeds: FeedLog) -> None:
    append(feeds, [bytes([i]) * 100 for i in range(10)])
    assert len(feeds.leaves(THEME, 2, 10, max_bytes=350)) == 3
    assert len(feeds.leaves(THEME, 2, 10, max_bytes=10)) == 1
    with pytest.raises(LedgerError, match="outside the feed"):
        feeds.leaves(THEME, 0, 11)


def test_a_missing_leaf_is_reported_not_skipped(feeds: FeedLog) -> None:
    append(feeds, bodies(6))
    with feeds.engine.begin() as conn:
        conn.execute(FEED_LEAVES.delete().where(FEED_LEAVES.c.idx == 3))
    with pytest.raises(LedgerError, match="leaf 3"):
        feeds.leaves(THEME, 0, 6)


def test_fifty_thousand_changes_append_as_one_batch(feeds: FeedLog) -> None:
    items = [b"change %06d " % i + b"x" * 200 for i in range(50_000)]
    assert append(feeds, items) == 50_000
    checkpoint = opened(feeds, feeds.checkpoint(THEME))
    assert checkpoint.root_hash == merkle.root_from_leaf_hashes(
        [merkle.leaf_hash(b) for b in items]
    )
    proof = feeds.consistency_proof(THEME, 12_345, 50_000)
    old_root = opened(feeds, feeds.checkpoint(THEME, 12_345)).root_hash
    merkle.verify_consistency(12_345, 50_000, old_root, checkpoint.root_hash, proof)


# --- publishing ---------------------------------------------------------------------


def enterprise(n: int) -> str:
    return f"91441300MA{n:07d}X"


def row(key: str, subject: str, grade: str, end: str | None = "2029-10-12") -> ValidRow:
    fields = json.dumps({"grade": grade, "regime": "282"}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(fields.encode() + (end or "").encode()).hexdigest()[:32]
    name = f"公司{subject[-4:]}"
    return ValidRow(0, subject, "enterprise", name, key, fields, digest, "2026-10-12", None, end)


def store_records(engine: Engine, rows: list[ValidRow], theme: str = THEME) -> None:
    with engine.begin() as conn:
        batch = conn.execute(
            insert(IMPORT_BATCHES)
            .returning(IMPORT_BATCHES.c.id)
            .values(
                theme=theme,
                source_department="customs",
                file_name="grades.csv",
                file_digest="0" * 64,
                file_format="csv",
                encoding="utf-8",
                catalog_version="test",
                started_at=NOW,
            )
        ).scalar_one()
        subjects = {r.subject_id: (r.subject_type, r.subject_name) for r in rows}
        known = stored_subjects(conn, subjects)
        add_subjects(conn, {s: v for s, v in subjects.items() if s not in known}, NOW)
        insert_records(conn, theme, "customs", int(batch), rows, NOW)


def correct(engine: Engine, key: str, new: ValidRow, at: dt.datetime) -> None:
    with engine.begin() as conn:
        record_id, _ = find_record(conn, THEME, key)
        batch = conn.execute(select(IMPORT_BATCHES.c.id)).scalar_one()
        replace_records(conn, [(record_id, new)], "customs", int(batch), at)


def mark(engine: Engine, key: str, status: RecordStatus, at: dt.datetime) -> None:
    with engine.begin() as conn:
        record_id, _ = find_record(conn, THEME, key)
        set_status(conn, record_id, status, f"test {status.value}", at)


def feed_changes(feeds: FeedLog, start: int = 0) -> list[sync_pb2.FeedChange]:
    size = feeds.size(THEME)
    return [sync_pb2.FeedChange.FromString(b) for b in feeds.leaves(THEME, start, size)]


def publish(engine: Engine, feeds: FeedLog, today: dt.date = TODAY) -> int:
    return publish_changes(engine, feeds, "customs", [THEME], today)[THEME]


def test_every_kind_of_change_becomes_a_leaf_of_its_kind(engine: Engine, feeds: FeedLog) -> None:
    store_records(
        engine,
        [
            row("G-1", enterprise(1), "AEO"),
            row("G-2", enterprise(2), "regular"),
            row("G-3", enterprise(3), "dishonest"),
            row("G-4", enterprise(4), "regular"),
            row("G-5", enterprise(5), "regular", end="2026-12-31"),
        ],
    )
    assert publish(engine, feeds) == 5
    first = feed_changes(feeds)
    assert [(c.kind, c.record_key, c.version) for c in first] == [
        (sync_pb2.NEW, f"G-{i}", 1) for i in range(1, 6)
    ]
    assert first[0].fields_json == '{"grade":"AEO","regime":"282"}'
    assert (first[0].subject_id, first[0].subject_type) == (enterprise(1), "enterprise")

    later = NOW + dt.timedelta(hours=1)
    correct(engine, "G-1", row("G-1", enterprise(1), "advanced AEO"), later)
    mark(engine, "G-3", RecordStatus.REPAIRED, later + dt.timedelta(minutes=1))
    mark(engine, "G-4", RecordStatus.EXPIRED, later + dt.timedelta(minutes=2))
    mark(engine, "G-2", RecordStatus.OBJECTION, later + dt.timedelta(minutes=3))
    assert publish(engine, feeds, dt.date(2027, 1, 1)) == 5
    kinds = {c.record_key: (c.kind, c.version, c.status) for c in feed_changes(feeds, 5)}
    assert kinds == {  # a status change is an event at the same version, not a new one
        "G-1": (sync_pb2.CORRECTION, 2, "active"),
        "G-3": (sync_pb2.REMOVAL, 1, "repaired"),  # a repair ends publication: withdrawn
        "G-4": (sync_pb2.REMOVAL, 1, "expired"),
        "G-2": (sync_pb2.CORRECTION, 1, "objection"),  # the copies say 异议处理中 too
        "G-5": (sync_pb2.PUBLICITY_ENDED, 1, "active"),
    }
    leaving = [c for c in feed_changes(feeds, 5) if c.record_key in ("G-3", "G-4", "G-5")]
    assert all(c.fields_json == "" and c.subject_name == "" for c in leaving)


def test_publishing_again_appends_nothing(engine: Engine, feeds: FeedLog) -> None:
    store_records(engine, [row(f"G-{i}", enterprise(i), "regular") for i in range(30)])
    assert publish(engine, feeds) == 30
    note = feeds.checkpoint(THEME)
    assert publish(engine, feeds) == 0
    assert feeds.checkpoint(THEME) == note
    mark(engine, "G-7", RecordStatus.EXPIRED, NOW + dt.timedelta(hours=2))
    assert publish(engine, feeds) == 1
    assert publish(engine, feeds) == 0
    with engine.connect() as conn:
        published = conn.execute(
            select(FEED_PUBLISHED.c.present, FEED_PUBLISHED.c.leaf_idx).where(
                FEED_PUBLISHED.c.record_key == "G-7"
            )
        ).one()
    assert (bool(published[0]), published[1]) == (False, 30)


def test_every_version_since_the_last_published_one_is_a_change_in_order(
    engine: Engine, feeds: FeedLog
) -> None:
    store_records(engine, [row("G-1", enterprise(1), "regular"), row("G-2", enterprise(2), "AEO")])
    publish(engine, feeds)
    at = NOW + dt.timedelta(days=1)
    mark(engine, "G-1", RecordStatus.OBJECTION, at)  # an event: still v1
    correct(engine, "G-1", row("G-1", enterprise(1), "dishonest"), at + dt.timedelta(hours=1))
    correct(engine, "G-1", row("G-1", enterprise(1), "general"), at + dt.timedelta(hours=2))
    mark(engine, "G-2", RecordStatus.EXPIRED, at + dt.timedelta(hours=3))  # G-2 still v1
    mark(engine, "G-1", RecordStatus.ACTIVE, at + dt.timedelta(hours=4))  # objection closed
    assert publish(engine, feeds) == 3
    changes = feed_changes(feeds, 2)
    assert [(c.record_key, c.version, c.kind, c.status) for c in changes] == [
        ("G-1", 2, sync_pb2.CORRECTION, "objection"),  # the correction kept the mark
        ("G-2", 1, sync_pb2.REMOVAL, "expired"),
        ("G-1", 3, sync_pb2.CORRECTION, "active"),  # the last data, and the mark gone
    ]
    assert json.loads(changes[0].fields_json)["grade"] == "dishonest"
    assert json.loads(changes[2].fields_json)["grade"] == "general"
    times = [c.changed_unix_micros for c in changes]
    assert times == sorted(times)


def test_a_status_change_is_published_at_the_same_version_and_only_once(
    engine: Engine, feeds: FeedLog
) -> None:
    store_records(engine, [row("G-1", enterprise(1), "regular"), row("G-2", enterprise(2), "AEO")])
    publish(engine, feeds)
    at = NOW + dt.timedelta(days=1)
    mark(engine, "G-1", RecordStatus.OBJECTION, at)
    assert publish(engine, feeds) == 1
    assert publish(engine, feeds) == 0  # published once
    mark(engine, "G-1", RecordStatus.ACTIVE, at + dt.timedelta(hours=1))
    mark(engine, "G-2", RecordStatus.REPAIRED, at + dt.timedelta(hours=2))
    assert publish(engine, feeds) == 2
    changes = feed_changes(feeds, 2)
    assert [(c.record_key, c.version, c.kind, c.status) for c in changes] == [
        ("G-1", 1, sync_pb2.CORRECTION, "objection"),
        ("G-1", 1, sync_pb2.CORRECTION, "active"),
        ("G-2", 1, sync_pb2.REMOVAL, "repaired"),
    ]
    assert changes[2].fields_json == ""  # a repaired record is named, never shown again


def test_a_record_past_its_publicity_before_it_was_ever_published_never_enters(
    engine: Engine, feeds: FeedLog
) -> None:
    store_records(engine, [row("G-1", enterprise(1), "regular", end="2026-11-30")])
    assert publish(engine, feeds) == 0
    assert feeds.head(THEME) is None


def test_a_record_gone_from_the_store_is_published_as_removed(
    engine: Engine, feeds: FeedLog
) -> None:
    store_records(engine, [row("G-1", enterprise(1), "regular"), row("G-2", enterprise(2), "AEO")])
    publish(engine, feeds)
    with engine.begin() as conn:  # what no repository function does: the row is gone
        conn.execute(RECORDS.delete().where(RECORDS.c.record_key == "G-2"))
    assert publish(engine, feeds) == 1
    (gone,) = feed_changes(feeds, 2)
    assert (gone.kind, gone.record_key, gone.version) == (sync_pb2.REMOVAL, "G-2", 1)


def test_the_same_store_gives_the_same_leaf_bytes(engine: Engine) -> None:
    store_records(engine, [row(f"G-{i}", enterprise(i), "regular") for i in range(5)])
    mark(engine, "G-3", RecordStatus.OBJECTION, NOW + dt.timedelta(hours=1))
    key = SigningKey(hashlib.sha256(b"customs").digest())
    runs = []
    for _ in range(2):
        feeds = FeedLog(engine, Signer("k", key), lambda t: feed_origin("3plus2", "customs", t))
        publish(engine, feeds)
        runs.append((feeds.leaves(THEME, 0, feeds.size(THEME)), feeds.checkpoint(THEME)))
        with engine.begin() as conn:  # forget the feed, keep the records
            for table in (FEED_LEAVES, FEED_NODES, FEED_HEADS, FEED_PUBLISHED):
                conn.execute(table.delete())
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 5


def test_fields_are_canonical_json() -> None:
    assert (
        canonical_fields('{ "b": 1, "a": "惠州",  "c": [1, 2] }') == '{"a":"惠州","b":1,"c":[1,2]}'
    )


def test_a_large_publish_commits_chunk_by_chunk_and_resumes_where_it_stopped(
    engine: Engine, feeds: FeedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_records(engine, [row(f"G-{i:02d}", enterprise(i), "regular") for i in range(10)])
    monkeypatch.setattr(publish_module, "CHUNK", 4)
    signed: list[int] = []
    original = FeedLog.append

    def append_then_fail_third(self: FeedLog, conn: Any, theme: str, items: Any, **kw: Any) -> int:
        if len(signed) == 2:
            signed.append(-1)
            raise RuntimeError("the node stopped here")
        size = original(self, conn, theme, items, **kw)
        signed.append(size)
        return size

    monkeypatch.setattr(FeedLog, "append", append_then_fail_third)
    with pytest.raises(RuntimeError):
        publish(engine, feeds)
    assert feeds.size(THEME) == 8 and signed == [4, 8, -1]
    monkeypatch.setattr(FeedLog, "append", original)
    assert publish(engine, feeds) == 2
    assert [c.record_key for c in feed_changes(feeds)] == [f"G-{i:02d}" for i in range(10)]
    assert publish(engine, feeds) == 0
