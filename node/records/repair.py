"""Credit repair (信用修复): ending a record's publicity early, after NDRC Order 58.

A subject that corrected its behaviour may have a penalty's publication ended once
its minimum period has passed; at the maximum it ends by itself anyway. A repair
is not an objection: an objection says the record is wrong, a repair that it was
right and the subject has since put things right.

Invariants kept here:

* **Only what the catalog allows.** The theme's publicity rule must be
  ``repairable``; the repair is decided no earlier than the rule's repair period
  after the record's start (``publicity.repair_months``: the minimum period, the
  extended minimum of food, drugs, special equipment, work safety and fire safety
  included); and never for one of the rule's ``serious`` cases, which Order 58
  leaves out of early repair: they stay public until the maximum
  (``publicity.maximum_end``) and then end by themselves.
* **Only a record that is served.** A record withdrawn, already repaired, past its
  publicity, or under an open objection is refused: the objection is settled
  first (its outcome may change the record).
* **Every refusal says when it would pass**, or why it never will.
* **A repair is recorded, never undone silently.** The ``repairs`` row (basis,
  evidence, applicant, decided date, the publicity end it cut short) and the
  record's ``repaired`` event commit in one transaction. The record is kept with
  its history and is no longer served (``repository.servable``); the change feed
  withdraws it from subscribers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, Engine, insert, select

from creditexchange.clock import china_today, utc_now
from creditexchange.errors import RepairError
from creditexchange.node.catalog import Catalog, PublicityRule, Theme
from creditexchange.node.database.models import REPAIRS
from creditexchange.node.records import repository
from creditexchange.node.records.objections import APPLICANT_CHARS, open_objections_of
from creditexchange.node.records.publicity import (
    add_months,
    is_serious,
    maximum_end,
    repair_months,
)
from creditexchange.node.records.repository import EventKind, RecordStatus

__all__ = ["RepairRecord", "repair_record", "repairs_of"]

_r = REPAIRS.c


@dataclass(frozen=True)
class RepairRecord:
    """A credit repair as recorded."""

    number: int
    theme: str
    record_key: str
    version: int  # the data version repaired
    basis: str
    evidence: str
    applicant: str | None
    decided: dt.date
    publicity_end_before: dt.date | None  # the last public day it would have had
    recorded_at: dt.datetime

    def as_json(self) -> dict[str, object]:
        return {
            "repair": self.number,
            "theme": self.theme,
            "record_key": self.record_key,
            "version": self.version,
            "basis": self.basis,
            "evidence": self.evidence,
            "applicant": self.applicant,
            "decided": self.decided,
            "publicity_end_before": self.publicity_end_before,
            "recorded_at": self.recorded_at,
        }


def repair_record(
    engine: Engine,
    catalog: Catalog,
    theme: str,
    record_key: str,
    *,
    basis: str,
    evidence: str,
    applicant: str | None = None,
    decided: dt.date | None = None,
    today: dt.date | None = None,
) -> RepairRecord:
    """End a record's publicity by a credit repair decided on ``decided`` (today by
    default); refused, saying why and from when it would pass, when it may not."""
    today = today or china_today()
    decided = decided or today
    if not basis.strip():
        raise RepairError("a repair needs its basis (the legal basis or decision it rests on)")
    if not evidence.strip():
        raise RepairError("a repair needs its evidence (what shows the subject put it right)")
    if decided > today:
        raise RepairError(f"decided on {decided}? That is after today ({today})")
    if applicant is not None and len(applicant.strip()) > APPLICANT_CHARS:
        raise RepairError(f"an applicant's name has at most {APPLICANT_CHARS} characters")
    rule = _repair_rule(catalog.theme(theme))
    now = utc_now()
    with engine.begin() as conn:
        found = repository.read_record(conn, theme, record_key)
        record = repository.read_records_by_id(conn, [found.id], lock=True)[found.id]
        _check_record(conn, record, rule, decided)
        number = int(
            conn.execute(
                insert(REPAIRS).values(
                    record_id=record.id,
                    version=record.version,
                    basis=basis.strip(),
                    evidence=evidence.strip(),
                    applicant=(applicant or "").strip() or None,
                    decided=decided,
                    publicity_end_before=record.publicity_end,
                    recorded_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        repository.set_status(
            conn,
            record.id,
            RecordStatus.REPAIRED,
            f"repair {number}",
            now,
            kind=EventKind.REPAIRED,
        )
        return repairs_of(conn, record.id, theme, record_key)[-1]


def _repair_rule(theme: Theme) -> PublicityRule:
    rule = theme.publicity
    if rule is None or not rule.repairable:
        raise RepairError(
            f"records of {theme.code} ({theme.name_zh}) cannot be repaired: its catalog "
            "publicity rule does not allow ending publicity early (repairable is not set)"
        )
    return rule


def _check_record(
    conn: Connection, record: repository.RecordRow, rule: PublicityRule, decided: dt.date
) -> None:
    """Refuse a record that may not be repaired on ``decided``, saying why and until when."""
    key = record.record_key
    if record.status == RecordStatus.REPAIRED:
        earlier = repairs_of(conn, record.id, record.theme, key)
        when = f" on {earlier[-1].decided} (repair {earlier[-1].number})" if earlier else ""
        raise RepairError(f"record {key!r} was repaired already{when}")
    if record.status == RecordStatus.EXPIRED:
        raise RepairError(
            f"record {key!r} is withdrawn from publicity: there is no publicity left to end"
        )
    objections = open_objections_of(conn, [record.id]).get(record.id)
    if objections:
        numbers = ", ".join(str(n) for n in objections)
        raise RepairError(
            f"record {key!r} is under objection {numbers} (异议处理中): a repair is possible "
            "once the objection is closed ('credit-node objection close'), since its outcome "
            "may change the record"
        )
    if record.publicity_end is not None and record.publicity_end < decided:
        raise RepairError(
            f"record {key!r} stopped being public after {record.publicity_end}: "
            "there is no publicity left to end"
        )
    fields = orjson.loads(record.fields)
    start = _start(fields, rule, key)
    ends = maximum_end(rule, start)
    if is_serious(rule, fields):
        serious = rule.serious
        assert serious is not None  # is_serious says so
        until = f"; its publicity ends by itself after {ends}" if ends else ""
        raise RepairError(
            f"record {key!r} is a serious case ({serious.field} {fields.get(serious.field)}), "
            f"which may not be repaired before the end of its maximum period{until}"
        )
    months = repair_months(rule, fields)
    earliest = add_months(start, months)
    if decided < earliest:
        raise RepairError(
            f"record {key!r} may be repaired from {earliest}: {months} months after its "
            f"{rule.start_field} {start}, its minimum publicity; {decided} is before that"
        )


def _start(fields: dict[str, object], rule: PublicityRule, key: str) -> dt.date:
    """The day the record's publicity counts from (its rule's start field)."""
    value = fields.get(rule.start_field)
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise RepairError(
            f"record {key!r} has no valid {rule.start_field} (found {str(value)[:20]!r}), "
            "so its minimum publicity cannot be counted; correct the record first"
        ) from None


def repairs_of(conn: Connection, record_id: int, theme: str, record_key: str) -> list[RepairRecord]:
    """A record's repairs, oldest first."""
    rows = conn.execute(
        select(
            _r.id, _r.version, _r.basis, _r.evidence, _r.applicant, _r.decided,
            _r.publicity_end_before, _r.recorded_at,
        )
        .where(_r.record_id == record_id)
        .order_by(_r.id)
    )  # fmt: skip
    return [
        RepairRecord(
            int(row[0]), theme, record_key, int(row[1]), str(row[2]), str(row[3]), row[4],
            row[5], row[6], row[7] if row[7].tzinfo else row[7].replace(tzinfo=dt.UTC),
        )
        for row in rows
    ]  # fmt: skip
