"""A record's history: every data version and every event, in the order they happened.

What ``credit-node history`` and ``show --history`` print. A record's history is
made of two things the store keeps apart:

* **data versions** (``record_versions`` and the current row): what the source
  department's files said. The first came with an import; each later one with a
  correction — a later import that replaced it, or the corrected data an
  objection with the outcome ``corrected`` links to. Each is shown with what
  changed, field by field, labelled with the catalog's Chinese names, and the
  import batch and file that brought it.
* **events** (``record_events``): an objection opened or closed, a repair, a
  withdrawal — changes of status that leave the data as it was.

Promises kept here:

* Values are masked as ``show`` masks them (``view.mask_fields``): an identity
  number is never in a history, even where it changed (the change is reported,
  both sides masked). The subject of an individual is masked too.
* A history is an operator's view of the node's own records, whatever their
  status: a withdrawn or repaired record, which is no longer served, still has
  its history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine

from creditexchange.identifiers import mask_identifier
from creditexchange.node.catalog import Catalog
from creditexchange.node.records import repository
from creditexchange.node.records.objections import ObjectionOutcome, record_objections
from creditexchange.node.records.repair import repairs_of
from creditexchange.node.records.repository import EventKind, RecordStatus
from creditexchange.node.records.view import mask_fields, shown_value
from creditexchange.subjects import SubjectType

__all__ = ["FieldChange", "HistoryEntry", "RecordHistory", "record_history"]

# How an event reads, from its ``why`` (``objection 3``, ``repair 1``, an operator's words)
_EVENT_TEXT: dict[str, str] = {
    EventKind.OBJECTION_OPENED: "{why} opened (异议处理中)",
    EventKind.OBJECTION_CLOSED: "{why} closed",
    EventKind.REPAIRED: "{why}: publicity ended early by a credit repair (信用修复)",
    EventKind.WITHDRAWN: "withdrawn from publicity ({why})",
    EventKind.STATUS: "status changed to {status} ({why})",
}


@dataclass(frozen=True)
class FieldChange:
    """One field of a version, as it was before and is after (``None``: not set)."""

    name: str
    label: str  # the catalog's Chinese name
    before: str | None  # as shown: masked, with its code label or unit
    after: str | None


@dataclass(frozen=True)
class HistoryEntry:
    """A data version (``kind`` import or correction) or an event of a record."""

    at: dt.datetime
    kind: str  # import, correction, or an EventKind
    version: int  # the data version it made, or that it happened to
    status: str | None  # for an event: the record's status after it
    why: str  # what it was, in words
    batch_id: int | None = None
    file_name: str | None = None
    changes: list[FieldChange] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind,
            "version": self.version,
            "status": self.status,
            "why": self.why,
            "batch": self.batch_id,
            "file": self.file_name,
            "changes": [
                {"field": c.name, "label": c.label, "before": c.before, "after": c.after}
                for c in self.changes
            ],
        }


@dataclass(frozen=True)
class RecordHistory:
    theme: str
    theme_name: str
    record_key: str
    subject: str  # masked for individuals
    subject_type: str
    status: str
    version: int
    entries: list[HistoryEntry]

    def as_json(self) -> dict[str, Any]:
        return {
            "theme": self.theme,
            "theme_name": self.theme_name,
            "record_key": self.record_key,
            "subject": self.subject,
            "subject_type": self.subject_type,
            "status": self.status,
            "version": self.version,
            "history": [e.as_json() for e in self.entries],
        }


def record_history(engine: Engine, catalog: Catalog, theme: str, record_key: str) -> RecordHistory:
    """Every version and event of a record, oldest first; NotFound when there is none."""
    with engine.connect() as conn:
        record = repository.read_record(conn, theme, record_key)
        versions = repository.data_versions(conn, record.id)
        events = repository.status_events(conn, record.id)
        objections = record_objections(conn, record.id)
        repairs = {f"repair {r.number}": r for r in repairs_of(conn, record.id, theme, record_key)}
        subjects = repository.stored_subjects(conn, [record.subject_id])
    subject_type = subjects.get(record.subject_id, (SubjectType.INDIVIDUAL.value, ""))[0]
    corrected_by = {o.corrected_version: o.number for o in objections if o.corrected_version}
    by_name = {f"objection {o.number}": o for o in objections}
    entries: list[tuple[dt.datetime, int, HistoryEntry]] = []
    before: dict[str, Any] | None = None
    for v in versions:
        after = orjson.loads(v.fields)
        if before is None:
            kind, why = "import", "imported (first version)"
        else:
            kind, why = "correction", "corrected by a later import"
            if v.version in corrected_by:
                why += f" — the corrected data of objection {corrected_by[v.version]}"
        entry = HistoryEntry(
            at=v.since,
            kind=kind,
            version=v.version,
            status=None,
            why=why,
            batch_id=v.batch_id,
            file_name=v.file_name,
            changes=_changes(catalog, theme, before, after),
        )
        entries.append((v.since, 0, entry))
        before = after
    for e in events:
        why = _EVENT_TEXT.get(e.kind, "{why}").format(why=e.why, status=e.status)
        objection = by_name.get(e.why)
        if objection is not None and e.kind == EventKind.OBJECTION_OPENED:
            why += f" — {objection.reason}"
        if objection is not None and e.kind == EventKind.OBJECTION_CLOSED:
            why += f": {objection.outcome}"
            if (
                objection.outcome == ObjectionOutcome.CORRECTED
                and objection.corrected_version is None
            ):
                why += " (of its other records; this one stands)"
            if e.status == RecordStatus.OBJECTION:
                why += "; the mark stays, another objection on it is open"
        if e.why in repairs:
            r = repairs[e.why]
            ended = f" (public until {r.publicity_end_before})" if r.publicity_end_before else ""
            why += f", decided {r.decided}{ended}; basis: {r.basis}"
        entries.append((e.at, 1, HistoryEntry(e.at, e.kind, e.version, e.status, why)))
    entries.sort(key=lambda item: (item[0], item[1]))
    theme_spec = catalog.theme_by_code.get(theme)
    return RecordHistory(
        theme=theme,
        theme_name=theme_spec.name_zh if theme_spec else theme,
        record_key=record_key,
        subject=mask_identifier(record.subject_id, subject_type),
        subject_type=subject_type,
        status=record.status,
        version=record.version,
        entries=[entry for _, _, entry in entries],
    )


def _changes(
    catalog: Catalog, theme: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> list[FieldChange]:
    """The fields whose values differ between two versions, in catalog order, compared as
    stored and shown masked; for a first version (``before`` None), every field it has."""
    shown_before = {} if before is None else mask_fields(catalog, theme, before)
    shown_after = mask_fields(catalog, theme, after)
    spec = catalog.theme_by_code.get(theme)
    changes = []
    for name in [*shown_after, *(n for n in shown_before if n not in shown_after)]:
        if before is not None and before.get(name) == after.get(name):
            continue
        field_spec = None if spec is None else spec.field_by_name.get(name)
        old, new = shown_before.get(name), shown_after.get(name)
        if field_spec is None:  # a theme the catalog no longer has: names only, values masked
            changes.append(FieldChange(name, name, old, new))
            continue
        changes.append(
            FieldChange(
                name,
                field_spec.name_zh,
                None if old is None else shown_value(field_spec, old),
                None if new is None else shown_value(field_spec, new),
            )
        )
    return changes
