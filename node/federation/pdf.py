"""The consolidated report as the PDF a credit center hands out.

:func:`render_pdf` turns a report (the JSON object of format
``creditexchange.report/v1``, signed by the issuing node) into an A4 document: the
title, the subject, when and by whom it was issued, the purpose and its legal basis,
the case and the officer; what each member asked answered (or why not); the nine
sections of the national public credit information report as tables; and a
verification block with the report's digest, the issuer's key id and a QR code of
the digest. What this module promises:

* **The PDF carries its own font.** Every character, Chinese or Latin, is set in
  WenQuanYi Micro Hei (its proportional and monospaced faces, Apache-2.0), which
  the ``paperang-p2-fonts-cjk`` package installs from PyPI; the glyphs used are
  embedded as TrueType subsets and no other font is referenced, so a report
  archived for years shows the same on a machine without any Chinese font.
* **The PDF is a rendering; the signed JSON is the record.** The digest shown and
  in the QR code (``creditexchange-report:<hex>``) is the report's
  (``federation.report.report_digest``: SHA-256 of the RFC 8785 canonical form of
  the whole report, signature included); whoever holds the JSON checks it with
  ``credit-node report verify FILE.json`` and compares the digest with the paper.
* **Nothing in a report is read as markup or drawn invisibly.** Names, reasons,
  values and keys come from other members: ``<``, ``&`` and tags print as written,
  and control, format (zero-width, bidirectional) and separator characters print
  escaped (``\\u202e``), so no text can hide or reorder another.
* **Any length fits.** Long texts wrap, Chinese between any two characters; a
  section longer than a page continues on the next under its title repeated; a
  record is kept on one page when it takes less than half of one, and otherwise
  runs on between its rows; one text shows at most 2,000 characters (a few hundred in a
  narrow cell), the rest noted as left to the JSON, so no row outgrows a page.
  Pages are numbered "第 n 页 / 共 m 页".
* **The same report gives the same bytes**, so a PDF can be re-rendered from the
  archived JSON and compared.
* **A report that is not of this format is refused** (a
  :class:`~creditexchange.errors.ReportError`) naming the place
  (``$.members[2].status``) and what was expected; nothing is guessed.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from xml.sax.saxutils import escape

import segno
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    KeepTogether,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from creditexchange.errors import ReportError
from creditexchange.node.federation.report import FORMAT, report_digest
from creditexchange.subjects import subject_type_name

__all__ = ["FONT_PACKAGE", "QR_PREFIX", "qr_payload", "render_pdf"]

QR_PREFIX: Final = "creditexchange-report:"
"""What the QR code holds before the digest's hex."""

FONT_PACKAGE: Final = "paperang_p2_fonts_cjk"
"""The installed package (``pip install paperang-p2-fonts-cjk``) whose font is embedded."""

_FONT_FILE: Final = "fonts/wqy-microhei.ttc"
_SANS: Final = "CreditReportSans"  # WenQuanYi Micro Hei, face 0 of the collection
_MONO: Final = "CreditReportMono"  # WenQuanYi Micro Hei Mono, face 1

# --- words ---------------------------------------------------------------------------

_TITLE_ZH: Final = "公共信用信息报告（跨区域）"
_TITLE_EN: Final = "Public credit information report across the region"

_MEMBER_STATUSES: Final[Mapping[str, tuple[str, str, colors.Color]]] = {
    "own": ("本节点", "own store", colors.HexColor("#1F4E79")),
    "answered": ("已答复", "answered", colors.HexColor("#2E7D32")),
    "denied": ("拒绝", "denied", colors.HexColor("#B71C1C")),
    "unavailable": ("无法连接", "unavailable", colors.HexColor("#B35C00")),
    "timed_out": ("超时", "timed out", colors.HexColor("#B35C00")),
    "skipped": ("暂停询问", "skipped (failing)", colors.HexColor("#616161")),
}

_RECORD_STATUSES: Final[Mapping[str, str]] = {
    "active": "有效 in force",
    "objection": "异议处理中 objection in progress",
    "repaired": "已信用修复 repaired",
    "expired": "已撤下 withdrawn",
}
_OBJECTION: Final = "异议处理中 objection in progress"

_MODES: Final[Mapping[str, str]] = {
    "full": "完整信息 full records",
    "check": "有无核查 hit / no-hit check (records' contents are not shown)",
}

_VERIFY_COMMAND: Final = "credit-node report verify FILE.json"
_VERIFY_LINE: Final = (
    "以本报告的 JSON 文件运行上述命令，离线核验出具机构的签名、各成员签名的答复及其审计回执；"
    "所核验文件的摘要须与本页一致。<br/>Run it on the report's JSON file: it checks offline the "
    "issuer's signature, every member's signed answer and its audit receipt. The digest of the "
    "file verified must match the one printed here."
)

