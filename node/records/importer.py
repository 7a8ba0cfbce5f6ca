"""Import of source departments' files (CSV, JSON Lines, Excel workbooks) into the store.

The guarantees an operator relies on:

* **Only the file named, decoded, with a header of the theme's fields.** How a file
  is opened, checked and read is :mod:`~creditexchange.node.records.sources`'s.
  Before a single row is written the whole file has been read once (its SHA-256,
  its encoding), its header checked, and its record keys listed.
* **A key the file gives twice is nobody's.** Every row sharing a record key with
  another row of the same file is rejected, each naming all their lines: the
  department must say which is right. (The key pass keeps one hash per row, about
  70 bytes a row, for the length of the pass.)
* **An older row never silently undoes a newer one.** Each stored version keeps its
  *source time*: the row's own update time where the theme has one
  (``dates.updated_at`` in the catalog), otherwise its file's export time (the
  operator's ``exported_at``, else the file's modification time). A changed row
  whose source time is older than the stored version's, or — when the time cannot be
  trusted to decide (a modification time, a version stored without one) — whose
  content is a version the record already had and left, is *stale*: rejected
  (reason code ``stale``) unless the operator passes ``allow_older``.
* **Bad rows never touch good data.** Every rejected row goes to the reject report
  (file, line, record key, subject, field, value, reason code, reason) and is not
  written; the rows around it are. Beside the report, the rejected rows themselves
  are written in the file's own format (same header, same encoding, same cells), so
  the department can correct just those and send them back to be imported.
* **The report shows no more than it must.** A natural person's identity number and
  name are masked; a sensitive field's value is withheld; any cell of the file
  appears only as :func:`~creditexchange.errors.excerpt` shows it. A report cell
  that starts like a formula (``= + - @``, tab, carriage return) gets a leading
  ``'``, so a spreadsheet shows it as text.
* **Idempotent.** A record is identified by (theme, record_key). The same content
  again is *unchanged* and writes nothing; changed content replaces the record,
  raising its version, and the replaced version goes to ``record_versions``.
* **Flat memory.** Rows are read as a stream and written in chunks of
  ``chunk_rows``, one transaction per chunk.
* **A failed import leaves nothing behind but its committed chunks.** Whatever
  stops it, the reject report is closed with every reject found so far and a
  validating worker process is stopped. Importing the file again finishes it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, NamedTuple

import orjson
from sqlalchemy import Connection, Engine, insert, update

from creditexchange.clock import CST, china_today, utc_now
from creditexchange.errors import CatalogError, ImportFileError, excerpt
from creditexchange.identifiers import mask_identifier, mask_subject_name
from creditexchange.node.catalog import Catalog, Theme
from creditexchange.node.database.models import IMPORT_BATCHES, IMPORT_REJECTS
from creditexchange.node.records import repository
from creditexchange.node.records.reading import (
    DUPLICATE_KEY,
    STALE,
    SUBJECT_CONFLICT,
    Reject,
    Source,
    WorkerChunks,
    validated_chunks,
)
from creditexchange.node.records.repository import Existing
from creditexchange.node.records.sources import (
    FORMATS,
    Table,
    file_format,
    file_identity,
    open_private_file,
    open_regular_file,
    open_table,
    python_encoding,
    scan_file,
    write_rejected_rows,
)
from creditexchange.node.records.spreadsheets import spreadsheet_text
from creditexchange.node.records.validation import ValidRow

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
    stale: int = 0
    repeated: int = 0
    past_publicity: int = 0
    reject_report: Path | None = None
    rejected_rows: Path | None = None
    file_digest: str = ""
    exported_at: dt.datetime | None = None
    rejects_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.unchanged


def _row_reject(row: ValidRow, field: str, reason: str, code: str, value: str = "") -> Reject:
    kind = row.subject_type
    return Reject(
        row.line,
        field,
        reason,
        code,
        excerpt(row.record_key),
        mask_identifier(row.subject_id, kind),
        mask_subject_name(row.subject_name, kind),
        value,
    )


# --- the key pass: keys a file gives twice ---------------------------------------------


def _repeated_keys(open_again: Callable[[], Table]) -> dict[str, list[int]]:
    """Record keys on more than one row of the file: key -> every line giving it.

    One pass keeps the hash of each key; only when two hashes meet does a second pass
    collect the lines of the keys behind them (a hash collision is told apart there).
    """
    seen: set[int] = set()
    twice: set[int] = set()
    for _, key in open_again().record_keys():
        h = hash(key)
        if h in seen:
            twice.add(h)
        else:
            seen.add(h)
    del seen
    if not twice:
        return {}
    lines: dict[str, list[int]] = {}
    for line, key in open_again().record_keys():
        if hash(key) in twice:
            lines.setdefault(key, []).append(line)
    return {key: found for key, found in lines.items() if len(found) > 1}


def _lines_text(lines: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:10])
    return shown + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")


# --- writing ----------------------------------------------------------------------------


class _Counts(NamedTuple):
    inserted: int
    updated: int
    unchanged: int


class _Writer:
    """Writes validated chunks on one connection: one transaction per chunk.

    What to write is decided here (new, changed, unchanged, repeated, stale); how
    records and subjects are written is the records repository's.
    """

    def __init__(
        self,
        conn: Connection,
        theme: Theme,
        source: str,
        batch_id: int,
        *,
        exported_at: dt.datetime,
        time_decides: bool,
        allow_older: bool,
        repeated: Mapping[str, list[int]],
    ) -> None:
        self.conn = conn
        self.theme = theme.code
        self.source = source
        self.batch_id = batch_id
        self.exported_at = exported_at
        self.time_decides = time_decides
        self.allow_older = allow_older
        self.repeated = repeated
        self._updated_field = theme.dates.updated_at

    def write(self, rows: list[ValidRow], rejects: list[Reject]) -> _Counts:
        """Write one chunk; returns what it did and appends its rejects."""
        if self.repeated:
            rows = self._not_repeated(rows, rejects)
        if not rows:
            self.conn.commit()
            return _Counts(0, 0, 0)
        now = utc_now()
        existing = repository.existing_records(self.conn, self.theme, [r.record_key for r in rows])
        new: list[ValidRow] = []
        changed: list[tuple[Existing, ValidRow]] = []
        unchanged = 0
        for r in rows:
            stored = existing.get(r.record_key)
            if stored is None:
                new.append(r)
            elif stored.content_hash == r.content_hash:
                unchanged += 1
            else:
                changed.append((stored, r))
        if changed and not self.allow_older:
            changed = self._not_older(changed, rejects)
        new, changed = self._write_subjects(new, changed, rejects, now)
        repository.insert_records(
            self.conn,
            self.theme,
            self.source,
            self.batch_id,
            new,
            now,
            [self._source_time(r) for r in new],
        )
        repository.replace_records(
            self.conn,
            [(stored.id, r) for stored, r in changed],
            self.source,
            self.batch_id,
            now,
            [self._source_time(r) for _, r in changed],
        )
        self.conn.commit()
        return _Counts(len(new), len(changed), unchanged)

    def _source_time(self, row: ValidRow) -> dt.datetime:
        if self._updated_field is not None:
            stated = orjson.loads(row.fields_json).get(self._updated_field)
            if stated:
                return dt.datetime.combine(dt.date.fromisoformat(stated), dt.time(), CST)
        return self.exported_at

    def _not_repeated(self, rows: list[ValidRow], rejects: list[Reject]) -> list[ValidRow]:
        kept: list[ValidRow] = []
        for r in rows:
            lines = self.repeated.get(r.record_key)
            if lines is None:
                kept.append(r)
                continue
            rejects.append(
                _row_reject(
                    r,
                    "record_key",
                    f"record key {excerpt(r.record_key)} is on {len(lines)} rows of this file "
                    f"(lines {_lines_text(lines)}); none of them was imported: keep the right "
                    "one and import it again",
                    DUPLICATE_KEY,
                    excerpt(r.record_key),
                )
            )
        return kept

    def _not_older(
        self, changed: list[tuple[Existing, ValidRow]], rejects: list[Reject]
    ) -> list[tuple[Existing, ValidRow]]:
        """Changed rows that may replace the stored version; the stale ones are rejected."""
        undecided = [
            stored.id
            for stored, r in changed
            if stored.source_time is None
            or not self.time_decides
            or stored.source_time == self._source_time(r)
        ]
        earlier = repository.replaced_versions(self.conn, undecided) if undecided else {}
        kept: list[tuple[Existing, ValidRow]] = []
        for stored, r in changed:
            row_time = self._source_time(r)
            reason = None
            if stored.source_time is not None and row_time < stored.source_time:
                reason = (
                    f"the row is older than the stored version {stored.version} of record "
                    f"{excerpt(r.record_key)} (its source time {_when(row_time)} is before "
                    f"{_when(stored.source_time)}); importing it would undo a later change"
                )
            else:
                left = next((v for v in earlier.get(stored.id, ()) if v[1] == r.content_hash), None)
                if left is not None:
                    reason = (
                        f"the row is version {left[0]} of record {excerpt(r.record_key)}, which "
                        f"was replaced on {_when(left[2])} and is now at version "
                        f"{stored.version}; importing it would undo that change"
                    )
            if reason is None:
                kept.append((stored, r))
                continue
            rejects.append(
                _row_reject(
                    r,
                    "(row)",
                    reason + ". If the department confirms this row is right, import it again "
                    "with --allow-older",
                    STALE,
                )
            )
        return kept

    def _write_subjects(
        self,
        new: list[ValidRow],
        changed: list[tuple[Existing, ValidRow]],
        rejects: list[Reject],
        now: dt.datetime,
    ) -> tuple[list[ValidRow], list[tuple[Existing, ValidRow]]]:
        """Store the rows' new subjects and new names; a row whose subject is stored as
        another type is rejected."""
        rows = new + [r for _, r in changed]
        stored = repository.stored_subjects(self.conn, {r.subject_id for r in rows})
        fresh: dict[str, tuple[str, str]] = {}
        renamed: dict[str, str] = {}
        conflicting: set[int] = set()
        for r in rows:
            known = stored.get(r.subject_id) or fresh.get(r.subject_id)
            if known is not None and known[0] != r.subject_type:
                conflicting.add(r.line)
                rejects.append(
                    _row_reject(
                        r,
                        "subject_type",
                        f"subject {mask_identifier(r.subject_id, r.subject_type)} is stored as "
                        f"{known[0]}, this row says {r.subject_type}; correct the row (or the "
                        "stored subject) and import again",
                        SUBJECT_CONFLICT,
                        r.subject_type,
                    )
                )
            elif known is None:
                fresh[r.subject_id] = (r.subject_type, r.subject_name)
            elif r.subject_id in stored and stored[r.subject_id][1] != r.subject_name:
                renamed[r.subject_id] = r.subject_name
        repository.add_subjects(self.conn, fresh, now)
        repository.rename_subjects(self.conn, renamed, now)
        if not conflicting:
            return new, changed
        return (
            [r for r in new if r.line not in conflicting],
            [(s, r) for s, r in changed if r.line not in conflicting],
        )


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M")


# --- the reject report ------------------------------------------------------------------

_REPORT_HEADER = (
    "file", "line", "record_key", "subject_id", "subject_name", "field", "value", "code", "reason",
)  # fmt: skip


class _RejectReport:
    """The reject report of one import: a CSV (UTF-8 with BOM, so Excel reads it).

    Fields, values and reasons carry text from the department's file, so every text
    cell goes through :func:`~creditexchange.node.records.spreadsheets.spreadsheet_text`.
    """

    def __init__(self, path: Path, source: Path) -> None:
        self.path = path
        self.source = spreadsheet_text(str(source))
        self._file: IO[str] | None = None
        self._writer: Any = None

    def add(self, rejects: Sequence[Reject]) -> None:
        if not rejects:
            return
        if self._writer is None:
            self._file = io.TextIOWrapper(
                open_private_file(self.path), encoding="utf-8-sig", newline=""
            )
            self._writer = csv.writer(self._file)
            self._writer.writerow(_REPORT_HEADER)
        for r in sorted(rejects, key=lambda r: r.line):
            self._writer.writerow(
                [self.source, r.line]
                + [
                    spreadsheet_text(cell)
                    for cell in (
                        r.record_key,
                        r.subject_id,
                        r.subject_name,
                        r.field,
                        r.value,
                        r.code,
                        r.reason,
                    )
                ]
            )

    def close(self) -> Path | None:
        if self._file is None:
            return None
        self._file.close()
        return self.path


PARALLEL_FROM_BYTES = 8 << 20
"""Files at least this large are validated in a worker process."""


def _export_time(file: BinaryIO, stated: dt.datetime | None) -> tuple[dt.datetime, bool]:
    """The file's export time, and whether it was stated (else its modification time)."""
    now = utc_now()
    if stated is not None:
        stated = stated if stated.tzinfo else stated.replace(tzinfo=CST)
        if stated > now + _CLOCK_SLACK:
            raise ImportFileError(
                f"the export time {_when(stated)} is in the future: rows stamped with it would "
                "refuse every later correction as older. Check --exported-at (China time). "
                "Nothing was imported."
            )
        return stated, True
    # A modification time in the future (a clock set wrong) counts as now.
    modified = dt.datetime.fromtimestamp(os.fstat(file.fileno()).st_mtime, dt.UTC)
    return min(modified, now), False


