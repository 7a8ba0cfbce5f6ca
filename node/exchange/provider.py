"""The provider side: answering another member's signed query, or refusing it, on the record.

For every call, in this order (the first check that fails refuses the call):

1. the caller's member id comes from its mutual-TLS certificate, never from the
   request; a revoked certificate, or one the memorandum does not list when it
   lists fingerprints for the member, is refused (``UNAUTHENTICATED``), and the
   refusal's entry names the member all the same;
2. the message is within the size limit (``RESOURCE_EXHAUSTED``);
3. the caller is a member of the installed memorandum (``PERMISSION_DENIED``);
4. the envelope is signed by one of *that* member's keys in the memorandum
   (``UNAUTHENTICATED``: a bad signature, another member's key, an unknown key);
5. the payload parses and its header names the caller as requester and this
   node as provider (``INVALID_ARGUMENT``);
6. its time is within the window and its nonce unseen, also across restarts
   (``UNAUTHENTICATED``);
7. its memorandum version is the installed one (``FAILED_PRECONDITION``);
8. the policy decides each theme (deny by default; ``PERMISSION_DENIED``,
   ``RESOURCE_EXHAUSTED`` for a quota, ``FAILED_PRECONDITION`` for a missing case
   reference or an expired memorandum, ``INVALID_ARGUMENT`` for an unknown theme
   or a malformed subject); when no theme is asked ("every theme the policy
   allows"), the themes no rule covers are left out, so a refusal has the status
   and reason of the rules that did apply (a quota, a missing case reference, a
   forbid) rather than of the first theme of the catalog;
9. the store is read for the allowed themes only, fields revealed, masked or
   withheld as decided;
10. the audit entry is appended and made durable, in one transaction with the
    spent nonce and the quota count;
11. the answer, bound to the request's digest and carrying the entry's receipt,
    is signed and returned.

A refusal is recorded in the ledger too, and the call ends with the status and
a message saying what was wrong; its receipt travels in the trailing metadata
(``audit-leaf-index``). Nothing leaves the node before its audit entry is durable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import nacl.signing
from google.protobuf.message import DecodeError
from sqlalchemy import Engine

from creditexchange.certs.identity import PeerCertificate, peer_certificate
from creditexchange.certs.revocation import RevocationWatcher
from creditexchange.clock import china_today, now_us
from creditexchange.errors import (
    CertificateError,
    CreditExchangeError,
    EnvelopeError,
    InvalidIdentifier,
    Refused,
    RevocationListExpired,
)
from creditexchange.identifiers import mask_identifier, mask_subject_name, subject_type_of
from creditexchange.node.catalog import Catalog
from creditexchange.node.exchange import answers
from creditexchange.node.exchange.envelope import (
    ANSWER,
    BATCH_CHECK_REQUEST,
    CHECK_REQUEST,
    QUERY_REQUEST,
    digest,
    open_envelope,
    seal,
)
from creditexchange.node.exchange.federation import Federation, FederationView
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.exchange.replay import MAX_NONCE_BYTES, MIN_NONCE_BYTES, ReplayGuard
from creditexchange.node.ledger.entries import encode, subject_hmac
from creditexchange.node.ledger.log import Ledger, Receipt, SideWrite
from creditexchange.node.quotas import QuotaCounter
from creditexchange.policy.document import Mode
from creditexchange.policy.engine import Decision, DecisionRequest, quota_period_start
from creditexchange.v1 import audit_pb2, exchange_pb2

log = logging.getLogger("node.exchange")

_KIND = {
    "Query": (QUERY_REQUEST, exchange_pb2.QueryRequest, audit_pb2.QUERY, Mode.FULL),
    "Check": (CHECK_REQUEST, exchange_pb2.CheckRequest, audit_pb2.CHECK, Mode.CHECK),
    "BatchCheck": (
        BATCH_CHECK_REQUEST,
        exchange_pb2.BatchCheckRequest,
        audit_pb2.BATCH_CHECK,
        Mode.CHECK,
    ),
}
_HEADER_LIMITS = {"purpose": 64, "legal_basis": 512, "case_reference": 128, "officer": 128}
# which status a refusal takes when themes were denied for different reasons
_PRECEDENCE = ("FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT")


Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 1 << 20
    max_batch_subjects: int = 1000


@dataclass(frozen=True)
class _Decided:
    """One theme's decision, with the parts of the answer and of the audit entry it makes."""

    theme: str
    decision: Decision
    audit: audit_pb2.ThemeDecision
    shape: answers.ThemeShape


