"""This node's own TLS identity: its key, its certificate and the federation CA, checked together.

:func:`load_node_credentials` reads the three files a node is given by the CA
operator and refuses them unless they fit: the key file is not readable by
others, the key is the certificate's, the certificate was signed by the CA, is
within its validity and names exactly one member. The PEM bytes it returns are
what ``grpc.ssl_server_credentials`` and ``grpc.ssl_channel_credentials`` take;
a client reaches member ``m`` with the channel option
``("grpc.ssl_target_name_override", member_dns_name(m))``.
"""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from creditexchange.certs.identity import member_of
from creditexchange.errors import CredentialsError, PeerIdentityError

__all__ = [
    "NodeCredentials",
    "load_node_credentials",
]


@dataclass(frozen=True)
class NodeCredentials:
    """A node's TLS identity as PEM bytes, ready for grpc; ``repr`` never shows the key."""

    member: str
    serial: int
    not_after: dt.datetime
    certificate_pem: bytes
    private_key_pem: bytes
    ca_pem: bytes

    def __repr__(self) -> str:
        return f"NodeCredentials(member={self.member!r}, serial={self.serial:x})"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read the {what} {path}: {exc.strerror}") from None


def load_node_credentials(
    certificate_path: Path, key_path: Path, ca_path: Path, now: dt.datetime | None = None
) -> NodeCredentials:
    """Read and cross-check a node's certificate, key and CA; :class:`CredentialsError` if unfit."""
    try:
        mode = key_path.stat().st_mode
    except OSError as exc:
        raise CredentialsError(f"cannot read the node key {key_path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{key_path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run 'chmod 600 {key_path}'"
        )
    key_pem = _read(key_path, "node key")
    certificate_pem = _read(certificate_path, "node certificate")
    ca_pem = _read(ca_path, "CA certificate")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except (ValueError, TypeError) as exc:
        raise CredentialsError(
            f"cannot parse {key_path}, {certificate_path} or {ca_path}: {exc}"
        ) from None
    if key.public_key() != certificate.public_key():
        raise CredentialsError(f"{key_path} is not the key of {certificate_path}")
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CredentialsError(
            f"{certificate_path} was not issued by the CA in {ca_path} "
            f"(its issuer is {certificate.issuer.rfc4514_string()!r})"
        ) from None
    moment = now or dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise CredentialsError(
            f"{certificate_path} is valid from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now; "
            "ask the CA operator for a new one"
        )
    try:
        member = member_of(certificate)
    except PeerIdentityError as exc:
        raise CredentialsError(f"{certificate_path}: {exc}") from None
    return NodeCredentials(
        member=member,
        serial=certificate.serial_number,
        not_after=certificate.not_valid_after_utc,
        certificate_pem=certificate_pem,
        private_key_pem=key_pem,
        ca_pem=ca_pem,
    )
