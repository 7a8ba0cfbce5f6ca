"""Commands that set up a node and manage its credit data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from creditexchange.errors import InvalidIdentifier
from creditexchange.identifiers import mask_resident_id, validate_resident_id, validate_uscc
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    open_node,
    out,
    print_json,
    reports_errors,
)
from creditexchange.node.config import load_config
from creditexchange.node.home import create_home
from creditexchange.node.importer import ImportSummary, import_file
from creditexchange.node.lookup import SubjectView, subject_view
from creditexchange.node.objections import ObjectionOutcome, close_objection, open_objection
from creditexchange.node.sample import write_sample
from creditexchange.node.store.database import (
    create_store_engine,
    current_revision,
    head_revision,
    upgrade,
)
from creditexchange.subjects import SubjectType

db_app = typer.Typer(help="The node's database schema.", no_args_is_help=True)
catalog_app = typer.Typer(
    help="The data catalog: themes, fields, publicity rules.", no_args_is_help=True
)
objection_app = typer.Typer(help="Objections (信用异议) to records.", no_args_is_help=True)


@reports_errors
def init(
    member: Annotated[str, typer.Argument(help="this member's id, e.g. huizhou")],
    home: HomeOption,
    database_url: Annotated[
        str | None, typer.Option(help="postgresql+psycopg://… (default: SQLite in the home)")
    ] = None,
    grpc_port: int = 7443,
    metrics_port: int = 9464,
    gateway_port: int = 8080,
) -> None:
    """Create a node home: configuration, Ed25519 signing key, migrated database."""
    config = create_home(
        home,
        member,
        database_url=database_url,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        gateway_port=gateway_port,
    )
    out.print(f"created node [bold]{config.member_id}[/] in {config.home}")
    out.print(f"  signing key  {config.signing_key_path} (mode 600; public key beside it)")
    out.print(f"  database     {config.database_url.split('@')[-1]}")
    out.print(f"next: credit-node import FILE --theme THEME --home {config.home}")


@db_app.command("upgrade")
@reports_errors
def db_upgrade(home: HomeOption) -> None:
    """Bring the database schema to this version of the node."""
    config = load_config(home)
    revision = upgrade(create_store_engine(config.database_url))
    out.print(f"database schema at revision {revision}")


@db_app.command("status")
@reports_errors
def db_status(home: HomeOption) -> None:
    """Show the database schema revision and the one this node needs."""
    config = load_config(home)
    current = current_revision(create_store_engine(config.database_url))
    head = head_revision()
    out.print(f"schema revision {current or 'none'}; this node needs {head}")
    if current != head:
        raise typer.Exit(1)


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
    out.print(f"[bold]{t.code}[/]  {t.name_zh} / {t.name_en}")
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
) -> None:
    """Import department files into a theme; rejected rows go to a reject report.

    Exits 1 when any row was rejected (the good rows are imported all the same).
    """
    node = open_node(home)
    summaries = []
    for path in files:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task(path.name, total=path.stat().st_size if path.exists() else None)
            summary = import_file(
                node.engine,
                node.catalog,
                path,
                theme,
                source=source,
                encoding=encoding,
                reject_dir=node.config.reject_dir,
                chunk_rows=node.config.settings.import_chunk_rows,
                progress=lambda done, task=task: bar.update(task, completed=done),  # type: ignore[misc]
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
    out.print(f"[bold]{view.name}[/]  {view.subject_id}  ({view.subject_type})")
    if not view.records:
        out.print("  no current records")
    for r in view.records:
        flag = "  [bold yellow]异议处理中 objection in progress[/]" if r.under_objection else ""
        until = f", public until {r.publicity_end}" if r.publicity_end else ""
        out.print(
            f"  [cyan]{r.theme_name}[/] {r.record_key}  "
            f"(v{r.version}, {r.source_department}{until}){flag}"
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
    view = subject_view(node.engine, node.catalog, subject_id)
    if as_json:
        print_json(view.as_json())
    else:
        print_subject(view, node.catalog)


@reports_errors
def sample(
    member: Annotated[str, typer.Option(help="the member whose data to imitate")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the department files")],
    subjects: Annotated[int, typer.Option(min=1)] = 1000,
    seed: int = 1,
    region: Annotated[
        str | None, typer.Option(help="region code for a member not in the 3+2 federation")
    ] = None,
) -> None:
    """Write realistic synthetic department files for every theme (deterministic per seed)."""
    paths = write_sample(load_catalog(), member, subjects, seed, out_dir, region=region)
    for path in paths:
        out.print(str(path))


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
    number = open_objection(node.engine, theme, record_key, reason)
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
    number = close_objection(node.engine, theme, record_key, outcome, note)
    out.print(f"objection {number} closed as {outcome}; {theme}/{record_key} is active again")
