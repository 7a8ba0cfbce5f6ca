"""The city's data catalog: which data themes a node holds and what a valid record is.

The catalog refines the national public credit information catalog
(《全国公共信用信息基础目录》) into data themes, each owned by one source department,
with its fields and its publicity rule. A default catalog ships with the node
(``node/data/catalog.yaml``); a city overrides it with its own file
(``catalog_path`` in the node's configuration).

Invariants kept here:

* A catalog is refused whole when anything in it is off: an unknown key, a wrong
  type, a theme naming an unknown category, department or subject type, a code
  field without codes, a date mapping or publicity rule naming a missing field,
  a reporting rule that is empty or incomplete. The error names the exact place
  (``themes[3].fields[2].type``).
* An identity document number (``id_number``) is always sensitive: it is
  sensitive when the catalog does not say, and ``sensitive: false`` on one is
  refused rather than obeyed.
* Themes and fields are looked up by code; nothing falls back to a default.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from creditexchange.errors import CatalogError, describe_validation_error
from creditexchange.identifiers import mask_name, mask_resident_id
from creditexchange.subjects import SubjectType

__all__ = [
    "Catalog",
    "CatalogField",
    "Category",
    "Department",
    "ExtendedMinimum",
    "FieldType",
    "PublicityRule",
    "RecordDates",
    "ReportingPeriod",
    "ReportingRule",
    "SeriousCases",
    "Theme",
    "load_catalog",
    "mask_value",
    "parse_catalog",
]


class FieldType(StrEnum):
    STRING = "string"  # a short value on one line (max_length applies)
    TEXT = "text"  # free text, may span lines
    DATE = "date"  # ISO 8601 YYYY-MM-DD (also accepted: YYYY/MM/DD, YYYYMMDD)
    DECIMAL = "decimal"  # a number with a fraction, e.g. a fine in 10k yuan
    INTEGER = "integer"
    CODE = "code"  # one of the field's listed codes
    USCC = "uscc"  # a unified social credit code, check character verified
    ID_NUMBER = "id_number"  # an identity document number; resident ids, USCCs verified
    BOOLEAN = "boolean"


def mask_value(kind: FieldType, value: object) -> str:
    """How a sensitive field's value is shown wherever it is shown: an identity number
    as ``441302********3314``, anything else down to its first character."""
    text = "" if value is None else str(value)
    return mask_resident_id(text) if kind is FieldType.ID_NUMBER else mask_name(text)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CatalogField(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name_zh: str
    name_en: str
    type: FieldType
    required: bool = False
    sensitive: bool = False
    max_length: int | None = Field(default=None, gt=0)
    # For type code: code -> label. Codes are compared exactly.
    codes: dict[str, str] | None = None
    # For type id_number: the field holding the document type. The number is
    # verified as a resident identity number when that field's value (its code,
    # or its label) is ``resident_id`` (or when this is None or the value empty),
    # and as a unified social credit code when it is ``uscc``.
    id_type_field: str | None = None
    # For a number: its unit as shown after the value (``12.5 万元``); the stored value
    # is in this unit.
    unit: str | None = Field(default=None, min_length=1, max_length=16)

    @model_validator(mode="before")
    @classmethod
    def _identity_numbers_default_to_sensitive(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and data.get("type") == FieldType.ID_NUMBER
            and "sensitive" not in data
        ):
            return {**data, "sensitive": True}
        return data

    @model_validator(mode="after")
    def _codes_match_type(self) -> CatalogField:
        if self.type is FieldType.CODE and not self.codes:
            raise ValueError(f"field {self.name!r} has type code but lists no codes")
        if self.type is not FieldType.CODE and self.codes is not None:
            raise ValueError(f"field {self.name!r} lists codes but its type is {self.type}")
        if self.id_type_field is not None and self.type is not FieldType.ID_NUMBER:
            raise ValueError(f"field {self.name!r} has id_type_field but is not an id_number")
        if self.unit is not None and self.type not in (FieldType.DECIMAL, FieldType.INTEGER):
            raise ValueError(f"field {self.name!r} has a unit but its type is {self.type}")
        return self

    @model_validator(mode="after")
    def _identity_numbers_are_sensitive(self) -> CatalogField:
        if self.type is FieldType.ID_NUMBER and not self.sensitive:
            raise ValueError(
                f"field {self.name!r} holds identity document numbers, which are always "
                "sensitive (masked wherever shown); remove 'sensitive: false' from it"
            )
        return self


class ExtendedMinimum(_Strict):
    """A longer minimum publicity period for records whose ``field`` is in ``values``
    (e.g. penalties in food, drugs, special equipment, work safety, fire safety)."""

    field: str
    values: list[str] = Field(min_length=1)
    min_months: int = Field(ge=0)


class SeriousCases(_Strict):
    """The records of a repairable theme that may not be repaired (``field`` in
    ``values``): they stay public for the maximum period and then end by themselves."""

    field: str
    values: list[str] = Field(min_length=1)


class PublicityRule(_Strict):
    """How long a record of a theme is public, counted from ``start_field``.

    With ``max_months`` set, publicity ends by itself at start + max_months. When the
    source states an end date in ``end_field``, it must lie between start + minimum
    and start + maximum; a record without one is public for the maximum.

    With ``repairable``, a subject may have a record's publicity ended early by a
    credit repair (信用修复, NDRC Order 58) once ``repair_after_months`` have passed
    since the start (by default, and at least, the minimum period, extended minimum
    included), unless the record is one of the ``serious`` cases.
    """

    start_field: str
    min_months: int = Field(ge=0)
    max_months: int | None = Field(default=None, gt=0)
    end_field: str | None = None
    extended_minimum: ExtendedMinimum | None = None
    repairable: bool = False
    repair_after_months: int | None = Field(default=None, ge=0)
    serious: SeriousCases | None = None

    @model_validator(mode="after")
    def _ordered(self) -> PublicityRule:
        longest_min = max(
            self.min_months,
            self.extended_minimum.min_months if self.extended_minimum else 0,
            self.repair_after_months or 0,
        )
        if self.max_months is not None and longest_min > self.max_months:
            raise ValueError("a minimum publicity period is longer than the maximum")
        if not self.repairable and (self.serious or self.repair_after_months is not None):
            raise ValueError(
                "serious and repair_after_months apply to a repairable theme only; "
                "set repairable: true or remove them"
            )
        return self


class RecordDates(_Strict):
    """Which fields of a theme fill the record's indexed date columns."""

    decision_date: str | None = None
    valid_until: str | None = None
    # The row's own update time (a date field), when the source gives one: an import
    # never lets a row replace a version the source updated later (importer.py).
    updated_at: str | None = None


