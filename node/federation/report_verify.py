"""Verifying a consolidated report offline: what anyone holding it and the memorandum can check,
years later, without trusting the node that issued it or asking any member.

:func:`verify_report` returns every problem it finds, each as one sentence
naming the member and what failed; an empty list means the report verified.
It checks, against the memorandum given (its keys, its federation, its hash):

1. **The issuer's signature** — by a key the memorandum lists for the issuer,
   over the canonical form of the report without its ``signature``
   (``report.canonical_report``): any change after signing breaks it.
2. **Every embedded answer** — its envelope signed by a key the memorandum lists
   for that member; bound to the request the report states (``request_digest``),
   from that member to the issuer, under the report's memorandum (version and
   hash); about the report's subject (shown id and type, and — for an
   organisation, whose id is in the report — the subject tag, HMAC-SHA-256 of
   the canonical id under the request's answer key).
3. **Every receipt** — its entry hashes to its leaf hash and records this request
   and this answer (digests, requester, provider, incoming, OK) as the report
   states it (purpose, legal basis, case, officer, mode); its checkpoint
   is signed by the member under its log's origin
   (``credit-exchange/<federation>/<member>/audit``); the inclusion proof puts
   the leaf in that checkpoint's tree; each cosignature
   (``ledger.cosignature``) is by a member's witness key and verifies on the
   checkpoint.
4. **The tables** — the records of each member are exactly those its embedded
   answer makes (``report.answer_records``, rebuilt with the catalog given: the
   federation's, the one the issuer used), no more, no fewer, none altered; every
   member marked ``answered`` has one answer and no other has any; each member's
   record count is right. The issuer's own records carry no member's signature
   but the issuer's, which item 1 covers.

A report issued under another memorandum version than the one given is
reported as such: verify it with the version it names
(:class:`TrustedMemorandum` reads a memorandum file; a node keeps every
installed version in its trust store).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing

from creditexchange.clock import CST
from creditexchange.errors import (
    CanonicalizationError,
    EnvelopeError,
    NoteError,
    PolicyError,
    ProofError,
)
from creditexchange.node.catalog import Catalog
from creditexchange.node.exchange.askable import Asked, providers_for
from creditexchange.node.exchange.envelope import open_envelope
from creditexchange.node.exchange.federation import Federation
from creditexchange.node.exchange.protocol import ANSWER, subject_tag
from creditexchange.node.federation.report import (
    FORMAT,
    SECTIONS,
    Record,
    answer_records,
    canonical_report,
    unsigned_form,
)
from creditexchange.node.ledger import merkle, origin_for
from creditexchange.node.ledger.cosignature import (
    Cosignature,
    CosignatureVerifier,
    witness_name,
)
from creditexchange.node.ledger.note import Checkpoint, Verifier, open_note
from creditexchange.node.ledger.note import key_id as note_key_id
from creditexchange.policy.document import Memorandum, Mode
from creditexchange.policy.engine import PolicyEngine
from creditexchange.policy.trust import (
    TrustStore,
    check_signatures,
    load_envelope,
    memorandum_hash,
)
from creditexchange.subjects import is_individual
from creditexchange.v1 import audit_pb2, exchange_pb2

__all__ = ["MemorandumKeys", "TrustedMemorandum", "trusted_for", "verify_report"]

_KINDS = {"full": audit_pb2.QUERY, "check": audit_pb2.CHECK}  # a report asks one subject
_STATUSES = frozenset({"answered", "denied", "unavailable", "timed_out", "skipped", "own"})


class MemorandumKeys(Protocol):
    """What verifying needs of a memorandum: it, its hash, and each member's keys by key id.
    A node's installed ``exchange.federation.Federation`` is one; so is a
    :class:`TrustedMemorandum` read from a file."""

    @property
    def memorandum(self) -> Memorandum: ...

    @property
    def hash(self) -> bytes: ...

    @property
    def keys(self) -> Mapping[str, Mapping[str, nacl.signing.VerifyKey]]: ...


@dataclass(frozen=True)
class TrustedMemorandum:
    """A memorandum read from a signed envelope, signed by a threshold of its own keys."""

    memorandum: Memorandum
    hash: bytes
    keys: Mapping[str, Mapping[str, nacl.signing.VerifyKey]]

    @classmethod
    def from_envelope(
        cls, envelope: Mapping[str, Any], memorandum: Memorandum
    ) -> TrustedMemorandum:
        own = check_signatures(envelope, memorandum)
        if not own.met:
            raise PolicyError(
                f"memorandum version {memorandum.version} is not signed by a threshold of its "
                f"own keys ({own.summary()}): it cannot vouch for a report"
            )
        keys = {
            m.id: {k.key_id: nacl.signing.VerifyKey(bytes.fromhex(k.public_key)) for k in m.keys}
            for m in memorandum.members
        }
        return cls(memorandum, memorandum_hash(envelope["signed"]), keys)

    @classmethod
    def from_file(cls, path: Path) -> TrustedMemorandum:
        """A signed memorandum file (``.json``); PolicyError saying what is wrong with it."""
        envelope, memorandum = load_envelope(path)
        return cls.from_envelope(envelope, memorandum)


def trusted_for(report: Any, policy_dir: Path, current: MemorandumKeys) -> MemorandumKeys:
    """The memorandum to verify ``report`` against on a node: the version the report
    names, as the node keeps it (every version it installed is in its trust store,
    ``policy_dir``), else the one in force (``current``)."""
    memorandum = report.get("memorandum") if isinstance(report, Mapping) else None
    version = memorandum.get("version") if isinstance(memorandum, Mapping) else None
    if isinstance(version, int) and not isinstance(version, bool) and 0 < version < 2**31:
        kept = TrustStore(policy_dir).history_path(version)
        if kept.is_file():
            return TrustedMemorandum.from_file(kept)
    return current


class _Malformed(ValueError):
    pass


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise _Malformed(f"{where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(f"{where}.{key} is {type(value).__name__}, not of the expected type")
    return value


def _instant(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _Malformed(f"issued_at {text[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise _Malformed(f"issued_at {text[:40]!r} has no time zone")
    return int(moment.timestamp() * 1e6)


SLACK_US = 300_000_000
"""How far (5 minutes, the request window) the members' clocks may stand from the issuer's."""


@dataclass(frozen=True)
class _Report:
    """The parts of a report verification reads, their types checked."""

    issuer: str
    federation: str
    version: int
    hash: str
    subject_id: str
    subject_type: str
    request: Mapping[str, Any]
    members: list[Mapping[str, Any]]
    sections: list[Mapping[str, Any]]
    answers: list[Mapping[str, Any]]
    issued_us: int  # when the issuer says it issued the report
    deadline_us: int

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> _Report:
        if not isinstance(report, Mapping):
            raise _Malformed("it is not a JSON object")
        if report.get("format") != FORMAT:
            raise _Malformed(f"its format is {report.get('format')!r}, not {FORMAT!r}")
        memorandum = _get(report, "memorandum", Mapping, "the report")
        subject = _get(report, "subject", Mapping, "the report")
        parsed = cls(
            issuer=_get(report, "issuer", str, "the report"),
            federation=_get(report, "federation", str, "the report"),
            version=_get(memorandum, "version", int, "memorandum"),
            hash=_get(memorandum, "hash", str, "memorandum"),
            subject_id=_get(subject, "id", str, "subject"),
            subject_type=_get(subject, "type", str, "subject"),
            request=_get(report, "request", Mapping, "the report"),
            members=_get(report, "members", list, "the report"),
            sections=_get(report, "sections", list, "the report"),
            answers=_get(report, "answers", list, "the report"),
            issued_us=_instant(_get(report, "issued_at", str, "the report")),
            deadline_us=int(_get(report, "deadline_s", (int, float), "the report") * 1e6),
        )
        for name in ("members", "sections", "answers"):
            for i, item in enumerate(getattr(parsed, name)):
                if not isinstance(item, Mapping):
                    raise _Malformed(f"{name}[{i}] is not an object")
        for i, section in enumerate(parsed.sections):
            for j, record in enumerate(_get(section, "records", list, f"sections[{i}]")):
                if not isinstance(record, Mapping) or not isinstance(record.get("member"), str):
                    raise _Malformed(f"sections[{i}].records[{j}] is not a record of a member")
        return parsed


def verify_report(
    report: Mapping[str, Any], trusted: MemorandumKeys, catalog: Catalog
) -> list[str]:
    """Every problem of ``report`` against the memorandum ``trusted``, in the order of the
    module's checks; empty when it verifies. ``catalog`` rebuilds the tables."""
    try:
        shape = _Report.of(report)
    except _Malformed as exc:
        return [f"not a consolidated report ({FORMAT}): {exc}"]
    problems: list[str] = []
    memorandum = trusted.memorandum
    if shape.federation != memorandum.federation:
        problems.append(
            f"the report is of federation {shape.federation!r}, the memorandum given of "
            f"{memorandum.federation!r}"
        )
    if shape.version != memorandum.version or shape.hash != trusted.hash.hex():
        problems.append(
            f"the report was issued under memorandum version {shape.version} (hash "
            f"{shape.hash[:16]}…), the memorandum given is version {memorandum.version} (hash "
            f"{trusted.hash.hex()[:16]}…): verify it with the memorandum it names"
        )
    problems += _issuer_signature(report, shape.issuer, trusted)
    bodies: dict[str, exchange_pb2.AnswerBody] = {}
    for position, entry in enumerate(shape.answers):
        body, found = _answer(entry, position, shape, trusted)
        problems += found
        member = entry.get("member")
        if body is not None and isinstance(member, str):
            if member in bodies:
                problems.append(f"the report embeds two answers of {member}")
            bodies[member] = body
    expected = {m: answer_records(m, body, catalog) for m, body in bodies.items()}
    problems += _members(shape, expected)
    problems += _everyone_listed(shape, trusted, catalog)
    problems += _sections(shape, expected)
    return problems


