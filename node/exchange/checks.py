"""The checks a provider makes on an incoming call before the policy decides, in order.

Each check either passes or raises :class:`~creditexchange.errors.Refused` with
the status and message the caller gets and a reason label for the metrics. The
provider runs them in this order (the first that fails refuses the call):

1. :meth:`Checks.peer` — the caller's member id comes from its mutual-TLS
   certificate, never from the request (``UNAUTHENTICATED`` without one, or with
   one that names no member, a wildcard or another member's name);
2. :meth:`Checks.size` — the message is within the size limit (``RESOURCE_EXHAUSTED``);
3. :meth:`Checks.federation` — this node holds a usable memorandum
   (``FAILED_PRECONDITION``);
4. :meth:`Checks.member` — the caller is a member of it, and its certificate is
   one the memorandum pins for it when it pins any (``PERMISSION_DENIED``,
   ``UNAUTHENTICATED``);
5. :meth:`Checks.revocation` — the certificate is not revoked (``UNAUTHENTICATED``;
   ``FAILED_PRECONDITION`` when this node's own list is out of date), before any
   work is spent on what the caller sent;
6. :meth:`Checks.unseal` — the request is sealed to this node's key and opens
   (``INVALID_ARGUMENT``);
7. :meth:`Checks.signature` — the envelope inside is signed by one of *that*
   member's keys (``UNAUTHENTICATED``: a bad signature, another member's key, an
   unknown key);
8. :meth:`Checks.parse` and :meth:`Checks.header` — the payload parses and its
   header names the caller as requester and this node as provider, its texts are
   NFKC, visible and within bounds, its subjects within the batch limit
   (``INVALID_ARGUMENT``; ``RESOURCE_EXHAUSTED`` for too many subjects);
9. :meth:`Checks.themes` — the themes asked are in the catalog, each once
   (``INVALID_ARGUMENT``);
10. :meth:`Checks.fresh` — its time is within the window and its nonce unseen, also
    across restarts (``UNAUTHENTICATED``);
11. :meth:`Checks.memorandum_version` — it was made under the installed version
    (``FAILED_PRECONDITION``).

:meth:`Checks.deadline` is asked again before the store is read and before the
answer is recorded: a caller that gave up is not answered.

The side services (the memorandum, the audit log, health, reflection) run
checks 1, 3, 4 and 5 on every call (``Provider.admit_side_call``).

Adding a check to incoming queries means adding a method here and calling it
from ``Provider.handle`` at its place in this order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from creditexchange.certs.identity import PeerCertificate, peer_certificate
from creditexchange.certs.revocation import RevocationWatcher
from creditexchange.clock import now_us
from creditexchange.errors import (
    CertificateError,
    CreditExchangeError,
    EnvelopeError,
    Refused,
    RevocationListExpired,
)
from creditexchange.node.catalog import Catalog
from creditexchange.node.exchange.envelope import open_envelope
from creditexchange.node.exchange.federation import Federation, FederationView
from creditexchange.node.exchange.protocol import HEADER_TEXT_LIMITS, Method, header_text_problem
from creditexchange.node.exchange.replay import (
    MAX_NONCE_BYTES,
    MIN_NONCE_BYTES,
    ReplayGuard,
    replayed,
)
from creditexchange.node.exchange.sealing import Opener
from creditexchange.node.ledger import SideWrite
from creditexchange.v1 import exchange_pb2

__all__ = ["Checks", "Context", "Limits"]

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 1 << 20
    max_batch_subjects: int = 1000


class Checks:
    """The checks of one provider, with what they consult."""

    def __init__(
        self,
        *,
        member_id: str,
        catalog: Catalog,
        federation: FederationView,
        replay: ReplayGuard,
        revocations: RevocationWatcher,
        limits: Limits,
        opener: Opener,
    ) -> None:
        self.member_id = member_id
        self.opener = opener
        self.catalog = catalog
        self.view = federation
        self.replay = replay
        self.revocations = revocations
        self.limits = limits

    def peer(self, context: Context) -> PeerCertificate:
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

    def size(self, size: int) -> None:
        if size > self.limits.max_message_bytes:
            raise Refused(
                "RESOURCE_EXHAUSTED",
                f"the message is {size} bytes; this node accepts at most "
                f"{self.limits.max_message_bytes}: split the batch",
                "size",
            )

    def federation(self) -> Federation:
        try:
            return self.view.current()
        except CreditExchangeError as exc:
            raise Refused(
                "FAILED_PRECONDITION", f"this node has no usable memorandum ({exc})", "memorandum"
            ) from None

    def member(self, federation: Federation, peer: PeerCertificate) -> None:
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

    def unseal(self, raw: bytes) -> exchange_pb2.Envelope:
        """The signed envelope inside the sealed request this node received."""
        sealed = exchange_pb2.SealedRequest()
        try:
            sealed.ParseFromString(raw)
        except DecodeError:
            raise Refused(
                "INVALID_ARGUMENT",
                "the message is not a SealedRequest: seal the signed envelope to the provider",
                "malformed",
            ) from None
        try:
            return self.opener.open(sealed)
        except EnvelopeError as exc:
            raise Refused("INVALID_ARGUMENT", str(exc), "sealing") from None

    def signature(
        self,
        federation: Federation,
        member: str,
        envelope: exchange_pb2.Envelope,
        payload_type: str,
    ) -> None:
        try:
            open_envelope(envelope, payload_type, federation.keys.get(member, {}))
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

    def revocation(self, peer: PeerCertificate) -> None:
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

    @staticmethod
    def parse(method: Method, payload: bytes) -> Any:
        request = method.request()
        try:
            request.ParseFromString(payload)
        except DecodeError:
            raise Refused(
                "INVALID_ARGUMENT",
                f"the payload is not a {method.request.DESCRIPTOR.name}",
                "malformed",
            ) from None
        if not request.HasField("header"):
            raise Refused("INVALID_ARGUMENT", "the request has no header", "malformed")
        return request

    def header(self, header: exchange_pb2.RequestHeader, member: str, subjects: int) -> None:
        def bad(message: str) -> Refused:
            return Refused("INVALID_ARGUMENT", message, "malformed")

        if header.requester != member:
            raise bad(f"the request names requester {header.requester!r}, the caller is {member}")
        if header.provider != self.member_id:
            raise bad(f"the request is addressed to {header.provider!r}, this is {self.member_id}")
        for name in HEADER_TEXT_LIMITS:
            problem = header_text_problem(name, getattr(header, name))
            if problem:
                raise bad(problem)
        if not MIN_NONCE_BYTES <= len(header.nonce) <= MAX_NONCE_BYTES:
            raise bad(
                f"the nonce has {len(header.nonce)} bytes; it must have {MIN_NONCE_BYTES} to "
                f"{MAX_NONCE_BYTES} random bytes"
            )
        if header.answer_key and len(header.answer_key) != 32:
            raise bad(
                f"the answer key has {len(header.answer_key)} bytes; it must have 32 random "
                "bytes, or none"
            )
        if subjects == 0:
            raise bad("no subject asked")
        if subjects > self.limits.max_batch_subjects:
            raise Refused(
                "RESOURCE_EXHAUSTED",
                f"{subjects} subjects in one batch; this node answers at most "
                f"{self.limits.max_batch_subjects}: split the batch",
                "size",
            )

    def themes(self, asked: list[str]) -> list[str]:
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

    def fresh(self, header: exchange_pb2.RequestHeader) -> list[SideWrite]:
        """Refuse a stale or replayed request; the side writes that persist its spent nonce."""
        problem = self.replay.time_problem(header.created_unix_micros, now_us())
        if problem:
            raise Refused("UNAUTHENTICATED", problem, "time")
        writes = self.replay.claim(header.requester, header.nonce, header.created_unix_micros)
        if writes is None:
            raise replayed()
        return writes

    @staticmethod
    def memorandum_version(header: exchange_pb2.RequestHeader, federation: Federation) -> None:
        if header.memorandum_version != federation.version:
            raise Refused(
                "FAILED_PRECONDITION",
                f"the request was made under memorandum version {header.memorandum_version}"
                f", this node holds version {federation.version}: fetch it (GetMemorandum) "
                "and install it if it is newer",
                "memorandum",
            )

    @staticmethod
    def deadline(context: Context) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise Refused(
                "DEADLINE_EXCEEDED",
                "the caller's deadline passed before the answer was ready",
                "deadline",
            )
