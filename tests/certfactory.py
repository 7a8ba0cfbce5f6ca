"""Member certificates the federation CA refuses to issue, signed with its key all the same.

``certs.authority.issue`` refuses wildcards, another member's name and malformed
host names, so the tests of what a node does with such a certificate (a CA that
once issued one, an operator who signed one by hand) make it here: the same
extensions as an issued certificate, any subject alternative names, signed with
the key of a CA folder made by ``init_ca``. Nothing is written to the CA's index.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from creditexchange.certs.authority import CaFolder, sign_member_certificate
from creditexchange.certs.identity import member_dns_name, member_uri

__all__ = ["ForgedCertificate", "forge_certificate"]


@dataclass(frozen=True)
class ForgedCertificate:
    """A certificate and its key, as PEM for grpc or as files for a node home."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.key`` (mode 0600) and ``<stem>.crt`` into ``folder``; their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        key_path, certificate_path = folder / f"{stem}.key", folder / f"{stem}.crt"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file was there before
        with os.fdopen(fd, "wb") as file:
            file.write(self.key_pem)
        certificate_path.write_bytes(self.certificate_pem)
        return key_path, certificate_path


def forge_certificate(
    ca_dir: Path,
    member: str,
    *,
    dns_names: Sequence[str] | None = None,
    ips: Sequence[str] = (),
    uris: Sequence[str] | None = None,
    days: int = 1,
) -> ForgedCertificate:
    """A node certificate for ``member`` with exactly these SANs, signed by the CA in ``ca_dir``.

    ``uris`` defaults to the member's one SPIFFE URI and ``dns_names`` to its
    ``<id>.member.credit-exchange``; whatever is given (even nothing) replaces the
    default whole, unchecked: ``["*.member.credit-exchange"]``, another member's
    name, ``bad_name``.
    """
    folder = CaFolder(ca_dir)
    ca_key = serialization.load_pem_private_key(folder.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey), f"{folder.key} is not an ECDSA key"
    ca_certificate = x509.load_pem_x509_certificate(folder.certificate.read_bytes())
    uris = [member_uri(member)] if uris is None else uris
    dns_names = [member_dns_name(member)] if dns_names is None else dns_names
    names: list[x509.GeneralName] = [
        *(x509.UniformResourceIdentifier(uri) for uri in uris),
        *(x509.DNSName(name) for name in dns_names),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
    ]
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = sign_member_certificate(
        ca_key,
        ca_certificate,
        member,
        key.public_key(),
        names,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=days),
        serial=x509.random_serial_number(),
    )
    return ForgedCertificate(certificate, key)
