"""Cosignatures (c2sp.org/tlog-cosignature): a witness's Ed25519 statement on a checkpoint.

A cosignature is a signed-note signature line on a checkpoint (``note``), of the
Ed25519 cosignature type 0x04::

    — <witness name> <base64(4-byte key id || 8-byte timestamp || 64-byte signature)>

* The key id is ``SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]``, so a
  cosignature is never mistaken for the log's own signature (type 0x01) even when
  both come from one key, and a verifier whose id does not match its name and key
  cannot be built.
* The timestamp is POSIX seconds, big-endian, at most ``2**63 - 1``.
* The signature is Ed25519 over ``"cosignature/v1\\n" + "time <t>\\n"`` followed by
  the checkpoint's whole note body (every byte up to and including its final
  newline, no signature lines), ``<t>`` the timestamp in decimal without leading
  zeros.
* Its meaning: as of time ``<t>``, the consistent tree of the largest size the
  witness has observed for the checkpoint's origin has this root.

A member witnesses its peers' logs under the name ``witness_name(member, federation)``
(``credit-exchange/<federation>/<member>/witness``, beside its log's origin
``.../audit``), with the Ed25519 signing key the memorandum lists for it.

Every refusal raises :class:`~creditexchange.errors.NoteError` saying what was
expected and what was found. Lines are handled without their newline; a line read
with one has it dropped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import nacl.exceptions
import nacl.signing

from creditexchange.clock import now_us
from creditexchange.errors import NoteError
from creditexchange.node.ledger.note import _b64decode, _check_name, _check_text, _shorten

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_TIMESTAMP",
    "Cosignature",
    "CosignatureVerifier",
    "Cosigner",
    "cosignature_key_id",
    "signed_message",
    "verify_cosignatures",
    "witness_name",
]

ALG_COSIGNATURE_V1 = 0x04
"""Signature type byte of an Ed25519 cosignature/v1 (c2sp.org/tlog-cosignature)."""

MAX_TIMESTAMP = 2**63 - 1
"""The largest timestamp a cosignature may carry."""

_PREFIX = "— "  # em dash U+2014, space: a signed-note signature line
_KEY_ID_LEN = 4
_TIMESTAMP_LEN = 8
_SIGNATURE_LEN = 64
_PUBLIC_KEY_LEN = 32
_RAW_LEN = _KEY_ID_LEN + _TIMESTAMP_LEN + _SIGNATURE_LEN


def witness_name(member_id: str, federation: str = "3plus2") -> str:
    """The cosigner name of a member witnessing the others' logs."""
    return f"credit-exchange/{federation}/{member_id}/witness"


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || 0x04 || public_key)[:4]``."""
    _check_name(name)
    if len(public_key) != _PUBLIC_KEY_LEN:
        raise NoteError(
            f"expected a {_PUBLIC_KEY_LEN}-byte Ed25519 public key, found {len(public_key)} bytes"
        )
    material = name.encode("utf-8") + b"\n" + bytes([ALG_COSIGNATURE_V1]) + bytes(public_key)
    return hashlib.sha256(material).digest()[:_KEY_ID_LEN]


def signed_message(body: str, timestamp: int) -> bytes:
    """What a cosignature's Ed25519 signature covers: header, time line, checkpoint body."""
    _check_text(body)
    _check_timestamp(timestamp)
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise NoteError(f"expected the timestamp as an int, found {type(timestamp).__name__}")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"expected a timestamp in 0..2**63-1 seconds, found {timestamp}")


