"""The consolidated report: one subject's public credit across the region, signed by the issuer.

:func:`consolidated_report` asks every member the memorandum lets this node ask
(:func:`~creditexchange.node.federation.fanout.ask_everyone`, one deadline),
reads this node's own store at the same time, and returns the report as the
JSON object of format ``creditexchange.report/v1``: the subject, the request
(purpose, legal basis, case, officer, mode), one entry per member with what
happened, the records grouped into the nine sections of the national public
credit information report, every member's signed answer verbatim with its
receipt, and the issuer's signature. Promises:

* **The sections are a function of the answers.** Each member's records are
  built from its signed answer alone (:func:`answer_records`), with the
  catalog's labels and units, as ``credit-node show`` prints them (a code as
  ``fine (罚款)``; a unit is the catalog label's last parenthesis, ``（万元）``),
  its source department's name, the objection mark and, in check mode, one
  hit / no-hit line per theme. ``report_verify`` rebuilds them from the
  embedded answers with the same function and compares.
* **The issuer's own store** is read through ``records.view.subject_view``: the
  servable records on China's date, shown as this node shows them to its own
  officers. The memorandum governs queries *between* members (the policy engine
  refuses a requester asking itself), so no rule can say what the issuer's own
  partner may see; the report shows what the catalog makes public and masks
  what it marks sensitive (identity numbers). The memorandum's privacy floor
  still holds: a purpose that does not cover the subject's type shows nothing,
  and an individual is shown hit / no-hit on the list themes only, whatever the
  mode. These records carry no member's signature but the issuer's.
* **Individuals stay masked**: the subject's id and name as
  ``creditexchange.identifiers`` shows them. The request's answer key is embedded
  only for organisations: with a masked id it would let anyone holding the report
  recover the hidden digits from the subject tag, and it cannot be checked then
  anyway.
* **Signed canonically.** ``signature`` is Ed25519 by the issuer's signing key
  over :func:`canonical_report` of the report without its ``signature`` (RFC 8785:
  ``policy.canonical`` for everything but the two kinds of number it refuses —
  ``elapsed_ms`` and ``deadline_s`` are floats here — which are written as
  ECMAScript writes them, RFC 8785 §3.2.2.3). :func:`report_digest` is SHA-256 of
  the canonical form of the whole report, signature included.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import math
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import nacl.signing

from creditexchange.clock import CST, china_today
from creditexchange.errors import CanonicalizationError, NotFound
from creditexchange.identifiers import mask_identifier
from creditexchange.node.catalog import Catalog, CatalogField, FieldType
from creditexchange.node.exchange.answer_view import VerifiedAnswer
from creditexchange.node.federation.fanout import (
    DEFAULT_DEADLINE_S,
    FanOut,
    MemberResult,
    RegionalClient,
    ask_everyone,
    prepare,
)
from creditexchange.node.records import repository
from creditexchange.node.records.view import subject_view
from creditexchange.policy.canonical import MAX_SAFE_INTEGER, canonical_json
from creditexchange.policy.document import Mode
from creditexchange.policy.trust import key_id
from creditexchange.subjects import is_individual
from creditexchange.v1 import exchange_pb2

__all__ = [
    "FORMAT",
    "SECTIONS",
    "BatchResult",
    "OwnRecords",
    "answer_records",
    "build_sections",
    "canonical_report",
    "check_everyone",
    "consolidated_report",
    "covered_types",
    "field_label",
    "own_records",
    "report_digest",
    "section_of",
    "sign_report",
    "unsigned_form",
]

FORMAT: Final = "creditexchange.report/v1"

SECTIONS: Final[tuple[tuple[str, str, str], ...]] = (
    ("registration", "基础登记信息", "Basic registration"),
    (
        "licensing_and_management",
        "行政许可与行政管理信息",
        "Administrative licensing and management",
    ),
    ("honours", "诚实守信相关荣誉信息", "Honours and rewards"),
    ("serious_dishonesty", "严重失信主体名单信息", "Serious dishonesty list"),
    ("abnormal_operation", "经营异常名录信息", "Abnormal operation list"),
    ("commitments", "信用承诺及履约情况信息", "Credit commitments and their fulfilment"),
    ("evaluations", "信用评价结果信息", "Credit evaluations and grades"),
    ("judicial", "司法裁判及执行信息", "Judicial judgments and enforcement"),
    ("other", "其他信息", "Other"),
)
"""The sections of the national public credit information report: code, Chinese and English
title, in the report's order."""

