"""How a member's identity is written into a certificate, and read back from a peer's.

A node certificate names its member in exactly one URI subject alternative name,
``spiffe://credit-exchange/member/<id>``, and carries the DNS name
``<id>.member.credit-exchange`` so that a client can pin which member it expects
to reach (``grpc.ssl_target_name_override``). The server takes the peer's member
id from the certificate the TLS handshake verified, never from the request body.

The names under ``.member.credit-exchange`` are the federation's own: a
certificate carries no other than its own member's, and no wildcard at all
(:func:`dns_name_problem`). Otherwise a certificate could pass, where a client
pins ``shenzhen.member.credit-exchange``, for a member it was not issued to. The
CA refuses to issue such names, and a peer certificate carrying one is refused.

:func:`peer_certificate` runs on every gRPC call, so it is cached on the exact
PEM bytes; a certificate that does not name exactly one member is an error, never
an anonymous or guessed peer.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from creditexchange.errors import InvalidMemberId, PeerIdentityError

__all__ = [
    "MEMBER_DNS_SUFFIX",
    "MEMBER_ID",
    "MEMBER_URI_PREFIX",
    "TRUST_DOMAIN",
    "PeerCertificate",
    "certificate_fingerprint",
    "certificate_serial",
    "check_member_id",
    "dns_name_problem",
    "fingerprint",
    "member_dns_name",
    "member_from_certificate",
    "member_of",
    "member_uri",
    "peer_certificate",
]

TRUST_DOMAIN = "credit-exchange"
MEMBER_URI_PREFIX = f"spiffe://{TRUST_DOMAIN}/member/"
MEMBER_DNS_SUFFIX = f".member.{TRUST_DOMAIN}"
_MEMBER_NAMESPACE = MEMBER_DNS_SUFFIX.removeprefix(".")  # member.credit-exchange
MEMBER_ID = re.compile(r"[a-z][a-z0-9-]{1,31}")


def check_member_id(member: str) -> str:
    """``member`` if it is a valid member id; :class:`InvalidMemberId` otherwise."""
    if not MEMBER_ID.fullmatch(member):
        raise InvalidMemberId(
            f"member id {member!r} is not valid: expected 2 to 32 characters, a lowercase "
            "letter followed by lowercase letters, digits or '-' (e.g. 'huizhou')"
        )
    return member


def member_uri(member: str) -> str:
    """The URI SAN that names ``member``: ``spiffe://credit-exchange/member/<id>``."""
    return MEMBER_URI_PREFIX + check_member_id(member)


def member_dns_name(member: str) -> str:
    """The DNS SAN a client pins to reach ``member``: ``<id>.member.credit-exchange``."""
    return check_member_id(member) + MEMBER_DNS_SUFFIX


def dns_name_problem(member: str, name: str) -> str | None:
    """Why a certificate of ``member`` must not carry the DNS name ``name``; None if it may.

    Refused: any name in the federation's member namespace (``member.credit-exchange``
    and every name under it, in any letter case, with or without a final dot) other
    than ``member``'s own ``<id>.member.credit-exchange``; and any wildcard (``*``).
    """
    own = member_dns_name(member)
    normal = name.lower().removesuffix(".")
    if (normal == _MEMBER_NAMESPACE or normal.endswith(MEMBER_DNS_SUFFIX)) and normal != own:
        return (
            f"DNS name {name!r} is in the federation's member namespace "
            f"(*{MEMBER_DNS_SUFFIX}), where a certificate of {member} may carry only {own}"
        )
    if "*" in name:
        return f"DNS name {name!r} is a wildcard, which would stand for hosts not named"
    return None


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex (the memorandum's form)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def member_of(certificate: x509.Certificate) -> str:
    """The member id named by the certificate's one URI SAN; :class:`PeerIdentityError` else.

    Also refused: a certificate with a DNS name :func:`dns_name_problem` finds wrong
    for that member (a wildcard, another member's name).
    """
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerIdentityError(
            f"certificate {certificate.serial_number:x} has no subjectAltName; expected exactly "
            f"one URI {MEMBER_URI_PREFIX}<id>"
        ) from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise PeerIdentityError(
            f"certificate {certificate.serial_number:x} has {len(uris)} URI SANs "
            f"{uris}; expected exactly one {MEMBER_URI_PREFIX}<id>"
        )
    uri = uris[0]
    if not uri.startswith(MEMBER_URI_PREFIX):
        raise PeerIdentityError(
            f"certificate {certificate.serial_number:x} names {uri!r}; expected a URI "
            f"{MEMBER_URI_PREFIX}<id>"
        )
    try:
        member = check_member_id(uri.removeprefix(MEMBER_URI_PREFIX))
    except InvalidMemberId as exc:
        raise PeerIdentityError(
            f"certificate {certificate.serial_number:x} names {uri!r}: {exc}"
        ) from None
    for name in san.get_values_for_type(x509.DNSName):
        problem = dns_name_problem(member, name)
        if problem is not None:
            raise PeerIdentityError(
                f"certificate {certificate.serial_number:x} of {member} is refused: {problem}; "
                "the member needs a certificate from the federation CA without that name "
                "('credit-node certs issue' does not issue it)"
            )
    return member


@dataclass(frozen=True)
class PeerCertificate:
    """What the node needs to know about a peer's certificate, parsed once."""

    member: str
    serial: int
    fingerprint: str  # SHA-256 of the DER, lowercase hex
    not_after: dt.datetime  # UTC


@functools.lru_cache(maxsize=1024)
def peer_certificate(pem: bytes) -> PeerCertificate:
    """Parse a peer certificate as grpc gives it (``auth_context()['x509_pem_cert'][0]``).

    Cached on the exact bytes (errors are not cached). Raises
    :class:`PeerIdentityError` for anything that is not a PEM certificate naming
    exactly one member, and for one with a DNS name not that member's to carry
    (:func:`member_of`).
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PeerIdentityError(
            f"the peer certificate is not a PEM X.509 certificate: {exc}"
        ) from None
    return PeerCertificate(
        member=member_of(certificate),
        serial=certificate.serial_number,
        fingerprint=fingerprint(certificate),
        not_after=certificate.not_valid_after_utc,
    )


def member_from_certificate(pem: bytes) -> str:
    """The member id of a peer certificate (PEM); :class:`PeerIdentityError` if it names none."""
    return peer_certificate(pem).member


def certificate_serial(pem: bytes) -> int:
    """The serial number of a peer certificate (PEM), to check against the revocation list."""
    return peer_certificate(pem).serial


def certificate_fingerprint(pem: bytes) -> str:
    """SHA-256 of a peer certificate's DER (PEM in), lowercase hex."""
    return peer_certificate(pem).fingerprint
