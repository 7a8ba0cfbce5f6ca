"""Customs' feeds end to end between running nodes: customs publishes what it holds,
huizhou (SQLite) and shenzhen (PostgreSQL) sync it through the real Sync service over
mutual TLS, and a correction, a repair and a removal at customs reach both copies;
the copies are shown as customs data in ``credit-node show``."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import postgres_schema
from fedharness import Federation
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select, text, update
from typer.testing import CliRunner

from creditexchange.clock import china_today
from creditexchange.node.app.wiring import federation_view, open_regional_client
from creditexchange.node.cli import app
from creditexchange.node.database import open_database
from creditexchange.node.database.models import RECORDS, SYNCED_RECORDS
from creditexchange.node.federation.report import consolidated_report
from creditexchange.node.federation.report_verify import verify_report
from creditexchange.node.federation.screening import screen
from creditexchange.node.measures import load_measures
from creditexchange.node.records import repository
from creditexchange.node.records.repository import RecordStatus
from creditexchange.node.sync.publish import canonical_fields
from creditexchange.node.sync.subscribe import FeedResult, Subscriber, SyncMetrics
from creditexchange.v1 import sync_pb2

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MEMBERS = ("customs", "huizhou", "shenzhen")
SUBSCRIBERS = ("huizhou", "shenzhen")
THEMES = ("customs_credit_grade", "customs_case", "customs_light_status")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with postgres_schema() as pg_url:
        federation = Federation(
            tmp_path_factory.mktemp("feeds"), MEMBERS, {"shenzhen": pg_url}, subjects=40
        )
        try:
            yield federation
        finally:
            federation.close()


def _store(fed: Federation, member: str) -> Engine:
    return open_database(fed.nodes[member].config.database_url)


def publisher_copy(fed: Federation, theme: str) -> dict[str, tuple[Any, ...]]:
    """customs' records of ``theme`` as its feed carries them: the servable ones, by key."""
    engine = _store(fed, "customs")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    RECORDS.c.record_key, RECORDS.c.version, RECORDS.c.subject_id,
                    RECORDS.c.status, RECORDS.c.fields,
                ).where(RECORDS.c.theme == theme, repository.servable(china_today()))
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    return {r[0]: (r[1], r[2], r[3], canonical_fields(r[4])) for r in rows}


def subscriber_copy(fed: Federation, member: str, theme: str) -> dict[str, tuple[Any, ...]]:
    c = SYNCED_RECORDS.c
    engine = _store(fed, member)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(c.record_key, c.version, c.subject_id, c.status, c.fields).where(
                    c.origin == "customs", c.theme == theme
                )
            ).all()
    finally:
        engine.dispose()
    return {r[0]: (r[1], r[2], r[3], canonical_fields(r[4])) for r in rows}


def sync(fed: Federation, member: str) -> list[FeedResult]:
    subscriber = Subscriber.of_client(
        fed.client(member), fed.servers[member].ledger, SyncMetrics(CollectorRegistry())
    )
    return fed.run(subscriber.run_once("customs"))


def publish(fed: Federation) -> dict[str, int]:
    return fed.run(fed.servers["customs"].publish())


def test_both_cities_hold_exactly_what_customs_publishes(fed: Federation) -> None:
    appended = publish(fed)
    assert set(appended) == set(THEMES) and sum(appended.values()) > 0
    for member in SUBSCRIBERS:
        results = sync(fed, member)
        assert {(r.theme, r.outcome) for r in results} == {(t, "caught-up") for t in THEMES}
        for theme in THEMES:
            assert subscriber_copy(fed, member, theme) == publisher_copy(fed, theme)
    assert publish(fed) == dict.fromkeys(THEMES, 0)  # nothing changed, nothing appended
    assert all(r.applied == 0 for r in sync(fed, "huizhou"))


