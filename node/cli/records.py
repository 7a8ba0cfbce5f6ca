"""The city's credit records: ``credit-node import``, ``show`` and ``check-id``.

Objections are ``credit-node objection …`` (``cli.objections``), a record's history
``credit-node history`` (``cli.history``) and credit repair ``credit-node repair``
(``cli.repair``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from creditexchange.clock import CST
from creditexchange.errors import InvalidIdentifier
from creditexchange.identifiers import mask_resident_id, validate_resident_id, validate_uscc
from creditexchange.node.app.wiring import open_node
from creditexchange.node.catalog import Catalog
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    out,
    print_json,
    reports_errors,
)
from creditexchange.node.cli.history import print_history
from creditexchange.node.records.history import RecordHistory, record_history
from creditexchange.node.records.importer import ImportSummary, import_file
from creditexchange.node.records.view import SubjectView, shown_value, subject_view

__all__ = [
    "check_id",
    "import_",
    "print_subject",
    "show",
]


def _print_summary(s: ImportSummary) -> None:
    out.print(
        f"{s.file}: read {s.read}, accepted {s.accepted} (new {s.inserted}, updated {s.updated}, "
        f"unchanged {s.unchanged}), rejected {s.rejected}"
        + (
            f"; {s.past_publicity} already past their publicity end (stored, not served)"
            if s.past_publicity
            else ""
        )
        + f" — batch {s.batch_id}"
    )
    if s.repeated:
        out.print(
            f"  {s.repeated} row(s) share a record key with another row of the file: none of "
            "them was imported (the report names all their lines)"
        )
    if s.stale:
        out.print(
            f"  {s.stale} row(s) are older than the versions stored and were not applied; if "
            "the department confirms them, import them again with --allow-older"
        )
    if s.reject_report:
        out.print(f"  rejected rows are listed in {s.reject_report}")
    if s.rejected_rows:
        out.print(
            f"  the rejected rows themselves are in {s.rejected_rows}: send it back to the "
            "department to correct and return, then import the corrected file"
        )


def _export_time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date or time; write 2026-11-30 or 2026-11-30T17:45 (China time)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=CST)


@reports_errors
def import_(
    files: Annotated[list[Path], typer.Argument(help="department files: .csv, .jsonl or .xlsx")],
    theme: Annotated[str, typer.Option(help="the catalog theme of the files")],
    home: HomeOption,
    source: Annotated[
        str | None, typer.Option(help="source department code (default: the theme's)")
    ] = None,
    encoding: Annotated[
        str, typer.Option(help="the files' encoding: utf-8, gbk, gb18030")
    ] = "utf-8",
    sheet: Annotated[
        str | None,
        typer.Option(help="a workbook's sheet, by name or number (default: the first)"),
    ] = None,
    exported_at: Annotated[
        str | None,
        typer.Option(
            help="when the department exported the files, e.g. 2026-11-30T17:45 (China time); "
            "default: each file's modification time"
        ),
    ] = None,
    allow_older: Annotated[
        bool,
        typer.Option(
            "--allow-older",
            help="apply rows older than the versions stored (refused otherwise, as stale)",
        ),
    ] = False,
    as_json: JsonOption = False,
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks", help="accept a symbolic link to a regular file (refused otherwise)"
        ),
    ] = False,
) -> None:
    """Import department files (.csv, .jsonl, .xlsx) into a theme.

    Rejected rows go to a reject report (line, record key, subject, field, value,
    reason) and, as they were, to a file of the same format for the department to
    correct. Exits 1 when any row was rejected (the good rows are imported all the same).
    """
    exported = _export_time(exported_at)
    node = open_node(home)
    summaries = []
    for path in files:
        with Progress(
            TextColumn("{task.description}", style="progress.description", markup=False),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task(path.name, total=path.stat().st_size if path.exists() else None)
            summary = import_file(
                node.database,
                node.catalog,
                path,
                theme,
                source=source,
                encoding=encoding,
                sheet=sheet,
                exported_at=exported,
                allow_older=allow_older,
                reject_dir=node.config.reject_dir,
                chunk_rows=node.config.settings.import_chunk_rows,
                progress=lambda done, task=task: bar.update(task, completed=done),  # type: ignore[misc]
                follow_symlinks=follow_symlinks,
            )
        summaries.append(summary)
        if not as_json:
            _print_summary(summary)
    if as_json:
        print_json(
            [
                {
                    "file": str(s.file),
                    "batch": s.batch_id,
                    "theme": s.theme,
                    "digest": s.file_digest,
                    "read": s.read,
                    "accepted": s.accepted,
                    "inserted": s.inserted,
                    "updated": s.updated,
                    "unchanged": s.unchanged,
                    "rejected": s.rejected,
                    "rejects_by_reason": s.rejects_by_reason,
                    "repeated_keys": s.repeated,
                    "stale": s.stale,
                    "exported_at": s.exported_at.isoformat() if s.exported_at else None,
                    "past_publicity": s.past_publicity,
                    "reject_report": str(s.reject_report) if s.reject_report else None,
                    "rejected_rows": str(s.rejected_rows) if s.rejected_rows else None,
                }
                for s in summaries
            ]
        )
    if any(s.rejected for s in summaries):
        raise typer.Exit(1)


def print_subject(
    view: SubjectView,
    catalog: Catalog,
    histories: Mapping[tuple[str, str], RecordHistory] | None = None,
) -> None:
    """A subject for an operator: records in catalog order, labelled in Chinese, values
    with their units; with ``histories`` (by theme and record key), each of this node's
    own records followed by its history."""
    out.print(Text.assemble((view.name, "bold"), f"  {view.subject_id}  ({view.subject_type})"))
    if not view.records:
        out.print("  no current records")
    for r in view.records:
        flag = ("  异议处理中 objection in progress", "bold yellow") if r.under_objection else ""
        until = f", public until {r.publicity_end}" if r.publicity_end else ""
        origin = (f"  synced from {r.origin}", "magenta") if r.origin else ""
        out.print(
            Text.assemble(
                "  ",
                (r.theme_name, "cyan"),
                f" {r.record_key}  (v{r.version}, {r.source_department}{until})",
                origin,
                flag,
            )
        )
        specs = catalog.theme(r.theme).field_by_name
        for name, value in r.fields.items():
            out.print(f"    {specs[name].name_zh}: {shown_value(specs[name], value)}")
        if histories is not None:
            found = None if r.origin else histories.get((r.theme, r.record_key))
            if found is not None:
                out.print("    history:", style="bold")
                print_history(found, indent="      ")
            elif r.origin:
                out.print(f"    (its history is kept by {r.origin})")
    if view.hidden:
        out.print(
            f"  ({view.hidden} record(s) past their publicity end, withdrawn or repaired are "
            "not shown; 'credit-node history THEME KEY' tells what happened to one)"
        )


@reports_errors
def show(
    subject_id: Annotated[
        str, typer.Argument(help="a unified social credit code or identity number")
    ],
    home: HomeOption,
    as_json: JsonOption = False,
    with_history: Annotated[
        bool,
        typer.Option("--history", help="each record with its versions, objections and repairs"),
    ] = False,
) -> None:
    """Show a subject and its current records, as this node would serve them."""
    node = open_node(home)
    view = subject_view(node.database, node.catalog, subject_id)
    histories = None
    if with_history:
        histories = {
            (r.theme, r.record_key): record_history(
                node.database, node.catalog, r.theme, r.record_key
            )
            for r in view.records
            if not r.origin
        }
    if not as_json:
        print_subject(view, node.catalog, histories)
        return
    shown = view.as_json()
    if histories is not None:
        for record in shown["records"]:
            found = histories.get((record["theme"], record["record_key"]))
            if found is not None and not record["origin"]:
                record["history"] = [e.as_json() for e in found.entries]
    print_json(shown)


@reports_errors
def check_id(
    value: Annotated[
        str, typer.Argument(help="a unified social credit code or resident identity number")
    ],
) -> None:
    """Check an identifier's check character; exits 1 when it is invalid."""
    text = value.strip()
    individual = len(text) == 18 and text[:17].isdigit()
    try:
        if individual:
            validate_resident_id(text)
            out.print(f"{mask_resident_id(text)}: a valid resident identity number")
        else:
            validate_uscc(text)
            out.print(f"{text.upper()}: a valid unified social credit code")
    except InvalidIdentifier as exc:
        kind = "resident identity number" if individual else "unified social credit code"
        err.print(f"not a valid {kind}: {exc}")
        raise typer.Exit(1) from None
