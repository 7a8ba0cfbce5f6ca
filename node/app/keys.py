"""The node's secrets: its Ed25519 signing key (PyNaCl) and the subject HMAC key.

Each is 32 bytes written once as hex, with mode 0600 from the moment the file
exists (never created world-readable and then tightened), whatever the umask,
in a folder created 0700, and never printed; the public key beside the signing
key is written the same way. Loading refuses a key file that others can read,
as ssh does (the rule is :func:`~creditexchange.node.app.config.permission_problem`).
"""

from __future__ import annotations

import os
from pathlib import Path

from nacl.signing import SigningKey

from creditexchange.errors import ConfigError, InsecurePermissions
from creditexchange.node.app.config import PRIVATE_FILE_MODE, make_private_dir, permission_problem

__all__ = [
    "load_hmac_key",
    "load_signing_key",
    "write_new_hmac_key",
    "write_new_signing_key",
]


def _write_key_file(path: Path, key: bytes) -> None:
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; a key is never overwritten") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(key.hex() + "\n")


def _read_secret(path: Path, setting: str) -> bytes:
    if not path.exists():
        raise ConfigError(f"setting {setting!r}: no key file at {path}")
    problem = permission_problem(path)
    if problem is not None:
        raise InsecurePermissions(f"setting {setting!r}: {problem}")
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
    _write_key_file(path, bytes(key))
    _write_key_file(path.with_suffix(".pub"), bytes(key.verify_key))
    return key


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey(_read_secret(path, "signing_key"))


def write_new_hmac_key(path: Path) -> None:
    _write_key_file(path, os.urandom(32))


def load_hmac_key(path: Path) -> bytes:
    return _read_secret(path, "subject_hmac_key")
