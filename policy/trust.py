"""Signatures, thresholds and updates of the memorandum, in the manner of TUF's root metadata.

The memorandum travels in an envelope::

    {"signed": {...the memorandum as JSON...},
     "signatures": [{"key_id": "<64 hex>", "sig": "<128 hex>"}, ...]}

Each signature is Ed25519 over ``canonical_json(signed)`` (RFC 8785, see
``policy.canonical``); a ``keyid`` is SHA-256 of the raw 32-byte public key, hex.
The memorandum names its members' keys and a ``threshold``: like TUF's root
role, it is its own trust anchor and decides who may sign its successor.

Counting signatures (:func:`check_signatures`) keeps these invariants:

* only keys listed in the *trusted* memorandum count; a key of a non-member (or
  any unknown key) never does;
* each key counts once: the first entry with a keyid decides, later entries
  with the same keyid are ignored as duplicates (so a forged first entry hides
  a later good one — whoever can add entries can remove them too, so this
  gives nothing away);
* each member counts at most once, however many of its keys signed — so the
  count is a number of distinct members, and ``threshold`` means "this many
  members agree";
* a keyid must be SHA-256 of its public key (checked on every memorandum
  loaded or trusted here) and the schema refuses a keyid listed twice, so one
  key never belongs to two members;
* a malformed entry, an unknown key, a bad signature or a repeat is ignored
  with its reason, never an error — when *counting*. An envelope that is loaded
  (:func:`load_envelope`) or accepted for installation (:func:`accept`) must have
  only well-formed entries: one malformed entry refuses it, because the store
  re-reads what it installs with the strict loader, and an entry the loader
  refuses would leave the node with no readable memorandum.

Installing a new version (:func:`verify_new`, rules as in TUF's root update):

1. it is signed by a threshold of its OWN keys (the new members and keys agree);
2. if a version is installed: it is signed by a threshold of the INSTALLED
   version's keys, counted with the installed threshold (the old trust agrees to
   hand over), its version is higher than the installed one (no rollback, no
   replay) and it is for the same federation;
3. it has not expired.

An expired *installed* version can still approve its successor (as an expired
TUF root verifies the next root): that is how a federation recovers from an
expiry. Until then the node fails closed (:meth:`TrustStore.current_or_expired`).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import yaml

from creditexchange.errors import (
    CanonicalizationError,
    MemorandumExpired,
    MemorandumRefused,
    PolicyError,
)
from creditexchange.files import replace_file
from creditexchange.policy.canonical import canonical_json
from creditexchange.policy.document import Memorandum, parse_memorandum

__all__ = [
    "NO_MEMORANDUM",
    "Accepted",
    "IgnoreReason",
    "Ignored",
    "MemorandumExpired",
    "MemorandumRefused",
    "SignatureCheck",
    "TrustStore",
    "accept",
    "check_signatures",
    "expired_error",
    "is_expired",
    "key_id",
    "load_envelope",
    "memorandum_hash",
    "sign",
    "signing_key_entry",
    "to_json_data",
    "verify_new",
]

NO_MEMORANDUM = "no memorandum installed: run credit-node policy install FILE"

_KEYID = re.compile(r"[0-9a-f]{64}")
_SIG = re.compile(r"[0-9a-f]{128}")
_ENVELOPE_KEYS = frozenset({"signed", "signatures"})
_ENTRY_KEYS = frozenset({"key_id", "sig"})


# --------------------------------------------------------------------------- keys and bytes


def key_id(public_key: bytes) -> str:
    """The keyid of a raw 32-byte Ed25519 public key: SHA-256 of it, lowercase hex."""
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
    return hashlib.sha256(public_key).hexdigest()


def signing_key_entry(verify_key: nacl.signing.VerifyKey) -> dict[str, str]:
    """The ``{"key_id", "public_key"}`` entry of a member's key in the memorandum."""
    raw = bytes(verify_key)
    return {"key_id": key_id(raw), "public_key": raw.hex()}


