"""``credit-node serve``: the node's gRPC server, with mutual TLS, health, reflection and metrics.

:class:`NodeServer` opens everything a serving node holds — the store, the audit
ledger, the replay guard, the quota counters, the installed memorandum, the
revocation list — starts a ``grpc.aio`` server that requires a client
certificate from the federation CA, and closes them in the reverse order, after
the last queued audit entry is durable.

Bounds: at most ``max_concurrent_calls`` calls are in progress (more are refused
with ``RESOURCE_EXHAUSTED`` by gRPC, using no memory for them); a message larger
than ``max_message_bytes`` is refused and recorded; one larger than four times
that is refused by the transport before it is read.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from creditexchange.certs.credentials import NodeCredentials, load_node_credentials
from creditexchange.certs.revocation import RevocationWatcher
from creditexchange.errors import (
    CertificateError,
    ConfigError,
    CreditExchangeError,
    LedgerError,
)
from creditexchange.node.catalog import load_catalog
from creditexchange.node.config import NodeConfig
from creditexchange.node.exchange.federation import FederationView
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.exchange.provider import Limits, Provider
from creditexchange.node.exchange.replay import ReplayGuard
from creditexchange.node.keys import load_hmac_key, load_signing_key
from creditexchange.node.ledger import open_ledger
from creditexchange.node.ledger.log import Ledger
from creditexchange.node.quotas import QuotaCounter
from creditexchange.node.store import open_store as open_database
from creditexchange.policy.trust import TrustStore
from creditexchange.v1 import exchange_pb2, exchange_pb2_grpc

log = logging.getLogger("node.server")

SERVICE_NAMES = (
    exchange_pb2.DESCRIPTOR.services_by_name["CreditExchange"].full_name,
    exchange_pb2.DESCRIPTOR.services_by_name["Audit"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)


def tls_material(config: NodeConfig) -> NodeCredentials:
    """The node's own certificate, key and CA, cross-checked; a ConfigError says what to fix."""
    hint = (
        f"issue one with 'credit-node certs issue {config.member_id} --ca CA_DIR' and set "
        "tls_cert / tls_key / tls_ca in node.toml"
    )
    try:
        credentials = load_node_credentials(
            config.tls_cert_path, config.tls_key_path, config.tls_ca_path
        )
    except CertificateError as exc:
        raise ConfigError(f"{exc}; {hint}") from None
    if credentials.member != config.member_id:
        raise ConfigError(
            f"{config.tls_cert_path} is the certificate of {credentials.member}, this node is "
            f"{config.member_id}; {hint}"
        )
    return credentials


class _CreditExchange(exchange_pb2_grpc.CreditExchangeServicer):
    def __init__(self, provider: Provider, trust: FederationView) -> None:
        self.provider = provider
        self.view = trust

    async def Query(self, request: Any, context: Any) -> Any:
        return await self.provider.handle("Query", request, context)

    async def Check(self, request: Any, context: Any) -> Any:
        return await self.provider.handle("Check", request, context)

    async def BatchCheck(self, request: Any, context: Any) -> Any:
        return await self.provider.handle("BatchCheck", request, context)

    async def GetMemorandum(self, request: Any, context: Any) -> Any:
        try:
            federation = self.view.current()
            # vN.json never changes once accepted: its bytes match this version and hash
            data = self.view.trust.history_path(federation.version).read_bytes()
        except (CreditExchangeError, OSError) as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return exchange_pb2.GetMemorandumResponse(
            envelope_json=data, version=federation.version, hash=federation.hash
        )


