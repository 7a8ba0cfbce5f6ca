"""The records repository: the one place that reads and writes the city's credit records.

Everything that touches ``subjects``, ``records``, ``record_versions`` and
``record_events`` goes through here: the importer, the objection and repair
workflows, the operator's view and history, the provider's answers and the demo.
It keeps these rules, each in one place:

* **What may be served** (:func:`servable`): a record that is not taken out of
  publicity (status ``expired``: withdrawn by the credit center; ``repaired``:
  its publicity ended early by a credit repair — :data:`WITHDRAWN`) and whose
  publicity has not ended, counted in China's date
  (``creditexchange.clock.china_today``): it is served on its last public day and
  not after. Every read of records for showing or answering applies it, in SQL,
  and so do the reads of other members' synced copies (:func:`read_synced`).
* **A record never loses a version.** A correction (:func:`replace_records`)
  first copies the current version into ``record_versions``
  (:func:`_keep_versions`), then raises the version number. Versions are data
  only: a status change (:func:`set_status`) is an event (``record_events``)
  that leaves the version as it is, and moves ``updated_at`` (when the row last
  changed, which the change feed dates its changes by).
* **A record under objection says so**: its status is ``objection`` and
  :attr:`StoredRecord.under_objection` is true wherever it is shown.

Reads for answering run on the driver's cursor (``database.driver.Prepared``):
they are the hot path of every query. The bulk writes of an import do too. The
rest runs through SQLAlchemy's ``Connection.execute``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    and_,
    any_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from creditexchange.errors import NotFound
from creditexchange.node.database.driver import Prepared, as_date, padded, sql_date, sql_stamp
from creditexchange.node.database.models import (
    IMPORT_BATCHES,
    RECORD_EVENTS,
    RECORD_VERSIONS,
    RECORDS,
    SUBJECTS,
    SYNCED_RECORDS,
)
from creditexchange.node.records.validation import ValidRow

__all__ = [
    "WITHDRAWN",
    "DataVersion",
    "EventKind",
    "Existing",
    "RecordRow",
    "RecordStatus",
    "StatusEvent",
    "StoredRecord",
    "SubjectRecords",
    "SyncedCopy",
    "add_subjects",
    "count_withheld",
    "data_versions",
    "existing_records",
    "find_record",
    "find_subjects",
    "insert_records",
    "read_record",
    "read_records_by_id",
    "read_subjects",
    "read_synced",
    "rename_subjects",
    "replace_records",
    "replaced_versions",
    "servable",
    "set_status",
    "status_events",
    "stored_subjects",
]


class RecordStatus(StrEnum):
    ACTIVE = "active"
    OBJECTION = "objection"  # 异议处理中: every answer carrying it says so
    REPAIRED = "repaired"  # 信用修复: corrected behaviour, publicity ended early
    EXPIRED = "expired"  # withdrawn from publicity by the credit center


WITHDRAWN = frozenset({RecordStatus.EXPIRED.value, RecordStatus.REPAIRED.value})
"""The statuses that take a record out of publicity whatever its dates: it is kept, with
its history, and never served again (a feed publishes it as removed)."""

_OBJECTION = RecordStatus.OBJECTION.value


def _public(status: Any, publicity_end: Any, today: Any) -> ColumnElement[bool]:
    """Not withdrawn, and public: no publicity end, or one on ``today`` or later."""
    return and_(
        status.not_in([literal_column(f"'{s}'") for s in sorted(WITHDRAWN)]),
        or_(publicity_end.is_(None), publicity_end >= today),
    )


def servable(today: Any) -> ColumnElement[bool]:
    """The records that may be shown or served on ``today`` (a date, or a parameter).

    Not withdrawn (:data:`WITHDRAWN`), and public: no publicity end, or one on
    ``today`` or later.
    """
    return _public(RECORDS.c.status, RECORDS.c.publicity_end, today)


# --- reading ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncedCopy:
    """A record this node keeps as synced from another member's feed (its ``origin``)."""

    subject_id: str
    origin: str
    theme: str
    record_key: str
    subject_type: str
    subject_name: str
    source_department: str
    fields: str
    decision_date: dt.date | None
    valid_until: dt.date | None
    publicity_end: dt.date | None
    status: str
    version: int


