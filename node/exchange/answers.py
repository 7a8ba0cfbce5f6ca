"""Reading what a decision allows and shaping it as the decision says.

The store is read only for the themes the policy allowed, and only records still
public are served (withdrawn records and those past their publicity end are left
out, as ``node.lookup`` does for the operator). In ``full`` mode each field is
revealed, masked (identity numbers as ``441302********3314``, other values down to
their first character) or left out, as the decision lists it; in ``check`` mode
nothing but hit / no-hit leaves the node. A record under objection is marked so
in both modes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine

from creditexchange.identifiers import mask_name, mask_resident_id
from creditexchange.node.catalog import Catalog, FieldType
from creditexchange.node.publicity import is_public
from creditexchange.node.store.database import driver_sql
from creditexchange.node.store.models import RecordStatus
from creditexchange.policy.document import Mode
from creditexchange.policy.engine import Decision
from creditexchange.v1 import exchange_pb2

_PB_MODE = {Mode.FULL: exchange_pb2.MODE_FULL, Mode.CHECK: exchange_pb2.MODE_CHECK}


@dataclass(frozen=True)
class StoredRecord:
    subject_id: str
    theme: str
    record_key: str
    source_department: str
    status: str
    decision_date: dt.date | None
    valid_until: dt.date | None
    publicity_end: dt.date | None
    fields: str | bytes  # JSON


def read_records(
    engine: Engine, subject_ids: Sequence[str], themes: Iterable[str], today: dt.date
) -> tuple[dict[str, str], list[StoredRecord]]:
    """:func:`read_records_with` on a connection of ``engine``'s pool."""
    with engine.connect() as conn:
        return read_records_with(
            conn.connection.driver_connection, conn.dialect.name, subject_ids, themes, today
        )


def read_records_with(
    connection: Any,
    dialect: str,
    subject_ids: Sequence[str],
    themes: Iterable[str],
    today: dt.date,
) -> tuple[dict[str, str], list[StoredRecord]]:
    """Names of the subjects found, and their public records in ``themes``.

    One indexed query, whatever the number of subjects (a batch check asks
    hundreds at once): the subjects joined with their records in ``themes``, a
    subject without any giving one row of NULLs. Plain SQL on the driver's own
    ``connection`` (sqlite3 or psycopg): this is the hot path of every query, and
    building Core statements cost more than running them.
    """
    wanted = sorted(set(themes))
    ids = sorted(set(subject_ids))
    if not ids:
        return {}, []
    subject_marks = ",".join("?" * len(ids))
    if wanted:
        sql = (
            "SELECT s.subject_id, s.name, r.theme, r.record_key, r.source_department, "
            "r.status, r.decision_date, r.valid_until, r.publicity_end, r.fields "
            "FROM subjects s LEFT JOIN records r ON r.subject_id = s.subject_id "
            f"AND r.theme IN ({','.join('?' * len(wanted))}) "
            f"WHERE s.subject_id IN ({subject_marks}) "
            "ORDER BY s.subject_id, r.theme, r.decision_date DESC, r.record_key"
        )
    else:
        sql = f"SELECT subject_id, name FROM subjects WHERE subject_id IN ({subject_marks})"
    cursor = connection.cursor()
    try:
        cursor.execute(driver_sql(dialect, sql), (*wanted, *ids))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    names: dict[str, str] = {}
    records = []
    for row in rows:
        subject_id = str(row[0])
        names[subject_id] = str(row[1])
        if len(row) == 2 or row[2] is None:  # no theme asked, or no record in them
            continue
        publicity_end = _date(row[8])
        if row[5] != RecordStatus.EXPIRED and is_public(publicity_end, today):
            records.append(
                StoredRecord(
                    subject_id,
                    row[2],
                    row[3],
                    row[4],
                    row[5],
                    _date(row[6]),
                    _date(row[7]),
                    publicity_end,
                    row[9],
                )
            )
    return names, records


INLINE_SUBJECTS = 16  # up to this many, a SQLite read costs less than a thread handoff


