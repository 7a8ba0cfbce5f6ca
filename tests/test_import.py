"""Department data import: validation, rejects, idempotency, history, encodings,
and hostile files (links to secrets, pipes, folders, garbage headers).

Runs on SQLite and on PostgreSQL. Uses a small catalog of its own that has every
field type, so the rules under test are visible here.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from creditexchange.devtools.sample import write_sample
from creditexchange.errors import CatalogError, ImportFileError, excerpt
from creditexchange.node.app.home import create_home
from creditexchange.node.catalog import Catalog, load_catalog, parse_catalog
from creditexchange.node.cli import app
from creditexchange.node.database.models import ImportBatch, Record, RecordVersion, Subject
from creditexchange.node.records.importer import ImportSummary, import_file
from creditexchange.node.records.objections import ObjectionOutcome, close_objection, open_objection
from creditexchange.node.records.reading import WorkerChunks
from creditexchange.node.records.view import subject_view

TODAY = dt.date(2026, 11, 27)
ENTERPRISE = "91441300MA4W7K3P2D"
PERSON = "441302198506123314"

CATALOG: dict[str, Any] = {
    "catalog_version": "test.1",
    "title": "test catalog",
    "edition": "2024",
    "effective": "2024-01-01",
    "categories": [{"code": "admin", "name_zh": "行政管理", "name_en": "Administrative"}],
    "departments": [
        {"code": "market", "name_zh": "市场监管局", "name_en": "Market regulation"},
        {"code": "tax", "name_zh": "税务局", "name_en": "Taxation"},
    ],
    "themes": [
        {
            "code": "penalty",
            "name_zh": "行政处罚",
            "name_en": "Administrative penalty",
            "category": "admin",
            "subject_types": ["enterprise", "individual_business", "individual"],
            "source_department": "market",
            "dates": {"decision_date": "decision_date", "valid_until": "valid_until"},
            "publicity": {
                "start_field": "decision_date",
                "min_months": 3,
                "max_months": 36,
                "end_field": "publicity_end",
                "extended_minimum": {
                    "field": "industry",
                    "values": ["food"],
                    "min_months": 12,
                },
            },
            "fields": [
                {
                    "name": "decision_number",
                    "name_zh": "决定书文号",
                    "name_en": "Decision number",
                    "type": "string",
                    "required": True,
                    "max_length": 64,
                },
                {
                    "name": "penalty_type",
                    "name_zh": "处罚类别",
                    "name_en": "Penalty type",
                    "type": "code",
                    "required": True,
                    "codes": {"warning": "警告", "fine": "罚款"},
                },
                {
                    "name": "industry",
                    "name_zh": "行业",
                    "name_en": "Industry",
                    "type": "code",
                    "codes": {"food": "食品", "other": "其他"},
                },
                {
                    "name": "fine",
                    "name_zh": "罚款金额",
                    "name_en": "Fine (10k yuan)",
                    "type": "decimal",
                },
                {
                    "name": "decision_date",
                    "name_zh": "处罚决定日期",
                    "name_en": "Decision date",
                    "type": "date",
                    "required": True,
                },
                {
                    "name": "valid_until",
                    "name_zh": "处罚有效期",
                    "name_en": "Valid until",
                    "type": "date",
                },
                {
                    "name": "publicity_end",
                    "name_zh": "公示截止期",
                    "name_en": "Publicity end",
                    "type": "date",
                },
                {
                    "name": "authority_uscc",
                    "name_zh": "处罚机关统一社会信用代码",
                    "name_en": "Authority USCC",
                    "type": "uscc",
                },
                {
                    "name": "rep_id_type",
                    "name_zh": "法定代表人证件类型",
                    "name_en": "Rep id type",
                    "type": "code",
                    "codes": {
                        "resident_id": "身份证",
                        "passport": "护照",
                        "uscc": "统一社会信用代码",
                    },
                },
                {
                    "name": "rep_id",
                    "name_zh": "法定代表人证件号码",
                    "name_en": "Rep id number",
                    "type": "id_number",
                    "sensitive": True,
                    "id_type_field": "rep_id_type",
                },
                {"name": "count", "name_zh": "次数", "name_en": "Count", "type": "integer"},
                {"name": "public", "name_zh": "公开", "name_en": "Public", "type": "boolean"},
                {"name": "facts", "name_zh": "违法事实", "name_en": "Facts", "type": "text"},
            ],
        }
    ],
}

HEADER = [
    "subject_id",
    "subject_type",
    "subject_name",
    "record_key",
    "decision_number",
    "penalty_type",
    "industry",
    "fine",
    "decision_date",
    "valid_until",
    "publicity_end",
    "authority_uscc",
    "rep_id_type",
    "rep_id",
    "count",
    "public",
    "facts",
]


@pytest.fixture(scope="module")
def small_catalog() -> Catalog:
    return parse_catalog(CATALOG, "test")


def row(key: str, **values: str) -> dict[str, str]:
    base = {
        "subject_id": ENTERPRISE,
        "subject_type": "enterprise",
        "subject_name": "惠州市示例电子科技有限公司",
        "record_key": key,
        "decision_number": f"惠市监罚〔2026〕{key}号",
        "penalty_type": "fine",
        "fine": "1.50",
        "decision_date": "2026-03-01",
        "facts": "未按规定公示年度报告",
    }
    base.update(values)
    return base


def write_csv(
    path: Path, rows: list[dict[str, str]], encoding: str = "utf-8", header: list[str] | None = None
) -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header or HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(engine: Engine, catalog: Catalog, path: Path, tmp_path: Path, **kw: Any) -> ImportSummary:
    return import_file(
        engine, catalog, path, "penalty", reject_dir=tmp_path / "rejects", today=TODAY, **kw
    )


def rejects_of(summary: ImportSummary) -> list[dict[str, str]]:
    assert summary.reject_report is not None
    with summary.reject_report.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def count(engine: Engine, model: type) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_valid_rows_are_stored_with_normalised_values(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "p.csv",
        [
            row("A1", penalty_type="罚款", decision_date="2026/03/01", public="是", count="2"),
        ],
    )
    summary = run(engine, small_catalog, path, tmp_path)
    assert (summary.read, summary.inserted, summary.rejected) == (1, 1, 0)
    assert summary.reject_report is None
    with Session(engine) as s:
        record = s.scalars(select(Record)).one()
    assert record.decision_date == dt.date(2026, 3, 1)
    assert record.publicity_end == dt.date(2029, 3, 1)  # the 36-month maximum
    assert json.loads(record.fields)["penalty_type"] == "fine"  # the label became the code
    assert json.loads(record.fields)["public"] is True
    assert json.loads(record.fields)["count"] == 2


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({"decision_number": ""}, "decision_number", "required field is empty"),
        ({"decision_date": "2026-02-30"}, "decision_date", "'2026-02-30' is not a real date"),
        ({"decision_date": "March 1"}, "decision_date", "is not a date: write YYYY-MM-DD"),
        ({"penalty_type": "jail"}, "penalty_type", "'jail' is not one of the codes warning (警告)"),
        ({"fine": "lots"}, "fine", "'lots' is not a number"),
        ({"count": "2.5"}, "count", "'2.5' is not a whole number"),
        ({"public": "maybe"}, "public", "'maybe' is not true or false"),
        (
            {"authority_uscc": "91441300MA4W7K3P2X"},
            "authority_uscc",
            "check character is 'X', expected 'D'",
        ),
        (
            {"rep_id_type": "resident_id", "rep_id": "441302198506123315"},
            "rep_id",
            "not a valid resident identity number: check character is '5', expected '4'",
        ),
        ({"subject_id": "91441300MA4W7K3P2"}, "subject_id", "wrong length"),
        ({"subject_id": ""}, "subject_id", "required field is empty"),
        ({"subject_type": "company"}, "subject_type", "'company' is not a subject type"),
        (
            {"subject_type": "social_org"},
            "subject_type",
            "theme penalty does not concern social_org subjects",
        ),
        ({"subject_name": ""}, "subject_name", "required field is empty"),
        ({"record_key": "K" * 129}, "record_key", "longer than 128 characters"),
        ({"decision_number": "X" * 65}, "decision_number", "at most 64 allowed"),
        (
            {"publicity_end": "2026-04-01"},
            "publicity_end",
            "before the minimum of 3 months after 2026-03-01 (2026-06-01)",
        ),
        (
            {"industry": "food", "publicity_end": "2026-12-01"},
            "publicity_end",
            "before the minimum of 12 months",
        ),
        (
            {"publicity_end": "2029-03-02"},
            "publicity_end",
            "past the maximum of 36 months after 2026-03-01 (2029-03-01)",
        ),
    ],
)
def test_each_kind_of_bad_row_is_rejected_with_its_field_and_reason(
    engine: Engine,
    small_catalog: Catalog,
    tmp_path: Path,
    values: dict[str, str],
    field: str,
    reason: str,
) -> None:
    good_before, bad, good_after = row("G1"), row("B1", **values), row("G2")
    path = write_csv(tmp_path / "p.csv", [good_before, bad, good_after])
    summary = run(engine, small_catalog, path, tmp_path)
    assert (summary.read, summary.inserted, summary.rejected) == (3, 2, 1)
    [reject] = [r for r in rejects_of(summary) if r["field"] == field]
    assert reject["line"] == "3"
    assert reason in reject["reason"]
    with Session(engine) as s:
        assert sorted(s.scalars(select(Record.record_key))) == ["G1", "G2"]


def test_a_rejected_row_lists_every_problem_it_has(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("B1", fine="x", decision_date="", penalty_type="?")])
    summary = run(engine, small_catalog, path, tmp_path)
    assert summary.rejected == 1
    assert {r["field"] for r in rejects_of(summary)} == {"fine", "decision_date", "penalty_type"}


def test_rejection_reasons_never_repeat_an_identity_number(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    bad_person = "441302198506123315"
    path = write_csv(
        tmp_path / "p.csv",
        [
            row("B1", subject_id=bad_person, subject_type="individual"),
            row("B2", rep_id_type="resident_id", rep_id=bad_person),
        ],
    )
    summary = run(engine, small_catalog, path, tmp_path)
    assert summary.rejected == 2
    assert bad_person not in summary.reject_report.read_text("utf-8-sig")  # type: ignore[union-attr]


RESIDENT_ID_CHECK = ("441302198506123315", PERSON, "resident identity number: check character")
USCC_CHECK = ("91441300MA4W7K3P2X", ENTERPRISE, "unified social credit code: check character")


@pytest.mark.parametrize(
    ("id_type", "stored_type", "check"),
    [
        ("resident_id", "resident_id", RESIDENT_ID_CHECK),
        (" resident_id ", "resident_id", RESIDENT_ID_CHECK),
        ("身份证", "resident_id", RESIDENT_ID_CHECK),
        ("", None, RESIDENT_ID_CHECK),
        ("uscc", "uscc", USCC_CHECK),
        ("统一社会信用代码 ", "uscc", USCC_CHECK),
    ],
    ids=["code", "code with blanks", "label", "no type", "uscc code", "uscc label with a blank"],
)
def test_an_identity_number_is_checked_as_its_document_type_however_the_type_is_written(
    engine: Engine,
    small_catalog: Catalog,
    tmp_path: Path,
    id_type: str,
    stored_type: str | None,
    check: tuple[str, str, str],
) -> None:
    bad, good, reason = check
    path = write_csv(
        tmp_path / "p.csv",
        [
            row("BAD", rep_id_type=id_type, rep_id=bad),
            row("GOOD", rep_id_type=id_type, rep_id=good.lower()),
        ],
    )
    summary = run(engine, small_catalog, path, tmp_path)
    assert (summary.inserted, summary.rejected) == (1, 1)
    [reject] = rejects_of(summary)
    assert (reject["line"], reject["field"]) == ("2", "rep_id")
    assert reason in reject["reason"]
    with Session(engine) as s:
        stored = json.loads(s.scalars(select(Record.fields)).one())
    assert (stored["rep_id"], stored.get("rep_id_type")) == (good, stored_type)


def test_an_other_document_type_is_not_checked_as_a_resident_id(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("P1", rep_id_type="passport", rep_id="E12345678")])
    assert run(engine, small_catalog, path, tmp_path).inserted == 1


def test_a_row_with_the_wrong_number_of_values_is_rejected(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("G1")])
    with path.open("a", encoding="utf-8") as f:
        f.write("only,three,values\n")
    summary = run(engine, small_catalog, path, tmp_path)
    assert (summary.inserted, summary.rejected) == (1, 1)
    assert "the row has 3 values, the header has 17" in rejects_of(summary)[0]["reason"]


def test_a_row_the_csv_reader_cannot_parse_is_rejected_with_its_line_and_the_import_goes_on(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("G1")])
    with path.open("a", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writerow(row("HUGE", facts="x" * (csv.field_size_limit() + 1)))
        writer.writerow(row("G2"))
    summary = run(engine, small_catalog, path, tmp_path)
    assert (summary.read, summary.inserted, summary.rejected) == (3, 2, 1)
    [reject] = rejects_of(summary)
    assert (reject["line"], reject["field"]) == ("3", "(row)")
    assert reject["reason"].startswith(
        f"line 3 cannot be read as CSV: field larger than field limit ({csv.field_size_limit()})"
    )
    assert "Correct the row and import the file again" in reject["reason"]
    with Session(engine) as s:
        assert sorted(s.scalars(select(Record.record_key))) == ["G1", "G2"]


def test_a_header_the_csv_reader_cannot_parse_refuses_the_file(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = tmp_path / "p.csv"
    path.write_text(",".join(HEADER) + "," + "x" * (csv.field_size_limit() + 1) + "\n")
    with pytest.raises(ImportFileError) as refusal:
        run(engine, small_catalog, path, tmp_path)
    assert str(refusal.value) == (
        f"{path}: the header row cannot be read as CSV (field larger than field limit "
        f"({csv.field_size_limit()})); correct it and import the file again. Nothing was imported."
    )
    assert count(engine, ImportBatch) == 0


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.mark.parametrize(
    ("write", "name", "line"),
    [(write_csv, "p.csv", "3"), (_write_jsonl, "p.jsonl", "2")],  # a CSV's line 1 is its header
    ids=["csv", "jsonl"],
)
def test_a_cell_holding_a_nul_character_is_rejected_and_the_import_goes_on(
    engine: Engine, small_catalog: Catalog, tmp_path: Path, write: Any, name: str, line: str
) -> None:
    # PostgreSQL cannot store a NUL in text: unchecked, it stopped the whole import
    path = write(
        tmp_path / name,
        [row("G1"), row("N1", subject_name="惠州\x00公司", facts="a\x00b"), row("G2")],
    )
    summary = run(engine, small_catalog, path, tmp_path)
    assert (summary.read, summary.inserted, summary.rejected) == (3, 2, 1)
    rejects = rejects_of(summary)
    assert {(r["line"], r["field"]) for r in rejects} == {(line, "subject_name"), (line, "facts")}
    assert all(r["reason"].startswith("holds a NUL character (byte 0x00)") for r in rejects)
    with Session(engine) as s:
        assert sorted(s.scalars(select(Record.record_key))) == ["G1", "G2"]


def _progress_fails(engine: Engine) -> dict[str, Any]:
    def progress(_consumed: int) -> None:
        raise RuntimeError("the operator's terminal went away")

    return {"progress": progress}


def _database_refuses_k5(engine: Engine) -> dict[str, Any]:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE records ADD CONSTRAINT refuse_k5 CHECK (record_key <> 'K5')"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_k5 BEFORE INSERT ON records WHEN NEW.record_key = 'K5' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    return {}


def _database_accepts_k5(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE records DROP CONSTRAINT IF EXISTS refuse_k5"
            if engine.dialect.name == "postgresql"
            else "DROP TRIGGER IF EXISTS refuse_k5"
        )


@pytest.mark.parametrize(
    ("failure", "committed"),
    [(_progress_fails, 2), (_database_refuses_k5, 5)],
    ids=["in the caller after chunk 1", "in the database in chunk 3"],
)
def test_an_import_that_fails_midway_closes_its_report_and_leaves_the_connection_clean(
    engine: Engine, small_catalog: Catalog, tmp_path: Path, failure: Any, committed: int
) -> None:
    rows = [row("B0", fine="x")] + [row(f"K{i}") for i in range(9)]
    path = write_csv(tmp_path / "p.csv", rows)
    with pytest.raises(Exception) as stopped:
        run(engine, small_catalog, path, tmp_path, chunk_rows=3, **failure(engine))
    # The report is complete on disk while the failed import is still referenced.
    [report] = (tmp_path / "rejects").glob("*.rejects.csv")
    with report.open(encoding="utf-8-sig", newline="") as f:
        assert [(r["line"], r["field"]) for r in csv.DictReader(f)] == [("2", "fine")]
    del stopped
    _database_accepts_k5(engine)
    # The same pooled connection imports again: its temporary table was dropped.
    again = run(engine, small_catalog, path, tmp_path, chunk_rows=3)
    assert again.inserted + again.unchanged == 9 and again.rejected == 1
    assert again.unchanged == committed  # the chunks committed before the failure stayed


def test_reject_report_cells_that_look_like_formulas_are_written_as_text(
    engine: Engine, small_catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ['=HYPERLINK("http://evil.example","x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx"]
    monkeypatch.chdir(tmp_path)
    path = _write_jsonl(Path("=cmd.jsonl"), [{**row("J1"), **dict.fromkeys(keys, "1")}])
    summary = run(engine, small_catalog, path, tmp_path)
    assert summary.reject_report is not None
    with summary.reject_report.open(encoding="utf-8-sig", newline="") as f:
        cells = list(csv.reader(f))[1:]
    # An unknown key is shown as an excerpt: quoted, so never a formula, its tab escaped.
    assert [c[5] for c in cells] == [excerpt(k) for k in keys]  # the field column
    assert {c[0] for c in cells} == {"'=cmd.jsonl"}
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells for cell in c)


def test_importing_the_same_file_twice_changes_nothing(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row(f"K{i}") for i in range(50)])
    first = run(engine, small_catalog, path, tmp_path, chunk_rows=7)
    with Session(engine) as s:
        before = [
            (r.id, r.version, r.content_hash, r.updated_at) for r in s.scalars(select(Record))
        ]
    second = run(engine, small_catalog, path, tmp_path, chunk_rows=7)
    assert (first.inserted, second.inserted, second.updated, second.unchanged) == (50, 0, 0, 50)
    with Session(engine) as s:
        after = [(r.id, r.version, r.content_hash, r.updated_at) for r in s.scalars(select(Record))]
    assert before == after
    assert count(engine, RecordVersion) == 0
    assert count(engine, ImportBatch) == 2


def test_a_corrected_row_updates_the_record_and_keeps_the_old_version(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    run(engine, small_catalog, write_csv(tmp_path / "a.csv", [row("K1"), row("K2")]), tmp_path)
    corrected = write_csv(tmp_path / "b.csv", [row("K1", fine="3.00"), row("K2")])
    summary = run(engine, small_catalog, corrected, tmp_path)
    assert (summary.updated, summary.unchanged) == (1, 1)
    with Session(engine) as s:
        record = s.scalars(select(Record).where(Record.record_key == "K1")).one()
        [old] = s.scalars(select(RecordVersion)).all()
    assert record.version == 2
    assert json.loads(record.fields)["fine"] == "3"
    assert (old.record_id, old.version, json.loads(old.fields)["fine"]) == (record.id, 1, "1.5")
    assert old.superseded_by == f"import batch {summary.batch_id}"


def test_a_subject_stored_as_one_type_refuses_rows_of_another(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    run(engine, small_catalog, write_csv(tmp_path / "a.csv", [row("K1")]), tmp_path)
    path = write_csv(tmp_path / "b.csv", [row("K2", subject_type="individual_business")])
    summary = run(engine, small_catalog, path, tmp_path)
    assert summary.rejected == 1
    assert (
        "is stored as enterprise, this row says individual_business"
        in (rejects_of(summary)[0]["reason"])
    )


def test_a_renamed_subject_is_updated(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    run(engine, small_catalog, write_csv(tmp_path / "a.csv", [row("K1")]), tmp_path)
    run(
        engine,
        small_catalog,
        write_csv(tmp_path / "b.csv", [row("K2", subject_name="新名称有限公司")]),
        tmp_path,
    )
    with Session(engine) as s:
        assert s.get(Subject, ENTERPRISE).name == "新名称有限公司"  # type: ignore[union-attr]


def test_an_unknown_column_refuses_the_whole_file_and_writes_nothing(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [{**row("K1"), "bonus": "1"}], header=[*HEADER, "bonus"])
    with pytest.raises(ImportFileError, match="column 18 'bonus' is not a field of theme penalty"):
        run(engine, small_catalog, path, tmp_path)
    assert count(engine, Record) == 0


def test_a_missing_required_column_refuses_the_whole_file(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    header = [h for h in HEADER if h != "decision_date"]
    path = write_csv(
        tmp_path / "p.csv", [{k: v for k, v in row("K1").items() if k in header}], header=header
    )
    with pytest.raises(ImportFileError, match="lacks required column"):
        run(engine, small_catalog, path, tmp_path)


def test_chinese_column_names_from_the_catalog_are_accepted(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    names = {f.name: f.name_zh for f in small_catalog.theme("penalty").fields}
    header = [names.get(h, h) for h in HEADER]
    source = row("K1")
    path = write_csv(
        tmp_path / "p.csv", [{names.get(k, k): v for k, v in source.items()}], header=header
    )
    assert run(engine, small_catalog, path, tmp_path).inserted == 1


def test_a_gbk_file_imports_with_its_encoding(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("K1")], encoding="gbk")
    assert run(engine, small_catalog, path, tmp_path, encoding="gbk").inserted == 1
    view = subject_view(engine, small_catalog, ENTERPRISE, today=TODAY)
    assert view.name == "惠州市示例电子科技有限公司"
    assert view.records[0].fields["facts"] == "未按规定公示年度报告"


def test_a_gbk_file_read_as_utf8_is_refused_with_the_line_and_the_fix(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("K1")], encoding="gbk")
    with pytest.raises(ImportFileError, match=r"line 2 .* pass --encoding gbk"):
        run(engine, small_catalog, path, tmp_path)
    assert count(engine, Record) == 0 and count(engine, Subject) == 0


def test_a_utf8_file_declared_as_gbk_is_refused_rather_than_garbled(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("K1")])
    with pytest.raises(ImportFileError, match="the file is UTF-8, not gbk"):
        run(engine, small_catalog, path, tmp_path, encoding="gbk")
    assert count(engine, Record) == 0


def test_a_byte_order_mark_is_not_part_of_the_first_column(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("K1")], encoding="utf-8-sig")
    assert run(engine, small_catalog, path, tmp_path).inserted == 1


def test_json_lines_files_import_like_csv(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = tmp_path / "p.jsonl"
    lines = [
        json.dumps({**row("J1"), "fine": 2.5, "count": 3, "public": False}, ensure_ascii=False),
        "",
        "{not json",
        json.dumps([1, 2]),
        json.dumps({**row("J2"), "facts": ["a", "list"]}, ensure_ascii=False),
        json.dumps({**row("J3"), "bonus": 1}, ensure_ascii=False),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = run(engine, small_catalog, path, tmp_path)
    assert (summary.inserted, summary.rejected) == (1, 4)
    reasons = {r["line"]: (r["field"], r["reason"]) for r in rejects_of(summary)}
    assert reasons["3"][1].startswith("not valid JSON")
    assert reasons["4"][1] == "a line must hold one JSON object"
    assert reasons["5"] == ("facts", "must be a plain value, not a list or an object")
    assert reasons["6"] == ("'bonus'", "not a field of theme penalty")


def test_unknown_theme_format_department_and_encoding_are_clear_errors(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [row("K1")])
    with pytest.raises(CatalogError, match="unknown theme 'nope'"):
        import_file(engine, small_catalog, path, "nope", reject_dir=tmp_path)
    with pytest.raises(CatalogError, match="unknown source department 'police'"):
        run(engine, small_catalog, path, tmp_path, source="police")
    with pytest.raises(ImportFileError, match="unknown encoding 'klingon'"):
        run(engine, small_catalog, path, tmp_path, encoding="klingon")
    with pytest.raises(ImportFileError, match=r"name the file \.csv"):
        run(engine, small_catalog, path.rename(tmp_path / "p.txt"), tmp_path)


def test_a_record_past_its_publicity_end_is_stored_but_not_served(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "p.csv",
        [
            row("OLD", decision_date="2022-01-10"),  # public until 2025-01-10
            row("EARLY", decision_date="2026-01-10", publicity_end="2026-06-30"),
            row("NEW"),
        ],
    )
    summary = run(engine, small_catalog, path, tmp_path)
    assert (summary.inserted, summary.past_publicity) == (3, 2)
    view = subject_view(engine, small_catalog, ENTERPRISE, today=TODAY)
    assert [r.record_key for r in view.records] == ["NEW"]
    assert view.hidden == 2
    on_last_day = subject_view(engine, small_catalog, ENTERPRISE, today=dt.date(2026, 6, 30))
    assert {r.record_key for r in on_last_day.records} == {"NEW", "EARLY"}


def test_identity_numbers_and_individual_names_are_masked_when_shown(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "p.csv",
        [
            row(
                "K1",
                subject_id=PERSON,
                subject_type="individual",
                subject_name="张三丰",
                rep_id_type="resident_id",
                rep_id=PERSON,
            ),
        ],
    )
    run(engine, small_catalog, path, tmp_path)
    view = subject_view(engine, small_catalog, PERSON, today=TODAY)
    assert (view.subject_id, view.name) == ("441302********3314", "张**")
    assert view.records[0].fields["rep_id"] == "441302********3314"
    assert PERSON not in json.dumps(view.as_json(), default=str)


def test_a_record_under_objection_is_marked_and_keeps_its_history(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    run(engine, small_catalog, write_csv(tmp_path / "p.csv", [row("K1")]), tmp_path)
    case = open_objection(
        engine,
        "penalty",
        ["K1"],
        reason="the fine was paid and the decision revoked",
        applicant="张三",
        channel="window",
    )
    [record] = subject_view(engine, small_catalog, ENTERPRISE, today=TODAY).records
    assert record.under_objection and record.status == "objection"
    close_objection(engine, case.number, ObjectionOutcome.CONFIRMED)
    [record] = subject_view(engine, small_catalog, ENTERPRISE, today=TODAY).records
    assert not record.under_objection and record.version == 1  # events, not versions
    assert count(engine, RecordVersion) == 0


def test_validating_in_a_worker_process_gives_the_same_result(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    rows = [row(f"K{i}") for i in range(40)] + [row("BAD", decision_date="never"), row("K3")]
    path = write_csv(tmp_path / "p.csv", rows)
    summary = run(engine, small_catalog, path, tmp_path, chunk_rows=7, parallel=True)
    assert (summary.read, summary.inserted, summary.rejected) == (42, 39, 3)
    # K3 is on two rows: neither is imported, and each names both lines
    assert {r["line"] for r in rejects_of(summary)} == {"5", "42", "43"}
    again = run(engine, small_catalog, path, tmp_path, chunk_rows=7, parallel=True)
    assert (again.inserted, again.unchanged, again.rejected) == (0, 39, 3)


def test_a_worker_that_dies_is_reported_and_the_chunks_before_stay(
    engine: Engine, small_catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "p.csv", [row(f"K{i}") for i in range(3000)])
    started: list[WorkerChunks] = []
    real_iter = WorkerChunks.__iter__

    def second_chunk_kills_the_worker(self: WorkerChunks) -> Any:
        started.append(self)
        for n, chunk in enumerate(real_iter(self)):
            if n == 1:
                self._process.kill()  # as the kernel's OOM killer would
            yield chunk

    monkeypatch.setattr(WorkerChunks, "__iter__", second_chunk_kills_the_worker)
    with pytest.raises(ImportFileError, match=r"validating process stopped \(exit code -9\)"):
        run(engine, small_catalog, path, tmp_path, chunk_rows=7, parallel=True)
    assert 14 <= count(engine, Record) < 3000  # whole chunks only, each committed
    assert count(engine, Record) % 7 == 0
    assert started[0]._process.poll() is not None
    monkeypatch.undo()
    again = run(engine, small_catalog, path, tmp_path, chunk_rows=7, parallel=True)
    assert again.inserted + again.unchanged == 3000 and count(engine, Record) == 3000


def test_the_worker_reads_its_modules_from_the_package_not_the_working_directory(
    engine: Engine, small_catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory holding a module of the worker's name must not be imported from.
    shadow = tmp_path / "cwd" / "creditexchange"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise SystemExit('imported from the working directory')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    path = write_csv(tmp_path / "p.csv", [row(f"K{i}") for i in range(10)])
    summary = run(engine, small_catalog, path, tmp_path, chunk_rows=3, parallel=True)
    assert summary.inserted == 10


def test_a_bad_header_is_refused_before_a_worker_starts(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "p.csv", [{**row("K1"), "bonus": "1"}], header=[*HEADER, "bonus"])
    with pytest.raises(ImportFileError, match="'bonus' is not a field"):
        run(engine, small_catalog, path, tmp_path, parallel=True)
    assert count(engine, Record) == 0


# -- hostile files: the importer reads regular files only, and never echoes more than an excerpt


def _pieces(secret: str, size: int = 8) -> set[str]:
    """Every run of ``size`` characters of ``secret``: none may appear in an output."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def test_a_link_to_the_nodes_signing_key_is_refused_without_printing_any_of_it(
    tmp_path: Path,
) -> None:
    config = create_home(tmp_path / "hz", "huizhou")
    seed = config.signing_key_path.read_text().strip()
    link = tmp_path / "link.csv"
    link.symlink_to(config.signing_key_path)
    result = CliRunner().invoke(
        app, ["import", str(link), "--theme", "admin_penalty", "--home", str(config.home)]
    )
    output = result.output.replace("\n", "")
    assert result.exit_code == 2, output
    assert "symbolic link" in output and "--follow-symlinks" in output
    assert not [piece for piece in _pieces(seed) if piece in output]