def read_synced(
    conn: Connection,
    subject_ids: Collection[str],
    today: dt.date,
    themes: Collection[str] | None = None,
) -> list[SyncedCopy]:
    """The synced copies of the subjects' records still public on ``today`` (the rule of
    :func:`servable`), of ``themes`` (None: all), by subject, origin and theme."""
    c = SYNCED_RECORDS.c
    query = (
        select(
            c.subject_id, c.origin, c.theme, c.record_key, c.subject_type, c.subject_name,
            c.source_department, c.fields, c.decision_date, c.valid_until, c.publicity_end,
            c.status, c.version,
        )
        .where(
            c.subject_id.in_(list(subject_ids)),
            _public(c.status, c.publicity_end, today),
        )
        .order_by(c.subject_id, c.origin, c.theme, c.record_key)
    )  # fmt: skip
    if themes is not None:
        query = query.where(c.theme.in_(list(themes)))
    return [SyncedCopy(**row._asdict()) for row in conn.execute(query)]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A servable record as it is stored: its fields are the stored JSON text."""

    subject_id: str
    theme: str
    record_key: str
    source_department: str
    status: str
    version: int
    decision_date: dt.date | None
    valid_until: dt.date | None
    publicity_end: dt.date | None
    fields: str | bytes
    under_objection: bool  # its status is ``objection``: it says so wherever it is shown


@dataclass(frozen=True, slots=True)
class SubjectRecords:
    """Subjects found (id -> (type, name)) and their servable records, in reading order:
    by subject, theme, newest decision first, then record key."""

    subjects: dict[str, tuple[str, str]]
    records: list[StoredRecord]


@lru_cache(maxsize=128)
def _read_statement(subjects: int, themes: int | None) -> Prepared:
    """Subjects joined with their servable records in ``themes`` themes (None: every
    theme, 0: none); a subject without any gives one row of NULLs."""
    ids = SUBJECTS.c.subject_id.in_([bindparam(f"s{i}") for i in range(subjects)])
    if themes == 0:
        return Prepared(
            select(SUBJECTS.c.subject_id, SUBJECTS.c.subject_type, SUBJECTS.c.name).where(ids)
        )
    joined = and_(RECORDS.c.subject_id == SUBJECTS.c.subject_id, servable(bindparam("today")))
    if themes is not None:
        joined = and_(joined, RECORDS.c.theme.in_([bindparam(f"t{i}") for i in range(themes)]))
    r = RECORDS.c
    return Prepared(
        select(
            SUBJECTS.c.subject_id,
            SUBJECTS.c.subject_type,
            SUBJECTS.c.name,
            r.theme,
            r.record_key,
            r.source_department,
            r.status,
            r.version,
            r.decision_date,
            r.valid_until,
            r.publicity_end,
            r.fields,
        )
        .select_from(SUBJECTS.outerjoin(RECORDS, joined))
        .where(ids)
        .order_by(SUBJECTS.c.subject_id, r.theme, r.decision_date.desc(), r.record_key)
    )


def read_subjects(
    connection: Any,
    dialect: Dialect,
    subject_ids: Iterable[str],
    themes: Collection[str] | None,
    today: dt.date,
) -> SubjectRecords:
    """The subjects of ``subject_ids`` found, and their servable records in ``themes``
    (None: every theme; empty: no records, the subjects only).

    One indexed query, whatever the number of subjects (a batch check asks
    hundreds at once), on the driver's own ``connection`` (sqlite3 or psycopg).
    """
    ids = sorted(set(subject_ids))
    if not ids:
        return SubjectRecords({}, [])
    values: dict[str, Any] = padded(ids, "s")
    if themes is None:
        statement = _read_statement(len(values), None)
    else:
        wanted = sorted(set(themes))
        theme_values = padded(wanted, "t") if wanted else {}
        statement = _read_statement(len(values), len(theme_values))
        values.update(theme_values)
    values["today"] = sql_date(today)
    cursor = connection.cursor()
    try:
        rows = statement.execute(cursor, dialect, values).fetchall()
    finally:
        cursor.close()
    found: dict[str, tuple[str, str]] = {}
    records: list[StoredRecord] = []
    for row in rows:
        subject_id = str(row[0])
        found[subject_id] = (str(row[1]), str(row[2]))
        if len(row) == 3 or row[3] is None:  # no theme asked, or no record in them
            continue
        records.append(
            StoredRecord(
                subject_id,
                row[3],
                row[4],
                row[5],
                row[6],
                int(row[7]),
                as_date(row[8]),
                as_date(row[9]),
                as_date(row[10]),
                row[11],
                row[6] == _OBJECTION,
            )
        )
    return SubjectRecords(found, records)


_COUNT_WITHHELD = Prepared(
    select(func.count())
    .select_from(RECORDS)
    .where(RECORDS.c.subject_id == bindparam("subject_id"), not_(servable(bindparam("today"))))
)


def count_withheld(conn: Connection, subject_id: str, today: dt.date) -> int:
    """How many of a subject's records are not servable on ``today`` (past publicity, or
    withdrawn): an operator is told that something is hidden, never what."""
    cursor = _COUNT_WITHHELD.execute(
        conn.connection.cursor(),
        conn.dialect,
        {"subject_id": subject_id, "today": sql_date(today)},
    )
    return int(cursor.fetchone()[0])


def find_subjects(
    conn: Connection,
    today: dt.date,
    *,
    subject_type: str | None = None,
    theme: str | None = None,
    limit: int = 1,
) -> list[str]:
    """Subjects (by id) of ``subject_type`` with a servable record in ``theme``, or any
    subject of the type when no theme is named: examples for a demonstration."""
    query = select(SUBJECTS.c.subject_id).distinct()
    if theme is not None:
        query = query.join(RECORDS, RECORDS.c.subject_id == SUBJECTS.c.subject_id).where(
            RECORDS.c.theme == theme, servable(today)
        )
    if subject_type is not None:
        query = query.where(SUBJECTS.c.subject_type == subject_type)
    query = query.order_by(SUBJECTS.c.subject_id).limit(limit)
    return [str(row[0]) for row in conn.execute(query)]


# --- writing: subjects ----------------------------------------------------------------


def _one_of(column: Any, values: Sequence[Any], dialect: Dialect) -> ColumnElement[bool]:
    """``column`` is one of ``values``: an array parameter on PostgreSQL (one parameter
    for thousands of keys), a list of parameters on SQLite."""
    if dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(list(values))  # type: ignore[no-any-return]


_STORED_SUBJECTS = Prepared(
    lambda dialect_name: select(
        SUBJECTS.c.subject_id, SUBJECTS.c.subject_type, SUBJECTS.c.name
    ).where(_in_list(SUBJECTS.c.subject_id, dialect_name))
)


def stored_subjects(conn: Connection, subject_ids: Collection[str]) -> dict[str, tuple[str, str]]:
    """Subjects already stored, among ``subject_ids``: id -> (subject type, name)."""
    if not subject_ids:
        return {}
    cursor = _STORED_SUBJECTS.execute(
        _cursor(conn), conn.dialect, {"values": _list_value(subject_ids)}
    )
    return {str(sid): (str(stype), str(name)) for sid, stype, name in cursor.fetchall()}


_ADD_SUBJECT = Prepared(
    insert(SUBJECTS).values(
        subject_id=bindparam("id"),
        subject_type=bindparam("type"),
        name=bindparam("name"),
        updated_at=bindparam("now"),
    ),
    row=("id", "type", "name", "now"),
)
_RENAME_SUBJECT = Prepared(
    update(SUBJECTS)
    .where(SUBJECTS.c.subject_id == bindparam("id"))
    .values(name=bindparam("name"), updated_at=bindparam("now")),
    row=("id", "name", "now"),
)


def add_subjects(
    conn: Connection, subjects: Mapping[str, tuple[str, str]], now: dt.datetime
) -> None:
    """Store new subjects: id -> (subject type, name)."""
    if not subjects:
        return
    stamp = sql_stamp(conn.dialect, now)
    values = [(s, t, n, stamp) for s, (t, n) in subjects.items()]
    if conn.dialect.name == "postgresql":  # COPY, as for records
        columns = "subject_id, subject_type, name, updated_at"
        with _cursor(conn).copy(f"COPY {SUBJECTS.name} ({columns}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        return
    _ADD_SUBJECT.executemany_rows(_cursor(conn), conn.dialect, values)


def rename_subjects(conn: Connection, names: Mapping[str, str], now: dt.datetime) -> None:
    """Give stored subjects their new names: id -> name."""
    if names:
        stamp = sql_stamp(conn.dialect, now)
        _RENAME_SUBJECT.executemany_rows(
            _cursor(conn), conn.dialect, [(s, n, stamp) for s, n in names.items()]
        )


def _cursor(conn: Connection) -> Any:
    """The driver's cursor of ``conn``, inside the transaction ``conn`` is in — begun
    here when there is none yet, so that ``conn.commit()`` commits what it writes."""
    if not conn.in_transaction():
        conn.begin()
    return conn.connection.cursor()


# --- writing: records -----------------------------------------------------------------


class Existing(NamedTuple):
    """A stored record as an import compares a row with it."""

    id: int
    content_hash: str
    batch_id: int | None  # the import batch that last wrote it
    version: int
    source_time: dt.datetime | None  # when its source said it was true


def _keys_statement(dialect_name: str) -> Any:
    r = RECORDS.c
    query = select(r.record_key, r.id, r.content_hash, r.batch_id, r.version, r.source_time)
    return query.where(r.theme == bindparam("theme"), _in_list(r.record_key, dialect_name))


def _in_list(column: Any, dialect_name: str) -> ColumnElement[bool]:
    """``column`` is one of the values of the one parameter ``values``, a JSON array of
    strings: one statement, compiled once, for any number of values. PostgreSQL reads
    the array into an ``ANY`` (so the index is used), SQLite with ``json_each``."""
    if dialect_name == "postgresql":
        # A JSON text is dumped in C; a Python list is quoted element by element.
        elements = func.json_array_elements_text(cast(bindparam("values"), postgresql.JSON))
        return column == any_(func.array(select(elements).scalar_subquery()))  # type: ignore[no-any-return]
    listed: Any = select(literal_column("value")).select_from(func.json_each(bindparam("values")))
    return column.in_(listed)  # type: ignore[no-any-return]


def _list_value(values: Collection[str]) -> str:
    """The ``values`` parameter of :func:`_in_list`."""
    return orjson.dumps(list(values)).decode()


_EXISTING = Prepared(_keys_statement)


def existing_records(
    conn: Connection, theme: str, record_keys: Collection[str]
) -> dict[str, Existing]:
    """Stored records of these keys in ``theme``, by key."""
    if not record_keys:
        return {}
    cursor = _EXISTING.execute(
        _cursor(conn),
        conn.dialect,
        {"theme": theme, "values": _list_value(record_keys)},
    )
    sqlite = conn.dialect.name == "sqlite"
    return {
        str(key): Existing(
            int(rid),
            str(digest),
            batch,
            int(version),
            _as_stamp(stamp) if sqlite else stamp,
        )
        for key, rid, digest, batch, version, stamp in cursor.fetchall()
    }


def _as_stamp(value: Any) -> dt.datetime | None:
    """A timestamp as sqlite3 returns it (text, UTC) as an aware datetime."""
    if value is None or isinstance(value, dt.datetime):
        return value
    moment = dt.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def replaced_versions(
    conn: Connection, record_ids: Collection[int]
) -> dict[int, list[tuple[int, str, dt.datetime]]]:
    """The earlier versions of these records: id -> [(version, content hash, replaced at)]."""
    if not record_ids:
        return {}
    v = RECORD_VERSIONS.c
    found: dict[int, list[tuple[int, str, dt.datetime]]] = {}
    rows = conn.execute(
        select(v.record_id, v.version, v.content_hash, v.superseded_at)
        .where(_one_of(v.record_id, sorted(record_ids), conn.dialect))
        .order_by(v.record_id, v.version)
    )
    for record_id, version, digest, replaced in rows:
        found.setdefault(int(record_id), []).append((int(version), str(digest), replaced))
    return found


_RECORD_COLUMNS = (
    "theme",
    "record_key",
    "subject_id",
    "source_department",
    "fields",
    "decision_date",
    "valid_until",
    "publicity_end",
    "status",
    "version",
    "content_hash",
    "batch_id",
    "updated_at",
    "source_time",
)
_INSERT_RECORD = Prepared(
    insert(RECORDS).values({name: bindparam(name) for name in _RECORD_COLUMNS}),
    row=_RECORD_COLUMNS,
)
_REPLACE_RECORD = Prepared(
    update(RECORDS)
    .where(RECORDS.c.id == bindparam("record_id"))
    .values(
        subject_id=bindparam("subject_id"),
        source_department=bindparam("source_department"),
        fields=bindparam("fields"),
        decision_date=bindparam("decision_date"),
        valid_until=bindparam("valid_until"),
        publicity_end=bindparam("publicity_end"),
        version=RECORDS.c.version + 1,
        content_hash=bindparam("content_hash"),
        batch_id=bindparam("batch_id"),
        updated_at=bindparam("updated_at"),
        source_time=bindparam("source_time"),
    )
)


def insert_records(
    conn: Connection,
    theme: str,
    source_department: str,
    batch_id: int,
    rows: Sequence[ValidRow],
    now: dt.datetime,
    source_times: Sequence[dt.datetime | None] | None = None,
) -> None:
    """Store new records, each at version 1 and active; ``source_times`` (by row, or
    None for all) says when the source said each row was true."""
    if not rows:
        return
    dialect = conn.dialect
    stamp = sql_stamp(dialect, now)
    times = _stamps(dialect, source_times, len(rows))
    active = RecordStatus.ACTIVE.value
    values = [
        (
            theme,
            r.record_key,
            r.subject_id,
            source_department,
            r.fields_json,
            r.decision_date,
            r.valid_until,
            r.publicity_end,
            active,
            1,
            r.content_hash,
            batch_id,
            stamp,
            time,
        )
        for r, time in zip(rows, times, strict=True)
    ]
    if dialect.name == "postgresql":  # COPY: several times faster than INSERT
        cursor = _cursor(conn)
        with cursor.copy(f"COPY {RECORDS.name} ({', '.join(_RECORD_COLUMNS)}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        return
    _INSERT_RECORD.executemany_rows(_cursor(conn), dialect, values)


def _stamps(
    dialect: Dialect, moments: Sequence[dt.datetime | None] | None, count: int
) -> Sequence[str | None]:
    if moments is None:
        return [None] * count
    if len(moments) != count:
        raise ValueError(f"{len(moments)} source times for {count} rows")
    cache: dict[dt.datetime, str] = {}  # a file's rows mostly share one time
    stamps: list[str | None] = []
    for moment in moments:
        if moment is None:
            stamps.append(None)
            continue
        stamp = cache.get(moment)
        if stamp is None:
            stamp = cache[moment] = sql_stamp(dialect, moment)
        stamps.append(stamp)
    return stamps


def replace_records(
    conn: Connection,
    changed: Sequence[tuple[int, ValidRow]],
    source_department: str,
    batch_id: int,
    now: dt.datetime,
    source_times: Sequence[dt.datetime | None] | None = None,
) -> None:
    """Give records (by id) the content of newer rows, keeping each replaced version."""
    if not changed:
        return
    _keep_versions(conn, [record_id for record_id, _ in changed], f"import batch {batch_id}", now)
    stamp = sql_stamp(conn.dialect, now)
    times = _stamps(conn.dialect, source_times, len(changed))
    _REPLACE_RECORD.executemany(
        _cursor(conn),
        conn.dialect,
        [
            {
                "record_id": record_id,
                "subject_id": r.subject_id,
                "source_department": source_department,
                "fields": r.fields_json,
                "decision_date": r.decision_date,
                "valid_until": r.valid_until,
                "publicity_end": r.publicity_end,
                "content_hash": r.content_hash,
                "batch_id": batch_id,
                "updated_at": stamp,
                "source_time": time,
            }
            for (record_id, r), time in zip(changed, times, strict=True)
        ],
    )


def find_record(conn: Connection, theme: str, record_key: str) -> tuple[int, str]:
    """A record's id and status, by its theme and key; NotFound when there is none."""
    found = conn.execute(
        select(RECORDS.c.id, RECORDS.c.status).where(
            RECORDS.c.theme == theme, RECORDS.c.record_key == record_key
        )
    ).first()
    if found is None:
        raise NotFound(f"no record {record_key!r} in theme {theme!r}")
    return int(found[0]), str(found[1])


