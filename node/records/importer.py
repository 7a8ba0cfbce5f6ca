"""Import of source departments' files (CSV or JSON Lines) into the credit store.

The guarantees an operator relies on:

* **Only the file named, and only a regular file.** The file is opened once with
  ``O_NOFOLLOW`` and checked on the opened descriptor (``fstat``, no race between
  a check and the open): a symbolic link is refused unless ``follow_symlinks``
  (and then its target must be a regular file), and so are folders, devices,
  sockets and named pipes, without waiting on a pipe. Every later open of the
  file (a validating worker's) must find the very same file.
* **No error shows more of the file than an excerpt.** Column names, cells and
  keys appear in messages and reject reasons only as
  :func:`~creditexchange.errors.excerpt` shows them: at most 40 characters,
  quoted, control characters escaped. A file that is not department data (a
  key, binary garbage) cannot be printed through an error.
* **Nothing half-read gets in.** Before a single row is written the whole file is
  read once: its SHA-256 is taken, it must decode in the declared encoding (a GBK
  file read as UTF-8, or a UTF-8 file declared as GBK, is refused with the line
  and what to pass instead), and its header must name only catalog fields of the
  theme, with every required one present.
* **Bad rows never touch good data.** Every rejected row goes to the reject report
  (file, line, field, reason) and is not written; the rows around it are. That
  includes a row the CSV reader cannot parse (a cell over the field size limit)
  and a cell holding a NUL character, which no text column can store: reading
  goes on at the next line (so the rest of a broken multi-line cell may be
  rejected too).
* **A report a spreadsheet cannot run.** A report cell that starts like a formula
  (``= + - @``, tab, carriage return) is written with a leading ``'``.
* **Idempotent.** A record is identified by (theme, record_key). The same content
  again is *unchanged* and writes nothing; changed content replaces the record,
  raising its version, and the replaced version goes to ``record_versions``.
  A record key that appears twice in one file is rejected the second time.
* **Flat memory.** Rows are read as a stream and written in chunks of
  ``chunk_rows``, one transaction per chunk; keys already seen in this file are
  kept in a temporary table, not in memory.
* **A failed import leaves nothing behind but its committed chunks.** Whatever
  stops it, the temporary table is dropped (the connection goes back to the pool
  clean), the reject report is closed with every reject found so far, and a
  validating worker process is stopped. Importing the file again finishes it.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import errno
import hashlib
import io
import multiprocessing
import os
import queue
import stat
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, NamedTuple

import orjson
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)

from creditexchange.clock import china_today, utc_now
from creditexchange.errors import CatalogError, ImportFileError, excerpt
from creditexchange.identifiers import mask_identifier
from creditexchange.node.catalog import Catalog, Theme
from creditexchange.node.database.driver import Prepared
from creditexchange.node.database.models import IMPORT_BATCHES
from creditexchange.node.records import repository
from creditexchange.node.records.validation import (
    SUBJECT_COLUMNS,
    Problem,
    RowValidator,
    ValidRow,
    cell_text,
)

__all__ = [
    "FORMATS",
    "PARALLEL_FROM_BYTES",
    "ImportSummary",
    "Progress",
    "Reject",
    "file_format",
    "import_file",
]

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_UTF8 = frozenset({"utf-8", "utf8", "utf-8-sig", "utf_8", "u8"})
_READ_BLOCK = 1 << 20

Progress = Callable[[int], None]
"""Called with the number of bytes of the file consumed so far."""


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    field: str
    reason: str


@dataclass
class ImportSummary:
    file: Path
    theme: str
    batch_id: int
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    past_publicity: int = 0
    reject_report: Path | None = None
    file_digest: str = ""

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.unchanged


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ImportFileError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            "name the file .csv (header row of field names) or .jsonl (one JSON object a line)"
        ) from None


def _python_encoding(encoding: str) -> str:
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

_FileIdentity = tuple[int, int]
"""A file's (device, inode): which file an open descriptor is."""


