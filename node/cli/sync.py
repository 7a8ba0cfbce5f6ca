"""``credit-node sync …``: this node's copies of the other members' change feeds.

``run`` syncs the feeds of one publisher that the memorandum lets this node sync
(``--theme`` narrows it to one): with ``--once`` it catches up and exits (1 when a
feed was refused, stopped or unreachable), otherwise it follows them until Ctrl-C,
as a serving node does in the background. ``status`` shows per feed the cursor,
the publisher's size as last seen, the lag in changes and time, the last batch
applied and the last error, in China time. ``reset`` drops a stopped feed's copy
and cursor (recorded in the ledger), once a rewritten history has been settled
with its publisher; the next ``run`` syncs the publisher's present history.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict
from typing import Annotated

import typer
from rich.text import Text

from creditexchange.node.app.logs import configure as configure_logs
from creditexchange.node.app.wiring import open_client, open_ledger, open_node
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    out,
    print_json,
    reports_errors,
)
from creditexchange.node.sync.subscribe import (
    CAUGHT_UP,
    FeedResult,
    FeedStatus,
    Subscriber,
    reset_feed,
    sync_status,
)

__all__ = ["sync_app"]

sync_app = typer.Typer(
    help="Change feeds: sync the other members' published data (customs) and show the lag.",
    no_args_is_help=True,
)

PublisherOption = Annotated[
    str, typer.Option("--from", help="the publishing member, e.g. customs", show_default=False)
]
ThemeOption = Annotated[
    str | None, typer.Option("--theme", help="one theme of its feed (default: every one)")
]


@sync_app.command("run")
@reports_errors
def run(
    home: HomeOption,
    publisher: PublisherOption,
    theme: ThemeOption = None,
    once: Annotated[bool, typer.Option("--once", help="catch up, then exit")] = False,
    as_json: JsonOption = False,
) -> None:
    """Sync a publisher's feeds: catch up and exit with --once, else follow until Ctrl-C."""
    node = open_node(home)
    if not once:
        configure_logs("INFO")

    async def sync() -> list[FeedResult]:
        ledger = open_ledger(node.config, node.database)
        async with ledger, open_client(node.config, ledger=ledger) as client:
            subscriber = Subscriber.of_client(client, ledger)
            if once:
                return await subscriber.run_once(publisher, theme)
            await subscriber.run(publisher, theme)
            return []

    if not once:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(sync())
        _print_statuses([s for s in sync_status(node.database) if s.publisher == publisher])
        return
    results = asyncio.run(sync())
    if as_json:
        print_json([asdict(r) for r in results])
    else:
        for r in results:
            line = f"{r.publisher}/{r.theme}: {r.outcome}, {r.applied} changes applied, at {r.size}"
            if r.outcome == CAUGHT_UP:
                out.print(line)
            else:
                err.print(Text.assemble((line, "bold red"), f": {r.detail}"))
    if any(r.outcome != CAUGHT_UP for r in results):
        raise typer.Exit(1)


@sync_app.command("status")
@reports_errors
def status(home: HomeOption, as_json: JsonOption = False) -> None:
    """Per feed: cursor, publisher's size as last seen, lag, last applied, last error."""
    node = open_node(home)
    statuses = sync_status(node.database)
    if as_json:
        print_json([s.as_dict() for s in statuses])
        return
    if not statuses:
        out.print("no feed synced yet (credit-node sync run --from MEMBER)")
        return
    _print_statuses(statuses)


def _print_statuses(statuses: list[FeedStatus]) -> None:
    for s in statuses:
        shown = s.as_dict()
        out.print(
            f"{s.publisher}/{s.theme}: at {s.size} of {s.head_size} "
            f"(behind {s.lag_entries} changes, {shown['lag_seconds']} s), {s.records} records, "
            f"last applied {shown['applied'] or 'never'}, "
            f"newest change {shown['newest_change'] or 'none'}"
        )
        if s.last_error:
            label = "  STOPPED" if s.stopped else "  last error"
            err.print(
                Text.assemble((label, "bold red"), f" ({shown['last_error_at']}): {s.last_error}")
            )


@sync_app.command("reset")
@reports_errors
def reset(
    home: HomeOption,
    publisher: PublisherOption,
    theme: Annotated[str, typer.Option("--theme", help="the feed's theme", show_default=False)],
) -> None:
    """Drop a feed's copy and cursor (recorded in the ledger); the next run starts over.

    For a feed stopped by a rewritten history, once settled with its publisher.
    """
    node = open_node(home)

    async def drop() -> int:
        async with open_ledger(node.config, node.database) as ledger:
            was = await reset_feed(ledger, node.config.member_id, publisher, theme)
            return was.size

    size = asyncio.run(drop())
    out.print(
        f"{publisher}/{theme}: copy and cursor (at {size}) dropped; "
        f"'credit-node sync run --from {publisher}' syncs it again from the start"
    )
