"""``credit-node measures``: the joint reward and punishment measures catalog, and the
count of screenings' triggers and feedback.

    measures show     the scenes, their triggers and measures, with legal bases
    measures report   per scene and department: screenings, measures found, feedback

``show`` reads the node's own catalog (``measures_path``) with ``--home``, checked
against its data catalog; without ``--home`` the catalog shipped with the node. The
report counts what ``creditexchange.node.federation.screening`` stored; the
department is the partner system that ran the screening.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from creditexchange.node.app.config import load_config
from creditexchange.node.catalog import load_catalog
from creditexchange.node.cli.common import HomeOption, JsonOption, out, print_json, reports_errors
from creditexchange.node.database import open_database
from creditexchange.node.federation.screening import measures_report
from creditexchange.node.measures import load_measures

__all__ = ["measures_app", "measures_report_command", "measures_show"]

measures_app = typer.Typer(no_args_is_help=True, help="The measures catalog and its use.")


@measures_app.command("show")
@reports_errors
def measures_show(
    home: Annotated[Path | None, typer.Option("--home", envvar="CREDIT_NODE_HOME")] = None,
    scene: Annotated[str | None, typer.Option(help="show this scene only")] = None,
    as_json: JsonOption = False,
) -> None:
    """List the measures catalog: per scene, each trigger's measure, legal basis, binding."""
    if home is not None:
        config = load_config(home)
        setting = config.settings.measures_path
        measures = load_measures(
            config.path(setting) if setting is not None else None,
            catalog=load_catalog(config.catalog_path),
        )
    else:
        measures = load_measures(catalog=load_catalog())
    scenes = [measures.scene(scene)] if scene else measures.scenes
    if as_json:
        print_json(
            {
                **measures.model_dump(mode="json", exclude={"scenes"}),
                "scenes": [s.model_dump(mode="json") for s in scenes],
            }
        )
        return
    out.print(Text.assemble((measures.title, "bold"), f" — version {measures.version}"))
    for s in scenes:
        table = Table(title=f"{s.code}  {s.name_zh} / {s.name_en}  (purpose {s.purpose})")
        table.add_column("trigger", no_wrap=True)
        for column in ("list or grade", "measure", "binding", "legal basis"):
            table.add_column(column)
        for m in s.measures:
            trigger = measures.trigger_by_code[m.trigger]
            condition = trigger.condition
            reads = ", ".join(trigger.themes) + (
                f" where {condition.field} in {', '.join(condition.values)}" if condition else ""
            )
            table.add_row(
                m.trigger,
                f"{trigger.name_zh}\n{reads}",
                f"{m.kind.value}\n{m.description_zh}",
                "yes" if m.binding else "no",
                m.legal_basis,
            )
        out.print(table)


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: give a date as YYYY-MM-DD", param_hint=option
        ) from None


@measures_app.command("report")
@reports_errors
def measures_report_command(
    home: HomeOption,
    since: Annotated[
        str | None, typer.Option("--from", help="first China date counted, YYYY-MM-DD")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="last China date counted, YYYY-MM-DD")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Count triggers and feedback per scene and department (the partner system that
    screened): screenings, subjects, measures by kind, applied, not applied, pending."""
    config = load_config(home)
    engine = open_database(config.database_url)
    try:
        counts = measures_report(engine, since=_date(since, "--from"), until=_date(until, "--to"))
    finally:
        engine.dispose()
    if as_json:
        print_json([{**dataclasses.asdict(c), "pending": c.pending} for c in counts])
        return
    period = f"{since or 'the start'} to {until or 'today'}"
    if not counts:
        out.print(f"no screening from {period}")
        return
    table = Table(title=f"Joint rewards and punishments, {period}")
    for column in (
        "scene",
        "department",
        "screenings",
        "subjects",
        "measures",
        "prohibit/restrict/supervise/facilitate",
        "applied",
        "not applied",
        "pending",
    ):
        table.add_column(column)
    for c in counts:
        kinds = c.by_kind
        table.add_row(
            c.scene,
            c.department,
            f"{c.screenings}" + (f" ({c.incomplete} incomplete)" if c.incomplete else ""),
            str(c.subjects),
            str(c.triggers),
            "/".join(
                str(kinds.get(k, 0))
                for k in ("prohibit", "restrict", "heightened_supervision", "facilitate")
            ),
            str(c.applied),
            str(c.not_applied),
            str(c.pending),
        )
    out.print(table)
