"""The node's secrets: its Ed25519 signing key (PyNaCl) and the subject HMAC key.

Each is 32 bytes written once as hex, with mode 0600 from the moment the file
exists (never created world-readable and then tightened), and never printed.
Loading refuses a key file that others can read, as ssh does.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nacl.signing import SigningKey

from creditexchange.errors import ConfigError

__all__ = [
    "load_hmac_key",
    "load_signing_key",
    "write_new_hmac_key",
    "write_new_signing_key",
]


def _write_secret(path: Path, secret: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; a key is never overwritten") from None
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")


def _read_secret(path: Path, setting: str) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"setting {setting!r}: no key file at {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"setting {setting!r}: {path} is readable by others (mode "
            f"{stat.S_IMODE(mode):o}); run 'chmod 600 {path}'"
        )
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise ConfigError(f"setting {setting!r}: {path} does not hold 32 bytes in hex")
    return secret


def write_new_signing_key(path: Path) -> SigningKey:
    """Create a fresh signing key at ``path`` (and its public key beside it)."""
    key = SigningKey.generate()
    _write_secret(path, bytes(key))
    path.with_suffix(".pub").write_text(bytes(key.verify_key).hex() + "\n")
    return key


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey(_read_secret(path, "signing_key"))


def write_new_hmac_key(path: Path) -> None:
    _write_secret(path, os.urandom(32))


def load_hmac_key(path: Path) -> bytes:
    return _read_secret(path, "subject_hmac_key")
