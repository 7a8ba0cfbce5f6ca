"""The development commands of ``credit-node``: ``demo`` and ``sample``.

They are not part of a node: ``credit-node`` finds them through the entry points
of the ``creditexchange.commands`` group (``pyproject.toml``), so nothing a
serving node runs imports this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from creditexchange.devtools.sample import write_sample
from creditexchange.node.catalog import load_catalog
from creditexchange.node.cli.common import out, reports_errors

__all__ = ["demo", "sample"]


@reports_errors
def demo(
    once: Annotated[bool, typer.Option("--once", help="stop after the showcase")] = False,
    base_port: Annotated[
        int,
        typer.Option(help="nodes listen on this port and the next five; metrics 2000 higher"),
    ] = 7501,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="first Prometheus port (six in a row), by default --base-port + 2000; 0: none",
            show_default=False,
        ),
    ] = None,
    subjects: Annotated[int, typer.Option(min=20, help="sample subjects per member")] = 300,
    seed: int = 2026,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="keep the federation here (default: a temporary folder)"),
    ] = None,
) -> None:
    """Start a six-member federation on loopback and show signed, audited cross-city queries."""
    # here, not at import: the demo uses the command line (node.cli), which loads this module
    from creditexchange.devtools.demo import run_demo

    run_demo(
        once=once,
        base_port=base_port,
        metrics_port=metrics_port,
        subjects=subjects,
        seed=seed,
        directory=directory,
    )


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