class SqliteReader:
    """One SQLite connection of the pool kept for the provider's reads on the event loop.

    A read of a few subjects is local and takes less than handing it to a thread,
    so it runs inline; a large batch goes to a thread through the pool.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = engine.raw_connection()

    async def read(
        self, subject_ids: Sequence[str], themes: Iterable[str], today: dt.date
    ) -> tuple[dict[str, str], list[StoredRecord]]:
        if len(subject_ids) <= INLINE_SUBJECTS:
            return read_records_with(
                self._connection.driver_connection, "sqlite", subject_ids, themes, today
            )
        return await asyncio.to_thread(read_records, self.engine, subject_ids, themes, today)

    def close(self) -> None:
        self._connection.close()


class PostgresReader:
    """One PostgreSQL connection kept for the provider's reads, used from one thread.

    A read through the pool costs three round trips (the pre-ping, the query, the
    rollback when the connection goes back); this connection is in autocommit and
    is only ever used by its own worker thread, so a read costs one. A broken
    connection (a restarted server) is replaced once per read before it fails.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="postgres-reader")

    def _connect(self) -> Any:
        import psycopg

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        return psycopg.connect(*args, **kwargs, autocommit=True)

    def _read(
        self, subject_ids: Sequence[str], themes: Iterable[str], today: dt.date
    ) -> tuple[dict[str, str], list[StoredRecord]]:
        import psycopg

        for attempt in (1, 2):
            if self._connection is None or self._connection.closed:
                self._connection = self._connect()
            try:
                return read_records_with(self._connection, "postgresql", subject_ids, themes, today)
            except psycopg.OperationalError:
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(
        self, subject_ids: Sequence[str], themes: Iterable[str], today: dt.date
    ) -> tuple[dict[str, str], list[StoredRecord]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read, subject_ids, themes, today)

    def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self._executor.submit(close_connection).result()
        self._executor.shutdown()


def open_reader(engine: Engine) -> SqliteReader | PostgresReader:
    """The provider's reader for the store behind ``engine``."""
    return SqliteReader(engine) if engine.dialect.name == "sqlite" else PostgresReader(engine)


def _date(value: object) -> dt.date | None:
    """A date column as the driver gives it: a date (PostgreSQL) or ISO text (SQLite)."""
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _iso(value: dt.date | None) -> str:
    return value.isoformat() if value else ""


def _masked(kind: FieldType, value: object) -> str:
    text = "" if value is None else str(value)
    if kind is FieldType.ID_NUMBER:
        return mask_resident_id(text)
    return mask_name(text)


@dataclass(frozen=True)
class ThemeShape:
    """What one decision makes of one theme's answer: built once per decision, then copied.

    ``answer`` is the theme's answer without what the store holds (records, hit,
    objection); ``fields`` are the record fields a ``full`` answer shows, in
    catalog order, each with the type it is masked as, or None when it is
    revealed. Neither is ever modified once built.
    """

    answer: exchange_pb2.ThemeAnswer
    fields: tuple[tuple[str, FieldType | None], ...]


def theme_shape(catalog: Catalog, theme: str, decision: Decision, mode: Mode) -> ThemeShape:
    """The shape of ``theme``'s answer under ``decision``, a request in ``mode``."""
    answer = exchange_pb2.ThemeAnswer(
        theme=theme,
        allowed=decision.allowed,
        status=decision.status,
        reason=decision.reason if not decision.allowed else "",
        rule_ids=decision.rule_ids,
    )
    if not decision.allowed:
        return ThemeShape(answer, ())
    answer.mode = _PB_MODE[mode]
    if mode is Mode.CHECK:
        return ThemeShape(answer, ())
    answer.revealed_fields.extend(sorted(decision.reveal))
    answer.masked_fields.extend(sorted(decision.mask))
    answer.withheld_fields.extend(sorted(decision.withhold))
    shown = tuple(
        (spec.name, spec.type if spec.name in decision.mask else None)
        for spec in catalog.theme_by_code[theme].fields
        if spec.name in decision.mask or spec.name in decision.reveal
    )
    return ThemeShape(answer, shown)


def add_records(
    answer: exchange_pb2.ThemeAnswer, records: Iterable[StoredRecord], shape: ThemeShape
) -> None:
    """Add ``records`` to a ``full`` answer with the fields ``shape`` shows, as it shows them."""
    for record in records:
        stored = orjson.loads(record.fields)
        shown = answer.records.add(
            record_key=record.record_key,
            source_department=record.source_department,
            status=record.status,
            under_objection=record.status == RecordStatus.OBJECTION,
            decision_date=_iso(record.decision_date),
            valid_until=_iso(record.valid_until),
            publicity_end=_iso(record.publicity_end),
        ).fields
        for name, masked_as in shape.fields:
            if name in stored:
                value = stored[name]
                if masked_as is not None:
                    shown[name] = _masked(masked_as, value)
                else:
                    shown[name] = "" if value is None else str(value)