_SECTION_OF_CATEGORY: Final[Mapping[str, str]] = {
    "registration": "registration",
    "administrative": "licensing_and_management",
    "honours": "honours",
    "serious_dishonesty": "serious_dishonesty",
    "abnormal_operation": "abnormal_operation",
    "credit_commitment": "commitments",
    "credit_evaluation": "evaluations",
    "judicial": "judicial",
}

_UNIT = re.compile(r"^(?P<label>.+)（(?P<unit>[^（）]{1,6})）$")

Record = dict[str, Any]


def section_of(catalog: Catalog, theme: str) -> str:
    """The report section of a theme's records: by its catalog category; ``other`` when the
    category has no section of its own or the catalog does not know the theme."""
    known = catalog.theme_by_code.get(theme)
    return _SECTION_OF_CATEGORY.get(known.category, "other") if known else "other"


def field_label(spec: CatalogField) -> tuple[str, str]:
    """A field's Chinese label and unit: a number's unit is its label's last parenthesis
    (``罚款金额（万元）`` is ``罚款金额`` in ``万元``); other fields have none."""
    if spec.type in (FieldType.DECIMAL, FieldType.INTEGER):
        found = _UNIT.match(spec.name_zh)
        if found:
            return found["label"], found["unit"]
    return spec.name_zh, ""


def _shown(spec: CatalogField | None, value: str) -> str:
    """A value as ``credit-node show`` prints it: a code with its label."""
    if spec is not None and spec.codes and value in spec.codes:
        return f"{value} ({spec.codes[value]})"
    return value


def _fields(
    catalog: Catalog, theme: str, values: Mapping[str, str], masked: set[str]
) -> list[dict[str, Any]]:
    """The fields of a record, in catalog order (fields it does not know last, by name)."""
    known = catalog.theme_by_code.get(theme)
    specs = known.field_by_name if known else {}
    order = [name for name in specs if name in values]
    order += sorted(name for name in values if name not in specs)
    fields = []
    for name in order:
        spec = specs.get(name)
        label, unit = field_label(spec) if spec else (name, "")
        fields.append(
            {
                "name": name,
                "label": label,
                "value": _shown(spec, values[name]),
                "unit": unit,
                "masked": name in masked,
            }
        )
    return fields


def _record(
    catalog: Catalog,
    member: str,
    theme: str,
    *,
    source_department: str = "",
    record_key: str = "",
    status: str = "",
    under_objection: bool = False,
    decision_date: str = "",
    valid_until: str = "",
    publicity_end: str = "",
    hit: bool | None = None,
    fields: list[dict[str, Any]] | None = None,
) -> Record:
    known = catalog.theme_by_code.get(theme)
    department = catalog.department_by_code.get(source_department)
    return {
        "member": member,
        "theme": theme,
        "theme_name": known.name_zh if known else theme,
        "source_department": department.name_zh if department else source_department,
        "record_key": record_key,
        "status": status,
        "under_objection": under_objection,
        "decision_date": decision_date,
        "valid_until": valid_until,
        "publicity_end": publicity_end,
        "hit": hit,
        "fields": fields or [],
    }