class ReportingPeriod(StrEnum):
    MONTH = "month"  # by_day: the day of the month, 1-28
    WEEK = "week"  # by_day: the ISO weekday, 1 (Monday) to 7 (Sunday)
    WORKING_DAY = "working_day"  # every working day of the calendar; no by_day


class ReportingRule(_Strict):
    """How the delivery of a theme's data is assessed (信用信息报送考核); one rule or both.

    * ``within_working_days``: a row received (its import batch started, China's date)
      more than this many working days after its decision date is late, whichever
      department delivers it (the 双公示 rule: 7 working days from the decision).
    * ``every`` with ``by_day``: the theme's source department delivers at least one
      batch in every period by that day; a deadline on a day off moves to the next
      working day. A period without a batch by its deadline is a missed delivery.
    """

    within_working_days: int | None = Field(default=None, ge=0, le=250)
    every: ReportingPeriod | None = None
    by_day: int | None = None

    @model_validator(mode="after")
    def _complete(self) -> ReportingRule:
        if self.within_working_days is None and self.every is None:
            raise ValueError(
                "a reporting rule names neither within_working_days nor every (with by_day); "
                "give one of them, or remove the reporting block"
            )
        if self.every is None:
            if self.by_day is not None:
                raise ValueError("by_day is given without every (month or week)")
            return self
        if self.every is ReportingPeriod.WORKING_DAY:
            if self.by_day is not None:
                raise ValueError("every: working_day takes no by_day (the day itself is due)")
            return self
        highest = 28 if self.every is ReportingPeriod.MONTH else 7
        meaning = "day of the month" if self.every is ReportingPeriod.MONTH else "ISO weekday"
        if self.by_day is None or not 1 <= self.by_day <= highest:
            raise ValueError(
                f"every: {self.every} needs by_day, the {meaning} from 1 to {highest}; "
                f"found {self.by_day}"
            )
        return self


