"""The requester side: ask another member, verify everything it answers, record it.

``FederationClient`` is the Python API that ``credit-node query`` and partner
integrations use. For every query it

1. builds the request (fresh 32-byte nonce, its time, the memorandum version it
   holds, purpose, legal basis, case reference, officer) and signs it;
2. calls the provider over mutual TLS, pinning the provider's member name
   (``<member>.member.credit-exchange``) in the certificate it must present;
3. checks the answer: signed by a key the memorandum lists for the provider,
   bound to this request's digest, addressed to this member; the receipt's entry
   hashes to its leaf hash, records this request and this answer, and is
   included (RFC 9162 proof) in a checkpoint signed with the provider's key;
4. writes its own OUTGOING audit entry, with the provider's receipt, durably;
5. returns the verified answer, or raises :class:`QueryRefused` (the provider
   said no: its status and message) or :class:`AnswerRejected` (the answer did
   not verify: it is not used).

Refused and rejected queries are recorded too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import nacl.signing

from creditexchange.certs.identity import member_dns_name
from creditexchange.clock import now_us
from creditexchange.errors import AnswerRejected, EnvelopeError, NoteError, QueryRefused
from creditexchange.node.catalog import load_catalog
from creditexchange.node.config import NodeConfig
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
from creditexchange.node.exchange.server import tls_material
from creditexchange.node.keys import load_hmac_key, load_signing_key
from creditexchange.node.ledger import merkle, open_ledger
from creditexchange.node.ledger.entries import encode, subject_hmac
from creditexchange.node.ledger.log import Ledger, Receipt, origin_for
from creditexchange.node.ledger.note import Checkpoint, Verifier, open_note
from creditexchange.node.ledger.note import key_id as note_key_id
from creditexchange.node.store import open_store
from creditexchange.policy.trust import TrustStore
from creditexchange.v1 import audit_pb2, exchange_pb2, exchange_pb2_grpc


@dataclass(frozen=True)
class VerifiedAnswer:
    provider: str
    body: exchange_pb2.AnswerBody
    receipt: exchange_pb2.Receipt
    request_digest: bytes
    own_receipt: Receipt  # this node's OUTGOING entry
    checks: tuple[str, ...] = field(default=())  # what was verified, for people

    @property
    def subjects(self) -> Sequence[exchange_pb2.SubjectAnswer]:
        return self.body.subjects


class FederationClient:
    """Ask the federation as one member: ``async with FederationClient(config) as client``."""

    def __init__(self, config: NodeConfig, *, ledger: Ledger | None = None) -> None:
        self.config = config
        self.member_id = config.member_id
        self._own_ledger = ledger is None
        self._ledger = ledger
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._credentials: grpc.ChannelCredentials | None = None
        self._view: FederationView | None = None
        self.signing_key: nacl.signing.SigningKey = load_signing_key(config.signing_key_path)
        self.hmac_key = load_hmac_key(config.subject_hmac_key_path)

    async def __aenter__(self) -> FederationClient:
        tls = tls_material(self.config)
        self._credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem,
            private_key=tls.private_key_pem,
            certificate_chain=tls.certificate_pem,
        )
        self._view = FederationView(
            TrustStore(self.config.policy_dir),
            load_catalog(self.config.catalog_path),
            self.member_id,
        )
        self._view.current()
        if self._ledger is None:
            self._ledger = open_ledger(self.config, open_store(self.config.database_url))
            await self._ledger.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        if self._own_ledger and self._ledger is not None:
            await self._ledger.close()
            self._ledger = None

    @property
    def federation(self) -> Federation:
        assert self._view is not None, "use 'async with FederationClient(...)'"
        return self._view.current()

    def channel(self, member: str) -> grpc.aio.Channel:
        channel = self._channels.get(member)
        if channel is None:
            assert self._credentials is not None
            target = self.federation.endpoint(member, self.config.settings.peers)
            channel = grpc.aio.secure_channel(
                target,
                self._credentials,
                options=[
                    ("grpc.ssl_target_name_override", member_dns_name(member)),
                    ("grpc.max_receive_message_length", 64 << 20),
                ],
            )
            self._channels[member] = channel
        return channel

    # -- asking -------------------------------------------------------------------------

    def header(
        self,
        to: str,
        *,
        purpose: str,
        legal_basis: str,
        case_reference: str,
        officer: str,
    ) -> exchange_pb2.RequestHeader:
        return exchange_pb2.RequestHeader(
            requester=self.member_id,
            provider=to,
            nonce=os.urandom(32),
            created_unix_micros=now_us(),
            memorandum_version=self.federation.version,
            purpose=purpose,
            legal_basis=legal_basis,
            case_reference=case_reference,
            officer=officer,
        )

    async def query(
        self,
        subject: str,
        *,
        to: str,
        purpose: str,
        legal_basis: str = "",
        case_reference: str = "",
        officer: str = "",
        themes: Sequence[str] = (),
        check: bool = False,
        timeout: float | None = None,
    ) -> VerifiedAnswer:
        """Query (or, with ``check``, hit / no-hit check) one subject at ``to``."""
        header = self.header(
            to,
            purpose=purpose,
            legal_basis=legal_basis,
            case_reference=case_reference,
            officer=officer,
        )
        if check:
            request: Any = exchange_pb2.CheckRequest(
                header=header, subject_id=subject, themes=themes
            )
            return await self._call(to, "Check", CHECK_REQUEST, request, [subject], timeout)
        request = exchange_pb2.QueryRequest(header=header, subject_id=subject, themes=themes)
        return await self._call(to, "Query", QUERY_REQUEST, request, [subject], timeout)

    async def batch_check(
        self,
        subjects: Sequence[str],
        *,
        to: str,
        purpose: str,
        legal_basis: str = "",
        case_reference: str = "",
        officer: str = "",
        themes: Sequence[str] = (),
        timeout: float | None = None,
    ) -> VerifiedAnswer:
        """Hit / no-hit for many subjects in one call (e.g. every bidder of an auction)."""
        header = self.header(
            to,
            purpose=purpose,
            legal_basis=legal_basis,
            case_reference=case_reference,
            officer=officer,
        )
        request = exchange_pb2.BatchCheckRequest(header=header, subject_ids=subjects, themes=themes)
        return await self._call(
            to, "BatchCheck", BATCH_CHECK_REQUEST, request, list(subjects), timeout
        )

    async def memorandum(self, member: str) -> exchange_pb2.GetMemorandumResponse:
        stub = exchange_pb2_grpc.CreditExchangeStub(self.channel(member))
        response: exchange_pb2.GetMemorandumResponse = await stub.GetMemorandum(
            exchange_pb2.GetMemorandumRequest(), timeout=self.config.settings.query_timeout_s
        )
        return response

    async def _call(
        self,
        to: str,
        method: str,
        payload_type: str,
        request: Any,
        subjects: list[str],
        timeout: float | None,
    ) -> VerifiedAnswer:
        envelope = seal(payload_type, request.SerializeToString(), self.signing_key)
        request_digest = digest(envelope)
        stub = exchange_pb2_grpc.CreditExchangeStub(self.channel(to))
        rpc = getattr(stub, method)
        kind = {"Query": audit_pb2.QUERY, "Check": audit_pb2.CHECK}.get(
            method, audit_pb2.BATCH_CHECK
        )
        entry = audit_pb2.AuditEntry(
            requester=self.member_id,
            responder=to,
            direction=audit_pb2.OUTGOING,
            kind=kind,
            nonce=request.header.nonce,
            request_digest=request_digest,
            purpose=request.header.purpose,
            legal_basis=request.header.legal_basis,
            case_reference=request.header.case_reference,
            officer=request.header.officer,
            themes_asked=list(request.themes),
        )
        hmacs = [subject_hmac(self.hmac_key, s) for s in subjects]
        if kind == audit_pb2.BATCH_CHECK:
            entry.subject_hmacs.extend(hmacs)
        else:
            entry.subject_hmac = hmacs[0]
        call = rpc(envelope, timeout=timeout or self.config.settings.query_timeout_s)
        try:
            answer_envelope = await call
        except grpc.aio.AioRpcError as exc:
            leaf = _leaf_index(exc.trailing_metadata())
            entry.outcome.CopyFrom(
                audit_pb2.Outcome(status=exc.code().name, message=exc.details() or "")
            )
            if leaf is not None:
                entry.remote_receipt.leaf_index = leaf
            await self._record(entry)
            raise QueryRefused(to, exc.code().name, exc.details() or "", leaf) from None
        try:
            answer, body, checks = self._verify(
                to, answer_envelope, request_digest, expect=(kind, request.header, len(subjects))
            )
        except AnswerRejected as exc:
            entry.outcome.CopyFrom(audit_pb2.Outcome(status="ANSWER_REJECTED", message=str(exc)))
            await self._record(entry)
            raise
        entry.outcome.CopyFrom(audit_pb2.Outcome(status="OK"))
        entry.answer_digest = hashlib.sha256(answer.body).digest()
        entry.themes_answered.extend(
            dict.fromkeys(t.theme for s in body.subjects for t in s.themes if t.allowed)
        )
        entry.remote_receipt.CopyFrom(
            audit_pb2.RemoteReceipt(
                leaf_index=answer.receipt.leaf_index,
                leaf_hash=answer.receipt.leaf_hash,
                checkpoint=answer.receipt.checkpoint,
            )
        )
        decision = audit_pb2.AuditEntry()
        decision.ParseFromString(answer.receipt.entry)
        entry.decision.CopyFrom(decision.decision)
        own = await self._record(entry)
        return VerifiedAnswer(to, body, answer.receipt, request_digest, own, checks)

    async def _record(self, entry: audit_pb2.AuditEntry) -> Receipt:
        assert self._ledger is not None
        entry.time_unix_micros = now_us()
        return await self._ledger.append(encode(entry))

    # -- verifying ------------------------------------------------------------------------

    def _verify(
        self,
        provider: str,
        envelope: exchange_pb2.Envelope,
        request_digest: bytes,
        expect: tuple[int, exchange_pb2.RequestHeader, int] | None = None,
    ) -> tuple[exchange_pb2.Answer, exchange_pb2.AnswerBody, tuple[str, ...]]:
        """Check an answer envelope; ``expect`` = (entry kind, request header, subjects asked)."""
        federation = self.federation
        keys = federation.keys.get(provider, {})
        try:
            signer = open_envelope(envelope, ANSWER, keys)
        except EnvelopeError as exc:
            raise AnswerRejected(f"the answer of {provider} is not signed by it: {exc}") from None
        answer = exchange_pb2.Answer()
        body = exchange_pb2.AnswerBody()
        entry = audit_pb2.AuditEntry()
        try:
            answer.ParseFromString(envelope.payload)
            body.ParseFromString(answer.body)
            entry.ParseFromString(answer.receipt.entry)
        except Exception:
            raise AnswerRejected(f"the answer of {provider} does not parse") from None
        if body.request_digest != request_digest:
            raise AnswerRejected("the answer is bound to another request (request digest differs)")
        if body.requester != self.member_id or body.provider != provider:
            raise AnswerRejected(
                f"the answer is from {body.provider!r} to {body.requester!r}, expected "
                f"{provider} to {self.member_id}"
            )
        if expect is not None:
            _, header, asked = expect
            if len(body.subjects) != asked:
                raise AnswerRejected(
                    f"the answer covers {len(body.subjects)} subject(s), {asked} were asked"
                )
            if body.memorandum_version != header.memorandum_version:
                raise AnswerRejected(
                    f"the answer was given under memorandum version {body.memorandum_version}, "
                    f"the request under {header.memorandum_version}"
                )
        receipt = answer.receipt
        if merkle.leaf_hash(receipt.entry) != receipt.leaf_hash:
            raise AnswerRejected("the receipt's entry does not hash to its leaf hash")
        if (
            entry.request_digest != request_digest
            or entry.answer_digest != hashlib.sha256(answer.body).digest()
            or entry.requester != self.member_id
            or entry.responder != provider
            or entry.direction != audit_pb2.INCOMING
            or entry.outcome.status != "OK"
            or (expect is not None and (entry.kind != expect[0] or entry.nonce != expect[1].nonce))
        ):
            raise AnswerRejected(
                "the provider's audit entry does not record this request and this answer"
            )
        verify_key = keys[signer]
        origin = origin_for(provider, federation.memorandum.federation)
        verifier = Verifier(origin, note_key_id(origin, bytes(verify_key)), bytes(verify_key))
        try:
            text, _ = open_note(receipt.checkpoint, [verifier])
            checkpoint = Checkpoint.parse(text)
            merkle.verify_inclusion(
                receipt.leaf_hash,
                receipt.leaf_index,
                checkpoint.size,
                list(receipt.inclusion_proof),
                checkpoint.root_hash,
            )
        except (NoteError, merkle.ProofError) as exc:
            raise AnswerRejected(f"the receipt does not verify: {exc}") from None
        checks = (
            f"answer signed by {provider} (key {signer[:16]}…)",
            f"bound to request {request_digest.hex()[:16]}…",
            f"audit entry {receipt.leaf_index} records this request and answer",
            f"entry included in {provider}'s signed checkpoint of size {checkpoint.size}",
        )
        return answer, body, checks


def _leaf_index(metadata: Any) -> int | None:
    for key, value in metadata or ():
        if key == "audit-leaf-index":
            try:
                return int(value)
            except ValueError:
                return None
    return None


__all__ = [
    "AnswerRejected",
    "FederationClient",
    "QueryRefused",
    "VerifiedAnswer",
]
