"""The consolidated report's PDF: what a credit center hands out, readable for years.

A sample report (Chinese names, a long section that runs over pages, masked fields,
a record under objection, a member that denied and one that timed out) is rendered
and read back with pypdf: every font embedded, the text extractable, tables
continued under repeated headings, the digest and its QR code those of the signed
JSON. Page 1 is rasterised with poppler's ``pdftoppm`` into
``tests/artifacts/report-page1.png`` for a person to look at.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import segno
from pypdf import PdfReader
from pypdf.generic import ContentStream, DictionaryObject, StreamObject

from creditexchange.errors import CreditExchangeError
from creditexchange.node.federation.pdf import QR_PREFIX, render_pdf
from creditexchange.node.federation.report import FORMAT, SECTIONS, report_digest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

SUBJECT_NAME = "惠州市明德智能装备有限公司"
PENALTIES = 24  # enough administrative records to run over two pages


def _field(name: str, label: str, value: str, unit: str = "", masked: bool = False) -> Any:
    return {"name": name, "label": label, "value": value, "unit": unit, "masked": masked}


def _penalty(n: int, *, under_objection: bool = False) -> dict[str, Any]:
    return {
        "member": "huizhou",
        "theme": "admin_penalty",
        "theme_name": "行政处罚信息（双公示）",
        "source_department": "惠州市市场监督管理局",
        "record_key": f"惠市监罚〔2026〕{n}号",
        "status": "objection" if under_objection else "active",
        "under_objection": under_objection,
        "decision_date": f"2026-{1 + n % 12:02d}-{1 + n % 27:02d}",
        "valid_until": "",
        "publicity_end": "2029-06-30",
        "hit": None,
        "fields": [
            _field("illegal_act_type", "违法行为类型", "未按规定公示年度报告"),
            _field(
                "illegal_facts",
                "违法事实",
                "当事人在未取得食品经营许可证的情况下从事食品经营活动，违反了《中华人民共和国"
                "食品安全法》第三十五条第一款的规定，经责令改正后仍未改正。",
            ),
            _field("penalty_type", "处罚类别", "罚款"),
            _field("fine_amount", "罚款金额（万元）", f"{n * 0.5:.1f}", "万元"),
            _field("deciding_authority", "处罚机关", "惠州市市场监督管理局"),
            _field("legal_representative", "法定代表人", "王*明", masked=True),
            _field("legal_rep_id_number", "法定代表人证件号码", "441302********3314", masked=True),
        ],
    }


def sample_report() -> dict[str, Any]:
    """A signed-looking report as the issuing node writes it (format v1)."""
    records: dict[str, list[dict[str, Any]]] = {code: [] for code, _, _ in SECTIONS}
    records["registration"].append(
        {
            "member": "huizhou",
            "theme": "registration",
            "theme_name": "登记注册基本信息",
            "source_department": "惠州市市场监督管理局",
            "record_key": "91441300MA4W7K3P2D",
            "status": "active",
            "under_objection": False,
            "decision_date": "2019-04-16",
            "valid_until": "",
            "publicity_end": "",
            "hit": None,
            "fields": [
                _field(
                    "legal_representative", "法定代表人（负责人、经营者）", "王*明", masked=True
                ),
                _field("org_form", "主体类型（组织形式）", "有限责任公司"),
                _field(
                    "registered_capital", "注册资本（开办资金、资金数额）（万元）", "500", "万元"
                ),
                _field("address", "住所（经营场所）", "广东省惠州市惠城区江北街道文昌一路 9 号"),
            ],
        }
    )
    records["licensing_and_management"] = [
        _penalty(n, under_objection=(n == 3)) for n in range(1, PENALTIES + 1)
    ]
    records["judicial"].append(
        {
            "member": "shenzhen",
            "theme": "dishonest_debtor",
            "theme_name": "失信被执行人信息",
            "source_department": "深圳市中级人民法院",
            "record_key": "(2026)粤03执1187号",
            "status": "active",
            "under_objection": False,
            "decision_date": "2026-08-20",
            "valid_until": "2028-08-19",
            "publicity_end": "",
            "hit": None,
            "fields": [_field("court", "执行法院", "深圳市中级人民法院")],
        }
    )
    return {
        "format": FORMAT,
        "report_id": "5b0d6f1c2a3e4f708192a3b4c5d6e7f8",
        "issuer": "shenzhen",
        "federation": "3plus2",
        "memorandum": {"version": 1, "hash": "ab" * 32},
        "issued_at": "2026-12-03T20:15:04+08:00",
        "subject": {"id": "91441300MA4W7K3P2D", "type": "enterprise", "name": SUBJECT_NAME},
        "request": {
            "purpose": "bank_credit",
            "purpose_name": "银行信贷（纯信用贷款、贷前审查、贷后监测）",
            "legal_basis": "《征信业管理条例》第十四条；《广东省社会信用条例》第二十六条",
            "case_reference": "SZBANK-2026-0042",
            "officer": "李晓红",
            "mode": "full",
        },
        "deadline_s": 5.0,
        "members": [
            _member("shenzhen", "深圳市信用中心", "own", "", 3.2, 1),
            _member("huizhou", "惠州市信用中心", "answered", "", 41.7, PENALTIES + 1),
            _member(
                "dongguan",
                "东莞市信用中心",
                "denied",
                "rule bank-credit-businesses: purpose bank_credit is not allowed for themes "
                "admin_penalty; retry with --check",
                18.4,
                0,
            ),
            _member(
                "heyuan",
                "河源市信用中心",
                "timed_out",
                "no answer within the 5 s deadline",
                5000,
                0,
            ),
            _member("shanwei", "汕尾市信用中心", "answered", "", 57.25, 0),
        ],
        "sections": [
            {"code": code, "title_zh": zh, "title_en": en, "records": records[code]}
            for code, zh, en in SECTIONS
        ],
        "answers": [
            {
                "member": member,
                "request_digest": hashlib.sha256(member.encode()).hexdigest(),
                "answer_key": hashlib.sha256(b"key" + member.encode()).hexdigest(),
                "envelope": base64.b64encode(b"answer envelope of " + member.encode()).decode(),
            }
            for member in ("huizhou", "dongguan", "shanwei")
        ],
        "signature": {
            "key_id": "c0ffee" + "11" * 29,
            "sig": base64.b64encode(bytes(range(64))).decode(),
        },
    }


def _member(
    member: str, name: str, status: str, reason: str, elapsed_ms: float, records: int
) -> dict[str, Any]:
    return {
        "member": member,
        "name": name,
        "status": status,
        "reason": reason,
        "elapsed_ms": elapsed_ms,
        "records": records,
    }


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return sample_report()


@pytest.fixture
def short_report(report: dict[str, Any]) -> dict[str, Any]:
    """The sample with two administrative records: quicker to render again."""
    short = copy.deepcopy(report)
    del short["sections"][1]["records"][2:]
    return short


@pytest.fixture(scope="module")
def pdf(report: dict[str, Any]) -> bytes:
    return render_pdf(report)


@pytest.fixture(scope="module")
def pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(BytesIO(pdf)).pages]


def _fonts(reader: PdfReader) -> Iterator[DictionaryObject]:
    for page in reader.pages:
        resources = page["/Resources"].get_object()
        assert isinstance(resources, DictionaryObject)
        fonts = resources["/Font"].get_object()
        assert isinstance(fonts, DictionaryObject)
        for ref in fonts.values():
            font = ref.get_object()
            assert isinstance(font, DictionaryObject)
            yield font
            for descendant in font.get("/DescendantFonts", []):
                yield descendant.get_object()


def test_every_font_the_pdf_uses_is_embedded_so_chinese_shows_without_installed_fonts(
    pdf: bytes,
) -> None:
    fonts = list(_fonts(PdfReader(BytesIO(pdf))))
    assert fonts, "the PDF uses no font at all"
    for font in fonts:
        name = str(font["/BaseFont"])
        if str(font["/Subtype"]) == "/Type0":
            continue  # a composite font: its descendant carries the file
        descriptor = font["/FontDescriptor"].get_object()
        assert isinstance(descriptor, DictionaryObject)
        assert "/FontFile2" in descriptor, f"{name} is not embedded"
        embedded = descriptor["/FontFile2"].get_object()
        assert isinstance(embedded, StreamObject) and embedded.get_data(), f"{name} is empty"
        assert "WenQuanYiMicroHei" in name, name
    assert b"STSong" not in pdf


def test_the_text_extracts_with_the_subject_sections_and_every_members_status(
    pages: list[str], report: dict[str, Any]
) -> None:
    text = "\n".join(pages)
    for expected in [
        "公共信用信息报告（跨区域）",
        SUBJECT_NAME,
        "91441300MA4W7K3P2D",
        "2026-12-03 20:15:04 (UTC+08:00)",
        "深圳市信用中心",
        "银行信贷",
        "SZBANK-2026-0042",
        "李晓红",
        *(zh for _, zh, _ in SECTIONS),
        "已答复",
        "拒绝",
        "denied",
        "超时",
        "timed out",
        "retry with --check",
        "无记录 No records",
        "惠市监罚〔2026〕1号",
        "失信被执行人信息",
        "credit-node report verify FILE.json",
        report["signature"]["key_id"],
    ]:
        assert expected in text, f"{expected!r} is not in the PDF's text"


def test_masked_fields_and_records_under_objection_are_marked(pages: list[str]) -> None:
    text = "\n".join(pages)
    assert "441302********3314" in text
    assert text.count("已遮蔽 masked") == 2 * PENALTIES + 1
    objection = text.index("惠市监罚〔2026〕3号")
    assert "异议处理中 objection in progress" in text[objection : objection + 60]
    assert text.count("异议处理中") == 1


def test_a_long_section_continues_on_the_next_pages_under_its_title_repeated(
    pages: list[str],
) -> None:
    title = "2. 行政许可与行政管理信息 Administrative licensing and management"
    holding = [i for i, page in enumerate(pages) if title in page]
    assert len(holding) >= 2, "the administrative section should run over two pages or more"
    for i in holding:  # under the running header, the section's title comes first
        assert pages[i].splitlines()[2].startswith(title), pages[i][:200]
    first_key = "惠市监罚〔2026〕1号"
    last_key = f"惠市监罚〔2026〕{PENALTIES}号"
    assert first_key in pages[holding[0]]
    assert last_key not in pages[holding[0]] and last_key in pages[holding[-1]]


def test_a_record_is_kept_on_one_page_with_its_title(pages: list[str]) -> None:
    for page in pages:  # each penalty's title holds its key; its last field is the id number
        titles = re.findall(r"惠市监罚〔2026〕\d+号", page)
        assert page.count("法定代表人证件") == len(titles), f"a record is split: {page[:300]}"


def test_every_page_is_numbered_out_of_the_total(pages: list[str]) -> None:
    for number, page in enumerate(pages, start=1):
        assert f"第 {number} 页 / 共 {len(pages)} 页" in page


def test_the_digest_shown_is_that_of_the_whole_signed_json(
    pages: list[str], report: dict[str, Any], short_report: dict[str, Any]
) -> None:
    digest = report_digest(report)
    assert digest[:32] in pages[-1] and digest[32:] in pages[-1]
    resigned = copy.deepcopy(short_report)
    resigned["signature"]["sig"] = base64.b64encode(bytes(64)).decode()
    last = PdfReader(BytesIO(render_pdf(resigned))).pages[-1].extract_text()
    assert report_digest(resigned)[:32] in last
    assert report_digest(short_report)[:32] not in last  # the signature is in the digest


def test_the_qr_code_drawn_encodes_thereport_digest(pdf: bytes, report: dict[str, Any]) -> None:
    expected = segno.make(QR_PREFIX + report_digest(report), error="m", micro=False)
    last = PdfReader(BytesIO(pdf)).pages[-1]
    rectangles = [
        tuple(float(v) for v in operands)
        for operands, operator in ContentStream(last.get_contents(), last.pdf).operations
        if operator == b"re"
    ]
    # the QR code's runs of dark modules are the many rectangles one module high
    unit = Counter(round(r[3], 3) for r in rectangles).most_common(1)[0][0]
    squares = [r for r in rectangles if round(r[3], 3) == unit]
    left = min(x for x, *_ in squares)
    top = max(y for _, y, _, _ in squares)
    size = len(expected.matrix)
    drawn = [[False] * size for _ in range(size)]
    for x, y, w, _ in squares:
        row = round((top - y) / unit)
        start = round((x - left) / unit)
        for column in range(start, start + round(w / unit)):
            drawn[row][column] = True
    assert drawn == [[bool(m) for m in row] for row in expected.matrix]


def test_report_text_prints_as_written_never_as_markup_or_hidden_characters(
    short_report: dict[str, Any],
) -> None:
    hostile = short_report
    hostile["members"][2]["reason"] = "<font size=60>big</font> & <b>bold</b>"
    hostile["subject"]["name"] = "惠州\u202emoc.live\u202c有限公司\x1b[2J"
    text = "".join(p.extract_text() for p in PdfReader(BytesIO(render_pdf(hostile))).pages)
    assert "<font size=60>big</font> & <b>bold</b>" in text
    assert "惠州\\u202emoc.live\\u202c有限公司\\x1b[2J" in text
    assert "\u202e" not in text and "\x1b" not in text


def test_free_text_keeps_its_lines_and_many_empty_lines_cannot_outgrow_a_page(
    short_report: dict[str, Any],
) -> None:
    record = short_report["sections"][1]["records"][0]
    record["fields"][1]["value"] = "第一行\r\n第二行\t结束"
    record["fields"][2]["value"] = "开始" + "\n" * 5000 + "结束"
    record["record_key"] = "惠市监罚\n〔2026〕1号"
    text = "".join(p.extract_text() for p in PdfReader(BytesIO(render_pdf(short_report))).pages)
    assert "第一行\n第二行 结束" in text
    assert "开始\n" in text and "\\n" * 20 in text  # 15 lines, then escaped, then cut
    assert "3004 more characters" in text
    assert "惠市监罚\\n〔2026〕1号" in text  # a key is one line: its break prints escaped


def test_a_record_taller_than_a_page_runs_over_pages_and_a_huge_value_is_cut_with_a_note(
    short_report: dict[str, Any],
) -> None:
    huge = short_report
    record = huge["sections"][7]["records"][0]
    record["fields"] = [
        _field(
            f"remark_{i}", f"备注{i}", "执行情况：" + "被执行人未履行生效法律文书确定的义务。" * 6
        )
        for i in range(50)
    ]
    record["fields"].append(_field("facts", "违法事实", "事" * 100_000))
    record["record_key"] = "K" * 5000
    pages = [p.extract_text() for p in PdfReader(BytesIO(render_pdf(huge))).pages]
    holding = [i for i, page in enumerate(pages) if re.search(r"备注\d+\n", page)]
    assert len(holding) >= 2
    text = "".join(pages)
    assert "备注0" in text and "备注49" in text
    assert "另 98000 字见报告" in text and "98000 more characters in the report's JSON" in text
    assert "4700 more characters" in text


def _line(member: str, theme: str, theme_name: str, hit: bool) -> dict[str, Any]:
    """A hit / no-hit line as check mode (or an individual) has it: no record, no fields."""
    return {
        "member": member,
        "theme": theme,
        "theme_name": theme_name,
        "source_department": "",
        "record_key": "",
        "status": "",
        "under_objection": hit and member == "huizhou",
        "decision_date": "",
        "valid_until": "",
        "publicity_end": "",
        "hit": hit,
        "fields": [],
    }


def test_a_check_mode_report_shows_hit_or_no_hit_per_theme_and_no_contents(
    report: dict[str, Any],
) -> None:
    check = copy.deepcopy(report)
    check["request"]["mode"] = "check"
    for section in check["sections"]:
        section["records"] = []
    check["sections"][1]["records"] = [
        _line("huizhou", "admin_penalty", "行政处罚信息（双公示）", True),
        _line("shanwei", "admin_penalty", "行政处罚信息（双公示）", False),
    ]
    check["sections"][3]["records"] = [
        _line("shanwei", "dishonest_list", "严重失信主体名单", False)
    ]
    text = "".join(p.extract_text() for p in PdfReader(BytesIO(render_pdf(check))).pages)
    assert text.count("命中 hit") == 1 and text.count("未命中 no hit") == 2
    assert "有无核查" in text and "异议处理中" in text
    assert "违法事实" not in text and "惠市监罚" not in text


def test_hit_lines_among_full_records_show_their_result(report: dict[str, Any]) -> None:
    mixed = copy.deepcopy(report)
    first = mixed["sections"][1]["records"][0]
    line = _line("shenzhen", "dishonest_list", "严重失信主体名单", False)
    mixed["sections"][1]["records"] = [first, line]
    text = "".join(p.extract_text() for p in PdfReader(BytesIO(render_pdf(mixed))).pages)
    assert "惠市监罚〔2026〕1号" in text and "未命中 no hit" in text


def test_the_same_report_renders_to_the_same_bytes(pdf: bytes, report: dict[str, Any]) -> None:
    assert render_pdf(copy.deepcopy(report)) == pdf


def _without(report: dict[str, Any], *path: str | int) -> dict[str, Any]:
    broken = copy.deepcopy(report)
    node: Any = broken
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return broken


def _with(report: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    broken = copy.deepcopy(report)
    node: Any = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: _with(r, "creditexchange.report/v2", "format"), r"\$\.format should be"),
        (lambda r: _with(r, "gone", "members", 2, "status"), r"\$\.members\[2\]\.status"),
        (lambda r: _without(r, "subject", "name"), r"\$\.subject has no 'name'"),
        (lambda r: _with(r, "x", "sections", 1, "records", 0, "fields"), r"records\[0\]\.fields"),
        (lambda r: _with(r, "list", "request", "mode"), r"\$\.request\.mode should be full or"),
        (lambda r: _with(r, "yesterday", "issued_at"), r"\$\.issued_at should be an ISO 8601"),
        (lambda r: _without(r, "signature"), r"\$ has no 'signature'"),
    ],
)
def test_a_report_not_of_the_format_is_refused_naming_the_place(
    report: dict[str, Any], change: Any, message: str
) -> None:
    with pytest.raises(CreditExchangeError, match=message):
        render_pdf(change(report))


def test_page_one_renders_to_png_with_the_chinese_font_and_no_font_warnings(pdf: bytes) -> None:
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        reason = "pdftoppm is not installed (Debian: apt-get install -y poppler-utils)"
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "report-page1.png"
    target.unlink(missing_ok=True)
    result = subprocess.run(
        [pdftoppm, "-png", "-r", "90", "-f", "1", "-l", "1", "-singlefile", "-", str(target)[:-4]],
        input=pdf,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert not re.search(rb"(?i)font", result.stderr), result.stderr.decode(errors="replace")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
