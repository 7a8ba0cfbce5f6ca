"""What every command shares: the --home option, printing, and exit codes.

Exit codes: 0 success; 1 the command ran but found problems (rejected rows,
an invalid identifier, a failed verification, a refusal); 2 it could not run
(bad arguments, configuration, unreadable input) — the message says what to do.
Commands catch nothing but ``CreditExchangeError``, here (:func:`reports_errors`).

Nothing printed is read as Rich markup or emoji codes: names, reasons, file names
and values come from files, the database and other members, and ``[/x]``,
``[red]`` or ``:cn:`` in them print exactly as written. The consoles here have
markup, emoji and highlighting off, and so do the tables printed on them; the
commands' own styling is a ``style=`` argument or a :class:`rich.text.Text`
assembled from (text, style) pieces, never tags inside a string.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from creditexchange.errors import CreditExchangeError, QueryRefused

__all__ = [
    "HomeOption",
    "JsonOption",
    "err",
    "out",
    "print_json",
    "reports_errors",
]

out = Console(markup=False, emoji=False, highlight=False)
err = Console(stderr=True, markup=False, emoji=False, highlight=False)

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


# What an error means for the exit status, the most specific first: a refusal by the
# asked member is an answer (1: the command ran, the answer was no); anything else
# means the command could not do its job (2).
_OUTCOMES: tuple[tuple[type[CreditExchangeError], str, int], ...] = (
    (QueryRefused, "refused", 1),
    (CreditExchangeError, "error", 2),
)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a CreditExchangeError into its message on stderr and its exit status."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CreditExchangeError as exc:
            label, code = next((lb, c) for kind, lb, c in _OUTCOMES if isinstance(exc, kind))
            err.print(Text.assemble((f"{label}:", "bold red"), f" {exc}"), soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
