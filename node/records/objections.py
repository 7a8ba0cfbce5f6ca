"""Objections (信用异议): a subject's case against records of its own, from receipt to answer.

An objection is received from the subject or its agent, at the credit center's
window, online, or through another federation member (``member:<id>``); it covers
one or more records of one subject; it must be answered within a statutory number
of working days from the day it was received; it collects handling notes; and it
is closed with an outcome:

* ``confirmed`` — the record stands (the source department's record is
  authoritative); the mark is removed;
* ``corrected`` — the record was wrong and the source department's corrected data
  was imported: the objection links the newer version and its import batch;
* ``revoked`` — the record should not be public (wrong at the source and revoked,
  duplicated, published past its period …): it is withdrawn from publicity (status
  ``expired``), served nowhere, and leaves other members' synced copies;
* ``withdrawn`` — the applicant withdrew the objection; the record stands;
* ``unresolved`` — no finding could be made; the outcome is recorded.

Invariants kept here:

* **A record under objection says so everywhere it is served.** A record covered
  by an open objection has status ``objection`` (answers, ``show``, screenings,
  reports and — through the change feed — other members' synced copies all mark it
  异议处理中). The mark goes only when the *last* open objection covering the record
  closes.
* **An objection changes no data.** Opening and closing are events of the records
  (``repository.set_status``), never new versions; only an import changes data.
* **``corrected`` needs the corrected data.** Every record closed as corrected has
  a newer data version than when the objection opened, and the objection links
  that version and its import batch; otherwise the close is refused, saying to
  import the corrected data first.
* **The deadline is fixed on receipt.** It is counted in working days
  (``creditexchange.workdays``) from the day received and stored with the
  objection, so a later change of settings does not move a case already received.
* Each step (open, note, close) commits in one transaction with the records'
  events; the records it changes are locked meanwhile, so two objections closing at
  once on one record still leave the mark as the last one must.

The answer period: DOMAIN.md's procedure is 2 working days for the credit center to
decide whether to accept, 2 more to check its own processing, then 10 for the
source department to check its record — :data:`ANSWER_WORKING_DAYS` = 14 working
days from receipt to answer (setting ``objection_answer_working_days``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Connection, Engine, case, func, insert, select, update

from creditexchange.clock import china_today, utc_now
from creditexchange.errors import NotFound, ObjectionError, excerpt
from creditexchange.identifiers import mask_identifier
from creditexchange.node.database.models import (
    OBJECTION_NOTES,
    OBJECTION_RECORDS,
    OBJECTIONS,
    RECORDS,
)
from creditexchange.node.records import repository
from creditexchange.node.records.repository import EventKind, RecordStatus
from creditexchange.subjects import SubjectType
from creditexchange.workdays import DEFAULT_CALENDAR, WorkCalendar

__all__ = [
    "ANSWER_WORKING_DAYS",
    "APPLICANT_CHARS",
    "AnswerDeadline",
    "ApplicantRole",
    "CoveredRecord",
    "ObjectionCase",
    "ObjectionNoteView",
    "ObjectionOutcome",
    "RecordObjection",
    "check_channel",
    "close_objection",
    "list_objections",
    "note_objection",
    "objection_case",
    "objection_counts",
    "open_objection",
    "open_objections_of",
    "record_objections",
]

ANSWER_WORKING_DAYS: Final = 14
"""Working days from receipt to answer: 2 to accept, 2 to check, 10 at the source."""

APPLICANT_CHARS: Final = 256
"""The longest applicant's name kept (objections and repairs)."""

_CHANNEL: Final = re.compile(r"window|online|member:[a-z][a-z0-9_-]{1,31}")
_o, _l, _n = OBJECTIONS.c, OBJECTION_RECORDS.c, OBJECTION_NOTES.c


class ObjectionOutcome(StrEnum):
    CONFIRMED = "confirmed"  # the record stands; the mark is removed
    CORRECTED = "corrected"  # the corrected data was imported and is linked
    REVOKED = "revoked"  # the record should not be public: withdrawn from publicity
    WITHDRAWN = "withdrawn"  # the applicant withdrew the objection; the record stands
    UNRESOLVED = "unresolved"  # no finding could be made; the outcome is recorded