# --- 1. the issuer ---------------------------------------------------------------------


def _issuer_signature(report: Mapping[str, Any], issuer: str, trusted: MemorandumKeys) -> list[str]:
    keys = trusted.keys.get(issuer)
    if keys is None:
        return [
            f"the issuer {issuer!r} is not a member of memorandum version "
            f"{trusted.memorandum.version}: nothing vouches for its signature"
        ]
    signature = report.get("signature")
    if not isinstance(signature, Mapping):
        return [f"the report carries no signature of its issuer {issuer}"]
    key, sig = signature.get("key_id"), signature.get("sig")
    if not isinstance(key, str) or not isinstance(sig, str):
        return [f"the issuer's signature is malformed: key_id and sig must be strings ({issuer})"]
    verify_key = keys.get(key)
    if verify_key is None:
        return [
            f"the report is signed with key {key[:16]}…, which memorandum version "
            f"{trusted.memorandum.version} does not list for the issuer {issuer}"
        ]
    try:
        verify_key.verify(
            canonical_report(unsigned_form(report)), base64.b64decode(sig, validate=True)
        )
    except (nacl.exceptions.BadSignatureError, binascii.Error, ValueError, CanonicalizationError):
        return [
            f"the issuer's signature ({issuer}, key {key[:16]}…) does not verify: the report "
            "was changed after it was signed"
        ]
    return []


