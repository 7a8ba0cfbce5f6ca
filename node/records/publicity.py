"""Publicity periods (公示期限) of credit records, after NDRC Order 58.

A record is public from its start date (the decision date for a penalty) until its
publicity end. The catalog's rule for a theme gives the minimum and maximum
period; a department may state an earlier end, which must not fall before the
minimum. Without a stated end, publicity lasts the maximum and ends by itself.

``publicity_end`` is the last day a record is public: it is served on that day
and not after (``repository.servable``).

A credit repair (``records.repair``) ends a record's publicity before its end: a
repairable theme's record may be repaired from :func:`repair_months` after its
start (the minimum period, extended minimum included, or the rule's longer
``repair_after_months``), unless it is one of the rule's serious cases
(:func:`is_serious`), which stay public until the maximum (:func:`maximum_end`).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping

from creditexchange.errors import PublicityViolation
from creditexchange.node.catalog import PublicityRule

__all__ = [
    "add_months",
    "is_serious",
    "maximum_end",
    "minimum_months",
    "publicity_end",
    "repair_months",
]


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus whole months, clamped to the month's end (2024-01-31 + 1 -> 2024-02-29)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    if day.day <= 28:
        return dt.date(year, month, day.day)
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def minimum_months(rule: PublicityRule, fields: Mapping[str, object]) -> int:
    """The shortest publicity of a record with ``fields``, in months."""
    extended = rule.extended_minimum
    if extended is not None and fields.get(extended.field) in extended.values:
        return max(rule.min_months, extended.min_months)
    return rule.min_months


def repair_months(rule: PublicityRule, fields: Mapping[str, object]) -> int:
    """How many months after its start a record with ``fields`` may be repaired: never
    before its minimum period."""
    return max(minimum_months(rule, fields), rule.repair_after_months or 0)


def is_serious(rule: PublicityRule, fields: Mapping[str, object]) -> bool:
    """Whether a record with ``fields`` is one of the rule's serious cases (no early repair)."""
    serious = rule.serious
    return serious is not None and fields.get(serious.field) in serious.values


def maximum_end(rule: PublicityRule, start: dt.date) -> dt.date | None:
    """The day publicity ends by itself (None: the rule has no maximum)."""
    return None if rule.max_months is None else add_months(start, rule.max_months)


def publicity_end(
    rule: PublicityRule, start: dt.date, stated_end: dt.date | None, fields: Mapping[str, object]
) -> dt.date | None:
    """The last public day of a record under ``rule``; raises PublicityViolation."""
    latest = maximum_end(rule, start)
    if stated_end is None:
        return latest
    months = minimum_months(rule, fields)
    earliest = add_months(start, months)
    if stated_end < earliest:
        raise PublicityViolation(
            f"publicity end {stated_end} is before the minimum of {months} months after "
            f"{start} ({earliest})"
        )
    if latest is not None and stated_end > latest:
        raise PublicityViolation(
            f"publicity end {stated_end} is past the maximum of {rule.max_months} months "
            f"after {start} ({latest})"
        )
    return stated_end
