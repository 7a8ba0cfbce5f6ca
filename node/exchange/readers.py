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
  per read before it fails.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from sqlalchemy import Engine

from creditexchange.node.records.repository import SubjectRecords, read_subjects

__all__ = ["INLINE_SUBJECTS", "PostgresReader", "Reader", "SqliteReader", "open_reader"]

INLINE_SUBJECTS = 16  # up to this many, a SQLite read costs less than a thread handoff


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


class PostgresReader:
    """One PostgreSQL connection kept for the provider's reads, used from one thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="postgres-reader")

    def _connect(self) -> Any:
        import psycopg

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        return psycopg.connect(*args, **kwargs, autocommit=True)

    def _read(
        self, subject_ids: Sequence[str], themes: Collection[str], today: dt.date
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
        return await loop.run_in_executor(self._executor, self._read, subject_ids, themes, today)

    def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self._executor.submit(close_connection).result()
        self._executor.shutdown()


def open_reader(engine: Engine) -> Reader:
    """The provider's reader for the store behind ``engine``."""
    return SqliteReader(engine) if engine.dialect.name == "sqlite" else PostgresReader(engine)
