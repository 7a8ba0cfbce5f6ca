"""The node's Ed25519 signing key (PyNaCl).

The seed is written once, with mode 0600 from the moment the file exists (never
created world-readable and then tightened), and is never printed. Loading refuses
a key file that others can read, as ssh does.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nacl.signing import SigningKey

from node.errors import ConfigError


def write_new_signing_key(path: Path) -> SigningKey:
    """Create a fresh key at ``path``; refuses to overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; a signing key is never overwritten") from None
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    path.with_suffix(".pub").write_text(bytes(key.verify_key).hex() + "\n")
    return key


def load_signing_key(path: Path) -> SigningKey:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"setting 'signing_key': no key file at {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"setting 'signing_key': {path} is readable by others (mode "
            f"{stat.S_IMODE(mode):o}); run 'chmod 600 {path}'"
        )
    try:
        seed = bytes.fromhex(path.read_text().strip())
        return SigningKey(seed)
    except ValueError:
        raise ConfigError(
            f"setting 'signing_key': {path} does not hold a 32-byte hex Ed25519 seed"
        ) from None
