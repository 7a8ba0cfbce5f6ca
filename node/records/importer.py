"""Import of source departments' files (CSV or JSON Lines) into the credit store.

The guarantees an operator relies on:

* **Only the file named, decoded, with a header of the theme's fields.** How a file
  is opened, checked and read is :mod:`~creditexchange.node.records.sources`'s;
  before a single row is written the whole file has been read once (its SHA-256,
  its encoding) and its header checked.
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

import csv
import datetime as dt
import io
import multiprocessing
import os
import queue
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

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
from creditexchange.node.records.sources import (
    FORMATS,
    CountingReader,
    FileIdentity,
    column_map,
    csv_rows,
    file_format,
    file_identity,
    jsonl_rows,
    open_regular_file,
    python_encoding,
    read_header,
    scan_file,
)
from creditexchange.node.records.validation import RowValidator, ValidRow

__all__ = [
    "FORMATS",
    "PARALLEL_FROM_BYTES",
    "ImportSummary",
    "Progress",
    "Reject",
    "file_format",
    "import_file",
]

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
    identity: FileIdentity  # the file checked before anything was written


class _Chunk(NamedTuple):
    rows: list[ValidRow]
    rejects: list[Reject]
    read: int
    consumed: int


def _validated_chunks(source: _Source) -> Generator[_Chunk, None, None]:
    """Read and validate a file, yielding chunks of valid rows and rejects."""
    theme = Theme.model_validate(source.theme)
    validator = RowValidator(theme, source.department)
    opened = open_regular_file(
        source.path, follow_symlinks=source.follow_symlinks, identity=source.identity
    )
    with opened as raw:
        counter = CountingReader(raw)
        text = io.TextIOWrapper(io.BufferedReader(counter), encoding=source.encoding, newline="")
        rows = (csv_rows if source.fmt == "csv" else jsonl_rows)(text, theme, source.path)
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
    decoding = python_encoding(encoding)
    with open_regular_file(path, follow_symlinks=follow_symlinks) as file:
        identity = file_identity(file)
        digest, size = scan_file(file, path, decoding)
        if fmt == "csv":  # a bad header refuses the file before anything is written
            file.seek(0)
            text = io.TextIOWrapper(file, encoding=decoding, newline="")
            try:
                column_map(theme, read_header(csv.reader(text), path), path)
            finally:
                text.detach()
    today_iso = (today or china_today()).isoformat()
    plan = _Source(
        path,
        fmt,
        decoding,
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
