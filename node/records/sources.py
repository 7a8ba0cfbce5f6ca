"""Reading a department's file: opening it safely, its encoding, its header and its rows.

* **Only the file named, and only a regular file.** The file is opened once with
  ``O_NOFOLLOW`` and checked on the opened descriptor (``fstat``, no race between
  a check and the open): a symbolic link is refused unless ``follow_symlinks``
  (and then its target must be a regular file), and so are folders, devices,
  sockets and named pipes, without waiting on a pipe. Every later open of the
  file (a validating worker's) must find the very same file.
* **No error shows more of the file than an excerpt.** Column names, cells, keys
  and sheet names appear in messages and reject reasons only as
  :func:`~creditexchange.errors.excerpt` shows them.
* **It decodes, or nothing is read.** :func:`scan_file` reads the whole file once
  before anything is written: its SHA-256, and proof a text file decodes in the
  declared encoding (a GBK file read as UTF-8, or a UTF-8 file declared as GBK, is
  refused with the line and what to pass instead). A workbook is checked when
  :func:`open_table` opens it: a file that is not one is refused whole.
* **The header is the department's, the names are the catalog's.** A header names
  catalog fields of the theme by code or Chinese name, and the subject block by the
  names of the national 双公示 standard (:data:`SUBJECT_HEADER_NAMES`); full-width
  brackets and blanks do not matter. An unknown, repeated or missing column refuses
  the file. A 双公示 file gives the subject's identifier in two columns, the unified
  social credit code and the identity number, one of them filled; a file without a
  ``record_key`` column takes the key from the theme's ``record_key_field``.
* **Rows as the department wrote them.** Each row comes out as its cells by field
  name, or as the problems that kept it from being read (a CSV row the reader cannot
  parse, a cell holding a NUL character, a JSON line that is not an object, two
  different identifiers). A worksheet's header is its first row with a value, and
  its cells come out as the text a CSV would hold: numbers without a spurious
  ``.0`` or an exponent, dates as ``YYYY-MM-DD``; line numbers are its row numbers.
* **A pass never disturbs another.** Every pass over a file (:meth:`Table.rows`,
  :meth:`Table.keys`, :meth:`Table.raw_rows`) starts at its beginning and reads at
  its own position; a table never closes the file it was given.
* **Rejected rows go back as they came.** :func:`write_rejected_rows` writes them in
  the file's own format, encoding and header, cell for cell, to a file only the
  operator can read, so that the department can correct and resend just those.
"""

from __future__ import annotations

import abc
import codecs
import csv
import datetime as dt
import errno
import hashlib
import io
import os
import stat
import unicodedata
import warnings
import zipfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, Protocol

import orjson

from creditexchange.errors import ImportFileError, excerpt
from creditexchange.node.catalog import Theme
from creditexchange.node.records.validation import SUBJECT_COLUMNS, Problem, cell_text

__all__ = [
    "FORMATS",
    "IGNORED_HEADER_NAMES",
    "SUBJECT_HEADER_NAMES",
    "FileIdentity",
    "Row",
    "Table",
    "file_format",
    "file_identity",
    "open_private_file",
    "open_regular_file",
    "open_table",
    "python_encoding",
    "read_header",
    "scan_file",
    "write_rejected_rows",
]

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xlsx": "xlsx"}
_SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "xlsx": ".xlsx"}
_UTF8 = frozenset({"utf-8", "utf8", "utf-8-sig", "utf_8", "u8"})
_READ_BLOCK = 1 << 20
_PASS_BUFFER = 1 << 16


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        old_excel = path.suffix.lower() in (".xls", ".et")
        raise ImportFileError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            + (
                "an old Excel (.xls) workbook is not read: save it as .xlsx (Excel workbook) "
                "and import that"
                if old_excel
                else "name the file .csv (header row of field names), .jsonl (one JSON object "
                "a line) or .xlsx (Excel workbook, header row first)"
            )
        ) from None


