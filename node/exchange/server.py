"""The node's gRPC services: ``CreditExchange`` (signed queries, the memorandum) and
``Audit`` (checkpoints and proofs), with health checking and reflection, behind
mutual TLS and one gate.

:func:`grpc_server` assembles a ``grpc.aio`` server around a running provider and
audit log; opening those from a node's configuration is the application's wiring
(``creditexchange.node.app.server.NodeServer``).

Every method of every service is behind the gate (:class:`_Gate`):

* **Admission.** At most ``max_concurrent_calls`` unary calls are in progress; one
  more is refused with ``RESOURCE_EXHAUSTED`` at once. Streams (health ``Watch``,
  reflection), which may stay open for as long as their caller likes, do not take
  those slots: each client certificate may hold at most
  :data:`MAX_STREAMS_PER_PEER` open at once, and all together at most
  ``max_concurrent_calls`` or 64, whichever is more. A refusal for load is counted
  (``credit_node_refusals_total{reason="overload"}``) and logged at most once a
  second, not recorded in the ledger: recording it would itself be the overload.
* **Who calls.** The signed methods run the provider's checks (``checks``). Every
  other method — ``GetMemorandum``, the ``Audit`` service, health, reflection —
  answers only a member of the memorandum with an unrevoked certificate; a
  refusal is recorded (kind ``SERVICE_CALL``) and signed like any other.
  ``Audit.ListEntries`` (reconciliation) lists a member only the entries about
  itself, and records every call it answers too, with the range asked
  (``ledger.listing.entries_about`` selects the entries, for this node's own side as well).
* **Bytes that do not decode** are refused with ``INVALID_ARGUMENT`` and recorded,
  never answered ``UNKNOWN``: the gate takes every unary request as bytes and
  decodes it itself.

Bounds: a message larger than ``max_message_bytes`` is refused and recorded by
the provider; one larger than four times that is refused by the transport
before it is read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from creditexchange.certs.credentials import NodeCredentials
from creditexchange.certs.identity import PeerCertificate
from creditexchange.clock import CST, now_us
from creditexchange.errors import CreditExchangeError, LedgerError, NoteError, Refused
from creditexchange.node.exchange.federation import FederationView
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.exchange.protocol import METHODS, status_of
from creditexchange.node.exchange.provider import Provider
from creditexchange.node.ledger import AuditLog
from creditexchange.node.ledger.cosignature import Cosignature, CosignatureVerifier, witness_name
from creditexchange.node.ledger.listing import entries_about
from creditexchange.node.ledger.note import sign_note
from creditexchange.node.ledger.witnessing import (
    MADE,
    RECEIVED,
    WITNESSED,
    HeldCosignature,
    own_checkpoint,
)
from creditexchange.v1 import audit_pb2, exchange_pb2, exchange_pb2_grpc

__all__ = [
    "MAX_STREAMS_PER_PEER",
    "SERVICE_NAMES",
    "SERVING",
    "grpc_server",
    "server_credentials",
]

log = logging.getLogger("node.exchange")

_EXCHANGE = exchange_pb2.DESCRIPTOR.services_by_name["CreditExchange"].full_name
_AUDIT = exchange_pb2.DESCRIPTOR.services_by_name["Audit"].full_name

SERVICE_NAMES = (_EXCHANGE, _AUDIT, health.SERVICE_NAME, reflection.SERVICE_NAME)

_SIGNED_PATHS = frozenset(f"/{_EXCHANGE}/{name}" for name in METHODS)

MAX_STREAMS_PER_PEER = 4
"""Streams one client certificate may hold open at once (health watches, reflection)."""


class _Gate:
    """Admission and the caller checks, around every method handler of the server."""

    def __init__(self, provider: Provider, metrics: Metrics, max_calls: int) -> None:
        self.provider = provider
        self.metrics = metrics
        self.max_calls = max_calls
        self.in_flight = 0
        self.streams: dict[bytes, int] = {}  # client certificate (PEM) -> streams it holds
        self._overload_logged = 0.0
        self._overloaded_since_log = 0

    async def _overloaded(self, context: Any, message: str) -> None:
        self.metrics.refusals.labels("overload").inc()
        self._overloaded_since_log += 1
        now = time.monotonic()
        if now - self._overload_logged >= 1.0:
            log.warning(
                "overloaded: calls refused",
                extra={"data": {"refused": self._overloaded_since_log, "limit": self.max_calls}},
            )
            self._overload_logged, self._overloaded_since_log = now, 0
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    async def _enter(self, context: Any) -> None:
        if self.in_flight >= self.max_calls:
            await self._overloaded(
                context,
                f"this node is answering its limit of {self.max_calls} calls at once; "
                "try again shortly",
            )
        self.in_flight += 1

    async def _open_stream(self, context: Any) -> bytes:
        """Take a stream slot of the caller's certificate; its key, to give it back."""
        pem = list(context.auth_context().get("x509_pem_cert", ()))
        key = pem[0] if pem else b""
        held = self.streams.get(key, 0)
        if held >= MAX_STREAMS_PER_PEER:
            await self._overloaded(
                context,
                f"this certificate holds {held} streams open already, the most one caller may; "
                "close one first",
            )
        limit = max(self.max_calls, 64)
        if sum(self.streams.values()) >= limit:
            await self._overloaded(context, f"this node holds its limit of {limit} streams open")
        self.streams[key] = held + 1
        return key

    def _close_stream(self, key: bytes) -> None:
        left = self.streams.get(key, 0) - 1
        if left > 0:
            self.streams[key] = left
        else:
            self.streams.pop(key, None)

    async def _admit(self, method: str, raw: bytes, context: Any) -> None:
        await self.provider.admit_side_call(method, raw, context)

    async def _decode(
        self, method: str, raw: bytes, decode: Callable[[bytes], Any] | None, context: Any
    ) -> Any:
        if decode is None:
            return raw
        try:
            return decode(raw)
        except Exception:
            refusal = Refused(
                "INVALID_ARGUMENT",
                f"the request of {method} does not decode: send the message the method takes",
                "malformed",
            )
            await self.provider.refuse_side_call(method, raw, refusal, context)

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` behind the gate; unary requests are taken as bytes and decoded here."""
        decode = handler.request_deserializer
        serialize = handler.response_serializer
        if handler.unary_unary is not None and method in _SIGNED_PATHS:
            inner_signed: Any = handler.unary_unary

            async def signed(raw: bytes, context: Any) -> Any:
                # the query path: admission only; the provider checks the caller itself
                if self.in_flight >= self.max_calls:
                    await self._enter(context)  # refuses, counted
                self.in_flight += 1
                try:
                    return await inner_signed(raw, context)
                finally:
                    self.in_flight -= 1

            return grpc.unary_unary_rpc_method_handler(signed)
        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(raw: bytes, context: Any) -> Any:
                await self._enter(context)
                try:
                    await self._admit(method, raw, context)
                    request = await self._decode(method, raw, decode, context)
                    return await inner_uu(request, context)
                finally:
                    self.in_flight -= 1

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=None, response_serializer=serialize
            )
        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream
            if inspect.isasyncgenfunction(inner_us):

                async def unary_stream_gen(raw: bytes, context: Any) -> Any:
                    slot = await self._open_stream(context)
                    try:
                        await self._admit(method, raw, context)
                        request = await self._decode(method, raw, decode, context)
                        async for response in inner_us(request, context):
                            yield response
                    finally:
                        self._close_stream(slot)

                behavior: Any = unary_stream_gen
            else:

                async def unary_stream(raw: bytes, context: Any) -> Any:
                    slot = await self._open_stream(context)
                    try:
                        await self._admit(method, raw, context)
                        request = await self._decode(method, raw, decode, context)
                        return await inner_us(request, context)
                    finally:
                        self._close_stream(slot)

                behavior = unary_stream
            return grpc.unary_stream_rpc_method_handler(
                behavior, request_deserializer=None, response_serializer=serialize
            )
        if handler.stream_stream is not None:  # reflection: its requests decode in grpc
            inner_ss: Any = handler.stream_stream

            async def stream_stream(requests: Any, context: Any) -> Any:
                slot = await self._open_stream(context)
                try:
                    await self._admit(method, b"", context)
                    async for response in inner_ss(requests, context):
                        yield response
                finally:
                    self._close_stream(slot)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, request_deserializer=decode, response_serializer=serialize
            )
        raise CreditExchangeError(f"{method}: client-streaming methods are not served")


class _GuardedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, gate: _Gate) -> None:
        self.inner = inner
        self.gate = gate

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self.inner.service(details)
        return None if handler is None else self.gate.wrap(details.method, handler)


class _Registrar:
    """The server as the generated ``add_…_to_server`` functions see it: every handler
    they add goes behind the gate."""

    def __init__(self, server: grpc.aio.Server, gate: _Gate) -> None:
        self.server = server
        self.gate = gate

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(tuple(_GuardedGeneric(h, self.gate) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.server.add_registered_method_handlers(
            service,
            {name: self.gate.wrap(f"/{service}/{name}", h) for name, h in handlers.items()},
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
        except (CreditExchangeError, OSError) as exc:
            status = "FAILED_PRECONDITION"
            if isinstance(exc, CreditExchangeError):
                status = status_of(exc)
            await _refuse(self.provider, "GetMemorandum", request, status, str(exc), context)
        return exchange_pb2.GetMemorandumResponse(
            envelope_json=data, version=federation.version, hash=federation.hash
        )


async def _refuse(
    provider: Provider, method: str, request: Any, status: str, message: str, context: Any
) -> None:
    refusal = Refused(status, message, "memorandum" if method == "GetMemorandum" else "malformed")
    await provider.refuse_side_call(method, request.SerializeToString(), refusal, context)


class _Audit(exchange_pb2_grpc.AuditServicer):
    def __init__(self, provider: Provider, log: AuditLog) -> None:
        self.provider = provider
        self.log = log
        self.cosignatures = provider.cosignatures  # the witnesses', on this node's checkpoints

    async def _answer(
        self, method: str, request: Any, context: Any, work: Callable[[], Any]
    ) -> Any:
        try:
            return await asyncio.to_thread(work)
        except LedgerError as exc:
            await _refuse(self.provider, method, request, status_of(exc), str(exc), context)

    async def GetCheckpoint(self, request: Any, context: Any) -> Any:
        note = await asyncio.to_thread(self.log.latest_checkpoint)
        return exchange_pb2.GetCheckpointResponse(
            checkpoint=note, cosignatures=self.cosignatures.lines_for(note)
        )

    async def GetInclusionProof(self, request: Any, context: Any) -> Any:
        def work() -> Any:
            note = self.log.latest_checkpoint()
            size = request.tree_size or _note_size(note)
            proof = self.log.inclusion_proof(request.leaf_index, size)
            return exchange_pb2.GetInclusionProofResponse(
                leaf_index=request.leaf_index,
                tree_size=size,
                leaf_hash=proof["leaf_hash"],
                hashes=proof["proof"],
                checkpoint=note if not request.tree_size else "",
                cosignatures=self.cosignatures.lines_for(note) if not request.tree_size else (),
            )

        return await self._answer("GetInclusionProof", request, context, work)

    async def GetConsistencyProof(self, request: Any, context: Any) -> Any:
        def work() -> Any:
            second = request.second or _note_size(self.log.latest_checkpoint())
            proof = self.log.consistency_proof(request.first, second)
            return exchange_pb2.GetConsistencyProofResponse(
                first=request.first, second=second, hashes=proof["proof"]
            )

        return await self._answer("GetConsistencyProof", request, context, work)

    async def ListEntries(self, request: Any, context: Any) -> Any:
        """The entries about the caller in a time range, a page at a time, each with its
        inclusion proof in the latest checkpoint. Only the caller's own: ``counterpart``
        must be the TLS peer. Every call is recorded, the allowed ones with the range and
        what was listed, the refused ones as every side service's refusals are."""
        method, raw = _LIST_ENTRIES, request.SerializeToString()
        try:
            peer = self.provider.checks.peer(context)  # admitted: a member, not revoked
            start = _listing_request(request, peer.member)
        except Refused as refusal:
            await self.provider.refuse_side_call(method, raw, refusal, context)
        counterpart = request.counterpart
        from_us, to_us = request.from_unix_micros, request.to_unix_micros

        def work() -> exchange_pb2.ListEntriesResponse:
            note = self.log.latest_checkpoint()
            size = _note_size(note)
            if start is not None and start > size:
                raise LedgerError(
                    f"the page token {request.page_token!r} is past this log's {size} entries: "
                    "it is not one this node gave; start again with an empty token"
                )
            listing = entries_about(self.log, counterpart, from_us, to_us, start, size)
            listed = []
            for stored in listing.entries:
                proof = self.log.inclusion_proof(stored.index, size)["proof"]
                listed.append(
                    exchange_pb2.ListedEntry(
                        leaf_index=stored.index,
                        leaf_hash=stored.leaf_hash,
                        entry=stored.body or b"",
                        pruned=stored.body is None,
                        inclusion_proof=proof,
                    )
                )
            return exchange_pb2.ListEntriesResponse(
                checkpoint=note,
                entries=listed,
                next_page_token="" if listing.next_index is None else str(listing.next_index),
                pruned_before_unix_micros=listing.pruned_before_us,
            )

        response = await self._answer("ListEntries", request, context, work)
        indexes = [e.leaf_index for e in response.entries]
        span = f"indexes {indexes[0]}-{indexes[-1]}" if indexes else "none"
        what = (
            f"listed {len(indexes)} entries about {counterpart} recorded from "
            f"{_china_time(from_us)} to {_china_time(to_us)} ({span}; tree size "
            f"{_note_size(response.checkpoint)}, page token {request.page_token or 'first'!r})"
        )
        await self._record_allowed(method, raw, peer, what, context)
        return response

    async def AddCosignature(self, request: Any, context: Any) -> Any:
        """Keep a witness's cosignature on one of this node's checkpoints: the checkpoint
        must be this log's as it stands, the cosignature the caller's (its memorandum key,
        its witness name), not dated in the future. A refusal is recorded; an accepted
        cosignature is not (an entry would move the log past the checkpoint cosigned)."""
        method = "AddCosignature"
        raw = request.SerializeToString()
        try:
            peer = self.provider.checks.peer(context)  # admitted: a member, not revoked
            federation = self.provider.checks.federation()
            cosignature = Cosignature.parse(request.cosignature)
        except Refused as refusal:
            await self.provider.refuse_side_call(method, raw, refusal, context)
        except NoteError as exc:
            await _refuse(self.provider, method, request, "INVALID_ARGUMENT", str(exc), context)
        try:
            checkpoint = await asyncio.to_thread(own_checkpoint, self.log, request.checkpoint)
        except NoteError as exc:
            message = f"the checkpoint is not one this node signed: {exc}"
            await _refuse(self.provider, method, request, "INVALID_ARGUMENT", message, context)
        except LedgerError as exc:
            await _refuse(self.provider, method, request, "FAILED_PRECONDITION", str(exc), context)
        # the note as this node signs it (Ed25519 is deterministic), not as the caller sent
        # it: extra lines cannot make a checkpoint of its own and crowd out the rest
        own_note = sign_note(checkpoint.body(), self.log.signer)
        if self.cosignatures.holds(own_note, peer.member):
            return exchange_pb2.AddCosignatureResponse()  # already held: no work, no write
        name = witness_name(peer.member, federation.memorandum.federation)
        verifiers = [
            CosignatureVerifier.for_key(name, bytes(key))
            for key in federation.keys.get(peer.member, {}).values()
        ]
        problem = _cosignature_problem(
            cosignature, checkpoint.body(), name, verifiers, self.provider.checks.replay.window_us
        )
        if problem:
            await self.provider.refuse_side_call(
                method, raw, Refused("UNAUTHENTICATED", problem, "signature"), context
            )
        held = HeldCosignature(
            role=RECEIVED,
            member=peer.member,
            origin=checkpoint.origin,
            size=checkpoint.size,
            root_hash=checkpoint.root_hash,
            note=own_note,
            line=cosignature.line(),
            timestamp=cosignature.timestamp,
            recorded_us=now_us(),
        )
        await asyncio.to_thread(self.cosignatures.keep, held)
        return exchange_pb2.AddCosignatureResponse()

    async def GetWitnessed(self, request: Any, context: Any) -> Any:
        """What this node's witness last verified of ``member``'s log, with its cosignature."""

        def work() -> Any:
            records = self.cosignatures.records
            seen = records.seen(request.member, WITNESSED)
            if seen is None:
                return exchange_pb2.GetWitnessedResponse()
            made = [
                c for c in records.cosignatures(MADE) if c.member == request.member
            ]  # at most one: the latest per member
            line = made[0].line if made and made[0].note == seen.note else ""
            return exchange_pb2.GetWitnessedResponse(checkpoint=seen.note, cosignature=line)

        return await self._answer("GetWitnessed", request, context, work)

    async def _record_allowed(
        self, method: str, raw: bytes, peer: PeerCertificate, what: str, context: Any
    ) -> None:
        """Record an answered side call, durably, before it is answered."""
        outcome = audit_pb2.Outcome(status="OK", message=what)
        await self.provider.record_side_call(method, raw, peer, outcome, context)


def _cosignature_problem(
    cosignature: Cosignature,
    body: str,
    name: str,
    verifiers: list[CosignatureVerifier],
    window_us: int,
) -> str:
    """Why ``cosignature`` on ``body`` is not the caller's, or the empty string."""
    if cosignature.name != name:
        return (
            f"the cosignature is signed as {cosignature.name!r}; the caller witnesses as "
            f"{name!r}: cosign under that name"
        )
    verifier = next((v for v in verifiers if v.signed(cosignature)), None)
    if verifier is None:
        return (
            f"the cosignature's key id {cosignature.key_id.hex()} is not that of a key the "
            f"memorandum lists for the caller under {name!r}"
        )
    try:
        verifier.verify(body, cosignature)
    except NoteError as exc:
        return str(exc)
    ahead = cosignature.timestamp * 1_000_000 - now_us()
    if ahead > window_us:
        return (
            f"the cosignature is dated {ahead // 1_000_000} s in the future; this node accepts "
            f"{window_us // 1_000_000} s: check the witness's clock (NTP)"
        )
    return ""


def _note_size(note: str) -> int:
    return int(note.split("\n", 2)[1])


# --- the entries about a counterpart (ListEntries, and reconciliation's own side) ---------

_LIST_ENTRIES = f"/{_AUDIT}/ListEntries"


def _listing_request(request: exchange_pb2.ListEntriesRequest, caller: str) -> int | None:
    """Where a ListEntries page starts (None: the first page); Refused when the caller asks
    for another member's entries or the request makes no sense."""
    if request.counterpart != caller:
        raise Refused(
            "PERMISSION_DENIED",
            f"{caller} asked for the entries about {request.counterpart or '(nobody)'}: a member "
            "may list only the entries about itself (counterpart = its own member id); "
            f"{request.counterpart or 'the other member'} can reconcile with this node itself",
            "policy",
        )
    if not 0 < request.from_unix_micros < request.to_unix_micros:
        raise Refused(
            "INVALID_ARGUMENT",
            f"the range {request.from_unix_micros} to {request.to_unix_micros} is empty or "
            "negative: from_unix_micros must be positive and before to_unix_micros",
            "malformed",
        )
    token = request.page_token
    if not token:
        return None
    if not (token.isascii() and token.isdigit()) or len(token) > 19:
        raise Refused(
            "INVALID_ARGUMENT",
            f"the page token {token[:40]!r} is not one this node gave: send the "
            "next_page_token of the previous page, or none for the first",
            "malformed",
        )
    return int(token)


def _china_time(time_us: int) -> str:
    return dt.datetime.fromtimestamp(time_us / 1e6, CST).isoformat(timespec="seconds")


def grpc_server(
    provider: Provider,
    view: FederationView,
    log: AuditLog,
    *,
    max_concurrent_calls: int,
    max_message_bytes: int,
    extra_services: Sequence[Callable[[Any], object]] = (),
    extra_service_names: Sequence[str] = (),
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The node's services on a new server, behind the gate, and its health servicer
    (not yet SERVING). ``extra_services`` add services of the layers above (the change
    feeds' ``Sync``) to the gate's registrar, so they are admitted like every other;
    ``extra_service_names`` are their names for reflection. With ``reuse_port`` several
    processes listen on one port (SO_REUSEPORT; the kernel spreads the connections);
    without it a port another server holds is refused."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * max_message_bytes),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    registrar: Any = _Registrar(server, _Gate(provider, provider.metrics, max_concurrent_calls))
    exchange_pb2_grpc.add_CreditExchangeServicer_to_server(
        _CreditExchange(provider, view), registrar
    )
    exchange_pb2_grpc.add_AuditServicer_to_server(_Audit(provider, log), registrar)
    for add in extra_services:
        add(registrar)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer((*SERVICE_NAMES, *extra_service_names)), registrar
    )
    return server, health_servicer


def server_credentials(tls: NodeCredentials) -> grpc.ServerCredentials:
    """Mutual TLS: this node's certificate, and a client certificate of the CA required."""
    return grpc.ssl_server_credentials(
        [(tls.private_key_pem, tls.certificate_pem)],
        root_certificates=tls.ca_pem,
        require_client_auth=True,
    )


SERVING = health_pb2.HealthCheckResponse.SERVING
