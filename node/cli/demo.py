"""``credit-node demo``: see a node work end to end in one command.

Until the federation exists, the demo is one city's node: it creates a node home,
writes a city's synthetic department files, imports every theme (showing the
summary and the reject handling) and shows a subject as the node serves it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from node.cli.common import open_node, out, reports_errors
from node.cli.store import print_subject
from node.home import create_home
from node.importer import FORMATS, import_file
from node.lookup import subject_view
from node.sample import showcase_subject, write_sample


@reports_errors
def demo(
    member: Annotated[str, typer.Option(help="the city to play")] = "huizhou",
    subjects: Annotated[int, typer.Option(min=10)] = 500,
    seed: int = 2026,
    home: Annotated[
        Path | None, typer.Option(help="keep the node here (default: a temporary folder)")
    ] = None,
) -> None:
    """Run a city's node end to end: init, sample department data, import, show."""
    with tempfile.TemporaryDirectory(prefix="credit-node-demo-") as scratch:
        node_home = home or Path(scratch) / member
        out.rule(f"1. create the node home for {member}")
        config = create_home(node_home, member)
        out.print(f"node {member} in {config.home}")
        node = open_node(config.home)

        out.rule("2. department files (synthetic, deterministic)")
        files = write_sample(node.catalog, member, subjects, seed, config.home / "incoming")
        out.print(f"{len(files)} files in {config.home / 'incoming'}")

        out.rule("3. import every theme, with full validation")
        for path in files:
            if path.suffix in FORMATS:
                s = import_file(
                    node.engine, node.catalog, path, path.stem, reject_dir=config.reject_dir
                )
                out.print(
                    f"{path.name:32} read {s.read:6} accepted {s.accepted:6} rejected {s.rejected}"
                )

        out.rule("4. importing the same file again changes nothing")
        again = import_file(
            node.engine, node.catalog, files[0], files[0].stem, reject_dir=config.reject_dir
        )
        out.print(
            f"{files[0].name}: new {again.inserted}, updated {again.updated}, "
            f"unchanged {again.unchanged}"
        )

        out.rule("5. a subject as the node serves it")
        subject = showcase_subject(member, seed)
        print_subject(subject_view(node.engine, node.catalog, subject), node.catalog)
        out.rule()
        out.print(
            f"try: credit-node show {subject} --home {config.home}"
            if home
            else "run with --home DIR to keep the node and explore it"
        )
