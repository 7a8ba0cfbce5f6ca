"""``credit-node audit …``: the auditor's tools over the node's ledger.

Every command reads the node's own database; ``verify`` recomputes everything
from the stored bytes and exits 1 naming the first problem it finds.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from creditexchange.clock import now_us
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.wiring import open_audit_log, open_node
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    out,
    print_json,
    reports_errors,
)
from creditexchange.node.ledger import AuditLog, entries, verify

__all__ = [
    "audit_app",
]

audit_app = typer.Typer(
    help="The audit ledger: checkpoints, entries, proofs, verification, retention.",
    no_args_is_help=True,
)


def audit_log(home: Path) -> tuple[NodeConfig, AuditLog]:
    node = open_node(home)
    return node.config, open_audit_log(node.config, node.database)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@audit_app.command("checkpoint")
@reports_errors
def checkpoint(home: HomeOption) -> None:
    """Print the latest signed checkpoint, exactly as signed (C2SP tlog-checkpoint)."""
    _, log = audit_log(home)
    print(log.latest_checkpoint(), end="")


@audit_app.command("vkey")
@reports_errors
def vkey(home: HomeOption) -> None:
    """Print the verifier key of this node's checkpoints (signed-note form)."""
    _, log = audit_log(home)
    print(log.signer.vkey())


def _recorded(body: bytes | None) -> str | None:
    """When an entry was recorded (the time inside it); None once pruned or undatable."""
    recorded = None if body is None else entries.recorded_time(body)
    if recorded is None:
        return None
    return dt.datetime.fromtimestamp(recorded / 1e6, dt.UTC).isoformat()


@audit_app.command("entries")
@reports_errors
def list_entries(
    home: HomeOption,
    start: Annotated[int, typer.Option("--from", min=0, help="first index")] = 0,
    end: Annotated[int | None, typer.Option("--to", help="last index (inclusive)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print entries decoded, with their index, leaf hash and stored bytes."""
    _, log = audit_log(home)
    stop = log.size() if end is None else end + 1
    rows: list[dict[str, Any]] = [
        {
            "index": e.index,
            "leaf_hash": b64(e.leaf_hash),
            "recorded": _recorded(e.body),
            "pruned": e.body is None,
            "bytes": None if e.body is None else b64(e.body),
            "entry": None if e.body is None else entries.decode(e.body),
        }
        for e in log.entries(start, stop)
    ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        entry = r["entry"] or {}
        out.print(
            f"{r['index']:>8}  {(r['recorded'] or '-')[:19]:<19}  {r['leaf_hash'][:16]}…  "
            + (
                "(body pruned)"
                if r["pruned"]
                else f"{entry.get('direction', '')} {entry.get('kind', '')} "
                f"{entry.get('requester', '')}→{entry.get('responder', '')} "
                f"{entry.get('purpose', '')} {entry.get('outcome', {}).get('status', '')}"
                f"{' ' + entry['note'] if entry.get('note') else ''}"
            )
        )


def _print_proof(data: Mapping[str, object], as_json: bool) -> None:
    """A proof with its hashes in base64, as JSON or one field a line."""
    shown = {
        k: b64(v) if isinstance(v, bytes) else [b64(h) for h in v] if isinstance(v, list) else v
        for k, v in data.items()
    }
    if as_json:
        print_json(shown)
    else:
        for key, value in shown.items():
            out.print(f"{key}: {value}")


@audit_app.command("proof")
@reports_errors
def proof(
    index: int,
    home: HomeOption,
    size: Annotated[int | None, typer.Option(help="tree size (default: the current one)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the RFC 9162 inclusion proof of an entry."""
    _, log = audit_log(home)
    _print_proof(log.inclusion_proof(index, size), as_json)


@audit_app.command("consistency")
@reports_errors
def consistency(old: int, new: int, home: HomeOption, as_json: JsonOption = False) -> None:
    """Print the RFC 9162 consistency proof between two tree sizes."""
    _, log = audit_log(home)
    _print_proof(log.consistency_proof(old, new), as_json)


@audit_app.command("verify")
@reports_errors
def verify_command(home: HomeOption, as_json: JsonOption = False) -> None:
    """Recompute the whole log and check every checkpoint; exits 1 naming the first problem."""
    _, log = audit_log(home)
    report = verify(log, log.signer.verifier())
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "size": report.size,
                "checked_bodies": report.checked_bodies,
                "pruned_bodies": report.pruned_bodies,
                "checkpoints": report.checkpoints,
                "problems": report.problems,
            }
        )
    elif report.ok:
        out.print(
            f"ledger verified: {report.size} entries ({report.checked_bodies} bodies rehashed, "
            f"{report.pruned_bodies} pruned), {report.checkpoints} signed checkpoints consistent"
        )
    else:
        err.print(
            Text.assemble(("ledger verification failed", "bold red"), f": {report.problems[0]}")
        )
        for problem in report.problems[1:]:
            err.print(f"  also: {problem}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("prune")
@reports_errors
def prune(home: HomeOption) -> None:
    """Drop entry bodies older than the retention period; leaf hashes and proofs stay.

    The pruning itself is recorded in the ledger.
    """
    config, log = audit_log(home)
    days = config.settings.audit_retention_days
    pruned = log.prune(now_us() - days * 86_400_000_000, config.member_id)
    if pruned is None:
        out.print(f"nothing to prune: no entry body is older than {days} days")
        return
    out.print(f"{pruned.note}; recorded as entry {pruned.recorded_as}")
