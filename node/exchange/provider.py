"""The provider side: answering another member's signed query, or refusing it, on the record.

For every call (:meth:`Provider.handle`):

1. the checks, in their order (``checks``): peer certificate, size, memorandum,
   member, revocation, sealing, signature, payload and header, themes,
   freshness, memorandum version;
2. the decision (``deciding``): the policy per subject type and theme; nothing
   allowed is a refusal with the policy's status and reasons; an allowed call is
   charged against its quotas, as a whole, before anything awaits (a batch that
   would pass a quota is refused whole);
3. the store is read for the allowed themes only (``readers``, through the
   records repository) and the answer built as decided (``answers``);
4. the audit entry is appended and made durable, in one transaction with the
   spent nonce and the quota counts;
5. the answer, bound to the request's digest and carrying the entry's receipt,
   is signed and returned.

A refusal is recorded in the ledger too, and the call ends with the status and
a message saying what was wrong; the provider's signed :class:`Refusal`, with
the entry's receipt, travels in the trailing metadata (``protocol.REFUSAL_TRAILER``,
and the index alone in ``protocol.LEAF_INDEX_TRAILER``). A call the caller
cancels is recorded as cancelled. One call makes exactly one entry: once its
entry is on its way to the ledger, a cancellation adds none, and an answer's entry
that the store refuses after its caller left (a nonce or a quota spent by another
process) is replaced by the call's refusal. Nothing leaves the
node before its audit entry is durable.

An entry is bounded whatever the caller sends: sizes and counts are checked
before anything is captured, a refused call keeps the request digest, the
subject count (a refused batch keeps no HMACs) and its header texts clipped to
their limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field

import grpc
import nacl.signing
from prometheus_client import Counter, Histogram

from creditexchange.certs.identity import PeerCertificate
from creditexchange.clock import china_today, now_us, utc_now
from creditexchange.errors import CreditExchangeError, Refused
from creditexchange.node.exchange import answers
from creditexchange.node.exchange.checks import Checks, Context
from creditexchange.node.exchange.deciding import Decider, Verdict, parse_subjects
from creditexchange.node.exchange.envelope import digest, seal
from creditexchange.node.exchange.federation import Federation
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.exchange.protocol import (
    ANSWER,
    LEAF_INDEX_TRAILER,
    METHODS,
    REFUSAL,
    REFUSAL_TRAILER,
    Method,
    call_entry,
    clipped_header,
    grpc_code,
    subject_hmacs,
)
from creditexchange.node.exchange.quotas import QuotaCharge, QuotaCounter
from creditexchange.node.exchange.readers import Reader
from creditexchange.node.ledger import Ledger, Receipt, SideWrite
from creditexchange.node.ledger.entries import encode
from creditexchange.node.ledger.witnessing import CosignatureBook, WitnessRecords
from creditexchange.v1 import audit_pb2, exchange_pb2

__all__ = ["Provider", "RefusalBudget"]

log = logging.getLogger("node.exchange")

_MAX_SERIES = 4096  # label sets whose metric children are kept at hand (``Provider._count``)


@dataclass
class _Call:
    """What the provider learned of a call so far: the material of its audit entry."""

    method: Method
    request_digest: bytes  # of the bytes received, then of the signed envelope inside
    requester: str = ""
    peer_fingerprint: str = ""
    header: exchange_pb2.RequestHeader | None = None
    subject_count: int = 0
    subject_hmacs: list[bytes] = field(default_factory=list)
    themes_asked: list[str] = field(default_factory=list)
    federation: Federation | None = None  # the memorandum the call is checked and decided under
    verdict: Verdict | None = None
    side_writes: list[SideWrite] = field(default_factory=list)  # the spent nonce
    recorded: bool = False  # the call's one entry is on its way: it lands, whatever follows
    answer_entry: asyncio.Future[Receipt] | None = None  # the answer's entry, still judged


class Provider:
    """Answers the federation's calls for one node. Its resources are opened by the wiring."""

    def __init__(
        self,
        *,
        member_id: str,
        checks: Checks,
        decider: Decider,
        reader: Reader,
        ledger: Ledger,
        quotas: QuotaCounter,
        signing_key: nacl.signing.SigningKey,
        hmac_key: bytes,
        metrics: Metrics,
    ) -> None:
        self.member_id = member_id
        self.checks = checks
        self.decider = decider
        self.reader = reader
        self.ledger = ledger
        self.quotas = quotas
        self.signing_key = signing_key
        self.hmac_key = hmac_key
        self.metrics = metrics
        self.refusal_budget = RefusalBudget()
        self._series: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}  # labels -> children
        # the witnesses' cosignatures on this node's checkpoints, for the receipts
        self.cosignatures = CosignatureBook(WitnessRecords(ledger.log.engine))
        self._left: set[asyncio.Task[None]] = set()  # calls whose caller left (see _see_through)

    async def finish(self) -> None:
        """Wait until the calls whose callers left are recorded: before the ledger closes."""
        while self._left:  # asyncio.wait: a stop that is itself cancelled cancels none of them
            await asyncio.wait(self._left)

    def close(self) -> None:
        self.reader.close()

    async def handle(self, method_name: str, raw: bytes, context: Context) -> bytes:
        """Answer one call of a signed method: ``raw`` is the sealed request as received;
        the signed answer's bytes, or the call is aborted with its refusal."""
        started = time.perf_counter()
        call = _Call(method=METHODS[method_name], request_digest=hashlib.sha256(raw).digest())
        try:
            request = self._check(call, raw, context)
            body = await self._answer(call, request, context)
            self.checks.deadline(context)
            entry = self._entry(call, audit_pb2.Outcome(status="OK"), body)
            receipt = await self._record(
                call, entry, [*call.side_writes, *self._charges(call)], conditional=True
            )
            self._settle(call, committed=True)
            answer = exchange_pb2.Answer(
                body=body, receipt=_receipt(receipt, entry, self.cosignatures)
            )
            sealed = seal(ANSWER, answer.SerializeToString(), self.signing_key)
            self._count(call, "allow", "OK", started)
            return bytes(sealed.SerializeToString())
        except Refused as refusal:
            if call.recorded and call.verdict is not None:  # the store refused the answer
                call.verdict.deny(refusal.message)
            await self._refuse(call, refusal, context, started)
        except asyncio.CancelledError:  # the caller went away: the call is still recorded, once
            if call.answer_entry is not None:  # the store may still refuse the answer's entry
                self._see_through(call, call.answer_entry)
            elif not call.recorded:
                await asyncio.shield(self._record_cancelled(call))
            raise
        except Exception as exc:  # a fault of this node: recorded, answered INTERNAL
            log.exception("call failed", extra={"data": {"method": method_name}})
            fault = Refused(
                "INTERNAL",
                f"the provider failed to answer ({type(exc).__name__}); it is logged there",
                "internal",
            )
            await self._refuse(call, fault, context, started)
        finally:
            self._settle(call, committed=False)  # reserved but never recorded: give them back
        raise AssertionError("unreachable: _refuse aborts the call")  # pragma: no cover

    # -- the steps -----------------------------------------------------------------------

    def _check(self, call: _Call, raw: bytes, context: Context) -> object:
        """Run the checks in their order, noting what each teaches about the call."""
        checks = self.checks
        peer = checks.peer(context)
        call.requester, call.peer_fingerprint = peer.member, peer.fingerprint
        checks.size(len(raw))
        federation = call.federation = checks.federation()
        checks.member(federation, peer)
        checks.revocation(peer)
        envelope = checks.unseal(raw)
        call.request_digest = digest(envelope)
        checks.signature(federation, peer.member, envelope, call.method.payload_type)
        request = checks.parse(call.method, envelope.payload)
        call.header = request.header
        subjects = call.method.subjects(request)
        call.subject_count = len(subjects)
        checks.header(request.header, peer.member, len(subjects))
        call.subject_hmacs = subject_hmacs(self.hmac_key, subjects)  # a bounded number now
        call.themes_asked = checks.themes(list(request.themes))
        call.side_writes = checks.fresh(request.header)
        checks.memorandum_version(request.header, federation)
        return request

    async def _answer(self, call: _Call, request: object, context: Context) -> bytes:
        """Decide, charge the quotas, read what is allowed and build the answer body."""
        federation, header = call.federation, call.header
        assert federation is not None and header is not None
        now = utc_now()
        verdict = self.decider.decide(
            federation,
            call.requester,
            header,
            parse_subjects(call.method.subjects(request)),
            call.themes_asked,
            call.method.mode,
            now,
        )
        call.verdict, call.themes_asked = verdict, verdict.themes_asked
        allowed = verdict.allowed
        if not allowed:
            raise verdict.refusal()
        self.decider.charge(verdict, call.requester, federation.engine.quotas, now)
        self.checks.deadline(context)
        found = await self.reader.read(
            [s for s, _ in verdict.subjects], {theme for _, theme in allowed}, china_today()
        )
        return answers.answer_body(
            requester=call.requester,
            provider=self.member_id,
            request_digest=call.request_digest,
            memorandum_version=federation.version,
            memorandum_hash=federation.hash,
            mode=call.method.mode,
            subjects=verdict.subjects,
            themes=verdict.themes,
            shapes={key: d.shape for key, d in verdict.decisions.items()},
            found=found,
            answer_key=header.answer_key,
        )

    @staticmethod
    def _charges(call: _Call) -> list[SideWrite]:
        return list(call.verdict.charges) if call.verdict is not None else []

    def _settle(self, call: _Call, committed: bool) -> None:
        """The quota charges of a call are in the store now, or never will be."""
        if call.verdict is not None and call.verdict.charges:
            self.quotas.settled(call.verdict.charges, committed)
            call.verdict.charges = []

    # -- the record --------------------------------------------------------------------

    def _entry(self, call: _Call, outcome: audit_pb2.Outcome, answer_body: bytes = b"") -> bytes:
        verdict = call.verdict
        decided = list(verdict.decisions.values()) if verdict is not None else []
        answered: dict[str, object] = {}
        if answer_body:
            answered = {
                "themes_answered": dict.fromkeys(d.theme for d in decided if d.decision.allowed),
                "masked_fields": sorted({f for d in decided for f in d.decision.mask}),
                "answer_digest": hashlib.sha256(answer_body).digest(),
            }
        header = call.header
        if not answer_body and header is not None:
            header = clipped_header(header)  # a refused request's texts may be any length
        entry = call_entry(
            direction=audit_pb2.INCOMING,
            method=call.method,
            requester=call.requester,
            responder=self.member_id,
            header=header,
            request_digest=call.request_digest,
            # a refused batch keeps its count only: its HMACs would record lookups not made
            subject_hmacs=call.subject_hmacs if answer_body or not call.method.batch else (),
            subject_count=call.subject_count,
            themes_asked=call.themes_asked,
            outcome=outcome,
            theme_decisions=[d.audit for d in decided],
            peer_certificate=call.peer_fingerprint,
            decision=verdict.summary if verdict is not None else None,
            **answered,
        )
        return encode(entry)

    async def _append(self, entry: bytes, side_writes: list[SideWrite]) -> Receipt:
        return await self._timed(self.ledger.append(entry, side_writes))

    async def _timed(self, appended: Awaitable[Receipt]) -> Receipt:
        started = time.perf_counter()
        receipt = await appended
        self.metrics.ledger_append.observe(time.perf_counter() - started)
        return receipt

    async def _record(
        self, call: _Call, entry: bytes, side_writes: list[SideWrite], conditional: bool = False
    ) -> Receipt:
        """Append the call's one entry. Once queued it commits even if the caller leaves
        (the appender commits what it took; only the wait for it is cancelled), so the call
        is marked recorded and a cancellation adds no second entry. An answer's entry is
        ``conditional``: the store may still refuse it (its nonce or a quota, spent by
        another process), and the call is then refused and recorded as such, even when
        its caller has left meanwhile (:meth:`_see_through`)."""
        call.recorded = True
        if not conditional:
            return await self._append(entry, side_writes)
        call.answer_entry = self.ledger.submit(entry, side_writes, conditional=True)
        # shielded: a caller that leaves does not cancel the entry's future (_see_through)
        return await self._timed(asyncio.shield(call.answer_entry))

    def _see_through(self, call: _Call, answer_entry: asyncio.Future[Receipt]) -> None:
        """The caller left while its answer's entry waited for the store, which may yet
        refuse it (a nonce or a quota spent by another process meanwhile). Once the store
        has decided, the call's quota charges are settled, and a refused entry is replaced
        by the call's refusal: one entry for the call either way."""
        charges: list[QuotaCharge] = []
        if call.verdict is not None:  # settled when the store has decided, not now
            charges, call.verdict.charges = call.verdict.charges, []
        task = asyncio.get_running_loop().create_task(
            self._after_caller_left(call, answer_entry, charges)
        )
        self._left.add(task)
        task.add_done_callback(self._left.discard)

    async def _after_caller_left(
        self, call: _Call, answer_entry: asyncio.Future[Receipt], charges: list[QuotaCharge]
    ) -> None:
        try:
            await answer_entry
        except Exception as exc:  # refused by the store, or the ledger failed the batch
            self.quotas.settled(charges, committed=False)
            refusal = exc if isinstance(exc, Refused) else None
            if refusal is None:
                log.error("the answer's entry of a call whose caller left failed: %s", exc)
                refusal = Refused("INTERNAL", "the provider failed to answer", "internal")
            if call.verdict is not None:
                call.verdict.deny(refusal.message)
            message = f"{refusal.message} (the caller had cancelled the call)"
            outcome = audit_pb2.Outcome(status=refusal.status, message=message)
            self.metrics.refusals.labels(refusal.reason).inc()
            try:
                await self._append(self._entry(call, outcome), call.side_writes)
            except Exception:
                log.exception("a refused call whose caller left was not recorded")
        else:
            self.quotas.settled(charges, committed=True)

    async def _record_cancelled(self, call: _Call) -> None:
        outcome = audit_pb2.Outcome(status="CANCELLED", message="the caller cancelled the call")
        try:
            await self._record(call, self._entry(call, outcome), call.side_writes)
        except Exception:
            log.exception("a cancelled call was not recorded")

    async def _refuse(
        self, call: _Call, refusal: Refused, context: Context, started: float
    ) -> None:
        await self._within_refusal_budget(call.peer_fingerprint, context)
        entry = self._entry(call, audit_pb2.Outcome(status=refusal.status, message=refusal.message))
        try:
            receipt = await self._record(call, entry, call.side_writes)
        except Exception:
            log.exception("refusal not recorded", extra={"data": {"method": call.method.name}})
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the provider could not record the call in its audit ledger; try again later",
            )
        self.metrics.refusals.labels(refusal.reason).inc()
        self._count(call, "deny", refusal.status, started)
        await self._abort(context, call.requester, call.request_digest, refusal, receipt, entry)

    async def _within_refusal_budget(self, peer: str, context: Context) -> None:
        """A caller refused faster than the budget allows is told to slow down, counted and
        not recorded: recording every one would let it grow the ledger without bound."""
        if self.refusal_budget.take(peer):
            return
        self.metrics.refusals.labels("overload").inc()
        if self.refusal_budget.should_log(peer):
            log.warning("refusals beyond the budget not recorded", extra={"data": {"peer": peer}})
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"this certificate was refused more than {self.refusal_budget.burst} times "
            f"within a short while; its refusals are no longer recorded: fix the calls and "
            f"slow down to {self.refusal_budget.per_second:g} a second",
        )

    async def _abort(
        self,
        context: Context,
        requester: str,
        request_digest: bytes,
        refusal: Refused,
        receipt: Receipt,
        entry: bytes,
    ) -> None:
        """End a refused call with its status, its message and the signed refusal."""
        signed = exchange_pb2.Refusal(
            requester=requester,
            provider=self.member_id,
            request_digest=request_digest,
            status=refusal.status,
            message=refusal.message,
            receipt=_receipt(receipt, entry, self.cosignatures),
        )
        envelope = seal(REFUSAL, signed.SerializeToString(), self.signing_key)
        context.set_trailing_metadata(
            (
                (LEAF_INDEX_TRAILER, str(receipt.index)),
                (REFUSAL_TRAILER, envelope.SerializeToString()),
            )
        )
        await context.abort(grpc_code(refusal.status), refusal.message)

    # -- the side services -------------------------------------------------------------

    async def admit_side_call(self, method: str, request: bytes, context: Context) -> None:
        """Checks 1 to 5 for a call of a side service (the memorandum, the audit log,
        health, reflection); a refusal is recorded and aborts the call."""
        peer: PeerCertificate | None = None
        try:
            peer = self.checks.peer(context)
            self.checks.member(self.checks.federation(), peer)
            self.checks.revocation(peer)
        except Refused as refusal:
            await self.refuse_side_call(method, request, refusal, context, peer)

    async def refuse_side_call(
        self,
        method: str,
        request: bytes,
        refusal: Refused,
        context: Context,
        peer: PeerCertificate | None = None,
    ) -> None:
        """Record a side service's refusal (kind SERVICE_CALL) and abort the call with it."""
        if peer is None:
            try:
                peer = self.checks.peer(context)
            except Refused:
                peer = None
        await self._within_refusal_budget(peer.fingerprint if peer is not None else "", context)
        outcome = audit_pb2.Outcome(status=refusal.status, message=refusal.message)
        receipt, entry = await self.record_side_call(method, request, peer, outcome, context)
        self.metrics.refusals.labels(refusal.reason).inc()
        requester = peer.member if peer is not None else ""
        request_digest = hashlib.sha256(request).digest()
        await self._abort(context, requester, request_digest, refusal, receipt, entry)

    async def record_side_call(
        self,
        method: str,
        request: bytes,
        peer: PeerCertificate | None,
        outcome: audit_pb2.Outcome,
        context: Context,
    ) -> tuple[Receipt, bytes]:
        """Record a call of a side service (kind SERVICE_CALL, the method in its note),
        durably; its receipt and entry. A call that cannot be recorded is aborted
        ``UNAVAILABLE``: nothing is answered off the record."""
        entry = encode(
            audit_pb2.AuditEntry(
                time_unix_micros=now_us(),
                requester=peer.member if peer is not None else "",
                responder=self.member_id,
                direction=audit_pb2.INCOMING,
                kind=audit_pb2.SERVICE_CALL,
                request_digest=hashlib.sha256(request).digest(),
                note=method,
                outcome=outcome,
                peer_certificate=peer.fingerprint if peer is not None else "",
            )
        )
        try:
            receipt = await self._append(entry, [])
        except Exception:
            log.exception("side call not recorded", extra={"data": {"method": method}})
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the provider could not record the call in its audit ledger; try again later",
            )
        return receipt, entry

    # -- metrics and logs ------------------------------------------------------------------

    def _purposes(self) -> Mapping[str, object]:
        try:
            return self.checks.view.current().memorandum.purpose_by_code
        except CreditExchangeError:
            return {}

    def _count(self, call: _Call, decision: str, status: str, started: float) -> None:
        purpose = call.header.purpose if call.header is not None else ""
        if purpose and purpose not in self._purposes():
            purpose = "unknown"  # a label per made-up purpose would grow without bound
        elapsed = time.perf_counter() - started
        method = call.method.name
        key = (call.requester, method, purpose, decision, status)
        series = self._series.get(key)
        if series is None:  # a label set's children, looked up once (the labels are bounded)
            if len(self._series) >= _MAX_SERIES:
                self._series.clear()
            series = (self.metrics.queries.labels(*key), self.metrics.latency.labels(method))
            self._series[key] = series
        series[0].inc()
        series[1].observe(elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "call",
            extra={
                "data": {
                    "method": method,
                    "requester": call.requester,
                    "purpose": purpose,
                    "status": status,
                    "ms": round(elapsed * 1000, 3),
                    "request": call.request_digest.hex()[:16],
                    "subjects": [h.hex()[:16] for h in call.subject_hmacs[:5]],
                }
            },
        )


