"""The node's gRPC services: ``CreditExchange`` (signed queries, the memorandum) and
``Audit`` (checkpoints and proofs), with health checking and reflection, behind
mutual TLS.

:func:`grpc_server` assembles a ``grpc.aio`` server around a running provider and
audit log; opening those from a node's configuration is the application's wiring
(``creditexchange.node.app.server.NodeServer``).

Bounds: at most ``max_concurrent_calls`` calls are in progress (more are refused
with ``RESOURCE_EXHAUSTED`` by gRPC, using no memory for them); a message larger
than ``max_message_bytes`` is refused and recorded by the provider; one larger than
four times that is refused by the transport before it is read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from creditexchange.certs.credentials import NodeCredentials
from creditexchange.errors import CreditExchangeError, LedgerError
from creditexchange.node.exchange.federation import FederationView
from creditexchange.node.exchange.protocol import grpc_code, status_of
from creditexchange.node.exchange.provider import Provider
from creditexchange.node.ledger import AuditLog
from creditexchange.v1 import exchange_pb2, exchange_pb2_grpc

__all__ = ["SERVICE_NAMES", "SERVING", "grpc_server", "server_credentials"]

SERVICE_NAMES = (
    exchange_pb2.DESCRIPTOR.services_by_name["CreditExchange"].full_name,
    exchange_pb2.DESCRIPTOR.services_by_name["Audit"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)


class _CreditExchange(exchange_pb2_grpc.CreditExchangeServicer):
    def __init__(self, provider: Provider, view: FederationView) -> None:
        self.provider = provider
        self.view = view

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
        except CreditExchangeError as exc:
            await context.abort(grpc_code(status_of(exc)), str(exc))
        except OSError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return exchange_pb2.GetMemorandumResponse(
            envelope_json=data, version=federation.version, hash=federation.hash
        )


class _Audit(exchange_pb2_grpc.AuditServicer):
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def GetCheckpoint(self, request: Any, context: Any) -> Any:
        note = await asyncio.to_thread(self.log.latest_checkpoint)
        return exchange_pb2.GetCheckpointResponse(checkpoint=note)

    async def GetInclusionProof(self, request: Any, context: Any) -> Any:
        try:
            note = await asyncio.to_thread(self.log.latest_checkpoint)
            size = request.tree_size or _note_size(note)
            proof = await asyncio.to_thread(self.log.inclusion_proof, request.leaf_index, size)
        except LedgerError as exc:
            await context.abort(grpc_code(status_of(exc)), str(exc))
        return exchange_pb2.GetInclusionProofResponse(
            leaf_index=request.leaf_index,
            tree_size=size,
            leaf_hash=proof["leaf_hash"],
            hashes=proof["proof"],
            checkpoint=note if not request.tree_size else "",
        )

    async def GetConsistencyProof(self, request: Any, context: Any) -> Any:
        try:
            second = request.second or _note_size(
                await asyncio.to_thread(self.log.latest_checkpoint)
            )
            proof = await asyncio.to_thread(self.log.consistency_proof, request.first, second)
        except LedgerError as exc:
            await context.abort(grpc_code(status_of(exc)), str(exc))
        return exchange_pb2.GetConsistencyProofResponse(
            first=request.first, second=second, hashes=proof["proof"]
        )


def _note_size(note: str) -> int:
    return int(note.split("\n", 2)[1])


def grpc_server(
    provider: Provider,
    view: FederationView,
    log: AuditLog,
    *,
    max_concurrent_calls: int,
    max_message_bytes: int,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The node's services on a new server, and its health servicer (not yet SERVING)."""
    server = grpc.aio.server(
        maximum_concurrent_rpcs=max_concurrent_calls,
        options=[
            ("grpc.max_receive_message_length", 4 * max_message_bytes),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    exchange_pb2_grpc.add_CreditExchangeServicer_to_server(_CreditExchange(provider, view), server)
    exchange_pb2_grpc.add_AuditServicer_to_server(_Audit(log), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    return server, health_servicer


def server_credentials(tls: NodeCredentials) -> grpc.ServerCredentials:
    """Mutual TLS: this node's certificate, and a client certificate of the CA required."""
    return grpc.ssl_server_credentials(
        [(tls.private_key_pem, tls.certificate_pem)],
        root_certificates=tls.ca_pem,
        require_client_auth=True,
    )


SERVING = health_pb2.HealthCheckResponse.SERVING
