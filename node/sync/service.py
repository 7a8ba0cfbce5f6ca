"""The ``Sync`` gRPC service: a publisher's feeds served page by page, on the record.

``Pull`` answers one page of a feed from the subscriber's cursor; ``Follow``
streams pages until the subscriber has caught up, then each new change as it
is published (the head is looked at every ``poll_interval`` seconds, so a
change published by another process is seen as soon as one published by this
one), until the subscriber cancels.

Invariants this module keeps:

* **Who asks is its certificate.** The subscriber is the member named by its
  mutual-TLS certificate (``Checks.peer``), a member of the memorandum in force
  with an unrevoked certificate (``Checks.member``, ``Checks.revocation``; the
  gate of ``exchange.server`` runs the same checks first when the service sits
  behind it, so the service is safe on a server of its own too). A request
  never names its subscriber.
* **The memorandum decides.** A page is served only while
  ``PolicyEngine.may_sync(subscriber, this node, theme, today)`` names a feed in
  force; that is asked again before every page of a ``Follow``, so a memorandum
  that ends a feed ends its streams too. A theme this node publishes to nobody
  is ``NOT_FOUND``; one it publishes but not to this subscriber
  ``PERMISSION_DENIED``; a cursor beyond the feed's head ``OUT_OF_RANGE``.
* **Every page proves itself.** A batch holds the leaves ``start .. start+n-1``,
  the feed's checkpoint signed for exactly size ``start + n`` (the stored head,
  or one signed on demand for an earlier size: ``FeedLog.checkpoint``), and the
  RFC 9162 consistency proof from ``start`` (the subscriber's verified size) to
  it, empty when ``start`` is 0. A page holds at most :data:`MAX_PAGE_CHANGES`
  changes and :data:`MAX_PAGE_BYTES` bytes of them (at least one change when any
  is due), so it stays under gRPC's default 4 MiB message limit.
* **Nothing leaves off the record.** Every batch served — empty ones too — and
  every refusal is an entry of this node's audit ledger (kind ``SYNC``, direction
  ``INCOMING``, requester the subscriber, the theme, the range served and the
  checkpoint size in its note), durable before the batch is sent. A refusal's
  entry index travels in the ``protocol.LEAF_INDEX_TRAILER`` trailer. Refusals
  beyond the provider's refusal budget are not recorded (as for every service).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from creditexchange.certs.identity import PeerCertificate
from creditexchange.clock import china_today, now_us
from creditexchange.errors import CreditExchangeError, LedgerError, Refused
from creditexchange.node.exchange.checks import Checks, Context
from creditexchange.node.exchange.federation import Federation
from creditexchange.node.exchange.protocol import LEAF_INDEX_TRAILER, grpc_code
from creditexchange.node.exchange.provider import Provider, RefusalBudget
from creditexchange.node.ledger import Ledger
from creditexchange.node.ledger.entries import encode
from creditexchange.node.sync.feed import FeedLog
from creditexchange.v1 import audit_pb2, sync_pb2, sync_pb2_grpc

__all__ = [
    "MAX_PAGE_BYTES",
    "MAX_PAGE_CHANGES",
    "POLL_INTERVAL",
    "SERVICE_NAME",
    "SyncService",
    "add_sync_service",
]

log = logging.getLogger("node.sync")

SERVICE_NAME = sync_pb2.DESCRIPTOR.services_by_name["Sync"].full_name

MAX_PAGE_CHANGES = 5000
"""Most changes in one batch (a request's ``max_changes`` of 0 asks for this many)."""

MAX_PAGE_BYTES = (4 << 20) - (64 << 10)
"""Most bytes of changes in one batch: under gRPC's default 4 MiB receive limit, with
room for the checkpoint and the proof."""

POLL_INTERVAL = 0.2
"""Seconds between two looks at a feed's head while a ``Follow`` is caught up."""


@dataclass(frozen=True)
class _Caller:
    """A subscriber admitted to one feed: who, under which feed rule and memorandum."""

    peer: PeerCertificate
    rule_id: str
    federation: Federation


class SyncService(sync_pb2_grpc.SyncServicer):
    """The publisher's side of the feeds: ``Pull`` and ``Follow`` (see the module)."""

    def __init__(
        self,
        *,
        member_id: str,
        feeds: FeedLog,
        checks: Checks,
        ledger: Ledger,
        refusal_budget: RefusalBudget | None = None,
        poll_interval: float = POLL_INTERVAL,
        today: Callable[[], dt.date] = china_today,
    ) -> None:
        self.member_id = member_id
        self.feeds = feeds
        self.checks = checks
        self.ledger = ledger
        self.refusal_budget = refusal_budget if refusal_budget is not None else RefusalBudget()
        self.poll_interval = poll_interval
        self.today = today
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every ``Follow`` stream at its next step (the node is stopping): a stream
        that ends is resumed by its subscriber from its cursor, one cancelled mid-way is
        an error on both sides."""
        self._closing.set()

    async def Pull(self, request: sync_pb2.PullRequest, context: Context) -> sync_pb2.FeedBatch:
        """One page of the feed from ``from_size``."""
        caller = await self._admit("Pull", request, context)
        batch = await self._page("Pull", request, request.from_size, caller, context)
        await self._record_served("Pull", request, batch, caller, context)
        return batch

    async def Follow(
        self, request: sync_pb2.PullRequest, context: Context
    ) -> AsyncIterator[sync_pb2.FeedBatch]:
        """Pages from ``from_size`` until caught up, then each new change as published.

        The first batch is sent even when empty, so the subscriber learns the head;
        after it only batches with changes are sent. Ends when the caller cancels, or
        cleanly when the node stops (:meth:`close`).
        """
        caller = await self._admit("Follow", request, context)
        cursor = request.from_size
        first = True
        while True:
            if not first:
                caller = await self._admit("Follow", request, context)  # still allowed?
            batch = await self._page("Follow", request, cursor, caller, context)
            if batch.changes or first:
                await self._record_served("Follow", request, batch, caller, context)
                yield batch
                first = False
                cursor += len(batch.changes)
            await self._wait_past(request.theme, cursor)  # at once when more is there
            if self._closing.is_set():
                return  # the node is stopping: the subscriber resumes from its cursor

    # -- the steps -----------------------------------------------------------------------

    async def _admit(self, method: str, request: sync_pb2.PullRequest, context: Context) -> _Caller:
        """The subscriber, admitted to the feed asked; a refusal is recorded and aborts."""
        peer: PeerCertificate | None = None
        try:
            peer = self.checks.peer(context)
            federation = self.checks.federation()
            self.checks.member(federation, peer)
            self.checks.revocation(peer)
            rule_id = self._rule(federation, peer.member, request.theme)
        except Refused as refusal:
            await self._refuse(method, request, refusal, peer, None, context)
        return _Caller(peer, rule_id, federation)

    def _rule(self, federation: Federation, subscriber: str, theme: str) -> str:
        """The id of the memorandum's feed letting ``subscriber`` sync ``theme``; Refused."""
        today = self.today()
        engine = federation.engine
        rule = engine.may_sync(subscriber, self.member_id, theme, today)
        if rule is not None:
            return rule.id
        published = engine.published_themes(self.member_id, today)
        if theme not in published:
            offered = ", ".join(published) or "none"
            raise Refused(
                "NOT_FOUND",
                f"{self.member_id} publishes no feed of theme {theme!r} under memorandum "
                f"version {federation.version} on {today}; the feeds it publishes: {offered}",
                "policy",
            )
        raise Refused(
            "PERMISSION_DENIED",
            f"memorandum version {federation.version} lets {subscriber} sync no feed of "
            f"{theme!r} from {self.member_id} on {today}: only the members a feed of the "
            "memorandum lists as its subscribers may sync it",
            "policy",
        )

    async def _page(
        self,
        method: str,
        request: sync_pb2.PullRequest,
        start: int,
        caller: _Caller,
        context: Context,
    ) -> sync_pb2.FeedBatch:
        theme = request.theme
        limit = _limit(request)

        def read() -> sync_pb2.FeedBatch:
            size = self.feeds.size(theme)
            if start > size:
                raise Refused(
                    "OUT_OF_RANGE",
                    f"the feed of {theme} has {size} changes; a cursor of {start} is beyond "
                    "it: resume from the size of the last checkpoint verified from this feed",
                    "malformed",
                )
            end = min(size, start + limit)
            changes = self.feeds.leaves(theme, start, end, max_bytes=MAX_PAGE_BYTES)
            end = start + len(changes)
            return sync_pb2.FeedBatch(
                publisher=self.member_id,
                theme=theme,
                start=start,
                changes=changes,
                checkpoint=self.feeds.checkpoint(theme, end),
                consistency=self.feeds.consistency_proof(theme, start, end) if start else [],
                head_size=size,
            )

        try:
            return await asyncio.to_thread(read)
        except Refused as refusal:
            await self._refuse(method, request, refusal, caller.peer, caller, context)
        except LedgerError as exc:
            log.error("feed unreadable", extra={"data": {"theme": theme, "error": str(exc)}})
            fault = Refused(
                "INTERNAL", f"the feed of {theme} cannot be read here; it is logged", "internal"
            )
            await self._refuse(method, request, fault, caller.peer, caller, context)

    async def _wait_past(self, theme: str, size: int) -> None:
        """Return once the feed of ``theme`` holds more than ``size`` changes, or the node
        is stopping."""
        while await asyncio.to_thread(self.feeds.size, theme) <= size:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.poll_interval)
            if self._closing.is_set():
                return

    # -- the record ------------------------------------------------------------------------

    async def _record_served(
        self,
        method: str,
        request: sync_pb2.PullRequest,
        batch: sync_pb2.FeedBatch,
        caller: _Caller,
        context: Context,
    ) -> None:
        """Record a batch served, durably, before it is sent."""
        end = batch.start + len(batch.changes)
        span = f"changes {batch.start}-{end - 1}" if batch.changes else f"no changes from {end}"
        note = f"Sync/{method} feed {batch.theme}: {span}; checkpoint size {end}"
        outcome = audit_pb2.Outcome(status="OK")
        answer = hashlib.sha256(batch.SerializeToString(deterministic=True)).digest()
        await self._record(method, request, caller.peer, caller, outcome, note, answer, context)

    async def _refuse(
        self,
        method: str,
        request: sync_pb2.PullRequest,
        refusal: Refused,
        peer: PeerCertificate | None,
        caller: _Caller | None,
        context: Context,
    ) -> NoReturn:
        """Record a refusal (within the refusal budget) and abort the call with it."""
        if not self.refusal_budget.take(peer.fingerprint if peer is not None else ""):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this certificate was refused more than {self.refusal_budget.burst} times "
                "within a short while; its refusals are no longer recorded: slow down",
            )
        note = f"Sync/{method} feed {request.theme}: from {request.from_size} refused"
        outcome = audit_pb2.Outcome(status=refusal.status, message=refusal.message)
        index = await self._record(method, request, peer, caller, outcome, note, b"", context)
        context.set_trailing_metadata(((LEAF_INDEX_TRAILER, str(index)),))
        await context.abort(grpc_code(refusal.status), refusal.message)

    async def _record(
        self,
        method: str,
        request: sync_pb2.PullRequest,
        peer: PeerCertificate | None,
        caller: _Caller | None,
        outcome: audit_pb2.Outcome,
        note: str,
        answer_digest: bytes,
        context: Context,
    ) -> int:
        """Append the call's entry and wait until it is durable; its index. A call that
        cannot be recorded is aborted ``UNAVAILABLE``: nothing is served off the record."""
        allowed = outcome.status == "OK"
        decision = None
        if caller is not None:
            federation = caller.federation
            decision = audit_pb2.Decision(
                allowed=allowed,
                rule_ids=[caller.rule_id],
                memorandum_version=federation.version,
                memorandum_hash=federation.hash,
                reason="" if allowed else outcome.message,
            )
        entry = audit_pb2.AuditEntry(
            time_unix_micros=now_us(),
            requester=peer.member if peer is not None else "",
            responder=self.member_id,
            direction=audit_pb2.INCOMING,
            kind=audit_pb2.SYNC,
            request_digest=hashlib.sha256(request.SerializeToString(deterministic=True)).digest(),
            themes_asked=[request.theme],
            themes_answered=[request.theme] if allowed else [],
            decision=decision,
            outcome=outcome,
            answer_digest=answer_digest,
            note=note,
            peer_certificate=peer.fingerprint if peer is not None else "",
        )
        try:
            receipt = await self.ledger.append(encode(entry))
        except CreditExchangeError:
            log.exception("sync call not recorded", extra={"data": {"method": method}})
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the publisher could not record the call in its audit ledger; try again later",
            )
        return receipt.index


def _limit(request: sync_pb2.PullRequest) -> int:
    """How many changes a page of ``request`` may hold."""
    asked = request.max_changes
    return MAX_PAGE_CHANGES if asked == 0 else min(asked, MAX_PAGE_CHANGES)


def add_sync_service(
    server: Any, provider: Provider, feeds: FeedLog, **options: Any
) -> SyncService:
    """Serve the ``Sync`` service on ``server`` (a ``grpc.aio.Server``, or the gate's
    registrar so that it sits behind the node's admission): the provider's checks,
    ledger and refusal budget, this node's ``feeds``. ``options`` go to
    :class:`SyncService` (``poll_interval``, ``today``)."""
    service = SyncService(
        member_id=provider.member_id,
        feeds=feeds,
        checks=provider.checks,
        ledger=provider.ledger,
        refusal_budget=provider.refusal_budget,
        **options,
    )
    sync_pb2_grpc.add_SyncServicer_to_server(service, server)
    return service
