"""Customs' change feed under faults, between real processes, on SQLite and PostgreSQL.

customs runs as ``credit-node serve``; huizhou syncs it with ``credit-node sync run``
in processes of its own (or, where a test reads the subscriber's results and metrics,
with the same :class:`Subscriber` in this process). Each test injects one kind of
fault — the subscriber killed with SIGKILL mid-batch again and again, the publisher
killed and restarted mid-sync, the connection cut in the middle of a batch, a
publisher serving a bad signature, a replayed batch, a skipped batch or a rewritten
history — lets the sync finish, and holds it to one promise: huizhou's copy equals
customs' servable data exactly (:class:`synchelpers.Digest` over every record), each
change was applied exactly once (the ranges in the subscriber's ledger tile the feed),
and every bad batch was refused with a message saying what was wrong, the cursor left
where it was, and an alarm raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.context import ForkServerProcess
from pathlib import Path

import grpc
import pytest
from conftest import postgres_schema
from fedharness import LoopThread
from ports import free_ports
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from synchelpers import (
    CuttingProxy,
    Digest,
    FeedReplay,
    applied_ranges,
    cli_process,
    correct_records,
    customs_feed_log,
    import_customs,
    publish,
    publisher_digest,
    serve,
    set_statuses,
    stop,
    subscriber_digest,
    wait_until,
)

from creditexchange.devtools.provision import ProvisionedNode, provision, set_settings
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.tls import tls_credentials
from creditexchange.node.app.wiring import open_audit_log, open_client, open_ledger
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.node.database import create_database_engine, open_database, upgrade
from creditexchange.node.database.models import RECORDS
from creditexchange.node.exchange.server import server_credentials
from creditexchange.node.records.repository import RecordStatus
from creditexchange.node.sync.feed import FeedLog
from creditexchange.node.sync.publish import canonical_fields
from creditexchange.node.sync.service import MAX_PAGE_CHANGES
from creditexchange.node.sync.subscribe import (
    CAUGHT_UP,
    REFUSED,
    STOPPED,
    Alarm,
    CursorState,
    FeedResult,
    Subscriber,
    SyncMetrics,
    read_cursor,
    reset_feed,
    sync_status,
)
from creditexchange.v1 import audit_pb2, sync_pb2, sync_pb2_grpc

pytestmark = pytest.mark.slow

PUBLISHER, ME = "customs", "huizhou"
GRADE = "customs_credit_grade"
THEMES = (GRADE, "customs_case", "customs_light_status")
RECORDS_IMPORTED = 30_000  # generated grades: a feed of a few tens of thousands of changes
PAGE = MAX_PAGE_CHANGES  # the subscriber's page: Subscriber's default, which the command uses


# --- the federation: customs serving, huizhou subscribed ----------------------------------


@dataclass
class World:
    """customs serving its feeds (``credit-node serve``) from a store holding
    ``RECORDS_IMPORTED`` generated grades, and huizhou subscribed to them; both stores
    on the backend of the test."""

    nodes: dict[str, ProvisionedNode]
    catalog: Catalog
    customs: Engine
    huizhou: Engine
    feeds: FeedLog
    grades: Path  # the department file the grades were imported from
    server: ForkServerProcess | None = None
    changes_made: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.nodes[ME].home

    @property
    def config(self) -> NodeConfig:
        return self.nodes[ME].config

    def start_publisher(self) -> None:
        self.server = serve(self.nodes[PUBLISHER].home, self.nodes[PUBLISHER].port)

    def stop_publisher(self) -> None:
        if self.server is not None:
            stop(self.server)
            self.server = None

    def source(self) -> Digest:
        return publisher_digest(self.customs, THEMES)

    def copy(self, *themes: str) -> Digest:
        return subscriber_digest(self.huizhou, PUBLISHER, themes or THEMES)

    def cursor(self, theme: str = GRADE) -> CursorState:
        return read_cursor(self.huizhou, PUBLISHER, theme)

    def head(self, theme: str = GRADE) -> int:
        return self.feeds.size(theme)

    def change_at_source(self) -> None:
        """The next change customs makes, published at once: a correction of every third
        grade (re-imported), then a repair of 200 grades and a withdrawal of 200 more."""
        if len(self.changes_made) % 2 == 0:
            tag = len(self.changes_made) + 1
            correct_records(self.customs, self.catalog, self.grades, GRADE, 3, tag)
            self.changes_made.append("correction")
        else:
            keys = active_grades(self.customs, 400)
            set_statuses(self.customs, GRADE, keys[:200], RecordStatus.REPAIRED)
            set_statuses(self.customs, GRADE, keys[200:], RecordStatus.EXPIRED)
            self.changes_made.append("repair and removal")
        publish(self.nodes[PUBLISHER].config, self.feeds)

    def reset_subscriber(self) -> None:
        """Drop huizhou's copies and cursors (recorded) and point it at customs."""
        self.point_at(self.nodes[PUBLISHER].port)

        async def reset() -> None:
            async with open_ledger(self.config, self.huizhou) as ledger:
                for theme in THEMES:
                    await reset_feed(ledger, ME, PUBLISHER, theme)

        asyncio.run(reset())

    def point_at(self, port: int) -> None:
        """Send huizhou's calls to customs to ``port`` on loopback; the TLS name stays
        customs', so only a server holding customs' certificate is believed."""
        peers = {PUBLISHER: f"127.0.0.1:{port}", ME: f"127.0.0.1:{self.nodes[ME].port}"}
        set_settings(self.home, peers=peers)

    def caught_up(self) -> bool:
        """Whether huizhou's cursors are at customs' heads (compare the copies after)."""
        return all(self.cursor(theme).size == self.head(theme) for theme in THEMES)

    def sync_once(self) -> int:
        """``credit-node sync run --from customs --once`` to its end; its exit code."""
        process = cli_process(
            "sync", "run", "--from", PUBLISHER, "--once", "--home", str(self.home)
        )
        process.join(120)
        assert process.exitcode is not None, "the sync did not end within 120 s"
        return process.exitcode

    def sync_here(self, metrics: SyncMetrics | None = None) -> list[FeedResult]:
        """The same sync in this process, to read its results and metrics."""

        async def run() -> list[FeedResult]:
            config = self.config  # read again: the peers may have moved
            database = open_database(config.database_url)
            try:
                async with (
                    open_ledger(config, database) as ledger,
                    open_client(config, ledger=ledger) as client,
                ):
                    subscriber = Subscriber.of_client(client, ledger, metrics, page=PAGE)
                    return await subscriber.run_once(PUBLISHER)
            finally:
                database.dispose()

        return asyncio.run(run())

    def assert_in_step(self) -> None:
        """The promise: the copy is customs' data exactly, each change applied once."""
        assert self.copy() == self.source()
        assert self.copy().records > RECORDS_IMPORTED // 2
        ranges = applied_ranges(self.config, self.huizhou)
        for theme in THEMES:
            size = self.cursor(theme).size
            assert size == self.head(theme), theme
            assert tiles(ranges.get(theme, []), size), f"{theme}: applied {ranges.get(theme)}"