class ApplicantRole(StrEnum):
    SUBJECT = "subject"  # the subject itself (its legal representative, the person)
    AGENT = "agent"  # someone acting for it


@dataclass(frozen=True)
class AnswerDeadline:
    """How the answer deadline of an objection is counted: ``working_days`` working days
    after the day it was received, in ``calendar``."""

    calendar: WorkCalendar = DEFAULT_CALENDAR
    working_days: int = ANSWER_WORKING_DAYS

    def due(self, received: dt.date) -> dt.date:
        """The last day to answer an objection received on ``received``."""
        return self.calendar.add_working_days(received, self.working_days)


def check_channel(channel: str) -> str:
    """``channel`` as stored: ``window``, ``online`` or ``member:<member id>``."""
    text = channel.strip()
    if not _CHANNEL.fullmatch(text):
        raise ObjectionError(
            f"unknown channel {excerpt(text)}: an objection comes in at the 'window', 'online', "
            "or from another member as 'member:<member id>' (e.g. member:shenzhen)"
        )
    return text


@dataclass(frozen=True)
class CoveredRecord:
    """A record an objection covers, as it is now and as the objection saw it."""

    theme: str
    record_key: str
    status: str  # the record's status now
    version: int  # its data version now
    version_opened: int  # its data version when the objection opened
    corrected_version: int | None  # for the outcome corrected: the version that corrected it
    corrected_batch: int | None  # and the import batch that brought it


@dataclass(frozen=True)
class ObjectionNoteView:
    text: str
    written_at: dt.datetime


@dataclass(frozen=True)
class ObjectionCase:
    """An objection as an operator sees it; the subject is masked for individuals."""

    number: int
    subject: str  # as shown: an individual's identity number masked
    subject_type: str
    reason: str
    applicant: str
    applicant_role: str
    channel: str
    received: dt.date
    due: dt.date
    opened_at: dt.datetime
    closed_at: dt.datetime | None
    outcome: str | None
    answered: dt.date | None
    records: list[CoveredRecord] = field(default_factory=list)
    notes: list[ObjectionNoteView] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def overdue(self, today: dt.date) -> bool:
        """Open past its deadline on ``today``."""
        return self.is_open and today > self.due

    @property
    def answered_late(self) -> bool:
        return self.answered is not None and self.answered > self.due

    def as_json(self, today: dt.date) -> dict[str, Any]:
        return {
            "number": self.number,
            "subject": self.subject,
            "subject_type": self.subject_type,
            "reason": self.reason,
            "applicant": self.applicant,
            "applicant_role": self.applicant_role,
            "channel": self.channel,
            "received": self.received,
            "due": self.due,
            "open": self.is_open,
            "overdue": self.overdue(today),
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "outcome": self.outcome,
            "answered": self.answered,
            "answered_late": self.answered_late,
            "records": [
                {
                    "theme": r.theme,
                    "record_key": r.record_key,
                    "status": r.status,
                    "version": r.version,
                    "version_opened": r.version_opened,
                    "corrected_version": r.corrected_version,
                    "corrected_batch": r.corrected_batch,
                }
                for r in self.records
            ],
            "notes": [{"text": n.text, "written_at": n.written_at} for n in self.notes],
        }


# --- opening ---------------------------------------------------------------------------


