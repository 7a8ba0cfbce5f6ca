"""``credit-node objection …``: objections (信用异议) to records, from receipt to answer.

``open`` records an objection to one or more records of one subject and marks them
异议处理中 wherever they are served; its answer deadline is counted in working days
(``objection_answer_working_days``, the calendar of ``workdays_path``). ``note``
adds a handling note, ``close`` records the outcome (``corrected`` only once the
corrected data is imported), ``list`` shows them (``--open``, ``--overdue``) and
``show`` one of them with its records and notes.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from creditexchange.clock import CST, china_today
from creditexchange.node.app.wiring import OpenedNode, open_node
from creditexchange.node.cli.common import HomeOption, JsonOption, out, print_json, reports_errors
from creditexchange.node.records.objections import (
    AnswerDeadline,
    ApplicantRole,
    ObjectionCase,
    ObjectionOutcome,
    close_objection,
    list_objections,
    note_objection,
    objection_case,
    open_objection,
)
from creditexchange.workdays import load_calendar

__all__ = ["china_day", "objection_app", "stamp"]

objection_app = typer.Typer(
    help="Objections (信用异议) to records: open, note, close, list, show.",
    no_args_is_help=True,
)


def china_day(value: str | None, option: str) -> dt.date | None:
    """A ``YYYY-MM-DD`` option as a date (a day in China), or a usage error naming it."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date: write it as 2026-09-30 (a day in China)", param_hint=option
        ) from None


def stamp(moment: dt.datetime) -> str:
    """A moment as an operator reads it: China time, to the minute."""
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M")


def _deadline(node: OpenedNode) -> AnswerDeadline:
    return AnswerDeadline(
        load_calendar(node.config.workdays_path),
        node.config.settings.objection_answer_working_days,
    )


def _state(case: ObjectionCase, today: dt.date) -> str:
    if case.is_open:
        return "OVERDUE" if case.overdue(today) else "open"
    late = " (late)" if case.answered_late else ""
    return f"{case.outcome}{late}"


def _print_case(case: ObjectionCase, today: dt.date) -> None:
    out.print(
        Text.assemble(
            (f"objection {case.number}", "bold"),
            f"  {_state(case, today)}",
            f"  subject {case.subject} ({case.subject_type})",
        )
    )
    role = "agent for the subject" if case.applicant_role == ApplicantRole.AGENT else "the subject"
    out.print(f"  applicant: {case.applicant} ({role}), channel: {case.channel}")
    out.print(f"  received {case.received}, answer due {case.due}")
    if case.answered is not None:
        out.print(f"  answered {case.answered}: {case.outcome}")
    out.print(f"  reason: {case.reason}")
    for r in case.records:
        corrected = (
            f", corrected by version {r.corrected_version} (import batch {r.corrected_batch})"
            if r.corrected_version is not None
            else ""
        )
        out.print(
            f"  record {r.theme} {r.record_key}: version {r.version_opened} when opened, "
            f"now version {r.version}, {r.status}{corrected}"
        )
    for n in case.notes:
        out.print(f"  note {stamp(n.written_at)}: {n.text}")