def active_grades(engine: Engine, n: int) -> list[str]:
    """The keys of ``n`` grades customs still has active."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(RECORDS.c.record_key)
            .where(RECORDS.c.theme == GRADE, RECORDS.c.status == RecordStatus.ACTIVE.value)
            .order_by(RECORDS.c.record_key)
            .limit(n)
        ).all()
    return [str(key) for (key,) in rows]


def tiles(ranges: list[tuple[int, int]], size: int) -> bool:
    """Whether ``ranges`` (applied since the last reset, in order) cover the changes
    ``0 .. size - 1`` each exactly once."""
    at = 0
    for first, end in ranges:
        if first != at:
            return False
        at = end
    return at == size


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    root = tmp_path_factory.mktemp(f"faults-{request.param}")
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        if request.param == "postgres":  # both stores, each in a schema of its own
            urls = {member: stack.enter_context(postgres_schema()) for member in (PUBLISHER, ME)}
        nodes = provision(
            root, members=(PUBLISHER, ME), ports=free_ports(2), database_urls=urls, subjects=20
        )
        catalog = load_catalog()
        customs = open_database(nodes[PUBLISHER].config.database_url)
        stack.callback(customs.dispose)
        huizhou = open_database(nodes[ME].config.database_url)
        stack.callback(huizhou.dispose)
        grades = root / "grades.csv"
        import_customs(customs, catalog, grades, GRADE, RECORDS_IMPORTED, seed=7)
        feeds = customs_feed_log(nodes[PUBLISHER].config, customs)
        publish(nodes[PUBLISHER].config, feeds)
        world = World(nodes, catalog, customs, huizhou, feeds, grades)
        world.start_publisher()
        stack.callback(world.stop_publisher)
        yield world


# --- the subscriber killed, the publisher restarted, the cable cut ------------------------

KILLS = 6


def test_a_subscriber_killed_mid_batch_again_and_again_ends_with_the_publishers_data(
    world: World,
) -> None:
    """SIGKILL lands while a batch is being pulled, verified or committed; after every
    kill the copy is exactly what the feed's changes up to the cursor say (the batch in
    flight left nothing), and customs keeps correcting, repairing and withdrawing
    records meanwhile. The sync that finishes brings the copy level with customs."""
    world.reset_subscriber()
    replay = FeedReplay(world.feeds, GRADE)
    chance = random.Random(2026)
    killed_at: list[int] = []
    while len(killed_at) < KILLS:
        if world.head() - world.cursor().size < 3 * PAGE:  # keep it busy: change the source
            world.change_at_source()
        before = world.cursor().size
        process = cli_process(
            "sync", "run", "--from", PUBLISHER, "--once", "--home", str(world.home)
        )
        wait_until(
            lambda: world.cursor().size > before or not process.is_alive(),  # noqa: B023
            60,
            "a batch applied",
        )
        time.sleep(chance.uniform(0.0, 0.08))  # into the next batch
        assert process.is_alive(), f"the sync ended on its own (exit {process.exitcode})"
        process.kill()
        process.join()
        assert process.exitcode == -signal.SIGKILL
        size = world.cursor().size
        assert before < size < world.head()  # it was killed mid-sync, after some progress
        assert world.copy(GRADE) == replay.digest_at(size)  # no half batch, no lost batch
        killed_at.append(size)
    assert world.changes_made, "the source did not change while the subscriber was killed"
    assert world.sync_once() == 0
    world.assert_in_step()


def test_a_publisher_killed_and_restarted_mid_sync_is_followed_to_its_last_change(
    world: World,
) -> None:
    """customs crashes (SIGKILL) while huizhou follows its feed mid-backlog, and comes
    back; the follower, a ``credit-node sync run`` left running, resumes by itself from
    its cursor, and then takes a change made after the restart from the stream."""
    world.reset_subscriber()
    follower = cli_process("sync", "run", "--from", PUBLISHER, "--home", str(world.home))
    try:
        wait_until(lambda: world.cursor().size >= PAGE, 60, "a batch applied")
        assert world.server is not None
        world.server.kill()
        world.server.join()
        assert world.cursor().size < world.head()  # customs died with changes still due
        world.start_publisher()
        wait_until(world.caught_up, 60, "catching up after the restart")
        world.change_at_source()  # now through the stream the follower holds open
        wait_until(world.caught_up, 60, "the change reaching huizhou")
        assert follower.is_alive()
    finally:
        follower.kill()
        follower.join()
    world.assert_in_step()


def test_a_connection_cut_mid_batch_resumes_from_the_last_batch_applied(world: World) -> None:
    """A relay between huizhou and customs drops the connection in the middle of a
    batch, three syncs in a row: each ends unreachable (exit 1) with the error noted,
    its copy exactly the feed up to its cursor; the fourth sync finishes the feed."""
    world.reset_subscriber()
    replay = FeedReplay(world.feeds, GRADE)
    proxy = CuttingProxy(("127.0.0.1", world.nodes[PUBLISHER].port), cuts=3, after_bytes=2_500_000)
    world.point_at(proxy.port)
    try:
        sizes = []
        for cut in range(1, 4):
            assert world.sync_once() == 1
            assert proxy.cut == cut
            cursor = world.cursor()
            assert cursor.size < world.head() and cursor.size % PAGE == 0
            assert "UNAVAILABLE" in cursor.last_error
            assert world.copy(GRADE) == replay.digest_at(cursor.size)
            sizes.append(cursor.size)
        assert sizes == sorted(sizes) and sizes[-1] > 0  # it got further each time
        assert world.sync_once() == 0
    finally:
        world.point_at(world.nodes[PUBLISHER].port)
        proxy.close()
    assert world.cursor().last_error == ""
    world.assert_in_step()


# --- a publisher that lies -----------------------------------------------------------------


def page_of(feeds: FeedLog, theme: str, start: int, limit: int) -> sync_pb2.FeedBatch:
    """A page of ``feeds`` from ``start`` as the Sync service builds one: the changes, the
    checkpoint signed for exactly their end, the consistency proof from ``start``."""
    end = min(feeds.size(theme), start + limit)
    return sync_pb2.FeedBatch(
        publisher=PUBLISHER,
        theme=theme,
        start=start,
        changes=feeds.leaves(theme, start, end),
        checkpoint=feeds.checkpoint(theme, end),
        consistency=feeds.consistency_proof(theme, start, end) if start else [],
        head_size=feeds.size(theme),
    )


@dataclass
class Impostor(sync_pb2_grpc.SyncServicer):
    """A Sync server with customs' own certificate and key serving customs' real feeds:
    honestly for the first ``honest`` pages of grades, then what ``tamper`` makes."""

    feeds: FeedLog
    tamper: Callable[[Impostor, sync_pb2.PullRequest], sync_pb2.FeedBatch]
    honest: int = 2
    other_history: FeedLog | None = None
    served: list[sync_pb2.FeedBatch] = field(default_factory=list)

    async def Pull(
        self, request: sync_pb2.PullRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> sync_pb2.FeedBatch:
        honest = request.theme != GRADE or len(self.served) < self.honest
        if honest:
            batch = await asyncio.to_thread(
                page_of, self.feeds, request.theme, request.from_size, request.max_changes
            )
        else:
            batch = await asyncio.to_thread(self.tamper, self, request)
        if request.theme == GRADE:
            self.served.append(batch)
        return batch


def flip_signature(impostor: Impostor, request: sync_pb2.PullRequest) -> sync_pb2.FeedBatch:
    """The honest page with one character of its checkpoint's signature changed."""
    batch = page_of(impostor.feeds, GRADE, request.from_size, request.max_changes)
    text, signature = batch.checkpoint.rsplit(" ", 1)
    flipped = signature[:10] + ("B" if signature[10] != "B" else "C") + signature[11:]
    batch.checkpoint = f"{text} {flipped}"
    return batch


