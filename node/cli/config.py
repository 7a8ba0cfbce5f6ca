"""``credit-node config show``: every setting of a node home, its value, default and source.

What a setting is worth and where it came from is decided in
:mod:`creditexchange.node.app.config` (:func:`describe_settings`); this module prints
it. Nothing secret is printed: passwords show as ``***``, and a password file is
named, never read into the output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from creditexchange.node.app.config import CONFIG_FILE, describe_settings, load_config
from creditexchange.node.cli.common import HomeOption, JsonOption, out, print_json, reports_errors

__all__ = [
    "config_app",
]

config_app = typer.Typer(help="The node's configuration.", no_args_is_help=True)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str | Path):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


@config_app.command("show")
@reports_errors
def config_show(home: HomeOption, as_json: JsonOption = False) -> None:
    """Show every setting: its value (paths resolved), as written, its source, its default."""
    config = load_config(home)
    settings = describe_settings(config)
    if as_json:
        print_json(
            {
                "home": str(config.home),
                "config_file": str(config.home / CONFIG_FILE),
                "settings": [s.as_json() for s in settings],
            }
        )
        return
    out.print(
        Text.assemble(
            "node ", (config.member_id, "bold"), f"  home {config.home}", f"  ({CONFIG_FILE})"
        )
    )
    table = Table()
    table.add_column("setting", no_wrap=True)
    for column in ("value", "from", "as written", "default"):  # folded on a narrow window, not cut
        table.add_column(column, overflow="fold")
    for s in settings:
        table.add_row(
            s.name,
            _text(s.value) if s.value is not None else Text("unset", style="dim"),
            s.source,
            _text(s.written) if _text(s.written) != _text(s.value) else "",
            Text("required", style="dim") if s.required else _text(s.default),
        )
    out.print(table)