def _open_regular_file(
    path: Path, *, follow_symlinks: bool = False, identity: _FileIdentity | None = None
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


def _identity(file: BinaryIO) -> _FileIdentity:
    status = os.fstat(file.fileno())
    return status.st_dev, status.st_ino


def _scan_file(file: BinaryIO, path: Path, encoding: str) -> tuple[str, int]:
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


class _CountingReader(io.RawIOBase):
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


def _column_map(theme: Theme, header: Sequence[str], path: Path) -> list[str]:
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


_Row = tuple[int, Mapping[str, str] | list[Problem]]

_NUL_IN_CELL = (
    "holds a NUL character (byte 0x00), which no text field can store; remove it from the "
    "file and import it again"
)


def _read_header(reader: Iterator[list[str]], path: Path) -> list[str]:
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


def _csv_rows(text: IO[str], theme: Theme, path: Path) -> Iterator[_Row]:
    reader = csv.reader(text)
    columns = _column_map(theme, _read_header(reader, path), path)
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


def _jsonl_rows(text: IO[str], theme: Theme, path: Path) -> Iterator[_Row]:
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


_SEEN_KEYS = Table(
    "import_seen_keys",
    MetaData(),
    Column("record_key", String(128), primary_key=True),
    prefixes=["TEMPORARY"],
)
"""Keys of this file already confirmed unchanged: a temporary table of the import's
own connection, so that memory stays flat however large the file."""
_SEE_KEY = Prepared(insert(_SEEN_KEYS).values(record_key=bindparam("key")))


class _Writer:
    """Writes validated chunks on one connection: one transaction per chunk.

    What to write is decided here (new, changed, unchanged, repeated); how records
    and subjects are written is the records repository's.
    """

    def __init__(self, conn: Connection, theme: str, source: str, batch_id: int) -> None:
        self.conn = conn
        self.theme = theme
        self.source = source
        self.batch_id = batch_id
        _SEEN_KEYS.create(conn)

    def close(self) -> None:
        """Drop the temporary table, also after a failure midway.

        A chunk that failed is rolled back first (committed chunks stay); the table
        may then be gone already, if the failure came before the first commit.
        """
        self.conn.rollback()
        _SEEN_KEYS.drop(self.conn, checkfirst=True)
        self.conn.commit()

    def write(self, rows: list[ValidRow], rejects: list[Reject]) -> tuple[int, int, int]:
        """Write one chunk; returns (inserted, updated, unchanged) and appends rejects."""
        now = utc_now()
        existing: dict[str, tuple[int, str, int | None]] = {}
        if rows:
            rows = self._first_in_chunk(rows, rejects)
            existing = repository.existing_records(
                self.conn, self.theme, [r.record_key for r in rows]
            )
            rows = self._not_seen_in_this_file(rows, existing, rejects)
            rows = self._write_subjects(rows, rejects, now)
        if not rows:
            self.conn.commit()
            return 0, 0, 0
        new = [r for r in rows if r.record_key not in existing]
        changed = [
            (existing[r.record_key][0], r)
            for r in rows
            if r.record_key in existing and existing[r.record_key][1] != r.content_hash
        ]
        unchanged = [
            r.record_key
            for r in rows
            if r.record_key in existing and existing[r.record_key][1] == r.content_hash
        ]
        repository.insert_records(self.conn, self.theme, self.source, self.batch_id, new, now)
        repository.replace_records(self.conn, changed, self.source, self.batch_id, now)
        if unchanged:  # remembered so that a repeat later in the file is caught
            _SEE_KEY.executemany(
                self.conn.connection.cursor(), self.conn.dialect, [{"key": k} for k in unchanged]
            )
        self.conn.commit()
        return len(new), len(changed), len(unchanged)

    @staticmethod
    def _first_in_chunk(rows: list[ValidRow], rejects: list[Reject]) -> list[ValidRow]:
        first_line: dict[str, int] = {}
        kept: list[ValidRow] = []
        for r in rows:
            if r.record_key in first_line:
                rejects.append(_repeated(r, first_line[r.record_key]))
            else:
                first_line[r.record_key] = r.line
                kept.append(r)
        return kept

    def _not_seen_in_this_file(
        self,
        rows: list[ValidRow],
        existing: dict[str, tuple[int, str, int | None]],
        rejects: list[Reject],
    ) -> list[ValidRow]:
        """Drop keys that an earlier chunk of this file wrote (their batch is this one)
        or confirmed unchanged (kept in the temporary table). A fresh import never
        queries the temporary table: none of its keys existed before."""
        written_here = {k for k, (_, _, batch) in existing.items() if batch == self.batch_id}
        older = [k for k, (_, _, batch) in existing.items() if batch != self.batch_id]
        confirmed: set[str] = set()
        if older:
            confirmed = {
                str(k)
                for (k,) in self.conn.execute(
                    select(_SEEN_KEYS.c.record_key).where(_SEEN_KEYS.c.record_key.in_(older))
                )
            }
        repeated = written_here | confirmed
        if not repeated:
            return rows
        rejects.extend(_repeated(r, None) for r in rows if r.record_key in repeated)
        return [r for r in rows if r.record_key not in repeated]

    def _write_subjects(
        self, rows: list[ValidRow], rejects: list[Reject], now: dt.datetime
    ) -> list[ValidRow]:
        stored = repository.stored_subjects(self.conn, {r.subject_id for r in rows})
        fresh: dict[str, tuple[str, str]] = {}
        renamed: dict[str, str] = {}
        kept: list[ValidRow] = []
        for r in rows:
            known = stored.get(r.subject_id) or fresh.get(r.subject_id)
            if known is not None and known[0] != r.subject_type:
                rejects.append(
                    Reject(
                        r.line,
                        "subject_type",
                        f"subject {mask_identifier(r.subject_id, r.subject_type)} is stored as "
                        f"{known[0]}, this row says {r.subject_type}; correct the row (or the "
                        "stored subject) and import again",
                    )
                )
                continue
            kept.append(r)
            if known is None:
                fresh[r.subject_id] = (r.subject_type, r.subject_name)
            elif r.subject_id in stored and stored[r.subject_id][1] != r.subject_name:
                renamed[r.subject_id] = r.subject_name
        repository.add_subjects(self.conn, fresh, now)
        repository.rename_subjects(self.conn, renamed, now)
        return kept


def _repeated(row: ValidRow, first_line: int | None) -> Reject:
    where = f" at line {first_line}" if first_line is not None else ""
    return Reject(
        row.line,
        "record_key",
        f"record key {excerpt(row.record_key)} appears earlier in this file{where}",
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _spreadsheet_text(cell: str) -> str:
    """A cell that a spreadsheet shows as text: one that starts like a formula
    (``= + - @``, tab, carriage return) gets a leading ``'`` (CSV injection)."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


class _RejectReport:
    """The reject report of one import: a CSV (UTF-8 with BOM, so Excel reads it).

    Fields and reasons can carry text from the department's file (a JSON key, a
    path), so every text cell goes through :func:`_spreadsheet_text`.
    """

    def __init__(self, path: Path, source: Path) -> None:
        self.path = path
        self.source = str(source)
        self._file: IO[str] | None = None
        self._writer: Any = None

    def add(self, rejects: Sequence[Reject]) -> None:
        if not rejects:
            return
        if self._writer is None:
            self._file = _private_report(self.path)
            self._writer = csv.writer(self._file)
            self._writer.writerow(["file", "line", "field", "reason"])
        source = _spreadsheet_text(self.source)
        for r in rejects:
            self._writer.writerow(
                [source, r.line, _spreadsheet_text(r.field), _spreadsheet_text(r.reason)]
            )

    def close(self) -> Path | None:
        if self._file is None:
            return None
        self._file.close()
        return self.path


def _private_report(path: Path) -> IO[str]:
    """The report file, for the operator alone: it names records and subjects. Its folder
    is created 0700 and the file 0600 (never following a link planted in its place)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "w", encoding="utf-8-sig", newline="")
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True)
class _Source:
    """What reading and validating one file needs; plain data, so a worker can take it."""

    path: Path
    fmt: str
    encoding: str
    theme: dict[str, Any]  # Theme.model_dump(): models are rebuilt, not pickled
    department: str
    chunk_rows: int
    follow_symlinks: bool
    identity: _FileIdentity  # the file checked before anything was written