def answer_records(
    member: str, body: exchange_pb2.AnswerBody, catalog: Catalog
) -> list[tuple[str, Record]]:
    """A member's records in the report, (section, record), from its signed answer alone:
    every record of every allowed theme in full mode; one hit / no-hit line per allowed
    theme in check mode."""
    records: list[tuple[str, Record]] = []
    for subject in body.subjects:
        for theme in subject.themes:
            if not theme.allowed:
                continue
            section = section_of(catalog, theme.theme)
            if theme.mode == exchange_pb2.MODE_CHECK:
                line = _record(
                    catalog,
                    member,
                    theme.theme,
                    under_objection=theme.under_objection,
                    hit=theme.hit,
                )
                records.append((section, line))
                continue
            masked = set(theme.masked_fields)
            for r in theme.records:
                record = _record(
                    catalog,
                    member,
                    theme.theme,
                    source_department=r.source_department,
                    record_key=r.record_key,
                    status=r.status,
                    under_objection=r.under_objection,
                    decision_date=r.decision_date,
                    valid_until=r.valid_until,
                    publicity_end=r.publicity_end,
                    fields=_fields(catalog, theme.theme, dict(r.fields), masked),
                )
                records.append((section, record))
    return records


def build_sections(records: Sequence[tuple[str, Record]]) -> list[dict[str, Any]]:
    """All nine sections, in order, each with its records in the order given."""
    by_section: dict[str, list[Record]] = {code: [] for code, _, _ in SECTIONS}
    for section, record in records:
        by_section[section].append(record)
    return [
        {"code": code, "title_zh": zh, "title_en": en, "records": by_section[code]}
        for code, zh, en in SECTIONS
    ]


def _counted(records: Sequence[tuple[str, Record]]) -> int:
    """What a member's ``records`` count says: its records, or in check mode its hits."""
    return sum(1 for _, r in records if r["hit"] is not False)


# --- the issuer's own store ----------------------------------------------------------


@dataclass(frozen=True)
class OwnRecords:
    """This node's own records of a subject as a report (or a partner) is shown them."""

    records: list[tuple[str, Record]]
    name: str  # the subject's name as shown, "" when not held
    reason: str
    elapsed_ms: float
    held: bool = True  # False: no such subject in this node's store


def covered_types(region: RegionalClient, purpose: str) -> Sequence[str]:
    """The subject types the purpose covers (read before a worker thread reads the store)."""
    return region.federation.memorandum.purpose_by_code[purpose].subject_types


def own_records(
    region: RegionalClient,
    subject: str,
    subject_type: str,
    purpose: str,
    covered: Sequence[str],
    mode: Mode,
) -> OwnRecords:
    """The issuer's own records of ``subject`` (see the module: shown as this node shows
    them; the purpose's subject types, ``covered``, and the individuals' check-only floor
    respected)."""
    started = time.perf_counter()
    catalog = region.catalog

    def done(
        records: list[tuple[str, Record]], name: str, reason: str, held: bool = True
    ) -> OwnRecords:
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return OwnRecords(records, name, reason, elapsed, held)

    if subject_type not in covered:
        return done(
            [], "", f"purpose {purpose} does not cover subject type {subject_type}: nothing shown"
        )
    try:
        view = subject_view(region.store, catalog, subject)
    except NotFound:
        return done([], "", "no such subject in this node's store", held=False)
    if mode is Mode.CHECK or is_individual(subject_type):  # the city's own lists only
        held = [(r.theme, r.under_objection) for r in view.records if not r.origin]
        return done(_check_lines(catalog, region.member_id, subject_type, held), view.name, "")
    records = []
    for r in view.records:
        values = {k: "" if v is None else str(v) for k, v in r.fields.items()}
        known = catalog.theme_by_code.get(r.theme)
        sensitive = {f.name for f in known.fields if f.sensitive} if known else set(values)
        record = _record(
            catalog,
            region.member_id,
            r.theme,
            source_department=r.source_department,
            record_key=r.record_key,
            status=r.status,
            under_objection=r.under_objection,
            decision_date=_iso(r.decision_date),
            valid_until=_iso(r.valid_until),
            publicity_end=_iso(r.publicity_end),
            fields=_fields(catalog, r.theme, values, sensitive & set(values)),
        )
        if r.origin:  # held as a copy of the origin's feed: shown as the origin's data
            record["synced_from"] = r.origin
        records.append((section_of(catalog, r.theme), record))
    return done(records, view.name, "")