@dataclass(frozen=True, slots=True)
class RecordRow:
    """A record's current row, whatever its status or publicity: what the workflows on
    one record (objections, repairs, history) start from."""

    id: int
    theme: str
    record_key: str
    subject_id: str
    source_department: str
    status: str
    version: int
    fields: str
    decision_date: dt.date | None
    valid_until: dt.date | None
    publicity_end: dt.date | None
    batch_id: int | None


_ROW_COLUMNS = (
    RECORDS.c.id,
    RECORDS.c.theme,
    RECORDS.c.record_key,
    RECORDS.c.subject_id,
    RECORDS.c.source_department,
    RECORDS.c.status,
    RECORDS.c.version,
    RECORDS.c.fields,
    RECORDS.c.decision_date,
    RECORDS.c.valid_until,
    RECORDS.c.publicity_end,
    RECORDS.c.batch_id,
)


def _record_row(row: Any) -> RecordRow:
    return RecordRow(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        str(row[4]),
        str(row[5]),
        int(row[6]),
        str(row[7]),
        as_date(row[8]),
        as_date(row[9]),
        as_date(row[10]),
        None if row[11] is None else int(row[11]),
    )


def read_record(conn: Connection, theme: str, record_key: str) -> RecordRow:
    """A record's current row by its theme and key; NotFound when there is none."""
    found = conn.execute(
        select(*_ROW_COLUMNS).where(RECORDS.c.theme == theme, RECORDS.c.record_key == record_key)
    ).first()
    if found is None:
        raise NotFound(f"no record {record_key!r} in theme {theme!r}")
    return _record_row(found)


