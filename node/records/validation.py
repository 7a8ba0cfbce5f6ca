"""Validation of one department row against its catalog theme.

A :class:`RowValidator` is compiled once per theme into a list of per-field
converters, so checking a row costs a handful of function calls. A row comes out
either as a :class:`ValidRow` (normalised values, the record's date columns, its
publicity end and its content digest) or as a list of :class:`Problem` — every
problem of the row, not only the first, each naming the field.

Promises:

* Nothing in a problem's reason repeats a sensitive value (identity numbers,
  fields marked ``sensitive``); codes and dates are echoed so the department can
  find the cell, but only as :func:`~creditexchange.errors.excerpt` shows them
  (at most 40 characters, quoted, control characters escaped), whatever the file
  holds.
* Equal input gives equal ``fields_json`` and ``content_hash``: keys sorted,
  values normalised (dates ISO 8601, codes as codes, decimals as written).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson

from creditexchange.errors import InvalidIdentifier, PublicityViolation, excerpt
from creditexchange.identifiers import (
    identifier_kind,
    validate_resident_id,
    validate_subject_id,
    validate_uscc,
)
from creditexchange.node.catalog import CatalogField, FieldType, Theme
from creditexchange.node.records.publicity import publicity_end
from creditexchange.subjects import SUBJECT_TYPES

__all__ = [
    "MAX_KEY",
    "MAX_NAME",
    "SUBJECT_COLUMNS",
    "Converter",
    "Problem",
    "RowValidator",
    "ValidRow",
    "cell_text",
    "parse_date",
]

SUBJECT_COLUMNS = ("subject_id", "subject_type", "subject_name", "record_key")
MAX_NAME = 256
MAX_KEY = 128
_WITHHELD = "(value withheld)"
_TRUE = frozenset({"true", "1", "yes", "y", "是"})
_FALSE = frozenset({"false", "0", "no", "n", "否"})


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    reason: str


class ValidRow(NamedTuple):
    """A row that passed; a tuple so that chunks cross processes cheaply."""

    line: int
    subject_id: str
    subject_type: str
    subject_name: str
    record_key: str
    fields_json: str
    content_hash: str
    decision_date: str | None
    valid_until: str | None
    publicity_end: str | None


Converter = Callable[[str, Mapping[str, Any]], Any]


def parse_date(raw: str) -> dt.date:
    """ISO 8601 ``2024-03-01``; also ``2024/03/01`` and ``20240301`` as departments write them."""
    text = raw
    if len(raw) == 10 and raw[4] == "/" and raw[7] == "/":
        text = raw.replace("/", "-")
    elif len(raw) == 8 and raw.isdigit():
        text = f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(f"{excerpt(raw)} is not a date: write YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{excerpt(raw)} is not a real date") from None
    if not 1900 <= day.year <= 2199:
        raise ValueError(f"{excerpt(raw)} is outside the years 1900-2199")
    return day


def _date(raw: str, _row: Mapping[str, Any]) -> str:
    return parse_date(raw).isoformat()


def _decimal(raw: str, _row: Mapping[str, Any]) -> str:
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{excerpt(raw)} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{excerpt(raw)} is not a finite number")
    return str(value)


def _integer(raw: str, _row: Mapping[str, Any]) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{excerpt(raw)} is not a whole number") from None


def _boolean(raw: str, _row: Mapping[str, Any]) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{excerpt(raw)} is not true or false")


def _uscc(raw: str, _row: Mapping[str, Any]) -> str:
    try:
        return validate_uscc(raw)
    except InvalidIdentifier as exc:
        raise ValueError(f"not a valid unified social credit code: {exc}") from None


def _resident_id(raw: str, _row: Mapping[str, Any]) -> str:
    try:
        return validate_resident_id(raw)
    except InvalidIdentifier as exc:
        raise ValueError(f"not a valid resident identity number: {exc}") from None


_ID_CHECKS: dict[str, Converter] = {"resident_id": _resident_id, "uscc": _uscc}
"""How an identity document number is checked, by the code of its document type."""


_MEMO_LIMIT = 4096


def _memoized(convert: Converter) -> Converter:
    """Remember results of a converter that depends on the cell alone.

    Department files repeat the same authority codes and dates on most rows; a
    bounded memo turns their checks into one dictionary lookup. Failures are not
    remembered, so every bad cell is reported.
    """
    memo: dict[str, Any] = {}

    def remembered(raw: str, row: Mapping[str, Any]) -> Any:
        try:
            return memo[raw]
        except KeyError:
            value = convert(raw, row)
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[raw] = value
            return value

    return remembered


def _converter(f: CatalogField, theme: Theme) -> Converter:
    if f.type in (FieldType.DATE, FieldType.DECIMAL, FieldType.USCC):
        return _memoized(_plain_converter(f, theme))
    return _plain_converter(f, theme)


def _code_spellings(f: CatalogField) -> dict[str, str]:
    """A code field's accepted cells: each code, and each label (罚款 for fine), to its code."""
    assert f.codes is not None
    return {code: code for code in f.codes} | {label: code for code, label in f.codes.items()}