def _check_lines(
    catalog: Catalog, member: str, subject_type: str, held: Sequence[tuple[str, bool]]
) -> list[tuple[str, Record]]:
    """Hit / no-hit per theme that holds this kind of subject (for an individual: the lists),
    from the (theme, under objection) of the servable records held."""
    lines = []
    for theme in catalog.themes:
        if not theme.allows(subject_type) or (is_individual(subject_type) and not theme.is_list):
            continue
        marks = [objection for code, objection in held if code == theme.code]
        line = _record(catalog, member, theme.code, under_objection=any(marks), hit=bool(marks))
        lines.append((section_of(catalog, theme.code), line))
    return lines


def _iso(value: dt.date | None) -> str:
    return value.isoformat() if value is not None else ""


# --- canonical form, digest, signature ----------------------------------------------


def _es_number(value: float) -> str:
    """A finite float as ECMAScript's Number::toString writes it (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(value):
        raise CanonicalizationError(f"{value!r} has no JSON form")
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _es_number(-value)
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    power = int(exponent or 0) - len(fraction)  # value = int(digits) * 10**power
    stripped = digits.rstrip("0")
    power += len(digits) - len(stripped)
    k = len(stripped)
    n = power + k  # value = 0.stripped * 10**n
    if k <= n <= 21:
        return stripped + "0" * (n - k)
    if 0 < n <= 21:
        return stripped[:n] + "." + stripped[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + stripped
    sign = "+" if n - 1 >= 0 else "-"
    head = stripped[0] + ("." + stripped[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(n - 1)}"


class _NotPlain(Exception):
    """A value whose canonical form only ``policy.canonical`` writes correctly."""


def canonical_report(report: Mapping[str, Any]) -> bytes:
    """The RFC 8785 canonical form of a report (or of any JSON value with floats in it).

    Floats are written as ECMAScript writes them (§3.2.2.3): spliced in where
    ``policy.canonical``, which refuses them, leaves a placeholder. Where every object
    key is ASCII (so code-point order is UTF-16 order) and every integer within
    ±(2**53 − 1), as in every report this node issues, the standard library's
    ``json.dumps`` with sorted keys and no whitespace writes exactly those bytes, ten
    times faster; anything else goes through ``policy.canonical``, which says what is
    wrong with it.
    """
    marker = os.urandom(12).hex()  # no text from a peer can hold it
    numbers: list[bytes] = []
    plain = True

    def swap(value: Any) -> Any:
        nonlocal plain
        kind = type(value)
        if kind is float:
            numbers.append(_es_number(value).encode())
            return f"\x00{marker}:{len(numbers) - 1}"
        if kind is dict or isinstance(value, Mapping):
            if plain and not all(type(k) is str and k.isascii() for k in value):
                plain = False
            return {k: swap(v) for k, v in value.items()}
        if kind is list:
            return [swap(v) for v in value]
        if kind not in (str, int, bool, type(None)) or (
            kind is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
        ):
            plain = False  # canonical_json names what is wrong with it
        return value

    swapped = swap(report)
    text: bytes | None = None
    if plain:
        try:
            text = json.dumps(
                swapped, ensure_ascii=False, separators=(",", ":"), sort_keys=True
            ).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError):  # a lone surrogate, a stray type
            text = None
    if text is None:
        text = canonical_json(swapped)
    if not numbers:
        return text
    head = b'"\\u0000' + marker.encode() + b":"
    parts = text.split(head)
    out = [parts[0]]
    for part in parts[1:]:  # each part starts with the number's index and its closing quote
        index, _, rest = part.partition(b'"')
        out += [numbers[int(index)], rest]
    return b"".join(out)


def unsigned_form(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report without its ``signature``: what the signature covers."""
    return {k: v for k, v in report.items() if k != "signature"}