def replay_last(impostor: Impostor, request: sync_pb2.PullRequest) -> sync_pb2.FeedBatch:
    """The batch just served and applied, served again as it was."""
    return impostor.served[-1]


def skip_one(impostor: Impostor, request: sync_pb2.PullRequest) -> sync_pb2.FeedBatch:
    """The page after the one due, honestly signed and proved from its own start."""
    start = request.from_size + request.max_changes
    return page_of(impostor.feeds, GRADE, start, request.max_changes)


def other_history(impostor: Impostor, request: sync_pb2.PullRequest) -> sync_pb2.FeedBatch:
    """The page due, from a second history signed with customs' key."""
    assert impostor.other_history is not None
    return page_of(impostor.other_history, GRADE, request.from_size, request.max_changes)


def rewrite_history(feeds: FeedLog, folder: Path) -> FeedLog:
    """customs' grade feed with its first change altered (another customs code), signed
    anew with customs' key under the same origin: a history no append-only log holds
    beside the real one."""
    engine = create_database_engine(f"sqlite:///{folder / 'rewritten.db'}")
    upgrade(engine)
    rewritten = FeedLog(engine, feeds.signer, feeds.origin_for_theme)
    leaves = feeds.leaves(GRADE, 0, feeds.size(GRADE))
    first = sync_pb2.FeedChange.FromString(leaves[0])
    first.fields_json = canonical_fields(
        json.dumps({**json.loads(first.fields_json), "customs_code": "0000000000"})
    )
    with engine.begin() as conn:
        rewritten.append(conn, GRADE, [first.SerializeToString(deterministic=True), *leaves[1:]])
    return rewritten