_CLOSING_NOTE: Final = (
    "本报告由出具机构按合作备忘录向各成员发出签名查询、汇集其签名答复生成；各成员的答复原文"
    "及审计回执附于报告的 JSON 文件中。本 PDF 为其可读文本，内容以经核验的 JSON 文件为准。"
    "<br/>The issuing node asked each member under the memorandum and assembled their signed "
    "answers; every answer and its audit receipt are embedded in the report's JSON file. "
    "This PDF is a readable rendering of it: the verified JSON file prevails."
)

# --- colours and sizes ------------------------------------------------------------------

_INK: Final = colors.HexColor("#1A1A1A")
_NAVY: Final = colors.HexColor("#1F3A5F")
_GREY: Final = colors.HexColor("#5F6368")
_RULE: Final = colors.HexColor("#B0B7C3")
_HEAD_BG: Final = colors.HexColor("#E8EDF4")
_LABEL_BG: Final = colors.HexColor("#F3F5F8")
_ALERT: Final = colors.HexColor("#B71C1C")

_MARGIN: Final = 16 * mm
_WIDTH: Final = A4[0] - 2 * _MARGIN
_FRAME_HEIGHT: Final = A4[1] - 33 * mm

# --- the report, read ---------------------------------------------------------------------


def qr_payload(digest: str) -> str:
    """What the report's QR code holds: ``creditexchange-report:<digest hex>``."""
    return QR_PREFIX + digest


def _refuse(where: str, expected: str, found: object) -> ReportError:
    shown = type(found).__name__ if not isinstance(found, str) else repr(found[:40])
    return ReportError(
        f"the report cannot be rendered: {where} should be {expected}, found {shown}; "
        f"render a report object of format {FORMAT} as the issuing node wrote it"
    )