# --- 2. and 3. an embedded answer and its receipt -------------------------------------------


def _answer(
    entry: Mapping[str, Any], position: int, shape: _Report, trusted: MemorandumKeys
) -> tuple[exchange_pb2.AnswerBody | None, list[str]]:
    """The answer's body (None when it does not parse) and its problems."""
    member = entry.get("member")
    if not isinstance(member, str):
        return None, [f"answer {position + 1} names no member"]
    who = f"the answer of {member}"
    keys = trusted.keys.get(member)
    if keys is None:
        return None, [f"{who}: {member!r} is not a member of the memorandum given"]
    try:
        stated = bytes.fromhex(_get(entry, "request_digest", str, who))
        answer_key = bytes.fromhex(_get(entry, "answer_key", str, who))
        raw = base64.b64decode(_get(entry, "envelope", str, who), validate=True)
        envelope = exchange_pb2.Envelope()
        envelope.ParseFromString(raw)
        answer = exchange_pb2.Answer()
        answer.ParseFromString(envelope.payload)
        body = exchange_pb2.AnswerBody()
        body.ParseFromString(answer.body)
        logged = audit_pb2.AuditEntry()
        logged.ParseFromString(answer.receipt.entry)
    except (_Malformed, ValueError, binascii.Error) as exc:
        return None, [f"{who} cannot be read: {exc}"]
    except Exception:  # protobuf's DecodeError
        return None, [f"{who} cannot be read: its envelope, answer or audit entry does not parse"]
    problems: list[str] = []
    try:
        open_envelope(envelope, ANSWER, keys)
    except EnvelopeError as exc:
        problems.append(f"{who} is not signed by {member}: {exc}")
    problems += _binding(who, member, body, stated, answer_key, shape)
    problems += _receipt(member, answer, logged, stated, shape, trusted)
    return body, problems


