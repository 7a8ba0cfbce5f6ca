"""``credit-node serve`` and ``credit-node query``: answering the federation and asking it.

``query`` prints an answer as ``credit-node show`` prints records (the catalog's
labels, units and code labels), or, with ``--json``, in the project's JSON schema
(``node/exchange/answer_view.py``). A refusal prints its status, one line per
distinct reason and, once, what the memorandum would allow instead; with
``--json`` it is also a JSON object on stdout. Either way a refusal exits 1.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from creditexchange.errors import QueryRefused
from creditexchange.node.app.config import load_config
from creditexchange.node.app.logs import configure as configure_logs
from creditexchange.node.app.wiring import open_client
from creditexchange.node.app.workers import (
    MAX_WORKERS,
    parse_worker,
    run_workers,
    worker_config,
)
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    out,
    outcome_of,
    print_json,
    reports_errors,
)
from creditexchange.node.exchange.answer_view import (
    RecordAnswer,
    SubjectAnswer,
    ThemeAnswer,
    VerifiedAnswer,
    distinct_reasons,
    instead_of,
    refusal_json,
)
from creditexchange.policy.document import Mode

__all__ = [
    "print_answer",
    "print_refusal",
    "query",
    "serve",
]

EVERY_MEMBER = "all"
"""``--to all``: ask every member the memorandum lets this node ask, one line each."""


@reports_errors
def serve(
    home: HomeOption,
    port: Annotated[
        int | None, typer.Option(help="listen on this port instead of grpc_port")
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_WORKERS,
            help="serve with this many processes on the one port (one per core)",
        ),
    ] = 1,
    worker: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Answer the federation: the mutual-TLS gRPC server, with metrics and health checks,
    and the REST gateway beside it (gateway_port; 0 for none). With --workers N, N
    processes share the port; worker 0 serves the gateway and metrics_port, worker i
    its metrics on metrics_port + i."""
    configure_logs(log_level.upper())
    config = load_config(home)
    if workers > 1:
        raise typer.Exit(run_workers(config.home, workers, port=port, log_level=log_level))
    if port is not None:
        settings = config.settings.model_copy(update={"grpc_port": port})
        config = type(config)(config.home, settings)
    index, count = parse_worker(worker) if worker else (0, 1)
    from creditexchange.gateway.server import serve_with_gateway  # the web stack: only to serve

    asyncio.run(
        serve_with_gateway(worker_config(config, index), reuse_port=count > 1, lead=index == 0)
    )


ThemesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--themes", "--theme", "-t", help="a theme to ask (repeat); default: all the policy allows"
    ),
]


@reports_errors
def query(
    subject: Annotated[str, typer.Argument(help="USCC or resident identity number")],
    to: Annotated[
        str, typer.Option("--to", help=f"the member to ask, or '{EVERY_MEMBER}' for every member")
    ],
    purpose: Annotated[str, typer.Option(help="purpose code from the memorandum")],
    legal_basis: Annotated[str, typer.Option("--legal-basis", help="the statute relied on")],
    case: Annotated[str, typer.Option("--case", help="the case file reference")],
    officer: Annotated[str, typer.Option(help="the officer or system asking")],
    home: HomeOption,
    themes: ThemesOption = None,
    check: Annotated[bool, typer.Option("--check", help="hit / no-hit only")] = False,
    as_json: JsonOption = False,
) -> None:
    """Ask another member about a subject; verify and record its signed answer.

    A refusal exits 1: its status, its reasons and what would be allowed instead
    on stderr, and with --json the same as a JSON object on stdout.
    """
    config = load_config(home)
    if to == EVERY_MEMBER:
        try:
            from creditexchange.node.cli.report import print_everyone
        except ImportError as missing:
            if missing.name != "creditexchange.node.cli.report":
                raise
            raise typer.BadParameter(
                "asking every member at once is not available in this installation: "
                "name one member with --to",
                param_hint="--to",
            ) from None
        print_everyone(
            config,
            subject,
            purpose=purpose,
            legal_basis=legal_basis,
            case_reference=case,
            officer=officer,
            themes=themes or (),
            check=check,
            as_json=as_json,
        )
        return

    async def ask() -> VerifiedAnswer:
        async with open_client(config) as client:
            return await client.query(
                subject,
                to=to,
                purpose=purpose,
                legal_basis=legal_basis,
                case_reference=case,
                officer=officer,
                themes=themes or (),
                check=check,
            )

    try:
        answer = asyncio.run(ask())
    except QueryRefused as refused:
        if as_json:
            print_json(refusal_json(refused))
        print_refusal(refused, err)
        raise typer.Exit(outcome_of(refused)[1]) from None
    if as_json:
        print_json(answer.to_json())
    else:
        print_answer(answer)


