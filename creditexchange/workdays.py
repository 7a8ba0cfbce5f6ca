"""Working days (工作日) in mainland China: the calendar statutory deadlines count in.

Deadlines of the credit rules are in working days: an objection is accepted or not
within 2, the source department checks within 10, a repair is reviewed within 10,
licences and penalties are published within 7 of their decision. A working day is
Monday to Friday, except the public holidays the State Council announces each year,
plus the weekend days it moves work to (调休, e.g. the Sunday before Spring Festival).

The schedules of 2025 and 2026 as announced are built in. A later year, or a city's
own closures, come from a YAML file (``workdays_path`` in the node's settings)::

    holidays: [2027-01-01, 2027-02-06]      # days off although on a weekday
    working_weekends: [2027-02-14]          # weekend days that are working days

Days listed in the file are added to the built-in ones. A year that neither lists
counts Monday to Friday only; :meth:`WorkCalendar.knows` tells whether it does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from creditexchange.errors import ConfigError

__all__ = ["DEFAULT_CALENDAR", "WorkCalendar", "load_calendar"]


def _span(first: str, last: str) -> list[dt.date]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


# 国务院办公厅关于2025年、2026年部分节假日安排的通知.
_HOLIDAYS = [
    *_span("2025-01-01", "2025-01-01"),  # 元旦
    *_span("2025-01-28", "2025-02-04"),  # 春节
    *_span("2025-04-04", "2025-04-06"),  # 清明节
    *_span("2025-05-01", "2025-05-05"),  # 劳动节
    *_span("2025-05-31", "2025-06-02"),  # 端午节
    *_span("2025-10-01", "2025-10-08"),  # 国庆节、中秋节
    *_span("2026-01-01", "2026-01-03"),  # 元旦
    *_span("2026-02-15", "2026-02-23"),  # 春节
    *_span("2026-04-04", "2026-04-06"),  # 清明节
    *_span("2026-05-01", "2026-05-05"),  # 劳动节
    *_span("2026-06-19", "2026-06-21"),  # 端午节
    *_span("2026-09-25", "2026-09-27"),  # 中秋节
    *_span("2026-10-01", "2026-10-07"),  # 国庆节
]
_WORKING_WEEKENDS = [
    dt.date.fromisoformat(day)
    for day in (
        "2025-01-26", "2025-02-08", "2025-04-27", "2025-09-28", "2025-10-11",
        "2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10",
    )
]  # fmt: skip


@dataclass(frozen=True)
class WorkCalendar:
    """Which days are working days; deadlines counted in them."""

    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    working_weekends: frozenset[dt.date] = field(default_factory=frozenset)

    def knows(self, year: int) -> bool:
        """Whether the year's holidays are listed (otherwise Monday-Friday is assumed)."""
        return any(day.year == year for day in self.holidays)

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.working_weekends:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_working_days(self, start: dt.date, days: int) -> dt.date:
        """The ``days``-th working day after ``start`` (``start`` itself not counted):
        the last day of a deadline of ``days`` working days from ``start``."""
        if days < 0:
            raise ValueError("a deadline counts forward: days must be 0 or more")
        day = start
        while days:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                days -= 1
        return day

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days after ``start`` up to and including ``end`` (0 when ``end`` is not
        after ``start``): how many working days an answer on ``end`` took."""
        count, day = 0, start
        while day < end:
            day += dt.timedelta(days=1)
            count += self.is_working_day(day)
        return count


DEFAULT_CALENDAR = WorkCalendar(frozenset(_HOLIDAYS), frozenset(_WORKING_WEEKENDS))
"""The built-in calendar: the State Council's schedules for 2025 and 2026."""


def _days(data: dict[str, Any], key: str, source: Path) -> Iterable[dt.date]:
    listed = data.get(key) or []
    if not isinstance(listed, list):
        raise ConfigError(f"{source}: {key} must be a list of dates (YYYY-MM-DD)")
    for position, value in enumerate(listed):
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            yield value
            continue
        try:
            yield dt.date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(
                f"{source}: {key}[{position}] {str(value)[:40]!r} is not a date; write YYYY-MM-DD"
            ) from None


def load_calendar(path: Path | None) -> WorkCalendar:
    """The built-in calendar, with the days a city's file adds (``None``: built-in only)."""
    if path is None:
        return DEFAULT_CALENDAR
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read the working-day calendar {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: the working-day calendar is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"holidays", "working_weekends"}:
        raise ConfigError(
            f"{path}: a working-day calendar holds 'holidays' and 'working_weekends' "
            "(lists of dates) and nothing else"
        )
    holidays = set(_days(data, "holidays", path))
    working = set(_days(data, "working_weekends", path))
    both = sorted(holidays & working)
    if both:
        raise ConfigError(f"{path}: {both[0]} is listed both as a holiday and as a working day")
    return WorkCalendar(
        DEFAULT_CALENDAR.holidays | holidays,
        DEFAULT_CALENDAR.working_weekends | working,
    )
