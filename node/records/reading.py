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

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
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
    "serve_worker",
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


_FRAME: Final = struct.Struct("<Q")  # the length of each pickled message the worker sends


def serve_worker() -> None:
    """The validating worker process: reads a pickled :class:`Source` on stdin and writes
    its chunks to stdout, each a length and a pickle, then ``None`` (or the exception)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the chunks
    with out:
        try:
            source = pickle.load(sys.stdin.buffer)
            for c in validated_chunks(source):
                # Rows travel as plain tuples: half the cost of pickling ValidRows.
                _send(out, ([tuple(r) for r in c.rows], c.rejects, c.read, c.consumed))
            _send(out, None)
        except BaseException as exc:  # handed to the parent, which raises it
            _send(out, exc)


def _send(out: BinaryIO, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)))
    out.write(data)
    out.flush()


# A fresh interpreter that imports this module alone: it starts in a fraction of a
# second whatever the caller has imported (a command line, a server), shares no
# threads or locks with it, and -P keeps the working directory off its module path.
_WORKER_COMMAND: Final = (
    "from creditexchange.node.records.reading import serve_worker; serve_worker()"
)
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[3])


def _received(data: bytes) -> Chunk | BaseException | bool:
    message = pickle.loads(data)
    if message is None:
        return True
    if isinstance(message, BaseException):
        return message
    rows, rejects, read, consumed = message
    return Chunk([tuple.__new__(ValidRow, r) for r in rows], rejects, read, consumed)


class WorkerChunks:
    """Validation in a second process while this one writes: two cores, one import.

    The worker starts at once, so it validates while the caller does other work (the
    key pass); iterate to receive its chunks, and :meth:`close` to stop it, whatever
    happened. At most a few chunks wait to be written, so memory stays flat; a worker
    that dies is reported, and what was committed before stays consistent (re-running
    is idempotent).
    """

    def __init__(self, source: Source) -> None:
        self._source = source
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (_PACKAGE_ROOT, env.get("PYTHONPATH"))))
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-c", _WORKER_COMMAND],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        # Chunks received, then True (the end), an exception, or None (the worker died).
        self._messages: queue.Queue[Chunk | BaseException | bool | None] = queue.Queue(4)
        self._stopping = threading.Event()
        self._reader = threading.Thread(target=self._read, name="import-worker", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Hands the worker its source, then its chunks to ``__iter__`` (``None``: it ended).

        Chunks are unpickled here, while the importer's thread waits on the database.
        """
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        try:
            with stdin:
                stdin.write(pickle.dumps(self._source, protocol=pickle.HIGHEST_PROTOCOL))
            while True:
                head = stdout.read(_FRAME.size)
                data = stdout.read(_FRAME.unpack(head)[0]) if len(head) == _FRAME.size else b""
                message = _received(data) if data else None
                if not self._put(message) or not isinstance(message, Chunk):
                    return
        except OSError:  # the worker is gone: its exit code tells
            self._put(None)
        except BaseException as exc:  # raised in the importer's thread
            self._put(exc)

    def _put(self, message: Chunk | BaseException | bool | None) -> bool:
        while not self._stopping.is_set():
            try:
                self._messages.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            message = self._messages.get()
            if message is None:
                raise ImportFileError(
                    f"{self._source.path}: the validating process stopped (exit code "
                    f"{self._process.wait()}); the chunks written so far are complete; "
                    "import the file again to finish"
                )
            if message is True:
                return
            if isinstance(message, BaseException):
                raise message
            assert isinstance(message, Chunk)
            yield message

    def close(self) -> None:
        self._stopping.set()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._reader.join()
        if self._process.stdout is not None:
            self._process.stdout.close()
