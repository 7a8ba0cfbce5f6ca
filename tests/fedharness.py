"""A real federation on loopback for the tests: provisioned nodes, real gRPC servers.

The servers run in one event loop on a background thread; tests hand it
coroutines with :meth:`Federation.run`. Raw calls (:meth:`Federation.raw`) let
a test send exactly the envelope it crafted, with exactly the certificate it
chose, to see how a provider refuses it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import nacl.signing
from ports import free_ports

from creditexchange.certs.identity import member_dns_name
from creditexchange.clock import now_us
from creditexchange.devtools.provision import ProvisionedNode, provision
from creditexchange.node.app.keys import load_signing_key
from creditexchange.node.app.server import NodeServer
from creditexchange.node.app.wiring import federation_view, open_client
from creditexchange.node.app.wiring import open_audit_log as open_ledger_store
from creditexchange.node.database import open_database
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.envelope import seal
from creditexchange.node.exchange.federation import FederationView
from creditexchange.node.exchange.sealing import seal_request
from creditexchange.node.ledger.entries import decode
from creditexchange.v1 import audit_pb2, exchange_pb2

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Federation:
    def __init__(
        self,
        root: Path,
        members: tuple[str, ...],
        database_urls: dict[str, str],
        subjects: int = 80,
    ) -> None:
        self.root = root
        self.nodes: dict[str, ProvisionedNode] = provision(
            root,
            members=members,
            ports=free_ports(len(members)),
            database_urls=database_urls,
            subjects=subjects,
        )
        self.loop = LoopThread()
        self.servers: dict[str, NodeServer] = {}
        self.clients: dict[str, FederationClient] = {}
        self.views: dict[str, FederationView] = {}
        for member in members:
            self.start(member)

    # -- lifecycle ------------------------------------------------------------------

    def start(self, member: str) -> None:
        server = NodeServer(self.nodes[member].config)
        self.loop.run(server.start())
        self.servers[member] = server

    def stop(self, member: str) -> None:
        client = self.clients.pop(member, None)
        if client is not None:
            self.loop.run(client.__aexit__(None, None, None))
        self.loop.run(self.servers.pop(member).stop(0))

    def restart(self, member: str) -> None:
        self.stop(member)
        self.start(member)

    def close(self) -> None:
        for member in list(self.servers):
            self.stop(member)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.loop.run(coro, timeout)

    # -- asking as a member ----------------------------------------------------------

    def client(self, member: str) -> FederationClient:
        """A member's client, sharing its running server's ledger (one writer per node)."""
        client = self.clients.get(member)
        if client is None:
            server = self.servers[member]
            client = open_client(self.nodes[member].config, ledger=server.ledger)
            self.loop.run(client.__aenter__())
            self.clients[member] = client
        return client

    def ask(self, requester: str, subject: str, **kwargs: Any) -> Any:
        return self.run(self.client(requester).query(subject, **kwargs))

    # -- crafting calls ----------------------------------------------------------------

    def signing_key(self, member: str) -> nacl.signing.SigningKey:
        return load_signing_key(self.nodes[member].config.signing_key_path)

    def header(self, requester: str, provider: str, **overrides: Any) -> exchange_pb2.RequestHeader:
        values: dict[str, Any] = {
            "requester": requester,
            "provider": provider,
            "nonce": os.urandom(32),
            "created_unix_micros": now_us(),
            "memorandum_version": 1,
            "purpose": "public_procurement",
            "legal_basis": "政府采购法第二十二条",
            "case_reference": "CG-2026-0001",
            "officer": "officer-7",
        }
        values.update(overrides)
        return exchange_pb2.RequestHeader(**values)

    def envelope(self, payload_type: str, payload: bytes, signer: str) -> exchange_pb2.Envelope:
        return seal(payload_type, payload, self.signing_key(signer))

    def credentials(self, member: str, cert: Path | None = None, key: Path | None = None) -> Any:
        tls = self.nodes[member].home / "tls"
        return grpc.ssl_channel_credentials(
            root_certificates=(tls / "ca.crt").read_bytes(),
            private_key=(key or tls / "node.key").read_bytes(),
            certificate_chain=(cert or tls / "node.crt").read_bytes(),
        )

    def sealed(self, envelope: exchange_pb2.Envelope, to: str) -> exchange_pb2.SealedRequest:
        """``envelope`` sealed to the keys the memorandum lists for ``to``."""
        view = self.views.get(to)
        if view is None:
            view = self.views[to] = federation_view(self.nodes[to].config)
        return seal_request(envelope, view.current().keys[to])

    def raw(
        self,
        provider: str,
        method: str,
        envelope: exchange_pb2.Envelope | exchange_pb2.SealedRequest | bytes,
        credentials: Any,
        timeout: float = 10,
    ) -> tuple[exchange_pb2.Envelope | None, grpc.aio.AioRpcError | None]:
        """Send ``envelope`` sealed to ``provider`` (a SealedRequest or bytes as they are);
        (answer, None) or (None, the error)."""
        request: Any = envelope
        if isinstance(envelope, exchange_pb2.Envelope):
            request = self.sealed(envelope, provider)
        raw_request = request if isinstance(request, bytes) else request.SerializeToString()

        async def call() -> Any:
            target = f"127.0.0.1:{self.nodes[provider].port}"
            async with grpc.aio.secure_channel(
                target,
                credentials,
                options=[
                    ("grpc.ssl_target_name_override", member_dns_name(provider)),
                    ("grpc.max_metadata_size", 1 << 20),
                ],
            ) as channel:
                call: Any = channel.unary_unary(
                    f"/creditexchange.v1.CreditExchange/{method}",
                    request_serializer=None,
                    response_deserializer=exchange_pb2.Envelope.FromString,
                )
                try:
                    return await call(raw_request, timeout=timeout), None
                except grpc.aio.AioRpcError as exc:
                    return None, exc

        result: tuple[exchange_pb2.Envelope | None, grpc.aio.AioRpcError | None] = self.run(call())
        return result

    # -- reading a node's ledger --------------------------------------------------------

    def ledger_entries(self, member: str, last: int = 1) -> list[dict[str, Any]]:
        config = self.nodes[member].config
        database = open_database(config.database_url)
        try:
            store = open_ledger_store(config, database)
            size = store.size()
            return [decode(e.body) for e in store.entries(max(0, size - last), size) if e.body]
        finally:
            database.dispose()

    def entry_at(self, member: str, index: int) -> audit_pb2.AuditEntry:
        config = self.nodes[member].config
        database = open_database(config.database_url)
        try:
            store = open_ledger_store(config, database)
            (stored,) = list(store.entries(index, index + 1))
            entry = audit_pb2.AuditEntry()
            assert stored.body is not None
            entry.ParseFromString(stored.body)
            return entry
        finally:
            database.dispose()
