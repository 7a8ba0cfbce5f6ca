"""Reading department files as tables: headers as departments write them, the key pass,
the original rows of rejected lines, workbooks, and the rejected rows written back.

No database here: these are the promises of ``node/records/sources.py`` alone. The
theme is the default catalog's 双公示 penalty theme, whose record key comes from its
decision document number when a file has no record_key column.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
import pytest

from creditexchange.errors import ImportFileError
from creditexchange.node.catalog import Theme, load_catalog
from creditexchange.node.records.sources import (
    Table,
    file_format,
    open_table,
    scan_file,
    write_rejected_rows,
)
from creditexchange.node.records.validation import Problem, RowValidator, ValidRow

THEME: Theme = load_catalog().theme("admin_penalty")
ENTERPRISE = "91441300MA4W7K3P2D"
PERSON = "441302198506123314"
AUTHORITY = "11441300MB1F5HAC1Y"

# The penalty fields a row needs, by Chinese name, then the values of one row.
FIELDS = {
    "违法行为类型": "虚假宣传",
    "违法事实": "在店招中使用“最佳”用语",
    "处罚依据": "《中华人民共和国广告法》第五十七条",
    "处罚类别": "罚款",
    "处罚内容": "罚款人民币1万元",
    "罚款金额（万元）": "1.00",
    "处罚决定日期": "2026/3/5",
    "处罚机关": "惠州市市场监督管理局",
    "处罚机关统一社会信用代码": AUTHORITY,
    "数据来源单位": "惠州市市场监督管理局",
    "数据来源单位统一社会信用代码": AUTHORITY,
    "所属领域": "其他",
}
HEADER = [
    "行政相对人名称",
    "行政相对人类别",
    "行政相对人代码_1（统一社会信用代码）",
    "证件号码",
    "行政处罚决定书文号",
    *FIELDS,
]


def cells(
    name: str = "惠州市示例电子科技有限公司",
    kind: str = "法人及非法人组织",
    uscc: str = ENTERPRISE,
    number: str = "",
    document: str = "惠市监罚〔2026〕1号",
) -> list[str]:
    return [name, kind, uscc, number, document, *FIELDS.values()]


def csv_bytes(rows: list[list[str]], header: list[str] = HEADER, encoding: str = "utf-8") -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode(encoding)


def table(data: bytes, fmt: str = "csv", encoding: str = "utf-8-sig", **kw: Any) -> Table:
    return open_table(io.BytesIO(data), fmt, encoding, THEME, Path(f"dept.{fmt}"), **kw)


def mappings(rows: Any) -> list[tuple[int, Mapping[str, str] | list[Problem]]]:
    return list(rows)


def workbook(sheets: dict[str, list[list[Any]]]) -> bytes:
    """A workbook as Excel saves it; a text starting with ``=`` is a text cell."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for r, row in enumerate(rows, start=1):
            for c, value in enumerate(row, start=1):
                cell = sheet.cell(r, c, value)
                if isinstance(value, str) and value.startswith("="):
                    cell.data_type = "s"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# --- headers ----------------------------------------------------------------------------


def test_an_all_chinese_double_publicity_header_gives_rows_by_field_code() -> None:
    [(line, row)] = mappings(table(csv_bytes([cells()])).rows())
    assert line == 2 and isinstance(row, Mapping)
    assert row["subject_name"] == "惠州市示例电子科技有限公司"
    assert row["subject_type"] == "法人及非法人组织"
    assert row["subject_id"] == ENTERPRISE
    assert row["record_key"] == row["decision_number"] == "惠市监罚〔2026〕1号"
    assert row["fine_amount"] == "1.00" and row["decision_date"] == "2026/3/5"


@pytest.mark.parametrize(
    "spelling",
    [
        " 罚款金额(万元) ",  # half-width brackets, blanks around
        "罚款金额（万元）",
        "罚款金额 （ 万元 ）",
        "fine_amount",
    ],
)
def test_header_names_match_whatever_their_brackets_and_blanks(spelling: str) -> None:
    header = [spelling if h == "罚款金额（万元）" else h for h in HEADER]
    [(_, row)] = mappings(table(csv_bytes([cells()], header)).rows())
    assert isinstance(row, Mapping) and row["fine_amount"] == "1.00"


@pytest.mark.parametrize(
    "uscc_name", ["统一社会信用代码", "行政相对人代码_1(统一社会信用代码)", "行政相对人代码_1"]
)
@pytest.mark.parametrize("number_name", ["证件号码", "身份证号码", "公民身份号码"])
def test_the_identifier_columns_go_by_their_common_names(uscc_name: str, number_name: str) -> None:
    header = [uscc_name if i == 2 else number_name if i == 3 else h for i, h in enumerate(HEADER)]
    data = csv_bytes([cells(), cells(kind="自然人", uscc="", number=PERSON)], header)
    ids = [row["subject_id"] for _, row in table(data).rows() if isinstance(row, Mapping)]
    assert ids == [ENTERPRISE, PERSON]


