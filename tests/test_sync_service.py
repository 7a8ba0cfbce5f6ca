"""The Sync service: a publisher serves its feeds over mutual TLS, to the members the
memorandum lets sync them, every page verifiable and every call on its ledger."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from fedharness import LoopThread
from ports import free_ports

from creditexchange.certs.identity import member_dns_name
from creditexchange.certs.revocation import RevocationWatcher
from creditexchange.clock import china_today
from creditexchange.devtools.provision import ProvisionedNode, provision, signed_memorandum
from creditexchange.node.app.keys import load_signing_key
from creditexchange.node.app.tls import tls_credentials
from creditexchange.node.app.wiring import federation_view, open_audit_log, open_ledger
from creditexchange.node.catalog import load_catalog
from creditexchange.node.database import open_database
from creditexchange.node.exchange.checks import Checks, Limits
from creditexchange.node.exchange.protocol import LEAF_INDEX_TRAILER
from creditexchange.node.exchange.replay import ReplayGuard
from creditexchange.node.exchange.sealing import Opener
from creditexchange.node.exchange.server import server_credentials
from creditexchange.node.ledger import Ledger, merkle
from creditexchange.node.ledger.note import Checkpoint, open_note
from creditexchange.node.records.repository import RecordStatus, find_record, set_status
from creditexchange.node.sync.feed import FeedLog, feed_origin
from creditexchange.node.sync.publish import publish_changes
from creditexchange.node.sync.service import SyncService
from creditexchange.policy.trust import TrustStore, sign
from creditexchange.v1 import audit_pb2, sync_pb2, sync_pb2_grpc

THEME = "customs_credit_grade"


@dataclass
class Publisher:
    nodes: dict[str, ProvisionedNode]
    loop: LoopThread
    feeds: FeedLog
    ledger: Ledger
    port: int
    server: Any
    checks: Checks

    def publish(self) -> dict[str, int]:
        return publish_changes(self.feeds.engine, self.feeds, "customs", [THEME], china_today())

    def channel(self, member: str, port: int | None = None) -> grpc.aio.Channel:
        tls = self.nodes[member].home / "tls"
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(tls / "ca.crt").read_bytes(),
            private_key=(tls / "node.key").read_bytes(),
            certificate_chain=(tls / "node.crt").read_bytes(),
        )
        return grpc.aio.secure_channel(
            f"127.0.0.1:{port or self.port}",
            credentials,
            options=[("grpc.ssl_target_name_override", member_dns_name("customs"))],
        )

    def pull(self, member: str, from_size: int, max_changes: int = 0) -> sync_pb2.FeedBatch:
        async def call() -> sync_pb2.FeedBatch:
            async with self.channel(member) as channel:
                stub = sync_pb2_grpc.SyncStub(channel)
                request = sync_pb2.PullRequest(
                    theme=THEME, from_size=from_size, max_changes=max_changes
                )
                batch: sync_pb2.FeedBatch = await stub.Pull(request, timeout=10)
                return batch

        return self.loop.run(call())

    def refusal(self, member: str, request: sync_pb2.PullRequest) -> grpc.aio.AioRpcError:
        async def call() -> grpc.aio.AioRpcError:
            async with self.channel(member) as channel:
                try:
                    await sync_pb2_grpc.SyncStub(channel).Pull(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return exc
            raise AssertionError("the call was answered")

        return self.loop.run(call())

    def ledger_entries(self, last: int) -> list[audit_pb2.AuditEntry]:
        log = self.ledger.log
        size = log.size()
        found = []
        for stored in log.entries(max(0, size - last), size):
            assert stored.body is not None
            found.append(audit_pb2.AuditEntry.FromString(stored.body))
        return found


def restrict_customs_feed(nodes: dict[str, ProvisionedNode], subscribers: list[str]) -> None:
    """Install memorandum version 2, in which customs' feed has only ``subscribers``."""
    envelope = signed_memorandum(nodes, version=2)
    signed = envelope["signed"]
    for feed in signed["feeds"]:
        if feed["publisher"] == "customs":
            feed["subscribers"] = subscribers
    envelope = {"signed": signed, "signatures": []}
    for node in nodes.values():
        envelope = sign(envelope, load_signing_key(node.config.signing_key_path))
    for node in nodes.values():
        TrustStore(node.config.policy_dir).install(envelope, dt.datetime.now(dt.UTC))


