"""The import rules a credit center's daily work leans on: a key given twice is
nobody's, an older export never silently undoes a newer one, and every rejected row
comes back to the department as it was sent, beside a report that says what was
wrong with it. On SQLite and PostgreSQL, with the small catalog of test_import.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from test_import import CATALOG, HEADER, PERSON, row, write_csv
from typer.testing import CliRunner

from creditexchange.clock import CST
from creditexchange.errors import ImportFileError
from creditexchange.node.app.home import create_home
from creditexchange.node.catalog import Catalog, parse_catalog
from creditexchange.node.cli import app
from creditexchange.node.database.models import ImportBatch, ImportReject, Record
from creditexchange.node.records.importer import ImportSummary, import_file

TODAY = dt.date(2026, 11, 27)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return parse_catalog(CATALOG, "test")


def run(engine: Engine, catalog: Catalog, path: Path, tmp_path: Path, **kw: Any) -> ImportSummary:
    return import_file(
        engine, catalog, path, "penalty", reject_dir=tmp_path / "rejects", today=TODAY, **kw
    )


def report(summary: ImportSummary) -> list[dict[str, str]]:
    assert summary.reject_report is not None
    with summary.reject_report.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def stored(engine: Engine, key: str) -> Record:
    with Session(engine) as s:
        return s.scalars(select(Record).where(Record.record_key == key)).one()


def fine_of(engine: Engine, key: str) -> str:
    return str(json.loads(stored(engine, key).fields)["fine"])


def at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=CST)


# --- a key given twice ------------------------------------------------------------------


def test_every_row_sharing_a_key_is_rejected_naming_all_their_lines(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    rows = [row("K1"), row("K2"), row("K3"), row("K1", fine="9.00"), row("K4"), row("K1")]
    path = write_csv(tmp_path / "p.csv", rows)
    summary = run(engine, catalog, path, tmp_path, chunk_rows=2)  # K1's rows in three chunks
    assert (summary.inserted, summary.rejected, summary.repeated) == (3, 3, 3)
    rejected = {r["line"]: r for r in report(summary)}
    assert sorted(rejected) == ["2", "5", "7"]
    for line in rejected.values():
        assert line["code"] == "duplicate_key" and line["record_key"] == "'K1'"
        assert "lines 2, 5, 7" in line["reason"]
    with Session(engine) as s:
        keys = set(s.scalars(select(Record.record_key)))
    assert keys == {"K2", "K3", "K4"}  # neither K1 was written, not even the first


def test_a_key_given_twice_leaves_the_stored_record_as_it_was(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    run(engine, catalog, write_csv(tmp_path / "a.csv", [row("K1")]), tmp_path)
    path = write_csv(tmp_path / "b.csv", [row("K1", fine="2.00"), row("K1", fine="3.00")])
    summary = run(engine, catalog, path, tmp_path)
    assert (summary.updated, summary.rejected) == (0, 2)
    assert fine_of(engine, "K1") == "1.5"


# --- an older export --------------------------------------------------------------------


def test_an_older_export_is_refused_as_stale_and_applied_only_when_allowed(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    old = write_csv(tmp_path / "old.csv", [row("K1"), row("K2")])
    new = write_csv(tmp_path / "new.csv", [row("K1", fine="3.00"), row("K2")])
    run(engine, catalog, old, tmp_path, exported_at=at("2026-11-01T09:00"))
    corrected = run(engine, catalog, new, tmp_path, exported_at=at("2026-11-20T09:00"))
    assert corrected.updated == 1

    again = run(engine, catalog, old, tmp_path, exported_at=at("2026-11-01T09:00"))
    assert (again.updated, again.unchanged, again.stale, again.rejected) == (0, 1, 1, 1)
    [line] = report(again)
    assert (line["line"], line["code"], line["record_key"]) == ("2", "stale", "'K1'")
    assert "2026-11-01 09:00 is before 2026-11-20 09:00" in line["reason"]
    assert "--allow-older" in line["reason"]
    assert fine_of(engine, "K1") == "3"  # the correction stands

    forced = run(
        engine, catalog, old, tmp_path, exported_at=at("2026-11-01T09:00"), allow_older=True
    )
    assert (forced.updated, forced.stale) == (1, 0)
    assert fine_of(engine, "K1") == "1.5"
    with Session(engine) as s:
        batch = s.get(ImportBatch, forced.batch_id)
        assert batch is not None and batch.allow_older and batch.stale == 0
        refused = s.get(ImportBatch, again.batch_id)
        assert refused is not None and refused.stale == 1


def test_without_an_export_time_a_row_restoring_a_left_version_is_stale(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    """The old file copied again has a new modification time; its content still tells."""
    old = write_csv(tmp_path / "old.csv", [row("K1")])
    run(engine, catalog, old, tmp_path)
    run(engine, catalog, write_csv(tmp_path / "new.csv", [row("K1", fine="3.00")]), tmp_path)
    copied = write_csv(tmp_path / "copied-today.csv", [row("K1")])
    os.utime(copied, (2e9, 2e9))  # newer than anything
    again = run(engine, catalog, copied, tmp_path)
    assert (again.updated, again.stale) == (0, 1)
    assert "is version 1 of record 'K1', which was replaced on" in report(again)[0]["reason"]
    assert fine_of(engine, "K1") == "3"
    # A genuinely new value from the same kind of file goes in.
    newer = write_csv(tmp_path / "newer.csv", [row("K1", fine="4.00")])
    assert run(engine, catalog, newer, tmp_path).updated == 1


def test_an_export_time_in_the_future_is_refused_and_a_future_file_time_is_now(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("K1")])
    with pytest.raises(ImportFileError, match="export time 2027-11-01 00:00 is in the future"):
        run(engine, catalog, path, tmp_path, exported_at=at("2027-11-01T00:00"))
    os.utime(path, (4e9, 4e9))  # a clock set wrong
    summary = run(engine, catalog, path, tmp_path)
    assert summary.exported_at is not None and summary.exported_at <= dt.datetime.now(dt.UTC)


def test_the_export_time_defaults_to_the_files_modification_time(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("K1")])
    os.utime(path, (1_790_000_000, 1_790_000_000))
    summary = run(engine, catalog, path, tmp_path)
    assert summary.exported_at == dt.datetime.fromtimestamp(1_790_000_000, dt.UTC)
    record = stored(engine, "K1")
    assert record.source_time is not None
    assert record.source_time.replace(tzinfo=dt.UTC) == summary.exported_at


def test_a_themes_own_update_time_decides_row_by_row(engine: Engine, tmp_path: Path) -> None:
    data = copy.deepcopy(CATALOG)
    theme = data["themes"][0]
    theme["dates"]["updated_at"] = "updated_on"
    theme["fields"].append(
        {"name": "updated_on", "name_zh": "数据更新日期", "name_en": "Updated", "type": "date"}
    )
    catalog = parse_catalog(data, "test")
    header = [*HEADER, "updated_on"]
    first = write_csv(
        tmp_path / "a.csv",
        [row("K1", updated_on="2026-11-10"), row("K2", updated_on="2026-11-10")],
        header=header,
    )
    run(engine, catalog, first, tmp_path)
    mixed = write_csv(
        tmp_path / "b.csv",
        [
            row("K1", fine="2.00", updated_on="2026-11-05"),  # older than stored
            row("K2", fine="2.00", updated_on="2026-11-15"),  # newer
        ],
        header=header,
    )
    os.utime(mixed, (2e9, 2e9))  # the file's own time does not decide
    summary = run(engine, catalog, mixed, tmp_path)
    assert (summary.updated, summary.stale) == (1, 1)
    assert fine_of(engine, "K1") == "1.5" and fine_of(engine, "K2") == "2"


# --- the report and the rejected rows ------------------------------------------------


def test_the_report_names_key_subject_field_value_and_reason_code(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "p.csv",
        [
            row("K1", fine="abc"),
            row(
                "K2",
                subject_id=PERSON,
                subject_type="individual",
                subject_name="张三",
                rep_id_type="resident_id",
                rep_id="441302198506123315",
            ),
            row("K3", decision_date=""),
        ],
    )
    summary = run(engine, catalog, path, tmp_path)
    lines = {r["line"]: r for r in report(summary)}
    assert lines["2"]["record_key"] == "'K1'"
    assert lines["2"]["subject_id"] == "91441300MA4W7K3P2D"
    assert (lines["2"]["field"], lines["2"]["value"], lines["2"]["code"]) == (
        "fine",
        "'abc'",
        "invalid",
    )
    person = lines["3"]
    assert person["subject_id"] == "441302********3314" and person["subject_name"] == "张*"
    assert (person["field"], person["value"]) == ("rep_id", "(value withheld)")
    assert "441302198506123315" not in summary.reject_report.read_text("utf-8-sig")  # type: ignore[union-attr]
    assert (lines["4"]["field"], lines["4"]["code"]) == ("decision_date", "required")
    with Session(engine) as s:
        counts = {
            (r.field, r.reason): r.rows
            for r in s.scalars(
                select(ImportReject).where(ImportReject.batch_id == summary.batch_id)
            )
        }
    assert counts == {
        ("fine", "invalid"): 1,
        ("rep_id", "invalid"): 1,
        ("decision_date", "required"): 1,
    }
    assert summary.rejects_by_reason == {
        "decision_date:required": 1,
        "fine:invalid": 1,
        "rep_id:invalid": 1,
    }


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_rejected_rows_come_back_as_sent_and_import_once_corrected(
    engine: Engine, catalog: Catalog, tmp_path: Path, encoding: str
) -> None:
    rows = [row("K1"), row("K2", fine="一万"), row("K3"), row("K4", penalty_type="没收")]
    path = write_csv(tmp_path / "p.csv", rows, encoding=encoding)
    summary = run(engine, catalog, path, tmp_path, encoding=encoding)
    assert (summary.inserted, summary.rejected) == (2, 2)
    assert summary.rejected_rows is not None and summary.rejected_rows.suffix == ".csv"
    assert oct(summary.rejected_rows.stat().st_mode & 0o777) == "0o600"
    as_written = "utf-8-sig" if encoding == "utf-8" else encoding  # a BOM, for Excel
    with summary.rejected_rows.open(encoding=as_written, newline="") as f:
        sent_back = list(csv.DictReader(f))
    assert [r["record_key"] for r in sent_back] == ["K2", "K4"]
    assert sent_back[0]["fine"] == "一万"  # exactly as sent, not escaped or masked
    # The department corrects the two rows and sends the file back.
    sent_back[0]["fine"] = "1.00"
    sent_back[1]["penalty_type"] = "罚款"
    corrected = write_csv(tmp_path / "corrected.csv", sent_back, encoding=encoding)
    again = run(engine, catalog, corrected, tmp_path, encoding=encoding)
    assert (again.inserted, again.rejected) == (2, 0)


def test_rejected_json_lines_come_back_as_the_lines_sent(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    lines = [json.dumps(row("J1"), ensure_ascii=False), json.dumps(row("J2", fine="x"))]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    summary = run(engine, catalog, path, tmp_path)
    assert summary.rejected_rows is not None and summary.rejected_rows.suffix == ".jsonl"
    assert summary.rejected_rows.read_text("utf-8").splitlines() == [lines[1]]


# --- through the command line -------------------------------------------------------------


def test_the_import_command_takes_the_export_time_and_allow_older(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    create_home(home, "huizhou")
    monkeypatch.setenv("CREDIT_NODE_HOME", str(home))
    from creditexchange.devtools.sample import write_theme
    from creditexchange.node.catalog import load_catalog

    path = write_theme(load_catalog(), "admin_penalty", "huizhou", 5, 3, tmp_path / "p.csv")
    runner = CliRunner()
    args = ["import", str(path), "--theme", "admin_penalty"]
    first = runner.invoke(app, [*args, "--exported-at", "2026-11-20T09:00", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)[0]["exported_at"] == "2026-11-20T09:00:00+08:00"
    # The same file said to be older changes nothing (it is unchanged), and a bad time
    # is refused with the form to write.
    bad = runner.invoke(app, [*args, "--exported-at", "yesterday"])
    assert bad.exit_code == 2 and "2026-11-30T17:45" in bad.output