def test_an_unknown_column_still_refuses_the_file() -> None:
    with pytest.raises(ImportFileError, match=r"column 18 '经营者联系电话' is not"):
        table(csv_bytes([], [*HEADER, "经营者联系电话"]))


def test_a_column_given_twice_under_two_names_refuses_the_file() -> None:
    with pytest.raises(
        ImportFileError, match=r"'decision_number' appears twice .*columns 5 and 18"
    ):
        table(csv_bytes([], [*HEADER, "decision_number"]))


def test_subject_id_beside_the_double_publicity_pair_refuses_the_file() -> None:
    with pytest.raises(ImportFileError, match="both give the subject's identifier"):
        table(csv_bytes([], [*HEADER, "subject_id"]))


def test_a_missing_identifier_or_key_column_names_what_would_do() -> None:
    header = [h for h in HEADER if h not in ("证件号码", "行政相对人代码_1（统一社会信用代码）")]
    with pytest.raises(ImportFileError, match=r"subject_id \(or 统一社会信用代码 / 证件号码\)"):
        table(csv_bytes([], header))
    header = [h for h in HEADER if h != "行政处罚决定书文号"]
    with pytest.raises(ImportFileError, match=r"record_key \(or decision_number\)"):
        table(csv_bytes([], header))


def test_a_record_key_column_wins_over_the_key_field() -> None:
    data = csv_bytes([[*cells(), "K-1"]], [*HEADER, "record_key"])
    [(_, row)] = mappings(table(data).rows())
    assert isinstance(row, Mapping) and row["record_key"] == "K-1"


def test_empty_last_header_cells_of_a_spreadsheet_export_are_ignored() -> None:
    data = csv_bytes([[*cells(), "", ""]], [*HEADER, "", ""])
    [(_, row)] = mappings(table(data).rows())
    assert isinstance(row, Mapping) and "" not in row
    bad = csv_bytes([[*cells(), "", "stray"]], [*HEADER, "", ""])
    [(_, problems)] = mappings(table(bad).rows())
    assert problems == [Problem("(row)", "the row has 19 values, the header has 17", "unreadable")]


# --- the double publicity identifier pair --------------------------------------------------


def test_both_identifier_cells_filled_differently_is_a_subject_problem() -> None:
    data = csv_bytes([cells(number=PERSON), cells(number=" " + ENTERPRISE.lower())])
    (_, conflict), (_, same) = mappings(table(data).rows())
    assert isinstance(conflict, list) and [(p.field, p.code) for p in conflict] == [
        ("subject_id", "subject")
    ]
    assert PERSON not in conflict[0].reason  # an identity number is never repeated
    assert isinstance(same, Mapping) and same["subject_id"] == ENTERPRISE


def test_json_lines_take_the_same_names_and_the_same_identifier_rule() -> None:
    line = dict(zip(HEADER, cells(kind="自然人", uscc="", number=PERSON), strict=True))
    both = {**line, "subject_id": PERSON}
    twice = {**line, "decision_number": "X"}
    data = "\n".join(json.dumps(o, ensure_ascii=False) for o in (line, both, twice)).encode()
    (_, row), (_, given_twice), (_, key_twice) = mappings(table(data, "jsonl").rows())
    assert isinstance(row, Mapping)
    assert (row["subject_id"], row["record_key"]) == (PERSON, "惠市监罚〔2026〕1号")
    assert isinstance(given_twice, list) and given_twice[0].code == "subject"
    assert isinstance(key_twice, list) and key_twice[0].reason.startswith("given twice")


# --- the key pass -----------------------------------------------------------------------


def test_keys_are_those_validation_sees_line_by_line() -> None:
    rows = [
        cells(document=" K1 "),
        cells(document=""),  # no key: not listed
        cells(number=PERSON),  # two identifiers: not a row validation sees
        cells(document="K1"),
    ]
    data = csv_bytes(rows).replace(b"\r\n", b"\r\n\r\n", 1)  # a blank line after the header
    t = table(data)
    assert list(t.record_keys()) == [(3, "K1"), (6, "K1")]
    seen = [(line, r["record_key"].strip()) for line, r in t.rows() if isinstance(r, Mapping)]
    assert [s for s in seen if s[1]] == list(t.record_keys())