class Theme(_Strict):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name_zh: str
    name_en: str
    category: str
    subject_types: list[SubjectType] = Field(min_length=1)
    source_department: str
    description: str = ""
    fields: list[CatalogField] = Field(min_length=1)
    dates: RecordDates = RecordDates()
    publicity: PublicityRule | None = None
    # A list theme (black list, red list, abnormal operation, …): a record means
    # "the subject is on this list" and answers hit / no-hit checks.
    is_list: bool = False
    # How deliveries of this theme are assessed; none when the theme has no rule.
    reporting: ReportingRule | None = None
    # The field whose value is a record's key (a decision document number) when a
    # department's file has no record_key column.
    record_key_field: str | None = None

    @model_validator(mode="after")
    def _references_resolve(self) -> Theme:
        names = [f.name for f in self.fields]
        duplicated = {n for n in names if names.count(n) > 1}
        if duplicated:
            raise ValueError(f"theme {self.code!r} repeats field(s) {sorted(duplicated)}")
        by_name = {f.name: f for f in self.fields}
        reserved = {"subject_id", "subject_type", "subject_name", "record_key"} & set(by_name)
        if reserved:
            raise ValueError(
                f"theme {self.code!r} redefines the subject block column(s) {sorted(reserved)}"
            )

        def must_be(name: str | None, what: str, types: tuple[FieldType, ...]) -> None:
            if name is None:
                return
            if name not in by_name:
                raise ValueError(f"theme {self.code!r}: {what} names unknown field {name!r}")
            if by_name[name].type not in types:
                raise ValueError(
                    f"theme {self.code!r}: {what} field {name!r} must be of type "
                    f"{' or '.join(types)}, found {by_name[name].type}"
                )

        must_be(self.dates.decision_date, "dates.decision_date", (FieldType.DATE,))
        must_be(self.dates.valid_until, "dates.valid_until", (FieldType.DATE,))
        if (
            self.reporting is not None
            and self.reporting.within_working_days is not None
            and self.dates.decision_date is None
        ):
            raise ValueError(
                f"theme {self.code!r}: reporting.within_working_days counts from the decision "
                "date, but the theme maps no dates.decision_date"
            )
        must_be(self.dates.updated_at, "dates.updated_at", (FieldType.DATE,))
        must_be(self.record_key_field, "record_key_field", (FieldType.STRING,))
        for f in self.fields:
            must_be(f.id_type_field, f"fields.{f.name}.id_type_field", (FieldType.CODE,))
            if f.id_type_field is not None and "resident_id" not in (
                by_name[f.id_type_field].codes or {}
            ):
                raise ValueError(
                    f"theme {self.code!r}: field {f.id_type_field!r} names the document type "
                    "of an id_number but has no code 'resident_id', so no number would be checked"
                )
        if self.publicity is not None:
            must_be(self.publicity.start_field, "publicity.start_field", (FieldType.DATE,))
            if (
                self.publicity.start_field not in by_name
                or not by_name[self.publicity.start_field].required
            ):
                raise ValueError(
                    f"theme {self.code!r}: publicity.start_field must be a required field"
                )
            must_be(self.publicity.end_field, "publicity.end_field", (FieldType.DATE,))
            extended = self.publicity.extended_minimum
            if extended is not None:
                must_be(
                    extended.field,
                    "publicity.extended_minimum.field",
                    (FieldType.CODE, FieldType.STRING),
                )
                codes = by_name[extended.field].codes
                unknown = sorted(set(extended.values) - set(codes or extended.values))
                if unknown:
                    raise ValueError(
                        f"theme {self.code!r}: publicity.extended_minimum.values {unknown} are "
                        f"not codes of field {extended.field!r}"
                    )
            serious = self.publicity.serious
            if serious is not None:
                must_be(
                    serious.field, "publicity.serious.field", (FieldType.CODE, FieldType.STRING)
                )
                codes = by_name[serious.field].codes
                unknown = sorted(set(serious.values) - set(codes or serious.values))
                if unknown:
                    raise ValueError(
                        f"theme {self.code!r}: publicity.serious.values {unknown} are not "
                        f"codes of field {serious.field!r}"
                    )
        return self

    @cached_property
    def field_by_name(self) -> Mapping[str, CatalogField]:
        return {f.name: f for f in self.fields}

    def allows(self, subject_type: str) -> bool:
        return subject_type in self.subject_types