class _Chunk(NamedTuple):
    rows: list[ValidRow]
    rejects: list[Reject]
    read: int
    consumed: int


def _validated_chunks(source: _Source) -> Generator[_Chunk, None, None]:
    """Read and validate a file, yielding chunks of valid rows and rejects."""
    theme = Theme.model_validate(source.theme)
    validator = RowValidator(theme, source.department)
    opened = _open_regular_file(
        source.path, follow_symlinks=source.follow_symlinks, identity=source.identity
    )
    with opened as raw:
        counter = _CountingReader(raw)
        text = io.TextIOWrapper(io.BufferedReader(counter), encoding=source.encoding, newline="")
        rows = (_csv_rows if source.fmt == "csv" else _jsonl_rows)(text, theme, source.path)
        valid: list[ValidRow] = []
        rejects: list[Reject] = []
        read = 0
        for line, row in rows:
            read += 1
            checked = row if isinstance(row, list) else validator.check(line, row)
            if isinstance(checked, list):
                rejects.extend(Reject(line, p.field, p.reason) for p in checked)
            else:
                valid.append(checked)
            if read >= source.chunk_rows:
                yield _Chunk(valid, rejects, read, counter.consumed)
                valid, rejects, read = [], [], 0
        yield _Chunk(valid, rejects, read, counter.consumed)