async def start_impostor(config: NodeConfig, impostor: Impostor) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    sync_pb2_grpc.add_SyncServicer_to_server(impostor, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls_credentials(config)))
    await server.start()
    return server, port


def alarms(world: World) -> list[audit_pb2.AuditEntry]:
    """huizhou's alarm entries: LOCAL, SYNC, outcome ALARM."""
    log = open_audit_log(world.config, world.huizhou)
    found = []
    for stored in log.entries(0, log.size()):
        assert stored.body is not None
        entry = audit_pb2.AuditEntry.FromString(stored.body)
        if entry.outcome.status == "ALARM":
            assert (entry.kind, entry.direction) == (audit_pb2.SYNC, audit_pb2.LOCAL)
            found.append(entry)
    return found


@pytest.mark.parametrize(
    ("tamper", "kind", "outcome", "says"),
    [
        (
            flip_signature,
            Alarm.SIGNATURE,
            REFUSED,
            "checkpoint of customs's customs_credit_grade feed is refused",
        ),
        (
            replay_last,
            Alarm.REPLAY,
            REFUSED,
            f"starting at change {PAGE} after this node applied {2 * PAGE}: a replay",
        ),
        (skip_one, Alarm.GAP, REFUSED, f"a gap: changes {2 * PAGE}-{3 * PAGE - 1} are missing"),
        (other_history, Alarm.REWRITTEN, STOPPED, "its history was rewritten"),
    ],
    ids=["bad signature", "replayed batch", "skipped batch", "rewritten history"],
)
def test_a_bad_batch_is_refused_with_an_alarm_and_the_real_feed_then_syncs_in_full(
    world: World,
    tmp_path: Path,
    tamper: Callable[[Impostor, sync_pb2.PullRequest], sync_pb2.FeedBatch],
    kind: str,
    outcome: str,
    says: str,
) -> None:
    """Two honest pages, then the bad one: refused, saying what is wrong; nothing of it
    applied (the cursor and the copy where the honest pages left them); one alarm in
    the ledger, the metrics and ``sync status``. Pointed back at customs, huizhou syncs
    the rest to customs' data exactly — after ``credit-node sync reset`` only, for a
    history rewritten, which stops the feed and keeps both checkpoints as evidence."""
    world.reset_subscriber()
    impostor = Impostor(world.feeds, tamper)
    if tamper is other_history:
        impostor.other_history = rewrite_history(world.feeds, tmp_path)
    raised_before = len(alarms(world))
    metrics = SyncMetrics(CollectorRegistry())
    loop = LoopThread()
    server, port = loop.run(start_impostor(world.nodes[PUBLISHER].config, impostor))
    try:
        world.point_at(port)
        results = {r.theme: r for r in world.sync_here(metrics)}
    finally:
        world.point_at(world.nodes[PUBLISHER].port)
        loop.run(server.stop(0))
        loop.close()
    refused = results.pop(GRADE)
    assert (refused.outcome, refused.size) == (outcome, 2 * PAGE)
    assert says in refused.detail
    assert {r.outcome for r in results.values()} == {CAUGHT_UP}  # the honest feeds synced
    # the bad page is the third served; the subscriber may have asked for the next one
    # ahead while it checked it (a page that starts where it should is followed at once)
    assert 3 <= len(impostor.served) <= 4
    bad = impostor.served[2]
    cursor = world.cursor()  # where the honest pages left it
    assert (cursor.size, cursor.root_hash) == (2 * PAGE, world.feeds.root(GRADE, 2 * PAGE))
    assert world.copy(GRADE) == FeedReplay(world.feeds, GRADE).digest_at(2 * PAGE)
    raised = alarms(world)
    assert len(raised) == raised_before + 1
    assert raised[-1].outcome.message == kind and raised[-1].note.startswith(f"{kind}: ")
    assert says in raised[-1].note
    labels = {"publisher": PUBLISHER, "theme": GRADE, "kind": kind}
    assert metrics.registry.get_sample_value("credit_node_sync_alarms_total", labels) == 1
    [status] = [s for s in sync_status(world.huizhou) if s.theme == GRADE]
    assert says in status.last_error and status.stopped == (outcome == STOPPED)

    after = {r.theme: r for r in world.sync_here()}  # customs itself again
    if outcome == STOPPED:
        assert cursor.checkpoint in raised[-1].note  # the evidence: both checkpoints
        assert bad.checkpoint in raised[-1].note
        assert after[GRADE].outcome == STOPPED and world.cursor().size == 2 * PAGE
        reset = cli_process(
            "sync", "reset", "--from", PUBLISHER, "--theme", GRADE, "--home", str(world.home)
        )
        reset.join(60)
        assert reset.exitcode == 0
        after = {r.theme: r for r in world.sync_here()}
    assert {r.outcome for r in after.values()} == {CAUGHT_UP}
    world.assert_in_step()
