"""The federation's certificate revocation list, as a node reads and trusts it.

grpcio's Python API has no CRL option, so a node checks the peer's serial itself
against the list the federation CA publishes (``crl.pem``). Invariants:

- A list is trusted only if its issuer is the CA's subject and its signature
  verifies with the CA's public key. A tampered, foreign or unreadable list is an
  error, never an empty list: a node fails closed.
- :class:`RevocationWatcher` picks up a newly published list when the file
  changes (mtime, size or inode), at most once per ``check_interval``; a bad new
  file, or one with a lower CRL number than the list in force (a rollback that
  would un-revoke), is reported and the last good list stays in force.
- Whether a list past its ``next_update`` still counts is the caller's decision;
  :meth:`RevocationList.check` refuses it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from creditexchange.errors import (
    CertificateError,
    CertificateRevoked,
    RevocationListError,
    RevocationListExpired,
)

__all__ = [
    "RevocationList",
    "RevocationWatcher",
]

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RevocationListError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _load_ca_certificate(path: Path) -> x509.Certificate:
    """The federation CA certificate at ``path`` (PEM)."""
    try:
        return x509.load_pem_x509_certificate(_read(path, "CA certificate"))
    except ValueError as exc:
        raise RevocationListError(f"{path} is not a PEM certificate: {exc}") from None


@dataclass(frozen=True)
class RevocationList:
    """A CRL whose signature has been verified with the federation CA's key."""

    number: int
    this_update: dt.datetime  # UTC
    next_update: dt.datetime  # UTC
    revoked: frozenset[int]
    source: str  # where it came from, for messages

    @classmethod
    def load(cls, crl_path: Path, ca_cert_path: Path) -> RevocationList:
        """Read ``crl_path`` (PEM) and verify it against the CA certificate at ``ca_cert_path``."""
        return cls.from_pem(
            _read(crl_path, "revocation list"), _load_ca_certificate(ca_cert_path), str(crl_path)
        )

    @classmethod
    def from_pem(cls, data: bytes, ca: x509.Certificate, source: str = "CRL") -> RevocationList:
        """Parse and verify a PEM CRL; :class:`RevocationListError` unless ``ca`` signed it."""
        try:
            crl = x509.load_pem_x509_crl(data)
        except ValueError as exc:
            raise RevocationListError(f"{source} is not a PEM X.509 CRL: {exc}") from None
        if crl.issuer != ca.subject:
            raise RevocationListError(
                f"{source} was issued by {crl.issuer.rfc4514_string()!r}, not by the "
                f"federation CA {ca.subject.rfc4514_string()!r}"
            )
        try:
            valid = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise RevocationListError(f"{source}: cannot check its signature: {exc}") from None
        if not valid:
            raise RevocationListError(
                f"{source}: the signature does not verify with the federation CA's key "
                "(tampered, or signed by another CA); the last good list stays in force"
            )
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            raise RevocationListError(f"{source} has no CRL number") from None
        next_update = crl.next_update_utc
        if next_update is None:
            raise RevocationListError(f"{source} has no next_update; a list must say when it ends")
        return cls(
            number=number,
            this_update=crl.last_update_utc,
            next_update=next_update,
            revoked=frozenset(entry.serial_number for entry in crl),
            source=source,
        )

    def is_revoked(self, serial: int) -> bool:
        return serial in self.revoked

    def expired(self, now: dt.datetime | None = None) -> bool:
        """True once ``now`` is past ``next_update``: the CA should have published a newer list."""
        return (now or _now()) > self.next_update

    def check(self, serial: int, now: dt.datetime | None = None) -> None:
        """Raise unless ``serial`` may be trusted: not revoked, and the list still current."""
        if self.is_revoked(serial):
            raise CertificateRevoked(
                f"certificate {serial:x} is revoked (CRL number {self.number} from {self.source})"
            )
        if self.expired(now):
            raise RevocationListExpired(
                f"the revocation list {self.source} (number {self.number}) expired at "
                f"{self.next_update:%Y-%m-%dT%H:%M:%SZ}; the CA must run 'credit-node certs crl'"
                " and the new crl.pem be copied here"
            )


class RevocationWatcher:
    """The revocation list in force for a long-running server, reloaded when its file changes.

    The first load happens in the constructor and raises if the file is bad: a
    server does not start without a trusted list. Later, :meth:`current` costs
    one ``stat`` at most every ``check_interval`` seconds; a bad or older new file
    is passed to ``on_error`` (default: a warning in the log), kept in
    :attr:`last_error`, and the last good list stays in force.
    """

    def __init__(
        self,
        crl_path: Path,
        ca_cert_path: Path,
        *,
        check_interval: float = 1.0,
        on_error: Callable[[CertificateError], None] | None = None,
    ) -> None:
        self.crl_path = crl_path
        self.ca = _load_ca_certificate(ca_cert_path)
        self.check_interval = check_interval
        self.on_error = on_error or (lambda exc: log.warning("%s", exc))
        self.last_error: CertificateError | None = None
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._list = RevocationList.from_pem(
            _read(crl_path, "revocation list"), self.ca, str(crl_path)
        )
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.crl_path)
        except OSError as exc:
            raise RevocationListError(
                f"cannot read the revocation list {self.crl_path}: {exc.strerror}"
            ) from None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def current(self) -> RevocationList:
        """The list in force, after picking up a newly published file if there is one."""
        if time.monotonic() - self._checked < self.check_interval:
            return self._list
        with self._lock:
            self._checked = time.monotonic()
            try:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._replace(
                        RevocationList.from_pem(
                            _read(self.crl_path, "revocation list"), self.ca, str(self.crl_path)
                        )
                    )
            except CertificateError as exc:
                if str(exc) != str(self.last_error):  # report each new problem once
                    self.on_error(exc)
                self.last_error = exc
            return self._list

    def _replace(self, new: RevocationList) -> None:
        if new.number < self._list.number:
            raise RevocationListError(
                f"{new.source} has CRL number {new.number}, lower than {self._list.number} "
                "in force; an older list is refused (it could un-revoke a certificate)"
            )
        self._list = new
        self.last_error = None

    def check(self, serial: int, now: dt.datetime | None = None) -> None:
        """:meth:`RevocationList.check` against the list in force."""
        self.current().check(serial, now)