@dataclass(frozen=True)
class Cosignature:
    """One cosignature as carried: witness name, key id, timestamp and raw signature."""

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_timestamp(self.timestamp)
        if len(self.key_id) != _KEY_ID_LEN or len(self.signature) != _SIGNATURE_LEN:
            raise NoteError(
                f"expected a {_KEY_ID_LEN}-byte key id and a {_SIGNATURE_LEN}-byte signature, "
                f"found {len(self.key_id)} and {len(self.signature)} bytes"
            )

    def line(self) -> str:
        """``— <name> <base64(key id || timestamp || signature)>``, without a newline."""
        raw = self.key_id + self.timestamp.to_bytes(_TIMESTAMP_LEN, "big") + self.signature
        return f"{_PREFIX}{self.name} {base64.b64encode(raw).decode('ascii')}"

    @classmethod
    def parse(cls, line: str) -> Cosignature:
        """Strictly parse one cosignature line (one trailing newline is allowed)."""
        name, raw = _split_line(line)
        if len(raw) != _RAW_LEN:
            raise NoteError(
                f"expected the cosignature of {name} to hold a 4-byte key id, an 8-byte "
                f"timestamp and a 64-byte Ed25519 signature ({_RAW_LEN} bytes), found "
                f"{len(raw)} bytes: not an Ed25519 cosignature/v1"
            )
        timestamp = int.from_bytes(raw[_KEY_ID_LEN : _KEY_ID_LEN + _TIMESTAMP_LEN], "big")
        if timestamp > MAX_TIMESTAMP:
            raise NoteError(
                f"expected the cosignature of {name} to carry a timestamp at most 2**63-1, "
                f"found {timestamp}"
            )
        return cls(
            name=name,
            key_id=raw[:_KEY_ID_LEN],
            timestamp=timestamp,
            signature=raw[_KEY_ID_LEN + _TIMESTAMP_LEN :],
        )


@dataclass(frozen=True)
class CosignatureVerifier:
    """A known witness: its name, 4-byte cosignature key id and Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        expected = cosignature_key_id(self.name, self.public_key)  # checks name and key length
        if self.key_id != expected:
            raise NoteError(
                f"expected cosignature key id {expected.hex()} for {self.name!r} and its "
                f"public key, found {self.key_id.hex()}"
            )

    @classmethod
    def for_key(cls, name: str, public_key: bytes) -> CosignatureVerifier:
        """The verifier of ``name`` with ``public_key``; its key id derived."""
        return cls(name, cosignature_key_id(name, public_key), bytes(public_key))

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``<name>+<8 hex digits>+<base64(0x04 || public key)>``; checks the id."""
        parts = vkey.split("+", 2)  # the base64 may itself hold "+"
        if len(parts) != 3:
            raise NoteError(
                "expected a verifier key '<name>+<key id>+<key data>', found "
                f"{len(parts) - 1} '+' separators in {_shorten(vkey)}"
            )
        name, hex_id, b64 = parts
        raw = _b64decode(b64, "the key data of the verifier key")
        if len(raw) != 1 + _PUBLIC_KEY_LEN or raw[0] != ALG_COSIGNATURE_V1:
            found = f"type {raw[0]:#04x} and " if raw else ""
            raise NoteError(
                "expected the key data of a cosigner's verifier key to be 0x04 (Ed25519 "
                f"cosignature/v1) and {_PUBLIC_KEY_LEN} bytes, found {found}{len(raw)} bytes"
            )
        verifier = cls.for_key(name, raw[1:])
        if verifier.key_id.hex() != hex_id:
            raise NoteError(
                f"expected key id {verifier.key_id.hex()} for {name!r} and its public key, "
                f"found {hex_id!r} in the verifier key"
            )
        return verifier

    def vkey(self) -> str:
        data = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{data}"

    def signed(self, cosignature: Cosignature) -> bool:
        """Whether ``cosignature`` is by this witness (its name and key id)."""
        return (cosignature.name, cosignature.key_id) == (self.name, self.key_id)

    def verify(self, body: str, cosignature: Cosignature | str) -> Cosignature:
        """Check ``cosignature`` (a line or parsed) on the checkpoint ``body``; return it.

        Raises :class:`NoteError` when it is by another witness, or when its signature
        does not cover this body at its timestamp.
        """
        cosig = Cosignature.parse(cosignature) if isinstance(cosignature, str) else cosignature
        if not self.signed(cosig):
            raise NoteError(
                f"expected a cosignature by {self.name}+{self.key_id.hex()}, found one by "
                f"{cosig.name}+{cosig.key_id.hex()}"
            )
        message = signed_message(body, cosig.timestamp)
        try:
            nacl.signing.VerifyKey(self.public_key).verify(message, cosig.signature)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise NoteError(
                f"the cosignature of {self.name} (time {cosig.timestamp}) does not verify on "
                f"the checkpoint {_shorten(body)}: it was made for another checkpoint, at "
                "another time, or with another key"
            ) from None
        return cosig