def test_keys_of_json_lines_and_workbooks() -> None:
    line = dict(zip(HEADER, cells(document="J1"), strict=True))
    data = (json.dumps(line, ensure_ascii=False) + "\n\n{bad\n").encode()
    assert list(table(data, "jsonl").record_keys()) == [(1, "J1")]
    book = workbook({"s": [HEADER, cells(document="X1"), [], cells(document="X2 ")]})
    assert list(table(book, "xlsx").record_keys()) == [(2, "X1"), (4, "X2")]


def test_the_key_pass_and_the_row_pass_can_take_turns_on_one_file() -> None:
    data = csv_bytes([cells(document=f"K{i}") for i in range(3000)])
    t = table(data)
    keys, rows = t.record_keys(), t.rows()
    pairs = [(next(keys), next(rows)) for _ in range(3000)]
    assert all(
        isinstance(row, Mapping) and k == (line, row["record_key"]) for k, (line, row) in pairs
    )
    assert t.consumed == len(data)


def test_a_table_leaves_its_file_open_and_may_start_anywhere() -> None:
    file = io.BytesIO(csv_bytes([cells()]))
    file.seek(7)
    t = open_table(file, "csv", "utf-8-sig", THEME, Path("dept.csv"))
    assert len(list(t.rows())) == 1
    del t
    assert not file.closed


# --- the original rows ------------------------------------------------------------------


def test_raw_rows_give_csv_cells_as_written_even_across_lines_and_when_unparsable() -> None:
    multi = cells(document="M1")
    multi[6] = "第一行\n第二行"
    text = csv_bytes([cells(document="A1"), multi, cells(document="B1")]).decode()
    huge = '"' + "x" * (csv.field_size_limit() + 1) + '",b\r\n'
    data = (text + huge + csv_bytes([cells(document="C1")]).decode().split("\r\n", 1)[1]).encode()
    t = table(data)
    lines = [line for line, _ in t.rows()]
    assert lines == [2, 3, 5, 6, 7]  # the cell of line 3 goes on on line 4
    raw = dict(t.raw_rows({3, 6, 7}))
    assert raw[3] == multi
    assert isinstance(raw[6], str) and raw[6] == huge.removesuffix("\r\n")
    assert raw[7] == cells(document="C1")


def test_raw_rows_of_json_lines_are_the_lines() -> None:
    lines = ['{"行政相对人名称": "甲"}', "{not json", '{"b": 1}']
    t = table(("\r\n".join(lines) + "\n").encode(), "jsonl")
    assert list(t.raw_rows([2, 3])) == [(2, lines[1]), (3, lines[2])]


# --- workbooks --------------------------------------------------------------------------


def test_a_workbook_reads_like_a_csv_with_real_dates_and_numbers() -> None:
    row = cells()
    values: list[Any] = [*row]
    values[HEADER.index("罚款金额（万元）")] = 100.0
    values[HEADER.index("处罚决定日期")] = dt.datetime(2026, 3, 5, 10, 20, 30)
    book = workbook({"封面": [["说明"]], "处罚": [HEADER, values, [None] * 3, [None]]})
    t = table(book, "xlsx", sheet="处罚")
    assert t.header == HEADER
    [(line, got)] = mappings(t.rows())
    assert line == 2 and isinstance(got, Mapping)
    assert (got["fine_amount"], got["decision_date"]) == ("100", "2026-03-05")
    validated = RowValidator(THEME, "market_regulation").check(line, got)
    assert isinstance(validated, ValidRow) and validated.subject_type == "enterprise"
    assert t.consumed == len(book)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (12, "12"),
        (100.0, "100"),
        (7.48, "7.48"),
        (1e-05, "0.00001"),
        (1.5e20, "150000000000000000000"),
        (-0.0, "0"),
        (True, "true"),
        (dt.date(2026, 3, 5), "2026-03-05"),
        (dt.datetime(2026, 3, 5, 23, 59), "2026-03-05"),
        ("  惠州  ", "惠州"),
    ],
)
def test_workbook_cells_become_the_text_a_csv_would_hold(value: Any, text: str) -> None:
    book = workbook({"s": [HEADER, [*cells()[:-1], value, "end"]]})
    [(_, raw)] = list(table(book, "xlsx").raw_rows([2]))
    assert raw[len(HEADER) - 1 :] == [text, "end"]


def test_a_sheet_is_chosen_by_name_or_number_and_a_wrong_one_lists_the_sheets() -> None:
    book = workbook({"说明": [["填报说明"]], "数据": [HEADER, cells()]})
    assert len(list(table(book, "xlsx", sheet="数据").rows())) == 1
    assert len(list(table(book, "xlsx", sheet="2").rows())) == 1
    with pytest.raises(ImportFileError, match="not a field of theme"):
        table(book, "xlsx")  # the first sheet is the default, and it is not the data
    with pytest.raises(
        ImportFileError, match=r"no sheet '处罚'; its sheets are 1 '说明', 2 '数据'"
    ):
        table(book, "xlsx", sheet="处罚")
    with pytest.raises(ImportFileError, match="no sheet '3'"):
        table(book, "xlsx", sheet="3")