_CLOCK_SLACK = dt.timedelta(minutes=5)
"""How far ahead of this node's clock a stated export time may be (clocks differ)."""


def _rejects_by_reason(rejects: Sequence[Reject]) -> Counter[tuple[str, str]]:
    """Rows rejected, by (field, reason code); a row counts once in each of its pairs."""
    return Counter((f, code) for _, f, code in {(r.line, r.field[:64], r.code) for r in rejects})


def import_file(
    engine: Engine,
    catalog: Catalog,
    path: Path,
    theme_code: str,
    *,
    reject_dir: Path,
    source: str | None = None,
    encoding: str = "utf-8",
    sheet: str | None = None,
    exported_at: dt.datetime | None = None,
    allow_older: bool = False,
    chunk_rows: int = 5000,
    today: dt.date | None = None,
    progress: Progress | None = None,
    parallel: bool | None = None,
    follow_symlinks: bool = False,
) -> ImportSummary:
    """Import one department file into ``theme_code``; see the module's guarantees.

    ``sheet`` names a workbook's sheet (or its 1-based number; default the first).
    ``exported_at`` is when the department exported the file (default: the file's
    modification time); ``allow_older`` applies rows older than the stored versions.
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
    today_iso = (today or china_today()).isoformat()
    with open_regular_file(path, follow_symlinks=follow_symlinks) as file:
        identity = file_identity(file)
        digest, size = scan_file(file, path, decoding, fmt)
        export_time, time_stated = _export_time(file, exported_at)

        def open_again() -> Table:
            return open_table(file, fmt, decoding, theme, path, sheet)

        header = open_again().header  # a bad header refuses the file before anything
        plan = Source(
            path,
            fmt,
            decoding,
            sheet,
            theme.model_dump(),
            department,
            chunk_rows,
            follow_symlinks,
            identity,
        )
        use_worker = size >= PARALLEL_FROM_BYTES if parallel is None else parallel
        chunks = WorkerChunks(plan) if use_worker else validated_chunks(plan)
        try:
            repeated = _repeated_keys(open_again)  # while the worker starts and validates
        except BaseException:
            chunks.close()
            raise

    with engine.connect() as conn:
        batch_id = conn.execute(
            insert(IMPORT_BATCHES).values(
                theme=theme.code,
                source_department=department,
                file_name=str(path),
                file_digest=digest,
                file_format=fmt,
                encoding=encoding,
                catalog_version=catalog.catalog_version,
                started_at=utc_now(),
                exported_at=export_time,
                sheet=sheet,
                allow_older=allow_older,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.commit()
        summary = ImportSummary(
            path, theme.code, batch_id, file_digest=digest, exported_at=export_time
        )
        report = _RejectReport(reject_dir / f"batch-{batch_id}-{theme.code}.rejects.csv", path)
        by_reason: Counter[tuple[str, str]] = Counter()
        rejected_lines: set[int] = set()
        writer = _Writer(
            conn,
            theme,
            department,
            batch_id,
            exported_at=export_time,
            time_decides=time_stated or theme.dates.updated_at is not None,
            allow_older=allow_older,
            repeated=repeated,
        )
        try:
            for chunk in chunks:
                rejects = chunk.rejects
                counts = writer.write(chunk.rows, rejects)
                rejected = {r.line for r in rejects}
                rejected_lines |= rejected
                by_reason += _rejects_by_reason(rejects)
                summary.read += chunk.read
                summary.inserted += counts.inserted
                summary.updated += counts.updated
                summary.unchanged += counts.unchanged
                summary.rejected += len(rejected)
                summary.stale += len({r.line for r in rejects if r.code == STALE})
                summary.repeated += len({r.line for r in rejects if r.code == DUPLICATE_KEY})
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
            conn.rollback()  # a chunk that failed midway; committed chunks stay
            chunks.close()  # stops a validating worker that is still running
            summary.reject_report = report.close()
        if rejected_lines:
            summary.rejected_rows = _write_rejected_rows(
                plan, header, rejected_lines, reject_dir / f"batch-{batch_id}-{theme.code}.rows"
            )
        summary.rejects_by_reason = {f"{f}:{c}": n for (f, c), n in sorted(by_reason.items())}
        if by_reason:
            conn.execute(
                insert(IMPORT_REJECTS),
                [
                    {"batch_id": batch_id, "field": f, "reason": c, "rows": n}
                    for (f, c), n in sorted(by_reason.items())
                ],
            )
        conn.execute(
            update(IMPORT_BATCHES)
            .where(IMPORT_BATCHES.c.id == batch_id)
            .values(
                finished_at=utc_now(),
                rows_read=summary.read,
                inserted=summary.inserted,
                updated=summary.updated,
                unchanged=summary.unchanged,
                rejected=summary.rejected,
                stale=summary.stale,
            )
        )
        conn.commit()
    return summary


def _write_rejected_rows(source: Source, header: list[str], lines: set[int], path: Path) -> Path:
    """The rejected rows, as the file has them, in a file of its format beside the report."""
    theme = Theme.model_validate(source.theme)
    with source.open() as raw:
        table = open_table(raw, source.fmt, source.encoding, theme, source.path, source.sheet)
        # A CSV keeps its byte-order mark (Excel reads UTF-8 by it); JSON Lines has none.
        plain = source.fmt == "jsonl" and source.encoding == "utf-8-sig"
        encoding = "utf-8" if plain else source.encoding
        return write_rejected_rows(path, source.fmt, encoding, header, table.raw_rows(lines))
