"""``credit-node backup`` and ``credit-node restore``: a node's snapshot, and bringing it back.

What a snapshot holds, what restore checks and what it refuses is
:mod:`creditexchange.node.app.backup`; the procedure is ``deploy/operations/backup.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from creditexchange.node.app.backup import back_up
from creditexchange.node.app.backup import restore as restore_snapshot
from creditexchange.node.cli.common import HomeOption, err, out, reports_errors

__all__ = ["backup", "restore"]


@reports_errors
def backup(
    file: Annotated[
        Path, typer.Argument(help="the snapshot file to write (a new file, never replaced)")
    ],
    home: HomeOption,
) -> None:
    """Write a snapshot of the node: its whole database at one moment, keys, settings,
    memorandum and its history, with a manifest of hashes.

    The node may be serving meanwhile. The snapshot holds the node's private keys (mode
    600): keep it as privately as the home.
    """
    summary = back_up(home, file)
    manifest = summary.manifest
    out.print(
        Text.assemble(
            "snapshot of ",
            (manifest.member_id, "bold"),
            f" written to {summary.archive} ({summary.archive_bytes} bytes, mode 600)",
        )
    )
    out.print(f"  ledger    {manifest.ledger_size} entries, root {manifest.ledger_root} (verified)")
    out.print(
        f"  database  {manifest.backend}, schema revision {manifest.revision}, "
        f"{sum(manifest.tables.values())} rows in {len(manifest.tables)} tables"
    )
    out.print(f"  files     {len(manifest.files)}, each with its SHA-256 in the manifest")
    for line in manifest.left_out:
        err.print(f"  not in the snapshot: {line}; keep it elsewhere")


@reports_errors
def restore(
    file: Annotated[Path, typer.Argument(help="the snapshot file to restore")],
    home: HomeOption,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="replace a home (or database) that holds something; what it held is kept "
            "in HOME.replaced-<time> beside it",
        ),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="put the database here instead of where the snapshot's node.toml says "
            "(postgresql+psycopg://… or sqlite:///…); the restored node.toml names it",
        ),
    ] = None,
    cosigned: Annotated[
        list[Path] | None,
        typer.Option(
            "--cosigned",
            help="a checkpoint of this node that witnesses cosigned (a receipt as 'query "
            "--json' prints it, or a signed note with cosignature lines); repeatable",
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="do not ask the witnesses over the federation what they cosigned of this "
            "node's log (then run 'credit-node audit verify --witnessed' before serving)",
        ),
    ] = False,
) -> None:
    """Bring a snapshot back as the node home --home.

    Refused, with nothing changed: a damaged or incomplete snapshot, a ledger that does
    not verify, a snapshot older than what this node signed or its witnesses cosigned
    (restoring it would fork the log), and a home or database that holds something,
    unless --force.
    """
    summary = restore_snapshot(
        file,
        home,
        force=force,
        database_url=database_url,
        cosigned=cosigned or [],
        ask_witnesses=not offline,
    )
    manifest = summary.manifest
    out.print(
        Text.assemble(
            "restored ",
            (manifest.member_id, "bold"),
            f" into {summary.home} from the snapshot made {manifest.created}",
        )
    )
    out.print(f"  ledger    {manifest.ledger_size} entries, root {manifest.ledger_root} (verified)")
    out.print(f"  database  {summary.database}")
    for line in summary.checked:
        out.print(f"  checked against {line}")
    for line in summary.unasked:
        err.print(f"  could not ask {line}")
    if summary.replaced is not None:
        out.print(f"  what was replaced is kept in {summary.replaced}")
    for line in summary.warnings:
        err.print(f"  note: {line}")
    out.print(f"next: credit-node audit verify --witnessed --home {summary.home}")
