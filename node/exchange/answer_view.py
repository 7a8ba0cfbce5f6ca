"""A verified answer as the project shows it: in Python and, the same names, in JSON.

The provider signs an ``AnswerBody`` (``proto/creditexchange/v1/exchange.proto``);
the requester verifies it (``client.py``) and hands out a :class:`VerifiedAnswer`,
whose ``subjects`` are that body read with this node's data catalog. This module
is the one home of that reading and of its JSON (:meth:`VerifiedAnswer.to_json`,
:func:`refusal_json`), which ``credit-node query --json`` prints and the REST
gateway serves. It keeps these promises:

* **One name for one thing.** The JSON of an answer has the attribute names of the
  Python objects, all the way down: ``answer.subjects[0].themes[0].records`` is
  ``answer["subjects"][0]["themes"][0]["records"]``.
* **The project's own schema, not protobuf's.** Field values are typed by the
  catalog (decimals and integers as numbers, booleans as booleans; masked values
  stay the text the provider masked them to); modes are ``"full"`` / ``"check"``;
  dates are ISO strings and an unknown date is ``null``; times are ISO 8601 in
  China Standard Time; digests and hashes are hex, leaf hashes base64 (as the
  audit commands print them).
* **Found means found.** A subject is ``found`` when the provider holds it (full
  mode) or when it is on a list checked (check mode: a hit); a theme's ``hit`` is
  true when it has records or is a hit, and ``None`` when the theme was denied.
* **Labels from the catalog.** Each theme carries its Chinese name and the
  catalog's label of each of its fields (units included, e.g. 罚款金额（万元）),
  each record the label of each code it holds (``fine``: 罚款), so that a person
  reads what ``credit-node show`` would print. A theme or field this node's
  catalog lacks keeps its code as its label and its values as text.
* **A refusal, condensed.** The provider's refusal lists one reason per theme
  denied; :func:`distinct_reasons` makes one line per distinct reason, the
  themes that share it named together.

Nothing here verifies: only answers that ``client.py`` verified are read.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

from creditexchange.clock import CST
from creditexchange.errors import QueryRefused
from creditexchange.node.catalog import Catalog, CatalogField, FieldType
from creditexchange.node.ledger import Receipt
from creditexchange.policy.document import Mode
from creditexchange.v1 import exchange_pb2

__all__ = [
    "INSTEAD_NOTE",
    "FieldValue",
    "RecordAnswer",
    "SubjectAnswer",
    "ThemeAnswer",
    "VerifiedAnswer",
    "distinct_reasons",
    "instead_of",
    "read_subjects",
    "refusal_json",
]

FieldValue: TypeAlias = str | int | float | bool | None
"""A record field's value as JSON carries it: typed by the catalog, None when empty."""

_MODES = {exchange_pb2.MODE_FULL: Mode.FULL, exchange_pb2.MODE_CHECK: Mode.CHECK}
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


@dataclass(frozen=True)
class RecordAnswer:
    """One record as answered: only the fields the provider revealed or masked."""

    record_key: str
    source_department: str
    status: str  # active or objection (repaired and withdrawn records are never served)
    under_objection: bool
    decision_date: str | None  # ISO date, None when unknown
    valid_until: str | None
    publicity_end: str | None
    fields: dict[str, FieldValue]  # catalog order; masked values as the provider masked them
    value_labels: dict[str, str]  # a code field -> its value's catalog label (fine -> 罚款)

    def to_json(self) -> dict[str, Any]:
        return {
            "record_key": self.record_key,
            "source_department": self.source_department,
            "status": self.status,
            "under_objection": self.under_objection,
            "decision_date": self.decision_date,
            "valid_until": self.valid_until,
            "publicity_end": self.publicity_end,
            "fields": dict(self.fields),
            "value_labels": dict(self.value_labels),
        }


@dataclass(frozen=True)
class ThemeAnswer:
    """One theme's answer about one subject: the decision, and what it let through."""

    theme: str
    theme_name: str  # the catalog's Chinese name, or the code
    allowed: bool
    mode: Mode | None  # the mode answered in; None for a denied theme
    status: str  # gRPC status name of the decision: OK, PERMISSION_DENIED, …
    reason: str  # for a deny: why, readable by a person
    rule_ids: tuple[str, ...]
    hit: bool | None  # has records (full) or is on the list (check); None when denied
    under_objection: bool  # a record answered (or behind the hit) is under objection
    records: tuple[RecordAnswer, ...]  # full mode
    revealed_fields: tuple[str, ...]
    masked_fields: tuple[str, ...]
    withheld_fields: tuple[str, ...]
    field_labels: dict[str, str]  # every field named above -> its catalog label

    def to_json(self) -> dict[str, Any]:
        return {
            "theme": self.theme,
            "theme_name": self.theme_name,
            "allowed": self.allowed,
            "mode": None if self.mode is None else self.mode.value,
            "status": self.status,
            "reason": self.reason,
            "rule_ids": list(self.rule_ids),
            "hit": self.hit,
            "under_objection": self.under_objection,
            "records": [r.to_json() for r in self.records],
            "revealed_fields": list(self.revealed_fields),
            "masked_fields": list(self.masked_fields),
            "withheld_fields": list(self.withheld_fields),
            "field_labels": dict(self.field_labels),
        }