class _DecisionParts:
    """The answer and audit parts of the engine's decisions, built once per decision.

    The engine interns its decisions (one immutable ``Decision`` per outcome), and
    what a decision puts into an answer and into an audit entry depends only on
    the decision, the theme and the mode. So those parts are built the first time
    and copied from then on; nothing modifies them. An entry holds its decision,
    so the id it is found by is not reused while it is cached. The cache starts
    afresh with each memorandum version and when it reaches ``bound`` entries.
    """

    def __init__(self, catalog: Catalog, bound: int = 4096) -> None:
        self.catalog = catalog
        self.bound = bound
        self._federation: Federation | None = None
        self._parts: dict[tuple[str, Mode, int], _Decided] = {}

    def get(self, federation: Federation, theme: str, mode: Mode, decision: Decision) -> _Decided:
        if federation is not self._federation:
            self._parts.clear()
            self._federation = federation
        key = (theme, mode, id(decision))
        parts = self._parts.get(key)
        if parts is None or parts.decision is not decision:
            if len(self._parts) >= self.bound:
                self._parts.clear()
            audit = audit_pb2.ThemeDecision(
                theme=theme, decision=_pb_decision(decision), masked_fields=sorted(decision.mask)
            )
            shape = answers.theme_shape(self.catalog, theme, decision, mode)
            parts = self._parts[key] = _Decided(theme, decision, audit, shape)
        return parts


@dataclass
class _Call:
    """What the provider learned of a call so far: the material of its audit entry."""

    method: str
    kind: int
    requester: str = ""
    peer_fingerprint: str = ""
    header: exchange_pb2.RequestHeader | None = None
    request_digest: bytes = b""
    subject_hmacs: list[bytes] = field(default_factory=list)
    themes_asked: list[str] = field(default_factory=list)
    decided: list[_Decided] = field(default_factory=list)
    summary: audit_pb2.Decision | None = None
    side_writes: list[SideWrite] = field(default_factory=list)  # the spent nonce
    quota_writes: list[SideWrite] = field(default_factory=list)
    quota_charged: list[tuple[tuple[str, str, int], int]] = field(default_factory=list)