class _Audit(exchange_pb2_grpc.AuditServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.store = ledger.store

    async def GetCheckpoint(self, request: Any, context: Any) -> Any:
        note = await asyncio.to_thread(self.store.latest_checkpoint)
        return exchange_pb2.GetCheckpointResponse(checkpoint=note)

    async def GetInclusionProof(self, request: Any, context: Any) -> Any:
        try:
            note = await asyncio.to_thread(self.store.latest_checkpoint)
            size = request.tree_size or _note_size(note)
            proof = await asyncio.to_thread(self.store.inclusion_proof, request.leaf_index, size)
        except LedgerError as exc:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
        return exchange_pb2.GetInclusionProofResponse(
            leaf_index=request.leaf_index,
            tree_size=size,
            leaf_hash=cast(bytes, proof["leaf_hash"]),
            hashes=cast(list[bytes], proof["proof"]),
            checkpoint=note if not request.tree_size else "",
        )

    async def GetConsistencyProof(self, request: Any, context: Any) -> Any:
        try:
            second = request.second or _note_size(
                await asyncio.to_thread(self.store.latest_checkpoint)
            )
            proof = await asyncio.to_thread(self.store.consistency_proof, request.first, second)
        except LedgerError as exc:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
        return exchange_pb2.GetConsistencyProofResponse(
            first=request.first, second=second, hashes=cast(list[bytes], proof["proof"])
        )


def _note_size(note: str) -> int:
    return int(note.split("\n", 2)[1])


class NodeServer:
    """A serving node; ``async with NodeServer(config) as server: await server.wait()``."""

    def __init__(self, config: NodeConfig, *, port: int | None = None) -> None:
        self.config = config
        self.requested_port = config.settings.grpc_port if port is None else port
        self.port = 0
        self.metrics = Metrics()
        self._server: grpc.aio.Server | None = None
        self._ledger: Ledger | None = None
        self._provider: Provider | None = None
        self._stopped = asyncio.Event()

    @property
    def ledger(self) -> Ledger:
        """The running node's audit ledger (its one appender)."""
        if self._ledger is None:
            raise CreditExchangeError("the node is not running")
        return self._ledger

    async def __aenter__(self) -> NodeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        config, settings = self.config, self.config.settings
        tls = tls_material(config)
        catalog = load_catalog(config.catalog_path)
        database = open_database(config.database_url)
        view = FederationView(TrustStore(config.policy_dir), catalog, config.member_id)
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
        replay = ReplayGuard(database, settings.request_window_s)
        replay.load()
        self._provider = provider = Provider(
            member_id=config.member_id,
            database=database,
            catalog=catalog,
            federation=view,
            ledger=self._ledger,
            replay=replay,
            quotas=QuotaCounter(database),
            revocations=revocations,
            signing_key=load_signing_key(config.signing_key_path),
            hmac_key=load_hmac_key(config.subject_hmac_key_path),
            metrics=self.metrics,
            limits=Limits(
                max_message_bytes=settings.max_message_bytes,
                max_batch_subjects=settings.max_batch_subjects,
            ),
        )
        server = grpc.aio.server(
            maximum_concurrent_rpcs=settings.max_concurrent_calls,
            options=[
                ("grpc.max_receive_message_length", 4 * settings.max_message_bytes),
                ("grpc.max_send_message_length", 64 << 20),
            ],
        )
        exchange_pb2_grpc.add_CreditExchangeServicer_to_server(
            _CreditExchange(provider, view), server
        )
        exchange_pb2_grpc.add_AuditServicer_to_server(_Audit(self._ledger), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(SERVICE_NAMES, server)
        credentials = grpc.ssl_server_credentials(
            [(tls.private_key_pem, tls.certificate_pem)],
            root_certificates=tls.ca_pem,
            require_client_auth=True,
        )
        address = f"{settings.grpc_host}:{self.requested_port}"
        self.port = server.add_secure_port(address, credentials)
        if self.port == 0:
            raise ConfigError(f"cannot listen on {address}: is another process using the port?")
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES[:2]):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
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

    async def stop(self, grace: float = 5.0) -> None:
        self._stopped.set()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._provider is not None:
            self._provider.close()
            self._provider = None
        if self._ledger is not None:
            await self._ledger.close()
            self._ledger = None


async def serve(config: NodeConfig) -> None:
    async with NodeServer(config) as server:
        await server.wait()
