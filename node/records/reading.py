"""Reading and validating a department's file in chunks, here or in a worker process.

A large file is validated in a second process while the importer writes, so an
import uses two cores. This module is what that process runs: it imports the
file's readers and the row validator, not the database, so the worker starts fast.

Every row comes out either valid (a :class:`~creditexchange.node.records.validation.ValidRow`)
or as its :class:`Reject` reasons, each naming the row's record key and subject as a
report may show them: a natural person's identity number and name masked, a sensitive
field's value withheld, any cell of the file only as
:func:`~creditexchange.errors.excerpt` shows it.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple

from creditexchange.errors import ImportFileError, excerpt
from creditexchange.identifiers import mask_identifier, mask_subject_name
from creditexchange.node.catalog import FieldType, Theme
from creditexchange.node.records.sources import FileIdentity, open_regular_file, open_table
from creditexchange.node.records.validation import (
    PROBLEM_CODES,
    SUBJECT_TYPE_LABELS,
    Problem,
    RowValidator,
    ValidRow,
)
from creditexchange.subjects import SubjectType

__all__ = [
    "DUPLICATE_KEY",
    "REJECT_CODES",
    "STALE",
    "SUBJECT_CONFLICT",
    "Chunk",
    "Describer",
    "Reject",
    "Source",
    "WorkerChunks",
    "validated_chunks",
]

_WITHHELD = "(value withheld)"


DUPLICATE_KEY = "duplicate_key"  # the file gives the row's record key on another row too
STALE = "stale"  # the row is older than the version stored
SUBJECT_CONFLICT = "subject_conflict"  # the row's subject is stored as another type
REJECT_CODES: Final = (*PROBLEM_CODES, DUPLICATE_KEY, STALE, SUBJECT_CONFLICT)
"""Every reason code a reject carries: validation's, and the importer's own."""


@dataclass(frozen=True, slots=True)
class Reject:
    """One reason a row was not imported. ``subject_id`` and ``subject_name`` are as the
    report may show them (a natural person's masked), ``value`` the offending cell."""

    line: int
    field: str
    reason: str
    code: str
    record_key: str = ""
    subject_id: str = ""
    subject_name: str = ""
    value: str = ""


class Describer:
    """Record key, subject and value of a rejected row, as the report may show them."""

    def __init__(self, theme: Theme) -> None:
        self._hidden = {
            f.name for f in theme.fields if f.sensitive or f.type is FieldType.ID_NUMBER
        }

    def rejects(self, line: int, row: Mapping[str, str], problems: list[Problem]) -> list[Reject]:
        subject_type = (row.get("subject_type") or "").strip()
        subject_id = (row.get("subject_id") or "").strip()
        kind = SUBJECT_TYPE_LABELS.get(subject_type, subject_type)
        if len(subject_id) == 18 and subject_id[:17].isdigit():  # a person's number, whatever
            kind = SubjectType.INDIVIDUAL  # the type cell says
        shown_id = mask_identifier(subject_id, kind) if subject_id else ""
        name = (row.get("subject_name") or "").strip()
        shown_name = mask_subject_name(name, kind) if name else ""
        key = excerpt((row.get("record_key") or "").strip()) if row.get("record_key") else ""
        return [
            Reject(
                line,
                p.field,
                p.reason,
                p.code,
                key,
                shown_id,
                shown_name,
                self._value(p.field, row, shown_id, shown_name),
            )
            for p in problems
        ]

    def _value(self, name: str, row: Mapping[str, str], shown_id: str, shown_name: str) -> str:
        raw = row.get(name)
        if raw is None or not raw.strip():
            return ""
        if name in self._hidden:
            return _WITHHELD
        if name == "subject_id":
            return shown_id
        if name == "subject_name":
            return shown_name
        return excerpt(raw.strip())


@dataclass(frozen=True)
class Source:
    """What reading and validating one file needs; plain data, so a worker can take it."""

    path: Path
    fmt: str
    encoding: str
    sheet: str | None
    theme: dict[str, Any]  # Theme.model_dump(): models are rebuilt, not pickled
    department: str
    chunk_rows: int
    follow_symlinks: bool
    identity: FileIdentity  # the file checked before anything was written

    def open(self) -> BinaryIO:
        return open_regular_file(
            self.path, follow_symlinks=self.follow_symlinks, identity=self.identity
        )


class Chunk(NamedTuple):
    rows: list[ValidRow]
    rejects: list[Reject]
    read: int
    consumed: int


def validated_chunks(source: Source) -> Generator[Chunk, None, None]:
    """Read and validate a file, yielding chunks of valid rows and rejects."""
    theme = Theme.model_validate(source.theme)
    validator = RowValidator(theme, source.department)
    describer = Describer(theme)
    with source.open() as raw:
        table = open_table(raw, source.fmt, source.encoding, theme, source.path, source.sheet)
        valid: list[ValidRow] = []
        rejects: list[Reject] = []
        read = 0
        check = validator.check
        for line, row in table.rows():
            read += 1
            checked = check(line, row) if not isinstance(row, list) else row
            if type(checked) is ValidRow:
                valid.append(checked)
            elif isinstance(row, list):
                rejects.extend(describer.rejects(line, {}, row))
            else:
                rejects.extend(describer.rejects(line, row, checked))  # type: ignore[arg-type]
            if read >= source.chunk_rows:
                yield Chunk(valid, rejects, read, table.consumed)
                valid, rejects, read = [], [], 0
        yield Chunk(valid, rejects, read, table.consumed)


def _validate_in_worker(source: Source, chunks: Any) -> None:
    try:
        for chunk in validated_chunks(source):
            chunks.put(chunk)
        chunks.put(None)
    except BaseException as exc:  # handed to the parent, which raises it
        chunks.put(exc)


class WorkerChunks:
    """Validation in a second process while this one writes: two cores, one import.

    The worker starts at once, so it validates while the caller does other work (the
    key pass); iterate to receive its chunks, and :meth:`close` to stop it, whatever
    happened. The queue is bounded, so memory stays flat; a worker that dies is
    reported, and what was committed before stays consistent (re-running is idempotent).
    """

    def __init__(self, source: Source) -> None:
        # A fork server that has imported this module alone: a worker starts in a
        # moment, without the caller's own modules (a command line, a benchmark) and
        # without forking a process that may run threads.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        self._source = source
        self._queue = context.Queue(maxsize=4)
        self._worker = context.Process(
            target=_validate_in_worker, args=(source, self._queue), daemon=True
        )
        self._worker.start()

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            try:
                item = self._queue.get(timeout=1)
            except queue.Empty:
                if not self._worker.is_alive():
                    raise ImportFileError(
                        f"{self._source.path}: the validating process stopped (exit code "
                        f"{self._worker.exitcode}); the chunks written so far are complete; "
                        "import the file again to finish"
                    ) from None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        if self._worker.is_alive():
            self._worker.terminate()
        self._worker.join()
