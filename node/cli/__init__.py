"""``credit-node``: the one command for operating a Credit Exchange Node.

Commands are thin: they parse, call the library and print; the table of them is
:mod:`~creditexchange.node.cli.commands`. ``credit-node health``, which a container
runtime or an orchestrator runs every few seconds, is dispatched before that table is
built, importing only what a probe needs.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    if sys.argv[1:2] == ["health"]:
        from creditexchange.node.cli.health import health_app

        health_app(args=sys.argv[2:], prog_name="credit-node health")
        return
    from creditexchange.node.cli.commands import app

    app()


def __getattr__(name: str) -> Any:  # ``from creditexchange.node.cli import app``
    if name == "app":
        from creditexchange.node.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
