"""Reading a department's file: opening it safely, its encoding, its header and its rows.

* **Only the file named, and only a regular file.** The file is opened once with
  ``O_NOFOLLOW`` and checked on the opened descriptor (``fstat``, no race between
  a check and the open): a symbolic link is refused unless ``follow_symlinks``
  (and then its target must be a regular file), and so are folders, devices,
  sockets and named pipes, without waiting on a pipe. Every later open of the
  file (a validating worker's) must find the very same file.
* **No error shows more of the file than an excerpt.** Column names, cells and
  keys appear in messages and reject reasons only as
  :func:`~creditexchange.errors.excerpt` shows them.
* **It decodes, or nothing is read.** :func:`scan_file` reads the whole file once
  before anything is written: its SHA-256, and proof it decodes in the declared
  encoding (a GBK file read as UTF-8, or a UTF-8 file declared as GBK, is refused
  with the line and what to pass instead).
* **Rows as the department wrote them.** A header names catalog fields of the
  theme, by code or Chinese name; each row comes out as its cells by field name,
  or as the problems that kept it from being read (a CSV row the reader cannot
  parse, a cell holding a NUL character, a JSON line that is not an object).
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson

from creditexchange.errors import ImportFileError, excerpt
from creditexchange.node.catalog import Theme
from creditexchange.node.records.validation import SUBJECT_COLUMNS, Problem, cell_text

__all__ = [
    "FORMATS",
    "CountingReader",
    "FileIdentity",
    "Row",
    "column_map",
    "csv_rows",
    "file_format",
    "file_identity",
    "jsonl_rows",
    "open_regular_file",
    "python_encoding",
    "read_header",
    "scan_file",
]

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_UTF8 = frozenset({"utf-8", "utf8", "utf-8-sig", "utf_8", "u8"})
_READ_BLOCK = 1 << 20


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ImportFileError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            "name the file .csv (header row of field names) or .jsonl (one JSON object a line)"
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
                "save the department's data as a .csv or .jsonl file and import that. "
                "Nothing was imported."
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
                "reads regular files only: save the department's data as a .csv or .jsonl "
                "file and import that. Nothing was imported."
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


def scan_file(file: BinaryIO, path: Path, encoding: str) -> tuple[str, int]:
    """Read the whole file once: its SHA-256 and size, and proof that it decodes.

    Raises ImportFileError naming the line of the first byte that does not decode,
    or saying the file is really UTF-8 when another encoding was declared.
    """
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


class CountingReader(io.RawIOBase):
    """A binary file that reports how far it has been read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self.consumed += n or 0
        return n or 0


def column_map(theme: Theme, header: Sequence[str], path: Path) -> list[str]:
    """Map header cells (catalog names or their Chinese names) to field names."""
    known = {name: name for name in SUBJECT_COLUMNS}
    for f in theme.fields:
        known[f.name] = f.name
        known[f.name_zh] = f.name
    columns: list[str] = []
    for position, cell in enumerate(header, start=1):
        name = known.get(cell.strip())
        if name is None:
            raise ImportFileError(
                f"{path}: column {position} {excerpt(cell.strip())} is not a field of theme "
                f"{theme.code}; its fields are {', '.join(SUBJECT_COLUMNS)}, "
                f"{', '.join(f.name for f in theme.fields)}. Nothing was imported."
            )
        if name in columns:
            raise ImportFileError(
                f"{path}: column {name!r} appears twice in the header. Nothing was imported."
            )
        columns.append(name)
    missing = [c for c in SUBJECT_COLUMNS if c not in columns] + [
        f.name for f in theme.fields if f.required and f.name not in columns
    ]
    if missing:
        raise ImportFileError(
            f"{path}: the header lacks required column(s) {', '.join(missing)}. "
            "Nothing was imported."
        )
    return columns


Row = tuple[int, Mapping[str, str] | list[Problem]]

_NUL_IN_CELL = (
    "holds a NUL character (byte 0x00), which no text field can store; remove it from the "
    "file and import it again"
)


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


def csv_rows(text: IO[str], theme: Theme, path: Path) -> Iterator[Row]:
    reader = csv.reader(text)
    columns = column_map(theme, read_header(reader, path), path)
    width = len(columns)
    line = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader goes on at the next line
            start, line = line + 1, reader.line_num
            lines = f"line {start}" if line <= start else f"lines {start}-{line}"
            yield (
                start,
                [
                    Problem(
                        "(row)",
                        f"{lines} cannot be read as CSV: {exc}; a cell may be too long or a "
                        "quote not closed. Correct the row and import the file again",
                    )
                ],
            )
            continue
        start, line = line + 1, reader.line_num
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if len(cells) != width:
            yield (
                start,
                [Problem("(row)", f"the row has {len(cells)} values, the header has {width}")],
            )
            continue
        if "\x00" in "".join(cells):
            nul = [c for c, v in zip(columns, cells, strict=True) if "\x00" in v]
            yield start, [Problem(c, _NUL_IN_CELL) for c in nul]
            continue
        yield start, dict(zip(columns, cells, strict=True))


def jsonl_rows(text: IO[str], theme: Theme, path: Path) -> Iterator[Row]:
    allowed = {name: name for name in SUBJECT_COLUMNS}
    for f in theme.fields:
        allowed[f.name] = f.name
        allowed[f.name_zh] = f.name
    for line, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield line, [Problem("(row)", f"not valid JSON: {exc}")]
            continue
        if not isinstance(obj, dict):
            yield line, [Problem("(row)", "a line must hold one JSON object")]
            continue
        row: dict[str, str] = {}
        problems: list[Problem] = []
        for key, value in obj.items():
            name = allowed.get(key)
            if name is None:
                problems.append(Problem(excerpt(key), f"not a field of theme {theme.code}"))
            elif isinstance(value, dict | list):
                problems.append(Problem(name, "must be a plain value, not a list or an object"))
            elif isinstance(value, str) and "\x00" in value:
                problems.append(Problem(name, _NUL_IN_CELL))
            else:
                row[name] = cell_text(value)
        yield line, problems or row