def test_a_correction_an_objection_a_repair_and_a_removal_at_customs_reach_every_copy(
    fed: Federation,
) -> None:
    publish(fed)
    for member in SUBSCRIBERS:
        sync(fed, member)
    theme = "customs_credit_grade"
    keys = sorted(publisher_copy(fed, theme))
    corrected, repaired, removed, objected = keys[:4]
    engine = _store(fed, "customs")
    try:
        with engine.begin() as conn:
            fields = json.loads(
                conn.execute(
                    select(RECORDS.c.fields).where(
                        RECORDS.c.theme == theme, RECORDS.c.record_key == corrected
                    )
                ).scalar_one()
            )
            fields["customs_code"] = "4413969999"
            conn.execute(
                update(RECORDS)
                .where(RECORDS.c.theme == theme, RECORDS.c.record_key == corrected)
                .values(
                    fields=json.dumps(fields, ensure_ascii=False),
                    version=RECORDS.c.version + 1,
                    content_hash="corrected",
                )
            )
            now = dt.datetime.now(dt.UTC)
            for key, status in (
                (repaired, RecordStatus.REPAIRED),
                (removed, RecordStatus.EXPIRED),
                (objected, RecordStatus.OBJECTION),
            ):
                record_id, _ = repository.find_record(conn, theme, key)
                repository.set_status(conn, record_id, status, f"{status.value} at customs", now)
    finally:
        engine.dispose()
    assert publish(fed)[theme] == 4
    for member in SUBSCRIBERS:
        sync(fed, member)
        copy = subscriber_copy(fed, member, theme)
        assert copy == publisher_copy(fed, theme)
        assert json.loads(copy[corrected][3])["customs_code"] == "4413969999"
        assert repaired not in copy and removed not in copy  # a repair withdraws it too
        assert copy[objected][2] == "objection"  # marked 异议处理中 in every copy


def test_the_copy_is_shown_as_customs_data_and_the_batches_are_in_both_ledgers(
    fed: Federation,
) -> None:
    publish(fed)
    sync(fed, "huizhou")
    engine = _store(fed, "huizhou")
    try:
        with engine.connect() as conn:
            subject = conn.execute(
                text("SELECT subject_id FROM synced_records WHERE origin = 'customs' LIMIT 1")
            ).scalar_one()
    finally:
        engine.dispose()
    shown = CliRunner().invoke(
        app, ["show", subject, "--json", "--home", str(fed.nodes["huizhou"].home)]
    )
    assert shown.exit_code == 0, shown.output
    records = json.loads(shown.output)["records"]
    assert records and {r["origin"] for r in records if r["theme"] in THEMES} == {"customs"}
    status = CliRunner().invoke(
        app, ["sync", "status", "--json", "--home", str(fed.nodes["huizhou"].home)]
    )
    assert status.exit_code == 0, status.output
    feeds = {(f["publisher"], f["theme"]): f for f in json.loads(status.output)}
    assert set(feeds) == {("customs", t) for t in THEMES}
    assert all(f["lag_entries"] == 0 and not f["last_error"] for f in feeds.values())


def test_a_city_screens_with_its_synced_copy_even_while_customs_is_down(
    fed: Federation,
) -> None:
    theme = "customs_credit_grade"
    key = sorted(publisher_copy(fed, theme))[-1]
    engine = _store(fed, "customs")
    try:
        with engine.begin() as conn:
            row = conn.execute(
                select(RECORDS.c.fields, RECORDS.c.subject_id).where(
                    RECORDS.c.theme == theme, RECORDS.c.record_key == key
                )
            ).one()
            fields = json.loads(row.fields)
            fields["grade"] = "seriously_dishonest"  # a downgrade at customs
            conn.execute(
                update(RECORDS)
                .where(RECORDS.c.theme == theme, RECORDS.c.record_key == key)
                .values(
                    fields=json.dumps(fields, ensure_ascii=False),
                    version=RECORDS.c.version + 1,
                    content_hash="downgraded",
                    decision_date=dt.date(2026, 12, 1),
                )
            )
    finally:
        engine.dispose()
    subject = row.subject_id
    publish(fed)
    sync(fed, "huizhou")
    config = fed.nodes["huizhou"].config
    fed.stop("customs")
    region = open_regional_client(config, ledger=fed.servers["huizhou"].ledger)
    try:
        fed.run(region.__aenter__())
        screened = fed.run(
            screen(
                region,
                load_measures(),
                "land_auction",
                [subject],
                case_reference="TD-2026-9",
                officer="officer-3",
                partner="land-centre",
            )
        )
        fed.run(region.__aexit__(None, None, None))
    finally:
        fed.start("customs")
    (row_,) = screened.document["subjects"]
    (measure,) = [m for m in row_["measures"] if m["measure"] == "customs_seriously_dishonest"]
    (record,) = measure["records"]
    assert record["member"] == "customs" and record["record_key"] == key
    assert "synced copy" in record["note"]
    members = {m["member"]: m["status"] for m in screened.document["members"]}
    assert members["customs"] != "answered"  # customs was down: the copy spoke for it