def read_records_by_id(
    conn: Connection, record_ids: Collection[int], *, lock: bool = False
) -> dict[int, RecordRow]:
    """Records' current rows by id (ids not stored are left out). With ``lock``, the rows
    stay locked until the transaction ends (PostgreSQL; SQLite has one writer anyway), so
    that two workflows changing one record's status do not decide on the same state."""
    if not record_ids:
        return {}
    query = select(*_ROW_COLUMNS).where(_one_of(RECORDS.c.id, sorted(record_ids), conn.dialect))
    if lock:
        query = query.with_for_update()
    return {int(row[0]): _record_row(row) for row in conn.execute(query)}


@dataclass(frozen=True, slots=True)
class DataVersion:
    """One data version of a record, oldest first: what its source said, from which
    import batch and file, and when it became the record's data (``since``: when it
    replaced the version before it; for a first version, when its import batch started)."""

    version: int
    subject_id: str
    source_department: str
    fields: str
    decision_date: dt.date | None
    valid_until: dt.date | None
    publicity_end: dt.date | None
    status: str  # the record's status when this version was replaced (now, if current)
    batch_id: int | None
    file_name: str | None
    since: dt.datetime
    replaced_at: dt.datetime | None  # None: the current version
    source_time: dt.datetime | None  # when its source said it was true, where known


