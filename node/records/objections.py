"""Objections (信用异议) to records: opening marks the record, closing records the outcome.

While an objection is open the record's status is ``objection`` and every
answer carrying it says so. Closing returns the record to ``active`` and records
the outcome: ``corrected`` (the source department's corrected record was
imported), ``confirmed`` (the record stands; the mark is removed) or
``unresolved``. Each status change keeps the previous version of the record
(``repository.set_status``), like a correction does.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Engine, insert, select, update

from creditexchange.clock import utc_now
from creditexchange.errors import ObjectionError
from creditexchange.node.database.models import OBJECTIONS
from creditexchange.node.records import repository
from creditexchange.node.records.repository import RecordStatus

__all__ = ["ObjectionOutcome", "close_objection", "open_objection"]

_OBJECTIONS = OBJECTIONS


class ObjectionOutcome(StrEnum):
    CORRECTED = "corrected"
    CONFIRMED = "confirmed"
    UNRESOLVED = "unresolved"


def open_objection(engine: Engine, theme: str, record_key: str, reason: str) -> int:
    """Open an objection to a record and mark it; the objection's number."""
    if not reason.strip():
        raise ObjectionError("an objection needs a reason (what the subject says is wrong)")
    with engine.begin() as conn:
        record_id, status = repository.find_record(conn, theme, record_key)
        if status == RecordStatus.OBJECTION:
            raise ObjectionError(f"record {record_key!r} already has an open objection")
        now = utc_now()
        number = int(
            conn.execute(
                insert(_OBJECTIONS).values(
                    record_id=record_id, reason=reason.strip(), opened_at=now
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        repository.set_status(conn, record_id, RecordStatus.OBJECTION, f"objection {number}", now)
        return number


def close_objection(
    engine: Engine, theme: str, record_key: str, outcome: ObjectionOutcome, note: str = ""
) -> int:
    """Close a record's open objection with its outcome; the record is active again."""
    with engine.begin() as conn:
        record_id, status = repository.find_record(conn, theme, record_key)
        found = conn.execute(
            select(_OBJECTIONS.c.id).where(
                _OBJECTIONS.c.record_id == record_id, _OBJECTIONS.c.closed_at.is_(None)
            )
        ).first()
        if found is None or status != RecordStatus.OBJECTION:
            raise ObjectionError(f"record {record_key!r} has no open objection")
        number = int(found[0])
        now = utc_now()
        conn.execute(
            update(_OBJECTIONS)
            .where(_OBJECTIONS.c.id == number)
            .values(closed_at=now, outcome=outcome.value, note=note or None)
        )
        repository.set_status(
            conn, record_id, RecordStatus.ACTIVE, f"objection {number} {outcome}", now
        )
        return number