def report_digest(report: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical form of the whole report, signature included, hex: the digest
    the printed report and its QR code show."""
    return hashlib.sha256(canonical_report(report)).hexdigest()


def sign_report(report: Mapping[str, Any], signing_key: nacl.signing.SigningKey) -> dict[str, Any]:
    """The report with the issuer's ``signature`` over its canonical unsigned form."""
    unsigned = unsigned_form(report)
    signature = signing_key.sign(canonical_report(unsigned)).signature
    return {
        **unsigned,
        "signature": {
            "key_id": key_id(bytes(signing_key.verify_key)),
            "sig": base64.b64encode(signature).decode("ascii"),
        },
    }


# --- the report ------------------------------------------------------------------------


def _member_entry(region: RegionalClient, result: MemberResult, records: int) -> dict[str, Any]:
    member = region.federation.memorandum.member_by_id.get(result.member)
    return {
        "member": result.member,
        "name": member.name_zh if member else result.member,
        "status": str(result.outcome),
        "reason": result.reason,
        "elapsed_ms": float(result.elapsed_ms),
        "records": records,
    }


def _answer_entry(result: MemberResult, subject_type: str) -> dict[str, Any]:
    assert result.answer is not None
    return {
        "member": result.member,
        "request_digest": result.answer.request_digest.hex(),
        "answer_key": "" if is_individual(subject_type) else result.answer.answer_key.hex(),
        "envelope": base64.b64encode(result.answer.envelope).decode("ascii"),
    }


async def consolidated_report(
    region: RegionalClient,
    subject: str,
    *,
    purpose: str,
    legal_basis: str,
    case_reference: str,
    officer: str,
    partner: str = "",
    mode: Mode | str = Mode.FULL,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> dict[str, Any]:
    """Ask the region about ``subject`` and return the signed report (see the module).

    Refused before anything is sent (:class:`~creditexchange.errors.ExchangeError`):
    an identifier whose check character is wrong, a purpose the memorandum does not
    list, a mode other than ``full`` or ``check``, a header text a provider would
    refuse. The request's texts are shown as they were sent (NFKC, trimmed).
    """
    asking = prepare(
        region,
        [subject],
        purpose=purpose,
        legal_basis=legal_basis,
        case_reference=case_reference,
        officer=officer,
        partner=partner,
        mode=mode,
    )
    ((canonical, subject_type),) = asking.subjects
    mode = asking.mode
    federation = region.federation
    own_task = asyncio.create_task(
        asyncio.to_thread(
            own_records,
            region,
            canonical,
            subject_type,
            purpose,
            covered_types(region, purpose),
            mode,
        )
    )
    try:
        fanned: FanOut = await ask_everyone(region, asking, deadline_s=deadline_s)
    except BaseException:
        await asyncio.gather(own_task, return_exceptions=True)
        raise
    own = await own_task
    itself = federation.memorandum.member_by_id.get(region.member_id)
    members = [
        {
            "member": region.member_id,
            "name": itself.name_zh if itself else region.member_id,
            "status": "own",
            "reason": own.reason,
            "elapsed_ms": float(own.elapsed_ms),
            "records": _counted(own.records),
        }
    ]
    answered: list[tuple[str, Record]] = []
    answers = []
    name = own.name
    for result in fanned.results:
        mine: list[tuple[str, Record]] = []
        if result.answer is not None:
            mine = answer_records(result.member, result.answer.body, region.catalog)
            answers.append(_answer_entry(result, subject_type))
            name = name or _answered_name(result.answer)
        members.append(_member_entry(region, result, _counted(mine)))
        answered += mine
    signed = {(r["member"], r["theme"], r["record_key"]) for _, r in answered}
    kept = [  # a synced copy of a record its member answered with itself is not shown twice
        (section, r)
        for section, r in own.records
        if (r.get("synced_from"), r["theme"], r["record_key"]) not in signed
    ]
    members[0]["records"] = _counted([(c, r) for c, r in kept if not r.get("synced_from")])
    records = kept + answered
    purpose_entry = federation.memorandum.purpose_by_code[purpose]
    report = {
        "format": FORMAT,
        "report_id": uuid.uuid4().hex,
        "issuer": region.member_id,
        "federation": federation.memorandum.federation,
        "memorandum": {"version": federation.version, "hash": federation.hash.hex()},
        "issued_at": dt.datetime.now(CST).isoformat(timespec="seconds"),
        "subject": {
            "id": mask_identifier(canonical, subject_type),
            "type": subject_type,
            "name": name,
        },
        "request": {
            "purpose": asking.purpose,
            "purpose_name": purpose_entry.name_zh,
            "legal_basis": asking.legal_basis,
            "case_reference": asking.case_reference,
            "officer": asking.officer,
            "partner": asking.partner,
            "mode": mode.value,
        },
        "deadline_s": float(deadline_s),
        "members": members,
        "sections": build_sections(records),
        "answers": answers,
    }
    return sign_report(report, region.client.signing_key)


def _answered_name(answer: VerifiedAnswer) -> str:
    return next((s.name for s in answer.body.subjects if s.found and s.name), "")


# --- a batch across the region ------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    """A batch check across the region: per subject asked, per member and theme, the hit.

    ``hits[i][(member, theme)]`` is (hit, under objection) for subject ``i``; a member
    that did not answer has no entry. ``fanned`` says what happened per member.
    """

    subjects: tuple[str, ...]  # as shown: individuals masked
    subject_types: tuple[str, ...]
    fanned: FanOut
    own_member: str
    hits: tuple[dict[tuple[str, str], tuple[bool, bool]], ...]

    @property
    def columns(self) -> list[tuple[str, str]]:
        """Every (member, theme) some subject was checked against, members in report order."""
        seen: dict[tuple[str, str], None] = {}
        for row in self.hits:
            seen.update(dict.fromkeys(row))
        order = [self.own_member, *(r.member for r in self.fanned.results)]
        return sorted(seen, key=lambda c: (order.index(c[0]), c[1]))


def _own_batch(
    region: RegionalClient, subjects: Sequence[tuple[str, str]], covered: Sequence[str]
) -> list[list[tuple[str, Record]]]:
    """This node's own hit / no-hit lines for every subject, from one read of its store
    (none for a subject whose type the purpose does not cover, ``covered``)."""
    with region.store.connect() as conn:
        found = repository.read_subjects(
            conn.connection.driver_connection,
            conn.dialect,
            [s for s, _ in subjects],
            None,
            china_today(),
        )
    held: dict[str, list[tuple[str, bool]]] = {}
    for record in found.records:
        held.setdefault(record.subject_id, []).append((record.theme, record.under_objection))
    return [
        _check_lines(region.catalog, region.member_id, subject_type, held.get(subject, []))
        if subject_type in covered and subject in found.subjects
        else []
        for subject, subject_type in subjects
    ]


async def check_everyone(
    region: RegionalClient,
    subjects: Sequence[str],
    *,
    purpose: str,
    legal_basis: str,
    case_reference: str,
    officer: str,
    partner: str = "",
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> BatchResult:
    """Hit / no-hit for every subject at every member (one ``BatchCheck`` each, in
    parallel under one deadline) and in this node's own store (one read, meanwhile).

    A subject this node does not hold, or whose type the purpose does not cover, has
    no own lines."""
    asking = prepare(
        region,
        subjects,
        purpose=purpose,
        legal_basis=legal_basis,
        case_reference=case_reference,
        officer=officer,
        partner=partner,
        mode=Mode.CHECK,
    )
    canonical = asking.subjects
    own_task = asyncio.create_task(
        asyncio.to_thread(_own_batch, region, canonical, covered_types(region, purpose))
    )
    try:
        fanned = await ask_everyone(region, asking, deadline_s=deadline_s)
    except BaseException:
        await asyncio.gather(own_task, return_exceptions=True)
        raise
    rows: list[dict[tuple[str, str], tuple[bool, bool]]] = [
        {
            (region.member_id, line["theme"]): (bool(line["hit"]), line["under_objection"])
            for _, line in own
        }
        for own in await own_task
    ]
    for result in fanned.results:
        if result.answer is None:
            continue
        for i, answered in enumerate(result.answer.body.subjects):
            for theme in answered.themes:
                if theme.allowed:
                    rows[i][(result.member, theme.theme)] = (theme.hit, theme.under_objection)
    return BatchResult(
        tuple(mask_identifier(c, t) for c, t in canonical),
        tuple(t for _, t in canonical),
        fanned,
        region.member_id,
        tuple(rows),
    )