class RefusalBudget:
    """How many refusals of one client certificate are recorded: a token bucket of
    ``burst`` refusals, refilled at ``per_second``. An honest caller that gets a refusal
    fixes its call; one refused hundreds of times a second is flooding the ledger."""

    def __init__(self, per_second: float = 20.0, burst: int = 200, peers: int = 4096) -> None:
        self.per_second = per_second
        self.burst = burst
        self.peers = peers  # at most this many certificates tracked (the oldest forgotten)
        self._buckets: dict[str, tuple[float, float]] = {}  # peer -> (tokens, at)
        self._logged: dict[str, float] = {}

    def take(self, peer: str) -> bool:
        now = time.monotonic()
        tokens, at = self._buckets.pop(peer, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
        if len(self._buckets) >= self.peers:
            del self._buckets[next(iter(self._buckets))]
        if tokens < 1.0:
            self._buckets[peer] = (tokens, now)
            return False
        self._buckets[peer] = (tokens - 1.0, now)
        return True

    def should_log(self, peer: str) -> bool:
        """At most one log line a minute per flooding certificate."""
        now = time.monotonic()
        if now - self._logged.get(peer, -60.0) < 60.0:
            return False
        if len(self._logged) >= self.peers:
            self._logged.clear()
        self._logged[peer] = now
        return True


def _receipt(receipt: Receipt, entry: bytes, book: CosignatureBook) -> exchange_pb2.Receipt:
    """The receipt as given: with the witnesses' cosignatures on exactly its checkpoint,
    where held (a cosignature on an earlier checkpoint says nothing of this one)."""
    return exchange_pb2.Receipt(
        leaf_index=receipt.index,
        leaf_hash=receipt.leaf_hash,
        checkpoint=receipt.checkpoint,
        inclusion_proof=list(receipt.proof),
        entry=entry,
        cosignatures=book.lines_for(receipt.checkpoint),
    )