class _Object:
    """A JSON object of the report, read with the place of every value in its errors."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, Mapping):
            raise _refuse(where, "an object", value)
        self.value: Mapping[str, Any] = value
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.value:
            raise ReportError(
                f"the report cannot be rendered: {self.where} has no {key!r}; "
                f"render a report object of format {FORMAT} as the issuing node wrote it"
            )
        return self.value[key]

    def text(self, key: str, *, optional: bool = False) -> str:
        if optional and self.value.get(key) is None:
            return ""
        value = self._get(key)
        if not isinstance(value, str):
            raise _refuse(f"{self.where}.{key}", "a string", value)
        return value

    def number(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _refuse(f"{self.where}.{key}", "a number", value)
        return float(value)

    def flag(self, key: str, *, nullable: bool = False) -> bool | None:
        value = self._get(key)
        if value is None and nullable:
            return None
        if not isinstance(value, bool):
            raise _refuse(f"{self.where}.{key}", "true or false", value)
        return value

    def child(self, key: str) -> _Object:
        return _Object(self._get(key), f"{self.where}.{key}")

    def children(self, key: str) -> list[_Object]:
        value = self._get(key)
        if not isinstance(value, list):
            raise _refuse(f"{self.where}.{key}", "a list", value)
        return [_Object(item, f"{self.where}.{key}[{i}]") for i, item in enumerate(value)]


@dataclass(frozen=True, slots=True)
class _Member:
    member: str
    name: str
    status: str
    reason: str
    elapsed_ms: float
    records: int


def _read_member(m: _Object) -> _Member:
    status = m.text("status")
    if status not in _MEMBER_STATUSES:
        raise _refuse(f"{m.where}.status", "one of " + ", ".join(_MEMBER_STATUSES), status)
    records = m.number("records")
    if records != int(records) or records < 0:
        raise _refuse(f"{m.where}.records", "a whole number of records", records)
    return _Member(
        member=m.text("member"),
        name=m.text("name", optional=True),
        status=status,
        reason=m.text("reason", optional=True),
        elapsed_ms=m.number("elapsed_ms"),
        records=int(records),
    )


# --- text ------------------------------------------------------------------------------

# control, format (zero-width, bidirectional), surrogate, private-use and unassigned
# characters, and line or paragraph separators: shown escaped, never drawn
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _visible(text: str, keep: str = "") -> str:
    """``text`` with every character that would be invisible or reorder others escaped, but
    those in ``keep``."""
    if all(unicodedata.category(c) not in _HIDDEN_CATEGORIES or c in keep for c in text):
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in _HIDDEN_CATEGORIES and c not in keep
        else c
        for c in text
    )


_CELL_CHARS: Final = 300
"""The most characters of one text the PDF shows in a narrow cell; the rest is cut, noted."""

_WIDE_CHARS: Final = 2000
"""The most shown across the page: even in full, a cell stays shorter than a page."""

_LINE_BREAKS: Final = 15
"""The most line breaks of one text kept as such (free text may span lines); further ones
print escaped, so no text of many empty lines outgrows a page."""


def _markup(text: str, limit: int = _CELL_CHARS, *, lines: bool = False) -> str:
    """Text from the report as Paragraph markup that shows it exactly as written, at most
    ``limit`` characters of it (a longer text is cut with a note of how much is left out).
    Every hidden character prints escaped; with ``lines`` (free text: a value, a reason)
    the first line breaks break the line and a tab is a space."""
    if lines:
        text = text.replace("\r\n", "\n").replace("\t", " ")
    shown = _visible(text, keep="\n" if lines else "")
    if len(shown) <= limit:
        return _lines(shown)
    rest = len(shown) - limit
    note = f"…〔另 {rest} 字见报告 JSON 文件 / {rest} more characters in the report's JSON file〕"
    return _lines(shown[:limit]) + _grey(note, 7)


def _lines(shown: str) -> str:
    lines = escape(shown).split("\n", _LINE_BREAKS)
    lines[-1] = lines[-1].replace("\n", "\\n")
    return "<br/>".join(lines)


@dataclass(frozen=True, slots=True)
class _Styles:
    title: ParagraphStyle
    subtitle: ParagraphStyle
    heading: ParagraphStyle
    body: ParagraphStyle
    small: ParagraphStyle
    label: ParagraphStyle
    cell: ParagraphStyle
    cell_head: ParagraphStyle
    cell_title: ParagraphStyle
    band: ParagraphStyle
    empty: ParagraphStyle
    mono: ParagraphStyle
    command: ParagraphStyle
    note: ParagraphStyle


def _styles() -> _Styles:
    def style(name: str, size: float, **kw: Any) -> ParagraphStyle:
        kw.setdefault("fontName", _SANS)
        kw.setdefault("textColor", _INK)
        return ParagraphStyle(name, fontSize=size, leading=size * 1.4, wordWrap="CJK", **kw)

    return _Styles(
        title=style("title", 19, alignment=TA_CENTER, textColor=_NAVY, spaceAfter=3),
        subtitle=style("subtitle", 10.5, alignment=TA_CENTER, textColor=_GREY),
        heading=style("heading", 12, textColor=_NAVY, spaceBefore=8, spaceAfter=4, keepWithNext=1),
        body=style("body", 9),
        small=style("small", 7.5, textColor=_GREY),
        label=style("label", 8.5, textColor=_GREY),
        cell=style("cell", 8.5),
        cell_head=style("cell_head", 8, textColor=_NAVY),
        cell_title=style("cell_title", 9, textColor=_NAVY),
        band=style("band", 9.5, textColor=colors.white),
        empty=style("empty", 9, textColor=_NAVY),
        mono=style("mono", 8.5, fontName=_MONO),
        command=style("command", 9.5, fontName=_MONO, textColor=_NAVY, spaceAfter=2),
        note=style("note", 7.5, textColor=_GREY, spaceBefore=8),
    )


def _p(text: str, style: ParagraphStyle, limit: int = _CELL_CHARS) -> Paragraph:
    """A paragraph of report free text: escaped, never read as markup; lines kept."""
    return Paragraph(_markup(text, limit, lines=True), style)


def _pm(markup: str, style: ParagraphStyle) -> Paragraph:
    """A paragraph of this module's own markup (its fixed words around escaped values)."""
    return Paragraph(markup, style)


def _bilingual(zh: str, en: str, style: ParagraphStyle) -> Paragraph:
    return _pm(f"{zh}<br/><font size={style.fontSize - 1.5} color='#5F6368'>{en}</font>", style)


def _grey(text: str, size: float = 7.5) -> str:
    return f"<font size={size} color='#5F6368'>{_markup(text)}</font>"


# --- the font -------------------------------------------------------------------------------


@functools.cache
def _register_fonts() -> None:
    """Register the embedded faces with reportlab, once per process."""
    try:
        collection = resources.files(FONT_PACKAGE).joinpath(_FONT_FILE)
        with resources.as_file(collection) as path:
            pdfmetrics.registerFont(TTFont(_SANS, str(path), subfontIndex=0))
            pdfmetrics.registerFont(TTFont(_MONO, str(path), subfontIndex=1))
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ReportError(
            f"the report's Chinese font is not installed ({exc}): the PDF embeds WenQuanYi "
            "Micro Hei from the package paperang-p2-fonts-cjk; install the project with "
            "`pip install -e .` (or `pip install paperang-p2-fonts-cjk`)"
        ) from exc


