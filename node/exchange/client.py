"""The requester side: ask another member, verify everything it answers, record it.

``FederationClient`` is the Python API that ``credit-node query`` and partner
integrations use. For every query it

1. builds the request (fresh 32-byte nonce, its time, the memorandum version it
   holds, purpose, legal basis, case reference, officer — texts NFKC-normalised
   and refused here if they hold control or format characters or nothing
   visible), signs it, and seals it to the keys the memorandum lists for the
   provider (``sealing``), so that only that member can read it;
2. calls the provider over mutual TLS, pinning the provider's member name
   (``<member>.member.credit-exchange``) in the certificate it must present;
3. checks the answer: signed by a key the memorandum lists for the provider,
   bound to this request's digest, addressed to this member, under the
   memorandum it holds (version and hash), one subject answer per subject asked,
   in order; the receipt's entry hashes to its leaf hash, records this request
   and this answer, and is included (RFC 9162 proof) in a checkpoint signed with
   the provider's key; that checkpoint is no fork or rollback of the largest this
   node has seen of the provider's log (``witnessing.ReceiptCheckpoints``: an older
   one must be proved consistent with it, through the provider's ``Audit``);
4. writes its own OUTGOING audit entry, with the provider's receipt, durably (and,
   in the same transaction, the receipt's checkpoint when it is the largest seen);
5. returns the verified answer (:class:`VerifiedAnswer`, read with this node's
   catalog: ``answer_view``), or raises :class:`QueryRefused` (the call was
   refused: its status and message, whether the refusal was signed by the
   provider, and in a note what the memorandum would allow instead, ``askable``)
   or :class:`AnswerRejected` (the answer did not verify: it is not used).

Before any of that, a request the installed memorandum or a check character
already rules out is refused here (:class:`ExchangeError`, saying what would be
allowed): nothing is sent, nothing is recorded on either side (``askable``).
Legal basis, case reference and officer are required arguments, as on the
command line; an empty text is sent as empty, for the policy to judge.

Refused and rejected queries are recorded too. A refusal counts as the
provider's — its status kept, its receipt recorded — only when the signed
``Refusal`` in its trailers verifies like an answer; any other failure (an
impostor's refusal, a transport error) is recorded with the status
``UNVERIFIED`` and no receipt. A client is made of this node's
:class:`Requester` parts and a running ledger; ``creditexchange.node.app`` opens
one from a node home (``open_client``).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import nacl.signing

from creditexchange.certs.identity import member_dns_name
from creditexchange.clock import now_us
from creditexchange.errors import (
    AnswerRejected,
    EnvelopeError,
    ExchangeError,
    InvalidIdentifier,
    NoteError,
    ProofError,
    QueryRefused,
    Refused,
)
from creditexchange.identifiers import mask_identifier, subject_type_of
from creditexchange.node.exchange.answer_view import INSTEAD_NOTE, VerifiedAnswer
from creditexchange.node.exchange.askable import Asked, allowed_instead, ruled_out, subject_types
from creditexchange.node.exchange.envelope import digest, open_envelope, seal
from creditexchange.node.exchange.federation import Federation, FederationView
from creditexchange.node.exchange.protocol import (
    ANSWER,
    HEADER_TEXT_LIMITS,
    MAX_BATCH_SUBJECTS,
    METHODS,
    REFUSAL,
    Method,
    call_entry,
    header_text_problem,
    leaf_index_of,
    refusal_of,
    subject_hmacs,
    subject_tag,
)
from creditexchange.node.exchange.sealing import seal_request
from creditexchange.node.ledger import Ledger, Receipt, SideWrite, merkle, origin_for
from creditexchange.node.ledger.entries import encode
from creditexchange.node.ledger.note import Checkpoint, Verifier, open_note
from creditexchange.node.ledger.note import key_id as note_key_id
from creditexchange.node.ledger.witnessing import ReceiptCheckpoints, WitnessRecords
from creditexchange.v1 import audit_pb2, exchange_pb2, exchange_pb2_grpc

__all__ = ["FederationClient", "Requester", "VerifiedAnswer"]


@dataclass(frozen=True)
class Requester:
    """This node as it asks: who it is, its keys, how it reaches and trusts the others."""

    member_id: str
    signing_key: nacl.signing.SigningKey
    hmac_key: bytes  # keys the subjects' HMACs in its audit entries
    credentials: grpc.ChannelCredentials  # its mutual-TLS certificate, key and CA
    federation: FederationView  # the installed memorandum: keys, endpoints, version
    peers: Mapping[str, str] = field(default_factory=dict)  # member -> host:port overrides
    timeout_s: float = 10.0


class FederationClient:
    """Ask the federation as one member: ``async with FederationClient(requester, ledger=…)``.

    With ``owns_ledger`` the client starts the ledger on entry and stops it on exit
    (a command that asks once); otherwise the ledger belongs to whoever gave it
    (a serving node, whose one appender the client shares).
    """

    def __init__(self, requester: Requester, *, ledger: Ledger, owns_ledger: bool = False) -> None:
        self.requester = requester
        self.member_id = requester.member_id
        self.signing_key = requester.signing_key
        self.hmac_key = requester.hmac_key
        self._ledger = ledger
        self._owns_ledger = owns_ledger
        self._channels: dict[str, grpc.aio.Channel] = {}
        # the largest checkpoint of each provider seen: every receipt's is checked against it
        self.receipt_checkpoints = ReceiptCheckpoints(WitnessRecords(ledger.log.engine))

    async def __aenter__(self) -> FederationClient:
        self.requester.federation.current()  # no memorandum, no questions: say so now
        if self._owns_ledger:
            await self._ledger.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        if self._owns_ledger:
            await self._ledger.close()

    @property
    def federation(self) -> Federation:
        return self.requester.federation.current()

    def channel(self, member: str) -> grpc.aio.Channel:
        channel = self._channels.get(member)
        if channel is None:
            target = self.federation.endpoint(member, self.requester.peers)
            channel = grpc.aio.secure_channel(
                target,
                self.requester.credentials,
                options=[
                    ("grpc.ssl_target_name_override", member_dns_name(member)),
                    ("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.max_metadata_size", 1 << 20),  # a signed refusal with its receipt
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
        partner: str = "",
    ) -> exchange_pb2.RequestHeader:
        """A request header to ``to``; its texts NFKC-normalised and checked as the
        provider will check them (:class:`ExchangeError` saying which field is wrong)."""
        texts = {
            "purpose": purpose,
            "legal_basis": legal_basis,
            "case_reference": case_reference,
            "officer": officer,
            "partner": partner,
        }
        for name in HEADER_TEXT_LIMITS:
            texts[name] = unicodedata.normalize("NFKC", texts[name]).strip()
            problem = header_text_problem(name, texts[name])
            if problem:
                raise ExchangeError(f"{problem}; nothing was sent")
        return exchange_pb2.RequestHeader(
            requester=self.member_id,
            provider=to,
            nonce=os.urandom(32),
            created_unix_micros=now_us(),
            memorandum_version=self.federation.version,
            answer_key=os.urandom(32),
            **texts,
        )

    async def query(
        self,
        subject: str,
        *,
        to: str,
        purpose: str,
        legal_basis: str,
        case_reference: str,
        officer: str,
        partner: str = "",
        themes: Sequence[str] = (),
        check: bool = False,
        timeout: float | None = None,
    ) -> VerifiedAnswer:
        """Query (or, with ``check``, hit / no-hit check) one subject at ``to``.

        ``legal_basis``, ``case_reference`` and ``officer`` are required, as on the
        command line; pass ``""`` to send one empty (the memorandum may require it).
        """
        header = self.header(
            to,
            purpose=purpose,
            legal_basis=legal_basis,
            case_reference=case_reference,
            officer=officer,
            partner=partner,
        )
        method = METHODS["Check" if check else "Query"]
        return await self._call(to, method, header, [subject], themes, timeout)

    async def batch_check(
        self,
        subjects: Sequence[str],
        *,
        to: str,
        purpose: str,
        legal_basis: str,
        case_reference: str,
        officer: str,
        partner: str = "",
        themes: Sequence[str] = (),
        timeout: float | None = None,
    ) -> VerifiedAnswer:
        """Hit / no-hit for many subjects in one call (e.g. every bidder of an auction);
        a subject's ``found`` is true when it is on a list checked."""
        header = self.header(
            to,
            purpose=purpose,
            legal_basis=legal_basis,
            case_reference=case_reference,
            officer=officer,
            partner=partner,
        )
        return await self._call(to, METHODS["BatchCheck"], header, subjects, themes, timeout)

    async def memorandum(self, member: str) -> exchange_pb2.GetMemorandumResponse:
        stub = exchange_pb2_grpc.CreditExchangeStub(self.channel(member))
        response: exchange_pb2.GetMemorandumResponse = await stub.GetMemorandum(
            exchange_pb2.GetMemorandumRequest(), timeout=self.requester.timeout_s
        )
        return response

    # -- a member's audit log (the Audit service) -----------------------------------------

    async def checkpoint(self, member: str) -> exchange_pb2.GetCheckpointResponse:
        """``member``'s latest signed checkpoint, with the cosignatures it holds on it."""
        stub = exchange_pb2_grpc.AuditStub(self.channel(member))
        response: exchange_pb2.GetCheckpointResponse = await stub.GetCheckpoint(
            exchange_pb2.GetCheckpointRequest(), timeout=self.requester.timeout_s
        )
        return response

    async def consistency_proof(self, member: str, first: int, second: int) -> list[bytes]:
        """``member``'s RFC 9162 proof that its tree of ``first`` entries is a prefix of its
        tree of ``second`` (unverified: check it against the two roots)."""
        stub = exchange_pb2_grpc.AuditStub(self.channel(member))
        response: exchange_pb2.GetConsistencyProofResponse = await stub.GetConsistencyProof(
            exchange_pb2.GetConsistencyProofRequest(first=first, second=second),
            timeout=self.requester.timeout_s,
        )
        if (response.first, response.second) != (first, second):
            raise AnswerRejected(
                f"{member} answered a consistency proof from {response.first} to "
                f"{response.second}, {first} to {second} was asked"
            )
        return list(response.hashes)

    async def add_cosignature(self, member: str, checkpoint: str, cosignature: str) -> None:
        """Hand ``member`` this node's cosignature line on its ``checkpoint``."""
        stub = exchange_pb2_grpc.AuditStub(self.channel(member))
        await stub.AddCosignature(
            exchange_pb2.AddCosignatureRequest(checkpoint=checkpoint, cosignature=cosignature),
            timeout=self.requester.timeout_s,
        )

    async def witnessed(self, member: str, of: str) -> exchange_pb2.GetWitnessedResponse:
        """What ``member``, as a witness, last verified of ``of``'s log, with its cosignature."""
        stub = exchange_pb2_grpc.AuditStub(self.channel(member))
        response: exchange_pb2.GetWitnessedResponse = await stub.GetWitnessed(
            exchange_pb2.GetWitnessedRequest(member=of), timeout=self.requester.timeout_s
        )
        return response

    async def _call(
        self,
        to: str,
        method: Method,
        header: exchange_pb2.RequestHeader,
        subjects: Sequence[str],
        themes: Sequence[str],
        timeout: float | None,
    ) -> VerifiedAnswer:
        if len(subjects) > MAX_BATCH_SUBJECTS:
            raise ExchangeError(
                f"{len(subjects)} subjects in one call; at most {MAX_BATCH_SUBJECTS} are "
                "accepted: split the batch; nothing was sent"
            )
        asked = Asked(
            requester=self.member_id,
            provider=to,
            purpose=header.purpose,
            subject_types=tuple(kind for _, kind in subject_types(subjects)),
            themes=tuple(themes),
            mode=method.mode,
            case_reference=header.case_reference,
            officer=header.officer,
            batch=method.batch,
        )
        ruled_out(self.federation, asked)  # before anything is sent or recorded
        request = method.request_for(header, subjects, themes)
        envelope = seal(method.payload_type, request.SerializeToString(), self.signing_key)
        request_digest = digest(envelope)
        try:
            sealed = seal_request(envelope, self.federation.keys.get(to, {}))
        except EnvelopeError as exc:
            raise ExchangeError(f"cannot ask {to}: {exc}") from None
        entry = call_entry(
            direction=audit_pb2.OUTGOING,
            method=method,
            requester=self.member_id,
            responder=to,
            header=request.header,
            request_digest=request_digest,
            subject_hmacs=subject_hmacs(self.hmac_key, subjects),
            themes_asked=request.themes,
        )
        stub = exchange_pb2_grpc.CreditExchangeStub(self.channel(to))
        call = getattr(stub, method.name)(sealed, timeout=timeout or self.requester.timeout_s)
        try:
            answer_envelope = await call
        except grpc.aio.AioRpcError as exc:
            await self._refused(to, exc, entry, (request_digest, sealed), asked)
        try:
            answer, body, checks = self._verify(
                to,
                answer_envelope,
                request_digest,
                expect=(method.kind, request.header, list(subjects)),
            )
            seen = await self._check_history(to, answer.receipt.checkpoint)
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
        own = await self._record(entry, seen)
        return VerifiedAnswer(
            to,
            body,
            answer.receipt,
            request_digest,
            own,
            checks,
            catalog=self.requester.federation.catalog,
            envelope=answer_envelope.SerializeToString(),
            answer_key=request.header.answer_key,
        )

    async def _refused(
        self,
        provider: str,
        error: grpc.aio.AioRpcError,
        entry: audit_pb2.AuditEntry,
        sent: tuple[bytes, exchange_pb2.SealedRequest],
        asked: Asked,
    ) -> None:
        """Record a failed call — as the provider's refusal, with its receipt, only when
        the provider signed it — and raise :class:`QueryRefused`; a signed refusal
        carries a note saying what the installed memorandum would allow instead."""
        status, message = error.code().name, error.details() or ""
        if len(message) > Refused.MAX_MESSAGE_CHARS:  # whoever answered, the record is bounded
            message = message[: Refused.MAX_MESSAGE_CHARS - 1] + "…"
        request_digest, sealed = sent
        try:
            refusal = self._verify_refusal(
                provider,
                error.trailing_metadata(),
                {request_digest, hashlib.sha256(sealed.SerializeToString()).digest()},
                status,
                message,
            )
            seen = await self._check_history(provider, refusal.receipt.checkpoint)
        except AnswerRejected as why:
            entry.outcome.CopyFrom(
                audit_pb2.Outcome(status="UNVERIFIED", message=f"{status}: {message} ({why})")
            )
            await self._record(entry)
            raise QueryRefused(
                provider, status, message, leaf_index_of(error.trailing_metadata()), verified=False
            ) from None
        entry.outcome.CopyFrom(audit_pb2.Outcome(status=status, message=message))
        entry.remote_receipt.CopyFrom(
            audit_pb2.RemoteReceipt(
                leaf_index=refusal.receipt.leaf_index,
                leaf_hash=refusal.receipt.leaf_hash,
                checkpoint=refusal.receipt.checkpoint,
            )
        )
        await self._record(entry, seen)
        refused = QueryRefused(provider, status, message, refusal.receipt.leaf_index)
        instead = allowed_instead(self.federation, asked)
        if instead:
            refused.add_note(INSTEAD_NOTE + instead)
        raise refused

    async def _record(
        self, entry: audit_pb2.AuditEntry, side_writes: Sequence[SideWrite] = ()
    ) -> Receipt:
        entry.time_unix_micros = now_us()
        return await self._ledger.append(encode(entry), side_writes)

    async def _check_history(self, provider: str, checkpoint: str) -> list[SideWrite]:
        """A receipt's checkpoint (its signature verified) against the largest this node has
        seen of ``provider``'s log: AnswerRejected for a fork or a rollback; the write that
        records it, with the entry holding the receipt, when it is the largest."""

        async def prove(first: int, second: int) -> list[bytes]:
            return await self.consistency_proof(provider, first, second)

        try:
            return await self.receipt_checkpoints.check(provider, checkpoint, prove)
        except (NoteError, ProofError) as exc:
            raise AnswerRejected(f"the receipt's checkpoint is not consistent: {exc}") from None

    # -- verifying ------------------------------------------------------------------------

    def _verify(
        self,
        provider: str,
        envelope: exchange_pb2.Envelope,
        request_digest: bytes,
        expect: tuple[int, exchange_pb2.RequestHeader, list[str]] | None = None,
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
            _check_subjects(body, asked, header.answer_key)
            if body.memorandum_version != header.memorandum_version:
                raise AnswerRejected(
                    f"the answer was given under memorandum version {body.memorandum_version}, "
                    f"the request under {header.memorandum_version}"
                )
            if body.memorandum_hash != federation.hash:
                raise AnswerRejected(
                    f"the answer was given under a memorandum of version "
                    f"{header.memorandum_version} whose hash differs from the one this node "
                    "installed: the two nodes hold different memoranda of the same version"
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
        checkpoint = self._verify_inclusion(provider, keys[signer], receipt)
        checks = (
            f"answer signed by {provider} (key {signer[:16]}…)",
            f"bound to request {request_digest.hex()[:16]}…",
            f"audit entry {receipt.leaf_index} records this request and answer",
            f"entry included in {provider}'s signed checkpoint of size {checkpoint.size}",
        )
        return answer, body, checks

    def _verify_inclusion(
        self, provider: str, verify_key: nacl.signing.VerifyKey, receipt: exchange_pb2.Receipt
    ) -> Checkpoint:
        """The checkpoint of a receipt, signed by ``provider``'s key, including its leaf."""
        origin = origin_for(provider, self.federation.memorandum.federation)
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
        except (NoteError, ProofError) as exc:
            raise AnswerRejected(f"the receipt does not verify: {exc}") from None
        return checkpoint

    def _verify_refusal(
        self,
        provider: str,
        metadata: object,
        request_digests: set[bytes],
        status: str,
        message: str,
    ) -> exchange_pb2.Refusal:
        """The provider's signed refusal of this request, verified; AnswerRejected saying
        why it is not the provider's otherwise."""
        envelope = refusal_of(metadata)
        if envelope is None:
            raise AnswerRejected(f"no refusal signed by {provider} came with it")
        keys = self.federation.keys.get(provider, {})
        try:
            signer = open_envelope(envelope, REFUSAL, keys)
        except EnvelopeError as exc:
            raise AnswerRejected(f"the refusal is not signed by {provider}: {exc}") from None
        refusal = exchange_pb2.Refusal()
        entry = audit_pb2.AuditEntry()
        try:
            refusal.ParseFromString(envelope.payload)
            entry.ParseFromString(refusal.receipt.entry)
        except Exception:
            raise AnswerRejected(f"the refusal of {provider} does not parse") from None
        if (
            refusal.requester != self.member_id
            or refusal.provider != provider
            or refusal.request_digest not in request_digests
            or refusal.status != status
            or refusal.message != message
        ):
            raise AnswerRejected(
                f"the refusal signed by {provider} is not of this request with this status"
            )
        receipt = refusal.receipt
        if merkle.leaf_hash(receipt.entry) != receipt.leaf_hash or (
            entry.request_digest != refusal.request_digest
            or entry.requester != self.member_id
            or entry.responder != provider
            or entry.direction != audit_pb2.INCOMING
            or entry.outcome.status != status
        ):
            raise AnswerRejected(f"{provider}'s audit entry does not record this refusal")
        self._verify_inclusion(provider, keys[signer], receipt)
        return refusal


def _check_subjects(body: exchange_pb2.AnswerBody, asked: Sequence[str], answer_key: bytes) -> None:
    """One subject answer per subject asked, each that subject (as the provider shows it:
    individuals masked, and tagged with the request's answer key, so that two people whose
    masked ids coincide are not swapped), of its type, in the request's order."""
    if len(body.subjects) != len(asked):
        raise AnswerRejected(
            f"the answer covers {len(body.subjects)} subject(s), {len(asked)} were asked"
        )
    for position, (subject, answered) in enumerate(zip(asked, body.subjects, strict=True)):
        try:
            canonical, subject_type = subject_type_of(subject)
        except InvalidIdentifier:
            raise AnswerRejected(
                f"the provider answered for subject {position + 1}, which is not a valid identifier"
            ) from None
        if (
            answered.subject_id != mask_identifier(canonical, subject_type)
            or answered.subject_type != subject_type
            or (answer_key and answered.subject_tag != subject_tag(answer_key, canonical))
        ):
            raise AnswerRejected(
                f"answer {position + 1} is about another subject than the one asked in that "
                "place: the subjects are swapped or replaced"
            )