def data_versions(conn: Connection, record_id: int) -> list[DataVersion]:
    """Every data version of a record (those kept in ``record_versions``, then the current
    one), oldest first; empty when there is no such record."""
    v, r, b = RECORD_VERSIONS.c, RECORDS.c, IMPORT_BATCHES.c
    kept = select(
        v.version, v.subject_id, v.source_department, v.fields, v.decision_date,
        v.valid_until, v.publicity_end, v.status, v.batch_id, b.file_name, b.started_at,
        v.valid_from, v.superseded_at, v.source_time,
    ).select_from(RECORD_VERSIONS.outerjoin(IMPORT_BATCHES, b.id == v.batch_id)).where(
        v.record_id == record_id
    )  # fmt: skip
    current = select(
        r.version, r.subject_id, r.source_department, r.fields, r.decision_date,
        r.valid_until, r.publicity_end, r.status, r.batch_id, b.file_name, b.started_at,
        r.updated_at, literal(None, RECORD_VERSIONS.c.superseded_at.type), r.source_time,
    ).select_from(RECORDS.outerjoin(IMPORT_BATCHES, b.id == r.batch_id)).where(
        r.id == record_id
    )  # fmt: skip
    rows = [*conn.execute(kept).all(), *conn.execute(current).all()]
    rows.sort(key=lambda row: int(row[0]))
    versions: list[DataVersion] = []
    for row in rows:
        replaced = _moment(row[12])
        started, first_seen = _moment(row[10]), _moment(row[11])
        if versions and versions[-1].replaced_at is not None:
            since = versions[-1].replaced_at
        else:
            since = started or first_seen or _EPOCH
        versions.append(
            DataVersion(
                int(row[0]), str(row[1]), str(row[2]), str(row[3]), as_date(row[4]),
                as_date(row[5]), as_date(row[6]), str(row[7]),
                None if row[8] is None else int(row[8]), row[9], since, replaced,
                _moment(row[13]),
            )
        )  # fmt: skip
    return versions


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """Something that happened to a record without changing its data (``record_events``)."""

    kind: str  # an EventKind
    status: str  # the record's status after it
    version: int  # the data version it happened to
    why: str  # "objection 3", "repair 1"
    at: dt.datetime


