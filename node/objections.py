"""Objections (信用异议) to records: opening marks the record, closing records the outcome.

While an objection is open the record's status is ``objection`` and every
answer carrying it says so. Closing returns the record to ``active`` and records
the outcome: ``corrected`` (the source department's corrected record was
imported), ``confirmed`` (the record stands; the mark is removed) or
``unresolved``. Each status change keeps the previous version of the record in
``record_versions``, like a correction does.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from creditexchange.errors import NotFound, ObjectionError
from creditexchange.node.store.models import Objection, Record, RecordStatus, RecordVersion


class ObjectionOutcome(StrEnum):
    CORRECTED = "corrected"
    CONFIRMED = "confirmed"
    UNRESOLVED = "unresolved"


def _record(session: Session, theme: str, record_key: str) -> Record:
    record = session.scalars(
        select(Record).where(Record.theme == theme, Record.record_key == record_key)
    ).one_or_none()
    if record is None:
        raise NotFound(f"no record {record_key!r} in theme {theme!r}")
    return record


def _set_status(session: Session, record: Record, status: RecordStatus, why: str) -> None:
    now = dt.datetime.now(dt.UTC)
    session.add(
        RecordVersion(
            record_id=record.id,
            version=record.version,
            subject_id=record.subject_id,
            source_department=record.source_department,
            fields=record.fields,
            decision_date=record.decision_date,
            valid_until=record.valid_until,
            publicity_end=record.publicity_end,
            status=record.status,
            content_hash=record.content_hash,
            batch_id=record.batch_id,
            valid_from=record.updated_at,
            superseded_at=now,
            superseded_by=why,
        )
    )
    record.status = status
    record.version += 1
    record.updated_at = now


def open_objection(engine: Engine, theme: str, record_key: str, reason: str) -> int:
    if not reason.strip():
        raise ObjectionError("an objection needs a reason (what the subject says is wrong)")
    with Session(engine) as session, session.begin():
        record = _record(session, theme, record_key)
        if record.status == RecordStatus.OBJECTION:
            raise ObjectionError(f"record {record_key!r} already has an open objection")
        objection = Objection(
            record_id=record.id, reason=reason.strip(), opened_at=dt.datetime.now(dt.UTC)
        )
        session.add(objection)
        session.flush()
        _set_status(session, record, RecordStatus.OBJECTION, f"objection {objection.id}")
        return objection.id


def close_objection(
    engine: Engine, theme: str, record_key: str, outcome: ObjectionOutcome, note: str = ""
) -> int:
    with Session(engine) as session, session.begin():
        record = _record(session, theme, record_key)
        objection = session.scalars(
            select(Objection).where(Objection.record_id == record.id, Objection.closed_at.is_(None))
        ).one_or_none()
        if objection is None or record.status != RecordStatus.OBJECTION:
            raise ObjectionError(f"record {record_key!r} has no open objection")
        objection.closed_at = dt.datetime.now(dt.UTC)
        objection.outcome = outcome.value
        objection.note = note or None
        _set_status(session, record, RecordStatus.ACTIVE, f"objection {objection.id} {outcome}")
        return objection.id
