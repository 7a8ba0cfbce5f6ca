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

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from creditexchange.v1 import exchange_pb2
from sqlalchemy import Engine

from node.catalog import Catalog, FieldType
from node.identifiers import mask_identifier, mask_name, mask_resident_id
from node.publicity import is_public
from node.store.database import driver_sql
from node.store.models import RecordStatus
from policy.engine import Decision


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

    One indexed query for the subjects and one for the records, whatever the
    number of subjects (a batch check asks hundreds at once). Plain SQL on the
    driver's own ``connection`` (sqlite3 or psycopg): this is the hot path of
    every query, and building Core statements cost more than running them.
    """
    wanted = sorted(set(themes))
    ids = sorted(set(subject_ids))
    if not ids:
        return {}, []
    cursor = connection.cursor()
    try:
        marks = ",".join("?" * len(ids))
        cursor.execute(
            driver_sql(
                dialect, f"SELECT subject_id, name FROM subjects WHERE subject_id IN ({marks})"
            ),
            tuple(ids),
        )
        names = {str(subject_id): str(name) for subject_id, name in cursor.fetchall()}
        if not wanted or not names:
            return names, []
        found = sorted(names)
        cursor.execute(
            driver_sql(
                dialect,
                "SELECT subject_id, theme, record_key, source_department, status, "
                "decision_date, valid_until, publicity_end, fields FROM records "
                f"WHERE subject_id IN ({','.join('?' * len(found))}) "
                f"AND theme IN ({','.join('?' * len(wanted))}) "
                "ORDER BY subject_id, theme, decision_date DESC, record_key",
            ),
            (*found, *wanted),
        )
        rows = cursor.fetchall()
    finally:
        cursor.close()
    records = []
    for row in rows:
        publicity_end = _date(row[7])
        if row[4] != RecordStatus.EXPIRED and is_public(publicity_end, today):
            records.append(
                StoredRecord(
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    _date(row[5]),
                    _date(row[6]),
                    publicity_end,
                    row[8],
                )
            )
    return names, records


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


def shape_record(catalog: Catalog, record: StoredRecord, decision: Decision) -> exchange_pb2.Record:
    """A record as a ``full`` answer may carry it: revealed and masked fields only."""
    fields = orjson.loads(record.fields)
    shown: dict[str, str] = {}
    theme = catalog.theme_by_code[record.theme]
    for spec in theme.fields:
        if spec.name not in fields:
            continue
        value = fields[spec.name]
        if spec.name in decision.mask:
            shown[spec.name] = _masked(spec.type, value)
        elif spec.name in decision.reveal:
            shown[spec.name] = "" if value is None else str(value)
    return exchange_pb2.Record(
        record_key=record.record_key,
        source_department=record.source_department,
        status=record.status,
        under_objection=record.status == RecordStatus.OBJECTION,
        decision_date=_iso(record.decision_date),
        valid_until=_iso(record.valid_until),
        publicity_end=_iso(record.publicity_end),
        fields=shown,
    )


def shown_subject(subject_id: str, subject_type: str) -> str:
    return mask_identifier(subject_id, subject_type)


def shown_name(name: str, subject_type: str) -> str:
    return mask_name(name) if subject_type == "individual" else name