def test_a_symbolic_link_is_refused_by_the_library_before_anything_is_written(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to(write_csv(tmp_path / "real.csv", [row("K1")]))
    with pytest.raises(ImportFileError, match=r"link\.csv is a symbolic link.*--follow-symlinks"):
        run(engine, small_catalog, link, tmp_path)
    assert count(engine, ImportBatch) == 0 and count(engine, Record) == 0


def test_follow_symlinks_imports_a_link_to_a_regular_csv(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to(write_csv(tmp_path / "real.csv", [row("K1"), row("K2")]))
    summary = run(engine, small_catalog, link, tmp_path, follow_symlinks=True)
    assert (summary.inserted, summary.rejected) == (2, 0)
    again = run(engine, small_catalog, link, tmp_path, follow_symlinks=True, parallel=True)
    assert again.unchanged == 2  # the validating worker opens the same file the same way


def test_the_import_command_follows_a_link_to_a_regular_file_only_when_asked(
    tmp_path: Path,
) -> None:
    config = create_home(tmp_path / "hz", "huizhou")
    [penalties] = [
        f for f in write_sample(load_catalog(), "huizhou", 20, 5, tmp_path / "in")
        if f.name.startswith("admin_penalty.")
    ]  # fmt: skip
    link = tmp_path / f"link{penalties.suffix}"
    link.symlink_to(penalties)
    argv = ["import", str(link), "--theme", "admin_penalty", "--home", str(config.home)]
    refused = CliRunner().invoke(app, argv)
    assert refused.exit_code == 2 and "symbolic link" in refused.output
    followed = CliRunner().invoke(app, [*argv, "--follow-symlinks"])
    assert followed.exit_code == 0, followed.output
    assert "rejected 0" in followed.output


def test_a_link_followed_to_something_other_than_a_regular_file_is_still_refused(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to("/dev/zero")  # endless: reading it would never finish
    with pytest.raises(
        ImportFileError,
        match=r"is a character device, not a regular file \(the target of a symbolic link\)",
    ):
        run(engine, small_catalog, link, tmp_path, follow_symlinks=True)
    assert count(engine, ImportBatch) == 0


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    fifo = tmp_path / "p.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            run(engine, small_catalog, fifo, tmp_path)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # it blocked opening the pipe: release it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("the import waited for a writer on a named pipe")
    [refusal] = outcome
    assert isinstance(refusal, ImportFileError)
    assert "is a named pipe (FIFO), not a regular file" in str(refusal)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert count(engine, ImportBatch) == 0


def test_a_folder_is_refused_as_not_a_regular_file(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    folder = tmp_path / "p.csv"
    folder.mkdir()
    with pytest.raises(ImportFileError, match=r"p\.csv is a folder, not a regular file"):
        run(engine, small_catalog, folder, tmp_path)
    assert count(engine, ImportBatch) == 0


_CONTROLS = "".join(chr(c) for c in range(1, 32) if chr(c) not in "\n\r")


def test_a_long_garbage_header_gives_a_short_error_with_no_raw_control_characters(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    garbage = ("\x1b]0;pwned\x07\x1b[2J" + _CONTROLS + "\u202e密钥") * 400 + "TAIL"
    path = tmp_path / "p.csv"
    path.write_text(garbage + "," + ",".join(HEADER) + "\n", "utf-8")
    with pytest.raises(ImportFileError) as refusal:
        run(engine, small_catalog, path, tmp_path)
    message = str(refusal.value)
    shown = message.split("column 1 ", 1)[1].split(" is not a field of theme penalty")[0]
    assert shown.startswith("'\\x1b]0;pwned\\x07") and shown.endswith("'…")
    assert len(shown) <= 43  # 40 characters, the quotes and the ellipsis
    assert message.isprintable() and "TAIL" not in message
    assert len(message) < len(str(path)) + 600  # the list of the theme's fields included
    assert count(engine, ImportBatch) == 0


def test_a_long_garbage_cell_appears_in_its_reason_as_a_short_escaped_excerpt(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    cell = "\x1b[31m" + _CONTROLS * 50 + "TAIL"
    path = write_csv(tmp_path / "p.csv", [row("K1", decision_date=cell, penalty_type=cell)])
    summary = run(engine, small_catalog, path, tmp_path)
    reasons = {r["field"]: r["reason"] for r in rejects_of(summary)}
    assert set(reasons) == {"decision_date", "penalty_type"}
    for reason in reasons.values():
        assert reason.startswith("'\\x1b[31m") and reason.isprintable() and "TAIL" not in reason
    quoted = reasons["decision_date"].split("…")[0]  # the cell's excerpt, before the advice
    assert len(quoted) < 80


def test_a_reject_report_is_written_for_its_owner_alone(
    engine: Engine, small_catalog: Catalog, tmp_path: Path
) -> None:
    previous = os.umask(0o022)
    try:
        path = write_csv(tmp_path / "p.csv", [row("K1", decision_date="never")])
        summary = run(engine, small_catalog, path, tmp_path)
    finally:
        os.umask(previous)
    assert summary.reject_report is not None
    assert stat.S_IMODE(summary.reject_report.stat().st_mode) == 0o600
    assert stat.S_IMODE(summary.reject_report.parent.stat().st_mode) == 0o700
