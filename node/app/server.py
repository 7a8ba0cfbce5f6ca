"""``credit-node serve``: a serving node, opened from its home.

:class:`NodeServer` opens everything a serving node holds — the database, the
audit ledger, the replay guard, the quota counters, the installed memorandum,
the revocation list — starts the gRPC services behind mutual TLS
(``exchange.server``), serves metrics, witnesses its peers' logs every
``witness_interval_s`` seconds (``federation.witness``; the first round one interval
after the start, none when it is 0), and closes them in the reverse order, after the
last queued audit entry is durable. It refuses to start without a memorandum or a
valid revocation list (fail closed), saying how to install one.

Several processes may serve one node (``serve --workers N`` on one machine, or
several pods on one PostgreSQL): each answers calls on the same port (with
``reuse_port``, SO_REUSEPORT), the database decides replays, quotas and the
ledger's order for all of them, and only the process that leads
(:mod:`~creditexchange.node.app.leadership`) runs the background duties —
witnessing, following feeds, publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

import grpc
from sqlalchemy import Engine

from creditexchange.certs.credentials import NodeCredentials
from creditexchange.certs.revocation import RevocationWatcher
from creditexchange.clock import china_today
from creditexchange.errors import CertificateError, ConfigError, CreditExchangeError, ExchangeError
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.keys import load_hmac_key, load_signing_key
from creditexchange.node.app.leadership import Leadership
from creditexchange.node.app.tls import tls_credentials
from creditexchange.node.app.wiring import federation_view, open_client, open_ledger
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.node.database import open_database
from creditexchange.node.exchange.checks import Checks, Limits
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.deciding import Decider
from creditexchange.node.exchange.federation import FederationView
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.exchange.provider import Provider
from creditexchange.node.exchange.quotas import QuotaCounter
from creditexchange.node.exchange.readers import open_reader
from creditexchange.node.exchange.replay import ReplayGuard
from creditexchange.node.exchange.sealing import Opener
from creditexchange.node.exchange.server import (
    SERVICE_NAMES,
    SERVING,
    grpc_server,
    server_credentials,
)
from creditexchange.node.federation.witness import Witness
from creditexchange.node.ledger import Ledger
from creditexchange.node.records.objections import objection_counts
from creditexchange.node.sync.feed import FeedLog, feed_origin
from creditexchange.node.sync.publish import publish_changes
from creditexchange.node.sync.service import SERVICE_NAME as SYNC_SERVICE
from creditexchange.node.sync.service import SyncService, add_sync_service
from creditexchange.node.sync.subscribe import Subscriber, SyncMetrics

__all__ = ["NodeServer", "serve"]

log = logging.getLogger("node.server")


class NodeServer:
    """A serving node; ``async with NodeServer(config) as server: await server.wait()``."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        port: int | None = None,
        reuse_port: bool = False,
        lead: bool = True,
    ) -> None:
        self.config = config
        self.requested_port = config.settings.grpc_port if port is None else port
        self.reuse_port = reuse_port  # several processes listen on the port (SO_REUSEPORT)
        self.lead = lead  # may run the background duties (SQLite; PostgreSQL decides itself)
        self.leadership: Leadership | None = None
        self.port = 0
        self.metrics = Metrics()
        self._server: grpc.aio.Server | None = None
        self._ledger: Ledger | None = None
        self._provider: Provider | None = None
        self._witness: Witness | None = None
        self._witnessing: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []  # publishing, syncing
        self.feeds: FeedLog | None = None
        self._sync_client: FederationClient | None = None
        self._publishing_from: tuple[Engine, FederationView] | None = None
        self._sync_service: SyncService | None = None
        self._stopped = asyncio.Event()

    @property
    def ledger(self) -> Ledger:
        """The running node's audit ledger (its one appender)."""
        if self._ledger is None:
            raise ExchangeError("the node is not running")
        return self._ledger

    @property
    def witness(self) -> Witness:
        """The running node's witness of its peers' logs (``await witness.round()``)."""
        if self._witness is None:
            raise ExchangeError("the node is not running")
        return self._witness

    async def __aenter__(self) -> NodeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open everything and serve; whatever fails half-way is closed again."""
        try:
            await self._start()
        except BaseException:
            await self.stop(0)
            raise

    async def _start(self) -> None:
        config = self.config
        tls = tls_credentials(config)
        catalog = load_catalog(config.catalog_path)
        database = open_database(config.database_url)
        view = federation_view(config, catalog)
        view.current()  # refuse to start without a memorandum, saying how to install one
        try:  # no revocation list, no service: a node never serves without one (fail closed)
            revocations = RevocationWatcher(config.tls_crl_path, config.tls_ca_path)
        except CertificateError as exc:
            raise ConfigError(
                f"{exc}; copy the federation CA's crl.pem there ('credit-node certs crl' "
                "publishes a fresh one)"
            ) from None
        self._ledger = open_ledger(config, database)
        await self._ledger.__aenter__()
        self._ledger.on_batch = self.metrics.ledger_batch.observe
        self.metrics.watch_objections(lambda: objection_counts(database, china_today()))
        self.metrics.watch_store(database, view, config.member_id)
        self._provider = self._open_provider(database, catalog, view, revocations, self._ledger)
        await asyncio.to_thread(self._provider.cosignatures.load)
        self._witness = await self._open_witness(self._ledger)
        self.feeds = FeedLog(
            database,
            self._ledger.log.signer,
            lambda theme: feed_origin(config.settings.federation, config.member_id, theme),
        )
        await self._listen(self._provider, view, self._ledger, tls)  # the port opens last
        self._publishing_from = (database, view)
        self.leadership = Leadership(database, config.member_id, lead=self.lead)
        self._tasks.append(asyncio.create_task(self._duties(self.leadership), name="duties"))

    async def _duties(self, leadership: Leadership) -> None:
        """Once this process leads: witness, follow the feeds, publish."""
        await leadership.acquire()
        config, settings = self.config, self.config.settings
        assert self._witness is not None and self._ledger is not None
        if settings.witness_interval_s:
            interval = settings.witness_interval_s
            self._witnessing = asyncio.create_task(
                self._witness.run(interval, first_after=interval), name="witness"
            )
        if settings.sync_feeds:
            self._sync_client = open_client(config, ledger=self._ledger)
            await self._sync_client.__aenter__()
            subscriber = Subscriber.of_client(
                self._sync_client, self._ledger, SyncMetrics(self.metrics.registry)
            )
            self._tasks.append(asyncio.create_task(subscriber.run(), name="sync"))
        if settings.publish_interval_s:
            self._tasks.append(
                asyncio.create_task(self._publishing(settings.publish_interval_s), name="publish")
            )

    async def publish(self) -> dict[str, int]:
        """Append every change of the themes this node publishes to their feeds now; per
        theme, how many changes were appended."""
        if self._publishing_from is None or self.feeds is None:
            raise ExchangeError("the node is not running")
        database, view = self._publishing_from
        today = china_today()
        themes = view.current().engine.published_themes(self.config.member_id, today)
        if not themes:
            return {}
        return await asyncio.to_thread(
            publish_changes, database, self.feeds, self.config.member_id, themes, today
        )

    async def _publishing(self, interval: float) -> None:
        """Publish every ``interval`` seconds (an import, a repair, an objection, the end
        of a publicity period all show up within it); a failed round is logged and the
        next one tries again."""
        while True:
            try:
                appended = await self.publish()
                if any(appended.values()):
                    log.info("published", extra={"data": {"changes": appended}})
            except CreditExchangeError as exc:
                log.warning("publishing failed", extra={"data": {"error": str(exc)}})
            await asyncio.sleep(interval)

    async def _open_witness(self, ledger: Ledger) -> Witness:
        """The witness, asking through a client of its own that shares the node's ledger."""
        client = open_client(self.config, ledger=ledger)
        await client.__aenter__()
        return Witness(client, ledger, self.metrics)

    def _open_provider(
        self,
        database: Engine,
        catalog: Catalog,
        view: FederationView,
        revocations: RevocationWatcher,
        ledger: Ledger,
    ) -> Provider:
        config, settings = self.config, self.config.settings
        replay = ReplayGuard(database, settings.request_window_s)
        replay.load()
        quotas = QuotaCounter(database)
        signing_key = load_signing_key(config.signing_key_path)
        checks = Checks(
            member_id=config.member_id,
            catalog=catalog,
            federation=view,
            replay=replay,
            revocations=revocations,
            limits=Limits(
                max_message_bytes=settings.max_message_bytes,
                max_batch_subjects=settings.max_batch_subjects,
            ),
            opener=Opener(signing_key),
        )
        return Provider(
            member_id=config.member_id,
            checks=checks,
            decider=Decider(config.member_id, catalog, quotas),
            reader=open_reader(database),
            ledger=ledger,
            quotas=quotas,
            signing_key=signing_key,
            hmac_key=load_hmac_key(config.subject_hmac_key_path),
            metrics=self.metrics,
        )

    async def _listen(
        self, provider: Provider, view: FederationView, ledger: Ledger, tls: NodeCredentials
    ) -> None:
        """Serve the node's services on its address, and its metrics."""
        config, settings = self.config, self.config.settings
        feeds = self.feeds
        assert feeds is not None
        server, health = grpc_server(
            provider,
            view,
            ledger.log,
            max_concurrent_calls=settings.max_concurrent_calls,
            max_message_bytes=settings.max_message_bytes,
            extra_services=[self._add_sync(provider, feeds)],
            extra_service_names=[SYNC_SERVICE],
            reuse_port=self.reuse_port,
        )
        address = f"{settings.grpc_host}:{self.requested_port}"
        try:
            self.port = server.add_secure_port(address, server_credentials(tls))
        except RuntimeError:  # grpcio raises where it used to return 0
            self.port = 0
        if self.port == 0:
            raise ConfigError(
                f"cannot listen on {address}: is grpc_host an address of this machine, and "
                "is the port free?"
            )
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES[:2], SYNC_SERVICE):
            await health.set(name, SERVING)
        if settings.metrics_port:
            self.metrics.serve(settings.metrics_port, settings.metrics_host)
        log.info(
            "serving",
            extra={
                "data": {
                    "member": config.member_id,
                    "address": f"{settings.grpc_host}:{self.port}",
                    "memorandum_version": view.current().version,
                    "metrics_port": settings.metrics_port,
                }
            },
        )

    async def wait(self) -> None:
        """Serve until SIGINT or SIGTERM, or :meth:`stop`."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopped.set)
        await self._stopped.wait()

    def _add_sync(self, provider: Provider, feeds: FeedLog) -> Callable[[Any], object]:
        def add(registrar: Any) -> object:
            self._sync_service = add_sync_service(registrar, provider, feeds)
            return self._sync_service

        return add

    async def stop(self, grace: float = 5.0) -> None:
        self._stopped.set()
        if self._sync_service is not None:
            self._sync_service.close()  # followers' streams end cleanly, not cancelled
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in self._tasks:  # started by the duties while they were cancelled
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.leadership is not None:
            await asyncio.to_thread(self.leadership.release)
            self.leadership = None
        if self._sync_client is not None:
            await self._sync_client.__aexit__(None, None, None)
            self._sync_client = None
        if self._witnessing is not None:
            self._witnessing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._witnessing
            self._witnessing = None
        if self._witness is not None:
            await self._witness.client.__aexit__(None, None, None)
            self._witness = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._provider is not None:
            await self._provider.finish()  # entries of calls cut off by the stop, still due
            self._provider.close()
            self._provider = None
        if self._ledger is not None:
            await self._ledger.close()
            self._ledger = None


async def serve(config: NodeConfig, *, reuse_port: bool = False, lead: bool = True) -> None:
    async with NodeServer(config, reuse_port=reuse_port, lead=lead) as server:
        await server.wait()