def _binding(
    who: str,
    member: str,
    body: exchange_pb2.AnswerBody,
    stated: bytes,
    answer_key: bytes,
    shape: _Report,
) -> list[str]:
    problems = []
    if body.request_digest != stated:
        problems.append(
            f"{who} is bound to request {body.request_digest.hex()[:16]}…, the report states "
            f"{stated.hex()[:16]}…"
        )
    if body.requester != shape.issuer or body.provider != member:
        problems.append(
            f"{who} is from {body.provider!r} to {body.requester!r}, the report says from "
            f"{member} to its issuer {shape.issuer}"
        )
    if body.memorandum_version != shape.version or body.memorandum_hash.hex() != shape.hash:
        problems.append(
            f"{who} was given under memorandum version {body.memorandum_version} (hash "
            f"{body.memorandum_hash.hex()[:16]}…), the report names version {shape.version}"
        )
    if len(body.subjects) != 1:
        return [*problems, f"{who} covers {len(body.subjects)} subjects, the report one"]
    (subject,) = body.subjects
    if subject.subject_id != shape.subject_id or subject.subject_type != shape.subject_type:
        problems.append(
            f"{who} is about {subject.subject_type} {subject.subject_id!r}, the report about "
            f"{shape.subject_type} {shape.subject_id!r}"
        )
    elif is_individual(shape.subject_type):
        if answer_key:
            problems.append(
                f"{who} comes with its request's answer key, which for an individual would let "
                "a reader recover the masked identity number from the subject tag"
            )
    elif not answer_key:
        problems.append(f"{who} comes without its request's answer key: its subject is unproven")
    elif subject.subject_tag != subject_tag(answer_key, shape.subject_id):
        problems.append(
            f"{who} is tagged for another subject than {shape.subject_id} under the request's "
            "answer key"
        )
    return problems


def _receipt(
    member: str,
    answer: exchange_pb2.Answer,
    logged: audit_pb2.AuditEntry,
    stated: bytes,
    shape: _Report,
    trusted: MemorandumKeys,
) -> list[str]:
    receipt = answer.receipt
    whose = f"the receipt in the answer of {member}"
    problems = []
    if merkle.leaf_hash(receipt.entry) != receipt.leaf_hash:
        problems.append(f"{whose}: its entry does not hash to its leaf hash")
    differs = [
        name
        for name, ok in (
            ("request digest", logged.request_digest == stated),
            ("answer digest", logged.answer_digest == hashlib.sha256(answer.body).digest()),
            ("requester", logged.requester == shape.issuer),
            ("provider", logged.responder == member),
            ("direction", logged.direction == audit_pb2.INCOMING),
            ("outcome", logged.outcome.status == "OK"),
            ("purpose", logged.purpose == shape.request.get("purpose")),
            ("legal basis", logged.legal_basis == shape.request.get("legal_basis")),
            ("case reference", logged.case_reference == shape.request.get("case_reference")),
            ("officer", logged.officer == shape.request.get("officer")),
            ("partner", logged.partner == shape.request.get("partner", "")),
            ("mode", logged.kind == _KINDS.get(str(shape.request.get("mode")))),
        )
        if not ok
    ]
    if differs:
        problems.append(
            f"{whose}: its audit entry does not record this request and this answer "
            f"({', '.join(differs)} differ)"
        )
    earliest = shape.issued_us - shape.deadline_us - SLACK_US
    if not earliest <= logged.time_unix_micros <= shape.issued_us + SLACK_US:
        problems.append(
            f"{whose}: it was recorded at {_shown(logged.time_unix_micros)}, not while this "
            f"report was asked (up to {shape.deadline_us / 1e6:g} s before "
            f"{_shown(shape.issued_us)}): an answer to an earlier request"
        )
    origin = origin_for(member, trusted.memorandum.federation)
    verifiers = [
        Verifier(origin, note_key_id(origin, bytes(key)), bytes(key))
        for key in trusted.keys[member].values()
    ]
    try:
        text, _ = open_note(receipt.checkpoint, verifiers)
        checkpoint = Checkpoint.parse(text)
    except NoteError as exc:
        return [*problems, f"{whose}: its checkpoint is not signed by {member}'s log: {exc}"]
    if checkpoint.origin != origin:
        problems.append(f"{whose}: its checkpoint is of log {checkpoint.origin!r}, not {origin!r}")
    try:
        merkle.verify_inclusion(
            receipt.leaf_hash,
            receipt.leaf_index,
            checkpoint.size,
            list(receipt.inclusion_proof),
            checkpoint.root_hash,
        )
    except ProofError as exc:
        problems.append(
            f"{whose}: entry {receipt.leaf_index} is not proven in {member}'s checkpoint of size "
            f"{checkpoint.size}: {exc}"
        )
    return problems + _cosignatures(whose, member, text, receipt.cosignatures, trusted)