class Provider:
    """Answers the federation's calls for one node. Its resources are started by the server."""

    def __init__(
        self,
        *,
        member_id: str,
        database: Engine,
        catalog: Catalog,
        federation: FederationView,
        ledger: Ledger,
        replay: ReplayGuard,
        quotas: QuotaCounter,
        revocations: RevocationWatcher,
        signing_key: nacl.signing.SigningKey,
        hmac_key: bytes,
        metrics: Metrics,
        limits: Limits = Limits(),
    ) -> None:
        self.member_id = member_id
        self.catalog = catalog
        self.federation = federation
        self.ledger = ledger
        self.replay = replay
        self.quotas = quotas
        self.revocations = revocations
        self.signing_key = signing_key
        self.hmac_key = hmac_key
        self.metrics = metrics
        self.limits = limits
        self._parts = _DecisionParts(catalog)
        self._reader = answers.open_reader(database)

    def close(self) -> None:
        self._reader.close()

    # -- the call --------------------------------------------------------------------

    async def handle(
        self, method: str, envelope: exchange_pb2.Envelope, context: Context
    ) -> exchange_pb2.Envelope:
        started = time.perf_counter()
        payload_type, message_type, kind, mode = _KIND[method]
        call = _Call(method=method, kind=kind)
        try:
            peer = self._peer(context)
            call.requester, call.peer_fingerprint = peer.member, peer.fingerprint
            if envelope.ByteSize() > self.limits.max_message_bytes:
                raise Refused(
                    "RESOURCE_EXHAUSTED",
                    f"the message is {envelope.ByteSize()} bytes; this node accepts at most "
                    f"{self.limits.max_message_bytes}: split the batch",
                    "size",
                )
            federation = self._federation()
            self._check_member(federation, peer)
            call.request_digest = digest(envelope)
            self._check_signature(federation, peer.member, envelope, payload_type)
            self._check_revocation(peer)
            request = self._parse(message_type, envelope.payload)
            header = request.header
            call.header = header
            subjects = list(request.subject_ids) if method == "BatchCheck" else [request.subject_id]
            call.subject_hmacs = [subject_hmac(self.hmac_key, s) for s in subjects]
            self._check_header(header, peer.member, len(subjects))
            themes = self._check_themes(list(request.themes))
            call.themes_asked = themes
            call.side_writes = self._check_fresh(header)
            if header.memorandum_version != federation.version:
                raise Refused(
                    "FAILED_PRECONDITION",
                    f"the request was made under memorandum version {header.memorandum_version}"
                    f", this node holds version {federation.version}: fetch it (GetMemorandum) "
                    "and install it if it is newer",
                    "memorandum",
                )
            body = await self._answer(federation, call, header, subjects, themes, mode, context)
            self._check_deadline(context)
            entry = self._entry(call, audit_pb2.Outcome(status="OK"), body)
            receipt = await self._append(entry, [*call.side_writes, *call.quota_writes])
            self.quotas.settled(call.quota_charged, committed=True)
            call.quota_charged = []
            answer = exchange_pb2.Answer(body=body, receipt=_receipt(receipt, entry))
            sealed = seal(ANSWER, answer.SerializeToString(), self.signing_key)
            self._count(call, "allow", "OK", started)
            return sealed
        except Refused as refusal:
            await self._refuse(call, refusal, context, started)
        except asyncio.CancelledError:  # the caller went away: the call is still recorded
            await asyncio.shield(self._record_cancelled(call))
            raise
        except Exception as exc:  # a fault of this node: recorded, answered INTERNAL
            log.exception("call failed", extra={"data": {"method": method}})
            await self._refuse(
                call,
                Refused(
                    "INTERNAL",
                    f"the provider failed to answer ({type(exc).__name__}); it is logged there",
                    "internal",
                ),
                context,
                started,
            )
        finally:
            if call.quota_charged:  # reserved but never recorded: give the counts back
                self.quotas.settled(call.quota_charged, committed=False)
        raise AssertionError("unreachable: _refuse aborts the call")  # pragma: no cover

    async def _record_cancelled(self, call: _Call) -> None:
        outcome = audit_pb2.Outcome(status="CANCELLED", message="the caller cancelled the call")
        try:
            await self._append(self._entry(call, outcome), call.side_writes)
        except Exception:
            log.exception("a cancelled call was not recorded")

    # -- the checks, in order ----------------------------------------------------------

    def _peer(self, context: Context) -> PeerCertificate:
        pem = list(context.auth_context().get("x509_pem_cert", ()))
        if not pem:
            raise Refused(
                "UNAUTHENTICATED",
                "no client certificate: connect with mutual TLS and the node's certificate",
                "certificate",
            )
        try:
            return peer_certificate(pem[0])
        except CertificateError as exc:
            raise Refused("UNAUTHENTICATED", str(exc), "certificate") from None

    def _check_revocation(self, peer: PeerCertificate) -> None:
        try:
            self.revocations.check(peer.serial)
        except RevocationListExpired as exc:  # this node's fault, not the caller's
            raise Refused(
                "FAILED_PRECONDITION",
                f"this node's revocation list is out of date ({exc}); it answers no one until "
                "its operator installs a fresh crl.pem",
                "certificate",
            ) from None
        except CertificateError as exc:
            raise Refused(
                "UNAUTHENTICATED",
                f"the certificate of {peer.member} is refused: {exc}; the member needs a "
                "new certificate from the federation CA",
                "certificate",
            ) from None

    def _federation(self) -> Federation:
        try:
            return self.federation.current()
        except CreditExchangeError as exc:
            raise Refused(
                "FAILED_PRECONDITION",
                f"this node has no usable memorandum ({exc})",
                "memorandum",
            ) from None

    def _check_member(self, federation: Federation, peer: PeerCertificate) -> None:
        member = federation.memorandum.member_by_id.get(peer.member)
        if member is None:
            raise Refused(
                "PERMISSION_DENIED",
                f"{peer.member} is not a member of memorandum version {federation.version}",
                "member",
            )
        pinned = member.certificate_fingerprints
        if pinned and peer.fingerprint not in pinned:
            raise Refused(
                "UNAUTHENTICATED",
                f"the certificate of {peer.member} (SHA-256 {peer.fingerprint[:16]}…) is not "
                f"one the memorandum lists for it",
                "certificate",
            )

    def _check_signature(
        self, federation: Federation, member: str, envelope: exchange_pb2.Envelope, kind: str
    ) -> None:
        try:
            open_envelope(envelope, kind, federation.keys.get(member, {}))
        except EnvelopeError as exc:
            others = {
                federation.key_owner[s.key_id]
                for s in envelope.signatures
                if s.key_id in federation.key_owner and federation.key_owner[s.key_id] != member
            }
            message = str(exc)
            if others:
                message = (
                    f"the request is signed with the key of {', '.join(sorted(others))}, but the "
                    f"TLS peer is {member}: a member signs with its own key"
                )
            raise Refused("UNAUTHENTICATED", message, "signature") from None

    @staticmethod
    def _parse(message_type: Any, payload: bytes) -> Any:
        request = message_type()
        try:
            request.ParseFromString(payload)
        except DecodeError:
            raise Refused(
                "INVALID_ARGUMENT",
                f"the payload is not a {message_type.DESCRIPTOR.name}",
                "malformed",
            ) from None
        if not request.HasField("header"):
            raise Refused("INVALID_ARGUMENT", "the request has no header", "malformed")
        return request

    def _check_header(self, header: exchange_pb2.RequestHeader, member: str, n: int) -> None:
        def bad(message: str) -> Refused:
            return Refused("INVALID_ARGUMENT", message, "malformed")

        if header.requester != member:
            raise bad(f"the request names requester {header.requester!r}, the caller is {member}")
        if header.provider != self.member_id:
            raise bad(f"the request is addressed to {header.provider!r}, this is {self.member_id}")
        for name, limit in _HEADER_LIMITS.items():
            value = getattr(header, name)
            if len(value) > limit:
                raise bad(f"{name} has {len(value)} characters; at most {limit} are accepted")
        if not MIN_NONCE_BYTES <= len(header.nonce) <= MAX_NONCE_BYTES:
            raise bad(
                f"the nonce has {len(header.nonce)} bytes; it must have {MIN_NONCE_BYTES} to "
                f"{MAX_NONCE_BYTES} random bytes"
            )
        if n == 0:
            raise bad("no subject asked")
        if n > self.limits.max_batch_subjects:
            raise Refused(
                "RESOURCE_EXHAUSTED",
                f"{n} subjects in one batch; this node answers at most "
                f"{self.limits.max_batch_subjects}: split the batch",
                "size",
            )

    def _check_themes(self, asked: list[str]) -> list[str]:
        """The themes asked, each once, all in the catalog; INVALID_ARGUMENT otherwise."""
        themes = list(dict.fromkeys(asked))
        unknown = [t for t in themes if t not in self.catalog.theme_by_code]
        if unknown:
            shown = ", ".join(repr(t[:40]) for t in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise Refused(
                "INVALID_ARGUMENT",
                f"unknown theme(s) {shown}{more}: this node's catalog has "
                f"{', '.join(self.catalog.theme_by_code)}",
                "malformed",
            )
        return themes

    def _check_fresh(self, header: exchange_pb2.RequestHeader) -> list[SideWrite]:
        """Refuse a stale or replayed request; the writes that persist its spent nonce."""
        problem = self.replay.time_problem(header.created_unix_micros, now_us())
        if problem:
            raise Refused("UNAUTHENTICATED", problem, "time")
        writes = self.replay.claim(header.requester, header.nonce, header.created_unix_micros)
        if writes is None:
            raise Refused(
                "UNAUTHENTICATED",
                "this nonce was used before: the request is a replay; a new request needs a "
                "new nonce",
                "replay",
            )
        return writes

    @staticmethod
    def _check_deadline(context: Context) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise Refused(
                "DEADLINE_EXCEEDED",
                "the caller's deadline passed before the answer was ready",
                "deadline",
            )

    # -- deciding and answering ----------------------------------------------------------

    async def _answer(
        self,
        federation: Federation,
        call: _Call,
        header: exchange_pb2.RequestHeader,
        subjects: list[str],
        asked: list[str],
        mode: Mode,
        context: Context,
    ) -> bytes:
        parsed: list[tuple[str, str]] = []
        for position, subject in enumerate(subjects):
            try:
                parsed.append(subject_type_of(subject))
            except InvalidIdentifier as exc:
                where = f"subject {position + 1}" if len(subjects) > 1 else "the subject"
                raise Refused("INVALID_ARGUMENT", f"{where}: {exc}", "malformed") from None
        now = dt.datetime.now(dt.UTC)
        per_type = Counter(t for _, t in parsed)
        subject_types = list(per_type)
        themes = asked or [
            t.code
            for t in self.catalog.themes
            if any(st in {s.value for s in t.subject_types} for st in subject_types)
        ]
        engine = federation.engine
        decisions: dict[tuple[str, str], _Decided] = {}
        for subject_type in subject_types:
            quota_used = _QuotaView(
                self.quotas, engine.quotas, call.requester, now, per_type[subject_type] - 1
            )
            for theme in themes:
                decision = engine.decide(
                    DecisionRequest(
                        requester=call.requester,
                        provider=self.member_id,
                        purpose=header.purpose,
                        subject_type=subject_type,
                        theme=theme,
                        mode=mode,
                        time=now,
                        case_reference=header.case_reference,
                        officer=header.officer,
                        quota_used=quota_used,
                    )
                )
                decisions[(subject_type, theme)] = self._parts.get(
                    federation, theme, mode, decision
                )
        allowed = {key: d for key, d in decisions.items() if d.decision.allowed}
        if not asked:  # "every theme the policy allows": the themes no rule covers are not news
            covered = {key: d for key, d in decisions.items() if d.decision.rule_ids}
            decisions = allowed or covered or decisions
        self._record_decisions(call, federation, decisions, asked)
        if not allowed:
            if not decisions:
                raise Refused(
                    "PERMISSION_DENIED",
                    "no theme of the catalog holds this kind of subject",
                    "policy",
                )
            statuses = {d.decision.status for d in decisions.values()}
            status = next((s for s in _PRECEDENCE if s in statuses), "PERMISSION_DENIED")
            reasons = "; ".join(dict.fromkeys(d.decision.reason for d in decisions.values()))
            raise Refused(status, reasons, "policy")
        # Count the query against its quotas now, before anything awaits, so that
        # concurrent calls see it; _append persists it, handle gives it back if not.
        counts: Counter[str] = Counter()
        for subject_type in subject_types:
            rules = {
                r
                for (t, _), d in allowed.items()
                if t == subject_type
                for r in d.decision.quota_rules
            }
            for rule in rules:
                counts[rule] += per_type[subject_type]
        periods = {r: quota_period_start(engine.quotas[r].period, now) for r in counts}
        call.quota_writes, call.quota_charged = self.quotas.charge(call.requester, periods, counts)
        allowed_themes = {theme for _, theme in allowed}
        self._check_deadline(context)
        subject_ids = [s for s, _ in parsed]
        today = china_today()
        names, records = await self._reader.read(subject_ids, allowed_themes, today)
        by_subject: dict[str, dict[str, list[answers.StoredRecord]]] = {}
        for record in records:
            by_subject.setdefault(record.subject_id, {}).setdefault(record.theme, []).append(record)
        body = exchange_pb2.AnswerBody(
            requester=call.requester,
            provider=self.member_id,
            request_digest=call.request_digest,
            answered_unix_micros=now_us(),
            memorandum_version=federation.version,
            memorandum_hash=federation.hash,
        )
        for subject_id, subject_type in parsed:
            held = by_subject.get(subject_id, {})
            found = subject_id in names
            shown = body.subjects.add(
                subject_id=mask_identifier(subject_id, subject_type),
                subject_type=subject_type,
            )
            if mode is Mode.FULL:
                shown.found = found
                if found:
                    shown.name = mask_subject_name(names[subject_id], subject_type)
            for theme in themes:
                decided = decisions.get((subject_type, theme))
                if decided is None:
                    continue
                theme_answer = shown.themes.add()
                theme_answer.CopyFrom(decided.shape.answer)
                if not decided.decision.allowed:
                    continue
                in_theme = held.get(theme, [])
                theme_answer.under_objection = any(r.status == "objection" for r in in_theme)
                if mode is Mode.CHECK:
                    theme_answer.hit = bool(in_theme)
                else:
                    answers.add_records(theme_answer, in_theme, decided.shape)
        return body.SerializeToString(deterministic=True)

    def _record_decisions(
        self,
        call: _Call,
        federation: Federation,
        decisions: Mapping[tuple[str, str], _Decided],
        asked: list[str],
    ) -> None:
        rule_ids: dict[str, None] = {}
        for decided in decisions.values():
            rule_ids.update(dict.fromkeys(decided.decision.rule_ids))
        call.decided = list(decisions.values())
        allowed = [d.decision for d in call.decided if d.decision.allowed]
        call.summary = audit_pb2.Decision(
            allowed=bool(allowed),
            mode=str(allowed[0].mode) if allowed else "",
            rule_ids=list(rule_ids),
            memorandum_version=federation.version,
            memorandum_hash=federation.hash,
            reason=""
            if allowed
            else "; ".join(dict.fromkeys(d.decision.reason for d in call.decided)),
        )
        if not asked:
            call.themes_asked = [t for _, t in decisions]

    # -- the record --------------------------------------------------------------------

    def _entry(self, call: _Call, outcome: audit_pb2.Outcome, answer_body: bytes = b"") -> bytes:
        header = call.header or exchange_pb2.RequestHeader()
        answered = [d.theme for d in call.decided if d.decision.allowed]
        masked = sorted({f for d in call.decided for f in d.decision.mask})
        entry = audit_pb2.AuditEntry(
            time_unix_micros=now_us(),
            requester=call.requester,
            responder=self.member_id,
            direction=audit_pb2.INCOMING,
            kind=cast(audit_pb2.Kind, call.kind),
            nonce=header.nonce,
            request_digest=call.request_digest,
            purpose=header.purpose,
            legal_basis=header.legal_basis,
            case_reference=header.case_reference,
            officer=header.officer,
            themes_asked=call.themes_asked,
            themes_answered=list(dict.fromkeys(answered)) if answer_body else [],
            masked_fields=masked if answer_body else [],
            outcome=outcome,
            answer_digest=hashlib.sha256(answer_body).digest() if answer_body else b"",
            theme_decisions=[d.audit for d in call.decided],
            peer_certificate=call.peer_fingerprint,
        )
        if call.summary is not None:
            entry.decision.CopyFrom(call.summary)
        if call.kind == audit_pb2.BATCH_CHECK:
            entry.subject_hmacs.extend(call.subject_hmacs)
        elif call.subject_hmacs:
            entry.subject_hmac = call.subject_hmacs[0]
        return encode(entry)

    def _purposes(self) -> Mapping[str, object]:
        try:
            return self.federation.current().memorandum.purpose_by_code
        except CreditExchangeError:
            return {}

    async def _append(self, entry: bytes, side_writes: list[SideWrite]) -> Receipt:
        started = time.perf_counter()
        receipt = await self.ledger.append(entry, side_writes)
        self.metrics.ledger_append.observe(time.perf_counter() - started)
        return receipt

    async def _refuse(
        self,
        call: _Call,
        refusal: Refused,
        context: Context,
        started: float,
    ) -> None:
        entry = self._entry(call, audit_pb2.Outcome(status=refusal.status, message=refusal.message))
        try:
            receipt = await self._append(entry, call.side_writes)
        except Exception:
            log.exception("refusal not recorded", extra={"data": {"method": call.method}})
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the provider could not record the call in its audit ledger; try again later",
            )
        self.metrics.refusals.labels(refusal.reason).inc()
        self._count(call, "deny", refusal.status, started)
        context.set_trailing_metadata((("audit-leaf-index", str(receipt.index)),))
        await context.abort(grpc.StatusCode[refusal.status], refusal.message)

    def _count(self, call: _Call, decision: str, status: str, started: float) -> None:
        purpose = call.header.purpose if call.header is not None else ""
        if purpose and purpose not in self._purposes():
            purpose = "unknown"  # a label per made-up purpose would grow without bound
        elapsed = time.perf_counter() - started
        self.metrics.queries.labels(call.requester, call.method, purpose, decision, status).inc()
        self.metrics.latency.labels(call.method).observe(elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "call",
            extra={
                "data": {
                    "method": call.method,
                    "requester": call.requester,
                    "purpose": purpose,
                    "status": status,
                    "ms": round(elapsed * 1000, 3),
                    "request": call.request_digest.hex()[:16],
                    "subjects": [h.hex()[:16] for h in call.subject_hmacs[:5]],
                }
            },
        )