def print_refusal(refused: QueryRefused, console: Console = err) -> None:
    """A refusal for people: who refused with which status, one line per distinct reason,
    and once what the memorandum installed here would allow instead."""
    label, _ = outcome_of(refused)
    if refused.verified:
        head = f" {refused.provider} refused the query (its audit entry {refused.leaf_index}): "
    else:
        head = (
            f" the call to {refused.provider} failed (unverified: no refusal signed by "
            f"{refused.provider} came with it): "
        )
    console.print(Text.assemble((f"{label}:", "bold red"), head, (refused.status, "red")))
    for reason in distinct_reasons(refused.detail):
        console.print(f"  {reason}", soft_wrap=True)
    instead = instead_of(refused)
    if instead:
        console.print(Text.assemble("  ", ("allowed instead:", "bold"), f" {instead}"))


def print_answer(answer: VerifiedAnswer, max_records: int | None = None) -> None:
    """An answer for people, as ``credit-node show`` prints records: per subject its
    themes with their decisions, records with the catalog's labels (units included)
    and code labels, masked fields marked and withheld fields named.

    Everything in it comes from the provider and is printed as written (see
    ``cli/common.py``): only the pieces paired with a style here are styled.
    """
    for subject in answer.subjects:
        _print_subject(answer.provider, subject, max_records)
    out.print(
        f"memorandum v{answer.memorandum_version}; {answer.provider}'s audit entry "
        f"{answer.receipt.leaf_index}; this node's entry {answer.own_receipt.index}",
        style="dim",
    )
    for line in answer.checks:
        out.print(Text.assemble("  ", ("✓", "green"), f" {line}"))


def _print_subject(provider: str, subject: SubjectAnswer, max_records: int | None) -> None:
    shown = f"{subject.subject_id}  ({subject.subject_type})"
    out.print(Text.assemble((subject.name, "bold"), f"  {shown}") if subject.name else shown)
    allowed = [t for t in subject.themes if t.allowed]
    unknown = not subject.found and any(t.mode is Mode.FULL for t in allowed)
    if unknown:
        out.print(f"  no such subject: {provider} holds no record of it", style="bold")
    else:
        for theme in allowed:
            _print_theme(theme, max_records)
    denied = [t for t in subject.themes if not t.allowed]
    for status in dict.fromkeys(t.status for t in denied):
        reasons = dict.fromkeys(t.reason for t in denied if t.status == status)
        for reason in distinct_reasons("; ".join(reasons)):
            out.print(Text.assemble("  ", (status, "red"), f" {reason}"))


def _print_theme(theme: ThemeAnswer, max_records: int | None) -> None:
    title = (f"{theme.theme_name} ", "cyan"), f"({theme.theme})"
    rules = (f"rules {', '.join(theme.rule_ids)}", "dim")
    objection = (" (under objection)", "yellow") if theme.under_objection else ""
    if theme.mode is Mode.CHECK:
        verdict = ("HIT", "bold") if theme.hit else "no hit"
        out.print(Text.assemble("  ", *title, ": ", verdict, objection, "  ", rules))
        return
    count = f": {len(theme.records)} record(s)"
    out.print(Text.assemble("  ", *title, count, objection, "  ", rules))
    shown = theme.records if max_records is None else theme.records[:max_records]
    for record in shown:
        _print_record(theme, record)
    if len(shown) < len(theme.records):
        out.print(f"    … and {len(theme.records) - len(shown)} more", style="dim")
    if theme.withheld_fields:
        withheld = ", ".join(theme.field_labels.get(f, f) for f in theme.withheld_fields)
        out.print(f"    withheld: {withheld}", style="dim")


def _print_record(theme: ThemeAnswer, record: RecordAnswer) -> None:
    until = f", public until {record.publicity_end}" if record.publicity_end else ""
    flag = ("  异议处理中 objection in progress", "bold yellow") if record.under_objection else ""
    out.print(
        Text.assemble(
            f"    {record.record_key}  ({record.status}, {record.source_department}{until})", flag
        )
    )
    for name, value in record.fields.items():
        text = _value_text(value)
        if name in record.value_labels:
            text = f"{text} ({record.value_labels[name]})"
        masked = (" (masked)", "dim") if name in theme.masked_fields else ""
        label = theme.field_labels.get(name, name)
        out.print(Text.assemble(f"      {label}: {' '.join(text.split())}", masked))


def _value_text(value: object) -> str:
    """A typed field value as a person reads it: a whole decimal without ``.0``."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
