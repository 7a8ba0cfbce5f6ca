"""Signed notes (c2sp.org/signed-note) and checkpoint bodies (c2sp.org/tlog-checkpoint).

This is the wire format that Go's golang.org/x/mod/sumdb/note, transparency-dev and
sigsum read, with Ed25519 keys (PyNaCl) only.

A signed note is::

    <text, UTF-8, ending in "\\n">
    <blank line>
    — <key name> <base64(4-byte key id || Ed25519 signature)>
    — <another key name> <...>

Invariants kept here:

* The text is valid UTF-8, ends with a newline and holds no ASCII control character
  (below U+0020) other than newline; the same holds for the whole note. The text is
  separated from the signature lines by the *last* blank line, so any such text
  (even one with blank lines of its own) round-trips.
* A key name is non-empty, holds no Unicode space, no "+" and no control character.
* The key id is ``SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]``; a
  ``Verifier`` whose id does not match its name and key cannot be built.
* The signature covers the note text exactly: every byte up to and including its
  final newline, not the separating blank line.
* A note is accepted only when at least one signature by a known key verifies;
  unknown keys are ignored as the spec requires (a key is known by its name *and*
  key id together); a known key name with a bad signature is an error, even when
  another known key signed correctly. Every signature line by a known key is
  checked, duplicates included.
* Parsing is strict: base64 must be canonical standard base64 with padding, a note
  carries at most ``MAX_SIGNATURES`` signature lines, and every refusal raises
  ``NoteError`` saying what was expected and what was found.
* A checkpoint body is: origin line (non-empty), tree size in decimal without
  leading zeros (``0`` for the empty tree, at most 2**64 - 1), the base64 of the
  32-byte root hash, then optional non-empty extension lines, each line ending in a
  newline. ``Checkpoint.parse(c.body()) == c`` for every valid ``c``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import nacl.exceptions
import nacl.signing

from creditexchange.errors import NoteError

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteError",
    "Signer",
    "Verifier",
    "add_signature",
    "key_id",
    "open_note",
    "sign_note",
]

ALG_ED25519 = 0x01
"""Signature type byte for Ed25519 in c2sp.org/signed-note."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (the spec asks for at least 16; Go uses 100)."""

MAX_TREE_SIZE = 2**64 - 1
"""Tree sizes are uint64 in the Go readers."""

_SIG_PREFIX = "— "  # em dash U+2014, space
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_KEY_ID_LEN = 4
_PUBLIC_KEY_LEN = 32
_SIGNATURE_LEN = 64
_HASH_LEN = 32
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_HEX_ID_RE = re.compile(r"[0-9a-f]{8}")
# ASCII control characters (a text may hold newlines) and lone surrogates (not UTF-8)
_FORBIDDEN_IN_LINE = re.compile("[\x00-\x1f\ud800-\udfff]")
_FORBIDDEN_IN_TEXT = re.compile("[\x00-\x09\x0b-\x1f\ud800-\udfff]")


# --- helpers ------------------------------------------------------------------------------


def _shorten(s: str, limit: int = 60) -> str:
    """``repr`` of ``s``, cut in the middle when long, for error messages."""
    if len(s) <= limit:
        return repr(s)
    half = limit // 2
    return repr(s[:half]) + "…" + repr(s[-half:])