def python_encoding(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ImportFileError(
            f"unknown encoding {encoding!r}: use utf-8 (the default), gbk or gb18030"
        ) from None
    # A byte-order mark at the start of a UTF-8 file is dropped, never stored.
    return "utf-8-sig" if name in _UTF8 else name


_NOT_REGULAR = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_SAVE_AS = "save the department's data as a .csv, .jsonl or .xlsx file and import that"

FileIdentity = tuple[int, int]
"""A file's (device, inode): which file an open descriptor is."""


def open_regular_file(
    path: Path, *, follow_symlinks: bool = False, identity: FileIdentity | None = None
) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file, as decided on the opened descriptor.

    A symbolic link is refused (``O_NOFOLLOW``) unless ``follow_symlinks``; its target
    must still be a regular file. ``O_NONBLOCK`` keeps the open of a named pipe from
    waiting for a writer, ``O_NOCTTY`` a terminal from becoming this process's. With
    ``identity``, the file must be that very file (not one put in its place since).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and path.is_symlink():
            raise ImportFileError(
                f"{path} is a symbolic link; import reads regular files only, so that a link "
                "cannot make it read another file (a key, say) into the store or an error. "
                "Import the file it points to by that file's own name, or pass "
                "--follow-symlinks if you trust the link. Nothing was imported."
            ) from None
        if exc.errno == errno.ENXIO:
            raise ImportFileError(
                f"{path} is a socket, not a regular file; import reads regular files only: "
                f"{_SAVE_AS}. Nothing was imported."
            ) from None
        raise ImportFileError(
            f"cannot read {path}: {exc.strerror}. Nothing was imported."
        ) from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            kind = next((name for test, name in _NOT_REGULAR if test(status.st_mode)), None)
            raise ImportFileError(
                f"{path} is {kind + ', not a regular file' if kind else 'not a regular file'}"
                f"{' (the target of a symbolic link)' if path.is_symlink() else ''}; import "
                f"reads regular files only: {_SAVE_AS}. Nothing was imported."
            )
        if identity is not None and (status.st_dev, status.st_ino) != identity:
            raise ImportFileError(
                f"{path} was replaced by another file while it was being imported; the chunks "
                "written so far are complete: import the file again once it stays in place"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_identity(file: BinaryIO) -> FileIdentity:
    status = os.fstat(file.fileno())
    return status.st_dev, status.st_ino


def scan_file(file: BinaryIO, path: Path, encoding: str, fmt: str = "csv") -> tuple[str, int]:
    """Read the whole file once: its SHA-256 and size, and proof that a text file decodes.

    Raises ImportFileError naming the line of the first byte that does not decode,
    or saying the file is really UTF-8 when another encoding was declared. A workbook
    (``fmt`` ``xlsx``) is binary: only its digest and size are taken here.
    """
    if fmt == "xlsx":
        digest = hashlib.sha256()
        size = 0
        try:
            file.seek(0)
            while block := file.read(_READ_BLOCK):
                digest.update(block)
                size += len(block)
        except OSError as exc:
            raise ImportFileError(f"cannot read {path}: {exc.strerror}") from None
        return digest.hexdigest(), size
    return _scan_text(file, path, encoding)


def _scan_text(file: BinaryIO, path: Path, encoding: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    as_utf8 = None if encoding == "utf-8-sig" else codecs.getincrementaldecoder("utf-8")()
    utf8_ok, non_ascii = True, False
    size, newlines = 0, 0
    try:
        file.seek(0)
        while block := file.read(_READ_BLOCK):
            digest.update(block)
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                line = newlines + block.count(b"\n", 0, exc.start) + 1
                if encoding == "utf-8-sig":
                    hint = "the department probably saved it as GBK: pass --encoding gbk"
                elif _is_utf8(file):
                    hint = "the file is UTF-8, not " + encoding + ": import it without --encoding"
                else:
                    hint = "check the --encoding you passed (gbk, gb18030, utf-8)"
                raise ImportFileError(
                    f"{path}: line {line} (byte {size + exc.start}) is not valid "
                    f"{encoding.removesuffix('-sig')}; {hint}. Nothing was imported."
                ) from None
            if as_utf8 is not None and utf8_ok:
                non_ascii = non_ascii or not block.isascii()
                try:
                    as_utf8.decode(block)
                except UnicodeDecodeError:
                    utf8_ok = False
            size += len(block)
            newlines += block.count(b"\n")
        decoder.decode(b"", final=True)
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ImportFileError(
            f"{path}: the file ends in the middle of a character; it is truncated or "
            f"not {encoding}. Nothing was imported."
        ) from None
    if as_utf8 is not None and utf8_ok and non_ascii:
        raise ImportFileError(
            f"{path}: the file is UTF-8, not {encoding}; reading it as {encoding} would "
            "store garbled text. Import it without --encoding. Nothing was imported."
        )
    return digest.hexdigest(), size


def _is_utf8(file: BinaryIO) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    file.seek(0)
    try:
        while block := file.read(_READ_BLOCK):
            decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


# --- the header -----------------------------------------------------------------------

_USCC_COLUMN = "subject_uscc"
_ID_NUMBER_COLUMN = "subject_id_number"

SUBJECT_HEADER_NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    "subject_name": ("行政相对人名称", "相对人名称", "主体名称", "当事人名称"),
    "subject_type": ("行政相对人类别", "行政相对人类型", "相对人类别", "主体类别"),
    "record_key": ("记录编号",),
    # The subject's identifier, as a 双公示 file gives it: an organisation's code in
    # one column, a natural person's identity number in another, one of them filled.
    _USCC_COLUMN: (
        "统一社会信用代码",
        "行政相对人代码_1(统一社会信用代码)",
        "行政相对人代码_1",
        "行政相对人统一社会信用代码",
    ),
    _ID_NUMBER_COLUMN: ("证件号码", "身份证号码", "身份证号", "公民身份号码", "行政相对人证件号码"),
}
"""Header names of the subject block besides its codes (``subject_id`` …), as the
national 双公示 standard and departments' exports write them."""


_LEGACY_CODES = {
    2: "工商注册号",
    3: "组织机构代码",
    4: "税务登记号",
    5: "事业单位证书号",
    6: "社会组织登记证号",
}
IGNORED_HEADER_NAMES: Final = (
    *(f"行政相对人代码_{n}({name})" for n, name in _LEGACY_CODES.items()),
    *(f"行政相对人代码_{n}" for n in _LEGACY_CODES),
    *_LEGACY_CODES.values(),
    "证件类型",
    "行政相对人证件类型",
)
"""Columns of the 双公示 standard read and left aside: the registration numbers the
unified social credit code replaced (its 行政相对人代码_2 to _6), and the document
type of a natural person's number (a subject is identified by a resident identity
number; another document fails that check with a clear reason)."""
_IGNORED = "(ignored) "


def _spelling(name: str) -> str:
    """A header name as it is compared: full-width forms folded (（） to ()), blanks
    anywhere removed, Latin letters in lower case."""
    return "".join(unicodedata.normalize("NFKC", name).split()).lower()


def _header_names(theme: Theme) -> dict[str, str]:
    """Every accepted spelling of a column name -> the name rows are keyed by. A theme's
    own field (by code or Chinese name) wins over a subject block name spelled alike."""
    known: dict[str, str] = {_spelling(name): _IGNORED + name for name in IGNORED_HEADER_NAMES}
    for name, aliases in SUBJECT_HEADER_NAMES.items():
        known.update({_spelling(alias): name for alias in aliases})
    known.update({name: name for name in SUBJECT_COLUMNS})
    for f in theme.fields:
        known[_spelling(f.name)] = f.name
        known[_spelling(f.name_zh)] = f.name
    return known


@dataclass(frozen=True)
class _Layout:
    """What a checked header says: the name of each of its columns and where the record
    key and the subject's identifier come from."""

    columns: list[str]
    key_index: int  # the column holding the record key
    key_field: str | None  # the field copied to record_key (no record_key column)
    uscc_index: int | None  # the 双公示 identifier columns, when the file has them
    id_number_index: int | None

    width: int = field(init=False)  # read for every row: plain attributes
    split_id: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", len(self.columns))
        split = self.uscc_index is not None or self.id_number_index is not None
        object.__setattr__(self, "split_id", split)


def _fields_list(theme: Theme) -> str:
    return f"{', '.join(SUBJECT_COLUMNS)}, {', '.join(f.name for f in theme.fields)}"


def _layout(theme: Theme, header: Sequence[str], path: Path) -> _Layout:
    """Check a header against the theme; ImportFileError says what is wrong with it."""
    known = _header_names(theme)
    width = len(header)
    while width and not header[width - 1].strip():  # a spreadsheet's empty last columns
        width -= 1
    columns: list[str] = []
    where: dict[str, int] = {}
    for position, cell in enumerate(header[:width], start=1):
        name = known.get(_spelling(cell))
        if name is None:
            what = excerpt(cell.strip()) if cell.strip() else "has no name and"
            raise ImportFileError(
                f"{path}: column {position} {what} is not a field of theme "
                f"{theme.code}; its fields are {_fields_list(theme)} (by these codes or "
                "their Chinese names). Nothing was imported."
            )
        if name in where:
            raise ImportFileError(
                f"{path}: column {name!r} appears twice in the header (columns "
                f"{where[name]} and {position}). Nothing was imported."
            )
        where[name] = position
        columns.append(name)
    split = [c for c in (_USCC_COLUMN, _ID_NUMBER_COLUMN) if c in where]
    if "subject_id" in where and split:
        raise ImportFileError(
            f"{path}: columns {where['subject_id']} and {where[split[0]]} both give the "
            "subject's identifier; keep one of them. Nothing was imported."
        )
    key_field = theme.record_key_field if "record_key" not in where else None
    missing = [
        name
        for name, present in (
            ("subject_id (or 统一社会信用代码 / 证件号码)", "subject_id" in where or split),
            ("subject_type", "subject_type" in where),
            ("subject_name", "subject_name" in where),
            (
                "record_key"
                + (f" (or {theme.record_key_field})" if theme.record_key_field else ""),
                "record_key" in where or key_field in where,
            ),
        )
        if not present
    ] + [f.name for f in theme.fields if f.required and f.name not in where]
    if missing:
        raise ImportFileError(
            f"{path}: the header lacks required column(s) {', '.join(missing)}. "
            "Nothing was imported."
        )
    key_column = "record_key" if key_field is None else key_field
    return _Layout(
        columns,
        where[key_column] - 1,
        key_field,
        where[_USCC_COLUMN] - 1 if _USCC_COLUMN in where else None,
        where[_ID_NUMBER_COLUMN] - 1 if _ID_NUMBER_COLUMN in where else None,
    )


Row = tuple[int, Mapping[str, str] | list[Problem]]
"""A row of a file: its line and its cells by field name, or why it cannot be read."""

_NUL_IN_CELL = (
    "holds a NUL character (byte 0x00), which no text field can store; remove it from the "
    "file and import it again"
)
_TWO_SUBJECTS = (
    "the unified social credit code and the identity number columns are both filled, with "
    "different values; a row names one subject: clear the one that does not identify it"
)


def _two_subjects(uscc: str, number: str) -> bool:
    """A 双公示 row's two identifier cells (stripped) name two different subjects."""
    return bool(uscc and number and uscc.upper() != number.upper())


def _one_identifier(row: dict[str, str]) -> Problem | None:
    """Turn a 双公示 row's two identifier cells into its ``subject_id``: the filled one."""
    uscc = row.pop(_USCC_COLUMN, "").strip()
    number = row.pop(_ID_NUMBER_COLUMN, "").strip()
    if _two_subjects(uscc, number):
        return Problem("subject_id", _TWO_SUBJECTS, "subject")
    row["subject_id"] = uscc or number
    return None


def _cells_problem(layout: _Layout, cells: list[str]) -> list[Problem] | None:
    """Why a row's cells cannot be taken as a row of this header, if they cannot."""
    width = layout.width
    if len(cells) != width and (len(cells) < width or any(c.strip() for c in cells[width:])):
        return [
            Problem(
                "(row)", f"the row has {len(cells)} values, the header has {width}", "unreadable"
            )
        ]
    if "\x00" in "".join(cells):
        return [
            Problem(c, _NUL_IN_CELL, "unreadable")
            for c, v in zip(layout.columns, cells, strict=False)
            if "\x00" in v
        ]
    if layout.split_id:
        uscc = cells[layout.uscc_index].strip() if layout.uscc_index is not None else ""
        number = cells[layout.id_number_index].strip() if layout.id_number_index is not None else ""
        if _two_subjects(uscc, number):
            return [Problem("subject_id", _TWO_SUBJECTS, "subject")]
    return None


# --- passes over a file -----------------------------------------------------------------


# Encodings in which a 0x00 byte is a NUL character and nothing else: while a pass has
# read none, no cell of it can hold one, and rows need not be searched for it.
_NUL_IS_ZERO_BYTE = frozenset({"utf-8", "utf-8-sig", "gbk", "gb18030", "gb2312", "ascii"})


class _PassReader(io.RawIOBase):
    """One pass over a file from its start, at a position of its own (passes may take
    turns on one file), counting the bytes it has read. ``nul_seen`` is false until it
    has read a 0x00 byte, in an encoding where that is the only way to write a NUL
    (always true in any other encoding)."""

    def __init__(self, file: BinaryIO, encoding: str) -> None:
        self._file = file
        self._watch = encoding in _NUL_IS_ZERO_BYTE
        self.nul_seen = not self._watch
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._file.seek(self.consumed)
        data = self._file.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        self.consumed += n
        if self._watch and b"\x00" in data:
            self.nul_seen = True
        return n


def _text_pass(file: BinaryIO, encoding: str, newline: str) -> tuple[IO[str], _PassReader]:
    counter = _PassReader(file, encoding)
    buffered = io.BufferedReader(counter, buffer_size=_PASS_BUFFER)
    return io.TextIOWrapper(buffered, encoding=encoding, newline=newline), counter


class _Progress(Protocol):
    @property
    def consumed(self) -> int: ...


class Table(abc.ABC):
    """A department's file of one theme, its header checked; read in passes.

    ``header`` is the header row as written (none for JSON Lines). Each pass starts
    at the file's beginning; ``consumed`` is how many bytes of the file the latest
    :meth:`rows` or :meth:`keys` pass has read (for a workbook, an estimate from the
    rows read so far), for a progress bar.
    """

    header: list[str]

    def __init__(self) -> None:
        self._consumed: _Progress | None = None  # the latest rows() or record_keys() pass

    @property
    def consumed(self) -> int:
        return self._consumed.consumed if self._consumed is not None else 0

    @abc.abstractmethod
    def rows(self) -> Iterator[Row]:
        """Every row of the file, in order: its line and its cells by field name (the
        subject block by its codes, record_key always), or the problems that keep it
        from being read. Blank rows are skipped."""

    @abc.abstractmethod
    def record_keys(self) -> Iterator[tuple[int, str]]:
        """(line, record key) of every row :meth:`rows` gives as cells whose key is not
        empty, the key stripped as validation sees it. Quicker than :meth:`rows`: made
        to find keys a file gives twice before anything is written."""

    @abc.abstractmethod
    def raw_rows(self, lines: Collection[int]) -> Iterator[tuple[int, list[str] | str]]:
        """The rows at ``lines`` as the file has them, in file order: a CSV row's or a
        worksheet row's cells (a workbook's converted as :meth:`rows` reads them), a
        JSON line's text; a CSV record the reader cannot parse as its text."""


def open_table(
    file: BinaryIO,
    fmt: str,
    encoding: str,
    theme: Theme,
    path: Path,
    sheet: str | None = None,
) -> Table:
    """The file as a table of ``theme``; its header is read and checked here.

    ``encoding`` is as :func:`python_encoding` returns it (a workbook has its own);
    ``sheet`` picks a workbook's sheet by name or 1-based number (default: the
    first). ``path`` names the file in messages. Raises ImportFileError when the
    file cannot be a table of the theme; ``file`` stays open.
    """
    if fmt == "csv":
        return _CsvTable(file, encoding, theme, path)
    if fmt == "jsonl":
        return _JsonlTable(file, encoding, theme, path)
    if fmt == "xlsx":
        return _XlsxTable(file, theme, path, sheet)
    raise ImportFileError(f"{path}: unknown format {fmt!r}; formats are csv, jsonl and xlsx")


# --- CSV --------------------------------------------------------------------------------


def read_header(reader: Iterator[list[str]], path: Path) -> list[str]:
    try:
        return next(reader)
    except StopIteration:
        raise ImportFileError(
            f"{path}: the file is empty; a CSV file starts with a header row"
        ) from None
    except csv.Error as exc:
        raise ImportFileError(
            f"{path}: the header row cannot be read as CSV ({exc}); correct it and import "
            "the file again. Nothing was imported."
        ) from None


def _unparsable(problem: csv.Error, start: int, end: int) -> Problem:
    lines = f"line {start}" if end <= start else f"lines {start}-{end}"
    return Problem(
        "(row)",
        f"{lines} cannot be read as CSV: {problem}; a cell may be too long or a quote not "
        "closed. Correct the row and import the file again",
        "unreadable",
    )


def _is_blank(cells: list[str]) -> bool:
    return not cells or (len(cells) == 1 and not cells[0].strip())


def _mapping(layout: _Layout, cells: list[str]) -> dict[str, str]:
    """A readable row's cells by field name, with its record key and subject id."""
    row = dict(zip(layout.columns, cells, strict=False))  # cells past the header are empty
    if layout.key_field is not None:
        row["record_key"] = row[layout.key_field]
    if layout.split_id:
        _one_identifier(row)
    return row


def _csv_rows(reader: Any, layout: _Layout, watch: _PassReader | None) -> Iterator[Row]:
    """The rows after a CSV header; the reader goes on after a record it cannot parse.

    The common row (as wide as the header, one identifier column, no NUL read so far)
    takes the short way; every other goes through :func:`_cells_problem`.
    """
    columns, key_field, width = layout.columns, layout.key_field, layout.width
    simple = not layout.split_id
    line = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            start, line = line + 1, reader.line_num
            yield start, [_unparsable(exc, start, line)]
            continue
        start, line = line + 1, reader.line_num
        if (
            len(cells) == width
            and simple
            and not ((watch is None or watch.nul_seen) and "\x00" in "".join(cells))
        ):
            row = dict(zip(columns, cells, strict=True))
            if key_field is not None:
                row["record_key"] = row[key_field]
            yield start, row
        elif not _is_blank(cells):
            yield start, _cells_problem(layout, cells) or _mapping(layout, cells)


def _csv_keys(reader: Any, layout: _Layout, watch: _PassReader) -> Iterator[tuple[int, str]]:
    """(line, key) of the rows :func:`_csv_rows` gives as cells, parsed and nothing more."""
    index, width, simple = layout.key_index, layout.width, not layout.split_id
    line = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error:
            line = reader.line_num
            continue
        start, line = line + 1, reader.line_num
        readable = (
            len(cells) == width and simple and not (watch.nul_seen and "\x00" in "".join(cells))
        ) or (not _is_blank(cells) and _cells_problem(layout, cells) is None)
        if readable:
            key = cells[index].strip()
            if key:
                yield start, key


class _CsvTable(Table):
    def __init__(self, file: BinaryIO, encoding: str, theme: Theme, path: Path) -> None:
        super().__init__()
        self._file, self._encoding, self._path = file, encoding, path
        reader, _ = self._pass()
        self.header = read_header(reader, path)
        self._layout = _layout(theme, self.header, path)

    def _pass(self) -> tuple[Any, _PassReader]:
        text, counter = _text_pass(self._file, self._encoding, "")
        return csv.reader(text), counter

    def rows(self) -> Iterator[Row]:
        reader, self._consumed = self._pass()
        read_header(reader, self._path)
        return _csv_rows(reader, self._layout, self._consumed)

    def record_keys(self) -> Iterator[tuple[int, str]]:
        reader, self._consumed = self._pass()
        read_header(reader, self._path)
        return _csv_keys(reader, self._layout, self._consumed)

    def raw_rows(self, lines: Collection[int]) -> Iterator[tuple[int, list[str] | str]]:
        wanted = set(lines)
        if not wanted:
            return
        last = max(wanted)
        text, _ = _text_pass(self._file, self._encoding, "")
        feed = _RecordingLines(text)
        reader = csv.reader(feed)
        line = 0
        while line < last:
            feed.record.clear()
            try:
                cells: list[str] | str = next(reader)
            except StopIteration:
                return
            except csv.Error:
                cells = "".join(feed.record).removesuffix("\n").removesuffix("\r")
            start, line = line + 1, reader.line_num
            if start in wanted:
                yield start, cells


class _RecordingLines:
    """The lines of a text for csv.reader, keeping those of the record being read."""

    def __init__(self, text: IO[str]) -> None:
        self._lines = iter(text)
        self.record: list[str] = []

    def __iter__(self) -> _RecordingLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.record.append(line)
        return line


# --- JSON Lines -------------------------------------------------------------------------


class _JsonlTable(Table):
    def __init__(self, file: BinaryIO, encoding: str, theme: Theme, path: Path) -> None:
        super().__init__()
        self._file, self._encoding, self._theme = file, encoding, theme
        self.header = []
        self._known = _header_names(theme)

    def rows(self) -> Iterator[Row]:
        text, self._consumed = _text_pass(self._file, self._encoding, "\n")
        return _jsonl_rows(text, self._theme, self._known)

    def record_keys(self) -> Iterator[tuple[int, str]]:
        for line, row in self.rows():
            if not isinstance(row, list):
                key = row.get("record_key", "").strip()
                if key:
                    yield line, key

    def raw_rows(self, lines: Collection[int]) -> Iterator[tuple[int, list[str] | str]]:
        wanted = set(lines)
        if not wanted:
            return
        last = max(wanted)
        text, _ = _text_pass(self._file, self._encoding, "\n")
        for line, raw in enumerate(text, start=1):
            if line in wanted:
                yield line, raw.removesuffix("\n").removesuffix("\r")
            if line >= last:
                return


def _jsonl_rows(text: IO[str], theme: Theme, known: Mapping[str, str]) -> Iterator[Row]:
    resolved: dict[str, str] = {}  # a key as written -> its field (known keys only)
    key_field = theme.record_key_field
    for line, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield line, [Problem("(row)", f"not valid JSON: {exc}", "unreadable")]
            continue
        if not isinstance(obj, dict):
            yield line, [Problem("(row)", "a line must hold one JSON object", "unreadable")]
            continue
        row: dict[str, str] = {}
        problems: list[Problem] = []
        for key, value in obj.items():
            name = resolved.get(key)
            if name is None:
                name = known.get(_spelling(key))
                if name is not None:
                    resolved[key] = name
            if name is None:
                problems.append(
                    Problem(excerpt(key), f"not a field of theme {theme.code}", "unreadable")
                )
            elif name in row:
                problems.append(
                    Problem(
                        name, f"given twice in the line (again as {excerpt(key)})", "unreadable"
                    )
                )
            elif isinstance(value, dict | list):
                problems.append(
                    Problem(name, "must be a plain value, not a list or an object", "unreadable")
                )
            elif isinstance(value, str) and "\x00" in value:
                problems.append(Problem(name, _NUL_IN_CELL, "unreadable"))
            else:
                row[name] = cell_text(value)
        if (
            not problems
            and "subject_id" in row
            and (_USCC_COLUMN in row or _ID_NUMBER_COLUMN in row)
        ):
            problems.append(
                Problem(
                    "subject_id",
                    "the line gives the subject's identifier twice (as subject_id and as "
                    "统一社会信用代码 / 证件号码); keep one",
                    "subject",
                )
            )
        if problems:
            yield line, problems
            continue
        if "record_key" not in row and key_field is not None and key_field in row:
            row["record_key"] = row[key_field]
        if _USCC_COLUMN in row or _ID_NUMBER_COLUMN in row:
            conflict = _one_identifier(row)
            if conflict is not None:
                yield line, [conflict]
                continue
        yield line, row


# --- Excel workbooks --------------------------------------------------------------------

_XLSX_MEMBER_LIMIT = 256 << 20
"""Largest part of a workbook, uncompressed, besides its worksheets (which are read as
a stream): the shared strings, styles and workbook parts are held in memory whole."""


def _number_text(value: float) -> str:
    """A spreadsheet number as a person wrote it: ``7.48``, ``100`` (not ``100.0``),
    ``0.00001`` (not ``1e-05``)."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


_float_text = lru_cache(maxsize=4096)(_number_text)


def _sheet_text(value: object) -> str:
    """A worksheet cell as the text a CSV cell would hold."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return cell_text(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value).strip()


class _SheetProgress:
    """How far a pass over a worksheet has come, in bytes of the file: the share of the
    rows its dimension announces (the whole file once the pass has ended)."""

    def __init__(self, size: int, rows: int | None) -> None:
        self._size, self._rows = size, rows
        self.line = 0
        self.done = False

    @property
    def consumed(self) -> int:
        if self.done:
            return self._size
        if not self._rows:
            return 0
        return min(self._size, self._size * self.line // self._rows)


class _XlsxTable(Table):
    def __init__(self, file: BinaryIO, theme: Theme, path: Path, sheet: str | None) -> None:
        super().__init__()
        self._path = path
        import openpyxl  # type: ignore[import-untyped, unused-ignore]  # workbooks only

        if not openpyxl.DEFUSEDXML:
            raise ImportFileError(
                f"{path}: workbooks are read only with defusedxml installed (it guards "
                "against XML entity attacks); install it, or save the sheet as .csv. "
                "Nothing was imported."
            )
        self._size = file.seek(0, io.SEEK_END)
        _check_workbook_parts(file, path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                book = openpyxl.load_workbook(
                    file, read_only=True, data_only=True, keep_links=False
                )
        except Exception as exc:  # zip, XML and openpyxl's own errors alike
            raise _not_a_workbook(path, exc) from None
        self._sheet = _pick_sheet(book, sheet, path)
        self._announced_rows: int | None = self._sheet.max_row
        # A wrong dimension would make openpyxl stop early: rows are read to the end.
        self._sheet.reset_dimensions()
        for line, cells in self._lines(None):
            self.header, self._header_line = cells, line
            break
        else:
            raise ImportFileError(
                f"{path}: sheet {excerpt(self._sheet.title)} is empty; it starts with a header "
                "row of field names. Nothing was imported."
            )
        self._layout = _layout(theme, self.header, path)

    def _lines(self, progress: _SheetProgress | None) -> Iterator[tuple[int, list[str]]]:
        """(row number, cells as text without trailing empty ones) of each row with a
        value; a sheet that turns out broken midway is an ImportFileError."""
        line = 0
        try:
            for line, values in enumerate(
                self._sheet.iter_rows(min_row=1, values_only=True), start=1
            ):
                if progress is not None:
                    progress.line = line
                cells = [_sheet_text(v) for v in values]
                while cells and not cells[-1]:
                    cells.pop()
                if cells:
                    yield line, cells
        except Exception as exc:
            raise ImportFileError(
                f"{self._path}: sheet {excerpt(self._sheet.title)} cannot be read after row "
                f"{line}: {excerpt(str(exc), 120)}; the file is damaged. Export it again."
            ) from None
        if progress is not None:
            progress.done = True

    def _records(self) -> Iterator[tuple[int, list[str], list[Problem] | None]]:
        """(row number, cells, why they are not a row of the header) after the header."""
        progress = _SheetProgress(self._size, self._announced_rows)
        self._consumed = progress
        width = self._layout.width
        for line, cells in self._lines(progress):
            if line <= self._header_line:
                continue
            if len(cells) < width:  # a worksheet leaves empty cells out
                cells += [""] * (width - len(cells))
            yield line, cells, _cells_problem(self._layout, cells)

    def rows(self) -> Iterator[Row]:
        for line, cells, problems in self._records():
            yield line, (_mapping(self._layout, cells) if problems is None else problems)

    def record_keys(self) -> Iterator[tuple[int, str]]:
        index = self._layout.key_index
        for line, cells, problems in self._records():
            if problems is None and cells[index]:
                yield line, cells[index]

    def raw_rows(self, lines: Collection[int]) -> Iterator[tuple[int, list[str] | str]]:
        wanted = set(lines)
        if not wanted:
            return
        last = max(wanted)
        width = self._layout.width
        for line, cells in self._lines(None):
            if line in wanted:
                yield line, cells + [""] * (width - len(cells))
            if line >= last:
                return


def _not_a_workbook(path: Path, problem: BaseException) -> ImportFileError:
    reason = excerpt(str(problem) or type(problem).__name__, 120)
    return ImportFileError(
        f"{path} is not a valid Excel workbook (.xlsx): {reason}. Open it in Excel or WPS "
        "and save it again as .xlsx, or save the sheet as .csv. Nothing was imported."
    )


def _check_workbook_parts(file: BinaryIO, path: Path) -> None:
    """Refuse a workbook whose parts held in memory would be huge once uncompressed (a
    zip bomb): a part never yields more than the size its zip entry declares."""
    try:
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                if (
                    not info.filename.startswith("xl/worksheets/")
                    and info.file_size > _XLSX_MEMBER_LIMIT
                ):
                    raise ImportFileError(
                        f"{path}: the workbook's part {excerpt(info.filename)} would take "
                        f"{info.file_size >> 20} MiB uncompressed, more than the "
                        f"{_XLSX_MEMBER_LIMIT >> 20} MiB a workbook part may; save the sheet as "
                        ".csv and import that. Nothing was imported."
                    )
    except zipfile.BadZipFile as exc:
        raise _not_a_workbook(path, exc) from None


def _pick_sheet(book: Any, sheet: str | None, path: Path) -> Any:
    sheets = list(book.worksheets)
    listing = ", ".join(f"{i} {excerpt(s.title)}" for i, s in enumerate(sheets, start=1))
    if not sheets:
        raise ImportFileError(f"{path}: the workbook has no worksheet. Nothing was imported.")
    if sheet is None:
        return sheets[0]
    for s in sheets:
        if s.title == sheet:
            return s
    if sheet.strip().isdigit() and 1 <= int(sheet) <= len(sheets):
        return sheets[int(sheet) - 1]
    raise ImportFileError(
        f"{path}: the workbook has no sheet {excerpt(sheet)}; its sheets are {listing}. "
        "Pass --sheet with one of these names or numbers. Nothing was imported."
    )


# --- rejected rows, written back --------------------------------------------------------


def open_private_file(path: Path) -> BinaryIO:
    """A new file for the operator alone (it names records and subjects): its folder is
    created 0700 and the file 0600, never following a link planted in its place."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def write_rejected_rows(
    path: Path,
    fmt: str,
    encoding: str,
    header: list[str],
    rows: Iterable[tuple[int, list[str] | str]],
) -> Path:
    """Write rows as :meth:`Table.raw_rows` gives them to ``path`` plus the format's suffix,
    in the file's own format: a CSV in ``encoding`` with ``header`` first, JSON Lines as
    the lines were, a workbook with ``header`` and the cells as text. Imported again
    with the same options, the file gives the same cells. Returns the file's path.
    """
    target = path.with_name(path.name + _SUFFIX[fmt])
    with open_private_file(target) as file:
        if fmt == "xlsx":
            _write_workbook(file, header, rows)
        else:
            text = io.TextIOWrapper(file, encoding=encoding, newline="")
            try:
                if fmt == "csv":
                    _write_csv(text, header, rows)
                else:
                    for _, line in rows:
                        if not isinstance(line, str):
                            raise ValueError("a JSON Lines row is the text of its line")
                        text.write(line + "\n")
                text.flush()
            finally:
                text.detach()
    return target


def _write_csv(
    text: IO[str], header: list[str], rows: Iterable[tuple[int, list[str] | str]]
) -> None:
    writer = csv.writer(text)
    writer.writerow(header)
    for _, cells in rows:
        if isinstance(cells, str):  # a record the CSV reader could not parse, as it was
            text.write(cells + "\r\n")
        else:
            writer.writerow(cells)


def _write_workbook(
    file: BinaryIO, header: list[str], rows: Iterable[tuple[int, list[str] | str]]
) -> None:
    import openpyxl  # type: ignore[import-untyped, unused-ignore]  # workbooks only
    from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped, unused-ignore]

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet()

    def as_text(value: str) -> Any:
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"  # the text as it was, never a formula
        return cell

    sheet.append([as_text(c) for c in header])
    for _, cells in rows:
        if isinstance(cells, str):
            raise ValueError("a worksheet row is a list of cells")
        sheet.append([as_text(c) for c in cells])
    book.save(file)


# --- the readers before open_table ------------------------------------------------------
