"""Reading a subject and its current records, as the node serves them.

What an operator sees with ``credit-node show``: the records the node would
serve (``repository.servable``), read through the records repository. It keeps
these promises:

* Only records still public are shown: a record past its publicity end, or
  withdrawn (status ``expired``), is left out (and counted, so the operator
  can see that something is hidden).
* A record under objection carries ``status = "objection"`` and
  ``under_objection = True`` wherever it is shown.
* Sensitive values are masked here, not by the caller: identity numbers as
  ``441302********3314``, other sensitive fields and the names of individuals
  down to their first character.
* A value is printed one way everywhere (:func:`shown_value`): a code with its
  label, a number with its catalog unit (``罚款金额（万元）: 12.5 万元``).
* A record withdrawn, past its publicity or repaired (信用修复) is not shown here;
  its history (``records.history``) still tells what happened to it.
* Records synced from another member's feed (customs data above all) are shown after
  the city's own, each marked with its origin; a subject known only from a feed is
  shown too.
* A subject that is not found is named in the error only if its id is a valid
  unified social credit code (organisations' codes are public); anything else
  may be a person's identity number and is masked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine

from creditexchange.clock import china_today
from creditexchange.errors import InvalidIdentifier, NotFound
from creditexchange.identifiers import (
    mask_identifier,
    mask_resident_id,
    mask_subject_name,
    validate_uscc,
)
from creditexchange.node.catalog import Catalog, CatalogField, mask_value
from creditexchange.node.records import repository

__all__ = ["RecordView", "SubjectView", "mask_fields", "shown_value", "subject_view"]


@dataclass(frozen=True)
class RecordView:
    theme: str
    theme_name: str
    record_key: str
    source_department: str
    status: str
    version: int
    decision_date: dt.date | None
    valid_until: dt.date | None
    publicity_end: dt.date | None
    fields: dict[str, Any]
    under_objection: bool
    origin: str = ""  # "": this city's own; else the member whose feed it was synced from


@dataclass(frozen=True)
class SubjectView:
    subject_id: str  # masked for individuals
    subject_type: str
    name: str  # masked for individuals
    records: list[RecordView]
    hidden: int  # records past publicity or withdrawn

    def as_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "subject_type": self.subject_type,
            "name": self.name,
            "records": [
                {
                    "theme": r.theme,
                    "theme_name": r.theme_name,
                    "record_key": r.record_key,
                    "source_department": r.source_department,
                    "status": r.status,
                    "under_objection": r.under_objection,
                    "version": r.version,
                    "decision_date": r.decision_date,
                    "valid_until": r.valid_until,
                    "publicity_end": r.publicity_end,
                    "fields": r.fields,
                    "origin": r.origin or None,
                }
                for r in self.records
            ],
            "hidden_records": self.hidden,
        }


def mask_fields(catalog: Catalog, theme_code: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields as they may be shown, in catalog order, sensitive values masked."""
    theme = catalog.theme_by_code.get(theme_code)
    if theme is None:  # a theme dropped from the catalog: show nothing sensitive by accident
        return {name: "***" for name in fields}
    return {
        spec.name: mask_value(spec.type, fields[spec.name]) if spec.sensitive else fields[spec.name]
        for spec in theme.fields
        if spec.name in fields
    }


def shown_value(spec: CatalogField, value: Any) -> str:
    """A field's value as an operator reads it (already masked where sensitive): a code
    with its label (``fine (罚款)``), a number with its unit (``12.5 万元``); the label
    is the field's, as it is, so a unit already named there is not doubled."""
    if value is None or value == "":
        return "—"
    if spec.codes and not spec.sensitive and value in spec.codes:
        return f"{value} ({spec.codes[value]})"
    if spec.unit and not spec.sensitive:
        return f"{value} {spec.unit}"
    return str(value)


def _shown_in_errors(subject_id: str) -> str:
    """A subject id as an error may echo it: a valid USCC in clear, anything else masked."""
    try:
        return validate_uscc(subject_id)
    except InvalidIdentifier:
        return mask_resident_id(subject_id)


def _record_view(
    catalog: Catalog,
    r: repository.StoredRecord | repository.SyncedCopy,
    under_objection: bool,
    origin: str = "",
) -> RecordView:
    theme = catalog.theme_by_code.get(r.theme)
    return RecordView(
        theme=r.theme,
        theme_name=theme.name_zh if theme else r.theme,
        record_key=r.record_key,
        source_department=r.source_department,
        status=r.status,
        version=r.version,
        decision_date=r.decision_date,
        valid_until=r.valid_until,
        publicity_end=r.publicity_end,
        fields=mask_fields(catalog, r.theme, orjson.loads(r.fields)),
        under_objection=under_objection,
        origin=origin,
    )


def subject_view(
    engine: Engine, catalog: Catalog, subject_id: str, *, today: dt.date | None = None
) -> SubjectView:
    """A subject and its servable records on ``today`` (China's date by default)."""
    today = today or china_today()
    key = subject_id.strip().upper()
    with engine.connect() as conn:
        found = repository.read_subjects(
            conn.connection.driver_connection, conn.dialect, [key], None, today
        )
        synced = repository.read_synced(conn, [key], today)
        if key not in found.subjects and not synced:
            raise NotFound(
                f"no subject {_shown_in_errors(key)} in this node's store; check the id, or "
                "import the department file that holds the subject's records"
            )
        hidden = repository.count_withheld(conn, key, today) if key in found.subjects else 0
    if key in found.subjects:
        subject_type, name = found.subjects[key]
    else:  # known here only from another member's feed
        subject_type, name = synced[0].subject_type, synced[0].subject_name
    records = [_record_view(catalog, r, r.under_objection) for r in found.records]
    records += [  # shown as the origin's data, after the city's own
        _record_view(catalog, c, c.status == repository.RecordStatus.OBJECTION, c.origin)
        for c in synced
    ]
    return SubjectView(
        subject_id=mask_identifier(key, subject_type),
        subject_type=subject_type,
        name=mask_subject_name(name, subject_type),
        records=records,
        hidden=hidden,
    )
