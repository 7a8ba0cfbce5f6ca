"""How a serving provider reaches the records repository: one kept connection.

Every query reads the store once (``records.repository.read_subjects``). Going
through the connection pool costs more than the read itself, so the provider
keeps one connection for its reads:

* SQLite: a connection of the pool kept for reads on the event loop. A read of a
  few subjects is local and takes less than handing it to a thread, so it runs
  inline; a large batch goes to a thread through the pool.
* PostgreSQL: a connection in autocommit used only by its own worker thread, so a
  read costs one round trip (through the pool it costs three: the pre-ping, the
  query, the rollback). A broken connection (a restarted server) is replaced once
  per read before it fails. The reads asked while one is under way wait for it and
  are then made together, as one query (up to :data:`SHARED_READ_SUBJECTS` subjects);
  each caller gets exactly what a read of its own would have given, its subjects and
  their records in its themes, in the same order. Under load a query, a thread handoff
  and a round trip serve many calls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine

from creditexchange.node.records.repository import StoredRecord, SubjectRecords, read_subjects

__all__ = [
    "INLINE_SUBJECTS",
    "SHARED_READ_SUBJECTS",
    "PostgresReader",
    "Reader",
    "SqliteReader",
    "open_reader",
]

INLINE_SUBJECTS = 16  # up to this many, a SQLite read costs less than a thread handoff
SHARED_READ_SUBJECTS = 1024  # the most subjects of waiting reads made together as one query


class Reader(Protocol):
    async def read(
        self, subject_ids: Sequence[str], themes: Collection[str], today: dt.date
    ) -> SubjectRecords: ...

    def close(self) -> None: ...


def _read_pooled(
    engine: Engine, subject_ids: Sequence[str], themes: Collection[str], today: dt.date
) -> SubjectRecords:
    with engine.connect() as conn:
        return read_subjects(
            conn.connection.driver_connection, conn.dialect, subject_ids, themes, today
        )


class SqliteReader:
    """One SQLite connection of the pool kept for the provider's reads on the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = engine.raw_connection()

    async def read(
        self, subject_ids: Sequence[str], themes: Collection[str], today: dt.date
    ) -> SubjectRecords:
        if len(subject_ids) <= INLINE_SUBJECTS:
            return read_subjects(
                self._connection.driver_connection,
                self.engine.dialect,
                subject_ids,
                themes,
                today,
            )
        return await asyncio.to_thread(_read_pooled, self.engine, subject_ids, themes, today)

    def close(self) -> None:
        self._connection.close()


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A read waiting for the PostgreSQL reader, and the caller waiting for its result."""

    subject_ids: Sequence[str]
    themes: Collection[str] | None
    today: dt.date
    result: asyncio.Future[SubjectRecords]


class PostgresReader:
    """One PostgreSQL connection kept for the provider's reads, used from one thread;
    the reads that wait meanwhile are made together."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="postgres-reader")
        self._busy = False  # a read is under way: a caller's own, or the waiting ones'
        self._waiting: list[_Wanted] = []  # the reads asked meanwhile, to be made together
        self._reading: asyncio.Task[None] | None = None  # making them

    def _connect(self) -> Any:
        import psycopg

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        return psycopg.connect(*args, **kwargs, autocommit=True)

    def _read(
        self, subject_ids: Sequence[str], themes: Collection[str] | None, today: dt.date
    ) -> SubjectRecords:
        import psycopg

        for attempt in (1, 2):
            if self._connection is None or self._connection.closed:
                self._connection = self._connect()
            try:
                return read_subjects(
                    self._connection, self.engine.dialect, subject_ids, themes, today
                )
            except psycopg.OperationalError:
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(
        self, subject_ids: Sequence[str], themes: Collection[str], today: dt.date
    ) -> SubjectRecords:
        loop = asyncio.get_running_loop()
        if self._busy:  # wait, and be read with the others waiting
            wanted = _Wanted(subject_ids, themes, today, loop.create_future())
            self._waiting.append(wanted)
            return await wanted.result
        self._busy = True
        try:
            read = self._read
            return await loop.run_in_executor(self._executor, read, subject_ids, themes, today)
        finally:
            if self._waiting:
                self._reading = loop.create_task(self._read_waiting())
            else:
                self._busy = False

    async def _read_waiting(self) -> None:
        """Make the waiting reads, those of one day and up to SHARED_READ_SUBJECTS subjects
        together, until none waits."""
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch = _next_batch(self._waiting)
                ids, themes = _together(batch)
                try:
                    found = await loop.run_in_executor(
                        self._executor, self._read, ids, themes, batch[0].today
                    )
                except Exception as exc:  # every read of the batch fails with it
                    for wanted in batch:
                        if not wanted.result.done():
                            wanted.result.set_exception(exc)
                    continue
                except BaseException:
                    self._waiting[:0] = batch
                    raise
                for wanted, part in zip(batch, _shares(found, batch), strict=True):
                    if not wanted.result.done():
                        wanted.result.set_result(part)
        finally:
            self._busy, self._reading = False, None
            for wanted in self._waiting:  # left only when the reading itself was cancelled
                wanted.result.cancel()
            self._waiting.clear()

    def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self._executor.submit(close_connection).result()
        self._executor.shutdown()


def _next_batch(waiting: list[_Wanted]) -> list[_Wanted]:
    """Take from ``waiting`` the first read and those after it of the same day, while they
    hold no more than SHARED_READ_SUBJECTS subjects together (the first is always taken)."""
    first = waiting[0]
    batch, kept, subjects = [first], [], len(first.subject_ids)
    for wanted in waiting[1:]:
        if wanted.today == first.today and subjects + len(wanted.subject_ids) <= (
            SHARED_READ_SUBJECTS
        ):
            batch.append(wanted)
            subjects += len(wanted.subject_ids)
        else:
            kept.append(wanted)
    waiting[:] = kept
    return batch


def _together(batch: Sequence[_Wanted]) -> tuple[list[str], set[str] | None]:
    """The subjects and themes of one query answering every read of ``batch``."""
    if len(batch) == 1:
        only = batch[0]
        return list(only.subject_ids), None if only.themes is None else set(only.themes)
    ids: dict[str, None] = {}
    themes: set[str] | None = set()
    for wanted in batch:
        ids.update(dict.fromkeys(wanted.subject_ids))
        if wanted.themes is None:
            themes = None
        elif themes is not None:
            themes.update(wanted.themes)
    return list(ids), themes


def _shares(found: SubjectRecords, batch: Sequence[_Wanted]) -> list[SubjectRecords]:
    """What each read of ``batch`` would have read alone, from what the one query found:
    its subjects, and their records in its themes, in the query's order."""
    if len(batch) == 1:
        return [found]
    by_subject: dict[str, list[StoredRecord]] = {}
    for record in found.records:
        by_subject.setdefault(record.subject_id, []).append(record)
    position = {subject: n for n, subject in enumerate(found.subjects)}
    shares = []
    for wanted in batch:
        held = [s for s in set(wanted.subject_ids) if s in position]
        held.sort(key=position.__getitem__)
        subjects = {s: found.subjects[s] for s in held}
        themes = wanted.themes
        records = [
            record
            for subject in subjects
            for record in by_subject.get(subject, ())
            if themes is None or record.theme in themes
        ]
        shares.append(SubjectRecords(subjects, records))
    return shares


def open_reader(engine: Engine) -> Reader:
    """The provider's reader for the store behind ``engine``."""
    return SqliteReader(engine) if engine.dialect.name == "sqlite" else PostgresReader(engine)