@dataclass(frozen=True)
class Cosigner:
    """A witness's private Ed25519 key under its name. Its ``repr`` never shows the key."""

    name: str
    key: nacl.signing.SigningKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.key, nacl.signing.SigningKey):
            raise NoteError(f"expected a nacl.signing.SigningKey, found {type(self.key).__name__}")

    @cached_property
    def public_key(self) -> bytes:
        return bytes(self.key.verify_key)

    @cached_property
    def key_id(self) -> bytes:
        return cosignature_key_id(self.name, self.public_key)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.key_id, self.public_key)

    def cosign(self, body: str, timestamp: int | None = None) -> Cosignature:
        """Cosign the checkpoint ``body`` at ``timestamp`` (POSIX seconds; now by default).

        The caller states by cosigning that it verified the checkpoint's signature and
        its consistency with every earlier checkpoint of the log it saw.
        """
        when = now_us() // 1_000_000 if timestamp is None else timestamp
        signature = self.key.sign(signed_message(body, when)).signature
        return Cosignature(self.name, self.key_id, when, signature)


def _split_line(line: str) -> tuple[str, bytes]:
    """A signature line's key name and decoded bytes (of any signature type)."""
    if not isinstance(line, str):
        raise NoteError(f"expected a cosignature line as str, found {type(line).__name__}")
    text = line[:-1] if line.endswith("\n") else line
    if not text.startswith(_PREFIX):
        raise NoteError(
            "expected a cosignature line to start with an em dash and a space ('— '), "
            f"found {_shorten(text)}"
        )
    name, sep, b64 = text[len(_PREFIX) :].partition(" ")
    if not sep:
        raise NoteError(
            f"expected a cosignature line as '— <witness name> <base64>', found {_shorten(text)}"
        )
    try:
        _check_name(name)
    except NoteError as exc:
        raise NoteError(f"the cosignature line's witness name: {exc}") from None
    raw = _b64decode(b64, f"the cosignature of {name}")
    if len(raw) < _KEY_ID_LEN:
        raise NoteError(
            f"expected the cosignature of {name} to start with a 4-byte key id, found "
            f"{len(raw)} bytes"
        )
    return name, raw


def verify_cosignatures(
    body: str, lines: Iterable[str], verifiers: Iterable[CosignatureVerifier]
) -> list[Cosignature]:
    """The cosignatures among ``lines`` by known witnesses, each verified on ``body``.

    Lines by unknown keys (name and key id) are ignored, as a signed note's unknown
    signatures are — the log's own signature, another type of cosignature; a line that
    is not a signature line at all, or a known witness's that does not verify, is an
    error. The result holds each witness once, its latest cosignature.
    """
    known = {(v.name, v.key_id): v for v in verifiers}
    latest: dict[tuple[str, bytes], Cosignature] = {}
    for number, line in enumerate(lines, start=1):
        try:
            name, raw = _split_line(line)
            verifier = known.get((name, raw[:_KEY_ID_LEN]))
            if verifier is None:
                continue
            cosig = Cosignature.parse(line)
        except NoteError as exc:
            raise NoteError(f"cosignature {number}: {exc}") from None
        verifier.verify(body, cosig)
        held = latest.get((cosig.name, cosig.key_id))
        if held is None or cosig.timestamp > held.timestamp:
            latest[(cosig.name, cosig.key_id)] = cosig
    return list(latest.values())