# --- pages ------------------------------------------------------------------------------------


class _NumberedCanvas(Canvas):
    """Holds every page back until the last, then stamps each with 第 n 页 / 共 m 页."""

    def __init__(self, *args: Any, footer: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._footer = footer
        self._held: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._held.append(dict(self.__dict__))
        self._startPage()  # type: ignore[attr-defined]  # reportlab's page-x-of-y recipe

    def save(self) -> None:
        total = len(self._held)
        for number, state in enumerate(self._held, start=1):
            self.__dict__.update(state)
            self._stamp(number, total)
            super().showPage()
        super().save()

    def _stamp(self, number: int, total: int) -> None:
        self.saveState()
        self.setStrokeColor(_RULE)
        self.setLineWidth(0.5)
        self.line(_MARGIN, 12 * mm, A4[0] - _MARGIN, 12 * mm)
        self.setFillColor(_GREY)
        self.setFont(_SANS, 7.5)
        self.drawString(_MARGIN, 8 * mm, self._footer)
        self.drawRightString(
            A4[0] - _MARGIN, 8 * mm, f"第 {number} 页 / 共 {total} 页   Page {number} of {total}"
        )
        self.restoreState()


def _fitted(text: str, width: float, size: float) -> str:
    """``text`` cut with "…" to fit ``width`` points in one line."""
    if pdfmetrics.stringWidth(text, _SANS, size) <= width:
        return text
    while text and pdfmetrics.stringWidth(text + "…", _SANS, size) > width:
        text = text[:-1]
    return text + "…"


def _running_header(subject_line: str) -> Callable[[Canvas, BaseDocTemplate], None]:
    """The title and the subject atop every page but the first."""
    title = f"{_TITLE_ZH}  {_TITLE_EN}"
    room = _WIDTH - pdfmetrics.stringWidth(title, _SANS, 7.5) - 12
    subject_line = _fitted(subject_line, room, 7.5)

    def draw(canvas: Canvas, doc: BaseDocTemplate) -> None:
        if doc.page == 1:
            return
        canvas.saveState()
        canvas.setFillColor(_GREY)
        canvas.setFont(_SANS, 7.5)
        canvas.drawString(_MARGIN, A4[1] - 10 * mm, title)
        canvas.drawRightString(A4[0] - _MARGIN, A4[1] - 10 * mm, subject_line)
        canvas.setStrokeColor(_RULE)
        canvas.setLineWidth(0.5)
        canvas.line(_MARGIN, A4[1] - 12 * mm, A4[0] - _MARGIN, A4[1] - 12 * mm)
        canvas.restoreState()

    return draw


# --- the QR code -----------------------------------------------------------------------------


class _QrCode(Flowable):
    """A QR code drawn as vector squares (crisp at any zoom), with its quiet zone."""

    def __init__(self, payload: str, size: float) -> None:
        super().__init__()
        self.code = segno.make(payload, error="m", micro=False)
        self.size = size

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        return self.size, self.size

    def draw(self) -> None:
        matrix = [list(row) for row in self.code.matrix]
        modules = len(matrix) + 8  # four light modules on each side
        unit = self.size / modules
        canvas = self.canv
        canvas.setFillColor(colors.black)
        canvas.setStrokeColor(colors.black)
        for y, row in enumerate(matrix):
            x = 0
            while x < len(row):  # one rectangle per run of dark modules
                if not row[x]:
                    x += 1
                    continue
                start = x
                while x < len(row) and row[x]:
                    x += 1
                canvas.rect(
                    (start + 4) * unit,
                    self.size - (y + 5) * unit,
                    (x - start) * unit,
                    unit,
                    stroke=0,
                    fill=1,
                )


# --- the document --------------------------------------------------------------------------


def render_pdf(report: Mapping[str, Any]) -> bytes:
    """The report as an A4 PDF with its Chinese font embedded; see the module docstring."""
    _register_fonts()
    root = _Object(report, "$")
    if root.text("format") != FORMAT:
        raise _refuse("$.format", repr(FORMAT), root.text("format"))
    digest = report_digest(report)
    s = _styles()
    members = [_read_member(m) for m in root.children("members")]
    names = {m.member: m.name for m in members}
    subject = root.child("subject")
    request = root.child("request")
    mode = request.text("mode")
    if mode not in _MODES:
        raise _refuse("$.request.mode", "full or check", mode)

    story: list[Flowable] = [
        _pm(_TITLE_ZH, s.title),
        _pm(_TITLE_EN, s.subtitle),
        _pm(
            f"报告编号 Report No. <font name={_MONO}>{_markup(root.text('report_id'))}</font>",
            s.subtitle,
        ),
        Spacer(1, 5 * mm),
        *_details(root, subject, request, names, s),
        _pm("一、各成员答复情况 Members asked", s.heading),
        _members_table(members, s),
        Spacer(1, 1.5 * mm),
        _pm(_members_summary(members), s.small),
        _pm("二、公共信用信息 Public credit information", s.heading),
    ]
    for number, section in enumerate(root.children("sections"), start=1):
        story += [_section_table(number, section, names, s), Spacer(1, 3 * mm)]
    story += [
        _pm("三、核验 Verification", s.heading),
        KeepTogether(_verification(root, digest, s)),
        _pm(_CLOSING_NOTE, s.note),
    ]

    out = io.BytesIO()
    doc = BaseDocTemplate(
        out,
        pagesize=A4,
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=16 * mm,
        bottomMargin=17 * mm,
        title=f"{_TITLE_ZH} {root.text('report_id')}",
        author=_visible(names.get(root.text("issuer")) or root.text("issuer")),
        subject=_TITLE_EN,
        creator="credit-exchange",
        lang="zh-CN",
        invariant=1,
        initialFontName=_SANS,
        initialFontSize=9,
    )
    frame = Frame(_MARGIN, 17 * mm, _WIDTH, _FRAME_HEIGHT, id="body", showBoundary=0)
    subject_line = _visible(f"{subject.text('id')[:40]}  {subject.text('name')[:200]}")
    doc.addPageTemplates(
        [PageTemplate(id="page", frames=[frame], onPage=_running_header(subject_line))]
    )
    footer = _visible(
        f"报告编号 Report No. {root.text('report_id')[:40]}   摘要 digest {digest[:16]}…"
    )
    doc.build(story, canvasmaker=functools.partial(_NumberedCanvas, footer=footer))
    return out.getvalue()


def _shown_time(issued_at: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(issued_at)
    except ValueError as exc:
        raise _refuse("$.issued_at", "an ISO 8601 time", issued_at) from exc
    if moment.utcoffset() is None:
        raise _refuse("$.issued_at", "a time with its UTC offset", issued_at)
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M:%S} (UTC{offset[:3]}:{offset[3:]})"


def _member_name(member: str, names: Mapping[str, str]) -> str:
    name = names.get(member, "")
    return f"{_markup(name)} {_grey(member)}" if name else _markup(member)


def _details(
    root: _Object, subject: _Object, request: _Object, names: Mapping[str, str], s: _Styles
) -> list[Flowable]:
    subject_type = subject.text("type")
    memorandum = root.child("memorandum")
    version = f"{memorandum.number('version'):g}"
    Cell = tuple[str, str, str]  # Chinese label, English label, value markup
    rows: list[tuple[Cell] | tuple[Cell, Cell]] = [
        (("信用主体", "Subject", f"<font size=11>{_markup(subject.text('name'))}</font>"),),
        (
            ("主体标识", "Identifier", f"<font name={_MONO}>{_markup(subject.text('id'))}</font>"),
            ("主体类型", "Subject type", _markup(subject_type_name(subject_type))),
        ),
        (
            ("出具时间", "Issued at", _markup(_shown_time(root.text("issued_at")))),
            ("出具机构", "Issued by", _member_name(root.text("issuer"), names)),
        ),
        (
            (
                "查询用途",
                "Purpose",
                f"{_markup(request.text('purpose_name'), _WIDE_CHARS)} "
                f"{_grey(request.text('purpose'))}",
            ),
        ),
        (("法律依据", "Legal basis", _markup(request.text("legal_basis"), _WIDE_CHARS)),),
        (
            ("案件编号", "Case reference", _markup(request.text("case_reference"))),
            ("经办人", "Officer", _markup(request.text("officer"))),
        ),
        (
            ("查询方式", "Mode", _markup(_MODES[request.text("mode")])),
            ("答复时限", "Deadline", f"{root.number('deadline_s'):g} 秒 s"),
        ),
        (
            (
                "合作备忘录",
                "Memorandum",
                f"{_markup(root.text('federation'))} · 第 {version} 版 version {version} · "
                f"<font name={_MONO} size=7.5>sha-256 {_markup(memorandum.text('hash')[:16])}…"
                "</font>",
            ),
        ),
    ]
    data: list[list[Flowable | str]] = []
    style: list[tuple[Any, ...]] = [*_grid(), ("BACKGROUND", (0, 0), (0, -1), _LABEL_BG)]
    for i, row in enumerate(rows):
        cells: list[Flowable | str] = []
        for zh, en, value in row:
            cells += [_bilingual(zh, en, s.label), _pm(value, s.cell)]
        if len(row) == 1:
            cells += ["", ""]
            style.append(("SPAN", (1, i), (3, i)))
        else:
            style.append(("BACKGROUND", (2, i), (2, i), _LABEL_BG))
        data.append(cells)
    table = Table(data, colWidths=_FOUR_COLUMNS)
    table.setStyle(TableStyle(style))
    return [table]


_LABEL_WIDTH: Final = 26 * mm
_FOUR_COLUMNS: Final = [_LABEL_WIDTH, _WIDTH / 2 - _LABEL_WIDTH] * 2


def _grid() -> list[tuple[Any, ...]]:
    return [
        ("FONT", (0, 0), (-1, -1), _SANS, 8.5),
        ("GRID", (0, 0), (-1, -1), 0.4, _RULE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]


def _head(cells: Sequence[tuple[str, str]], s: _Styles) -> list[Flowable]:
    return [_bilingual(zh, en, s.cell_head) for zh, en in cells]


def _shown_elapsed(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _members_table(members: Sequence[_Member], s: _Styles) -> Table:
    rows: list[list[Flowable]] = [
        _head(
            [
                ("成员", "Member"),
                ("状态", "Status"),
                ("记录", "Records"),
                ("用时", "Time"),
                ("说明", "Reason"),
            ],
            s,
        )
    ]
    for m in members:
        zh, en, colour = _MEMBER_STATUSES[m.status]
        rows.append(
            [
                _pm(_member_name(m.member, {m.member: m.name}), s.cell),
                _pm(f"<font color='{colour.hexval()}'>{zh} {en}</font>", s.cell),
                _pm(str(m.records), s.cell),
                _pm(_shown_elapsed(m.elapsed_ms), s.cell),
                _p(m.reason or "—", s.cell, limit=600),
            ]
        )
    widths = [42 * mm, 30 * mm, 13 * mm, 15 * mm]
    table = Table(rows, colWidths=[*widths, _WIDTH - sum(widths)], repeatRows=1)
    table.setStyle(TableStyle([*_grid(), ("BACKGROUND", (0, 0), (-1, 0), _HEAD_BG)]))
    return table


def _members_summary(members: Sequence[_Member]) -> str:
    asked = [m for m in members if m.status != "own"]
    answered = sum(1 for m in asked if m.status == "answered")
    records = sum(m.records for m in members)
    missing = len(asked) - answered
    zh = f"共询问 {len(asked)} 个成员，{answered} 个答复"
    en = f"{len(asked)} member(s) asked, {answered} answered"
    if missing:
        zh += f"，{missing} 个未答复（其信息不在本报告中）"
        en += f"; {missing} did not answer (their information is not in this report)"
    return f"{zh}；共 {records} 条记录。<br/>{en}; {records} record(s) in all."


def _section_table(number: int, section: _Object, names: Mapping[str, str], s: _Styles) -> Table:
    """A section as one table under its title: a section of hit / no-hit lines (check mode,
    or an individual) as one row per line; any other as a block of rows per record."""
    records = section.children("records")
    title = f"{number}. {_markup(section.text('title_zh'))}  {_markup(section.text('title_en'))}"
    if not records:
        table = Table(
            [[_pm(f"{title}　<font color='#5F6368'>无记录 No records</font>", s.empty)]],
            colWidths=[_WIDTH],
        )
        table.setStyle(TableStyle([*_grid(), ("BACKGROUND", (0, 0), (-1, -1), _LABEL_BG)]))
        return table
    count = f"<font size=8>　（{len(records)} 条 record{'s' if len(records) != 1 else ''}）</font>"
    band: list[Flowable | str] = [_pm(title + count, s.band), "", "", ""]
    rows: list[list[Flowable | str]] = [band]
    style: list[tuple[Any, ...]] = [
        *_grid(),
        ("SPAN", (0, 0), (-1, 0)),
        ("BACKGROUND", (0, 0), (-1, 0), _NAVY),
    ]
    hits = [record.flag("hit", nullable=True) for record in records]
    if all(hit is not None for hit in hits):
        head = [
            ("信息类别", "Theme"),
            ("来源", "Source"),
            ("结果", "Result"),
            ("异议", "Objection"),
        ]
        rows.append(list(_head(head, s)))
        style.append(("BACKGROUND", (0, 1), (-1, 1), _HEAD_BG))
        for record in records:
            rows.append(
                [
                    _pm(_theme(record, "<br/>"), s.cell),
                    _pm(_source(record, names), s.cell),
                    _pm(_result(record), s.cell),
                    _pm(_objection(record) or "—", s.cell),
                ]
            )
        widths = [50 * mm, 68 * mm, 28 * mm]
        table = Table(rows, colWidths=[*widths, _WIDTH - sum(widths)], repeatRows=2)
    else:
        for record, hit in zip(records, hits, strict=True):
            if hit is None:
                _record_rows(record, names, s, rows, style)
            else:
                _line_rows(record, names, s, rows, style)
        table = Table(rows, colWidths=_FOUR_COLUMNS, repeatRows=1)
    table.setStyle(TableStyle(style))
    return table


def _theme(record: _Object, between: str = "　") -> str:
    return f"{_markup(record.text('theme_name'))}{between}{_grey(record.text('theme'))}"


def _source(record: _Object, names: Mapping[str, str]) -> str:
    member = record.text("member")
    shown = _markup(names.get(member) or member)
    origin = record.text("synced_from", optional=True)
    if origin:  # the issuer's copy of the origin's feed: the origin's data
        shown = f"{_markup(names.get(origin) or origin)}（{shown}同步副本）"
    department = record.text("source_department")
    return f"{shown} · {_markup(department)}" if department else shown


def _objection(record: _Object) -> str:
    """The objection mark in red, or "" for a record not under objection."""
    if record.flag("under_objection") or record.text("status") == "objection":
        return f"<font color='{_ALERT.hexval()}'>{_OBJECTION}</font>"
    return ""


def _status(record: _Object) -> str:
    code = record.text("status")
    mark = _objection(record)
    if code == "objection" or not code:
        return mark or "—"
    shown = _markup(_RECORD_STATUSES.get(code, code))
    return f"{shown}<br/>{mark}" if mark else shown


def _result(record: _Object) -> str:
    if record.flag("hit", nullable=True):
        return f"<font color='{_ALERT.hexval()}'>命中 hit</font>"
    return "未命中 no hit"


def _line_rows(
    record: _Object,
    names: Mapping[str, str],
    s: _Styles,
    rows: list[list[Flowable | str]],
    style: list[tuple[Any, ...]],
) -> None:
    """A hit / no-hit line among full records: its theme and result, then its source."""
    first = len(rows)
    result = _result(record) + (f"<br/>{mark}" if (mark := _objection(record)) else "")
    rows += [
        [_pm(_theme(record), s.cell_title), "", "", _pm(result, s.cell)],
        [_bilingual("来源", "Source", s.label), _pm(_source(record, names), s.cell), "", ""],
    ]
    style += [
        ("SPAN", (0, first), (2, first)),
        ("SPAN", (1, first + 1), (3, first + 1)),
        ("BACKGROUND", (0, first), (-1, first), _HEAD_BG),
        ("BACKGROUND", (0, first + 1), (0, first + 1), _LABEL_BG),
        ("LINEABOVE", (0, first), (-1, first), 0.8, _NAVY),
        ("NOSPLIT", (0, first), (-1, first + 1)),
    ]


def _record_rows(
    record: _Object,
    names: Mapping[str, str],
    s: _Styles,
    rows: list[list[Flowable | str]],
    style: list[tuple[Any, ...]],
) -> None:
    """A record as rows of the section's four columns: its title and status, its source and
    dates, then its fields, two short ones side by side, a long one across. A record that
    fits in half a page is kept on one page; a longer one may split anywhere."""
    label, value = _FOUR_COLUMNS[:2]
    across = _WIDTH - label  # a value spanning the three columns after its label
    title = _pm(
        f"{_markup(record.text('theme_name'))}　{_markup(record.text('record_key'))}"
        f"　{_grey(record.text('theme'))}",
        s.cell_title,
    )
    dates = "<br/>".join(
        f"{zh} {_grey(en)} {_markup(when)}"
        for key, zh, en in (
            ("decision_date", "决定", "decided"),
            ("valid_until", "有效至", "valid until"),
            ("publicity_end", "公示至", "public until"),
        )
        if (when := record.text(key, optional=True))
    )
    # each row: its cells, and the width each non-empty cell is set in
    laid: list[tuple[list[Flowable | str], list[float]]] = [
        ([title, "", "", _pm(_status(record), s.cell)], [_WIDTH - value, 0, 0, value]),
        (
            [
                _bilingual("来源", "Source", s.label),
                _pm(_source(record, names), s.cell),
                _bilingual("日期", "Dates", s.label),
                _pm(dates or "—", s.cell),
            ],
            list(_FOUR_COLUMNS),
        ),
    ]
    first = len(rows)
    style += [
        ("SPAN", (0, first), (2, first)),
        ("BACKGROUND", (0, first), (-1, first), _HEAD_BG),
        ("LINEABOVE", (0, first), (-1, first), 0.8, _NAVY),
    ]
    cells = [_field_cells(field, s) for field in record.children("fields")]
    i = 0
    while i < len(cells):
        name, shown, short = cells[i]
        if short and i + 1 < len(cells) and cells[i + 1][2]:
            style.append(("BACKGROUND", (2, first + len(laid)), (2, first + len(laid)), _LABEL_BG))
            laid.append(([name, shown, cells[i + 1][0], cells[i + 1][1]], list(_FOUR_COLUMNS)))
            i += 2
        else:
            style.append(("SPAN", (1, first + len(laid)), (3, first + len(laid))))
            laid.append(([name, shown, "", ""], [label, across, 0, 0]))
            i += 1
    rows += [row for row, _ in laid]
    last = len(rows) - 1
    style += [
        ("BACKGROUND", (0, first + 1), (0, last), _LABEL_BG),
        ("BACKGROUND", (2, first + 1), (2, first + 1), _LABEL_BG),  # the dates' label
    ]
    if sum(_row_height(*row) for row in laid) < _FRAME_HEIGHT / 2:
        style.append(("NOSPLIT", (0, first), (-1, last)))


def _row_height(cells: Sequence[Flowable | str], widths: Sequence[float]) -> float:
    """How tall a row of the table is, its cells set in the widths given, padding included."""
    tallest = max(
        (
            c.wrap(w - 8, _FRAME_HEIGHT)[1]
            for c, w in zip(cells, widths, strict=True)
            if isinstance(c, Flowable)
        ),
        default=0.0,
    )
    return tallest + 6


_MASKED: Final = f" <font size=7 color='{_ALERT.hexval()}'>〔已遮蔽 masked〕</font>"


def _field_cells(field: _Object, s: _Styles) -> tuple[Paragraph, Paragraph, bool]:
    """A field's label and value cells, and whether both fit one line of a half row."""
    label = field.text("label") or field.text("name")
    value = field.text("value")
    unit = field.text("unit", optional=True)
    shown = value + (f" {unit}" if unit and unit not in label else "")
    masked = field.flag("masked")
    room = _WIDTH / 2 - _LABEL_WIDTH - 8
    width = pdfmetrics.stringWidth(_visible(shown), _SANS, s.cell.fontSize)
    if masked:
        width += pdfmetrics.stringWidth(" 〔已遮蔽 masked〕", _SANS, 7)
    short = width <= room
    value_markup = _markup(shown, _WIDE_CHARS, lines=True) + (_MASKED if masked else "")
    return _pm(_markup(label), s.label), _pm(value_markup, s.cell), short


def _verification(root: _Object, digest: str, s: _Styles) -> list[Flowable]:
    signature = root.child("signature")
    memorandum = root.child("memorandum")
    mono = f"<font name={_MONO}>"
    text: list[Flowable] = [
        _bilingual("报告摘要", "Report digest (SHA-256 of the signed JSON, RFC 8785)", s.label),
        _pm(f"{mono}{digest[:32]}<br/>{digest[32:]}</font>", s.mono),
        Spacer(1, 2 * mm),
        _bilingual("出具机构签名密钥", "Issuer's signing key id", s.label),
        _pm(f"{mono}{_markup(signature.text('key_id'))}</font>", s.mono),
        Spacer(1, 2 * mm),
        _bilingual("合作备忘录摘要", "Memorandum hash", s.label),
        _pm(f"{mono}{_markup(memorandum.text('hash'))}</font>", s.mono),
        Spacer(1, 2 * mm),
        _bilingual("核验方法", "How to verify", s.label),
        _pm(f"{mono}{_VERIFY_COMMAND}</font>", s.command),
        _pm(_VERIFY_LINE, s.body),
    ]
    qr_size = 40 * mm
    qr: list[Flowable] = [
        _QrCode(qr_payload(digest), qr_size),
        _pm("扫码读取报告摘要<br/>Scan for the digest", _centered(s.small)),
    ]
    table = Table([[text, qr]], colWidths=[_WIDTH - qr_size - 10 * mm, qr_size + 10 * mm])
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), _SANS, 8.5),
                ("BOX", (0, 0), (-1, -1), 0.8, _NAVY),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("ALIGN", (1, 0), (1, 0), "CENTER"),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 6),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
            ]
        )
    )
    return [table]


def _centered(style: ParagraphStyle) -> ParagraphStyle:
    return ParagraphStyle(style.name + "-centered", parent=style, alignment=TA_CENTER)