def test_a_report_shows_the_copy_as_customs_data_only_when_customs_did_not_answer(
    fed: Federation,
) -> None:
    publish(fed)
    sync(fed, "huizhou")
    theme = "customs_credit_grade"
    key = sorted(subscriber_copy(fed, "huizhou", theme))[0]
    subject = subscriber_copy(fed, "huizhou", theme)[key][1]
    config = fed.nodes["huizhou"].config
    asked: dict[str, Any] = {
        "purpose": "bank_credit",
        "legal_basis": "《征信业管理条例》",
        "case_reference": "L-2026-7",
        "officer": "officer-5",
    }

    def report() -> dict[str, Any]:
        region = open_regional_client(config, ledger=fed.servers["huizhou"].ledger)
        fed.run(region.__aenter__())
        try:
            return fed.run(consolidated_report(region, subject, **asked))
        finally:
            fed.run(region.__aexit__(None, None, None))

    def shown(issued: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for s in issued["sections"] for r in s["records"] if r.get("record_key") == key]

    answered = report()
    assert [(r["member"], r.get("synced_from")) for r in shown(answered)] == [("customs", None)]
    fed.stop("customs")
    try:
        copied = report()
    finally:
        fed.start("customs")
    assert [(r["member"], r.get("synced_from")) for r in shown(copied)] == [("huizhou", "customs")]
    view = federation_view(config)
    assert verify_report(copied, view.current(), view.catalog) == []


def test_garbage_and_hostile_pulls_get_a_documented_status_and_change_nothing(
    fed: Federation,
) -> None:
    """Bytes no client of ours would send, straight on the wire to the gate-wrapped Sync
    service: undecodable requests, absurd cursors and page sizes, themes full of control
    and bidi characters, for Pull and Follow. Each gets a status the service documents;
    the feed is unchanged and still serves an honest subscriber afterwards."""
    publish(fed)
    documented = {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    rng = random.Random(13)
    themes = ["customs_credit_grade", "", "x" * 5000, "customs_case\u202e", "\x00\x01", "../"]
    payloads = [rng.randbytes(rng.randint(0, 300)) for _ in range(15)] + [
        sync_pb2.PullRequest(
            theme=rng.choice(themes),
            from_size=rng.choice([0, 3, 2**63, 2**64 - 1]),
            max_changes=rng.choice([0, 1, 2**32 - 1]),
        ).SerializeToString()
        for _ in range(15)
    ]
    feeds = fed.servers["customs"].feeds
    assert feeds is not None
    before = feeds.head(THEMES[0])
    client = fed.client("huizhou")

    async def send(path: str, data: bytes) -> grpc.StatusCode:
        channel = client.channel("customs")  # made in the federation's loop
        try:
            if path.endswith("Follow"):
                call: Any = channel.unary_stream(path)
                stream = call(data, timeout=3)
                async for _ in stream:  # the first page (or the refusal), then enough
                    stream.cancel()
                    break
            else:
                unary: Any = channel.unary_unary(path)
                await unary(data, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    for path in ("/creditexchange.v1.Sync/Pull", "/creditexchange.v1.Sync/Follow"):
        for data in payloads:
            assert fed.run(send(path, data)) in documented, (path, data[:60])
    assert feeds.head(THEMES[0]) == before
    assert {r.outcome for r in sync(fed, "shenzhen")} == {"caught-up"}
