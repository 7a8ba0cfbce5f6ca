"""The federation CA: create it, issue member certificates, revoke them, publish the CRL.

A CA folder holds::

    ca.key       the CA's ECDSA P-256 private key (PKCS#8 PEM, mode 0600); keep it offline
    ca.crt       the self-signed CA certificate: every node's trust root
    index.json   every certificate issued: serial, member, validity, fingerprint, revocation
    crl.pem      the signed revocation list; copy it to every node after each revocation
    members/     where ``issue`` writes ``<id>.key`` (0600) and ``<id>.crt`` by default

Invariants:

- No key is ever overwritten, and no key file exists for a moment with a mode
  wider than 0600: it is written under a temporary name created 0600, synced, then
  linked into place (the link fails if the name is taken).
- A certificate is recorded in the index before its files are written, so nothing
  that was issued escapes the index, and so revocation.
- Every published CRL has a higher CRL number than the one before it; revoking
  always re-publishes, so a revocation is never recorded without its CRL.
- Operations on one CA folder take its lock file in turn.
- A member certificate carries its member's URI and ``<id>.member.credit-exchange``,
  and besides only the host names and addresses the operator asked for: valid
  RFC 1123 host names, no wildcard, no other name in the member namespace
  (``certs/identity.py``: :func:`dns_name_problem`). Nothing is added unasked,
  not even loopback names.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from creditexchange.certs.identity import (
    check_member_id,
    dns_name_problem,
    fingerprint,
    member_dns_name,
    member_uri,
)
from creditexchange.certs.revocation import RevocationList
from creditexchange.errors import AuthorityError
from creditexchange.files import fsync_dir

__all__ = [
    "CA_DAYS",
    "CLOCK_SKEW",
    "CRL_DAYS",
    "DEFAULT_CA_NAME",
    "INDEX_FORMAT",
    "MEMBER_DAYS",
    "REASONS",
    "CaFolder",
    "IssuedCertificate",
    "IssuedFiles",
    "init_ca",
    "issue",
    "publish_crl",
    "read_index",
    "renew",
    "revoke",
    "sign_member_certificate",
]

DEFAULT_CA_NAME = "Credit Exchange Federation CA"
CA_DAYS = 3650
MEMBER_DAYS = 90
CRL_DAYS = 7
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates start this much before "now"
INDEX_FORMAT = "credit-exchange-ca-index/1"

# Reasons an operator may give (RFC 5280 names). certificateHold and removeFromCRL
# are left out: a revocation here is final.
REASONS = {
    flag.value: flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl)
}


@dataclass(frozen=True)
class CaFolder:
    """The files of a CA folder, by name."""

    path: Path

    @property
    def key(self) -> Path:
        return self.path / "ca.key"

    @property
    def certificate(self) -> Path:
        return self.path / "ca.crt"

    @property
    def index(self) -> Path:
        return self.path / "index.json"

    @property
    def crl(self) -> Path:
        return self.path / "crl.pem"

    @property
    def members(self) -> Path:
        return self.path / "members"


@dataclass(frozen=True)
class IssuedCertificate:
    """One line of the issuance index."""

    serial: int
    member: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial_hex,
            "member": self.member,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "fingerprint": self.fingerprint,
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IssuedCertificate:
        revoked_at = data.get("revoked_at")
        return cls(
            serial=int(data["serial"], 16),
            member=str(data["member"]),
            not_before=_parse_iso(data["not_before"]),
            not_after=_parse_iso(data["not_after"]),
            fingerprint=str(data["fingerprint"]),
            revoked_at=_parse_iso(revoked_at) if revoked_at else None,
            reason=data.get("reason"),
        )


@dataclass(frozen=True)
class IssuedFiles:
    """What ``issue`` made: the index record and where the key and certificate were written."""

    record: IssuedCertificate
    key_path: Path
    certificate_path: Path


@dataclass
class _Index:
    crl_number: int
    certificates: list[IssuedCertificate]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


# --- files -------------------------------------------------------------------------------


def _write_temporary(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a new file beside ``path``, created with ``mode`` before any byte is written."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _create_file(path: Path, data: bytes, mode: int) -> None:
    """Write a new file atomically; :class:`AuthorityError` if ``path`` exists already."""
    tmp = _write_temporary(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise AuthorityError(f"{path} already exists; it is never overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never half."""
    tmp = _write_temporary(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def _locked(folder: CaFolder) -> Iterator[None]:
    """Hold the CA folder's lock, so two operators' commands do not lose each other's changes."""
    fd = os.open(folder.path / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- the CA's own files ------------------------------------------------------------------


def _open_folder(ca_dir: Path) -> CaFolder:
    folder = CaFolder(Path(ca_dir))
    missing = [p.name for p in (folder.key, folder.certificate, folder.index) if not p.exists()]
    if missing:
        raise AuthorityError(
            f"{folder.path} is not a CA folder (no {', '.join(missing)}); "
            "create one with 'credit-node certs init-ca --out DIR'"
        )
    return folder


def _load_ca(folder: CaFolder) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    mode = folder.key.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthorityError(
            f"{folder.key} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run 'chmod 600 {folder.key}'"
        )
    try:
        key = serialization.load_pem_private_key(folder.key.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate(folder.certificate.read_bytes())
    except (ValueError, TypeError) as exc:
        raise AuthorityError(
            f"cannot read the CA key or certificate in {folder.path}: {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AuthorityError(f"{folder.key} is not an ECDSA key")
    if key.public_key() != certificate.public_key():
        raise AuthorityError(f"{folder.key} is not the key of {folder.certificate}")
    return key, certificate


def _read_index(folder: CaFolder) -> _Index:
    try:
        data = json.loads(folder.index.read_text("utf-8"))
        if data.get("format") != INDEX_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {INDEX_FORMAT!r}")
        return _Index(
            crl_number=int(data["crl_number"]),
            certificates=[IssuedCertificate.from_json(item) for item in data["certificates"]],
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuthorityError(f"{folder.index} is not a readable CA index: {exc}") from None


def _write_index(folder: CaFolder, index: _Index) -> None:
    data = {
        "format": INDEX_FORMAT,
        "crl_number": index.crl_number,
        "certificates": [record.to_json() for record in index.certificates],
    }
    _replace_file(folder.index, (json.dumps(data, indent=2) + "\n").encode())


def read_index(ca_dir: Path) -> list[IssuedCertificate]:
    """Every certificate the CA in ``ca_dir`` has issued, oldest first."""
    return _read_index(_open_folder(ca_dir)).certificates


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _serial() -> int:
    """A random positive 159-bit serial (top bit set, so always 40 hex digits)."""
    return (1 << 158) | secrets.randbits(158)


# --- operations --------------------------------------------------------------------------


def init_ca(out_dir: Path, name: str = DEFAULT_CA_NAME, days: int = CA_DAYS) -> CaFolder:
    """Create a new federation CA in ``out_dir``: key, certificate, empty index, empty CRL.

    Refuses (:class:`AuthorityError`) if ``out_dir`` already holds any CA file.
    """
    if days < 1:
        raise AuthorityError(f"a CA must be valid for at least 1 day, not {days}")
    folder = CaFolder(Path(out_dir))
    existing = [p.name for p in (folder.key, folder.certificate, folder.index, folder.crl)]
    existing = [n for n in existing if (folder.path / n).exists()]
    if existing:
        raise AuthorityError(
            f"{folder.path} already holds a CA ({', '.join(existing)}); a CA is never "
            "overwritten: choose another folder"
        )
    folder.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    with _locked(folder):
        _create_file(folder.key, _private_pem(key), 0o600)
        _create_file(folder.certificate, _certificate_pem(certificate), 0o644)
        _write_index(folder, _Index(crl_number=0, certificates=[]))
        _publish(folder, key, certificate, CRL_DAYS)
    return folder


def issue(
    member_id: str,
    ca_dir: Path,
    out_dir: Path | None = None,
    days: int = MEMBER_DAYS,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> IssuedFiles:
    """Issue a node certificate for ``member_id``: a new P-256 key and its certificate.

    The certificate names the member in exactly one URI SAN
    (``spiffe://credit-exchange/member/<id>``) and in the DNS name
    ``<id>.member.credit-exchange``, plus ``dns_names`` and ``ips`` (where the node
    is reached; none by default, so loopback names only when asked for). A DNS
    name that is not an RFC 1123 host name, a wildcard or another name in the
    member namespace is refused (:class:`AuthorityError`). The certificate serves
    both as server and client certificate. The key and certificate go to
    ``out_dir`` (default ``<ca_dir>/members``) as ``<id>.key`` (0600) and
    ``<id>.crt``; existing files there are never overwritten.
    """
    check_member_id(member_id)
    if days < 1:
        raise AuthorityError(f"a certificate must be valid for at least 1 day, not {days}")
    folder = _open_folder(ca_dir)
    target = Path(out_dir) if out_dir is not None else folder.members
    key_path, certificate_path = target / f"{member_id}.key", target / f"{member_id}.crt"
    names = _subject_alternative_names(member_id, dns_names, ips)
    with _locked(folder):
        ca_key, ca_certificate = _load_ca(folder)
        now = _now()
        not_after = now + dt.timedelta(days=days)
        if not_after > ca_certificate.not_valid_after_utc:
            raise AuthorityError(
                f"a certificate valid for {days} days would outlive the CA, which expires at "
                f"{_iso(ca_certificate.not_valid_after_utc)}; issue for fewer days or create "
                "a new CA"
            )
        taken = [p for p in (key_path, certificate_path) if p.exists()]
        if taken:
            raise AuthorityError(
                f"{', '.join(map(str, taken))} already exist(s); keys are never overwritten: "
                "move the old files away or choose --out"
            )
        key = _new_key()
        certificate = sign_member_certificate(
            ca_key,
            ca_certificate,
            member_id,
            key.public_key(),
            names,
            not_before=now - CLOCK_SKEW,
            not_after=not_after,
            serial=_serial(),
        )
        record = IssuedCertificate(
            serial=certificate.serial_number,
            member=member_id,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            fingerprint=fingerprint(certificate),
        )
        index = _read_index(folder)
        index.certificates.append(record)
        _write_index(folder, index)  # recorded first: nothing issued escapes revocation
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_file(key_path, _private_pem(key), 0o600)
        _create_file(certificate_path, _certificate_pem(certificate), 0o644)
    return IssuedFiles(record, key_path, certificate_path)


def renew(
    current_certificate: Path,
    ca_dir: Path,
    out_dir: Path | None = None,
    days: int = MEMBER_DAYS,
) -> IssuedFiles:
    """Issue the successor of a member certificate: a new key and a certificate for the
    same member with the same host names and addresses, valid ``days`` from now.

    ``current_certificate`` is the certificate in use (the node's ``tls/node.crt``); it
    must be one this CA issued (its serial is in the index). The new files go to
    ``out_dir`` (default ``<ca_dir>/members/<id>-<UTC time>/``) as ``<id>.key`` (0600)
    and ``<id>.crt``; nothing is overwritten. The old certificate stays valid until it
    expires or is revoked (``revoke SERIAL --reason superseded`` once the node serves
    the new one).
    """
    try:
        certificate = x509.load_pem_x509_certificate(Path(current_certificate).read_bytes())
    except OSError as exc:
        raise AuthorityError(f"cannot read {current_certificate}: {exc.strerror}") from None
    except ValueError as exc:
        raise AuthorityError(f"{current_certificate} is not a PEM certificate: {exc}") from None
    folder = _open_folder(ca_dir)
    known = {record.serial: record for record in _read_index(folder).certificates}
    record = known.get(certificate.serial_number)
    if record is None or record.fingerprint != fingerprint(certificate):
        raise AuthorityError(
            f"{current_certificate} (serial {certificate.serial_number:x}) was not issued by "
            f"the CA in {folder.path}: renew it with the CA that issued it, or issue a new "
            "certificate with 'credit-node certs issue'"
        )
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    member = record.member
    dns = [n for n in san.get_values_for_type(x509.DNSName) if n != member_dns_name(member)]
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    if out_dir is None:
        out_dir = folder.members / f"{member}-{_now():%Y%m%dT%H%M%SZ}"
    return issue(member, ca_dir, out_dir=out_dir, days=days, dns_names=dns, ips=ips)


def sign_member_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_certificate: x509.Certificate,
    member_id: str,
    public_key: ec.EllipticCurvePublicKey,
    names: Sequence[x509.GeneralName],
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int,
) -> x509.Certificate:
    """A node certificate (server and client) for ``public_key`` with exactly ``names``,
    signed with the CA's key. It checks nothing: :func:`issue` checks the member id, the
    names and the dates, records the serial and writes the files; this only signs."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member_id)]))
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _subject_alternative_names(
    member_id: str, dns_names: Sequence[str], ips: Sequence[str]
) -> list[x509.GeneralName]:
    dns = list(dict.fromkeys([member_dns_name(member_id), *map(_host_name, dns_names)]))
    for name in dns:
        problem = dns_name_problem(member_id, name)
        if problem is not None:
            raise AuthorityError(
                f"{problem}; give --dns once for each host name the node is reached by "
                f"({member_dns_name(member_id)} is always included)"
            )
    try:
        addresses = list(dict.fromkeys(ipaddress.ip_address(ip) for ip in ips))
    except ValueError as exc:
        raise AuthorityError(f"{exc}; expected an IPv4 or IPv6 address") from None
    return [
        x509.UniformResourceIdentifier(member_uri(member_id)),
        *(x509.DNSName(name) for name in dns),
        *(x509.IPAddress(address) for address in addresses),
    ]


_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII | re.IGNORECASE)


def _host_name(name: str) -> str:
    """``name`` in lowercase if it is an RFC 1123 host name; :class:`AuthorityError` else.

    A wildcard passes here so that :func:`dns_name_problem` names it as such.
    """
    if "*" in name:
        return name.lower()
    bad = next((label for label in name.split(".") if not _HOST_LABEL.fullmatch(label)), None)
    if len(name) > 253 or bad is not None:
        found = f"{len(name)} characters" if bad is None else f"the label {bad!r}"
        raise AuthorityError(
            f"DNS name {name!r} is not a valid host name ({found}): expected labels of 1 to 63 "
            "ASCII letters, digits or '-', not beginning or ending with '-', joined by single "
            "dots, 253 characters at most (RFC 1123); give --dns a host name the node is "
            "reached by (an internationalized name in its xn-- form), or none"
        )
    return name.lower()


def _parse_serial(serial_hex: str) -> int:
    """A serial as an operator types it: hex, with or without ``0x`` or ``:`` separators."""
    text = serial_hex.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(text, 16)
    except ValueError:
        raise AuthorityError(
            f"serial {serial_hex!r} is not hexadecimal; copy it from 'credit-node certs list'"
        ) from None


def revoke(
    serial_hex: str, ca_dir: Path, reason: str = "keyCompromise", crl_days: int = CRL_DAYS
) -> IssuedCertificate:
    """Revoke the certificate with this serial and publish a new CRL that lists it.

    Revoking a certificate that is already revoked keeps its first date and
    reason, and is not an error. An unknown serial is.
    """
    if reason not in REASONS:
        raise AuthorityError(
            f"revocation reason {reason!r} is not one of {', '.join(sorted(REASONS))}"
        )
    serial = _parse_serial(serial_hex)
    folder = _open_folder(ca_dir)
    with _locked(folder):
        ca_key, ca_certificate = _load_ca(folder)
        index = _read_index(folder)
        found = [i for i, record in enumerate(index.certificates) if record.serial == serial]
        if not found:
            raise AuthorityError(
                f"no certificate with serial {serial:x} in {folder.index}; "
                "'credit-node certs list' shows the serials this CA issued"
            )
        record = index.certificates[found[0]]
        if record.revoked_at is None:
            record = replace(record, revoked_at=_now(), reason=reason)
            index.certificates[found[0]] = record
            _write_index(folder, index)
        _publish(folder, ca_key, ca_certificate, crl_days)
    return record


def publish_crl(ca_dir: Path, days: int = CRL_DAYS) -> RevocationList:
    """Sign and write a fresh CRL (next number, next_update in ``days``) from the index."""
    folder = _open_folder(ca_dir)
    with _locked(folder):
        ca_key, ca_certificate = _load_ca(folder)
        return _publish(folder, ca_key, ca_certificate, days)


def _publish(
    folder: CaFolder, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, days: int
) -> RevocationList:
    if days < 1:
        raise AuthorityError(f"a CRL must be valid for at least 1 day, not {days}")
    index = _read_index(folder)
    index.crl_number += 1
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(index.crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for record in index.certificates:
        if record.revoked_at is None:
            continue
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(record.serial)
            .revocation_date(record.revoked_at)
        )
        if record.reason and record.reason != x509.ReasonFlags.unspecified.value:
            entry = entry.add_extension(x509.CRLReason(REASONS[record.reason]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    pem = crl.public_bytes(serialization.Encoding.PEM)
    _write_index(folder, index)  # the number is spent before the list exists: never reused
    _replace_file(folder.crl, pem)
    return RevocationList.from_pem(pem, ca, str(folder.crl))
