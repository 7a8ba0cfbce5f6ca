"""``credit-node history``: what happened to a record.

``history THEME RECORD_KEY`` prints every data version of a record — when, from
which import batch and file, why (import, correction, the corrected data of an
objection) and what changed, field by field in the catalog's Chinese names — and
every event (objection opened or closed, repair, withdrawal), oldest first.
``show SUBJECT --history`` prints it for each record shown.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from creditexchange.node.app.wiring import open_node
from creditexchange.node.cli.common import HomeOption, JsonOption, out, print_json, reports_errors
from creditexchange.node.cli.objections import stamp
from creditexchange.node.records.history import HistoryEntry, RecordHistory, record_history

__all__ = ["history", "print_history"]


def _print_entry(entry: HistoryEntry, indent: str) -> None:
    if entry.kind in ("import", "correction"):
        source = f"batch {entry.batch_id}" if entry.batch_id is not None else "no import batch"
        if entry.file_name:
            source += f" ({entry.file_name})"
        out.print(
            Text.assemble(
                indent,
                (f"v{entry.version}", "bold"),
                f"  {stamp(entry.at)}  {entry.why}, {source}",
            )
        )
        for change in entry.changes:
            if entry.kind == "import":
                out.print(f"{indent}    {change.label}: {change.after or '—'}")
            else:
                out.print(
                    f"{indent}    {change.label}: {change.before or '—'} → {change.after or '—'}"
                )
        return
    out.print(
        Text.assemble(
            indent,
            (f"v{entry.version}", "dim"),
            f"  {stamp(entry.at)}  ",
            (entry.why, "yellow"),
            f"  [now {entry.status}]",
        )
    )


def print_history(history: RecordHistory, indent: str = "  ") -> None:
    """A record's history for an operator, oldest first (the record's heading excluded)."""
    for entry in history.entries:
        _print_entry(entry, indent)


@reports_errors
def history(
    theme: Annotated[str, typer.Argument(help="the catalog theme of the record")],
    record_key: Annotated[str, typer.Argument(help="the record's key")],
    home: HomeOption,
    as_json: JsonOption = False,
) -> None:
    """Show every version of a record with what changed, and every objection, repair or
    withdrawal, oldest first."""
    node = open_node(home)
    found = record_history(node.database, node.catalog, theme, record_key)
    if as_json:
        print_json(found.as_json())
        return
    out.print(
        Text.assemble(
            (found.theme_name, "cyan"),
            f" {found.record_key}  subject {found.subject} ({found.subject_type}), "
            f"now version {found.version}, {found.status}",
        )
    )
    print_history(found)