class _QuotaView(Mapping[str, int]):
    """The engine's ``quota_used``, read lazily from the counter for the rules it asks about."""

    __slots__ = ("_at", "_counter", "_extra", "_quotas", "_requester")

    def __init__(
        self,
        counter: QuotaCounter,
        quotas: Mapping[str, Any],
        requester: str,
        at: dt.datetime,
        extra: int,
    ) -> None:
        self._counter = counter
        self._quotas = quotas
        self._requester = requester
        self._at = at
        self._extra = extra  # a batch of n subjects counts n queries: it must fit whole

    def __getitem__(self, rule: str) -> int:
        quota = self._quotas[rule]
        start = quota_period_start(quota.period, self._at)
        return self._counter.used(self._requester, rule, start) + self._extra

    def __iter__(self) -> Any:
        return iter(self._quotas)

    def __len__(self) -> int:
        return len(self._quotas)


def _pb_decision(d: Decision) -> audit_pb2.Decision:
    return audit_pb2.Decision(
        allowed=d.allowed,
        mode=str(d.mode) if d.mode else "",
        rule_ids=d.rule_ids,
        memorandum_version=d.memorandum_version,
        memorandum_hash=d.memorandum_hash,
        reason=d.reason,
    )


def _receipt(receipt: Receipt, entry: bytes) -> exchange_pb2.Receipt:
    return exchange_pb2.Receipt(
        leaf_index=receipt.index,
        leaf_hash=receipt.leaf_hash,
        checkpoint=receipt.checkpoint,
        inclusion_proof=list(receipt.proof),
        entry=entry,
    )