def _cosignatures(
    whose: str, member: str, body: str, lines: Sequence[str], trusted: MemorandumKeys
) -> list[str]:
    federation = trusted.memorandum.federation
    witnesses: dict[str, list[CosignatureVerifier]] = {}
    for other, keys in trusted.keys.items():
        if other == member:
            continue  # a log's owner vouching for its own checkpoint witnesses nothing
        name = witness_name(other, federation)
        witnesses[name] = [CosignatureVerifier.for_key(name, bytes(k)) for k in keys.values()]
    problems = []
    for number, line in enumerate(lines, start=1):
        where = f"{whose}: cosignature {number} on {member}'s checkpoint"
        try:
            cosignature = Cosignature.parse(line)
        except NoteError as exc:
            problems.append(f"{where} cannot be read: {exc}")
            continue
        known = [v for v in witnesses.get(cosignature.name, []) if v.signed(cosignature)]
        if not known:
            problems.append(
                f"{where} is by {cosignature.name}+{cosignature.key_id.hex()}, not a witness key "
                "of any member of the memorandum given"
            )
            continue
        try:
            known[0].verify(body, cosignature)
        except NoteError as exc:
            problems.append(f"{where} is forged: {exc}")
    return problems


# --- 4. members and tables -------------------------------------------------------------


def _members(shape: _Report, expected: Mapping[str, list[tuple[str, Record]]]) -> list[str]:
    problems = []
    answered: set[str] = set()
    own = 0
    for entry in shape.members:
        member, status = entry.get("member"), entry.get("status")
        if not isinstance(member, str) or status not in _STATUSES:
            problems.append(f"a member entry is malformed: {json.dumps(dict(entry))[:120]}")
            continue
        if status == "own":
            own += 1
            if member != shape.issuer:
                problems.append(f"{member} is marked as the issuer's own store, the issuer is "
                                f"{shape.issuer}")  # fmt: skip
            continue
        if status != "answered":
            if member in expected:
                problems.append(f"the report embeds an answer of {member} but marks it {status}")
            continue
        answered.add(member)
        if member not in expected:
            problems.append(f"{member} is marked answered, but the report embeds no answer of it")
            continue
        count = sum(1 for _, r in expected[member] if r["hit"] is not False)
        if entry.get("records") != count:
            problems.append(
                f"{member} is said to have {entry.get('records')} record(s), its signed answer "
                f"has {count}"
            )
    if own != 1:
        problems.append(f"the report lists the issuer's own store {own} times, not once")
    for member in sorted(set(expected) - answered):
        if not any(e.get("member") == member for e in shape.members):
            problems.append(f"the report embeds an answer of {member}, which it does not list")
    return problems


def _everyone_listed(shape: _Report, trusted: MemorandumKeys, catalog: Catalog) -> list[str]:
    """Every member the memorandum let the issuer ask, when it issued the report, is in the
    report, whatever it said: a member cannot be left out of a report unseen."""
    memorandum = trusted.memorandum
    engine = PolicyEngine(memorandum, trusted.hash, catalog)
    owners = {kid: member for member, keys in trusted.keys.items() for kid in keys}
    federation = Federation(
        memorandum, trusted.hash, engine, {m: dict(k) for m, k in trusted.keys.items()}, owners
    )
    asked = Asked(
        requester=shape.issuer,
        provider=shape.issuer,
        purpose=str(shape.request.get("purpose", "")),
        subject_types=(shape.subject_type,),
        themes=(),
        mode=Mode.FULL,
        case_reference=str(shape.request.get("case_reference", "")),
        officer=str(shape.request.get("officer", "")),
    )
    when = dt.datetime.fromtimestamp(shape.issued_us / 1e6, dt.UTC)
    listed = {m.get("member") for m in shape.members}
    return [
        f"the memorandum let {shape.issuer} ask {member} for {asked.purpose}, but the report "
        "does not list it: a member was left out"
        for member in providers_for(federation, asked, now=when)
        if member not in listed
    ]