class Category(_Strict):
    """A category of the national public credit information catalog."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name_zh: str
    name_en: str


class Department(_Strict):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name_zh: str
    name_en: str


class Catalog(_Strict):
    catalog_version: str
    title: str
    edition: str  # the national catalog edition it refines, e.g. "2024"
    effective: dt.date
    categories: list[Category] = Field(min_length=1)
    departments: list[Department] = Field(min_length=1)
    themes: list[Theme] = Field(min_length=1)
    kind: Literal["credit-exchange/catalog"] = "credit-exchange/catalog"

    @model_validator(mode="after")
    def _references_resolve(self) -> Catalog:
        for what, codes in (
            ("category", [c.code for c in self.categories]),
            ("department", [d.code for d in self.departments]),
            ("theme", [t.code for t in self.themes]),
        ):
            seen: set[str] = set()
            for code in codes:
                if code in seen:
                    raise ValueError(f"{what} {code!r} is listed twice")
                seen.add(code)
        categories = {c.code for c in self.categories}
        departments = {d.code for d in self.departments}
        for i, t in enumerate(self.themes):
            if t.category not in categories:
                raise ValueError(f"themes[{i}]({t.code}).category: unknown category {t.category!r}")
            if t.source_department not in departments:
                raise ValueError(
                    f"themes[{i}]({t.code}).source_department: unknown department "
                    f"{t.source_department!r}"
                )
        return self

    @cached_property
    def theme_by_code(self) -> Mapping[str, Theme]:
        return {t.code: t for t in self.themes}

    @cached_property
    def department_by_code(self) -> Mapping[str, Department]:
        return {d.code: d for d in self.departments}

    @cached_property
    def category_by_code(self) -> Mapping[str, Category]:
        return {c.code: c for c in self.categories}

    def theme(self, code: str) -> Theme:
        try:
            return self.theme_by_code[code]
        except KeyError:
            known = ", ".join(sorted(self.theme_by_code))
            raise CatalogError(
                f"unknown theme {code!r}: the catalog {self.catalog_version} has {known}"
            ) from None


def parse_catalog(data: Any, source: str) -> Catalog:
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: a catalog is a mapping at the top level")
    try:
        return Catalog.model_validate(data, strict=False)
    except ValidationError as exc:
        problems = describe_validation_error(exc, data)
        raise CatalogError(f"{source}: the catalog is invalid: {problems}") from None


def load_catalog(path: Path | None = None) -> Catalog:
    """Load a city's catalog file, or the default one shipped with the node."""
    if path is None:
        text = (
            resources.files("creditexchange.node").joinpath("data/catalog.yaml").read_text("utf-8")
        )
        source = "default catalog"
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise CatalogError(f"cannot read catalog file {path}: {exc.strerror}") from None
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {exc}") from None
    return parse_catalog(data, source)