@pytest.fixture(scope="module")
def publisher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Publisher]:
    root: Path = tmp_path_factory.mktemp("federation")
    members = ("customs", "huizhou", "shenzhen")
    nodes = provision(root, members=members, ports=free_ports(3), subjects=40)
    restrict_customs_feed(nodes, ["huizhou"])
    config = nodes["customs"].config
    catalog = load_catalog(config.catalog_path)
    database = open_database(config.database_url)
    signer = open_audit_log(config, database).signer
    federation = config.settings.federation
    feeds = FeedLog(database, signer, lambda theme: feed_origin(federation, "customs", theme))
    checks = Checks(
        member_id="customs",
        catalog=catalog,
        federation=federation_view(config, catalog),
        replay=ReplayGuard(database, config.settings.request_window_s),
        revocations=RevocationWatcher(config.tls_crl_path, config.tls_ca_path),
        limits=Limits(),
        opener=Opener(load_signing_key(config.signing_key_path)),
    )
    loop = LoopThread()
    ledger = open_ledger(config, database)

    async def start() -> tuple[Any, int]:
        await ledger.__aenter__()
        service = SyncService(
            member_id="customs", feeds=feeds, checks=checks, ledger=ledger, poll_interval=0.05
        )
        server = grpc.aio.server()
        sync_pb2_grpc.add_SyncServicer_to_server(service, server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(tls_credentials(config)))
        await server.start()
        return server, port

    server, port = loop.run(start())
    found = Publisher(nodes, loop, feeds, ledger, port, server, checks)
    try:
        yield found
    finally:
        loop.run(server.stop(0))
        loop.run(ledger.close())
        loop.close()
        database.dispose()


def verified(publisher: Publisher, batch: sync_pb2.FeedBatch, old_root: bytes) -> Checkpoint:
    """What a subscriber checks of a batch: the signed checkpoint, and that it extends the
    tree it verified before by exactly the batch's changes."""
    text, _ = open_note(batch.checkpoint, [publisher.feeds.verifier_for(THEME)])
    checkpoint = Checkpoint.parse(text)
    assert checkpoint.size == batch.start + len(batch.changes)
    merkle.verify_consistency(
        batch.start, checkpoint.size, old_root, checkpoint.root_hash, list(batch.consistency)
    )
    return checkpoint


def test_pages_from_any_cursor_verify_against_the_signed_checkpoint(publisher: Publisher) -> None:
    published = publisher.publish()[THEME]
    assert published > 20
    size = publisher.feeds.size(THEME)
    everything = publisher.feeds.leaves(THEME, 0, size)
    for start, page in ((0, 7), (7, 6), (13, 1), (1, 0), (size - 3, 50), (size, 5)):
        old_root = merkle.root_from_leaf_hashes([merkle.leaf_hash(c) for c in everything[:start]])
        batch = publisher.pull("huizhou", start, page)
        checkpoint = verified(publisher, batch, old_root)
        assert batch.start == start and batch.publisher == "customs"
        assert list(batch.changes) == everything[start : min(size, start + (page or size))]
        assert checkpoint.root_hash == merkle.root_from_leaf_hashes(
            [merkle.leaf_hash(c) for c in everything[: checkpoint.size]]
        )
    changes = [sync_pb2.FeedChange.FromString(c) for c in everything]
    assert {c.kind for c in changes} == {sync_pb2.NEW}


def test_a_forged_change_does_not_verify(publisher: Publisher) -> None:
    publisher.publish()
    batch = publisher.pull("huizhou", 0, 5)
    forged = sync_pb2.FeedChange.FromString(batch.changes[2])
    forged.fields_json = forged.fields_json.replace("}", ',"x":1}')
    leaves = [merkle.leaf_hash(c) for c in batch.changes]
    leaves[2] = merkle.leaf_hash(forged.SerializeToString(deterministic=True))
    text, _ = open_note(batch.checkpoint, [publisher.feeds.verifier_for(THEME)])
    assert merkle.root_from_leaf_hashes(leaves) != Checkpoint.parse(text).root_hash


def test_every_batch_served_is_in_the_publishers_ledger(publisher: Publisher) -> None:
    publisher.publish()
    batch = publisher.pull("huizhou", 2, 4)
    (entry,) = publisher.ledger_entries(1)
    assert (entry.kind, entry.direction) == (audit_pb2.SYNC, audit_pb2.INCOMING)
    assert (entry.requester, entry.responder) == ("huizhou", "customs")
    assert entry.note == f"Sync/Pull feed {THEME}: changes 2-5; checkpoint size 6"
    assert list(entry.themes_answered) == [THEME]
    assert entry.decision.allowed and list(entry.decision.rule_ids) == ["customs-feed"]
    assert entry.decision.memorandum_version == 2
    assert entry.outcome.status == "OK"
    assert len(batch.changes) == 4


