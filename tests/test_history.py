"""A record's history: every data version with what changed, from which file, and every
event (objection, repair, withdrawal), oldest first; on SQLite and PostgreSQL, through
the library and the command line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from recordcases import (
    CATALOG,
    ENTERPRISE,
    PERSON,
    TODAY,
    catalog_of_cases,
    import_rows,
    row,
)
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from creditexchange.clock import CST
from creditexchange.devtools.provision import set_settings
from creditexchange.errors import NotFound
from creditexchange.node.app.home import create_home
from creditexchange.node.app.wiring import open_node
from creditexchange.node.catalog import Catalog
from creditexchange.node.cli import app
from creditexchange.node.database.models import RECORD_EVENTS, RECORD_VERSIONS, RECORDS
from creditexchange.node.records import repository
from creditexchange.node.records.history import record_history
from creditexchange.node.records.objections import (
    ObjectionOutcome,
    close_objection,
    open_objection,
)
from creditexchange.node.records.repository import RecordStatus

runner = CliRunner()
EARLIER = dt.datetime(2026, 11, 20, 9, 0, tzinfo=CST)
LATER = dt.datetime(2026, 11, 25, 9, 0, tzinfo=CST)


@pytest.fixture(scope="module")
def cases() -> Catalog:
    return catalog_of_cases()


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_a_first_import_is_the_first_version_with_every_field_and_its_file(
    engine: Engine, cases: Catalog, tmp_path: Path
) -> None:
    summary = import_rows(engine, cases, tmp_path, "p-11.csv", [row("K1")], exported=EARLIER)
    history = record_history(engine, cases, "penalty", "K1")
    [first] = history.entries
    assert (first.kind, first.version, first.batch_id) == ("import", 1, summary.batch_id)
    assert first.file_name is not None and first.file_name.endswith("p-11.csv")
    shown = {c.label: c.after for c in first.changes}
    assert shown["罚款金额（万元）"] == "1.5 万元"  # the unit once, after the value
    assert shown["处罚类别"] == "fine (罚款)"
    assert all(c.before is None for c in first.changes)
    assert (history.status, history.version, history.subject) == ("active", 1, ENTERPRISE)


def test_a_correction_is_a_new_version_with_what_changed_field_by_field(
    engine: Engine, cases: Catalog, tmp_path: Path
) -> None:
    import_rows(engine, cases, tmp_path, "p-11.csv", [row("K1")], exported=EARLIER)
    corrected = import_rows(
        engine,
        cases,
        tmp_path,
        "p-12.csv",
        [row("K1", fine="3", facts="未按规定公示年度报告（更正）")],
        exported=LATER,
    )
    history = record_history(engine, cases, "penalty", "K1")
    assert [(e.kind, e.version) for e in history.entries] == [("import", 1), ("correction", 2)]
    second = history.entries[1]
    assert second.batch_id == corrected.batch_id
    assert second.file_name is not None and second.file_name.endswith("p-12.csv")
    assert {(c.label, c.before, c.after) for c in second.changes} == {
        ("罚款金额（万元）", "1.5 万元", "3 万元"),
        ("违法事实", "未按规定公示年度报告", "未按规定公示年度报告（更正）"),
    }
    assert history.entries[0].at <= second.at


def test_a_changed_identity_number_is_reported_and_never_shown(
    engine: Engine, cases: Catalog, tmp_path: Path
) -> None:
    other = "441302198506203314"  # another number with the same masked form
    import_rows(
        engine, cases, tmp_path, "a.csv", [row("K1", rep_id_type="resident_id", rep_id=PERSON)]
    )
    import_rows(
        engine, cases, tmp_path, "b.csv", [row("K1", rep_id_type="resident_id", rep_id=other)]
    )
    history = record_history(engine, cases, "penalty", "K1")
    [change] = history.entries[1].changes
    assert change.label == "法定代表人证件号码"
    assert change.before == change.after == "441302********3314"  # changed, though masked alike
    text = json.dumps(history.as_json(), default=str)
    assert PERSON not in text and other not in text


def test_objections_are_events_of_the_record_not_versions(
    engine: Engine, cases: Catalog, tmp_path: Path
) -> None:
    import_rows(engine, cases, tmp_path, "p.csv", [row("K1")])
    case = open_objection(
        engine,
        "penalty",
        ["K1"],
        reason="the fine was paid",
        applicant="王五",
        channel="window",
        today=TODAY,
    )
    close_objection(engine, case.number, ObjectionOutcome.CONFIRMED, today=TODAY)
    with engine.connect() as conn:
        version, status = conn.execute(select(RECORDS.c.version, RECORDS.c.status)).one()
    assert (version, status) == (1, "active")
    assert _count(engine, RECORD_VERSIONS) == 0
    assert _count(engine, RECORD_EVENTS) == 2
    history = record_history(engine, cases, "penalty", "K1")
    assert [(e.kind, e.version, e.status) for e in history.entries] == [
        ("import", 1, None),
        ("objection_opened", 1, "objection"),
        ("objection_closed", 1, "active"),
    ]
    assert "the fine was paid" in history.entries[1].why
    assert history.entries[2].why == f"objection {case.number} closed: confirmed"


def test_a_withdrawn_record_has_its_history_though_it_is_not_served(
    engine: Engine, cases: Catalog, tmp_path: Path
) -> None:
    import_rows(engine, cases, tmp_path, "p.csv", [row("K1")])
    with engine.begin() as conn:
        record_id, _ = repository.find_record(conn, "penalty", "K1")
        repository.set_status(
            conn, record_id, RecordStatus.EXPIRED, "withdrawn by the center", dt.datetime.now(CST)
        )
    history = record_history(engine, cases, "penalty", "K1")
    assert history.entries[-1].kind == "withdrawn"
    assert history.status == "expired"


def test_a_record_not_stored_has_no_history(engine: Engine, cases: Catalog) -> None:
    with pytest.raises(NotFound, match="no record 'K9' in theme 'penalty'"):
        record_history(engine, cases, "penalty", "K9")


# --- the command line --------------------------------------------------------------------


@pytest.fixture
def home(database_url: str, tmp_path: Path) -> Path:
    config = create_home(tmp_path / "hz", "huizhou", database_url=database_url)
    catalog_file = config.home / "catalog.yaml"
    catalog_file.write_text(yaml.safe_dump(CATALOG, allow_unicode=True), "utf-8")
    catalog_file.chmod(0o600)
    set_settings(config.home, catalog_path="catalog.yaml")
    return config.home


def _cli(*args: str, home: Path) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--home", str(home)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_history_and_show_print_values_with_their_units_and_what_changed(
    home: Path, cases: Catalog, tmp_path: Path
) -> None:
    node = open_node(home)
    import_rows(node.database, cases, tmp_path, "p-11.csv", [row("K1")], exported=EARLIER)
    import_rows(node.database, cases, tmp_path, "p-12.csv", [row("K1", fine="3")], exported=LATER)
    node.database.dispose()
    code, output = _cli("history", "penalty", "K1", home=home)
    assert code == 0, output
    assert "v1" in output and "p-11.csv" in output and "imported (first version)" in output
    assert "罚款金额（万元）: 1.5 万元 → 3 万元" in output
    assert "p-12.csv" in output and "corrected by a later import" in output
    code, output = _cli("show", ENTERPRISE, home=home)
    assert code == 0, output
    assert "罚款金额（万元）: 3 万元" in output and "万元 万元" not in output
    code, output = _cli("show", ENTERPRISE, "--history", home=home)
    assert code == 0 and "history:" in output and "1.5 万元 → 3 万元" in output, output
    code, output = _cli("show", ENTERPRISE, "--history", "--json", home=home)
    assert code == 0, output
    [record] = json.loads(output)["records"]
    assert [e["version"] for e in record["history"]] == [1, 2]
    code, output = _cli("history", "penalty", "K1", "--json", home=home)
    assert code == 0
    assert json.loads(output)["history"][1]["changes"] == [
        {"field": "fine", "label": "罚款金额（万元）", "before": "1.5 万元", "after": "3 万元"}
    ]
