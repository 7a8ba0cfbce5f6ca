"""``credit-node init`` and ``credit-node db …``: creating a node home, migrating its
database."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from creditexchange.node.app.config import load_config, mask_password
from creditexchange.node.app.home import create_home
from creditexchange.node.cli.common import HomeOption, out, reports_errors
from creditexchange.node.database import (
    create_database_engine,
    current_revision,
    head_revision,
    upgrade,
)

__all__ = [
    "db_app",
    "init",
]

db_app = typer.Typer(help="The node's database schema.", no_args_is_help=True)


@reports_errors
def init(
    member: Annotated[str, typer.Argument(help="this member's id, e.g. huizhou")],
    home: HomeOption,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="postgresql+psycopg://… (default: sqlite:///data/node.db, in the home; "
            "a relative sqlite:/// path is in the home)"
        ),
    ] = None,
    grpc_port: int = 7443,
    metrics_port: int = 9464,
    gateway_port: int = 8080,
) -> None:
    """Create a node home: configuration, Ed25519 signing key, migrated database.

    All or nothing: when a step fails (an unreachable database, say), nothing of the
    home is left and init can simply be run again.
    """
    config = create_home(
        home,
        member,
        database_url=database_url,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        gateway_port=gateway_port,
    )
    out.print(Text.assemble("created node ", (config.member_id, "bold"), f" in {config.home}"))
    out.print(f"  signing key  {config.signing_key_path} (mode 600; public key beside it)")
    out.print(f"  database     {mask_password(config.database_url_as_set)}")
    out.print(f"next: credit-node import FILE --theme THEME --home {config.home}")


@db_app.command("upgrade")
@reports_errors
def db_upgrade(home: HomeOption) -> None:
    """Bring the database schema to this version of the node."""
    config = load_config(home)
    revision = upgrade(create_database_engine(config.database_url))
    out.print(f"database schema at revision {revision}")


@db_app.command("status")
@reports_errors
def db_status(home: HomeOption) -> None:
    """Show the database schema revision and the one this node needs."""
    config = load_config(home)
    current = current_revision(create_database_engine(config.database_url))
    head = head_revision()
    out.print(f"schema revision {current or 'none'}; this node needs {head}")
    if current != head:
        raise typer.Exit(1)
