"""Credit repair (信用修复): a penalty's publicity ended early once its minimum period has
passed, never for a serious case, never over an open objection; the record then leaves
every answer and every subscriber's copy, and its history says why."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from recordcases import CATALOG, ENTERPRISE, TODAY, catalog_of_cases, import_rows, row
from sqlalchemy import Engine, insert, select
from typer.testing import CliRunner

from creditexchange.clock import CST
from creditexchange.devtools.provision import set_settings
from creditexchange.errors import CatalogError, NotFound, RepairError
from creditexchange.node.app.home import create_home
from creditexchange.node.app.wiring import open_node
from creditexchange.node.catalog import Catalog, parse_catalog
from creditexchange.node.cli import app
from creditexchange.node.database.models import RECORDS, REPAIRS, SYNCED_RECORDS
from creditexchange.node.ledger.note import Signer
from creditexchange.node.records import repository
from creditexchange.node.records.history import record_history
from creditexchange.node.records.objections import (
    ObjectionOutcome,
    close_objection,
    open_objection,
)
from creditexchange.node.records.repair import repair_record
from creditexchange.node.records.view import subject_view
from creditexchange.node.sync.feed import FeedLog, feed_origin
from creditexchange.node.sync.publish import publish_changes
from creditexchange.v1 import sync_pb2

runner = CliRunner()


@pytest.fixture(scope="module")
def cases() -> Catalog:
    return catalog_of_cases()


@pytest.fixture
def penalties(engine: Engine, cases: Catalog, tmp_path: Path) -> Engine:
    """Penalties decided 2026-03-01: K1 an ordinary fine, F1 in the food industry (a year's
    minimum), S1 a revoked licence (a serious case), E1 stated public until 2026-06-30 (so
    no longer public), and N1 a notice (a theme that is not repairable)."""
    import_rows(
        engine,
        cases,
        tmp_path,
        "penalties.csv",
        [
            row("K1"),
            row("F1", industry="food"),
            row("S1", penalty_type="revocation"),
            row("E1", publicity_end="2026-06-30"),
        ],
    )
    import_rows(engine, cases, tmp_path, "notices.csv", [row("N1")], theme="notice")
    return engine


def repair(
    engine: Engine, cases: Catalog, key: str, decided: dt.date, theme: str = "penalty"
) -> int:
    return repair_record(
        engine,
        cases,
        theme,
        key,
        basis="惠信修〔2026〕1号 信用修复决定",
        evidence="罚款缴纳凭证、整改报告",
        applicant="惠州市示例电子科技有限公司",
        decided=decided,
        today=TODAY,
    ).number


def served(engine: Engine, cases: Catalog) -> list[str]:
    view = subject_view(engine, cases, ENTERPRISE, today=TODAY)
    return sorted(r.record_key for r in view.records)


@pytest.mark.parametrize(
    ("key", "too_early", "first_day"),
    [
        ("K1", dt.date(2026, 5, 31), dt.date(2026, 6, 1)),  # 3 months after 2026-03-01
        ("F1", dt.date(2027, 2, 28), dt.date(2027, 3, 1)),  # food: at least a year
    ],
)
def test_a_repair_is_refused_before_the_minimum_period_and_says_from_when(
    penalties: Engine, cases: Catalog, key: str, too_early: dt.date, first_day: dt.date
) -> None:
    with pytest.raises(RepairError, match=f"record '{key}' may be repaired from {first_day}"):
        repair_record(
            penalties, cases, "penalty", key, basis="b", evidence="e",
            decided=too_early, today=max(TODAY, too_early),
        )  # fmt: skip
    assert key in served(penalties, cases)
    done = repair_record(
        penalties, cases, "penalty", key, basis="b", evidence="e",
        decided=first_day, today=max(TODAY, first_day),
    )  # fmt: skip
    assert (done.decided, done.publicity_end_before) == (first_day, dt.date(2029, 3, 1))
    assert key not in served(penalties, cases)


def test_a_serious_case_is_never_repaired_before_its_maximum(
    penalties: Engine, cases: Catalog
) -> None:
    with pytest.raises(
        RepairError,
        match=r"'S1' is a serious case \(penalty_type revocation\), which may not be repaired "
        r"before the end of its maximum period; its publicity ends by itself after 2029-03-01",
    ):
        repair(penalties, cases, "S1", TODAY)
    assert "S1" in served(penalties, cases)


def test_a_theme_that_is_not_repairable_is_refused(penalties: Engine, cases: Catalog) -> None:
    with pytest.raises(RepairError, match=r"records of notice \(通报\) cannot be repaired"):
        repair(penalties, cases, "N1", TODAY, theme="notice")
    with pytest.raises(CatalogError, match="unknown theme 'nope'"):
        repair(penalties, cases, "N1", TODAY, theme="nope")
    with pytest.raises(NotFound, match="no record 'K9'"):
        repair(penalties, cases, "K9", TODAY)


def test_a_record_under_objection_is_repaired_only_once_the_objection_is_closed(
    penalties: Engine, cases: Catalog
) -> None:
    case = open_objection(
        penalties, "penalty", ["K1"], reason="r", applicant="a", channel="online", today=TODAY
    )
    with pytest.raises(RepairError, match=rf"'K1' is under objection {case.number} \(异议处理中\)"):
        repair(penalties, cases, "K1", TODAY)
    close_objection(penalties, case.number, ObjectionOutcome.CONFIRMED, today=TODAY)
    repair(penalties, cases, "K1", TODAY)
    assert "K1" not in served(penalties, cases)


def test_a_record_repaired_withdrawn_or_past_its_publicity_is_refused(
    penalties: Engine, cases: Catalog
) -> None:
    number = repair(penalties, cases, "K1", dt.date(2026, 7, 1))
    with pytest.raises(RepairError, match=rf"repaired already on 2026-07-01 \(repair {number}\)"):
        repair(penalties, cases, "K1", TODAY)
    with penalties.begin() as conn:
        record_id, _ = repository.find_record(conn, "penalty", "F1")
        repository.set_status(
            conn, record_id, repository.RecordStatus.EXPIRED, "withdrawn", dt.datetime.now(CST)
        )
    with pytest.raises(RepairError, match="'F1' is withdrawn from publicity"):
        repair(penalties, cases, "F1", TODAY)
    with pytest.raises(RepairError, match="'E1' stopped being public after 2026-06-30"):
        repair(penalties, cases, "E1", dt.date(2026, 7, 1))
    with pytest.raises(RepairError, match="after today"):
        repair(penalties, cases, "E1", TODAY + dt.timedelta(days=1))
    with pytest.raises(RepairError, match="needs its basis"):
        repair_record(penalties, cases, "penalty", "E1", basis=" ", evidence="e", today=TODAY)
    with penalties.connect() as conn:
        assert len(conn.execute(select(REPAIRS)).all()) == 1


def test_a_repaired_record_is_recorded_kept_and_no_longer_served(
    penalties: Engine, cases: Catalog
) -> None:
    assert served(penalties, cases) == ["F1", "K1", "N1", "S1"]  # E1's publicity is over
    number = repair(penalties, cases, "K1", dt.date(2026, 9, 1))
    assert served(penalties, cases) == ["F1", "N1", "S1"]
    view = subject_view(penalties, cases, ENTERPRISE, today=TODAY)
    assert view.hidden == 2  # counted as hidden, never shown
    with penalties.connect() as conn:
        found = repository.read_subjects(
            conn.connection.driver_connection, conn.dialect, [ENTERPRISE], None, TODAY
        )
        version, status = conn.execute(
            select(RECORDS.c.version, RECORDS.c.status).where(RECORDS.c.record_key == "K1")
        ).one()
        stored = conn.execute(select(REPAIRS)).one()
    assert "K1" not in {r.record_key for r in found.records}
    assert (version, status) == (1, "repaired")  # kept, at the version it had
    assert (stored.basis, stored.evidence, stored.decided) == (
        "惠信修〔2026〕1号 信用修复决定",
        "罚款缴纳凭证、整改报告",
        dt.date(2026, 9, 1),
    )
    history = record_history(penalties, cases, "penalty", "K1")
    last = history.entries[-1]
    assert (last.kind, last.status) == ("repaired", "repaired")
    assert f"repair {number}" in last.why and "decided 2026-09-01" in last.why
    assert "public until 2029-03-01" in last.why


def test_a_repair_withdraws_the_record_from_the_feed_and_the_copies(
    penalties: Engine, cases: Catalog
) -> None:
    signer = Signer("huizhou-node", SigningKey(hashlib.sha256(b"huizhou").digest()))
    feeds = FeedLog(penalties, signer, lambda theme: feed_origin("3plus2", "huizhou", theme))
    assert publish_changes(penalties, feeds, "huizhou", ["penalty"], TODAY) == {"penalty": 3}
    repair(penalties, cases, "K1", TODAY)
    assert publish_changes(penalties, feeds, "huizhou", ["penalty"], TODAY) == {"penalty": 1}
    [leaf] = feeds.leaves("penalty", 3, 4)
    change = sync_pb2.FeedChange.FromString(leaf)
    assert (change.kind, change.record_key, change.status) == (
        sync_pb2.REMOVAL,
        "K1",
        "repaired",
    )
    assert change.fields_json == "" and change.subject_id == ""  # named, never shown again


def test_a_copy_an_older_publisher_kept_as_repaired_is_not_served(
    engine: Engine, cases: Catalog
) -> None:
    copy = {
        "origin": "customs", "theme": "penalty", "record_key": "C1", "version": 2,
        "subject_id": ENTERPRISE, "subject_type": "enterprise", "subject_name": "x",
        "source_department": "customs", "fields": "{}", "decision_date": None,
        "valid_until": None, "publicity_end": None, "feed_idx": 3, "changed_us": 1,
    }  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(SYNCED_RECORDS), [{**copy, "status": "repaired"}])
        conn.execute(insert(SYNCED_RECORDS), [{**copy, "record_key": "C2", "status": "objection"}])
    with engine.connect() as conn:
        shown = repository.read_synced(conn, [ENTERPRISE], TODAY)
    assert [(c.record_key, c.status) for c in shown] == [("C2", "objection")]


def test_the_catalog_refuses_a_serious_marker_it_cannot_check() -> None:
    def with_serious(serious: dict[str, object], **rule: object) -> dict[str, object]:
        themes = json.loads(json.dumps(CATALOG["themes"]))
        themes[0]["publicity"] = {**themes[0]["publicity"], "serious": serious, **rule}
        return {**CATALOG, "themes": themes}

    with pytest.raises(CatalogError, match=r"serious.values \['jail'\] are not codes"):
        parse_catalog(with_serious({"field": "penalty_type", "values": ["jail"]}), "t")
    with pytest.raises(CatalogError, match="names unknown field 'nope'"):
        parse_catalog(with_serious({"field": "nope", "values": ["x"]}), "t")
    with pytest.raises(CatalogError, match="apply to a repairable theme only"):
        parse_catalog(
            with_serious({"field": "penalty_type", "values": ["fine"]}, repairable=False), "t"
        )


def test_the_command_line_repairs_and_says_when_it_cannot(
    database_url: str, tmp_path: Path, cases: Catalog
) -> None:
    import yaml

    config = create_home(tmp_path / "hz", "huizhou", database_url=database_url)
    catalog_file = config.home / "catalog.yaml"
    catalog_file.write_text(yaml.safe_dump(CATALOG, allow_unicode=True), "utf-8")
    catalog_file.chmod(0o600)
    set_settings(config.home, catalog_path="catalog.yaml")
    node = open_node(config.home)
    import_rows(
        node.database, cases, tmp_path, "p.csv", [row("K1"), row("S1", penalty_type="revocation")]
    )
    node.database.dispose()

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--home", str(config.home)], env={"COLUMNS": "300"})
        return result.exit_code, result.output

    code, output = cli("repair", "penalty", "S1", "--basis", "b", "--evidence", "e")
    assert code == 2 and "serious case" in output and "2029-03-01" in output, output
    code, output = cli(
        "repair", "penalty", "K1", "--basis", "决定", "--evidence", "凭证",
        "--decided", "2026-06-01", "--json",
    )  # fmt: skip
    assert code == 0, output
    assert json.loads(output)["publicity_end_before"] == "2029-03-01"
    code, output = cli("show", ENTERPRISE)
    assert code == 0 and "K1" not in output and "S1" in output and "repaired" in output
    code, output = cli("history", "penalty", "K1")
    assert (
        code == 0 and "credit repair (信用修复)" in output and "now version 1, repaired" in output
    )
