"""``credit-node serve`` and ``credit-node query``: answering the federation and asking it."""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any

import typer
from google.protobuf.json_format import MessageToDict
from rich.text import Text

from creditexchange.node.app.config import load_config
from creditexchange.node.app.logs import configure as configure_logs
from creditexchange.node.app.server import serve as serve_node
from creditexchange.node.app.wiring import open_client
from creditexchange.node.catalog import load_catalog
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    out,
    print_json,
    reports_errors,
)
from creditexchange.node.exchange.client import VerifiedAnswer
from creditexchange.v1 import exchange_pb2

__all__ = [
    "answer_json",
    "print_answer",
    "query",
    "serve",
]


@reports_errors
def serve(
    home: HomeOption,
    port: Annotated[
        int | None, typer.Option(help="listen on this port instead of grpc_port")
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Answer the federation: the mutual-TLS gRPC server, with metrics and health checks."""
    configure_logs(log_level.upper())
    config = load_config(home)
    if port is not None:
        settings = config.settings.model_copy(update={"grpc_port": port})
        config = type(config)(config.home, settings)
    asyncio.run(serve_node(config))


ThemesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--themes", "--theme", "-t", help="a theme to ask (repeat); default: all the policy allows"
    ),
]


@reports_errors
def query(
    subject: Annotated[str, typer.Argument(help="USCC or resident identity number")],
    to: Annotated[str, typer.Option("--to", help="the member to ask")],
    purpose: Annotated[str, typer.Option(help="purpose code from the memorandum")],
    legal_basis: Annotated[str, typer.Option("--legal-basis", help="the statute relied on")],
    case: Annotated[str, typer.Option("--case", help="the case file reference")],
    officer: Annotated[str, typer.Option(help="the officer or system asking")],
    home: HomeOption,
    themes: ThemesOption = None,
    check: Annotated[bool, typer.Option("--check", help="hit / no-hit only")] = False,
    as_json: JsonOption = False,
) -> None:
    """Ask another member about a subject; verify and record its signed answer."""
    config = load_config(home)

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

    answer = asyncio.run(ask())  # a refusal ends the command with status 1 (reports_errors)
    if as_json:
        print_json(answer_json(answer))
    else:
        print_answer(answer)


def answer_json(answer: VerifiedAnswer) -> dict[str, Any]:
    return {
        "provider": answer.provider,
        "answer": MessageToDict(answer.body, preserving_proto_field_name=True),
        "receipt": {
            "leaf_index": answer.receipt.leaf_index,
            "leaf_hash": base64.b64encode(answer.receipt.leaf_hash).decode(),
            "checkpoint": answer.receipt.checkpoint,
        },
        "own_entry": answer.own_receipt.index,
        "verified": list(answer.checks),
    }


def print_answer(answer: VerifiedAnswer, max_records: int | None = None) -> None:
    """An answer for people: per theme the decision, records (fields in catalog order).

    Everything in it comes from the provider and is printed as written (see
    ``cli/common.py``): only the pieces paired with a style here are styled.
    """
    catalog = load_catalog()
    body = answer.body
    for subject in body.subjects:
        name = f" {subject.name}" if subject.name else ""
        out.print(Text.assemble((subject.subject_id, "bold"), f"{name} ({subject.subject_type})"))
        for theme in subject.themes:
            if not theme.allowed:
                out.print(
                    Text.assemble(f"  {theme.theme}: ", (theme.status, "red"), f" {theme.reason}")
                )
                continue
            rules = ", ".join(theme.rule_ids)
            objection = (" (under objection)", "yellow") if theme.under_objection else ""
            if theme.mode == exchange_pb2.MODE_CHECK:
                verdict = ("HIT", "bold") if theme.hit else "no hit"
                out.print(
                    Text.assemble(
                        f"  {theme.theme}: ", verdict, objection, "  ", (f"rules {rules}", "dim")
                    )
                )
                continue
            out.print(
                Text.assemble(
                    f"  {theme.theme}: {len(theme.records)} record(s)",
                    objection,
                    "  ",
                    (rules, "dim"),
                )
            )
            spec = catalog.theme_by_code.get(theme.theme)
            shown = theme.records if max_records is None else theme.records[:max_records]
            for record in shown:
                order = [f.name for f in spec.fields] if spec else sorted(record.fields)
                mark = (" objection in progress", "yellow") if record.under_objection else ""
                out.print(Text.assemble(f"    {record.record_key} {record.status}", mark))
                for key in order:
                    if key in record.fields:
                        masked = (" (masked)", "dim") if key in theme.masked_fields else ""
                        value = " ".join(record.fields[key].split())
                        out.print(Text.assemble(f"      {key}: {value}", masked))
            if len(shown) < len(theme.records):
                out.print(f"    … and {len(theme.records) - len(shown)} more", style="dim")
            if theme.withheld_fields:
                out.print(f"    withheld: {', '.join(theme.withheld_fields)}", style="dim")
    out.print(
        f"memorandum v{body.memorandum_version}; {answer.provider}'s audit entry "
        f"{answer.receipt.leaf_index}; this node's entry {answer.own_receipt.index}",
        style="dim",
    )
    for line in answer.checks:
        out.print(Text.assemble("  ", ("✓", "green"), f" {line}"))
