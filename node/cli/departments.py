"""``credit-node departments report``: how the source departments delivered their data
in one month (信用信息报送考核), as a table, CSV or JSON.

What every figure means is :mod:`~creditexchange.node.records.reporting`'s; this
command parses, calls it and prints.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from creditexchange.node.app.wiring import open_node
from creditexchange.node.cli.common import HomeOption, err, out, print_json, reports_errors
from creditexchange.node.records.reporting import (
    REJECT_REASON_NAMES,
    DepartmentsReport,
    Figures,
    ReportMonth,
    departments_report,
)
from creditexchange.workdays import load_calendar

__all__ = ["departments_app"]

departments_app = typer.Typer(
    help="Source departments: how they deliver their data (信用信息报送考核).",
    no_args_is_help=True,
)


class ReportFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def _month(value: str) -> ReportMonth:
    try:
        return ReportMonth.parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--month") from None


def _format(chosen: ReportFormat | None, output: Path | None) -> ReportFormat:
    """The format asked, else the one ``--output``'s suffix names, else a table."""
    if chosen is None and output is not None:
        chosen = {".csv": ReportFormat.CSV, ".json": ReportFormat.JSON}.get(output.suffix.lower())
        if chosen is None:
            raise typer.BadParameter(
                f"cannot tell the format of {output.name}: name a .csv or .json file, "
                "or add --format csv / --format json",
                param_hint="--output",
            )
    chosen = chosen or ReportFormat.TABLE
    if chosen is ReportFormat.TABLE and output is not None:
        raise typer.BadParameter(
            "a table is for the screen; write a file as --format csv or --format json",
            param_hint="--output",
        )
    return chosen


@departments_app.command("report")
@reports_errors
def report(
    home: HomeOption,
    month: Annotated[
        str, typer.Option(help="the month, YYYY-MM (batches started then, China's date)")
    ],
    format_: Annotated[
        ReportFormat | None,
        typer.Option(
            "--format", help="table (default), csv or json; with --output, from its suffix"
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="write the report to this file (CSV in UTF-8 with a BOM, which Excel opens)"
        ),
    ] = None,
    department: Annotated[
        str | None, typer.Option(help="one source department (its catalog code)")
    ] = None,
    theme: Annotated[str | None, typer.Option(help="one theme (its catalog code)")] = None,
) -> None:
    """A month's deliveries by source department and theme (信用信息报送考核).

    Batches, rows received, accepted, rejected (by reason), stale, late rows, missed
    deliveries and records past their publicity, with totals per department and overall.
    """
    wanted = _month(month)
    fmt = _format(format_, output)
    node = open_node(home)
    calendar = load_calendar(node.config.workdays_path)
    result = departments_report(
        node.database,
        node.catalog,
        wanted,
        calendar=calendar,
        department=department,
        theme=theme,
    )
    if not result.holidays_known:
        err.print(
            f"note: the working-day calendar lists no holidays for {wanted.year}, so working "
            "days were counted Monday to Friday; add the year's holidays and working weekends "
            "to the file of the workdays_path setting",
            soft_wrap=True,
        )
    if fmt is ReportFormat.TABLE:
        _print_table(result)
        return
    if output is None:
        if fmt is ReportFormat.JSON:
            print_json(result.as_json())
        else:  # on a terminal: no BOM, which --output writes for Excel
            out.print(result.csv_bytes().decode("utf-8-sig"), end="", soft_wrap=True)
        return
    data = (
        result.csv_bytes()
        if fmt is ReportFormat.CSV
        else (json.dumps(result.as_json(), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    )
    try:
        output.write_bytes(data)
    except OSError as exc:
        err.print(f"error: cannot write {output}: {exc.strerror}; choose another --output")
        raise typer.Exit(2) from None
    out.print(f"written to {output}")


def _count(value: int | None) -> str:
    """A figure as the table shows it: — where the theme has no rule for it."""
    return "—" if value is None else f"{value:,}"


def _print_table(result: DepartmentsReport) -> None:
    reasons = [r for r in result.reasons if result.total.rejected_by_reason.get(r)]
    scope = " ".join(
        f"{what} {code}"
        for what, code in (("department", result.department), ("theme", result.theme))
        if code
    )
    table = Table(
        title=f"信用信息报送考核 {result.month} — source departments' deliveries"
        + (f" ({scope})" if scope else ""),
        caption=f"as of {result.as_of}, catalog {result.catalog_version}",
    )
    table.add_column("部门\ndepartment")
    table.add_column("主题\ntheme")
    headers = [
        "批次\nbatches",
        "接收\nreceived",
        "入库\naccepted",
        "新增\nnew",
        "更新\nupdated",
        "未变\nunchanged",
        "拒收\nrejected",
        *(f"拒收·{REJECT_REASON_NAMES.get(r, r)}\nrejected: {r}" for r in reasons),
        "过时拒收\nstale refused",
        "逾期\nlate rows",
        "漏报\nmissed",
        "公示期满\npast publicity",
    ]
    for header in headers:
        table.add_column(header, justify="right")

    def cells(f: Figures) -> list[str]:
        return [
            _count(f.batches),
            _count(f.rows_received),
            _count(f.accepted),
            _count(f.inserted),
            _count(f.updated),
            _count(f.unchanged),
            _count(f.rejected),
            *(_count(f.rejected_by_reason.get(r, 0)) for r in reasons),
            _count(f.stale),
            _count(f.late_rows),
            _count(f.missed_deliveries),
            _count(f.past_publicity),
        ]

    for d in result.departments:
        rows = [r for r in result.rows if r.department == d.department]
        for r in rows:
            table.add_row(
                r.department_name or r.department, r.theme_name or r.theme, *cells(r.figures)
            )
        table.add_row(
            d.department_name or d.department, "小计 subtotal", *cells(d.figures), style="bold"
        )
        table.add_section()
    table.add_row("合计 total", "", *cells(result.total), style="bold")
    out.print(table)
    out.print(
        f"late rows: received more than the theme's working days after the decision; "
        f"missed: delivery periods whose deadline passed by {result.as_of} without a file; "
        f"past publicity: records not withdrawn whose publicity ended by "
        f"{result.month.last_day}; —: the theme has no such rule",
        style="dim",
        soft_wrap=True,
    )
    for r in result.rows:
        if r.missed_due_dates:
            out.print(
                f"{r.department_name or r.department} {r.theme_name or r.theme}: no file by "
                + ", ".join(d.isoformat() for d in r.missed_due_dates)
            )
