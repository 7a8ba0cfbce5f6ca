"""Reporting statistics of the source departments (信用信息报送考核): how each
department delivered each theme's data in one month.

A report covers one month in China's calendar: the import batches whose
``started_at`` falls on a China Standard Time date of that month (a batch started
on the 1st at 00:30 in China, the previous day in UTC, belongs to the month).
It has one row per (source department, theme) that had such a batch, that owes
a scheduled delivery in the month, or that holds records past their publicity,
then a total per department and one overall. The figures, exactly:

* ``batches``: the import batches of the department and theme started in the month,
  finished or not (an import that stopped midway still delivered a file).
* ``rows_received``, ``inserted``, ``updated``, ``unchanged``, ``rejected``, ``stale``:
  the sums of those batches' ``rows_read``, ``inserted``, ``updated``, ``unchanged``,
  ``rejected`` and ``stale`` (rows older than the stored version, refused), as the
  importer recorded them. ``accepted`` is inserted + updated + unchanged.
* ``rejected_by_reason``: the sums of ``import_rejects.rows`` of those batches, by
  reason code (:data:`REJECT_CODES`, and any other code the table holds). The
  table counts rows per (field, reason): a row refused for two fields counts under
  each, so these may add up to more than ``rejected``.
* ``late_rows`` (themes with ``reporting.within_working_days`` N, else None): the rows
  those batches wrote — current ``records`` whose ``batch_id`` is the batch, and
  ``record_versions`` whose ``batch_id`` is the batch (versions replaced since), each
  record once per batch — whose decision date lies more than N working days
  (:meth:`WorkCalendar.working_days_between`) before the China date the batch
  started. Rows without a decision date are not counted; rows a batch found
  unchanged were written by an earlier batch and count there.
* ``missed_deliveries`` (the theme's own source department, for themes with
  ``reporting.every``, else None): the delivery periods due in the month whose
  deadline had passed on ``as_of`` and in which the department started no batch of
  the theme. A period is due in the month when its nominal day (day ``by_day`` of
  the month; weekday ``by_day`` of a week; each working day) falls in the month; its
  window runs from the period's first day (the 1st; the Monday; the day itself) to
  its deadline, the nominal day or, when that is a day off, the next working day.
  ``missed_due_dates`` lists those deadlines.
* ``past_publicity``: the department's current records of the theme (as stored when
  the report is made: ``records``, not their history) that are not withdrawn (status
  ``expired``) and whose publicity end is on or before the month's last day, i.e.
  that would not be served on the first day of the next month
  (:func:`~creditexchange.node.records.repository.servable`); records that ended
  long before the month count too.

Invariants:

* No figure is guessed: a theme without a rule has ``None`` for the figure the rule
  defines, never 0; a reject reason the report does not know is reported under its
  own code, never dropped.
* All figures are read in one transaction (repeatable read on PostgreSQL), so they
  agree with each other while imports run.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Engine, Select, func, select, union

from creditexchange.clock import CST, china_today
from creditexchange.errors import CatalogError, excerpt
from creditexchange.node.catalog import Catalog, ReportingPeriod, ReportingRule
from creditexchange.node.database.models import (
    IMPORT_BATCHES,
    IMPORT_REJECTS,
    RECORD_VERSIONS,
    RECORDS,
)
from creditexchange.node.records.reading import REJECT_CODES
from creditexchange.node.records.repository import WITHDRAWN
from creditexchange.node.records.spreadsheets import spreadsheet_text
from creditexchange.workdays import DEFAULT_CALENDAR, WorkCalendar

__all__ = [
    "REJECT_REASON_NAMES",
    "DepartmentTotal",
    "DepartmentsReport",
    "Figures",
    "ReportMonth",
    "ReportRow",
    "delivery_periods",
    "departments_report",
]

"""The reason codes of ``import_rejects``, in the order a report shows them: a row's
own problems (validation's), then those the importer finds against the store."""

REJECT_REASON_NAMES: Final[Mapping[str, str]] = {
    "required": "必填项为空",
    "invalid": "格式或取值错误",
    "subject": "主体标识错误",
    "unreadable": "无法读取",
    "publicity": "公示期错误",
    "duplicate_key": "记录重复",
    "stale": "旧于已存数据",
    "subject_conflict": "主体类型冲突",
}

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


@dataclass(frozen=True, slots=True, order=True)
class ReportMonth:
    """A month of China's calendar."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> ReportMonth:
        """``2026-11``; a ValueError saying how to write it otherwise."""
        found = _MONTH.fullmatch(text.strip())
        if found is None or not 1 <= int(found[2]) <= 12 or int(found[1]) < 1:
            raise ValueError(
                f"{excerpt(text)} is not a month: write it as YYYY-MM, e.g. 2026-11 "
                "(a month of China's calendar)"
            )
        return cls(int(found[1]), int(found[2]))

    @property
    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def next_first_day(self) -> dt.date:
        return dt.date(self.year + self.month // 12, self.month % 12 + 1, 1)

    @property
    def last_day(self) -> dt.date:
        return self.next_first_day - dt.timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


# --- the figures ------------------------------------------------------------------------


def _plus(a: int | None, b: int | None) -> int | None:
    """A sum where None means "no rule": None only when neither side has one."""
    return None if a is None and b is None else (a or 0) + (b or 0)


@dataclass(frozen=True)
class Figures:
    """The figures of one row, one department or the whole report; see the module."""

    batches: int = 0
    rows_received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict, hash=False)
    stale: int = 0
    late_rows: int | None = None
    missed_deliveries: int | None = None
    past_publicity: int = 0

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def __add__(self, other: Figures) -> Figures:
        reasons = dict(self.rejected_by_reason)
        for reason, rows in other.rejected_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + rows
        return Figures(
            batches=self.batches + other.batches,
            rows_received=self.rows_received + other.rows_received,
            inserted=self.inserted + other.inserted,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
            rejected=self.rejected + other.rejected,
            rejected_by_reason=reasons,
            stale=self.stale + other.stale,
            late_rows=_plus(self.late_rows, other.late_rows),
            missed_deliveries=_plus(self.missed_deliveries, other.missed_deliveries),
            past_publicity=self.past_publicity + other.past_publicity,
        )

    def as_json(self, reasons: Iterable[str]) -> dict[str, Any]:
        """The figures under stable keys; ``rejected_by_reason`` has every code of
        ``reasons``, 0 where none."""
        return {
            "batches": self.batches,
            "rows_received": self.rows_received,
            "accepted": self.accepted,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "rejected_by_reason": {r: self.rejected_by_reason.get(r, 0) for r in reasons},
            "stale": self.stale,
            "late_rows": self.late_rows,
            "missed_deliveries": self.missed_deliveries,
            "past_publicity": self.past_publicity,
        }


@dataclass(frozen=True)
class ReportRow:
    """One source department and theme; the names are the catalog's (None: not in it)."""

    department: str
    department_name: str | None
    theme: str
    theme_name: str | None
    figures: Figures
    missed_due_dates: tuple[dt.date, ...] = ()


@dataclass(frozen=True)
class DepartmentTotal:
    department: str
    department_name: str | None
    figures: Figures


_CSV_FIGURES = (
    "batches",
    "rows_received",
    "accepted",
    "inserted",
    "updated",
    "unchanged",
    "rejected",
)


@dataclass(frozen=True)
class DepartmentsReport:
    """The month's rows (by department and theme, in catalog order), the department
    totals and the overall total. ``reasons``: the reject reason codes reported,
    :data:`REJECT_CODES` then any other found. ``holidays_known``: whether the
    working-day calendar lists the month's year (else Monday-Friday was counted)."""

    month: ReportMonth
    as_of: dt.date
    catalog_version: str
    department: str | None
    theme: str | None
    reasons: tuple[str, ...]
    holidays_known: bool
    rows: tuple[ReportRow, ...]
    departments: tuple[DepartmentTotal, ...]
    total: Figures

    def as_json(self) -> dict[str, Any]:
        """The report as JSON data, under stable keys."""
        return {
            "month": str(self.month),
            "first_day": self.month.first_day.isoformat(),
            "last_day": self.month.last_day.isoformat(),
            "as_of": self.as_of.isoformat(),
            "catalog_version": self.catalog_version,
            "department": self.department,
            "theme": self.theme,
            "holidays_known": self.holidays_known,
            "reject_reasons": list(self.reasons),
            "rows": [
                {
                    "department": r.department,
                    "department_name": r.department_name,
                    "theme": r.theme,
                    "theme_name": r.theme_name,
                    **r.figures.as_json(self.reasons),
                    "missed_due_dates": [d.isoformat() for d in r.missed_due_dates],
                }
                for r in self.rows
            ],
            "departments": [
                {
                    "department": d.department,
                    "department_name": d.department_name,
                    **d.figures.as_json(self.reasons),
                }
                for d in self.departments
            ],
            "total": self.total.as_json(self.reasons),
        }

    def csv_header(self) -> list[str]:
        return [
            "level",
            "department",
            "department_name",
            "theme",
            "theme_name",
            *_CSV_FIGURES,
            *(f"rejected_{r}" for r in self.reasons),
            "stale",
            "late_rows",
            "missed_deliveries",
            "missed_due_dates",
            "past_publicity",
        ]

    def csv_bytes(self) -> bytes:
        """The report as CSV for a spreadsheet: UTF-8 with a BOM (so Excel reads the
        Chinese names), one line per row, per department (``level`` department) and
        for the whole (``level`` total); a text cell that starts like a formula is
        written with a leading ``'``; an empty cell where a theme has no rule."""
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(self.csv_header())
        for r in self.rows:
            writer.writerow(
                self._csv_line(
                    "theme",
                    r.department,
                    r.department_name,
                    r.theme,
                    r.theme_name,
                    r.figures,
                    r.missed_due_dates,
                )
            )
        for d in self.departments:
            writer.writerow(
                self._csv_line("department", d.department, d.department_name, "", None, d.figures)
            )
        writer.writerow(self._csv_line("total", "", None, "", None, self.total))
        return text.getvalue().encode("utf-8-sig")

    def _csv_line(
        self,
        level: str,
        department: str,
        department_name: str | None,
        theme: str,
        theme_name: str | None,
        figures: Figures,
        missed: tuple[dt.date, ...] = (),
    ) -> list[str | int]:
        data = figures.as_json(self.reasons)
        texts = [level, department, department_name or "", theme, theme_name or ""]
        return [
            *(spreadsheet_text(t) for t in texts),
            *(data[k] for k in _CSV_FIGURES),
            *(data["rejected_by_reason"][r] for r in self.reasons),
            figures.stale,
            "" if figures.late_rows is None else figures.late_rows,
            "" if figures.missed_deliveries is None else figures.missed_deliveries,
            " ".join(d.isoformat() for d in missed),
            figures.past_publicity,
        ]


# --- delivery schedules -------------------------------------------------------------------


def delivery_periods(
    rule: ReportingRule, month: ReportMonth, calendar: WorkCalendar
) -> list[tuple[dt.date, dt.date]]:
    """The delivery periods of ``rule`` due in ``month``, as (first day, deadline):
    those whose nominal day falls in the month; a deadline on a day off moves to the
    next working day. Empty for a rule without ``every``."""

    def deadline(nominal: dt.date) -> dt.date:
        return calendar.add_working_days(nominal - dt.timedelta(days=1), 1)

    first, last = month.first_day, month.last_day
    if rule.every is None:
        return []
    if rule.every is ReportingPeriod.WORKING_DAY:
        days = (first + dt.timedelta(days=i) for i in range((last - first).days + 1))
        return [(d, d) for d in days if calendar.is_working_day(d)]
    assert rule.by_day is not None  # the catalog refuses every: month / week without it
    if rule.every is ReportingPeriod.MONTH:
        return [(first, deadline(dt.date(month.year, month.month, rule.by_day)))]
    periods = []
    monday = first - dt.timedelta(days=first.weekday())
    while monday <= last:
        nominal = monday + dt.timedelta(days=rule.by_day - 1)
        if first <= nominal <= last:
            periods.append((monday, deadline(nominal)))
        monday += dt.timedelta(days=7)
    return periods


# --- reading the store ----------------------------------------------------------------------


def _utc_start(day: dt.date) -> dt.datetime:
    """The moment China's ``day`` begins, in UTC (as batches' ``started_at`` is kept)."""
    return dt.datetime.combine(day, dt.time(), CST).astimezone(dt.UTC)


def _china_date(moment: dt.datetime) -> dt.date:
    """The China date of a stored timestamp (SQLite gives it back without its zone, UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
    return aware.astimezone(CST).date()


_B = IMPORT_BATCHES.c

Pair = tuple[str, str]
"""(source department, theme)."""


def _batches_between(
    first: dt.date, after_last: dt.date, department: str | None, theme: str | None
) -> Select[Any]:
    """The ids of the batches started from China's day ``first`` up to, not including,
    its day ``after_last``."""
    query = select(_B.id).where(
        _B.started_at >= _utc_start(first), _B.started_at < _utc_start(after_last)
    )
    if department is not None:
        query = query.where(_B.source_department == department)
    if theme is not None:
        query = query.where(_B.theme == theme)
    return query


def _batch_figures(conn: Connection, month_batches: Select[Any]) -> dict[Pair, Figures]:
    query = (
        select(
            _B.source_department,
            _B.theme,
            func.count(),
            func.sum(_B.rows_read),
            func.sum(_B.inserted),
            func.sum(_B.updated),
            func.sum(_B.unchanged),
            func.sum(_B.rejected),
            func.sum(_B.stale),
        )
        .where(_B.id.in_(month_batches))
        .group_by(_B.source_department, _B.theme)
    )
    return {
        (dept, theme): Figures(
            batches=int(n),
            rows_received=int(read or 0),
            inserted=int(inserted or 0),
            updated=int(updated or 0),
            unchanged=int(unchanged or 0),
            rejected=int(rejected or 0),
            stale=int(stale or 0),
        )
        for dept, theme, n, read, inserted, updated, unchanged, rejected, stale in conn.execute(
            query
        )
    }


def _rejects(conn: Connection, month_batches: Select[Any]) -> dict[Pair, dict[str, int]]:
    r = IMPORT_REJECTS.c
    query = (
        select(_B.source_department, _B.theme, r.reason, func.sum(r.rows))
        .select_from(IMPORT_REJECTS.join(IMPORT_BATCHES, _B.id == r.batch_id))
        .where(r.batch_id.in_(month_batches))
        .group_by(_B.source_department, _B.theme, r.reason)
    )
    found: dict[Pair, dict[str, int]] = {}
    for dept, theme, reason, rows in conn.execute(query):
        found.setdefault((dept, theme), {})[str(reason)] = int(rows or 0)
    return found


def _late_rows(
    conn: Connection,
    month_batches: Select[Any],
    within: Mapping[str, int],
    calendar: WorkCalendar,
) -> dict[Pair, int]:
    """Rows the month's batches of ``within``'s themes wrote more than ``within[theme]``
    working days after their decision date, by department and theme."""
    if not within:
        return {}
    batches = month_batches.where(_B.theme.in_(sorted(within)))
    v = RECORD_VERSIONS.c
    written = union(  # a record once per batch, though a status change copied its version
        select(RECORDS.c.batch_id, RECORDS.c.id.label("record_id"), RECORDS.c.decision_date).where(
            RECORDS.c.batch_id.in_(batches)
        ),
        select(v.batch_id, v.record_id, v.decision_date).where(v.batch_id.in_(batches)),
    ).subquery("written")
    w = written.c
    query = (
        select(_B.source_department, _B.theme, _B.started_at, w.decision_date, func.count())
        .select_from(written.join(IMPORT_BATCHES, _B.id == w.batch_id))
        .where(w.decision_date.is_not(None))
        .group_by(_B.id, _B.source_department, _B.theme, _B.started_at, w.decision_date)
    )
    late: dict[Pair, int] = {}
    for dept, theme, started_at, decision_date, rows in conn.execute(query):
        received = _china_date(started_at)
        if calendar.working_days_between(decision_date, received) > within[theme]:
            late[(dept, theme)] = late.get((dept, theme), 0) + int(rows)
    return late


def _delivery_days(
    conn: Connection, scheduled: Iterable[Pair], first: dt.date, after_last: dt.date
) -> dict[Pair, set[dt.date]]:
    """The China dates on which each scheduled pair started a batch, in the range."""
    pairs = set(scheduled)
    days: dict[Pair, set[dt.date]] = {pair: set() for pair in pairs}
    if not pairs:
        return days
    ids = _batches_between(first, after_last, None, None).where(
        _B.theme.in_(sorted({theme for _, theme in pairs}))
    )
    query = select(_B.source_department, _B.theme, _B.started_at).where(_B.id.in_(ids))
    for dept, theme, started_at in conn.execute(query):
        if (dept, theme) in pairs:
            days[(dept, theme)].add(_china_date(started_at))
    return days


def _past_publicity(
    conn: Connection, month: ReportMonth, department: str | None, theme: str | None
) -> dict[Pair, int]:
    r = RECORDS.c
    query = (
        select(r.source_department, r.theme, func.count())
        .where(
            # ended by itself: a record withdrawn or repaired did not reach its end
            r.status.not_in(sorted(WITHDRAWN)),
            r.publicity_end < month.next_first_day,
        )
        .group_by(r.source_department, r.theme)
    )
    if department is not None:
        query = query.where(r.source_department == department)
    if theme is not None:
        query = query.where(r.theme == theme)
    return {(dept, theme): int(n) for dept, theme, n in conn.execute(query)}


# --- the report ---------------------------------------------------------------------------


def departments_report(
    engine: Engine,
    catalog: Catalog,
    month: ReportMonth,
    *,
    calendar: WorkCalendar = DEFAULT_CALENDAR,
    today: dt.date | None = None,
    department: str | None = None,
    theme: str | None = None,
) -> DepartmentsReport:
    """The month's reporting statistics (see the module for every figure), for one
    ``department`` and / or ``theme`` when named. ``today`` (China's, by default)
    decides which delivery deadlines have passed. Raises CatalogError for a
    department or theme the catalog does not know."""
    as_of = today or china_today()
    if department is not None and department not in catalog.department_by_code:
        raise CatalogError(
            f"unknown department {excerpt(department)}; the catalog "
            f"{catalog.catalog_version} knows {', '.join(sorted(catalog.department_by_code))}"
        )
    if theme is not None:
        catalog.theme(theme)  # raises CatalogError naming the known themes

    def wanted(pair: Pair) -> bool:
        return (department is None or pair[0] == department) and (theme is None or pair[1] == theme)

    within = {
        t.code: t.reporting.within_working_days
        for t in catalog.themes
        if t.reporting is not None and t.reporting.within_working_days is not None
    }
    periods = {
        (t.source_department, t.code): delivery_periods(t.reporting, month, calendar)
        for t in catalog.themes
        if t.reporting is not None
        and t.reporting.every is not None
        and wanted((t.source_department, t.code))
    }
    windows = [window for listed in periods.values() for window in listed]
    earliest = min([month.first_day, *(start for start, _ in windows)])
    after_latest = max([month.next_first_day, *(end + dt.timedelta(days=1) for _, end in windows)])
    month_batches = _batches_between(month.first_day, month.next_first_day, department, theme)

    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            figures = _batch_figures(conn, month_batches)
            rejects = _rejects(conn, month_batches)
            late = _late_rows(conn, month_batches, within, calendar)
            delivered = _delivery_days(conn, periods, earliest, after_latest)
            past = _past_publicity(conn, month, department, theme)

    missed: dict[Pair, tuple[dt.date, ...]] = {
        pair: tuple(
            end
            for start, end in listed
            if end < as_of and not any(start <= day <= end for day in delivered[pair])
        )
        for pair, listed in periods.items()
    }
    pairs = set(figures) | set(periods) | set(past)
    rows = []
    for pair in sorted(pairs, key=lambda p: _catalog_order(catalog, p)):
        dept, code = pair
        known = catalog.theme_by_code.get(code)
        department_entry = catalog.department_by_code.get(dept)
        batch = figures.get(pair, Figures())
        rows.append(
            ReportRow(
                department=dept,
                department_name=department_entry.name_zh if department_entry else None,
                theme=code,
                theme_name=known.name_zh if known else None,
                figures=Figures(
                    batches=batch.batches,
                    rows_received=batch.rows_received,
                    inserted=batch.inserted,
                    updated=batch.updated,
                    unchanged=batch.unchanged,
                    rejected=batch.rejected,
                    rejected_by_reason=rejects.get(pair, {}),
                    stale=batch.stale,
                    late_rows=late.get(pair, 0) if code in within else None,
                    missed_deliveries=len(missed[pair]) if pair in missed else None,
                    past_publicity=past.get(pair, 0),
                ),
                missed_due_dates=missed.get(pair, ()),
            )
        )
    departments: list[DepartmentTotal] = []
    for row in rows:
        if departments and departments[-1].department == row.department:
            last = departments[-1]
            departments[-1] = DepartmentTotal(
                last.department, last.department_name, last.figures + row.figures
            )
        else:
            departments.append(DepartmentTotal(row.department, row.department_name, row.figures))
    total = Figures()
    for d in departments:
        total = total + d.figures
    others = sorted({r for found in rejects.values() for r in found} - set(REJECT_CODES))
    return DepartmentsReport(
        month=month,
        as_of=as_of,
        catalog_version=catalog.catalog_version,
        department=department,
        theme=theme,
        reasons=(*REJECT_CODES, *others),
        holidays_known=calendar.knows(month.year),
        rows=tuple(rows),
        departments=tuple(departments),
        total=total,
    )


def _catalog_order(catalog: Catalog, pair: Pair) -> tuple[int, str, int, str]:
    """Departments, then themes, in the catalog's order; codes it does not know last."""
    departments = list(catalog.department_by_code)
    themes = list(catalog.theme_by_code)
    dept, theme = pair
    return (
        departments.index(dept) if dept in departments else len(departments),
        dept,
        themes.index(theme) if theme in themes else len(themes),
        theme,
    )