def _plain_converter(f: CatalogField, theme: Theme) -> Converter:
    if f.type is FieldType.DATE:
        return _date
    if f.type is FieldType.DECIMAL:
        return _decimal
    if f.type is FieldType.INTEGER:
        return _integer
    if f.type is FieldType.BOOLEAN:
        return _boolean
    if f.type is FieldType.USCC:
        return _uscc
    if f.type is FieldType.CODE:
        assert f.codes is not None
        # A department may write the code or its label (罚款 for fine); both store the code.
        lookup = _code_spellings(f)
        allowed = ", ".join(f"{c} ({label})" for c, label in f.codes.items())

        def code(raw: str, _row: Mapping[str, Any]) -> str:
            try:
                return lookup[raw]
            except KeyError:
                raise ValueError(f"{excerpt(raw)} is not one of the codes {allowed}") from None

        return code
    if f.type is FieldType.ID_NUMBER:
        type_field = f.id_type_field
        id_types = _code_spellings(theme.field_by_name[type_field]) if type_field else {}

        def id_number(raw: str, row: Mapping[str, Any]) -> str:
            # The document type as its field stores it: the code, from the code or
            # its label, blanks around it removed. No type means a resident id.
            stated = (row.get(type_field) or "").strip() if type_field else ""
            check = _ID_CHECKS.get(id_types.get(stated, stated) if stated else "resident_id")
            if check is not None:
                return str(check(raw, row))
            if len(raw) > 64:
                raise ValueError("an identity document number has at most 64 characters")
            return raw

        return id_number
    limit = f.max_length or (MAX_NAME if f.type is FieldType.STRING else None)

    def string(raw: str, _row: Mapping[str, Any]) -> str:
        if limit is not None and len(raw) > limit:
            raise ValueError(f"is {len(raw)} characters long, at most {limit} allowed")
        return raw

    return string