def open_objection(
    engine: Engine,
    theme: str,
    record_keys: Sequence[str],
    *,
    reason: str,
    applicant: str,
    channel: str,
    role: ApplicantRole = ApplicantRole.SUBJECT,
    received: dt.date | None = None,
    deadline: AnswerDeadline | None = None,
    today: dt.date | None = None,
) -> ObjectionCase:
    """Open an objection to records of ``theme`` (all of one subject) and mark each of
    them 异议处理中; the objection as recorded, with its answer deadline.

    ``received`` defaults to ``today`` (China's date) and may not be after it.
    """
    today = today or china_today()
    received = received or today
    deadline = deadline or AnswerDeadline()
    keys = list(dict.fromkeys(k.strip() for k in record_keys if k.strip()))
    if not keys:
        raise ObjectionError("an objection names the record(s) it is about (their record keys)")
    if not reason.strip():
        raise ObjectionError("an objection needs a reason (what the subject says is wrong)")
    if not applicant.strip():
        raise ObjectionError("an objection needs its applicant: the name of who brought it")
    if len(applicant.strip()) > APPLICANT_CHARS:
        raise ObjectionError(f"an applicant's name has at most {APPLICANT_CHARS} characters")
    channel = check_channel(channel)
    if received > today:
        raise ObjectionError(f"received on {received}? That is after today ({today})")
    now = utc_now()
    with engine.begin() as conn:
        found = [repository.read_record(conn, theme, key) for key in keys]
        rows = repository.read_records_by_id(conn, [r.id for r in found], lock=True)
        records = [rows[r.id] for r in found]
        subject = records[0].subject_id
        for record in records:
            if record.subject_id != subject:
                raise ObjectionError(
                    f"record {record.record_key!r} is of another subject than "
                    f"{records[0].record_key!r}: one objection covers records of one subject; "
                    "open one per subject"
                )
            if record.status in repository.WITHDRAWN:
                raise ObjectionError(
                    f"record {record.record_key!r} is {record.status} and no longer served: "
                    "there is nothing public to object to"
                )
        number = int(
            conn.execute(
                insert(OBJECTIONS).values(
                    subject_id=subject,
                    reason=reason.strip(),
                    applicant=applicant.strip(),
                    applicant_role=role.value,
                    channel=channel,
                    received=received,
                    due=deadline.due(received),
                    opened_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        conn.execute(
            insert(OBJECTION_RECORDS),
            [
                {"objection_id": number, "record_id": r.id, "version_opened": r.version}
                for r in records
            ],
        )
        for record in records:
            repository.set_status(
                conn,
                record.id,
                RecordStatus.OBJECTION,
                f"objection {number}",
                now,
                kind=EventKind.OBJECTION_OPENED,
            )
        return _case(conn, number)


# --- handling ----------------------------------------------------------------------------


def note_objection(engine: Engine, number: int, text: str) -> ObjectionCase:
    """Add a handling note to an open objection."""
    if not text.strip():
        raise ObjectionError("a handling note needs its text")
    with engine.begin() as conn:
        _open_row(conn, number)
        conn.execute(
            insert(OBJECTION_NOTES).values(
                objection_id=number, text=text.strip(), written_at=utc_now()
            )
        )
        return _case(conn, number)


def close_objection(
    engine: Engine,
    number: int,
    outcome: ObjectionOutcome,
    *,
    note: str = "",
    corrected: Collection[str] | None = None,
    answered: dt.date | None = None,
    today: dt.date | None = None,
) -> ObjectionCase:
    """Close an open objection with its outcome, answered on ``answered`` (today by default).

    For ``corrected``, the records named in ``corrected`` (by record key; None: all the
    objection covers) must each have a newer data version than when the objection
    opened; the objection links it. A record whose last open objection this was loses
    its mark.
    """
    today = today or china_today()
    answered = answered or today
    if corrected is not None and outcome is not ObjectionOutcome.CORRECTED:
        raise ObjectionError("records are named as corrected only with the outcome 'corrected'")
    now = utc_now()
    with engine.begin() as conn:
        received = _open_row(conn, number)
        if answered < received:
            raise ObjectionError(
                f"objection {number} was received on {received}; it cannot be answered on "
                f"{answered}, before that"
            )
        if answered > today:
            raise ObjectionError(f"answered on {answered}? That is after today ({today})")
        opened = {
            int(record_id): int(version)
            for record_id, version in conn.execute(
                select(_l.record_id, _l.version_opened).where(_l.objection_id == number)
            )
        }
        records = repository.read_records_by_id(conn, opened, lock=True)
        if outcome is ObjectionOutcome.CORRECTED:
            _link_corrections(conn, number, opened, records, corrected)
        conn.execute(
            update(OBJECTIONS)
            .where(_o.id == number)
            .values(closed_at=now, outcome=outcome.value, answered=answered)
        )
        if note.strip():
            conn.execute(
                insert(OBJECTION_NOTES).values(
                    objection_id=number, text=note.strip(), written_at=now
                )
            )
        still_open = open_objections_of(conn, records)
        for record in records.values():
            if outcome is ObjectionOutcome.REVOKED:
                status = RecordStatus.EXPIRED  # revoked: withdrawn from publicity
            elif record.status == RecordStatus.OBJECTION and not still_open.get(record.id):
                status = RecordStatus.ACTIVE  # the last open objection on it: the mark goes
            else:
                status = RecordStatus(record.status)
            repository.set_status(
                conn,
                record.id,
                status,
                f"objection {number}",
                now,
                kind=EventKind.OBJECTION_CLOSED,
            )
        return _case(conn, number)


def _link_corrections(
    conn: Connection,
    number: int,
    opened: dict[int, int],
    records: dict[int, repository.RecordRow],
    corrected: Collection[str] | None,
) -> None:
    """Link each corrected record's newer version and batch; refuse when one has none."""
    by_key = {r.record_key: r for r in records.values()}
    named = list(by_key) if corrected is None else list(dict.fromkeys(corrected))
    if not named:
        raise ObjectionError("the outcome 'corrected' names at least one corrected record")
    for key in named:
        record = by_key.get(key)
        if record is None:
            raise ObjectionError(
                f"objection {number} does not cover a record {key!r}; it covers "
                + ", ".join(repr(k) for k in sorted(by_key))
            )
        if record.version <= opened[record.id]:
            raise ObjectionError(
                f"objection {number} cannot be closed as corrected: record {key!r} has no "
                f"newer data than when the objection opened (still version {record.version}). "
                "Import the source department's corrected data first, then close it"
            )
        conn.execute(
            update(OBJECTION_RECORDS)
            .where(_l.objection_id == number, _l.record_id == record.id)
            .values(corrected_version=record.version, corrected_batch_id=record.batch_id)
        )


def _open_row(conn: Connection, number: int) -> dt.date:
    """The received date of objection ``number``, refused unless it is open."""
    row = conn.execute(select(_o.received, _o.closed_at, _o.outcome).where(_o.id == number)).first()
    if row is None:
        raise NotFound(f"no objection {number}; 'credit-node objection list' shows them")
    if row[1] is not None:
        raise ObjectionError(f"objection {number} is closed already (outcome {row[2]})")
    received = row[0]
    return received if isinstance(received, dt.date) else dt.date.fromisoformat(str(received))


def open_objections_of(conn: Connection, record_ids: Iterable[int]) -> dict[int, list[int]]:
    """The open objections covering each of these records: record id -> numbers."""
    ids = sorted(set(record_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(_l.record_id, _o.id)
        .join(OBJECTIONS, _o.id == _l.objection_id)
        .where(_l.record_id.in_(ids), _o.closed_at.is_(None))
        .order_by(_o.id)
    )
    found: dict[int, list[int]] = {}
    for record_id, number in rows:
        found.setdefault(int(record_id), []).append(int(number))
    return found


# --- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordObjection:
    """An objection as one record's history tells it."""

    number: int
    reason: str
    outcome: str | None
    corrected_version: int | None  # the version that corrected this record, if any


def record_objections(conn: Connection, record_id: int) -> list[RecordObjection]:
    """The objections that covered a record, by number."""
    rows = conn.execute(
        select(_o.id, _o.reason, _o.outcome, _l.corrected_version)
        .join(OBJECTION_RECORDS, _l.objection_id == _o.id)
        .where(_l.record_id == record_id)
        .order_by(_o.id)
    )
    return [
        RecordObjection(int(n), str(reason), outcome, None if v is None else int(v))
        for n, reason, outcome, v in rows
    ]


def objection_case(engine: Engine, number: int) -> ObjectionCase:
    """One objection with its records and notes; NotFound when there is none."""
    with engine.connect() as conn:
        return _case(conn, number)


def list_objections(
    engine: Engine, *, open_only: bool = False, overdue_on: dt.date | None = None
) -> list[ObjectionCase]:
    """Objections by number: all, the open ones, or (``overdue_on`` a date) those still
    open past their deadline on that day."""
    query = select(_o.id).order_by(_o.id)
    if open_only or overdue_on is not None:
        query = query.where(_o.closed_at.is_(None))
    if overdue_on is not None:
        query = query.where(_o.due < overdue_on)
    with engine.connect() as conn:
        return _cases(conn, [int(n) for n in conn.execute(query).scalars()])


def objection_counts(engine: Engine, today: dt.date) -> tuple[int, int]:
    """How many objections are open, and how many of them are past their deadline on
    ``today``: one query, for the metrics scrape."""
    query = select(func.count(), func.sum(case((_o.due < today, 1), else_=0))).where(
        _o.closed_at.is_(None)
    )
    with engine.connect() as conn:
        open_, overdue = conn.execute(query).one()
    return int(open_), int(overdue or 0)


def _case(conn: Connection, number: int) -> ObjectionCase:
    found = _cases(conn, [number])
    if not found:
        raise NotFound(f"no objection {number}; 'credit-node objection list' shows them")
    return found[0]


def _cases(conn: Connection, numbers: Sequence[int]) -> list[ObjectionCase]:
    """The objections ``numbers`` (those that exist), in that order, each with its records
    and notes: three queries whatever their number."""
    if not numbers:
        return []
    r = RECORDS.c
    heads = {
        int(row.id): row for row in conn.execute(select(OBJECTIONS).where(_o.id.in_(list(numbers))))
    }
    covered: dict[int, list[CoveredRecord]] = {}
    for row in conn.execute(
        select(
            _l.objection_id, r.theme, r.record_key, r.status, r.version, _l.version_opened,
            _l.corrected_version, _l.corrected_batch_id,
        )
        .join(RECORDS, r.id == _l.record_id)
        .where(_l.objection_id.in_(list(heads)))
        .order_by(_l.objection_id, r.theme, r.record_key)
    ):  # fmt: skip
        covered.setdefault(int(row[0]), []).append(
            CoveredRecord(
                str(row[1]), str(row[2]), str(row[3]), int(row[4]), int(row[5]),
                None if row[6] is None else int(row[6]), None if row[7] is None else int(row[7]),
            )
        )  # fmt: skip
    notes: dict[int, list[ObjectionNoteView]] = {}
    for objection_id, text, written_at in conn.execute(
        select(_n.objection_id, _n.text, _n.written_at)
        .where(_n.objection_id.in_(list(heads)))
        .order_by(_n.id)
    ):
        notes.setdefault(int(objection_id), []).append(
            ObjectionNoteView(str(text), _aware(written_at))
        )
    subjects = repository.stored_subjects(conn, {str(h.subject_id) for h in heads.values()})
    cases = []
    for number in numbers:
        head = heads.get(number)
        if head is None:
            continue
        # a subject not found is shown as a person would be: masked (fail safe)
        subject_type = subjects.get(head.subject_id, (SubjectType.INDIVIDUAL.value, ""))[0]
        cases.append(
            ObjectionCase(
                number=number,
                subject=mask_identifier(head.subject_id, subject_type),
                subject_type=subject_type,
                reason=head.reason,
                applicant=head.applicant,
                applicant_role=head.applicant_role,
                channel=head.channel,
                received=head.received,
                due=head.due,
                opened_at=_aware(head.opened_at),
                closed_at=None if head.closed_at is None else _aware(head.closed_at),
                outcome=head.outcome,
                answered=head.answered,
                records=covered.get(number, []),
                notes=notes.get(number, []),
            )
        )
    return cases


def _aware(moment: dt.datetime) -> dt.datetime:
    """A stored timestamp (naive UTC on SQLite) as an aware datetime."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
