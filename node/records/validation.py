"""Validation of one department row against its catalog theme.

A :class:`RowValidator` is compiled once per theme into a table of per-field checks,
so checking a row costs a dictionary lookup for most cells: codes, dates, amounts
and authority codes repeat from row to row and are checked once. A row comes out
either as a :class:`ValidRow` (normalised values, the record's date columns, its
publicity end and its content digest) or as a list of :class:`Problem` — every
problem of the row, not only the first, each naming the field and carrying a reason
code for statistics.

Promises:

* Nothing in a problem's reason repeats a sensitive value (identity numbers,
  fields marked ``sensitive``); codes and dates are echoed so the department can
  find the cell, but only as :func:`~creditexchange.errors.excerpt` shows them
  (at most 40 characters, quoted, control characters escaped), whatever the file
  holds.
* Equal input gives equal ``fields_json`` and ``content_hash``: keys sorted,
  values normalised (dates ISO 8601, codes as codes, decimals as written).
* Cells are taken as departments write them: a subject type by its code or its
  Chinese name (企业, 自然人 …, or the 双公示 category 法人及非法人组织, whose exact
  type the unified social credit code tells); a date as ``2026-03-05``,
  ``2026/3/5``, ``2026.3.5``, ``2026年3月5日``, ``20260305``, also with a time of
  day, which is dropped. Nothing is guessed beyond that: a code the registering
  department does not settle is a problem asking for the exact type.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, Final, NamedTuple

import orjson

from creditexchange.clock import china_today
from creditexchange.errors import InvalidIdentifier, PublicityViolation, excerpt
from creditexchange.identifiers import (
    identifier_kind,
    validate_resident_id,
    validate_uscc,
)
from creditexchange.node.catalog import CatalogField, FieldType, Theme
from creditexchange.node.records.publicity import publicity_end
from creditexchange.subjects import SUBJECT_TYPES, SubjectType, is_individual

__all__ = [
    "MAX_KEY",
    "MAX_NAME",
    "PROBLEM_CODES",
    "SUBJECT_COLUMNS",
    "SUBJECT_TYPE_LABELS",
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
_INT64 = 1 << 63

PROBLEM_CODES: Final = ("required", "invalid", "subject", "unreadable", "publicity")
"""The reason codes of :class:`Problem`, for statistics of what departments get wrong."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a row cannot be imported: the field (``(row)`` for the whole row), the
    reason as the department reads it, and its reason code, one of
    :data:`PROBLEM_CODES`:

    * ``required``: a required value is empty;
    * ``invalid``: a value is not valid for its field's type (a date, a number, a
      code, an identifier, a length);
    * ``subject``: the subject block (type, identifier, name, record key);
    * ``unreadable``: the row cannot be read (bad CSV, not JSON, a NUL character,
      the wrong number of cells, an unknown JSON key);
    * ``publicity``: the publicity period rule.
    """

    field: str
    reason: str
    code: str


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


# --- dates -------------------------------------------------------------------------------

_DATE_FORMS = (
    "write YYYY-MM-DD (2026/3/5, 2026.3.5, 2026年3月5日 and 20260305 are read too, "
    "with or without a time of day)"
)
_TIME = r"(?:(?: +|T)([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]{1,6})?)?)?"
_NUMERIC_DATE = re.compile(r"([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})" + _TIME)
_CHINESE_DATE = re.compile(r"([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日" + _TIME)
_COMPACT_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})" + _TIME)


def parse_date(raw: str) -> dt.date:
    """A date as departments write it: ISO 8601 ``2026-03-05``; ``2026/3/5``, ``2026-3-5``,
    ``2026.3.5`` and ``2026年3月5日`` (leading zeros optional); ``20260305``; any of them
    followed by a time of day (``2026/03/05 00:00:00``, ``2026-03-05 10:20``), which is
    checked and dropped. Years 1900-2199 only; anything else is a ValueError saying why."""
    if len(raw) == 10 and raw[4] == "-" and raw[7] == "-" and raw.isascii():
        year, month, day, clock = raw[:4], raw[5:7], raw[8:], None
    elif len(raw) == 8 and raw.isdigit() and raw.isascii():
        year, month, day, clock = raw[:4], raw[4:6], raw[6:], None
    else:
        match = _NUMERIC_DATE.fullmatch(raw)
        if match is not None:
            year, _, month, day, *clock_parts = match.groups()
        else:
            match = _CHINESE_DATE.fullmatch(raw) or _COMPACT_DATE.fullmatch(raw)
            if match is None:
                raise ValueError(f"{excerpt(raw)} is not a date: {_DATE_FORMS}")
            year, month, day, *clock_parts = match.groups()
        clock = clock_parts if clock_parts[0] is not None else None
    try:
        if not (month.isdigit() and day.isdigit()):
            raise ValueError
        date = dt.date(int(year), int(month), int(day))
    except ValueError:
        raise ValueError(f"{excerpt(raw)} is not a real date") from None
    if clock is not None:
        hour, minute, second = clock
        if int(hour) > 23 or int(minute) > 59 or (second is not None and int(second) > 59):
            raise ValueError(f"{excerpt(raw)} has no real time of day; write the date alone")
    if not 1900 <= date.year <= 2199:
        raise ValueError(f"{excerpt(raw)} is outside the years 1900-2199")
    return date


# --- field converters --------------------------------------------------------------------


def _date(raw: str, _row: Mapping[str, Any]) -> str:
    return parse_date(raw).isoformat()


_DECIMAL_DIGITS: Final = 28  # digits a decimal may have, before and after the point


def _decimal(raw: str, _row: Mapping[str, Any]) -> str:
    """The number in one spelling, so 2, 2.0, 2.00 and 2.00E0 store the same value (a
    re-export that only formats its numbers differently changes no record)."""
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{excerpt(raw)} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{excerpt(raw)} is not a finite number")
    if not value:
        return "0"
    value = value.normalize()
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if max(value.adjusted() + 1, 0) + max(-exponent, 0) > _DECIMAL_DIGITS:
        raise ValueError(
            f"{excerpt(raw)} has more than {_DECIMAL_DIGITS} digits; write the amount in "
            "the field's unit, rounded as the decision states it"
        )
    return format(value, "f")


def _integer(raw: str, _row: Mapping[str, Any]) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{excerpt(raw)} is not a whole number") from None
    if not -_INT64 <= value < _INT64:  # what JSON readers and a BIGINT column agree on
        raise ValueError(f"{excerpt(raw)} is too large for a whole number (at most 19 digits)")
    return value


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


def _code_spellings(f: CatalogField) -> dict[str, str]:
    """A code field's accepted cells: each code, each label (罚款 for fine) and each part of a
    label listing several (警告 of 警告、通报批评), to its code."""
    assert f.codes is not None
    spellings = {code: code for code in f.codes} | {label: code for code, label in f.codes.items()}
    # A label naming several kinds (警告、通报批评) also reads each of them alone, when no
    # other code's label claims the same part.
    parts: dict[str, set[str]] = {}
    for code, label in f.codes.items():
        for part in label.split("、"):
            if part.strip() and part.strip() != label:
                parts.setdefault(part.strip(), set()).add(code)
    for part, codes in parts.items():
        if len(codes) == 1 and part not in spellings:
            spellings[part] = next(iter(codes))
    return spellings


_MEMO_LIMIT = 4096


def _memo_filler(convert: Converter, memo: dict[str, Any]) -> Converter:
    """``convert``, remembering each result in ``memo`` (bounded). Failures are not
    remembered, so every bad cell is reported."""

    def remember(raw: str, row: Mapping[str, Any]) -> Any:
        value = convert(raw, row)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[raw] = value
        return value

    return remember


# How the cells of a theme's fields are checked, by kind of field, one loop per kind
# (in the common row a field costs a lookup, a strip and a store):
#
# * text fields: their length;
# * fields whose valid cells repeat (codes, dates, amounts, authority codes): a
#   dictionary of the cells known good, then a converter for the other cells;
# * the others (identity numbers, integers, booleans): a converter for every cell.
_NO_LIMIT = 1 << 62


class _Checks(NamedTuple):
    texts: list[tuple[str, bool, int]]  # name, required, length limit
    lookups: list[tuple[str, bool, bool, dict[str, Any], Converter]]  # … sensitive, known
    calls: list[tuple[str, bool, bool, Converter]]  # name, required, sensitive, converter


def _checks(theme: Theme, today: dt.date) -> _Checks:
    checks = _Checks([], [], [])
    for f in theme.fields:
        sensitive = f.sensitive or f.type is FieldType.ID_NUMBER
        if f.type in (FieldType.STRING, FieldType.TEXT):
            limit = f.max_length or (MAX_NAME if f.type is FieldType.STRING else _NO_LIMIT)
            checks.texts.append((f.name, f.required, limit))
        elif f.type is FieldType.CODE:
            # A department may write the code or its label (罚款 for fine); both store the code.
            known = _code_spellings(f)
            checks.lookups.append((f.name, f.required, sensitive, known, _not_a_code(f)))
        elif f.type in (FieldType.DATE, FieldType.DECIMAL, FieldType.USCC):
            memo: dict[str, Any] = {}
            plain = {FieldType.DATE: _date, FieldType.DECIMAL: _decimal, FieldType.USCC: _uscc}
            convert = _memo_filler(plain[f.type], memo)
            checks.lookups.append((f.name, f.required, sensitive, memo, convert))
        elif f.type is FieldType.ID_NUMBER:
            checks.calls.append((f.name, f.required, sensitive, _id_number(f, theme, today)))
        else:
            plain_call = {FieldType.INTEGER: _integer, FieldType.BOOLEAN: _boolean}[f.type]
            checks.calls.append((f.name, f.required, sensitive, plain_call))
    return checks


def _not_a_code(f: CatalogField) -> Converter:
    assert f.codes is not None
    allowed = ", ".join(f"{c} ({label})" for c, label in f.codes.items())

    def not_a_code(raw: str, _row: Mapping[str, Any]) -> str:
        raise ValueError(f"{excerpt(raw)} is not one of the codes {allowed}")

    return not_a_code


def _id_number(f: CatalogField, theme: Theme, today: dt.date) -> Converter:
    type_field = f.id_type_field
    id_types = _code_spellings(theme.field_by_name[type_field]) if type_field else {}

    resident_id = partial(validate_resident_id, today=today)

    def id_number(raw: str, row: Mapping[str, Any]) -> str:
        # The document type as its field stores it: the code, from the code or
        # its label, blanks around it removed. No type means a resident id.
        stated = (row.get(type_field) or "").strip() if type_field else ""
        kind = id_types.get(stated, stated) if stated else "resident_id"
        if kind == "resident_id":
            try:
                return resident_id(raw)
            except InvalidIdentifier as exc:
                raise ValueError(f"not a valid resident identity number: {exc}") from None
        if kind == "uscc":
            return _uscc(raw, row)
        if len(raw) > 64:
            raise ValueError("an identity document number has at most 64 characters")
        return raw

    return id_number


# --- the subject block -------------------------------------------------------------------

SUBJECT_TYPE_LABELS: Final[Mapping[str, SubjectType]] = {
    "企业": SubjectType.ENTERPRISE,
    "个体工商户": SubjectType.INDIVIDUAL_BUSINESS,
    "个体户": SubjectType.INDIVIDUAL_BUSINESS,
    "事业单位": SubjectType.INSTITUTION,
    "社会组织": SubjectType.SOCIAL_ORG,
    "自然人": SubjectType.INDIVIDUAL,
}
"""Chinese names a department writes for a subject type (the names subjects.py shows)."""

_ORGANISATION_LABELS: Final = frozenset(
    {
        "法人及非法人组织",
        "法人和非法人组织",
        "法人或非法人组织",
        "法人及其他组织",
        "法人和其他组织",
        "法人或其他组织",
        "法人",
        "非法人组织",
        "其他组织",
    }
)
"""The 双公示 category of organisations: the exact type is read from the USCC."""

_FROM_USCC = "(from the unified social credit code)"

# GB 32100-2015: the registering department (position 1) and, under market regulation,
# the kind of organisation (position 2) settle the subject type; nothing else does.
_TYPE_BY_REGISTRATION: Final[Mapping[str, SubjectType]] = {
    "1": SubjectType.INSTITUTION,  # 机构编制
    "5": SubjectType.SOCIAL_ORG,  # 民政
    "91": SubjectType.ENTERPRISE,
    "92": SubjectType.INDIVIDUAL_BUSINESS,
    "93": SubjectType.ENTERPRISE,  # farmers' specialised co-operative
}
_REGISTRARS: Final[Mapping[str, str]] = {
    "2": "外交",
    "3": "司法行政",
    "4": "文化",
    "6": "旅游",
    "7": "宗教",
    "8": "工会",
    "9": "工商",
    "A": "中央军委改革和编制办公室",
    "N": "农业",
    "Y": "其他",
}


def _type_spellings() -> dict[str, str]:
    spellings: dict[str, str] = {code: code for code in SUBJECT_TYPES}
    spellings.update({label: t.value for label, t in SUBJECT_TYPE_LABELS.items()})
    spellings.update(dict.fromkeys(_ORGANISATION_LABELS, _FROM_USCC))
    return spellings


_SUBJECT_TYPE_SPELLINGS: Final = _type_spellings()


def _type_from_uscc(code: str, label: str) -> str:
    """The subject type a valid USCC settles, or ValueError asking for the exact type."""
    found = _TYPE_BY_REGISTRATION.get(code[:2]) or _TYPE_BY_REGISTRATION.get(code[0])
    if found is not None:
        return found.value
    registrar = _REGISTRARS.get(code[0], code[0])
    raise ValueError(
        f"the category {excerpt(label)} does not say which kind of organisation this is, and "
        f"its unified social credit code ({code[:2]}…, registered by {registrar}) does not "
        "settle it: write the exact type (企业, 个体工商户, 事业单位 or 社会组织) instead"
    )


# --- the validator -----------------------------------------------------------------------


class RowValidator:
    """Checks rows of one theme; compiled once, used for every row of an import.

    Identity numbers' birth dates are checked against the day the validator was made.
    """

    def __init__(self, theme: Theme, source_department: str) -> None:
        self.theme = theme
        self.source_department = source_department
        self._today = china_today()
        self._checks = _checks(theme, self._today)
        # How a subject's identifier is checked, by subject type.
        resident_id = partial(validate_resident_id, today=self._today)
        self._subject_id: dict[str, Callable[[str], str]] = {
            t: resident_id if is_individual(t) else validate_uscc for t in SUBJECT_TYPES
        }
        # Problems are listed in the order of the file's usual columns.
        order = [*SUBJECT_COLUMNS, *(f.name for f in theme.fields)]
        self._order = {name: i for i, name in enumerate(order)}
        self._allowed_types = frozenset(t.value for t in theme.subject_types)
        self._decision_field = theme.dates.decision_date
        self._valid_until_field = theme.dates.valid_until
        self._publicity = theme.publicity
        self._start_field = theme.publicity.start_field if theme.publicity else ""
        self._end_field = (theme.publicity.end_field if theme.publicity else None) or ""
        self._extended_field = (
            theme.publicity.extended_minimum.field
            if theme.publicity is not None and theme.publicity.extended_minimum is not None
            else ""  # no field has this name
        )
        self._publicity_memo: dict[tuple[str, str | None, Any], str | Problem | None] = {}
        self._hash_prefix = source_department.encode() + b"\x1f"

    def check(self, line: int, row: Mapping[str, str]) -> ValidRow | list[Problem]:
        """Validate one row whose cells are strings (missing cells may be absent)."""
        get = row.get
        label = (get("subject_type") or "").strip()
        subject_id = (get("subject_id") or "").strip()
        subject_name = (get("subject_name") or "").strip()
        record_key = (get("record_key") or "").strip()
        subject_type = _SUBJECT_TYPE_SPELLINGS.get(label, "")
        problems: list[Problem] | None = None
        if (
            subject_type in self._allowed_types
            and subject_id
            and subject_name
            and len(subject_name) <= MAX_NAME
            and record_key
            and len(record_key) <= MAX_KEY
        ):
            try:
                subject_id = self._subject_id[subject_type](subject_id)
            except InvalidIdentifier as exc:
                problems = [_invalid_subject_id(subject_type, exc)]
        else:
            subject_id, subject_type, found = self._subject_block(
                label, subject_type, subject_id, subject_name, record_key
            )
            problems = found or None

        values: dict[str, Any] = {}
        texts, lookups, calls = self._checks
        for name, required, limit in texts:
            raw = get(name)
            if raw:
                raw = raw.strip()
                if raw:
                    if len(raw) <= limit:
                        values[name] = raw
                    else:
                        problems = _added(problems, _too_long(name, raw, limit))
                    continue
            if required:
                problems = _added(problems, Problem(name, "required field is empty", "required"))
        for name, required, sensitive, known, convert in lookups:
            raw = get(name)
            if raw:
                raw = raw.strip()
                if raw:
                    value = known.get(raw)
                    if value is None:
                        try:
                            value = convert(raw, row)
                        except ValueError as exc:
                            problems = _added(problems, _invalid(name, raw, sensitive, exc))
                            continue
                    values[name] = value
                    continue
            if required:
                problems = _added(problems, Problem(name, "required field is empty", "required"))
        for name, required, sensitive, convert in calls:
            raw = get(name)
            if raw:
                raw = raw.strip()
                if raw:
                    try:
                        values[name] = convert(raw, row)
                    except ValueError as exc:
                        problems = _added(problems, _invalid(name, raw, sensitive, exc))
                    continue
            if required:
                problems = _added(problems, Problem(name, "required field is empty", "required"))
        if problems:
            order = self._order
            problems.sort(key=lambda p: order.get(p.field, len(order)))
            return problems

        decision = values.get(self._decision_field) if self._decision_field else None
        valid_until = values.get(self._valid_until_field) if self._valid_until_field else None
        end: str | None = None
        if self._publicity is not None:
            stated = values.get(self._end_field)
            extended = values.get(self._extended_field) if stated else None
            key = (values[self._start_field], stated, extended)
            try:
                outcome = self._publicity_memo[key]
            except KeyError:
                outcome = self._publicity_end(key, values)
            if isinstance(outcome, Problem):
                return [outcome]
            end = outcome

        fields_json = orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2b(
            b"".join((self._hash_prefix, subject_id.encode(), b"\x1f", fields_json)),
            digest_size=16,
        ).hexdigest()
        return tuple.__new__(
            ValidRow,
            (
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
            ),
        )

    def _publicity_end(
        self, key: tuple[str, str | None, Any], values: Mapping[str, Any]
    ) -> str | Problem | None:
        """The record's last public day (ISO), or the problem with its stated end.

        Rows share decision dates, so outcomes are remembered by what decides them
        (``key``): the start, the stated end and, only with a stated end, the industry.
        """
        rule = self._publicity
        assert rule is not None
        start, stated, _ = key
        outcome: str | Problem | None
        try:
            last_day = publicity_end(
                rule,
                dt.date.fromisoformat(start),
                dt.date.fromisoformat(stated) if stated else None,
                values,
            )
            outcome = last_day.isoformat() if last_day else None
        except PublicityViolation as exc:
            outcome = Problem(rule.end_field or rule.start_field, str(exc), "publicity")
        if len(self._publicity_memo) >= _MEMO_LIMIT:
            self._publicity_memo.clear()
        self._publicity_memo[key] = outcome
        return outcome

    def _subject_block(
        self, label: str, subject_type: str, subject_id: str, subject_name: str, record_key: str
    ) -> tuple[str, str, list[Problem]]:
        """The subject block of a row off the quick path: the subject's id and type as
        far as they can be settled (a 双公示 category read from the USCC), and every
        problem of the block."""
        problems: list[Problem] = []
        if subject_type == _FROM_USCC:
            if subject_id:
                try:
                    subject_id = validate_uscc(subject_id)
                    subject_type = _type_from_uscc(subject_id, label)
                except InvalidIdentifier as exc:
                    problems.append(
                        Problem(
                            "subject_id",
                            f"the category {excerpt(label)} is for organisations, identified by "
                            f"a unified social credit code, but this is not one: {exc}",
                            "subject",
                        )
                    )
                except ValueError as exc:
                    problems.append(Problem("subject_type", str(exc), "subject"))
                else:
                    if subject_type not in self._allowed_types:
                        problems.append(self._not_allowed(subject_type))
            else:
                problems.append(Problem("subject_id", "required field is empty", "subject"))
        else:
            if not label:
                problems.append(Problem("subject_type", "required field is empty", "subject"))
            elif subject_type == "":
                problems.append(
                    Problem(
                        "subject_type",
                        f"{excerpt(label)} is not a subject type; use one of "
                        + ", ".join(SUBJECT_TYPES)
                        + " or their Chinese names ("
                        + ", ".join(SUBJECT_TYPE_LABELS)
                        + ", 法人及非法人组织)",
                        "subject",
                    )
                )
            elif subject_type not in self._allowed_types:
                problems.append(self._not_allowed(subject_type))
            if not subject_id:
                problems.append(Problem("subject_id", "required field is empty", "subject"))
            elif subject_type:
                try:
                    subject_id = self._subject_id[subject_type](subject_id)
                except InvalidIdentifier as exc:
                    problems.append(_invalid_subject_id(subject_type, exc))
        if not subject_name:
            problems.append(Problem("subject_name", "required field is empty", "subject"))
        elif len(subject_name) > MAX_NAME:
            problems.append(
                Problem("subject_name", f"longer than {MAX_NAME} characters", "subject")
            )
        if not record_key:
            problems.append(Problem("record_key", "required field is empty", "subject"))
        elif len(record_key) > MAX_KEY:
            problems.append(Problem("record_key", f"longer than {MAX_KEY} characters", "subject"))
        return subject_id, subject_type, problems

    def _not_allowed(self, subject_type: str) -> Problem:
        return Problem(
            "subject_type",
            f"theme {self.theme.code} does not concern {subject_type} subjects "
            f"(it allows {', '.join(sorted(self._allowed_types))})",
            "subject",
        )


def _added(problems: list[Problem] | None, problem: Problem) -> list[Problem]:
    if problems is None:
        return [problem]
    problems.append(problem)
    return problems


def _too_long(name: str, raw: str, limit: int) -> Problem:
    return Problem(name, f"is {len(raw)} characters long, at most {limit} allowed", "invalid")


def _invalid(name: str, raw: str, sensitive: bool, problem: ValueError) -> Problem:
    """A cell its field's converter refused; a sensitive cell is never repeated."""
    reason = str(problem)
    if sensitive:
        reason = reason.replace(excerpt(raw), _WITHHELD).replace(raw, _WITHHELD)
    return Problem(name, reason, "invalid")


def _invalid_subject_id(subject_type: str, problem: InvalidIdentifier) -> Problem:
    return Problem(
        "subject_id", f"not a valid {identifier_kind(subject_type)}: {problem}", "subject"
    )


def cell_text(value: str | int | float | bool | None) -> str:
    """A JSON scalar as the text a CSV cell would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