def _check_chars(s: str, what: str, *, newline_ok: bool) -> None:
    """Refuse strings that are not UTF-8 encodable or hold forbidden control characters."""
    found = (_FORBIDDEN_IN_TEXT if newline_ok else _FORBIDDEN_IN_LINE).search(s)
    if found is None:
        return
    i, ch = found.start(), found.group()
    if ch < " ":
        raise NoteError(f"expected {what} without control characters, found {ch!r} at offset {i}")
    raise NoteError(
        f"expected {what} to be valid UTF-8, found the lone surrogate U+{ord(ch):04X} at offset {i}"
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or name == "":
        raise NoteError(f"expected a non-empty key name, found {name!r}")
    _check_chars(name, "a key name", newline_ok=False)
    for ch in name:
        if ch.isspace():
            raise NoteError(f"expected a key name without whitespace, found {ch!r} in {name!r}")
        if ch == "+":
            raise NoteError(f"expected a key name without '+', found {name!r}")


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise NoteError(f"expected the note text as str, found {type(text).__name__}")
    if not text.endswith("\n"):
        raise NoteError(f"expected the note text to end with a newline, found {_shorten(text)}")
    _check_chars(text, "the note text", newline_ok=True)


def _b64decode(s: str, what: str) -> bytes:
    """Strict standard base64: right alphabet, right padding, canonical encoding."""
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise NoteError(
            f"expected {what} in standard base64, found {_shorten(s)} ({exc})"
        ) from None
    if base64.b64encode(raw).decode("ascii") != s:
        raise NoteError(f"expected {what} in canonical standard base64, found {_shorten(s)}")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte Ed25519 key id: ``SHA-256(name || 0x0A || 0x01 || public_key)[:4]``."""
    _check_name(name)
    if len(public_key) != _PUBLIC_KEY_LEN:
        raise NoteError(
            f"expected a {_PUBLIC_KEY_LEN}-byte Ed25519 public key, found {len(public_key)} bytes"
        )
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + bytes(public_key)
    ).digest()
    return digest[:_KEY_ID_LEN]


def _parse_key_id(hex_id: str, where: str) -> bytes:
    if not _HEX_ID_RE.fullmatch(hex_id):
        raise NoteError(
            f"expected the key id in {where} as 8 lowercase hex digits, found {hex_id!r}"
        )
    return bytes.fromhex(hex_id)


def _parse_key_data(b64: str, length: int, where: str) -> bytes:
    raw = _b64decode(b64, f"the key data of {where}")
    if len(raw) != 1 + length or raw[0] != ALG_ED25519:
        found = f"algorithm byte {raw[0]:#04x}, " if raw else ""
        raise NoteError(
            f"expected the key data of {where} to be 0x01 (Ed25519) followed by {length} "
            f"bytes, found {found}{len(raw)} bytes in all"
        )
    return raw[1:]


# --- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verifier:
    """A known public key: name, 4-byte key id and 32-byte Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        for attr in ("key_id", "public_key"):
            value = getattr(self, attr)
            if not isinstance(value, bytes):
                raise NoteError(f"expected {attr} as bytes, found {type(value).__name__}")
        expected = key_id(self.name, self.public_key)  # checks name and key length
        if self.key_id != expected:
            raise NoteError(
                f"expected key id {expected.hex()} for {self.name!r} and its public key, "
                f"found {self.key_id.hex()}"
            )

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<8 hex digits>+<base64(0x01 || public key)>``; checks the id."""
        parts = vkey.split("+", 2)  # the base64 key data may itself hold "+"
        if len(parts) != 3:
            raise NoteError(
                "expected a verifier key '<name>+<key id>+<key data>', found "
                f"{len(parts) - 1} '+' separators in {_shorten(vkey)}"
            )
        name, hex_id, b64 = parts
        _check_name(name)
        kid = _parse_key_id(hex_id, "the verifier key")
        public_key = _parse_key_data(b64, _PUBLIC_KEY_LEN, "the verifier key")
        expected = key_id(name, public_key)
        if kid != expected:
            raise NoteError(
                f"expected key id {expected.hex()} for {name!r} and its public key, "
                f"found {hex_id} in the verifier key"
            )
        return cls(name=name, key_id=kid, public_key=public_key)

    def vkey(self) -> str:
        """``<name>+<hex key id>+<base64(0x01 || public key)>``, as Go's NewVerifier reads."""
        data = _b64encode(bytes([ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{data}"

    def verify(self, text: str, signature: bytes) -> bool:
        """Whether ``signature`` (the raw 64-byte Ed25519 signature, without the key id)
        signs ``text`` exactly, as UTF-8."""
        if len(signature) != _SIGNATURE_LEN:
            return False
        try:
            message = text.encode("utf-8")
            nacl.signing.VerifyKey(self.public_key).verify(message, bytes(signature))
        except (UnicodeEncodeError, nacl.exceptions.CryptoError, ValueError, TypeError):
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A private Ed25519 key under a key name. Its ``repr`` never shows the key."""

    name: str
    key: nacl.signing.SigningKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.key, nacl.signing.SigningKey):
            raise NoteError(f"expected a nacl.signing.SigningKey, found {type(self.key).__name__}")

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A fresh random key under ``name``."""
        return cls(name=name, key=nacl.signing.SigningKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parse Go's ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``; checks the id."""
        if not skey.startswith(_PRIVATE_PREFIX):
            raise NoteError(
                f"expected a signer key starting with {_PRIVATE_PREFIX!r}, found "
                f"{skey[: len(_PRIVATE_PREFIX)]!r}"
            )
        parts = skey[len(_PRIVATE_PREFIX) :].split("+", 2)  # key data may hold "+"
        if len(parts) != 3:
            raise NoteError(
                "expected a signer key 'PRIVATE+KEY+<name>+<key id>+<key data>', found "
                f"{len(parts) + 1} '+' separators"
            )
        name, hex_id, b64 = parts
        _check_name(name)
        kid = _parse_key_id(hex_id, "the signer key")
        seed = _parse_key_data(b64, 32, "the signer key")
        signer = cls(name=name, key=nacl.signing.SigningKey(seed))
        if signer.key_id != kid:
            raise NoteError(
                f"expected key id {signer.key_id.hex()} for {name!r} and the public key of "
                f"its seed, found {hex_id} in the signer key"
            )
        return signer

    @cached_property
    def public_key(self) -> bytes:
        return bytes(self.key.verify_key)

    @cached_property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def verifier(self) -> Verifier:
        return Verifier(name=self.name, key_id=self.key_id, public_key=self.public_key)

    def vkey(self) -> str:
        return self.verifier().vkey()

    def skey(self) -> str:
        """Go's signer key string. It holds the private seed: keep it secret."""
        data = _b64encode(bytes([ALG_ED25519]) + bytes(self.key))
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{data}"

    def sign(self, text: str) -> str:
        """The signature line for ``text``: ``— <name> <base64(key id || sig)>\\n``."""
        _check_text(text)
        signature = self.key.sign(text.encode("utf-8")).signature
        return f"{_SIG_PREFIX}{self.name} {_b64encode(self.key_id + signature)}\n"


# --- notes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SignatureLine:
    name: str
    key_id: bytes
    signature: bytes  # without the key id
    line: str  # as found, with its newline


def _split_note(note: str) -> tuple[str, list[_SignatureLine]]:
    """Check the syntax of ``note``; return its text and its signature lines (unverified)."""
    if not isinstance(note, str):
        raise NoteError(f"expected the note as str, found {type(note).__name__}")
    _check_chars(note, "the note", newline_ok=True)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError(
            "expected a blank line between the note text and its signatures, found none in "
            f"{_shorten(note)}"
        )
    text, block = note[: split + 1], note[split + 2 :]
    if block == "":
        raise NoteError("expected at least one signature line after the blank line, found none")
    if not block.endswith("\n"):
        raise NoteError(
            "expected the last signature line to end with a newline, found "
            f"{_shorten(block.rsplit(chr(10), 1)[-1])}"
        )
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"expected at most {MAX_SIGNATURES} signature lines, found {len(lines)}")
    parsed: list[_SignatureLine] = []
    for number, line in enumerate(lines, start=1):
        where = f"signature line {number}"
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(
                f"expected {where} to start with an em dash and a space ('— '), found "
                f"{_shorten(line)}"
            )
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep:
            raise NoteError(
                f"expected {where} as '— <key name> <base64 signature>', found {_shorten(line)}"
            )
        try:
            _check_name(name)
        except NoteError as exc:
            raise NoteError(f"{where}: {exc}") from None
        raw = _b64decode(b64, f"the signature of {where}")
        if len(raw) < _KEY_ID_LEN + 1:
            raise NoteError(
                f"expected the signature of {where} to hold a 4-byte key id and a signature, "
                f"found {len(raw)} bytes"
            )
        parsed.append(
            _SignatureLine(
                name=name,
                key_id=raw[:_KEY_ID_LEN],
                signature=raw[_KEY_ID_LEN:],
                line=line + "\n",
            )
        )
    return text, parsed


def sign_note(text: str, *signers: Signer) -> str:
    """The full note: ``text``, a blank line, one signature line per distinct signer key."""
    _check_text(text)
    if not signers:
        raise NoteError("expected at least one signer, found none")
    lines: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    for signer in signers:
        ident = (signer.name, signer.key_id)
        if ident not in seen:
            seen.add(ident)
            lines.append(signer.sign(text))
    return text + "\n" + "".join(lines)


def add_signature(note: str, signer: Signer) -> str:
    """``note`` with ``signer``'s line appended (cosigning), existing lines kept in order.

    An existing line by the same key (name and key id) is replaced by the new one, as
    Go's ``note.Sign`` does. This checks the note's syntax but does not verify the
    signatures already there: call ``open_note`` first to decide whether to cosign.
    """
    text, existing = _split_note(note)
    ident = (signer.name, signer.key_id)
    if len(existing) + 1 > MAX_SIGNATURES and all((s.name, s.key_id) != ident for s in existing):
        raise NoteError(
            f"expected room for one more signature (at most {MAX_SIGNATURES}), found "
            f"{len(existing)} already"
        )
    kept = "".join(s.line for s in existing if (s.name, s.key_id) != ident)
    return text + "\n" + kept + signer.sign(text)


def open_note(note: str, verifiers: Iterable[Verifier]) -> tuple[str, list[Verifier]]:
    """Check ``note`` against the known ``verifiers``; return its text and who signed it.

    The returned verifiers are those whose signatures verified, in order of first
    appearance, each once. Raises ``NoteError`` when the note is malformed, when a
    signature line by a known key (name and key id) does not verify, when two
    different known keys share a name and key id, or when no known key signed it.
    """
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        ident = (v.name, v.key_id)
        other = known.setdefault(ident, v)
        if other != v:
            raise NoteError(
                f"expected one known key per name and key id, found two different keys "
                f"for {v.name}+{v.key_id.hex()}"
            )
    text, lines = _split_note(note)
    verified: list[Verifier] = []
    for number, sig in enumerate(lines, start=1):
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue  # unknown keys are ignored, as the spec requires
        if not verifier.verify(text, sig.signature):
            raise NoteError(
                f"expected a valid signature by known key {sig.name}+{sig.key_id.hex()} on "
                f"signature line {number}, found a signature that does not verify"
            )
        if verifier not in verified:
            verified.append(verifier)
    if not verified:
        found = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in lines)
        wanted = ", ".join(f"{n}+{k.hex()}" for n, k in known) or "(no known keys given)"
        raise NoteError(
            f"expected a signature by one of {wanted}, found no signature by a known key "
            f"(signed by {found})"
        )
    return text, verified


# --- checkpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The note text of a transparency-log checkpoint (c2sp.org/tlog-checkpoint)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or self.origin == "":
            raise NoteError(f"expected a non-empty checkpoint origin, found {self.origin!r}")
        _check_chars(self.origin, "the checkpoint origin", newline_ok=False)
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise NoteError(f"expected the tree size as an int, found {type(self.size).__name__}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"expected a tree size in 0..2**64-1, found {self.size}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != _HASH_LEN:
            found = (
                f"{len(self.root_hash)} bytes"
                if isinstance(self.root_hash, bytes)
                else type(self.root_hash).__name__
            )
            raise NoteError(f"expected a {_HASH_LEN}-byte root hash, found {found}")
        extensions = tuple(self.extensions)
        object.__setattr__(self, "extensions", extensions)
        for number, ext in enumerate(extensions, start=1):
            if not isinstance(ext, str) or ext == "":
                raise NoteError(f"expected extension line {number} non-empty, found {ext!r}")
            _check_chars(ext, f"extension line {number}", newline_ok=False)

    def body(self) -> str:
        """The note text: origin, size, base64 root hash, extensions; each line ends in ``\\n``."""
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Strictly parse a checkpoint body (the text of an opened note)."""
        if not isinstance(text, str):
            raise NoteError(f"expected the checkpoint as str, found {type(text).__name__}")
        if not text.endswith("\n"):
            raise NoteError(
                f"expected the checkpoint to end with a newline, found {_shorten(text)}"
            )
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            names = ("origin", "tree size", "root hash")
            raise NoteError(
                "expected at least 3 lines (origin, tree size, root hash), found "
                f"{len(lines)}: the {names[len(lines)]} line is missing"
            )
        origin, size_text, hash_text, *extensions = lines
        if origin == "":
            raise NoteError("expected a non-empty origin on line 1, found an empty line")
        if not _SIZE_RE.fullmatch(size_text):
            raise NoteError(
                "expected the tree size on line 2 in decimal digits without leading zeros, "
                f"found {_shorten(size_text)}"
            )
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise NoteError(f"expected a tree size at most 2**64-1 on line 2, found {size_text}")
        root_hash = _b64decode(hash_text, "the root hash on line 3")
        if len(root_hash) != _HASH_LEN:
            raise NoteError(
                f"expected a {_HASH_LEN}-byte root hash on line 3, found {len(root_hash)} bytes"
            )
        return cls(origin=origin, size=size, root_hash=root_hash, extensions=tuple(extensions))