def status_events(conn: Connection, record_id: int) -> list[StatusEvent]:
    """A record's events, in the order they happened."""
    e = RECORD_EVENTS.c
    rows = conn.execute(
        select(e.kind, e.status, e.version, e.why, e.at)
        .where(e.record_id == record_id)
        .order_by(e.id)
    )
    return [
        StatusEvent(str(kind), str(status), int(version), str(why), _moment(at) or _EPOCH)
        for kind, status, version, why, at in rows
    ]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _moment(value: Any) -> dt.datetime | None:
    """A timestamp column as read (aware on PostgreSQL; naive UTC, or text, on SQLite) as
    an aware datetime."""
    if value is None:
        return None
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class EventKind(StrEnum):
    """What happened to a record, as its history names it."""

    OBJECTION_OPENED = "objection_opened"
    OBJECTION_CLOSED = "objection_closed"
    REPAIRED = "repaired"
    WITHDRAWN = "withdrawn"
    STATUS = "status"  # any other change of status (e.g. a withdrawal undone)


_KIND_OF_STATUS = {
    RecordStatus.OBJECTION: EventKind.OBJECTION_OPENED,
    RecordStatus.REPAIRED: EventKind.REPAIRED,
    RecordStatus.EXPIRED: EventKind.WITHDRAWN,
}


