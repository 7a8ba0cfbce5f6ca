"""Files as departments really export them import without hand editing.

A 双公示 export has an all-Chinese header, the subject's identifier in two columns
(the organisation's code or the person's identity number), the category
法人及非法人组织 instead of an exact subject type, and dates the way Excel writes
them; a workbook has date cells and numbers. What cannot be settled (a code that does
not tell the kind of organisation, two different identifiers) is a row problem with a
reason code, never a guess.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import orjson
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from creditexchange.errors import CatalogError
from creditexchange.node.catalog import load_catalog, parse_catalog
from creditexchange.node.database.models import Record, Subject
from creditexchange.node.records.importer import ImportSummary, import_file
from creditexchange.node.records.sources import open_table
from creditexchange.node.records.validation import (
    PROBLEM_CODES,
    SUBJECT_TYPE_LABELS,
    Problem,
    RowValidator,
    ValidRow,
    parse_date,
)
from creditexchange.subjects import SubjectType, subject_type_name

TODAY = dt.date(2026, 11, 27)
CATALOG = load_catalog()
PENALTY = CATALOG.theme("admin_penalty")
AUTHORITY = "11441300MB1F5HAC1Y"
ENTERPRISE = "91441300MA4W7K3P2D"
INDIVIDUAL_BUSINESS = "92441300MA4W7K3P2A"
FARMERS_COOP = "93441300MA4W7K3P27"
INSTITUTION = "12441300MB1F5HAC1U"
SOCIAL_ORG = "51441300MJL000012M"
LAW_FIRM = "31441300MD0000012H"  # registered by 司法行政: the kind is not in the code
PERSON = "441302198506123314"


def penalty(**values: str) -> dict[str, str]:
    row = {
        "subject_id": ENTERPRISE,
        "subject_type": "enterprise",
        "subject_name": "惠州市示例电子科技有限公司",
        "record_key": "惠市监罚〔2026〕1号",
        "decision_number": "惠市监罚〔2026〕1号",
        "violation_type": "虚假宣传",
        "violation_facts": "在店招中使用“最佳”用语",
        "legal_basis": "《中华人民共和国广告法》第五十七条",
        "penalty_type": "罚款",
        "penalty_content": "罚款人民币1万元",
        "decision_date": "2026-03-05",
        "deciding_authority": "惠州市市场监督管理局",
        "deciding_authority_uscc": AUTHORITY,
        "data_source_department": "惠州市市场监督管理局",
        "data_source_uscc": AUTHORITY,
        "industry": "其他",
    }
    row.update(values)
    return row


def check(row: Mapping[str, str]) -> ValidRow | list[Problem]:
    return RowValidator(PENALTY, "market_regulation").check(2, row)


# --- subject types as departments write them -------------------------------------------


def test_the_chinese_labels_are_the_names_the_node_shows() -> None:
    for label, kind in SUBJECT_TYPE_LABELS.items():
        if label != "个体户":  # the everyday short form
            assert subject_type_name(kind).split(" ")[0] == label


@pytest.mark.parametrize(
    ("label", "subject_id", "expected"),
    [
        ("企业", ENTERPRISE, "enterprise"),
        ("个体工商户", INDIVIDUAL_BUSINESS, "individual_business"),
        ("个体户", INDIVIDUAL_BUSINESS, "individual_business"),
        ("事业单位", INSTITUTION, "institution"),
        ("社会组织", SOCIAL_ORG, "social_org"),
        ("自然人", PERSON, "individual"),
        (" 自然人 ", PERSON, "individual"),
        ("enterprise", ENTERPRISE, "enterprise"),
        ("法人及非法人组织", ENTERPRISE, "enterprise"),
        ("法人及非法人组织", FARMERS_COOP, "enterprise"),
        ("法人及非法人组织", INDIVIDUAL_BUSINESS, "individual_business"),
        ("法人及非法人组织", INSTITUTION, "institution"),
        ("法人及非法人组织", SOCIAL_ORG, "social_org"),
        ("法人", SOCIAL_ORG.lower(), "social_org"),
        ("非法人组织", ENTERPRISE, "enterprise"),
    ],
)
def test_a_subject_type_is_read_from_its_label_or_its_code(
    label: str, subject_id: str, expected: str
) -> None:
    result = check(penalty(subject_type=label, subject_id=subject_id))
    assert isinstance(result, ValidRow), result
    assert (result.subject_type, result.subject_id) == (expected, subject_id.upper())


@pytest.mark.parametrize(
    ("label", "subject_id", "field", "reason"),
    [
        ("法人及非法人组织", LAW_FIRM, "subject_type", "registered by 司法行政"),
        ("法人及非法人组织", LAW_FIRM, "subject_type", "write the exact type (企业, 个体工商户"),
        ("法人及非法人组织", PERSON, "subject_id", "is for organisations"),
        ("法人及非法人组织", "", "subject_id", "required field is empty"),
        ("公司", ENTERPRISE, "subject_type", "'公司' is not a subject type"),
        ("", ENTERPRISE, "subject_type", "required field is empty"),
        ("自然人", ENTERPRISE, "subject_id", "not a valid resident identity number"),
    ],
)
def test_a_subject_block_that_cannot_be_settled_is_a_subject_problem(
    label: str, subject_id: str, field: str, reason: str
) -> None:
    result = check(penalty(subject_type=label, subject_id=subject_id))
    assert isinstance(result, list)
    [problem] = [p for p in result if p.field == field]
    assert reason in problem.reason and problem.code == "subject"
    assert PERSON not in problem.reason


def test_an_inferred_type_the_theme_does_not_concern_is_refused() -> None:
    theme = CATALOG.theme("abnormal_operation")  # enterprises and individual businesses
    row = {"subject_type": "法人及非法人组织", "subject_id": INSTITUTION, "subject_name": "x"}
    result = RowValidator(theme, "market_regulation").check(2, {**row, "record_key": "k"})
    assert isinstance(result, list)
    assert (
        Problem(
            "subject_type",
            "theme abnormal_operation does not concern institution subjects "
            "(it allows enterprise, individual_business)",
            "subject",
        )
        in result
    )


# --- dates as departments write them ----------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "2026-03-05",
        "2026/03/05",
        "2026/3/5",
        "2026-3-5",
        "2026.3.5",
        "2026.03.05",
        "2026年3月5日",
        "2026年03月05日",
        "20260305",
        "2026/03/05 00:00:00",
        "2026/3/5 0:00",
        "2026-03-05 10:20:30",
        "2026-03-05T10:20:30.125",
        "2026年3月5日 10:20",
        "20260305 00:00:00",
    ],
)
def test_a_date_is_read_as_departments_write_it(written: str) -> None:
    assert parse_date(written) == dt.date(2026, 3, 5)


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("2026/2/30", "'2026/2/30' is not a real date"),
        ("2026年2月30日", "is not a real date"),
        ("2026-3/5", "is not a date: write YYYY-MM-DD"),
        ("3/5/2026", "is not a date"),
        ("March 5", "is not a date"),
        ("２０２６-03-05", "is not a date"),
        ("2026-03-05 24:00:00", "has no real time of day"),
        ("2026/3/5 10:61", "has no real time of day"),
        ("1899/12/31", "outside the years 1900-2199"),
        ("2200-01-01 00:00:00", "outside the years 1900-2199"),
    ],
)
def test_a_date_that_is_not_one_says_why(written: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_date(written)
    result = check(penalty(decision_date=written))
    assert isinstance(result, list)
    [problem] = [p for p in result if p.field == "decision_date"]
    assert problem.code == "invalid" and reason.strip("'") in problem.reason


# --- numbers as departments write them --------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("2", "2"),
        ("2.0", "2"),
        ("2.00", "2"),
        ("2E0", "2"),
        ("20", "20"),
        ("2E+1", "20"),
        ("1,000.50", "1000.5"),
        ("0.050", "0.05"),
        ("-0.00", "0"),
        ("+7.480", "7.48"),
        ("1E-5", "0.00001"),
    ],
)
def test_a_number_is_stored_in_one_spelling(written: str, stored: str) -> None:
    result = check(penalty(fine_amount=written))
    assert not isinstance(result, list), result
    assert orjson.loads(result.fields_json)["fine_amount"] == stored


@pytest.mark.parametrize("written", ["1E+30", "0.0000000000000000000000000001234", "9" * 29])
def test_a_number_of_too_many_digits_is_refused(written: str) -> None:
    result = check(penalty(fine_amount=written))
    assert isinstance(result, list)
    [problem] = result
    assert (problem.field, problem.code) == ("fine_amount", "invalid")
    assert "more than 28 digits" in problem.reason


# --- reason codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "code"),
    [
        ({"violation_type": ""}, "violation_type", "required"),
        ({"penalty_type": "没收"}, "penalty_type", "invalid"),
        ({"fine_amount": "一万"}, "fine_amount", "invalid"),
        ({"decision_number": "号" * 129}, "decision_number", "invalid"),
        ({"legal_rep_id_number": "441302198506123315"}, "legal_rep_id_number", "invalid"),
        ({"subject_name": ""}, "subject_name", "subject"),
        ({"record_key": ""}, "record_key", "subject"),
        ({"publicity_end": "2026-04-01"}, "publicity_end", "publicity"),
    ],
)
def test_every_problem_carries_its_reason_code(
    values: dict[str, str], field: str, code: str
) -> None:
    result = check(penalty(**values))
    assert isinstance(result, list)
    assert [(p.field, p.code) for p in result] == [(field, code)]
    assert code in PROBLEM_CODES


def test_all_problems_of_a_row_come_in_the_order_of_its_columns() -> None:
    result = check(penalty(subject_name="", industry="?", decision_date="?", violation_type=""))
    assert isinstance(result, list)
    assert [p.field for p in result] == [
        "subject_name",
        "violation_type",
        "decision_date",
        "industry",
    ]


def test_a_sensitive_value_is_withheld_from_its_problem() -> None:
    result = check(
        penalty(legal_rep_id_type="居民身份证", legal_rep_id_number="44130219850612331X")
    )
    assert isinstance(result, list)
    assert "44130219850612331X" not in result[0].reason


# --- whole files ------------------------------------------------------------------------

HEADER = [
    "行政相对人名称",
    "行政相对人类别",
    "行政相对人代码_1（统一社会信用代码）",
    "证件号码",
    "法定代表人",
    "行政处罚决定书文号",
    "违法行为类型",
    "违法事实",
    "处罚依据",
    "处罚类别",
    "处罚内容",
    "罚款金额（万元）",
    "处罚决定日期",
    "公示截止期",
    "处罚机关",
    "处罚机关统一社会信用代码",
    "数据来源单位",
    "数据来源单位统一社会信用代码",
    "备注",
    " 所属领域 ",
]
AUTHORITY_NAME = "惠州市市场监督管理局"


def export_row(
    name: str, label: str, uscc: str, number: str, document: str, date: Any
) -> list[Any]:
    return [
        name,
        label,
        uscc,
        number,
        "陈小明" if uscc else "",
        document,
        "虚假宣传",
        "在店招中使用“最佳”用语",
        "《中华人民共和国广告法》第五十七条",
        "罚款",
        "罚款人民币1万元",
        "1.00",
        date,
        "",
        AUTHORITY_NAME,
        AUTHORITY,
        AUTHORITY_NAME,
        AUTHORITY,
        "",
        "其他",
    ]


EXPORT = [
    export_row(
        "惠州市示例电子科技有限公司",
        "法人及非法人组织",
        ENTERPRISE,
        "",
        "惠市监罚〔2026〕1号",
        "2026/3/5",
    ),
    export_row(
        "惠城区小明便利店",
        "个体工商户",
        INDIVIDUAL_BUSINESS,
        "",
        "惠市监罚〔2026〕2号",
        "2026/3/6 0:00",
    ),
    export_row("张三", "自然人", "", PERSON, "惠市监罚〔2026〕3号", "2026年3月7日"),
    export_row(
        "惠州市律师事务所", "法人及非法人组织", LAW_FIRM, "", "惠市监罚〔2026〕4号", "2026/3/8"
    ),
    export_row("李四", "自然人", ENTERPRISE, PERSON, "惠市监罚〔2026〕5号", "2026/3/9"),
    export_row(
        "惠州市慈善会",
        "法人及非法人组织",
        SOCIAL_ORG,
        "",
        "惠市监罚〔2026〕6号",
        "2026-03-10 09:30:00",
    ),
]


def run(engine: Engine, path: Path, tmp_path: Path, **kw: Any) -> ImportSummary:
    return import_file(
        engine, CATALOG, path, "admin_penalty", reject_dir=tmp_path / "rejects", today=TODAY, **kw
    )


def stored(engine: Engine) -> dict[str, tuple[str, str, dt.date | None]]:
    with Session(engine) as s:
        types = {sub.subject_id: sub.subject_type for sub in s.scalars(select(Subject))}
        return {
            r.record_key: (r.subject_id, types[r.subject_id], r.decision_date)
            for r in s.scalars(select(Record))
        }


def rejects(summary: ImportSummary) -> list[dict[str, str]]:
    assert summary.reject_report is not None
    with summary.reject_report.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def assert_export_imported(engine: Engine, summary: ImportSummary) -> None:
    assert (summary.read, summary.inserted, summary.rejected) == (6, 4, 2)
    assert stored(engine) == {
        "惠市监罚〔2026〕1号": (ENTERPRISE, "enterprise", dt.date(2026, 3, 5)),
        "惠市监罚〔2026〕2号": (INDIVIDUAL_BUSINESS, "individual_business", dt.date(2026, 3, 6)),
        "惠市监罚〔2026〕3号": (PERSON, "individual", dt.date(2026, 3, 7)),
        "惠市监罚〔2026〕6号": (SOCIAL_ORG, "social_org", dt.date(2026, 3, 10)),
    }
    reasons = {(r["line"], r["field"], r["code"]) for r in rejects(summary)}
    assert reasons == {("5", "subject_type", "subject"), ("6", "subject_id", "subject")}


def test_a_gbk_double_publicity_export_imports_as_excel_saved_it(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "行政处罚.csv"
    with path.open("w", encoding="gbk", newline="") as f:
        csv.writer(f).writerows([HEADER, *EXPORT])
    summary = run(engine, path, tmp_path, encoding="gbk")
    assert_export_imported(engine, summary)
    # The two rejected rows come back as the department sent them, in GBK.
    assert summary.rejected_rows is not None
    with summary.rejected_rows.open(encoding="gbk", newline="") as f:
        assert list(csv.reader(f)) == [HEADER, *(EXPORT[3:5])]


def test_a_re_export_that_only_formats_its_numbers_differently_changes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    def export(name: str, amount: str) -> Path:
        cells = list(EXPORT[0])
        cells[HEADER.index("罚款金额（万元）")] = amount
        path = tmp_path / name
        with path.open("w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([HEADER, cells])
        return path

    assert run(engine, export("first.csv", "7.5"), tmp_path).inserted == 1
    for amount in ("7.50", "7.500", "75E-1"):
        again = run(engine, export(f"{amount}.csv", amount), tmp_path)
        assert (again.updated, again.unchanged, again.rejected) == (0, 1, 0), amount
    changed = run(engine, export("changed.csv", "7.51"), tmp_path)
    assert changed.updated == 1


def test_a_workbook_export_with_date_cells_imports_from_its_sheet(
    engine: Engine, tmp_path: Path
) -> None:
    book = openpyxl.Workbook()
    book.active.title = "填报说明"
    book.active.append(["本表由惠州市市场监督管理局导出"])
    sheet = book.create_sheet("行政处罚")
    sheet.append(HEADER)
    for row in EXPORT:
        cells = list(row)
        written = parse_date(str(cells[12]))
        cells[12] = dt.datetime.combine(written, dt.time(9, 30))  # a real date cell
        cells[11] = 1.0  # a number cell
        sheet.append(cells)
    path = tmp_path / "行政处罚.xlsx"
    book.save(path)
    summary = run(engine, path, tmp_path, sheet="行政处罚")
    assert_export_imported(engine, summary)
    with Session(engine) as s:
        fine = {r.record_key: r.fields for r in s.scalars(select(Record))}
    assert '"fine_amount":"1"' in fine["惠市监罚〔2026〕1号"]
    assert summary.rejected_rows is not None and summary.rejected_rows.suffix == ".xlsx"
    with summary.rejected_rows.open("rb") as f:
        table = open_table(f, "xlsx", "utf-8", PENALTY, summary.rejected_rows)
        assert [line for line, _ in table.rows()] == [2, 3]


def test_the_export_reads_the_same_through_every_format(tmp_path: Path) -> None:
    text = io.StringIO()
    csv.writer(text).writerows([HEADER, *EXPORT])
    data = text.getvalue().encode("gb18030")
    table = open_table(io.BytesIO(data), "csv", "gb18030", PENALTY, Path("p.csv"))
    validator = RowValidator(PENALTY, "market_regulation")
    outcome = [
        type(validator.check(line, row)).__name__ if isinstance(row, Mapping) else "unreadable"
        for line, row in table.rows()
    ]
    assert outcome == ["ValidRow", "ValidRow", "ValidRow", "list", "unreadable", "ValidRow"]
    listed = list(table.record_keys())
    assert [key for _, key in listed] == [f"惠市监罚〔2026〕{i}号" for i in (1, 2, 3, 4, 6)]


def test_the_default_catalog_names_the_key_field_of_its_decision_themes() -> None:
    keys = {t.code: t.record_key_field for t in CATALOG.themes if t.record_key_field}
    assert keys == {
        "admin_license": "license_document_number",
        "admin_penalty": "decision_number",
        "serious_dishonesty": "inclusion_document_number",
        "dishonest_debtor": "case_number",
        "customs_case": "case_number",
    }


def test_a_key_field_must_be_a_text_field_of_the_theme() -> None:
    data = CATALOG.model_dump(mode="json")
    data["themes"][2]["record_key_field"] = "decision_date"
    with pytest.raises(CatalogError, match="record_key_field field 'decision_date' must be"):
        parse_catalog(data, "test")
    data["themes"][2]["record_key_field"] = "nothing"
    with pytest.raises(CatalogError, match="record_key_field names unknown field 'nothing'"):
        parse_catalog(data, "test")


def test_subject_types_cover_the_enum() -> None:
    assert set(SUBJECT_TYPE_LABELS.values()) == set(SubjectType)


def test_the_standards_registration_number_and_document_type_columns_are_left_aside(
    engine: Engine, tmp_path: Path
) -> None:
    """A full 双公示 export also carries the numbers the credit code replaced and the
    person's document type: read, not stored, and never a reason to refuse the file."""
    legacy = [
        "行政相对人代码_2（工商注册号）",
        "行政相对人代码_3(组织机构代码)",
        "行政相对人代码_4（税务登记号）",
        "行政相对人代码_5（事业单位证书号）",
        "行政相对人代码_6（社会组织登记证号）",
        "证件类型",
    ]
    path = tmp_path / "行政处罚.csv"
    with path.open("w", encoding="gbk", newline="") as f:
        rows = [[*row, "441300000012345", "", "", "", "", ""] for row in EXPORT]
        csv.writer(f).writerows([[*HEADER, *legacy], *rows])
    summary = run(engine, path, tmp_path, encoding="gbk")
    assert_export_imported(engine, summary)
    with Session(engine) as s:
        stored_fields = [r.fields for r in s.scalars(select(Record))]
    assert not any("441300000012345" in fields for fields in stored_fields)


@pytest.mark.parametrize(
    ("written", "code"),
    [("警告、通报批评", "warning"), ("警告", "warning"), ("通报批评", "warning"), ("罚款", "fine")],
)
def test_a_label_naming_several_kinds_reads_each_kind_alone(written: str, code: str) -> None:
    checked = check(penalty(penalty_type=written))
    assert isinstance(checked, ValidRow), checked
    assert '"penalty_type":"' + code + '"' in checked.fields_json