def to_json_data(memorandum: Memorandum) -> dict[str, Any]:
    """The memorandum as the JSON data that is signed.

    Dates and datetimes become ISO 8601 strings (``2027-12-31T00:00:00Z``, or
    with the offset they carry), enums their values, and defaults are written
    out, so a memorandum loaded from YAML (``yaml.safe_load`` yields datetime
    objects) gives the same signed bytes every time.
    """
    data: dict[str, Any] = memorandum.model_dump(mode="json", exclude_defaults=False)
    return data


def memorandum_hash(signed: Mapping[str, Any]) -> bytes:
    """SHA-256 of ``canonical_json(signed)``: the identity of a memorandum's content.

    This is the value an operator compares, out of band, before a first install.
    """
    return hashlib.sha256(_signed_bytes(signed)).digest()


def _signed_bytes(signed: object) -> bytes:
    try:
        return canonical_json(signed)
    except CanonicalizationError as exc:
        hint = ""
        if _holds_dates(signed):
            hint = " (a memorandum loaded from YAML holds dates: convert it with to_json_data)"
        raise PolicyError(f"the signed part has no canonical JSON form: {exc}{hint}") from None


def _holds_dates(value: object) -> bool:
    if isinstance(value, dt.date):
        return True
    if isinstance(value, dict):
        return any(_holds_dates(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_dates(v) for v in value)
    return False


def _short(keyid: str) -> str:
    return keyid[:16]


def _iso(moment: dt.datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _key_problems(memorandum: Memorandum) -> list[str]:
    """Keys whose keyid is not SHA-256 of their public key.

    The keyid is how a signature names its key and how one key is kept from
    counting for two members (the schema refuses a keyid listed twice), so it
    must be the key's true id.
    """
    problems = []
    for i, member in enumerate(memorandum.members):
        for j, key in enumerate(member.keys):
            expected = hashlib.sha256(bytes.fromhex(key.public_key)).hexdigest()
            if key.key_id != expected:
                problems.append(
                    f"members[{i}]({member.id}).keys[{j}]: key_id {_short(key.key_id)}… is not "
                    f"SHA-256 of its public key ({_short(expected)}…)"
                )
    return problems


def _require_aware(now: dt.datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must carry a time zone, e.g. datetime.now(timezone.utc)")


# --------------------------------------------------------------------------- counting


class IgnoreReason(StrEnum):
    """Why a signature entry did not count."""

    MALFORMED = "malformed entry"
    UNKNOWN_KEY = "not a key of any member"
    BAD_SIGNATURE = "bad signature"
    DUPLICATE_KEYID = "duplicate keyid (only its first entry is looked at)"
    MEMBER_ALREADY_COUNTED = "member already counted with another key"


@dataclass(frozen=True)
class Ignored:
    """A signature entry that did not count, with its position and reason."""

    index: int
    keyid: str | None
    reason: IgnoreReason
    member: str | None = None
    detail: str = ""

    def describe(self) -> str:
        key = f"key {_short(self.keyid)}…" if self.keyid else "no keyid"
        owner = f" of {self.member}" if self.member else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"signatures[{self.index}] ({key}{owner}) {self.reason.value}{detail}"


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of counting an envelope's signatures against a trusted memorandum.

    ``counted`` maps each keyid that counted to its member, in signature order;
    no member appears twice in it (a member counts once, however many of its
    keys signed). ``ignored`` lists every other entry with its reason. ``met``
    is ``len(counted) >= threshold``.
    """

    threshold: int
    counted: dict[str, str]  # keyid -> member id
    ignored: tuple[Ignored, ...]
    met: bool = field(init=False)

    def __post_init__(self) -> None:
        if len(set(self.counted.values())) != len(self.counted):
            raise ValueError("a member is counted twice")
        object.__setattr__(self, "met", len(self.counted) >= self.threshold)

    @property
    def valid(self) -> int:
        """How many signatures counted (distinct members)."""
        return len(self.counted)

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self.counted.values())

    def summary(self) -> str:
        """``2 valid signatures of 3 needed (counted: …; ignored: …)``."""
        noun = "signature" if self.valid == 1 else "signatures"
        text = f"{self.valid} valid {noun} of {self.threshold} needed"
        details = []
        if self.counted:
            details.append(
                "counted: "
                + ", ".join(f"{member} ({_short(k)}…)" for k, member in self.counted.items())
            )
        if self.ignored:
            details.append("ignored: " + ", ".join(i.describe() for i in self.ignored))
        return f"{text} ({'; '.join(details)})" if details else text

    def as_dict(self) -> dict[str, Any]:
        """The check as JSON data, for reports and ``--json`` output."""
        return {
            "threshold": self.threshold,
            "met": self.met,
            "valid": self.valid,
            "counted": dict(self.counted),
            "ignored": [
                {
                    "index": i.index,
                    "key_id": i.keyid,
                    "reason": i.reason.value,
                    "member": i.member,
                    "detail": i.detail,
                }
                for i in self.ignored
            ],
        }


def check_signatures(envelope: Mapping[str, Any], trusted: Memorandum) -> SignatureCheck:
    """Count the signatures over ``envelope["signed"]`` made by keys listed in ``trusted``.

    Never raises for a bad signature entry (it is ignored, with its reason);
    raises :class:`PolicyError` only if the envelope has no ``signed`` object
    and ``signatures`` list, the signed part has no canonical form, or
    ``trusted`` lists a key whose keyid is not its true id.
    """
    _check_shape(envelope, "envelope", require_signatures=True)
    problems = _key_problems(trusted)
    if problems:
        raise PolicyError("the trusted memorandum is inconsistent: " + "; ".join(problems))
    payload = _signed_bytes(envelope["signed"])
    keys = {k.key_id: (m.id, k.public_key) for m in trusted.members for k in m.keys}

    counted_by: dict[str, str] = {}  # member id -> the keyid it counted with
    seen: set[str] = set()
    ignored: list[Ignored] = []
    for index, entry in enumerate(envelope["signatures"]):
        problem = _entry_problem(entry)
        if problem is not None:
            keyid = entry.get("key_id") if isinstance(entry, Mapping) else None
            shown = keyid[:64] if isinstance(keyid, str) else None
            ignored.append(Ignored(index, shown, IgnoreReason.MALFORMED, detail=problem))
            continue
        keyid, sig = entry["key_id"], entry["sig"]
        if keyid in seen:
            ignored.append(Ignored(index, keyid, IgnoreReason.DUPLICATE_KEYID))
            continue
        seen.add(keyid)
        if keyid not in keys:
            ignored.append(Ignored(index, keyid, IgnoreReason.UNKNOWN_KEY))
            continue
        member, public_key = keys[keyid]
        try:
            nacl.signing.VerifyKey(bytes.fromhex(public_key)).verify(payload, bytes.fromhex(sig))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            ignored.append(Ignored(index, keyid, IgnoreReason.BAD_SIGNATURE, member))
            continue
        if member in counted_by:
            ignored.append(
                Ignored(
                    index,
                    keyid,
                    IgnoreReason.MEMBER_ALREADY_COUNTED,
                    member,
                    detail=f"counted with {_short(counted_by[member])}…",
                )
            )
            continue
        counted_by[member] = keyid
    counted = {k: member for member, k in counted_by.items()}
    return SignatureCheck(trusted.threshold, counted, tuple(ignored))


def _require_well_formed_entries(signatures: list[Any], source: str) -> None:
    """Refuse the first signature entry that is not ``{"key_id": 64 hex, "sig": 128 hex}``."""
    for index, entry in enumerate(signatures):
        problem = _entry_problem(entry)
        if problem is not None:
            raise PolicyError(
                f"{source}: signatures[{index}]: {problem}; remove that entry, or have its "
                "member sign again (credit-node policy sign), and offer the envelope again"
            )


def _entry_problem(entry: object) -> str | None:
    if not isinstance(entry, Mapping):
        return f"a signature entry is an object, not a {type(entry).__name__}"
    if set(entry) != _ENTRY_KEYS:
        return f"a signature entry has exactly key_id and sig, not {sorted(map(str, entry))}"
    keyid, sig = entry["key_id"], entry["sig"]
    if not isinstance(keyid, str) or not _KEYID.fullmatch(keyid):
        return f"key_id is not 64 lowercase hex digits (found {_kind_of(keyid)})"
    if not isinstance(sig, str) or not _SIG.fullmatch(sig):
        return (
            "sig is not 128 lowercase hex digits (an Ed25519 signature is 64 bytes; "
            f"found {_kind_of(sig)})"
        )
    return None


def _kind_of(value: object) -> str:
    """What a malformed value is, without repeating it (it may be long)."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    kinds = {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        list: "a list",
        dict: "an object",
    }
    return kinds.get(type(value), f"a {type(value).__name__}")


# --------------------------------------------------------------------------- envelopes


def _check_shape(envelope: object, source: str, *, require_signatures: bool) -> None:
    if not isinstance(envelope, Mapping):
        raise PolicyError(f"{source}: an envelope is a JSON object, not {type(envelope).__name__}")
    extra = set(envelope) - _ENVELOPE_KEYS
    if extra:
        raise PolicyError(
            f"{source}: unexpected top-level key(s) {sorted(map(str, extra))}; "
            "an envelope has only signed and signatures"
        )
    if "signed" not in envelope:
        raise PolicyError(f"{source}: the envelope has no signed part")
    if not isinstance(envelope["signed"], Mapping):
        raise PolicyError(f"{source}: signed is a JSON object (the memorandum)")
    if "signatures" not in envelope:
        if require_signatures:
            raise PolicyError(f"{source}: the envelope has no signatures list")
    elif not isinstance(envelope["signatures"], list):
        raise PolicyError(f"{source}: signatures is a list of {{keyid, sig}} objects")


def sign(envelope_or_signed: Mapping[str, Any], key: nacl.signing.SigningKey) -> dict[str, Any]:
    """Return a new envelope with ``key``'s signature added.

    Takes an envelope or a bare signed part (the memorandum as JSON data, see
    :func:`to_json_data`). A previous signature with the same keyid is replaced;
    other signatures are kept in order. The argument is not modified.
    """
    if "signed" in envelope_or_signed:
        _check_shape(envelope_or_signed, "envelope", require_signatures=False)
        signed = copy.deepcopy(dict(envelope_or_signed["signed"]))
        signatures = copy.deepcopy(list(envelope_or_signed.get("signatures", [])))
    else:
        signed = copy.deepcopy(dict(envelope_or_signed))
        signatures = []
    payload = _signed_bytes(signed)
    keyid = key_id(bytes(key.verify_key))
    signature = key.sign(payload).signature.hex()
    kept = [s for s in signatures if not (isinstance(s, Mapping) and s.get("key_id") == keyid)]
    kept.append({"key_id": keyid, "sig": signature})
    return {"signed": signed, "signatures": kept}


class _JsonProblem(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JsonProblem(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise _JsonProblem(f"number {text} is not an integer; memoranda hold integers only")


def _no_constant(name: str) -> Any:
    raise _JsonProblem(f"{name} is not JSON")


def _read_source(path_or_text: str | bytes | os.PathLike[str]) -> tuple[str, str]:
    if isinstance(path_or_text, bytes):
        raw, source = path_or_text, "<envelope>"
    elif isinstance(path_or_text, str) and path_or_text.lstrip()[:1] in ("{", "["):
        return path_or_text, "<envelope>"
    else:
        source = os.fspath(path_or_text)
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise PolicyError(f"{source}: cannot read the envelope: {exc.strerror}") from None
    try:
        return raw.decode("utf-8"), source
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{source}: not UTF-8 (byte {exc.start})") from None


def load_envelope(
    path_or_text: str | bytes | os.PathLike[str],
) -> tuple[dict[str, Any], Memorandum]:
    """Parse an envelope (a file path, or its JSON text) and validate its signed part.

    Refused, with :class:`PolicyError` naming the problem: text that is not
    JSON, a key twice in one object, a non-integer number, NaN or Infinity,
    a top-level key other than ``signed`` and ``signatures``, a missing
    ``signatures`` list, a signature entry other than ``{"key_id": 64 hex,
    "sig": 128 hex}`` (lowercase), an invalid memorandum (``parse_memorandum``)
    and a key whose keyid is not SHA-256 of its public key. Signatures are NOT
    checked here: see :func:`check_signatures` and :func:`verify_new`.
    """
    text, source = _read_source(path_or_text)
    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"{source}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # _JsonProblem, or an integer too long to read
        raise PolicyError(f"{source}: {exc}") from None
    _check_shape(data, source, require_signatures=True)
    _require_well_formed_entries(data["signatures"], source)
    return data, _parse_signed(data["signed"], source)


SHIPPED_MEMORANDUM = "memorandum-3plus2.yaml"
"""The "3+2" memorandum source that ships with the node, beside this module."""


def shipped_memorandum_source() -> dict[str, Any]:
    """The shipped memorandum's YAML source, as data, to fill in with keys and endpoints."""
    text = resources.files("creditexchange.policy").joinpath(SHIPPED_MEMORANDUM).read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def unsigned_envelope(source: Any, where: str) -> dict[str, Any]:
    """A new envelope, with no signature yet, of a memorandum's source data (from YAML)."""
    return {"signed": to_json_data(parse_memorandum(source, where)), "signatures": []}


def read_memorandum_file(path: Path) -> dict[str, Any]:
    """The envelope in a memorandum file: a signed ``.json`` envelope (:func:`load_envelope`),
    or a new unsigned one from a ``.yaml`` source. A PolicyError names what is wrong."""
    if path.suffix not in (".yaml", ".yml"):
        envelope, _ = load_envelope(path)
        return envelope
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    return unsigned_envelope(data, str(path))


def _load_self_signed(
    path_or_text: str | bytes | os.PathLike[str], what: str, remedy: str = ""
) -> tuple[dict[str, Any], Memorandum]:
    """Load an envelope as the store reads it: strictly, and signed by a threshold of
    its own keys (rule 1). ``what`` names it and ``remedy`` says what to do in the
    refusal."""
    envelope, memorandum = load_envelope(path_or_text)
    own = check_signatures(envelope, memorandum)
    if not own.met:
        raise PolicyError(
            f"{what} is not signed by a threshold of its own keys ({own.summary()})"
            + (f"; {remedy}" if remedy else "")
        )
    return envelope, memorandum


def _parse_signed(signed: Mapping[str, Any], source: str) -> Memorandum:
    _signed_bytes(signed)  # no floats, no huge integers: it must have a canonical form
    memorandum = parse_memorandum(dict(signed), source)
    problems = _key_problems(memorandum)
    if problems:
        raise PolicyError(f"{source}: the memorandum is invalid: " + "; ".join(problems))
    return memorandum


# --------------------------------------------------------------------------- expiry


def is_expired(m: Memorandum, now: dt.datetime) -> bool:
    """True from the instant ``m.expires`` on (``now`` must carry a time zone)."""
    _require_aware(now)
    return now >= m.expires


def expired_error(m: Memorandum) -> MemorandumExpired:
    """The error to raise when ``m`` has expired: names the version and the date."""
    return MemorandumExpired(m.version, m.expires)


# --------------------------------------------------------------------------- updates


@dataclass(frozen=True)
class Accepted:
    """A memorandum that passed the update rules, with the evidence."""

    memorandum: Memorandum
    envelope: dict[str, Any]
    hash: bytes  # memorandum_hash(envelope["signed"])
    own: SignatureCheck  # rule 1
    installed: SignatureCheck | None  # rule 2; None on a first install

    @property
    def first_install(self) -> bool:
        return self.installed is None


def accept(
    envelope: Mapping[str, Any],
    *,
    current: tuple[Mapping[str, Any], Memorandum] | None,
    now: dt.datetime,
) -> Accepted:
    """Apply the update rules (see :func:`verify_new`) and return the evidence.

    Before any rule, the envelope must be well formed as :func:`load_envelope`
    requires (a signature entry that is not ``{"key_id", "sig"}`` in lowercase hex
    refuses it with :class:`PolicyError`), so what is accepted can be stored and
    read back.
    """
    _require_aware(now)
    source = "offered envelope"
    _check_shape(envelope, source, require_signatures=True)
    offered: dict[str, Any] = copy.deepcopy(dict(envelope))  # checked is what is returned
    _require_well_formed_entries(offered["signatures"], source)
    new = _parse_signed(offered["signed"], source)
    digest = memorandum_hash(offered["signed"])
    head = f"memorandum version {new.version} (sha256 {digest.hex()})"

    if current is not None and memorandum_hash(current[0]["signed"]) == digest:
        raise MemorandumRefused(
            f"{head} is already installed; nothing to do", ("already-installed",), new.version
        )

    failures: list[tuple[str, str]] = []
    own = check_signatures(offered, new)
    if not own.met:
        failures.append(
            ("own-signatures", f"rule 1, signed by a threshold of its own keys: {own.summary()}")
        )
    installed = None
    if current is not None:
        old = current[1]
        installed = check_signatures(offered, old)
        if not installed.met:
            failures.append(
                (
                    "installed-signatures",
                    f"rule 2, signed by a threshold of the installed version {old.version}'s "
                    f"keys: {installed.summary()}",
                )
            )
        if new.version == old.version:
            failures.append(
                (
                    "version",
                    f"rule 2, a newer version: version {new.version} is already the installed "
                    "version's number and this is a different document (replay refused; "
                    f"it must be above {old.version})",
                )
            )
        elif new.version < old.version:
            failures.append(
                (
                    "version",
                    f"rule 2, a newer version: version {new.version} is older than the installed "
                    f"version {old.version} (rollback refused; it must be above {old.version})",
                )
            )
        if new.federation != old.federation:
            failures.append(
                (
                    "federation",
                    f"rule 2, the same federation: it is for {new.federation!r}, "
                    f"the installed one for {old.federation!r}",
                )
            )
    if is_expired(new, now):
        failures.append(
            ("expired", f"rule 3, not expired: it expired on {_iso(new.expires)} (now {_iso(now)})")
        )
    if failures:
        raise MemorandumRefused(
            f"{head} refused: " + "; ".join(text for _, text in failures),
            tuple(rule for rule, _ in failures),
            new.version,
        )
    return Accepted(new, offered, digest, own, installed)


def verify_new(
    envelope: Mapping[str, Any],
    *,
    current: tuple[Mapping[str, Any], Memorandum] | None,
    now: dt.datetime,
) -> Memorandum:
    """Verify an offered memorandum against the installed one; return it if it may be installed.

    Rules (any failure raises :class:`MemorandumRefused` listing every rule that
    failed, how many valid signatures counted of how many needed, and which
    signatures were ignored and why):

    1. it is signed by a threshold of its OWN keys;
    2. with ``current``: it is signed by a threshold of the CURRENT version's
       keys (counted with the current threshold), its version is higher than
       the current one (rollback and replay refused; the installed content
       offered again is refused as "already installed") and its federation is
       the same;
    3. it has not expired at ``now``.

    The installed version's own expiry does not matter here: an expired
    memorandum can still approve its successor, which is how a node recovers.

    With ``current=None`` this is a FIRST INSTALL: trust on first use. Only
    rules 1 and 3 apply, and rule 1 is self-certifying — anyone can make a
    memorandum signed by its own keys. The operator must compare the hash,
    ``memorandum_hash(envelope["signed"]).hex()`` (also on
    :func:`accept`'s result and in every refusal message), with the value the
    federation publishes through another channel before trusting it.
    """
    return accept(envelope, current=current, now=now).memorandum


# --------------------------------------------------------------------------- the store


class TrustStore:
    """The installed memorandum, kept in a directory.

    * ``current.json``: the installed envelope, replaced atomically (temporary
      file, fsync, ``os.replace``, fsync of the directory);
    * ``v{N}.json``: every accepted version, kept as history;
    * ``.lock``: serializes installs between processes.

    Invariants:

    * An offered version that fails :func:`verify_new`, or is malformed, changes
      nothing: the last good version stays installed.
    * What is written has been read back with the strict loader and its
      self-signature checked first, so an install never leaves a file that
      :meth:`current` would refuse.
    * ``current.json`` is the newest version of the history, and the same
      memorandum as its ``v{N}.json``. :meth:`current` refuses otherwise (a
      current file rolled back to an older version, replaced by an unaccepted
      document, or an install interrupted between the two writes), and only an
      install of that newest version again repairs it.
    """

    CURRENT = "current.json"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._cache: tuple[tuple[int, int, int], dict[str, Any], Memorandum] | None = None
        self._consistent: tuple[object, ...] | None = None  # the files last found consistent

    @property
    def current_path(self) -> Path:
        return self.directory / self.CURRENT

    def history_path(self, version: int) -> Path:
        return self.directory / f"v{version}.json"

    def versions(self) -> list[int]:
        """The versions kept in the history, ascending."""
        if not self.directory.is_dir():
            return []
        found = (re.fullmatch(r"v([1-9][0-9]*)\.json", p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def install(
        self, envelope_path_or_dict: str | os.PathLike[str] | Mapping[str, Any], now: dt.datetime
    ) -> Memorandum:
        """Verify an offered envelope against the installed one and install it."""
        return self.install_accepted(envelope_path_or_dict, now).memorandum

    def install_accepted(
        self, envelope_path_or_dict: str | os.PathLike[str] | Mapping[str, Any], now: dt.datetime
    ) -> Accepted:
        """As :meth:`install`, returning the evidence (hash, signatures counted).

        The installed version is taken as it is, except that it must be the
        memorandum its ``v{N}.json`` holds. When the history holds a newer version
        than ``current.json`` (an install interrupted between its two writes), only
        that very version is accepted, which completes the interrupted install.
        """
        if isinstance(envelope_path_or_dict, Mapping):
            envelope: Mapping[str, Any] = envelope_path_or_dict
        else:
            envelope, _ = load_envelope(envelope_path_or_dict)
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked():
            current = self._load_current() if self.current_path.exists() else None
            if current is not None:
                self._require_history_matches(*current)
            accepted = accept(envelope, current=current, now=now)
            version = accepted.memorandum.version
            installed = current[1].version if current is not None else None
            newest = max(self.versions(), default=0)
            if newest > (installed or 0) and version != newest:
                raise self._behind(installed, newest)
            data = self._written_form(accepted)
            history = self.history_path(version)
            created = not history.exists()
            if not created:
                kept, _ = load_envelope(history)
                if memorandum_hash(kept["signed"]) != accepted.hash:
                    raise PolicyError(
                        f"{history} already holds a different version {version}; the trust "
                        "store is inconsistent — inspect it before installing"
                    )
            replace_file(history, data, 0o644)
            try:
                replace_file(self.current_path, data, 0o644)
            except BaseException:
                if created:  # the history must not get ahead of current.json
                    with contextlib.suppress(FileNotFoundError):
                        history.unlink()
                raise
            self._cache = self._consistent = None
        return accepted

    def current(self) -> tuple[dict[str, Any], Memorandum]:
        """The installed envelope and memorandum; :class:`PolicyError` if none is installed.

        The files are re-read when they change, and each time they are read the
        self-signature (rule 1) is checked again and ``current.json`` must be the
        newest version of the history and the same memorandum as its ``v{N}.json``:
        a damaged, rolled-back or half-installed store is refused, not used.
        """
        envelope, memorandum = self._checked_current()
        return copy.deepcopy(envelope), memorandum

    def current_hash(self) -> str:
        """SHA-256 of the installed memorandum's signed part, hex."""
        envelope, _ = self._checked_current()
        return memorandum_hash(envelope["signed"]).hex()

    def current_or_expired(self, now: dt.datetime) -> tuple[dict[str, Any], Memorandum]:
        """The installed memorandum, or :class:`MemorandumExpired` if it has expired."""
        envelope, memorandum = self.current()
        if is_expired(memorandum, now):
            raise expired_error(memorandum)
        return envelope, memorandum

    def _load_current(self) -> tuple[dict[str, Any], Memorandum]:
        path = self.current_path
        try:
            st = path.stat()
        except FileNotFoundError:
            raise PolicyError(NO_MEMORANDUM) from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1], self._cache[2]
        envelope, memorandum = _load_self_signed(
            path,
            f"{path}: the installed memorandum",
            "the trust store is damaged — reinstall a signed version",
        )
        self._cache = (stamp, envelope, memorandum)
        return envelope, memorandum

    def _checked_current(self) -> tuple[dict[str, Any], Memorandum]:
        envelope, memorandum = self._load_current()
        self._require_consistent(envelope, memorandum)
        return envelope, memorandum

    def _require_consistent(self, envelope: Mapping[str, Any], memorandum: Memorandum) -> None:
        """``current.json`` is the newest version kept, and the same memorandum as its
        ``v{N}.json``. Checked again only when one of the files involved changed."""
        stamp = tuple(
            (st.st_ino, st.st_mtime_ns, st.st_size) if st else None
            for st in map(
                _stat_or_none,
                (self.directory, self.current_path, self.history_path(memorandum.version)),
            )
        )
        if self._consistent == stamp:
            return
        newest = max(self.versions(), default=0)
        if newest > memorandum.version:
            raise self._behind(memorandum.version, newest)
        self._require_history_matches(envelope, memorandum)
        self._consistent = stamp

    def _require_history_matches(self, envelope: Mapping[str, Any], memorandum: Memorandum) -> None:
        """``current.json`` is the memorandum that was accepted as its version."""
        version = memorandum.version
        history = self.history_path(version)
        installed = memorandum_hash(envelope["signed"]).hex()
        damaged = (
            "the trust store is damaged — compare both files with the version the federation "
            f"published (its sha256), and restore {self.current_path.name} or {history.name} "
            "from it or from a backup"
        )
        try:
            kept, _ = load_envelope(history)
        except PolicyError as exc:
            raise PolicyError(
                f"{self.current_path} holds version {version} (sha256 {installed}), but the "
                f"accepted copy of that version cannot be read: {exc}; {damaged}"
            ) from None
        accepted = memorandum_hash(kept["signed"]).hex()
        if accepted != installed:
            raise PolicyError(
                f"{self.current_path} holds version {version} with sha256 {installed}, but "
                f"the version {version} that was accepted ({history}) has sha256 {accepted}: "
                f"one of them was replaced without 'policy install'; {damaged}"
            )

    def _behind(self, installed: int | None, newest: int) -> PolicyError:
        where = f"holds version {installed}" if installed is not None else "is missing"
        return PolicyError(
            f"{self.current_path} {where} but the history holds version {newest} "
            f"({self.history_path(newest)}): an install was interrupted or the current file "
            f"was rolled back; install version {newest} again to repair it "
            "(credit-node policy install FILE), or inspect the trust store"
        )

    @staticmethod
    def _written_form(accepted: Accepted) -> bytes:
        """The bytes to write, once they have been read back as :meth:`current` will.

        Refuses (nothing written yet) an envelope that cannot be written as JSON or
        that would not load back strictly, self-signed, as the same memorandum.
        """
        head = f"memorandum version {accepted.memorandum.version}"
        try:
            data = _envelope_text(accepted.envelope)
        except (TypeError, ValueError) as exc:
            raise PolicyError(
                f"{head}: the envelope cannot be written as JSON ({exc}); nothing was "
                "installed — offer it as a JSON file (credit-node policy install FILE)"
            ) from None
        try:
            written, _ = _load_self_signed(data, head)
        except PolicyError as exc:
            raise PolicyError(
                f"{head} would not load back once written, so nothing was installed and the "
                f"last good version stays: {exc}"
            ) from None
        if memorandum_hash(written["signed"]) != accepted.hash:
            raise PolicyError(
                f"{head} would be written as a different memorandum, so nothing was installed "
                "and the last good version stays; offer it as a JSON file"
            )
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        descriptor = os.open(self.directory / ".lock", flags, 0o600)
        with os.fdopen(descriptor, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _envelope_text(envelope: Mapping[str, Any]) -> bytes:
    text = json.dumps(envelope, ensure_ascii=False, indent=2, sort_keys=True)
    return (text + "\n").encode("utf-8")