@dataclass(frozen=True)
class SubjectAnswer:
    """One subject asked, as the provider may show it (individuals masked)."""

    subject_id: str
    subject_type: str
    name: str  # full mode, when found; individuals masked
    found: bool  # held by the provider (full mode) or a hit on a list checked (check mode)
    themes: tuple[ThemeAnswer, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "subject_type": self.subject_type,
            "name": self.name,
            "found": self.found,
            "themes": [t.to_json() for t in self.themes],
        }


@dataclass(frozen=True)
class VerifiedAnswer:
    """A provider's answer that verified, and this node's record of it.

    ``body`` and ``receipt`` are exactly what the provider signed and sent (for
    whoever keeps or re-verifies them); ``subjects`` is the body read with this
    node's catalog (:func:`read_subjects`, on first use); ``checks`` says, for people, what was
    verified; ``own_receipt`` is this node's OUTGOING audit entry of the call;
    ``envelope`` the signed answer's bytes exactly as received and ``answer_key`` the
    request's (what a consolidated report embeds, so that anyone can verify it again).
    """

    provider: str
    body: exchange_pb2.AnswerBody
    receipt: exchange_pb2.Receipt
    request_digest: bytes
    own_receipt: Receipt
    checks: tuple[str, ...] = field(default=())
    catalog: Catalog | None = field(default=None, repr=False, compare=False)
    envelope: bytes = field(default=b"", repr=False)
    answer_key: bytes = field(default=b"", repr=False)

    @functools.cached_property
    def subjects(self) -> tuple[SubjectAnswer, ...]:
        """The body read with this node's catalog, on first use (a consolidated report
        embeds the raw answers and never needs it)."""
        return read_subjects(self.body, self.catalog) if self.catalog is not None else ()

    @property
    def requester(self) -> str:
        return self.body.requester

    @property
    def answered_at(self) -> dt.datetime:
        """When the provider answered, in China Standard Time."""
        return _china_time(self.body.answered_unix_micros)

    @property
    def memorandum_version(self) -> int:
        return self.body.memorandum_version

    @property
    def memorandum_hash(self) -> bytes:
        return self.body.memorandum_hash

    def to_json(self) -> dict[str, Any]:
        """The answer in the project's JSON schema (see the module's promises)."""
        return {
            "outcome": "answered",
            "status": "OK",
            "provider": self.provider,
            "requester": self.requester,
            "answered_at": self.answered_at.isoformat(),
            "memorandum_version": self.memorandum_version,
            "memorandum_hash": self.memorandum_hash.hex(),
            "request_digest": self.request_digest.hex(),
            "subjects": [s.to_json() for s in self.subjects],
            "receipt": {
                "leaf_index": self.receipt.leaf_index,
                "leaf_hash": _b64(self.receipt.leaf_hash),
                "checkpoint": self.receipt.checkpoint,
                "cosignatures": list(self.receipt.cosignatures),
            },
            "own_receipt": {
                "index": self.own_receipt.index,
                "leaf_hash": _b64(self.own_receipt.leaf_hash),
                "checkpoint": self.own_receipt.checkpoint,
            },
            "checks": list(self.checks),
        }


INSTEAD_NOTE = "allowed instead: "
"""How the client notes, on a :class:`QueryRefused`, what the memorandum installed here
would allow in place of the refused request (``askable.allowed_instead``)."""


def instead_of(refused: QueryRefused) -> str | None:
    """What the memorandum would allow instead of the refused request, as the client
    noted it on the refusal; None when it noted nothing."""
    notes: list[str] = getattr(refused, "__notes__", [])
    return next((n.removeprefix(INSTEAD_NOTE) for n in notes if n.startswith(INSTEAD_NOTE)), None)


def refusal_json(refused: QueryRefused) -> dict[str, Any]:
    """A refusal in the same schema as an answer: ``status`` the gRPC status name,
    ``reason`` the provider's message exactly, ``reasons`` one line per distinct
    reason, ``leaf_index`` the provider's audit entry (None when the refusal was not
    signed by the provider: ``verified`` false), ``instead`` what the memorandum
    installed here would allow (:func:`instead_of`, or None)."""
    return {
        "outcome": "refused",
        "status": refused.status,
        "provider": refused.provider,
        "reason": refused.detail,
        "reasons": distinct_reasons(refused.detail),
        "leaf_index": refused.leaf_index,
        "verified": refused.verified,
        "instead": instead_of(refused),
    }


# --- reading an answer body -------------------------------------------------------------


