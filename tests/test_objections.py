"""Objections (信用异议) as a case: received, marked, answered in working days, closed
with an outcome that, when it says ``corrected``, points at the corrected data."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from recordcases import (
    ENTERPRISE,
    OTHER_ENTERPRISE,
    TODAY,
    catalog_of_cases,
    import_rows,
    row,
)
from sqlalchemy import Engine, select, text
from typer.testing import CliRunner

from creditexchange.clock import CST
from creditexchange.devtools.provision import set_settings
from creditexchange.errors import NotFound, ObjectionError
from creditexchange.node.app.home import create_home
from creditexchange.node.app.wiring import open_node
from creditexchange.node.catalog import Catalog
from creditexchange.node.cli import app
from creditexchange.node.database import create_database_engine, upgrade
from creditexchange.node.database.models import OBJECTION_NOTES, OBJECTION_RECORDS, OBJECTIONS
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.ledger.note import Signer
from creditexchange.node.records import repository
from creditexchange.node.records.objections import (
    AnswerDeadline,
    ApplicantRole,
    ObjectionCase,
    ObjectionOutcome,
    close_objection,
    list_objections,
    note_objection,
    objection_case,
    objection_counts,
    open_objection,
)
from creditexchange.node.records.view import subject_view
from creditexchange.node.sync.feed import FeedLog, feed_origin
from creditexchange.node.sync.publish import publish_changes
from creditexchange.v1 import sync_pb2
from creditexchange.workdays import DEFAULT_CALENDAR, load_calendar

runner = CliRunner()


@pytest.fixture(scope="module")
def cases() -> Catalog:
    return catalog_of_cases()


@pytest.fixture
def penalties(engine: Engine, cases: Catalog, tmp_path: Path) -> Engine:
    """Three penalties of one enterprise (K1-K3) and one of another (X1)."""
    rows = [row("K1"), row("K2"), row("K3"), row("X1", subject_id=OTHER_ENTERPRISE)]
    import_rows(engine, cases, tmp_path, "penalties.csv", rows)
    return engine


def objection(
    engine: Engine, *keys: str, received: dt.date = TODAY, reason: str = "罚款已缴纳"
) -> ObjectionCase:
    return open_objection(
        engine,
        "penalty",
        keys,
        reason=reason,
        applicant="王五",
        channel="window",
        received=received,
        today=TODAY,
    )


def marked(engine: Engine, cases: Catalog) -> dict[str, bool]:
    view = subject_view(engine, cases, ENTERPRISE, today=TODAY)
    return {r.record_key: r.under_objection for r in view.records}


# --- the deadline --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "working_days", "due"),
    [
        # 国庆 2026: Oct 1-7 off, Sat Oct 10 worked: 14 working days end on Mon Oct 26
        (dt.date(2026, 9, 30), 14, dt.date(2026, 10, 26)),
        (dt.date(2026, 9, 30), 2, dt.date(2026, 10, 9)),  # not Oct 2
        (dt.date(2026, 11, 27), 14, dt.date(2026, 12, 17)),  # a Friday: weekends skipped
        (dt.date(2026, 2, 13), 2, dt.date(2026, 2, 24)),  # 春节, the Saturday Feb 14 worked
    ],
)
def test_the_answer_deadline_counts_working_days_over_holidays(
    received: dt.date, working_days: int, due: dt.date
) -> None:
    assert AnswerDeadline(DEFAULT_CALENDAR, working_days).due(received) == due


def test_an_objection_received_before_a_holiday_is_due_after_it(
    penalties: Engine, cases: Catalog
) -> None:
    case = objection(penalties, "K1", received=dt.date(2026, 9, 30))
    assert (case.received, case.due) == (dt.date(2026, 9, 30), dt.date(2026, 10, 26))
    assert case.is_open and case.overdue(TODAY)
    assert not case.overdue(dt.date(2026, 10, 26))  # its last day is still in time


def test_overdue_objections_are_listed_against_the_day_given(penalties: Engine) -> None:
    early = objection(penalties, "K1", received=dt.date(2026, 9, 30))  # due 2026-10-26
    late = objection(penalties, "K2", received=dt.date(2026, 11, 20))  # due 2026-12-10
    done = objection(penalties, "K3", received=dt.date(2026, 9, 1))
    close_objection(penalties, done.number, ObjectionOutcome.CONFIRMED, today=TODAY)

    def overdue(on: dt.date) -> list[int]:
        return [c.number for c in list_objections(penalties, overdue_on=on)]

    assert overdue(dt.date(2026, 10, 26)) == []
    assert overdue(dt.date(2026, 10, 27)) == [early.number]
    assert overdue(dt.date(2026, 12, 11)) == [early.number, late.number]
    assert [c.number for c in list_objections(penalties, open_only=True)] == [
        early.number,
        late.number,
    ]
    assert len(list_objections(penalties)) == 3
    assert objection_counts(penalties, TODAY) == (2, 1)


def test_the_gauges_count_open_and_overdue_objections_when_scraped(penalties: Engine) -> None:
    metrics = Metrics()
    metrics.watch_objections(lambda: objection_counts(penalties, TODAY))
    metrics.watch_objections(lambda: (99, 99))  # once per registry: the first one stays

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    assert (sample("credit_node_objections_open"), sample("credit_node_objections_overdue")) == (
        0.0,
        0.0,
    )
    objection(penalties, "K1", received=dt.date(2026, 9, 30))
    objection(penalties, "K2")
    assert sample("credit_node_objections_open") == 2.0
    assert sample("credit_node_objections_overdue") == 1.0


def test_a_failing_count_leaves_the_gauges_out_of_the_scrape_not_the_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()

    def broken() -> tuple[int, int]:
        raise RuntimeError("database unreachable: password=secret")

    metrics.watch_objections(broken)
    metrics.queries.labels("shenzhen", "Query", "p", "permit", "OK").inc()
    assert metrics.registry.get_sample_value("credit_node_objections_open") is None
    assert metrics.registry.get_sample_value(
        "credit_node_queries_total",
        {"requester": "shenzhen", "method": "Query", "purpose": "p", "decision": "permit",
         "status": "OK"},
    ) == 1.0  # fmt: skip
    assert "secret" not in caplog.text


# --- the mark --------------------------------------------------------------------------------


def test_an_objection_marks_every_record_it_covers_and_says_what_it_is(
    penalties: Engine, cases: Catalog
) -> None:
    case = open_objection(
        penalties,
        "penalty",
        ["K1", "K2", "K1"],
        reason="决定已撤销",
        applicant="李律师",
        role=ApplicantRole.AGENT,
        channel="member:shenzhen",
        received=dt.date(2026, 11, 26),
        today=TODAY,
    )
    assert marked(penalties, cases) == {"K1": True, "K2": True, "K3": False}
    shown = objection_case(penalties, case.number)
    assert [(r.record_key, r.version_opened, r.status) for r in shown.records] == [
        ("K1", 1, "objection"),
        ("K2", 1, "objection"),
    ]
    assert (shown.applicant, shown.applicant_role, shown.channel) == (
        "李律师",
        "agent",
        "member:shenzhen",
    )
    assert shown.subject == ENTERPRISE and shown.subject_type == "enterprise"


def test_a_record_under_two_objections_keeps_its_mark_until_both_close(
    penalties: Engine, cases: Catalog
) -> None:
    first = objection(penalties, "K1", "K2")
    second = objection(penalties, "K1", reason="重复公示")
    closed = close_objection(penalties, first.number, ObjectionOutcome.CONFIRMED, today=TODAY)
    assert {r.record_key: r.status for r in closed.records} == {
        "K1": "objection",
        "K2": "active",
    }
    assert marked(penalties, cases) == {"K1": True, "K2": False, "K3": False}
    close_objection(penalties, second.number, ObjectionOutcome.WITHDRAWN, today=TODAY)
    assert marked(penalties, cases) == {"K1": False, "K2": False, "K3": False}


@pytest.mark.parametrize("outcome", [ObjectionOutcome.WITHDRAWN, ObjectionOutcome.UNRESOLVED])
def test_a_withdrawn_or_unresolved_objection_removes_the_mark_and_keeps_its_outcome(
    penalties: Engine, cases: Catalog, outcome: ObjectionOutcome
) -> None:
    case = objection(penalties, "K1")
    closed = close_objection(penalties, case.number, outcome, note="申请人撤回", today=TODAY)
    assert (closed.outcome, closed.answered, closed.is_open) == (outcome.value, TODAY, False)
    assert [n.text for n in closed.notes] == ["申请人撤回"]
    assert marked(penalties, cases)["K1"] is False


def test_a_revoked_record_is_withdrawn_from_publicity_whatever_else_is_open(
    penalties: Engine, cases: Catalog
) -> None:
    """Revoked: the record should not be public (wrong, duplicated, past its period)."""
    first = objection(penalties, "K1", "K2")
    objection(penalties, "K1", reason="重复公示")
    closed = close_objection(penalties, first.number, ObjectionOutcome.REVOKED, today=TODAY)
    assert {r.record_key: r.status for r in closed.records} == {"K1": "expired", "K2": "expired"}
    assert marked(penalties, cases) == {"K3": False}  # neither is shown or served any more


def test_handling_notes_are_kept_in_order_with_their_time(penalties: Engine) -> None:
    case = objection(penalties, "K1")
    note_objection(penalties, case.number, "已受理")
    note_objection(penalties, case.number, "已转市场监管局核查")
    closed = close_objection(
        penalties, case.number, ObjectionOutcome.CONFIRMED, note="原记录无误", today=TODAY
    )
    assert [n.text for n in closed.notes] == ["已受理", "已转市场监管局核查", "原记录无误"]
    times = [n.written_at for n in closed.notes]
    assert times == sorted(times) and all(t.tzinfo for t in times)
    with pytest.raises(ObjectionError, match=f"objection {case.number} is closed already"):
        note_objection(penalties, case.number, "too late")
    with pytest.raises(ObjectionError, match="closed already"):
        close_objection(penalties, case.number, ObjectionOutcome.CONFIRMED, today=TODAY)


# --- corrected ---------------------------------------------------------------------------------


def test_corrected_is_refused_until_the_corrected_data_is_imported_then_linked(
    penalties: Engine, cases: Catalog, tmp_path: Path
) -> None:
    case = objection(penalties, "K1", "K2")
    with pytest.raises(ObjectionError, match="Import the source department's corrected data first"):
        close_objection(penalties, case.number, ObjectionOutcome.CORRECTED, today=TODAY)
    corrected = import_rows(penalties, cases, tmp_path, "fixed.csv", [row("K1", fine="0.5")])
    with pytest.raises(ObjectionError, match=r"record 'K2' has no newer data .* version 1"):
        close_objection(penalties, case.number, ObjectionOutcome.CORRECTED, today=TODAY)
    assert objection_case(penalties, case.number).is_open  # nothing of the refusal stayed
    closed = close_objection(
        penalties, case.number, ObjectionOutcome.CORRECTED, corrected=["K1"], today=TODAY
    )
    links = {r.record_key: (r.corrected_version, r.corrected_batch) for r in closed.records}
    assert links == {"K1": (2, corrected.batch_id), "K2": (None, None)}
    assert marked(penalties, cases) == {"K1": False, "K2": False, "K3": False}


def test_the_corrected_data_must_be_newer_than_the_objection(
    penalties: Engine, cases: Catalog, tmp_path: Path
) -> None:
    import_rows(penalties, cases, tmp_path, "fixed.csv", [row("K1", fine="0.5")])  # before it
    case = objection(penalties, "K1")
    with pytest.raises(ObjectionError, match=r"still version 2"):
        close_objection(penalties, case.number, ObjectionOutcome.CORRECTED, today=TODAY)


def test_corrected_names_only_records_the_objection_covers(penalties: Engine) -> None:
    case = objection(penalties, "K1")
    with pytest.raises(ObjectionError, match="does not cover a record 'K3'"):
        close_objection(
            penalties, case.number, ObjectionOutcome.CORRECTED, corrected=["K3"], today=TODAY
        )
    with pytest.raises(ObjectionError, match="only with the outcome 'corrected'"):
        close_objection(
            penalties, case.number, ObjectionOutcome.CONFIRMED, corrected=["K1"], today=TODAY
        )


# --- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "values", "error"),
    [
        (["K1", "X1"], {}, "record 'X1' is of another subject than 'K1'"),
        (["K1"], {"channel": "fax"}, "unknown channel 'fax'"),
        (["K1"], {"channel": "member:"}, "unknown channel"),
        (["K1"], {"reason": "  "}, "needs a reason"),
        (["K1"], {"applicant": ""}, "needs its applicant"),
        ([], {}, "names the record"),
        (["K1"], {"received": dt.date(2026, 11, 28)}, "after today"),
    ],
)
def test_an_objection_that_cannot_be_opened_is_refused_and_marks_nothing(
    penalties: Engine, cases: Catalog, keys: list[str], values: dict[str, object], error: str
) -> None:
    arguments: dict[str, object] = {
        "reason": "r", "applicant": "a", "channel": "online", "today": TODAY, **values,
    }  # fmt: skip
    with pytest.raises(ObjectionError, match=error):
        open_objection(penalties, "penalty", keys, **arguments)  # type: ignore[arg-type]
    assert not any(marked(penalties, cases).values())
    assert list_objections(penalties) == []


def test_an_objection_to_a_record_no_longer_served_is_refused(penalties: Engine) -> None:
    with penalties.begin() as conn:
        record_id, _ = repository.find_record(conn, "penalty", "K3")
        repository.set_status(
            conn, record_id, repository.RecordStatus.EXPIRED, "withdrawn", dt.datetime.now(CST)
        )
    with pytest.raises(ObjectionError, match="'K3' is expired and no longer served"):
        objection(penalties, "K3")
    with pytest.raises(NotFound, match="no record 'K9'"):
        objection(penalties, "K9")
    with pytest.raises(NotFound, match="no objection 77"):
        close_objection(penalties, 77, ObjectionOutcome.CONFIRMED, today=TODAY)


# --- the change feed -----------------------------------------------------------------------------


def test_the_feed_carries_the_mark_to_subscribers_and_takes_it_away(penalties: Engine) -> None:
    signer = Signer("huizhou-node", SigningKey(hashlib.sha256(b"huizhou").digest()))
    feeds = FeedLog(penalties, signer, lambda theme: feed_origin("3plus2", "huizhou", theme))

    def publish() -> list[sync_pb2.FeedChange]:
        before = feeds.size("penalty")
        publish_changes(penalties, feeds, "huizhou", ["penalty"], TODAY)
        leaves = feeds.leaves("penalty", before, feeds.size("penalty"))
        return [sync_pb2.FeedChange.FromString(leaf) for leaf in leaves]

    assert len(publish()) == 4
    case = objection(penalties, "K1")
    [opened] = publish()
    assert (opened.kind, opened.record_key, opened.version, opened.status) == (
        sync_pb2.CORRECTION,
        "K1",
        1,
        "objection",
    )
    assert json.loads(opened.fields_json)["decision_number"] == "惠市监罚〔2026〕K1号"
    close_objection(penalties, case.number, ObjectionOutcome.CONFIRMED, today=TODAY)
    [closed] = publish()
    assert (closed.kind, closed.version, closed.status) == (sync_pb2.CORRECTION, 1, "active")
    assert publish() == []


# --- the command line ----------------------------------------------------------------------------


def test_the_command_line_says_what_is_wrong(database_url: str, tmp_path: Path) -> None:
    config = create_home(tmp_path / "hz", "huizhou", database_url=database_url)

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--home", str(config.home)], env={"COLUMNS": "200"})
        return result.exit_code, result.output

    code, output = cli(
        "objection", "open", "admin_penalty", "nope", "--reason", "r", "--applicant", "a",
        "--channel", "window",
    )  # fmt: skip
    assert code == 2 and "no record 'nope' in theme 'admin_penalty'" in output
    code, output = cli("objection", "list", "--overdue")
    assert code == 0 and "no objections overdue" in output
    code, output = cli("objection", "show", "1")
    assert code == 2 and "no objection 1" in output
    code, output = cli(
        "objection", "open", "admin_penalty", "K", "--reason", "r", "--applicant", "a",
        "--channel", "window", "--received", "2027-13-01",
    )  # fmt: skip
    assert code == 2 and "is not a date" in output


def test_the_deadline_setting_and_calendar_file_decide_the_due_day(
    database_url: str, tmp_path: Path
) -> None:
    config = create_home(tmp_path / "hz", "huizhou", database_url=database_url)
    calendar = config.home / "workdays.yaml"
    calendar.write_text("holidays: [2026-12-01]\n", "utf-8")  # a city's own closure
    calendar.chmod(0o600)
    set_settings(config.home, workdays_path="workdays.yaml", objection_answer_working_days=2)
    node = open_node(config.home)
    assert load_calendar(node.config.workdays_path).is_working_day(dt.date(2026, 12, 1)) is False
    import_rows(node.database, catalog_of_cases(), tmp_path, "p.csv", [row("K1")])
    node.database.dispose()
    result = runner.invoke(
        app,
        ["objection", "open", "penalty", "K1", "--reason", "r", "--applicant", "a",
         "--channel", "online", "--received", "2026-11-27", "--json", "--home", str(config.home)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    opened = json.loads(result.output)
    # Fri 11-27 + 2 working days: Mon 11-30, (Tue 12-01 closed), Wed 12-02
    assert (opened["received"], opened["due"]) == ("2026-11-27", "2026-12-02")
    assert opened["records"][0]["status"] == "objection"


# --- the migration -------------------------------------------------------------------------------


@pytest.fixture
def engine_at_0011(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url)
    upgrade(engine, "0011")
    yield engine
    engine.dispose()


def test_objections_recorded_before_the_workflow_are_carried_over(
    engine_at_0011: Engine,
) -> None:
    engine = engine_at_0011
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subjects (subject_id, subject_type, name, updated_at) "
                "VALUES (:s, 'enterprise', 'x', :t)"
            ),
            {"s": ENTERPRISE, "t": dt.datetime(2026, 9, 30, 2, tzinfo=dt.UTC)},
        )
        conn.execute(
            text(
                "INSERT INTO records (id, theme, record_key, subject_id, source_department, "
                "fields, status, version, content_hash, updated_at) VALUES (7, 'penalty', 'K1', "
                ":s, 'market', '{}', 'objection', 2, 'h', :t)"
            ),
            {"s": ENTERPRISE, "t": dt.datetime(2026, 9, 30, 2, tzinfo=dt.UTC)},
        )
        conn.execute(
            text(
                "INSERT INTO objections (id, record_id, reason, opened_at, closed_at, outcome, "
                "note) VALUES (3, 7, 'paid', :t, :t, 'confirmed', 'checked'), "
                "(4, 7, 'again', :t, NULL, NULL, NULL)"
            ),
            {"t": dt.datetime(2026, 9, 30, 2, tzinfo=dt.UTC)},
        )
    upgrade(engine)
    closed, still_open = objection_case(engine, 3), objection_case(engine, 4)
    assert (closed.subject, closed.received, closed.due) == (
        ENTERPRISE,
        dt.date(2026, 9, 30),
        dt.date(2026, 10, 26),
    )
    assert (closed.outcome, closed.answered, [n.text for n in closed.notes]) == (
        "confirmed",
        dt.date(2026, 9, 30),
        ["checked"],
    )
    assert [(r.record_key, r.version_opened) for r in still_open.records] == [("K1", 2)]
    assert still_open.is_open and still_open.notes == []
    with engine.connect() as conn:
        assert conn.execute(select(OBJECTIONS.c.channel)).scalars().all() == ["window"] * 2
        assert len(conn.execute(select(OBJECTION_RECORDS)).all()) == 2
        assert len(conn.execute(select(OBJECTION_NOTES)).all()) == 1