class RowValidator:
    """Checks rows of one theme; compiled once, used for every row of an import."""

    def __init__(self, theme: Theme, source_department: str) -> None:
        self.theme = theme
        self.source_department = source_department
        self._specs = [
            (f.name, f.required, f.sensitive or f.type is FieldType.ID_NUMBER, _converter(f, theme))
            for f in theme.fields
        ]
        self._allowed_types = frozenset(t.value for t in theme.subject_types)
        self._decision_field = theme.dates.decision_date
        self._valid_until_field = theme.dates.valid_until
        self._publicity = theme.publicity
        self._hash_prefix = source_department.encode() + b"\x1f"

    def check(self, line: int, row: Mapping[str, str]) -> ValidRow | list[Problem]:
        """Validate one row whose cells are strings (missing cells may be absent)."""
        subject_type = (row.get("subject_type") or "").strip()
        subject_id = (row.get("subject_id") or "").strip()
        subject_name = (row.get("subject_name") or "").strip()
        record_key = (row.get("record_key") or "").strip()
        problems: list[Problem] | None = None
        if (
            subject_type not in self._allowed_types
            or not subject_id
            or not subject_name
            or len(subject_name) > MAX_NAME
            or not record_key
            or len(record_key) > MAX_KEY
        ):
            problems = self._subject_block_problems(
                subject_type, subject_id, subject_name, record_key
            )
        else:
            try:
                subject_id = validate_subject_id(subject_id, subject_type)
            except InvalidIdentifier as exc:
                problems = [_invalid_subject_id(subject_type, exc)]

        values: dict[str, Any] = {}
        for name, required, sensitive, convert in self._specs:
            raw = row.get(name)
            if raw:
                raw = raw.strip()
            if not raw:
                if required:
                    problems = problems or []
                    problems.append(Problem(name, "required field is empty"))
                continue
            try:
                values[name] = convert(raw, row)
            except ValueError as exc:
                reason = str(exc)
                if sensitive:
                    reason = reason.replace(excerpt(raw), _WITHHELD).replace(raw, _WITHHELD)
                problems = problems or []
                problems.append(Problem(name, reason))
        if problems:
            return problems

        decision = values.get(self._decision_field) if self._decision_field else None
        valid_until = values.get(self._valid_until_field) if self._valid_until_field else None
        end: str | None = None
        rule = self._publicity
        if rule is not None:
            stated = values.get(rule.end_field) if rule.end_field else None
            try:
                last_day = publicity_end(
                    rule,
                    dt.date.fromisoformat(values[rule.start_field]),
                    dt.date.fromisoformat(stated) if stated else None,
                    values,
                )
            except PublicityViolation as exc:
                return [Problem(rule.end_field or rule.start_field, str(exc))]
            end = last_day.isoformat() if last_day else None

        fields_json = orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2b(
            self._hash_prefix + subject_id.encode() + b"\x1f" + fields_json, digest_size=16
        ).hexdigest()
        return ValidRow(
            line,
            subject_id,
            subject_type,
            subject_name,
            record_key,
            fields_json.decode(),
            digest,
            decision,
            valid_until,
            end,
        )

    def _subject_block_problems(
        self, subject_type: str, subject_id: str, subject_name: str, record_key: str
    ) -> list[Problem]:
        problems: list[Problem] = []
        if subject_type not in SUBJECT_TYPES:
            problems.append(
                Problem(
                    "subject_type",
                    f"{excerpt(subject_type)} is not a subject type; use one of "
                    + ", ".join(sorted(SUBJECT_TYPES)),
                )
            )
        elif subject_type not in self._allowed_types:
            problems.append(
                Problem(
                    "subject_type",
                    f"theme {self.theme.code} does not concern {subject_type} subjects "
                    f"(it allows {', '.join(sorted(self._allowed_types))})",
                )
            )
        if not subject_id:
            problems.append(Problem("subject_id", "required field is empty"))
        elif subject_type in SUBJECT_TYPES:
            try:
                validate_subject_id(subject_id, subject_type)
            except InvalidIdentifier as exc:
                problems.append(_invalid_subject_id(subject_type, exc))
        if not subject_name:
            problems.append(Problem("subject_name", "required field is empty"))
        elif len(subject_name) > MAX_NAME:
            problems.append(Problem("subject_name", f"longer than {MAX_NAME} characters"))
        if not record_key:
            problems.append(Problem("record_key", "required field is empty"))
        elif len(record_key) > MAX_KEY:
            problems.append(Problem("record_key", f"longer than {MAX_KEY} characters"))
        return problems


def _invalid_subject_id(subject_type: str, problem: InvalidIdentifier) -> Problem:
    return Problem("subject_id", f"not a valid {identifier_kind(subject_type)}: {problem}")


def cell_text(value: str | int | float | bool | None) -> str:
    """A JSON scalar as the text a CSV cell would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
