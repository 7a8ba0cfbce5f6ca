"""``credit-node init`` and ``credit-node db …``: creating a node home, migrating its
database.

``db status`` says where the schema stands and which migrations an upgrade would run;
``db upgrade`` runs them all in one transaction, so a failed upgrade leaves the database
as it was (its revision and its data) and says so. Every other command refuses a
database whose schema is not the one this version needs (``deploy/operations/upgrade.md``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from creditexchange.node.app.config import load_config, mask_password
from creditexchange.node.app.home import create_home
from creditexchange.node.cli.common import HomeOption, out, reports_errors
from creditexchange.node.database import create_database_engine, schema_state, upgrade

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
    """Bring the database schema to this version of the node (take a backup first).

    Every pending migration runs in one transaction: when one fails, the database stays
    at the revision it had, with its data, and the command says which migration failed.
    """
    config = load_config(home)
    engine = create_database_engine(config.database_url)
    try:
        before = schema_state(engine)
        if before.up_to_date:
            out.print(f"nothing to do: {before.describe()}")
            return
        for migration in before.pending:
            out.print(f"  migration {migration.revision}: {migration.title}", soft_wrap=True)
        revision = upgrade(engine)
    finally:
        engine.dispose()
    out.print(f"database schema upgraded from revision {before.current or 'none'} to {revision}")


@db_app.command("status")
@reports_errors
def db_status(home: HomeOption) -> None:
    """Show the database schema revision, the one this node needs and what an upgrade
    would run; exits 1 unless they are the same."""
    config = load_config(home)
    engine = create_database_engine(config.database_url)
    try:
        state = schema_state(engine)
    finally:
        engine.dispose()
    out.print(f"schema revision {state.current or 'none'}; this node needs {state.head}")
    out.print(state.describe(), soft_wrap=True)
    for migration in state.pending:
        out.print(f"  pending {migration.revision}: {migration.title}", soft_wrap=True)
    if not state.up_to_date:
        raise typer.Exit(1)