@objection_app.command("open")
@reports_errors
def objection_open(
    theme: Annotated[str, typer.Argument(help="the catalog theme of the records")],
    record_keys: Annotated[list[str], typer.Argument(help="the record key(s) objected to")],
    home: HomeOption,
    reason: Annotated[str, typer.Option(help="what the subject says is wrong")],
    applicant: Annotated[str, typer.Option(help="the name of who brought the objection")],
    channel: Annotated[
        str, typer.Option(help="how it came in: window, online or member:<member id>")
    ],
    agent: Annotated[
        bool, typer.Option("--agent", help="the applicant acts for the subject")
    ] = False,
    received: Annotated[
        str | None, typer.Option(help="the day it was received, YYYY-MM-DD (default: today)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Open an objection to records of one subject; they are marked 异议处理中 until it closes."""
    node = open_node(home)
    deadline = _deadline(node)
    case = open_objection(
        node.database,
        theme,
        record_keys,
        reason=reason,
        applicant=applicant,
        channel=channel,
        role=ApplicantRole.AGENT if agent else ApplicantRole.SUBJECT,
        received=china_day(received, "--received"),
        deadline=deadline,
    )
    today = china_today()
    if as_json:
        print_json(case.as_json(today))
        return
    out.print(
        f"objection {case.number} opened: {len(case.records)} record(s) of {case.subject} "
        "marked 异议处理中 (objection in progress)"
    )
    out.print(
        f"  received {case.received}; answer due {case.due} ({deadline.working_days} working days)"
    )
    if not deadline.calendar.knows(case.due.year):
        out.print(
            f"  note: the working-day calendar lists no holidays of {case.due.year}, so the "
            "deadline counts Monday to Friday only; list them in the file of workdays_path",
            style="yellow",
        )


@objection_app.command("note")
@reports_errors
def objection_note(
    number: Annotated[int, typer.Argument(help="the objection's number")],
    text: Annotated[str, typer.Argument(help="the handling note")],
    home: HomeOption,
) -> None:
    """Add a handling note to an open objection."""
    node = open_node(home)
    case = note_objection(node.database, number, text)
    out.print(f"objection {case.number}: note {len(case.notes)} added")


@objection_app.command("close")
@reports_errors
def objection_close(
    number: Annotated[int, typer.Argument(help="the objection's number")],
    home: HomeOption,
    outcome: Annotated[
        ObjectionOutcome,
        typer.Option(
            help="confirmed (the record stands), corrected (its corrected data imported), "
            "revoked (the record should not be public: withdrawn from publicity), "
            "withdrawn (the applicant withdrew the objection), unresolved"
        ),
    ],
    note: Annotated[str, typer.Option(help="the answer, kept as a handling note")] = "",
    corrected: Annotated[
        list[str] | None,
        typer.Option(
            help="with --outcome corrected: a record key that was corrected (repeat it; "
            "default: every record of the objection)"
        ),
    ] = None,
    answered: Annotated[
        str | None, typer.Option(help="the day it was answered, YYYY-MM-DD (default: today)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Close an objection with its outcome; a record whose last open objection it was loses
    its mark. 'corrected' needs the corrected data imported first."""
    node = open_node(home)
    case = close_objection(
        node.database,
        number,
        outcome,
        note=note,
        corrected=corrected or None,
        answered=china_day(answered, "--answered"),
    )
    today = china_today()
    if as_json:
        print_json(case.as_json(today))
        return
    late = f", after its deadline {case.due}" if case.answered_late else ""
    out.print(f"objection {case.number} closed as {case.outcome} on {case.answered}{late}")
    for r in case.records:
        if r.status == "objection":
            out.print(f"  {r.theme} {r.record_key} stays marked: another objection is open on it")
        else:
            out.print(f"  {r.theme} {r.record_key} is {r.status}")


@objection_app.command("list")
@reports_errors
def objection_list(
    home: HomeOption,
    open_only: Annotated[bool, typer.Option("--open", help="only those still open")] = False,
    overdue: Annotated[
        bool, typer.Option("--overdue", help="only those open past their deadline")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List objections: number, state, received and due dates, subject, records, applicant."""
    node = open_node(home)
    today = china_today()
    cases = list_objections(
        node.database, open_only=open_only, overdue_on=today if overdue else None
    )
    if as_json:
        print_json([c.as_json(today) for c in cases])
        return
    if not cases:
        out.print("no objections" + (" overdue" if overdue else " open" if open_only else ""))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("no.", "state", "received", "due", "subject", "records", "applicant"):
        table.add_column(column, no_wrap=column != "records")
    for c in cases:
        table.add_row(
            str(c.number),
            Text(_state(c, today), style="bold red" if c.overdue(today) else ""),
            str(c.received),
            str(c.due),
            c.subject,
            ", ".join(f"{r.theme} {r.record_key}" for r in c.records),
            c.applicant,
        )
    out.print(table)


@objection_app.command("show")
@reports_errors
def objection_show(
    number: Annotated[int, typer.Argument(help="the objection's number")],
    home: HomeOption,
    as_json: JsonOption = False,
) -> None:
    """Show an objection with its records and handling notes."""
    node = open_node(home)
    case = objection_case(node.database, number)
    today = china_today()
    if as_json:
        print_json(case.as_json(today))
    else:
        _print_case(case, today)
