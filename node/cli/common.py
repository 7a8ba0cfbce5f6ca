"""What every command shares: the --home option, loading the node, printing, exit codes.

Exit codes: 0 success; 1 the command ran but found problems (rejected rows,
an invalid identifier, a failed verification); 2 it could not run (bad
arguments, configuration, unreadable input) — the message says what to do.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from sqlalchemy import Engine

from creditexchange.errors import CreditExchangeError
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.node.config import NodeConfig, load_config
from creditexchange.node.store import open_store

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

HomeOption = Annotated[
    Path,
    typer.Option(
        "--home",
        envvar="CREDIT_NODE_HOME",
        help="the node home folder (or CREDIT_NODE_HOME)",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print data as JSON")]

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a CreditExchangeError into its message on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CreditExchangeError as exc:
            err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@dataclass
class Node:
    """A node home opened for a command: its configuration, store and catalog."""

    config: NodeConfig
    engine: Engine
    catalog: Catalog


def open_node(home: Path) -> Node:
    config = load_config(home)
    return Node(config, open_store(config.database_url), load_catalog(config.catalog_path))


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
