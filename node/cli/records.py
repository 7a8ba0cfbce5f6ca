"""The city's credit records: ``credit-node import``, ``show``, ``check-id`` and
``objection …``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

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
from creditexchange.node.records.importer import ImportSummary, import_file
from creditexchange.node.records.objections import ObjectionOutcome, close_objection, open_objection
from creditexchange.node.records.view import SubjectView, subject_view

__all__ = [
    "check_id",
    "import_",
    "objection_app",
    "print_subject",
    "show",
]

objection_app = typer.Typer(help="Objections (信用异议) to records.", no_args_is_help=True)


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
    if s.reject_report:
        out.print(f"  rejected rows are listed in {s.reject_report}")


@reports_errors
def import_(
    files: Annotated[list[Path], typer.Argument(help="department files: .csv or .jsonl")],
    theme: Annotated[str, typer.Option(help="the catalog theme of the files")],
    home: HomeOption,
    source: Annotated[
        str | None, typer.Option(help="source department code (default: the theme's)")
    ] = None,
    encoding: Annotated[
        str, typer.Option(help="the files' encoding: utf-8, gbk, gb18030")
    ] = "utf-8",
    as_json: JsonOption = False,
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks", help="accept a symbolic link to a regular file (refused otherwise)"
        ),
    ] = False,
) -> None:
    """Import department files into a theme; rejected rows go to a reject report.

    Exits 1 when any row was rejected (the good rows are imported all the same).
    """
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
                    "past_publicity": s.past_publicity,
                    "reject_report": str(s.reject_report) if s.reject_report else None,
                }
                for s in summaries
            ]
        )
    if any(s.rejected for s in summaries):
        raise typer.Exit(1)


def print_subject(view: SubjectView, catalog: Catalog) -> None:
    """A subject for an operator: records in catalog order, labelled in Chinese."""
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
            spec = specs[name]
            shown = (
                f"{value} ({spec.codes[value]})" if spec.codes and value in spec.codes else value
            )
            out.print(f"    {spec.name_zh}: {shown}")
    if view.hidden:
        out.print(
            f"  ({view.hidden} record(s) past their publicity end or withdrawn are not shown)"
        )


@reports_errors
def show(
    subject_id: Annotated[
        str, typer.Argument(help="a unified social credit code or identity number")
    ],
    home: HomeOption,
    as_json: JsonOption = False,
) -> None:
    """Show a subject and its current records, as this node would serve them."""
    node = open_node(home)
    view = subject_view(node.database, node.catalog, subject_id)
    if as_json:
        print_json(view.as_json())
    else:
        print_subject(view, node.catalog)


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


@objection_app.command("open")
@reports_errors
def objection_open(
    theme: str,
    record_key: str,
    home: HomeOption,
    reason: Annotated[str, typer.Option(help="what the subject says is wrong")],
) -> None:
    """Mark a record as under objection (异议处理中)."""
    node = open_node(home)
    number = open_objection(node.database, theme, record_key, reason)
    out.print(f"objection {number} opened; {theme}/{record_key} is marked 'objection in progress'")


@objection_app.command("close")
@reports_errors
def objection_close(
    theme: str,
    record_key: str,
    home: HomeOption,
    outcome: Annotated[ObjectionOutcome, typer.Option(help="corrected, confirmed or unresolved")],
    note: str = "",
) -> None:
    """Close a record's open objection with its outcome."""
    node = open_node(home)
    number = close_objection(node.database, theme, record_key, outcome, note)
    out.print(f"objection {number} closed as {outcome}; {theme}/{record_key} is active again")
