"""Record history, objections as a workflow, credit repair.

* ``record_events``: what happened to a record without changing its data (an
  objection opened or closed, a repair, a withdrawal). A status change no longer
  makes a new version; ``record_versions`` keeps data versions only.
* ``objections`` become a case: applicant and role, channel, received date and the
  statutory answer deadline, the date answered. The records an objection covers
  move to ``objection_records`` (one objection may cover several records of one
  subject), with the version each had when it opened and, for the outcome
  ``corrected``, the newer version and import batch that corrected it. Handling
  notes move to ``objection_notes``.
* ``repairs``: credit repairs (信用修复) that ended a record's publicity early.

Objections recorded before this revision keep their record, reason, times and
outcome; they are marked as received at the window from the subject itself on the
day they were opened, due 14 working days later (the default answer period), and
their closing note becomes their one handling note.

Revision ID: 0012
Revises: 0011
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

from creditexchange.clock import CST
from creditexchange.workdays import DEFAULT_CALENDAR

revision = "0012"
down_revision = "0011"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)

_ANSWER_WORKING_DAYS = 14  # the default of objection_answer_working_days when this ran


def upgrade() -> None:
    op.create_table(
        "record_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("record_id", BigId, sa.ForeignKey("records.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("why", sa.Text, nullable=False),
        sa.Column("at", Stamp, nullable=False),
    )
    op.create_index("ix_record_events_record_id", "record_events", ["record_id"])
    op.create_table(
        "repairs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("record_id", BigId, sa.ForeignKey("records.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("basis", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("applicant", sa.String(256), nullable=True),
        sa.Column("decided", sa.Date, nullable=False),
        sa.Column("publicity_end_before", sa.Date, nullable=True),
        sa.Column("recorded_at", Stamp, nullable=False),
    )
    op.create_index("ix_repairs_record_id", "repairs", ["record_id"])

    # The objections table is rebuilt (SQLite copies it) before any table refers to it:
    # what moves to the new tables is read first, and written after.
    carried = _read_objections()
    op.drop_index("ix_objections_record_id", table_name="objections")
    with op.batch_alter_table("objections") as batch:
        batch.drop_column("record_id")
        batch.drop_column("note")
        batch.add_column(sa.Column("subject_id", sa.String(18), nullable=True))
        batch.add_column(sa.Column("applicant", sa.String(256), nullable=True))
        batch.add_column(sa.Column("applicant_role", sa.String(16), nullable=True))
        batch.add_column(sa.Column("channel", sa.String(64), nullable=True))
        batch.add_column(sa.Column("received", sa.Date, nullable=True))
        batch.add_column(sa.Column("due", sa.Date, nullable=True))
        batch.add_column(sa.Column("answered", sa.Date, nullable=True))
    _fill_objections(carried)
    with op.batch_alter_table("objections") as batch:
        for name, kind in (
            ("subject_id", sa.String(18)),
            ("applicant", sa.String(256)),
            ("applicant_role", sa.String(16)),
            ("channel", sa.String(64)),
            ("received", sa.Date),
            ("due", sa.Date),
        ):
            batch.alter_column(name, existing_type=kind, nullable=False)
    op.create_index("ix_objections_subject_id", "objections", ["subject_id"])

    op.create_table(
        "objection_records",
        sa.Column(
            "objection_id",
            BigId,
            sa.ForeignKey("objections.id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column(
            "record_id", BigId, sa.ForeignKey("records.id"), primary_key=True, autoincrement=False
        ),
        sa.Column("version_opened", sa.Integer, nullable=False),
        sa.Column("corrected_version", sa.Integer, nullable=True),
        sa.Column("corrected_batch_id", BigId, sa.ForeignKey("import_batches.id"), nullable=True),
    )
    op.create_index("ix_objection_records_record_id", "objection_records", ["record_id"])
    op.create_table(
        "objection_notes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("objection_id", BigId, sa.ForeignKey("objections.id"), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("written_at", Stamp, nullable=False),
    )
    op.create_index("ix_objection_notes_objection_id", "objection_notes", ["objection_id"])
    _link_objections(carried)


_Carried = tuple[int, int, dt.datetime, dt.datetime | None, str | None, str, int]
"""An objection recorded before: number, record id, opened, closed, note, subject, version."""


def _read_objections() -> list[_Carried]:
    """The objections recorded before this revision, with their record's subject and version."""
    objections = sa.table(
        "objections",
        sa.column("id"),
        sa.column("record_id"),
        sa.column("opened_at", Stamp),
        sa.column("closed_at", Stamp),
        sa.column("note"),
    )
    records = sa.table("records", sa.column("id"), sa.column("subject_id"), sa.column("version"))
    rows = op.get_bind().execute(
        sa.select(
            objections.c.id,
            objections.c.record_id,
            objections.c.opened_at,
            objections.c.closed_at,
            objections.c.note,
            records.c.subject_id,
            records.c.version,
        ).select_from(objections.join(records, records.c.id == objections.c.record_id))
    )
    return [
        (int(n), int(r), _stamp(opened), None if closed is None else _stamp(closed), note, s, v)
        for n, r, opened, closed, note, s, v in rows
    ]


def _fill_objections(carried: list[_Carried]) -> None:
    """Give the objections recorded before their new columns."""
    objections = sa.table(
        "objections",
        sa.column("id"),
        sa.column("subject_id"),
        sa.column("applicant"),
        sa.column("applicant_role"),
        sa.column("channel"),
        sa.column("received", sa.Date),
        sa.column("due", sa.Date),
        sa.column("answered", sa.Date),
    )
    conn = op.get_bind()
    for number, _record, opened, closed, _note, subject_id, _version in carried:
        received = opened.astimezone(CST).date()
        conn.execute(
            objections.update()
            .where(objections.c.id == number)
            .values(
                subject_id=subject_id,
                applicant="",
                applicant_role="subject",
                channel="window",
                received=received,
                due=DEFAULT_CALENDAR.add_working_days(received, _ANSWER_WORKING_DAYS),
                answered=None if closed is None else closed.astimezone(CST).date(),
            )
        )


def _link_objections(carried: list[_Carried]) -> None:
    """Move the record and the closing note of each objection recorded before."""
    links = sa.table(
        "objection_records",
        sa.column("objection_id"),
        sa.column("record_id"),
        sa.column("version_opened"),
    )
    notes = sa.table(
        "objection_notes",
        sa.column("objection_id"),
        sa.column("text"),
        sa.column("written_at", Stamp),
    )
    conn = op.get_bind()
    for number, record_id, opened, closed, note, _subject, version in carried:
        conn.execute(
            links.insert().values(objection_id=number, record_id=record_id, version_opened=version)
        )
        if note:
            conn.execute(
                notes.insert().values(objection_id=number, text=note, written_at=closed or opened)
            )


def _stamp(moment: dt.datetime | str) -> dt.datetime:
    """A stored timestamp as an aware datetime (SQLite returns it naive, or as text, in UTC)."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
