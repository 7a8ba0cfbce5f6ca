"""``credit-node catalog …``: the data catalog the node validates and serves by."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from creditexchange.node.app.config import load_config
from creditexchange.node.catalog import load_catalog
from creditexchange.node.cli.common import JsonOption, out, print_json, reports_errors
from creditexchange.subjects import SubjectType

__all__ = [
    "catalog_app",
]

catalog_app = typer.Typer(
    help="The data catalog: themes, fields, publicity rules.", no_args_is_help=True
)


@catalog_app.command("list")
@reports_errors
def catalog_list(
    home: Annotated[Path | None, typer.Option("--home", envvar="CREDIT_NODE_HOME")] = None,
    as_json: JsonOption = False,
) -> None:
    """List the catalog's data themes (the node's own catalog with --home)."""
    catalog = load_catalog(load_config(home).catalog_path if home else None)
    if as_json:
        print_json(
            [
                t.model_dump(
                    mode="json",
                    include={
                        "code",
                        "name_zh",
                        "name_en",
                        "category",
                        "source_department",
                        "subject_types",
                        "is_list",
                    },
                )
                for t in catalog.themes
            ]
        )
        return
    table = Table(title=f"{catalog.title} — version {catalog.catalog_version}")
    table.add_column("theme", no_wrap=True)
    for column in ("名称 / name", "source", "subjects", "publicity"):
        table.add_column(column)
    for t in catalog.themes:
        rule = t.publicity
        publicity = "" if rule is None else f"{rule.min_months}-{rule.max_months or '∞'} months"
        table.add_row(
            t.code,
            f"{t.name_zh}\n{t.name_en}",
            t.source_department,
            "all five" if len(t.subject_types) == len(SubjectType) else ", ".join(t.subject_types),
            publicity,
        )
    out.print(table)


@catalog_app.command("show")
@reports_errors
def catalog_show(
    theme: str,
    home: Annotated[Path | None, typer.Option("--home", envvar="CREDIT_NODE_HOME")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show one theme: its fields, types, codes and publicity rule."""
    catalog = load_catalog(load_config(home).catalog_path if home else None)
    t = catalog.theme(theme)
    if as_json:
        print_json(t.model_dump(mode="json"))
        return
    out.print(Text.assemble((t.code, "bold"), f"  {t.name_zh} / {t.name_en}"))
    out.print(
        f"category {t.category} ({catalog.category_by_code[t.category].name_zh}); "
        f"source {t.source_department}; subjects {', '.join(t.subject_types)}"
        + ("; a list (answers hit / no-hit checks)" if t.is_list else "")
    )
    if t.description:
        out.print(t.description)
    if t.publicity:
        p = t.publicity
        line = f"publicity from {p.start_field}: at least {p.min_months} months"
        if p.extended_minimum:
            e = p.extended_minimum
            line += f" ({e.min_months} when {e.field} is {', '.join(e.values)})"
        line += f", at most {p.max_months} months" if p.max_months else ", no maximum"
        if p.end_field:
            line += f"; the source may state the end in {p.end_field}"
        out.print(line)
    table = Table()
    table.add_column("field", no_wrap=True)
    for column in ("名称 / name", "type", "required", "sensitive", "codes"):
        table.add_column(column)
    for f in t.fields:
        codes = ", ".join(f"{c}={label}" for c, label in (f.codes or {}).items())
        table.add_row(
            f.name,
            f"{f.name_zh}\n{f.name_en}",
            f.type.value,
            "yes" if f.required else "",
            "yes" if f.sensitive else "",
            codes,
        )
    out.print(table)
