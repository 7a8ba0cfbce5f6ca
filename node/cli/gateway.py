"""``credit-node gateway`` (the REST gateway alone) and the gateway's callers:
``partners add|list|revoke|rotate`` and ``auditors add|list|revoke|rotate``.

A key is printed once, when it is made; only its SHA-256 is kept, so a lost key is
rotated, never recovered. The commands talk to the node's database through the
gateway's registry (``creditexchange.gateway.access``); ``credit-node serve``
starts the gateway beside the node (``gateway_port``, 0 for none).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from creditexchange.clock import CST
from creditexchange.gateway.access import DEFAULT_RATE_PER_MIN, Caller, KeyRegistry, Role
from creditexchange.node.app.config import NodeConfig, load_config
from creditexchange.node.app.logs import configure as configure_logs
from creditexchange.node.app.wiring import federation_view
from creditexchange.node.cli.common import HomeOption, JsonOption, out, print_json, reports_errors
from creditexchange.node.database import open_database

__all__ = ["auditors_app", "gateway", "partners_app"]

partners_app = typer.Typer(
    no_args_is_help=True,
    help="Partner systems' keys to the REST gateway (banks, land auctions, fiscal funds…).",
)
auditors_app = typer.Typer(
    no_args_is_help=True, help="Auditors' keys to the REST gateway (read-only ledger access)."
)

NameArgument = Annotated[str, typer.Argument(help="the caller's name, e.g. icbc-huizhou")]


@reports_errors
def gateway(
    home: HomeOption,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Serve the REST gateway alone (the node serves elsewhere on the same database)."""
    configure_logs(log_level.upper())
    from creditexchange.gateway.server import serve_gateway  # the web stack: only to serve

    asyncio.run(serve_gateway(load_config(home)))


def _registry(config: NodeConfig) -> KeyRegistry:
    return KeyRegistry(open_database(config.database_url))


def _time(us: int | None) -> str | None:
    if us is None:
        return None
    return dt.datetime.fromtimestamp(us / 1e6, CST).isoformat(timespec="seconds")


def _as_json(caller: Caller) -> dict[str, Any]:
    return {
        "name": caller.name,
        "role": caller.role.value,
        "key_id": caller.key_id,
        "purposes": list(caller.purposes),
        "subject_types": list(caller.subject_types),
        "rate_per_min": caller.rate_per_min,
        "created": _time(caller.created_us),
        "rotated": _time(caller.rotated_us),
        "revoked": _time(caller.revoked_us),
    }


def _print_key(caller: Caller, key: str, config: NodeConfig, as_json: bool) -> None:
    if as_json:
        print_json({**_as_json(caller), "key": key})
        return
    out.print(Text.assemble(f"{caller.role.value} ", (caller.name, "bold"), f" ({caller.key_id})"))
    if caller.purposes:
        out.print(f"  purposes       {', '.join(caller.purposes)}")
    if caller.subject_types:
        out.print(f"  subject types  {', '.join(caller.subject_types)}")
    out.print(f"  rate           {caller.rate_per_min} calls a minute")
    out.print("  key (shown this once; only its hash is kept):")
    out.print(Text(f"  {key}", style="bold"))
    s = config.settings
    scheme = "https" if s.gateway_tls_cert else "http"
    out.print(
        f"  use: curl -H 'Authorization: Bearer <key>' -H 'X-Officer: <officer>' "
        f"{scheme}://{s.gateway_host}:{s.gateway_port}/docs"
    )


def _print_list(callers: list[Caller], as_json: bool) -> None:
    if as_json:
        print_json([_as_json(c) for c in callers])
        return
    if not callers:
        out.print("none registered")
        return
    table = Table("name", "role", "key id", "purposes", "rate/min", "created", "state")
    for c in callers:
        state = f"revoked {_time(c.revoked_us)}" if c.revoked_us else "active"
        table.add_row(
            c.name,
            c.role.value,
            c.key_id,
            ", ".join(c.purposes) or "-",
            str(c.rate_per_min),
            _time(c.created_us) or "",
            state,
        )
    out.print(table)


@partners_app.command("add")
@reports_errors
def partners_add(
    name: NameArgument,
    home: HomeOption,
    purposes: Annotated[
        str, typer.Option(help="comma-separated purpose codes of the memorandum it may use")
    ],
    subject_types: Annotated[
        str, typer.Option(help="comma-separated: enterprise, individual_business, person…")
    ] = "",
    rate: Annotated[
        str, typer.Option(help="calls a minute, as N/min or N")
    ] = f"{DEFAULT_RATE_PER_MIN}/min",
    as_json: JsonOption = False,
) -> None:
    """Register a partner system for some purposes; print its key once."""
    config = load_config(home)
    known = list(federation_view(config).current().memorandum.purpose_by_code)
    caller, key = _registry(config).add(
        name,
        Role.PARTNER,
        purposes=[p.strip() for p in purposes.split(",") if p.strip()],
        known_purposes=known,
        subject_types=[t.strip() for t in subject_types.split(",") if t.strip()],
        rate_per_min=_rate(rate),
    )
    _print_key(caller, key, config, as_json)


def _rate(text: str) -> int:
    number = text.strip().removesuffix("/min").strip()
    if not number.isdigit():
        raise typer.BadParameter(f"{text!r}: give the rate as N/min, e.g. 120/min")
    return int(number)


@auditors_app.command("add")
@reports_errors
def auditors_add(
    name: NameArgument,
    home: HomeOption,
    rate: Annotated[str, typer.Option(help="calls a minute, as N/min or N")] = "120/min",
    as_json: JsonOption = False,
) -> None:
    """Register an auditor (read-only access to the ledger); print its key once."""
    config = load_config(home)
    caller, key = _registry(config).add(name, Role.AUDITOR, rate_per_min=_rate(rate))
    _print_key(caller, key, config, as_json)


def _commands(app: typer.Typer, role: Role) -> None:
    @app.command("list")
    @reports_errors
    def list_(home: HomeOption, as_json: JsonOption = False) -> None:
        """Every registered caller of this kind, revoked ones included."""
        _print_list(_registry(load_config(home)).list(role), as_json)

    @app.command("revoke")
    @reports_errors
    def revoke(name: NameArgument, home: HomeOption, as_json: JsonOption = False) -> None:
        """End a caller's key at once (within seconds on a running gateway)."""
        caller = _registry(load_config(home)).revoke(name, role)
        if as_json:
            print_json(_as_json(caller))
        else:
            out.print(f"{caller.name}: revoked {_time(caller.revoked_us)}")

    @app.command("rotate")
    @reports_errors
    def rotate(name: NameArgument, home: HomeOption, as_json: JsonOption = False) -> None:
        """Give a caller a new key; the old one stops working. Print the new key once."""
        config = load_config(home)
        caller, key = _registry(config).rotate(name, role)
        _print_key(caller, key, config, as_json)


_commands(partners_app, Role.PARTNER)
_commands(auditors_app, Role.AUDITOR)