def read_subjects(body: exchange_pb2.AnswerBody, catalog: Catalog) -> tuple[SubjectAnswer, ...]:
    """The subjects of a verified answer body, typed and labelled with ``catalog``."""
    return tuple(_subject(subject, catalog) for subject in body.subjects)


def _subject(subject: exchange_pb2.SubjectAnswer, catalog: Catalog) -> SubjectAnswer:
    themes = tuple(_theme(theme, catalog) for theme in subject.themes)
    checked = any(t.mode is Mode.CHECK for t in themes)
    return SubjectAnswer(
        subject_id=subject.subject_id,
        subject_type=subject.subject_type,
        name=subject.name,
        found=subject.found or (checked and any(t.hit for t in themes)),
        themes=themes,
    )


def _theme(answer: exchange_pb2.ThemeAnswer, catalog: Catalog) -> ThemeAnswer:
    spec = catalog.theme_by_code.get(answer.theme)
    specs: Mapping[str, CatalogField] = spec.field_by_name if spec else {}
    mode = _MODES.get(answer.mode) if answer.allowed else None
    records = tuple(_record(record, specs, answer.masked_fields) for record in answer.records)
    named = {*answer.revealed_fields, *answer.masked_fields, *answer.withheld_fields}
    order = [f.name for f in spec.fields if f.name in named] if spec else []
    order += sorted(named - set(order))
    if not answer.allowed:
        hit = None
    elif mode is Mode.CHECK:
        hit = answer.hit
    else:
        hit = bool(records)
    return ThemeAnswer(
        theme=answer.theme,
        theme_name=spec.name_zh if spec else answer.theme,
        allowed=answer.allowed,
        mode=mode,
        status=answer.status,
        reason=answer.reason,
        rule_ids=tuple(answer.rule_ids),
        hit=hit,
        under_objection=answer.under_objection,
        records=records,
        revealed_fields=tuple(answer.revealed_fields),
        masked_fields=tuple(answer.masked_fields),
        withheld_fields=tuple(answer.withheld_fields),
        field_labels={name: specs[name].name_zh if name in specs else name for name in order},
    )


def _record(
    record: exchange_pb2.Record, specs: Mapping[str, CatalogField], masked: Collection[str]
) -> RecordAnswer:
    known = [name for name in specs if name in record.fields]
    order = known + sorted(set(record.fields) - set(known))
    codes = {name: specs[name].codes or {} for name in known if name not in masked}
    return RecordAnswer(
        record_key=record.record_key,
        source_department=record.source_department,
        status=record.status,
        under_objection=record.under_objection,
        decision_date=record.decision_date or None,
        valid_until=record.valid_until or None,
        publicity_end=record.publicity_end or None,
        fields={
            name: _typed(None if name in masked else specs.get(name), record.fields[name])
            for name in order
        },
        value_labels={
            name: codes[name][record.fields[name]]
            for name in known
            if record.fields[name] in codes.get(name, {})
        },
    )


def _typed(spec: CatalogField | None, text: str) -> FieldValue:
    """A field's text as its catalog type (``spec``; None: a masked value, a field
    this catalog lacks, which stay text), or text that is not of that type."""
    if text == "":
        return None
    if spec is None:
        return text
    if spec.type is FieldType.DECIMAL:
        try:
            number = Decimal(text)
        except InvalidOperation:
            return text
        return float(number) if number.is_finite() else text
    if spec.type is FieldType.INTEGER:
        try:
            return int(text)
        except ValueError:
            return text
    if spec.type is FieldType.BOOLEAN:
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    return text


# --- a refusal's reasons ------------------------------------------------------------------

# Where one reason of a refusal ends and the next begins: the provider joins the
# reasons of its theme decisions with "; " (node/exchange/deciding.py), and every
# reason of the policy engine starts with one of these words.
_NEXT_REASON = re.compile(
    r"; (?=denied|unknown |purpose |theme |memorandum |evaluation error|requester and )"
)
_THEME = re.compile(r"\btheme ([a-z][a-z0-9_]*)\b")


def distinct_reasons(message: str) -> list[str]:
    """The reasons of a refusal, one per distinct reason: reasons that differ only in
    the theme they name are one line naming those themes together."""
    groups: dict[str, list[str]] = {}  # a reason, its one theme as "theme \0" -> the themes
    for reason in _NEXT_REASON.split(message):
        themes = set(_THEME.findall(reason))
        if len(themes) == 1:
            names = groups.setdefault(_THEME.sub("theme \0", reason), [])
            names.extend(themes - set(names))
        else:
            groups.setdefault(reason, [])
    return [
        reason.replace(
            "theme \0", f"theme {names[0]}" if len(names) == 1 else f"themes {', '.join(names)}"
        )
        if names
        else reason
        for reason, names in groups.items()
    ]


def _china_time(unix_micros: int) -> dt.datetime:
    seconds, micros = divmod(unix_micros, 1_000_000)
    return dt.datetime.fromtimestamp(seconds, CST).replace(microsecond=micros)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
