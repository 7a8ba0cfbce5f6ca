"""Reading a subject and its current records, as the node serves them.

This is the one read path: the operator's ``show`` uses it now, the query
service will use it later. It keeps these promises:

* Only records still public are served: a record past its publicity end, or
  withdrawn (status ``expired``), is left out (and counted, so the operator
  can see that something is hidden).
* A record under objection carries ``status = "objection"`` and
  ``under_objection = True`` wherever it is shown.
* Sensitive values are masked here, not by the caller: identity numbers as
  ``441302********3314``, other sensitive fields and the names of individuals
  down to their first character.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from node.catalog import Catalog, FieldType
from node.errors import NotFound
from node.identifiers import mask_identifier, mask_name, mask_resident_id
from node.publicity import is_public
from node.store.models import Record, RecordStatus, Subject


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

    @property
    def under_objection(self) -> bool:
        return self.status == RecordStatus.OBJECTION


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
                }
                for r in self.records
            ],
            "hidden_records": self.hidden,
        }


def mask_fields(catalog: Catalog, theme_code: str, fields: dict[str, Any]) -> dict[str, Any]:
    theme = catalog.theme_by_code.get(theme_code)
    if theme is None:  # a theme dropped from the catalog: show nothing sensitive by accident
        return {name: "***" for name in fields}
    masked: dict[str, Any] = {}
    for name, value in fields.items():
        spec = theme.field_by_name.get(name)
        if spec is None or not spec.sensitive:
            masked[name] = value
        elif spec.type is FieldType.ID_NUMBER:
            masked[name] = mask_resident_id(str(value))
        else:
            masked[name] = mask_name(str(value))
    return masked


def subject_view(
    engine: Engine, catalog: Catalog, subject_id: str, *, today: dt.date | None = None
) -> SubjectView:
    today = today or dt.date.today()
    key = subject_id.strip().upper()
    with Session(engine) as session:
        s = session.scalars(select(Subject).where(Subject.subject_id == key)).one_or_none()
        if s is None:
            shown = mask_resident_id(key) if key[:17].isdigit() else key
            raise NotFound(f"no subject {shown} in this node's store")
        stored = session.scalars(
            select(Record)
            .where(Record.subject_id == key)
            .order_by(Record.theme, Record.decision_date.desc(), Record.record_key)
        ).all()
    records: list[RecordView] = []
    hidden = 0
    for r in stored:
        if r.status == RecordStatus.EXPIRED or not is_public(r.publicity_end, today):
            hidden += 1
            continue
        theme = catalog.theme_by_code.get(r.theme)
        records.append(
            RecordView(
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
            )
        )
    individual = s.subject_type == "individual"
    return SubjectView(
        subject_id=mask_identifier(s.subject_id, s.subject_type),
        subject_type=s.subject_type,
        name=mask_name(s.name) if individual else s.name,
        records=records,
        hidden=hidden,
    )
