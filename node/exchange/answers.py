"""Building an answer: what the decisions allow, shaped as they say.

The store is read only for the themes the policy allowed, and only records that
may be served (``records.repository.servable``). In ``full`` mode each field is
revealed, masked (``catalog.mask_value``) or left out, as the decision lists it;
in ``check`` mode nothing but hit / no-hit leaves the node. A record under
objection is marked so in both modes. Subjects are shown as
``creditexchange.identifiers`` shows them: individuals masked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from creditexchange.clock import now_us
from creditexchange.identifiers import mask_identifier, mask_subject_name
from creditexchange.node.catalog import Catalog, FieldType, mask_value
from creditexchange.node.exchange.protocol import subject_tag
from creditexchange.node.records.repository import StoredRecord, SubjectRecords
from creditexchange.policy.document import Mode
from creditexchange.policy.engine import Decision
from creditexchange.v1 import exchange_pb2

__all__ = ["ThemeShape", "add_records", "answer_body", "theme_shape"]

_PB_MODE = {Mode.FULL: exchange_pb2.MODE_FULL, Mode.CHECK: exchange_pb2.MODE_CHECK}


@dataclass(frozen=True)
class ThemeShape:
    """What one decision makes of one theme's answer: built once per decision, then copied.

    ``answer`` is the theme's answer without what the store holds (records, hit,
    objection); ``fields`` are the record fields a ``full`` answer shows, in
    catalog order, each with the type it is masked as, or None when it is
    revealed. Neither is ever modified once built.
    """

    answer: exchange_pb2.ThemeAnswer
    fields: tuple[tuple[str, FieldType | None], ...]

    @property
    def allowed(self) -> bool:
        return self.answer.allowed


def theme_shape(catalog: Catalog, theme: str, decision: Decision, mode: Mode) -> ThemeShape:
    """The shape of ``theme``'s answer under ``decision``, a request in ``mode``."""
    answer = exchange_pb2.ThemeAnswer(
        theme=theme,
        allowed=decision.allowed,
        status=decision.status,
        reason=decision.reason if not decision.allowed else "",
        rule_ids=decision.rule_ids,
    )
    if not decision.allowed:
        return ThemeShape(answer, ())
    answer.mode = _PB_MODE[mode]
    if mode is Mode.CHECK:
        return ThemeShape(answer, ())
    answer.revealed_fields.extend(sorted(decision.reveal))
    answer.masked_fields.extend(sorted(decision.mask))
    answer.withheld_fields.extend(sorted(decision.withhold))
    shown = tuple(
        (spec.name, spec.type if spec.name in decision.mask else None)
        for spec in catalog.theme_by_code[theme].fields
        if spec.name in decision.mask or spec.name in decision.reveal
    )
    return ThemeShape(answer, shown)


def _iso(value: object) -> str:
    return value.isoformat() if value is not None else ""  # type: ignore[attr-defined]


def add_records(
    answer: exchange_pb2.ThemeAnswer, records: Iterable[StoredRecord], shape: ThemeShape
) -> None:
    """Add ``records`` to a ``full`` answer with the fields ``shape`` shows, as it shows them."""
    for record in records:
        stored = orjson.loads(record.fields)
        shown = answer.records.add(
            record_key=record.record_key,
            source_department=record.source_department,
            status=record.status,
            under_objection=record.under_objection,
            decision_date=_iso(record.decision_date),
            valid_until=_iso(record.valid_until),
            publicity_end=_iso(record.publicity_end),
        ).fields
        for name, masked_as in shape.fields:
            if name in stored:
                value = stored[name]
                if masked_as is not None:
                    shown[name] = mask_value(masked_as, value)
                else:
                    shown[name] = "" if value is None else str(value)


def answer_body(
    *,
    requester: str,
    provider: str,
    request_digest: bytes,
    memorandum_version: int,
    memorandum_hash: bytes,
    mode: Mode,
    subjects: Sequence[tuple[str, str]],
    themes: Sequence[str],
    shapes: Mapping[tuple[str, str], ThemeShape],
    found: SubjectRecords,
    answer_key: bytes = b"",
) -> bytes:
    """The answer to a call, as the exact bytes that are signed.

    ``subjects`` are (id, subject type) in the request's order, each answer tagged
    with ``answer_key`` (the request's) when there is one; ``shapes`` the
    decision's shape per (subject type, theme), for the themes it covers, in the
    order of ``themes``; ``found`` what the store holds of the allowed themes.
    """
    body = exchange_pb2.AnswerBody(
        requester=requester,
        provider=provider,
        request_digest=request_digest,
        answered_unix_micros=now_us(),
        memorandum_version=memorandum_version,
        memorandum_hash=memorandum_hash,
    )
    held: dict[str, dict[str, list[StoredRecord]]] = {}
    for record in found.records:
        held.setdefault(record.subject_id, {}).setdefault(record.theme, []).append(record)
    for subject_id, subject_type in subjects:
        records = held.get(subject_id, {})
        shown = body.subjects.add(
            subject_id=mask_identifier(subject_id, subject_type), subject_type=subject_type
        )
        if answer_key:
            shown.subject_tag = subject_tag(answer_key, subject_id)
        if mode is Mode.FULL:
            stored = found.subjects.get(subject_id)
            shown.found = stored is not None
            if stored is not None:
                shown.name = mask_subject_name(stored[1], subject_type)
        for theme in themes:
            shape = shapes.get((subject_type, theme))
            if shape is None:
                continue
            theme_answer = shown.themes.add()
            theme_answer.CopyFrom(shape.answer)
            if not shape.answer.allowed:
                continue
            in_theme = records.get(theme, [])
            theme_answer.under_objection = any(r.under_objection for r in in_theme)
            if mode is Mode.CHECK:
                theme_answer.hit = bool(in_theme)
            else:
                add_records(theme_answer, in_theme, shape)
    return body.SerializeToString(deterministic=True)