def test_rows_keep_their_sheet_row_numbers_and_extra_values_are_refused() -> None:
    book = workbook({"s": [HEADER, [], cells(), [*cells(), None, "多余"]]})
    lines = mappings(table(book, "xlsx").rows())
    assert [line for line, _ in lines] == [3, 4]
    assert lines[1][1] == [
        Problem("(row)", "the row has 19 values, the header has 17", "unreadable")
    ]


@pytest.mark.parametrize(
    "data",
    [b"", b"not a zip at all", b"PK\x03\x04broken", csv_bytes([cells()])],
    ids=["empty", "text", "broken zip", "a csv named .xlsx"],
)
def test_a_file_that_is_not_a_workbook_is_refused_whole(data: bytes) -> None:
    with pytest.raises(ImportFileError, match=r"not a valid Excel workbook.*Nothing was imported"):
        table(data, "xlsx")


def test_an_empty_sheet_is_refused() -> None:
    with pytest.raises(ImportFileError, match="is empty"):
        table(workbook({"s": [[None, None]]}), "xlsx")


def test_xlsx_is_a_format_and_old_excel_files_say_what_to_do() -> None:
    assert file_format(Path("a.XLSX")) == "xlsx"
    with pytest.raises(ImportFileError, match=r"save it as \.xlsx"):
        file_format(Path("a.xls"))


def test_a_workbook_is_scanned_as_bytes_not_text() -> None:
    book = workbook({"s": [HEADER]})
    digest, size = scan_file(io.BytesIO(book), Path("b.xlsx"), "utf-8-sig", "xlsx")
    assert size == len(book) and len(digest) == 64


# --- rejected rows, written back --------------------------------------------------------


def _round_trip(tmp_path: Path, fmt: str, data: bytes, encoding: str) -> None:
    t = table(data, fmt, encoding)
    lines = [line for line, _ in t.rows()][1::2]
    original = list(t.raw_rows(lines))
    written = write_rejected_rows(
        tmp_path / "out" / "batch-1.rows", fmt, encoding, t.header, original
    )
    assert written == tmp_path / "out" / f"batch-1.rows.{fmt}"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
    with written.open("rb") as f:
        again = open_table(f, fmt, encoding, THEME, written)
        assert again.header == t.header
        reread = list(again.raw_rows([line for line, _ in again.rows()]))
    assert [cells for _, cells in reread] == [cells for _, cells in original]


def test_rejected_rows_of_a_gbk_csv_are_written_back_in_gbk(tmp_path: Path) -> None:
    rows = [cells(document=f"K{i}") for i in range(4)]
    rows[1][6] = '=HYPERLINK("x")\n第二行'  # kept as it was: it must import again as it is
    data = csv_bytes(rows, encoding="gbk")
    _round_trip(tmp_path, "csv", data, "gbk")
    written = (tmp_path / "out" / "batch-1.rows.csv").read_bytes()
    assert written.decode("gbk").startswith("行政相对人名称,")


def test_rejected_rows_of_json_lines_are_the_lines_themselves(tmp_path: Path) -> None:
    objects = [dict(zip(HEADER, cells(document=f"K{i}"), strict=True)) for i in range(4)]
    data = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects).encode()
    _round_trip(tmp_path, "jsonl", data, "utf-8-sig")


def test_rejected_rows_of_a_workbook_go_to_a_new_workbook(tmp_path: Path) -> None:
    rows: list[list[Any]] = [cells(document=f"K{i}") for i in range(4)]
    rows[1][6] = "=1+1"  # text, never a formula
    rows[3][HEADER.index("罚款金额（万元）")] = 2.5
    data = workbook({"s": [HEADER, *rows]})
    [(_, third)] = table(data, "xlsx").raw_rows([3])
    assert third[6] == "=1+1"
    _round_trip(tmp_path, "xlsx", data, "utf-8-sig")
    book = openpyxl.load_workbook(tmp_path / "out" / "batch-1.rows.xlsx")
    formula_cell = book.active.cell(2, 7)  # K1, the first row written
    assert (formula_cell.value, formula_cell.data_type) == ("=1+1", "s")


def test_rejected_rows_never_follow_a_link_planted_in_their_place(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("keep")
    (tmp_path / "batch-1.rows.csv").symlink_to(secret)
    with pytest.raises(OSError):
        write_rejected_rows(tmp_path / "batch-1.rows", "csv", "utf-8", HEADER, [(2, cells())])
    assert secret.read_text() == "keep"
    assert os.path.islink(tmp_path / "batch-1.rows.csv")