def _sections(shape: _Report, expected: Mapping[str, list[tuple[str, Record]]]) -> list[str]:
    problems = []
    codes = [s.get("code") for s in shape.sections]
    if codes != [code for code, _, _ in SECTIONS]:
        problems.append(
            f"the sections are {codes}, not the nine of the national report in their order"
        )
    for section in shape.sections:
        title = next((s for s in SECTIONS if s[0] == section.get("code")), None)
        if title and (section.get("title_zh"), section.get("title_en")) != title[1:]:
            problems.append(f"section {title[0]} is titled {section.get('title_zh')!r}")
    shown: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for section in shape.sections:
        for record in section["records"]:
            if record["member"] != shape.issuer:
                shown.setdefault(record["member"], []).append((str(section.get("code")), record))
    for member in sorted(set(shown) | set(expected)):
        if member not in expected:
            problems.append(
                f"the report shows {len(shown[member])} record(s) of {member}, which has no "
                "answer in it: the tables were edited"
            )
            continue
        problems += _compare(member, shown.get(member, []), expected[member])
    return problems


def _facts(section: str, record: Mapping[str, Any]) -> str:
    return json.dumps([section, record], sort_keys=True, ensure_ascii=False, default=str)


def _compare(
    member: str,
    shown: Sequence[tuple[str, Mapping[str, Any]]],
    expected: Sequence[tuple[str, Record]],
) -> list[str]:
    """Every record of ``member`` the report shows that its answer does not make, and
    every one it makes that the report does not show; a changed record named as such."""
    extra = Counter(_facts(s, r) for s, r in shown)
    extra.subtract(_facts(s, r) for s, r in expected)
    added = [json.loads(f) for f, n in extra.items() for _ in range(n) if n > 0]
    dropped = [json.loads(f) for f, n in extra.items() for _ in range(-n) if n < 0]
    problems = []
    for section, record in added:
        ident = (record.get("theme"), record.get("record_key"))
        twin = next(
            (
                i
                for i, (_, r) in enumerate(dropped)
                if (r.get("theme"), r.get("record_key")) == ident
            ),
            None,
        )
        what = _name(member, record)
        if twin is None:
            problems.append(
                f"section {section} shows {what}, which {member}'s signed answer does not hold: "
                "the tables were edited"
            )
            continue
        signed_section, signed = dropped.pop(twin)
        changes = _differences(record, signed)
        if section != signed_section:
            changes.insert(0, f"section {section} (signed: {signed_section})")
        problems.append(
            f"{what} differs from {member}'s signed answer: {'; '.join(changes)}: the tables "
            "were edited"
        )
    for section, record in dropped:
        problems.append(
            f"{member}'s signed answer holds {_name(member, record)}, which section {section} "
            "does not show: the tables were edited"
        )
    return problems


def _name(member: str, record: Mapping[str, Any]) -> str:
    if record.get("record_key"):
        return f"record {record['record_key']} of {member} (theme {record.get('theme')})"
    return f"the {record.get('theme')} check of {member}"


def _differences(shown: Mapping[str, Any], signed: Mapping[str, Any]) -> list[str]:
    changes = []
    for key in sorted(set(shown) | set(signed)):
        if key == "fields" or shown.get(key) == signed.get(key):
            continue
        changes.append(f"{key} {shown.get(key)!r} (signed: {signed.get(key)!r})")
    fields = {f.get("name"): f for f in shown.get("fields") or [] if isinstance(f, Mapping)}
    signed_fields = {f.get("name"): f for f in signed.get("fields") or [] if isinstance(f, Mapping)}
    for name in sorted(set(fields) | set(signed_fields), key=str):
        a, b = fields.get(name), signed_fields.get(name)
        if a == b:
            continue
        if a is None or b is None:
            changes.append(f"field {name} {'added' if b is None else 'removed'}")
        else:
            changes.append(
                f"field {name} {a.get('value')!r} (signed: {b.get('value')!r})"
                if a.get("value") != b.get("value")
                else f"field {name} presented differently"
            )
    return changes or ["its fields are in another order"]


def _shown(time_us: int) -> str:
    return dt.datetime.fromtimestamp(time_us / 1e6, CST).isoformat(timespec="seconds")