def set_status(
    conn: Connection,
    record_id: int,
    status: RecordStatus,
    why: str,
    now: dt.datetime,
    *,
    kind: EventKind | None = None,
) -> None:
    """Record an event of a record (``kind``; by default the one ``status`` means) and
    leave it with ``status``; ``why`` names its cause (``objection 3``, ``repair 1``).

    The record's data version stays as it is: an event is not a version. When the
    status changes, ``updated_at`` moves to ``now`` so that the change feed carries it.
    """
    found = conn.execute(
        select(RECORDS.c.status, RECORDS.c.version).where(RECORDS.c.id == record_id)
    ).first()
    if found is None:
        raise NotFound(f"no record with id {record_id}")
    if found[0] != status.value:
        conn.execute(
            update(RECORDS)
            .where(RECORDS.c.id == record_id)
            .values(status=status.value, updated_at=now)
        )
    conn.execute(
        insert(RECORD_EVENTS).values(
            record_id=record_id,
            version=int(found[1]),
            kind=(kind or _KIND_OF_STATUS.get(status, EventKind.STATUS)).value,
            status=status.value,
            why=why,
            at=now,
        )
    )


def _keep_versions(
    conn: Connection, record_ids: Sequence[int], superseded_by: str, now: dt.datetime
) -> None:
    """Copy the current version of these records into ``record_versions``."""
    r = RECORDS.c
    kept = select(
        r.id,
        r.version,
        r.subject_id,
        r.source_department,
        r.fields,
        r.decision_date,
        r.valid_until,
        r.publicity_end,
        r.status,
        r.content_hash,
        r.batch_id,
        r.updated_at,
        literal(now, RECORD_VERSIONS.c.superseded_at.type),
        literal(superseded_by, RECORD_VERSIONS.c.superseded_by.type),
        r.source_time,
    ).where(_one_of(r.id, record_ids, conn.dialect))
    conn.execute(
        insert(RECORD_VERSIONS).from_select(
            [
                "record_id",
                "version",
                "subject_id",
                "source_department",
                "fields",
                "decision_date",
                "valid_until",
                "publicity_end",
                "status",
                "content_hash",
                "batch_id",
                "valid_from",
                "superseded_at",
                "superseded_by",
                "source_time",
            ],
            kept,
        )
    )