@pytest.mark.parametrize(
    ("member", "theme", "from_size", "status", "message"),
    [
        ("shenzhen", THEME, 0, grpc.StatusCode.PERMISSION_DENIED, "lets shenzhen sync no feed"),
        ("huizhou", "admin_penalty", 0, grpc.StatusCode.NOT_FOUND, "publishes no feed"),
        ("huizhou", THEME, 10**9, grpc.StatusCode.OUT_OF_RANGE, "is beyond it"),
        ("customs", THEME, 0, grpc.StatusCode.PERMISSION_DENIED, "lets customs sync no feed"),
    ],
)
def test_a_call_the_memorandum_does_not_allow_is_refused_and_recorded(
    publisher: Publisher,
    member: str,
    theme: str,
    from_size: int,
    status: grpc.StatusCode,
    message: str,
) -> None:
    publisher.publish()
    request = sync_pb2.PullRequest(theme=theme, from_size=from_size)
    refused = publisher.refusal(member, request)
    assert refused.code() == status
    assert message in (refused.details() or "")
    (entry,) = publisher.ledger_entries(1)
    assert (entry.kind, entry.requester, entry.outcome.status) == (
        audit_pb2.SYNC,
        member,
        status.name,
    )
    assert list(entry.themes_asked) == [theme] and not entry.themes_answered
    trailers = dict(refused.trailing_metadata() or ())
    assert int(trailers[LEAF_INDEX_TRAILER]) == publisher.ledger.log.size() - 1


def test_follow_delivers_the_backlog_then_a_change_published_after_it_started(
    publisher: Publisher,
) -> None:
    publisher.publish()
    size = publisher.feeds.size(THEME)
    database = publisher.feeds.engine

    async def follow() -> list[sync_pb2.FeedBatch]:
        batches: list[sync_pb2.FeedBatch] = []
        async with publisher.channel("huizhou") as channel:
            stream = sync_pb2_grpc.SyncStub(channel).Follow(
                sync_pb2.PullRequest(theme=THEME, from_size=size - 5, max_changes=3)
            )
            async for batch in stream:
                batches.append(batch)
                if batch.start + len(batch.changes) == size:  # caught up: change a record
                    await asyncio.to_thread(expire_one)
                if batch.start + len(batch.changes) == size + 1:
                    stream.cancel()
                    break
        return batches

    def expire_one() -> None:
        with database.begin() as conn:
            changes = publisher.feeds.leaves(THEME, 0, size)
            key = sync_pb2.FeedChange.FromString(changes[0]).record_key
            record_id, _ = find_record(conn, THEME, key)
            set_status(conn, record_id, RecordStatus.EXPIRED, "test", dt.datetime.now(dt.UTC))
        publisher.publish()

    batches = publisher.loop.run(follow(), timeout=30)
    assert [(b.start, len(b.changes)) for b in batches] == [(size - 5, 3), (size - 2, 2), (size, 1)]
    root = merkle.root_from_leaf_hashes(
        [merkle.leaf_hash(c) for c in publisher.feeds.leaves(THEME, 0, size - 5)]
    )
    for batch in batches:
        root = verified(publisher, batch, root).root_hash
    last = sync_pb2.FeedChange.FromString(batches[-1].changes[0])
    assert last.kind == sync_pb2.REMOVAL
    notes = [e.note for e in publisher.ledger_entries(3)]
    assert (
        notes[-1] == f"Sync/Follow feed {THEME}: changes {size}-{size}; checkpoint size {size + 1}"
    )


def test_a_follow_stream_ends_cleanly_when_the_node_stops(publisher: Publisher) -> None:
    """Closing the service ends each Follow at once, so stopping the server cancels none
    (a cancelled stream is an error on both sides and a traceback in the node's log)."""
    publisher.publish()
    size = publisher.feeds.size(THEME)

    async def follow_then_close() -> tuple[list[int], grpc.StatusCode]:
        service = SyncService(
            member_id="customs",
            feeds=publisher.feeds,
            checks=publisher.checks,
            ledger=publisher.ledger,
            poll_interval=0.05,
        )
        server = grpc.aio.server()
        sync_pb2_grpc.add_SyncServicer_to_server(service, server)
        config = publisher.nodes["customs"].config
        port = server.add_secure_port("127.0.0.1:0", server_credentials(tls_credentials(config)))
        await server.start()
        starts: list[int] = []
        try:
            async with publisher.channel("huizhou", port) as channel:
                stream = sync_pb2_grpc.SyncStub(channel).Follow(
                    sync_pb2.PullRequest(theme=THEME, from_size=size)
                )
                async for batch in stream:  # the first batch: caught up, nothing to send
                    starts.append(batch.start)
                    service.close()
                return starts, await stream.code()
        finally:
            await server.stop(0)

    starts, code = publisher.loop.run(follow_then_close(), timeout=10)
    assert starts == [size] and code == grpc.StatusCode.OK
