"""The records repository: the one place that reads and writes the city's credit records.

Everything that touches ``subjects``, ``records`` and ``record_versions`` goes
through here: the importer, the objection workflow, the operator's view, the
provider's answers and the demo. It keeps these rules, each in one place:

* **What may be served** (:func:`servable`): a record that is not withdrawn
  (status ``expired``) and whose publicity has not ended, counted in China's
  date (``creditexchange.clock.china_today``): it is served on its last public
  day and not after. Every read of records for showing or answering applies it,
  in SQL.
* **A record never loses a version.** A correction (:func:`replace_records`) and
  a status change (:func:`set_status`) first copy the current version into
  ``record_versions`` (:func:`_keep_versions`), then raise the version number.
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
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    and_,
    any_,
    bindparam,
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
from creditexchange.node.database.models import RECORD_VERSIONS, RECORDS, SUBJECTS, SYNCED_RECORDS
from creditexchange.node.records.validation import ValidRow

__all__ = [
    "RecordStatus",
    "StoredRecord",
    "SubjectRecords",
    "SyncedCopy",
    "add_subjects",
    "count_withheld",
    "existing_records",
    "find_record",
    "find_subjects",
    "insert_records",
    "read_subjects",
    "read_synced",
    "rename_subjects",
    "replace_records",
    "servable",
    "set_status",
    "stored_subjects",
]


class RecordStatus(StrEnum):
    ACTIVE = "active"
    OBJECTION = "objection"  # 异议处理中: every answer carrying it says so
    REPAIRED = "repaired"  # 信用修复: corrected behaviour, publicity ended early
    EXPIRED = "expired"  # withdrawn from publicity by the credit center


_OBJECTION = RecordStatus.OBJECTION.value


def servable(today: Any) -> ColumnElement[bool]:
    """The records that may be shown or served on ``today`` (a date, or a parameter).

    Not withdrawn, and public: no publicity end, or one on ``today`` or later.
    """
    return and_(
        RECORDS.c.status != literal_column(f"'{RecordStatus.EXPIRED.value}'"),
        or_(RECORDS.c.publicity_end.is_(None), RECORDS.c.publicity_end >= today),
    )


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
    """The synced copies of the subjects' records still public on ``today`` (the same
    rule as :func:`servable`), of ``themes`` (None: all), by subject, origin and theme."""
    c = SYNCED_RECORDS.c
    query = (
        select(
            c.subject_id, c.origin, c.theme, c.record_key, c.subject_type, c.subject_name,
            c.source_department, c.fields, c.decision_date, c.valid_until, c.publicity_end,
            c.status, c.version,
        )
        .where(
            c.subject_id.in_(list(subject_ids)),
            c.status != RecordStatus.EXPIRED.value,
            or_(c.publicity_end.is_(None), c.publicity_end >= today),
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


def stored_subjects(conn: Connection, subject_ids: Collection[str]) -> dict[str, tuple[str, str]]:
    """Subjects already stored, among ``subject_ids``: id -> (subject type, name)."""
    if not subject_ids:
        return {}
    rows = conn.execute(
        select(SUBJECTS.c.subject_id, SUBJECTS.c.subject_type, SUBJECTS.c.name).where(
            _one_of(SUBJECTS.c.subject_id, sorted(subject_ids), conn.dialect)
        )
    )
    return {str(sid): (str(stype), str(name)) for sid, stype, name in rows}


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
    if subjects:
        stamp = sql_stamp(conn.dialect, now)
        _ADD_SUBJECT.executemany_rows(
            _cursor(conn),
            conn.dialect,
            [(s, t, n, stamp) for s, (t, n) in subjects.items()],
        )


def rename_subjects(conn: Connection, names: Mapping[str, str], now: dt.datetime) -> None:
    """Give stored subjects their new names: id -> name."""
    if names:
        stamp = sql_stamp(conn.dialect, now)
        _RENAME_SUBJECT.executemany_rows(
            _cursor(conn), conn.dialect, [(s, n, stamp) for s, n in names.items()]
        )


def _cursor(conn: Connection) -> Any:
    """The driver's cursor of ``conn``, inside the transaction ``conn`` is in."""
    return conn.connection.cursor()


# --- writing: records -----------------------------------------------------------------


def existing_records(
    conn: Connection, theme: str, record_keys: Collection[str]
) -> dict[str, tuple[int, str, int | None]]:
    """Stored records of these keys in ``theme``: key -> (id, content hash, last
    writing import batch)."""
    if not record_keys:
        return {}
    r = RECORDS.c
    rows = conn.execute(
        select(r.id, r.record_key, r.content_hash, r.batch_id).where(
            r.theme == theme, _one_of(r.record_key, sorted(record_keys), conn.dialect)
        )
    )
    return {str(key): (int(rid), str(digest), batch) for rid, key, digest, batch in rows}


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
    )
)


def insert_records(
    conn: Connection,
    theme: str,
    source_department: str,
    batch_id: int,
    rows: Sequence[ValidRow],
    now: dt.datetime,
) -> None:
    """Store new records, each at version 1 and active."""
    if not rows:
        return
    stamp = sql_stamp(conn.dialect, now)
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
            RecordStatus.ACTIVE.value,
            1,
            r.content_hash,
            batch_id,
            stamp,
        )
        for r in rows
    ]
    if conn.dialect.name == "postgresql":  # COPY: several times faster than INSERT
        cursor = _cursor(conn)
        with cursor.copy(f"COPY {RECORDS.name} ({', '.join(_RECORD_COLUMNS)}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        return
    _INSERT_RECORD.executemany_rows(_cursor(conn), conn.dialect, values)


def replace_records(
    conn: Connection,
    changed: Sequence[tuple[int, ValidRow]],
    source_department: str,
    batch_id: int,
    now: dt.datetime,
) -> None:
    """Give records (by id) the content of newer rows, keeping each replaced version."""
    if not changed:
        return
    _keep_versions(conn, [record_id for record_id, _ in changed], f"import batch {batch_id}", now)
    stamp = sql_stamp(conn.dialect, now)
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
            }
            for record_id, r in changed
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


def set_status(
    conn: Connection, record_id: int, status: RecordStatus, why: str, now: dt.datetime
) -> None:
    """Change a record's status, keeping the version it replaces; ``why`` is recorded
    with that version (``objection 3``)."""
    _keep_versions(conn, [record_id], why, now)
    conn.execute(
        update(RECORDS)
        .where(RECORDS.c.id == record_id)
        .values(status=status.value, version=RECORDS.c.version + 1, updated_at=now)
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
            ],
            kept,
        )
    )