def _validate_in_worker(source: _Source, chunks: Any) -> None:
    try:
        for chunk in _validated_chunks(source):
            chunks.put(chunk)
        chunks.put(None)
    except BaseException as exc:  # handed to the parent, which raises it
        chunks.put(exc)


def _chunks_from_worker(source: _Source) -> Generator[_Chunk, None, None]:
    """Validate in a second process while this one writes: two cores, one import.

    The queue is bounded, so memory stays flat; a worker that dies is reported,
    and what was committed before stays consistent (re-running is idempotent).
    """
    context = multiprocessing.get_context("spawn")
    chunks = context.Queue(maxsize=4)
    worker = context.Process(target=_validate_in_worker, args=(source, chunks), daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = chunks.get(timeout=1)
            except queue.Empty:
                if not worker.is_alive():
                    raise ImportFileError(
                        f"{source.path}: the validating process stopped (exit code "
                        f"{worker.exitcode}); the chunks written so far are complete; "
                        "import the file again to finish"
                    ) from None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if worker.is_alive():
            worker.terminate()
        worker.join()


_BATCHES = IMPORT_BATCHES

PARALLEL_FROM_BYTES = 8 << 20
"""Files at least this large are validated in a worker process."""


def import_file(
    engine: Engine,
    catalog: Catalog,
    path: Path,
    theme_code: str,
    *,
    reject_dir: Path,
    source: str | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = 5000,
    today: dt.date | None = None,
    progress: Progress | None = None,
    parallel: bool | None = None,
    follow_symlinks: bool = False,
) -> ImportSummary:
    """Import one department file into ``theme_code``; see the module's guarantees.

    ``parallel`` validates in a worker process (default: for files of 8 MiB or more).
    ``follow_symlinks`` accepts a symbolic link to a regular file.
    """
    theme = catalog.theme(theme_code)
    department = source or theme.source_department
    if department not in catalog.department_by_code:
        raise CatalogError(
            f"unknown source department {department!r}; the catalog knows "
            f"{', '.join(sorted(catalog.department_by_code))}"
        )
    fmt = file_format(path)
    python_encoding = _python_encoding(encoding)
    with _open_regular_file(path, follow_symlinks=follow_symlinks) as file:
        identity = _identity(file)
        digest, size = _scan_file(file, path, python_encoding)
        if fmt == "csv":  # a bad header refuses the file before anything is written
            file.seek(0)
            text = io.TextIOWrapper(file, encoding=python_encoding, newline="")
            try:
                _column_map(theme, _read_header(csv.reader(text), path), path)
            finally:
                text.detach()
    today_iso = (today or china_today()).isoformat()
    plan = _Source(
        path,
        fmt,
        python_encoding,
        theme.model_dump(),
        department,
        chunk_rows,
        follow_symlinks,
        identity,
    )
    use_worker = size >= PARALLEL_FROM_BYTES if parallel is None else parallel
    chunks = _chunks_from_worker(plan) if use_worker else _validated_chunks(plan)

    with engine.connect() as conn:
        batch_id = conn.execute(
            insert(_BATCHES).values(
                theme=theme.code,
                source_department=department,
                file_name=str(path),
                file_digest=digest,
                file_format=fmt,
                encoding=encoding,
                catalog_version=catalog.catalog_version,
                started_at=utc_now(),
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.commit()
        summary = ImportSummary(path, theme.code, batch_id, file_digest=digest)
        report = _RejectReport(reject_dir / f"batch-{batch_id}-{theme.code}.rejects.csv", path)
        try:
            writer = _Writer(conn, theme.code, department, batch_id)
            try:
                for chunk in chunks:
                    rejects = chunk.rejects
                    inserted, updated, unchanged = writer.write(chunk.rows, rejects)
                    rejected = {r.line for r in rejects}
                    summary.read += chunk.read
                    summary.inserted += inserted
                    summary.updated += updated
                    summary.unchanged += unchanged
                    summary.rejected += len(rejected)
                    summary.past_publicity += sum(
                        1
                        for r in chunk.rows
                        if r.publicity_end is not None
                        and r.publicity_end < today_iso
                        and r.line not in rejected
                    )
                    report.add(rejects)
                    if progress is not None:
                        progress(chunk.consumed)
            finally:
                writer.close()
        finally:
            chunks.close()  # stops a validating worker that is still running
            summary.reject_report = report.close()
        conn.execute(
            update(_BATCHES)
            .where(_BATCHES.c.id == batch_id)
            .values(
                finished_at=utc_now(),
                rows_read=summary.read,
                inserted=summary.inserted,
                updated=summary.updated,
                unchanged=summary.unchanged,
                rejected=summary.rejected,
            )
        )
        conn.commit()
    return summary
