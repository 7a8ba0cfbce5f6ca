"""This node's own TLS identity: its key, its certificate and the federation CA, checked together.

:func:`load_node_credentials` reads the three files a node is given by the CA
operator and refuses them unless they fit: the key file is not readable by
others, the key is the certificate's, the certificate was signed by the CA, is
within its validity and names exactly one member. The PEM bytes it returns are
what ``grpc.ssl_server_credentials`` and ``grpc.ssl_channel_credentials`` take;
a client reaches member ``m`` with the channel option
``("grpc.ssl_target_name_override", member_dns_name(m))``.

:func:`replace_node_credentials` puts a renewed certificate and key in place of the
node's: only a pair that would load (and is the same member's, not revoked, and
pinned by the memorandum when it pins any) replaces the files in use, each in one
rename, the previous pair kept beside them. A node reads its files when it starts,
so it serves the new certificate from its next start.
"""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from creditexchange.certs.identity import fingerprint, member_of
from creditexchange.certs.revocation import RevocationList
from creditexchange.errors import CredentialsError, PeerIdentityError, RevocationListError
from creditexchange.files import replace_file

__all__ = [
    "CertificateStatus",
    "NodeCredentials",
    "Replaced",
    "certificate_status",
    "load_node_credentials",
    "replace_node_credentials",
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

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER, lowercase hex (the memorandum's form)."""
        return fingerprint(x509.load_pem_x509_certificate(self.certificate_pem))


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


@dataclass(frozen=True)
class Replaced:
    """A renewed certificate put in place: the pair before and after, and where the
    previous files were kept."""

    previous_serial: int | None
    current: NodeCredentials
    kept_certificate: Path | None
    kept_key: Path | None


def replace_node_credentials(
    new_certificate: Path,
    new_key: Path,
    *,
    certificate_path: Path,
    key_path: Path,
    ca_path: Path,
    crl_path: Path | None = None,
    pinned: Collection[str] = (),
    now: dt.datetime | None = None,
) -> Replaced:
    """Put ``new_certificate`` and ``new_key`` in place of the node's own pair.

    Refused (:class:`CredentialsError`, nothing changed) unless the new pair loads as a
    node's would (:func:`load_node_credentials`: the key is the certificate's, issued by
    the CA, valid now, naming one member), names the same member as the pair in use,
    is not on the revocation list at ``crl_path``, and — when the memorandum pins
    certificate fingerprints for the member (``pinned``) — is one of them. The previous
    files are kept beside as ``node.crt.<serial>`` and ``node.key.<serial>`` (the key
    0600); delete them once the node serves the new pair and the old serial is revoked.
    """
    new = load_node_credentials(new_certificate, new_key, ca_path, now)
    previous = _certificate_in(certificate_path)
    if previous is not None:
        try:
            old_member: str | None = member_of(previous)
        except PeerIdentityError:
            old_member = None
        if old_member is not None and old_member != new.member:
            raise CredentialsError(
                f"{new_certificate} is the certificate of {new.member}, the node's "
                f"({certificate_path}) of {old_member}: nothing was changed"
            )
    if crl_path is not None:
        try:
            revoked = RevocationList.load(crl_path, ca_path).is_revoked(new.serial)
        except RevocationListError as exc:
            raise CredentialsError(f"{exc}; nothing was changed") from None
        if revoked:
            raise CredentialsError(
                f"{new_certificate} (serial {new.serial:x}) is on the revocation list "
                f"{crl_path}: nothing was changed"
            )
    if pinned and new.fingerprint not in pinned:
        raise CredentialsError(
            f"the memorandum pins the certificates of {new.member} and {new_certificate} "
            f"(SHA-256 {new.fingerprint}) is not among them: peers would refuse it. Add its "
            "fingerprint to the member's certificate_fingerprints in a new memorandum "
            "version first; nothing was changed"
        )
    kept_certificate = kept_key = None
    if certificate_path.exists():
        serial = f"{previous.serial_number:x}" if previous is not None else "previous"
        kept_certificate = certificate_path.with_name(f"{certificate_path.name}.{serial}")
        kept_key = key_path.with_name(f"{key_path.name}.{serial}")
        _keep(key_path, kept_key)
        _keep(certificate_path, kept_certificate)
    replace_file(key_path, new.private_key_pem, 0o600)
    replace_file(certificate_path, new.certificate_pem, 0o644)
    return Replaced(
        None if previous is None else previous.serial_number, new, kept_certificate, kept_key
    )


def _certificate_in(path: Path) -> x509.Certificate | None:
    """The certificate at ``path``; None when there is none, or none readable."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _keep(path: Path, kept: Path) -> None:
    """A copy of ``path`` at ``kept`` (its mode kept), unless there is one already."""
    if not path.exists() or kept.exists():
        return
    replace_file(kept, path.read_bytes(), stat.S_IMODE(path.stat().st_mode))


@dataclass(frozen=True)
class CertificateStatus:
    """A node certificate's identity and validity, read even once it has expired."""

    member: str
    serial: int
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: float  # negative once expired

    def due(self, within_days: float) -> bool:
        """Whether it expires within ``within_days`` (or has expired): renew it now."""
        return self.days_left <= within_days


def certificate_status(path: Path, now: dt.datetime | None = None) -> CertificateStatus:
    """What the certificate at ``path`` is and how long it stays valid;
    :class:`CredentialsError` when it cannot be read or names no member."""
    certificate = _certificate_in(path)
    if certificate is None:
        raise CredentialsError(f"{path} is not a readable PEM certificate")
    try:
        member = member_of(certificate)
    except PeerIdentityError as exc:
        raise CredentialsError(f"{path}: {exc}") from None
    moment = now or dt.datetime.now(dt.UTC)
    return CertificateStatus(
        member=member,
        serial=certificate.serial_number,
        fingerprint=fingerprint(certificate),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        days_left=(certificate.not_valid_after_utc - moment).total_seconds() / 86_400,
    )
