"""The departments' reporting statistics (信用信息报送考核), ``credit-node departments
report``: exact figures on a known month, on SQLite and on PostgreSQL.

The known month is October 2026, which holds the National Day holiday (10-01 to
10-07, with Saturday 10-10 a working day) and follows the Mid-Autumn holiday
(09-25 to 09-27, with Sunday 09-20 a working day). Batches, rejects and records
are written directly, so every figure below is known; one test imports a real
file instead.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Connection, Engine, insert
from typer.testing import CliRunner

from creditexchange.clock import CST, china_today
from creditexchange.errors import CatalogError
from creditexchange.node.app.config import load_config
from creditexchange.node.app.home import create_home
from creditexchange.node.catalog import (
    Catalog,
    ReportingPeriod,
    ReportingRule,
    load_catalog,
    parse_catalog,
)
from creditexchange.node.cli import app
from creditexchange.node.database import open_database
from creditexchange.node.database.models import (
    IMPORT_BATCHES,
    IMPORT_REJECTS,
    RECORD_VERSIONS,
    RECORDS,
)
from creditexchange.node.records.importer import import_file
from creditexchange.node.records.reading import REJECT_CODES
from creditexchange.node.records.reporting import (
    ReportMonth,
    delivery_periods,
    departments_report,
)
from creditexchange.workdays import DEFAULT_CALENDAR, WorkCalendar

OCTOBER = ReportMonth(2026, 10)
AS_OF = dt.date(2026, 11, 27)
ENTERPRISE = "91441300MA4W7K3P2D"

# The rules under test, set here so that the shipped catalog's schedules can change.
RULES: dict[str, dict[str, Any]] = {
    "admin_penalty": {"within_working_days": 7},
    "customs_case": {"within_working_days": 7},
    # 10-05 is a holiday: the deadline moves to Thursday 10-08.
    "customs_credit_grade": {"every": "month", "by_day": 5},
    # 10-10 is a Saturday, but a working one: the deadline stays.
    "customs_light_status": {"every": "month", "by_day": 10},
}


def catalog_data(rules: dict[str, dict[str, Any]] = RULES) -> dict[str, Any]:
    """The shipped catalog with these reporting rules and no others."""
    text = resources.files("creditexchange.node").joinpath("data/catalog.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    for theme in data["themes"]:
        theme.pop("reporting", None)
        if theme["code"] in rules:
            theme["reporting"] = copy.deepcopy(rules[theme["code"]])
    return data


@pytest.fixture(scope="module")
def test_catalog() -> Catalog:
    return parse_catalog(catalog_data(), "test catalog")


# --- the known month ----------------------------------------------------------------


def at(china_time: str) -> dt.datetime:
    """A moment given in China's time, as the importer stores it (UTC)."""
    return dt.datetime.fromisoformat(china_time).replace(tzinfo=CST).astimezone(dt.UTC)


def add_batch(conn: Connection, theme: str, department: str, started: str, **counts: int) -> int:
    started_at = at(started)
    batch_id = conn.execute(
        insert(IMPORT_BATCHES).values(
            theme=theme,
            source_department=department,
            file_name=f"{department}-{theme}.csv",
            file_digest="0" * 64,
            file_format="csv",
            encoding="utf-8",
            catalog_version="2024.1",
            started_at=started_at,
            finished_at=started_at + dt.timedelta(minutes=1),
            **counts,
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    return int(batch_id)


def add_rejects(conn: Connection, batch_id: int, field: str, reason: str, rows: int) -> None:
    conn.execute(
        insert(IMPORT_REJECTS).values(batch_id=batch_id, field=field, reason=reason, rows=rows)
    )


_keys = iter(range(1, 10_000))


def add_record(
    conn: Connection,
    theme: str,
    department: str,
    batch_id: int,
    decision: str | None,
    *,
    publicity_end: str | None = None,
    status: str = "active",
    version: int = 1,
) -> int:
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    record_id = conn.execute(
        insert(RECORDS).values(
            theme=theme,
            record_key=f"K{next(_keys)}",
            subject_id=ENTERPRISE,
            source_department=department,
            fields="{}",
            decision_date=dt.date.fromisoformat(decision) if decision else None,
            publicity_end=dt.date.fromisoformat(publicity_end) if publicity_end else None,
            status=status,
            version=version,
            content_hash="0" * 32,
            batch_id=batch_id,
            updated_at=now,
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    return int(record_id)


def add_version(
    conn: Connection, record_id: int, version: int, department: str, batch_id: int, decision: str
) -> None:
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    conn.execute(
        insert(RECORD_VERSIONS).values(
            record_id=record_id,
            version=version,
            subject_id=ENTERPRISE,
            source_department=department,
            fields="{}",
            decision_date=dt.date.fromisoformat(decision),
            status="active",
            content_hash="0" * 32,
            batch_id=batch_id,
            valid_from=now,
            superseded_at=now,
            superseded_by="test",
        )
    )


MARKET, CUSTOMS = "market_regulation", "customs"


def write_known_month(engine: Engine) -> None:
    """October 2026 of two departments; the expected figures are in EXPECTED."""
    with engine.begin() as conn:
        # September, one minute before October in China: not October's.
        b0 = add_batch(conn, "admin_penalty", MARKET, "2026-09-30T23:59", rows_read=5, inserted=5)
        add_record(conn, "admin_penalty", MARKET, b0, "2026-01-05")  # late, but September's
        # Records past their publicity at October's end (1 of market's, 1 of customs'),
        # from earlier batches; a repaired or withdrawn record did not reach its end.
        old = add_batch(conn, "admin_penalty", MARKET, "2025-11-03T09:00", rows_read=4, inserted=4)
        add_record(conn, "admin_penalty", MARKET, old, "2025-10-31", publicity_end="2026-10-31")
        add_record(
            conn, "admin_penalty", MARKET, old, "2025-05-01",
            publicity_end="2026-05-01", status="repaired",
        )  # fmt: skip
        add_record(conn, "admin_penalty", MARKET, old, "2025-11-01", publicity_end="2026-11-01")
        add_record(
            conn, "admin_penalty", MARKET, old, "2025-10-31",
            publicity_end="2026-10-31", status="expired",
        )  # fmt: skip
        cases = add_batch(
            conn, "customs_case", CUSTOMS, "2026-08-03T09:00", rows_read=1, inserted=1
        )
        add_record(conn, "customs_case", CUSTOMS, cases, "2026-07-31", publicity_end="2026-10-31")

        # 1 October 00:30 in China is 30 September in UTC: October's.
        b1 = add_batch(
            conn, "admin_penalty", MARKET, "2026-10-01T00:30",
            rows_read=10, inserted=6, updated=1, unchanged=1, rejected=2,
        )  # fmt: skip
        add_rejects(conn, b1, "decision_date", "invalid", 1)
        add_rejects(conn, b1, "penalty_type", "required", 1)  # one row lacking two fields
        add_rejects(conn, b1, "legal_basis", "required", 1)
        add_record(conn, "admin_penalty", MARKET, b1, "2026-09-20")  # 7 working days: on time
        add_record(conn, "admin_penalty", MARKET, b1, "2026-09-18")  # 8: late
        add_record(conn, "admin_penalty", MARKET, b1, None)  # no decision date: not counted

        b2 = add_batch(
            conn, "admin_penalty", MARKET, "2026-10-12T10:00",
            rows_read=4, inserted=3, updated=1,
        )  # fmt: skip
        add_record(conn, "admin_penalty", MARKET, b2, "2026-09-28")  # 6 across the holiday
        add_record(conn, "admin_penalty", MARKET, b2, "2026-09-15")  # 15: late
        # Written by b2, replaced in November by b3: its b2 version is late.
        b3 = add_batch(conn, "admin_penalty", MARKET, "2026-11-01T00:30", rows_read=1, updated=1)
        replaced = add_record(conn, "admin_penalty", MARKET, b3, "2026-10-28", version=2)
        add_version(conn, replaced, 1, MARKET, b2, "2026-09-10")
        # Written by b2, then put under objection (its version copied, same batch): once.
        objected = add_record(
            conn, "admin_penalty", MARKET, b2, "2026-09-01", status="objection", version=2
        )
        add_version(conn, objected, 1, MARKET, b2, "2026-09-01")

        # Customs delivers penalties of the market theme too (--source customs).
        b6 = add_batch(conn, "admin_penalty", CUSTOMS, "2026-10-15T09:00", rows_read=2, inserted=2)
        add_record(conn, "admin_penalty", CUSTOMS, b6, "2026-10-14")
        add_record(conn, "admin_penalty", CUSTOMS, b6, "2026-09-01")  # late
        # Due by 10-05, a holiday: 10-08 is in time.
        add_batch(
            conn, "customs_credit_grade", CUSTOMS, "2026-10-08T09:00", rows_read=3, inserted=3
        )
        # Due by 10-10: 10-20 is a batch, but the delivery was missed.
        b5 = add_batch(
            conn, "customs_light_status", CUSTOMS, "2026-10-20T15:00",
            rows_read=3, inserted=1, rejected=2, stale=2,
        )  # fmt: skip
        add_rejects(conn, b5, "record_key", "stale", 2)


def figures(**given: Any) -> dict[str, Any]:
    """Figures as the JSON shows them: zero unless given."""
    reasons = given.pop("reasons", {})
    base: dict[str, Any] = {
        "batches": 0,
        "rows_received": 0,
        "accepted": 0,
        "inserted": 0,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "rejected_by_reason": {r: reasons.get(r, 0) for r in REJECT_CODES},
        "stale": 0,
        "late_rows": None,
        "missed_deliveries": None,
        "past_publicity": 0,
    }
    assert set(given) <= set(base), set(given) - set(base)
    return base | given


def row(department: str, department_name: str, theme: str, theme_name: str, **given: Any) -> Any:
    missed = given.pop("missed_due_dates", [])
    return {
        "department": department,
        "department_name": department_name,
        "theme": theme,
        "theme_name": theme_name,
        **figures(**given),
        "missed_due_dates": missed,
    }


PENALTY = "行政处罚信息（双公示）"
EXPECTED_ROWS = [
    row(
        MARKET, "市场监督管理局", "admin_penalty", PENALTY,
        batches=2, rows_received=14, accepted=12, inserted=9, updated=2, unchanged=1,
        rejected=2, reasons={"invalid": 1, "required": 2}, late_rows=4, past_publicity=1,
    ),
    row(
        CUSTOMS, "海关", "admin_penalty", PENALTY,
        batches=1, rows_received=2, accepted=2, inserted=2, late_rows=1,
    ),
    row(
        CUSTOMS, "海关", "customs_credit_grade", "海关企业信用等级",
        batches=1, rows_received=3, accepted=3, inserted=3, missed_deliveries=0,
    ),
    row(CUSTOMS, "海关", "customs_case", "海关走私违规案件信息", late_rows=0, past_publicity=1),
    row(
        CUSTOMS, "海关", "customs_light_status", "进出口企业绿灯黄灯管理信息",
        batches=1, rows_received=3, accepted=1, inserted=1, rejected=2,
        reasons={"stale": 2}, stale=2, missed_deliveries=1, missed_due_dates=["2026-10-10"],
    ),
]  # fmt: skip
EXPECTED_DEPARTMENTS = [
    {
        "department": MARKET,
        "department_name": "市场监督管理局",
        **figures(
            batches=2, rows_received=14, accepted=12, inserted=9, updated=2, unchanged=1,
            rejected=2, reasons={"invalid": 1, "required": 2}, late_rows=4, past_publicity=1,
        ),
    },
    {
        "department": CUSTOMS,
        "department_name": "海关",
        **figures(
            batches=3, rows_received=8, accepted=6, inserted=6, rejected=2,
            reasons={"stale": 2}, stale=2, late_rows=1, missed_deliveries=1, past_publicity=1,
        ),
    },
]  # fmt: skip
EXPECTED_TOTAL = figures(
    batches=5, rows_received=22, accepted=18, inserted=15, updated=2, unchanged=1, rejected=4,
    reasons={"invalid": 1, "required": 2, "stale": 2}, stale=2, late_rows=5,
    missed_deliveries=1, past_publicity=2,
)  # fmt: skip


@pytest.fixture
def known_month(engine: Engine) -> Engine:
    write_known_month(engine)
    return engine


def test_every_figure_of_the_known_month_is_exact(
    known_month: Engine, test_catalog: Catalog
) -> None:
    report = departments_report(known_month, test_catalog, OCTOBER, today=AS_OF).as_json()
    assert report["month"] == "2026-10"
    assert (report["first_day"], report["last_day"]) == ("2026-10-01", "2026-10-31")
    assert report["as_of"] == "2026-11-27"
    assert report["holidays_known"] is True
    assert report["reject_reasons"] == list(REJECT_CODES)
    assert report["rows"] == EXPECTED_ROWS
    assert report["departments"] == EXPECTED_DEPARTMENTS
    assert report["total"] == EXPECTED_TOTAL


def test_a_batch_belongs_to_the_month_of_its_china_date(
    known_month: Engine, test_catalog: Catalog
) -> None:
    """23:59 on 30 September in China is September's; 00:30 on 1 November (31 October
    in UTC) is November's."""

    def penalties_of(month: ReportMonth) -> dict[str, Any]:
        report = departments_report(
            known_month, test_catalog, month, today=AS_OF, department=MARKET
        )
        found: list[dict[str, Any]] = report.as_json()["rows"]
        [penalties] = [r for r in found if r["theme"] == "admin_penalty"]
        return penalties

    september = penalties_of(ReportMonth(2026, 9))
    assert (september["batches"], september["inserted"], september["late_rows"]) == (1, 5, 1)
    november = penalties_of(ReportMonth(2026, 11))
    assert (november["batches"], november["updated"], november["late_rows"]) == (1, 1, 0)


def test_late_rows_are_counted_in_working_days_across_the_holidays(
    known_month: Engine, test_catalog: Catalog
) -> None:
    """Counted Monday to Friday, the holidays would make two on-time rows late."""
    weekdays_only = WorkCalendar()
    report = departments_report(
        known_month, test_catalog, OCTOBER, today=AS_OF, calendar=weekdays_only
    )
    assert report.rows[0].figures.late_rows == 6
    assert report.holidays_known is False
    with_holidays = departments_report(known_month, test_catalog, OCTOBER, today=AS_OF)
    assert with_holidays.rows[0].figures.late_rows == 4


def test_a_delivery_is_missed_only_once_its_deadline_has_passed(
    known_month: Engine, test_catalog: Catalog
) -> None:
    on_the_tenth = departments_report(
        known_month, test_catalog, OCTOBER, today=dt.date(2026, 10, 10), department=CUSTOMS
    )
    missed = {r.theme: r.figures.missed_deliveries for r in on_the_tenth.rows}
    assert missed["customs_light_status"] == 0  # due by the 10th: there is still time
    assert missed["customs_credit_grade"] == 0  # delivered on the 8th, its deadline
    on_the_eleventh = departments_report(
        known_month, test_catalog, OCTOBER, today=dt.date(2026, 10, 11), department=CUSTOMS
    )
    [light] = [r for r in on_the_eleventh.rows if r.theme == "customs_light_status"]
    assert light.figures.missed_deliveries == 1
    assert light.missed_due_dates == (dt.date(2026, 10, 10),)


def test_a_month_without_any_batch_misses_every_scheduled_delivery(
    engine: Engine, test_catalog: Catalog
) -> None:
    report = departments_report(engine, test_catalog, ReportMonth(2026, 11), today=AS_OF)
    assert [(r.department, r.theme, r.figures.missed_deliveries) for r in report.rows] == [
        (CUSTOMS, "customs_credit_grade", 1),
        (CUSTOMS, "customs_light_status", 1),
    ]
    assert report.total.batches == 0
    assert report.total.late_rows is None  # no row of a theme with a late-row rule


def test_the_report_narrows_to_one_department_or_one_theme(
    known_month: Engine, test_catalog: Catalog
) -> None:
    customs = departments_report(
        known_month, test_catalog, OCTOBER, today=AS_OF, department=CUSTOMS
    )
    assert customs.as_json()["rows"] == EXPECTED_ROWS[1:]
    customs_total = {
        k: v
        for k, v in EXPECTED_DEPARTMENTS[1].items()
        if k not in ("department", "department_name")
    }
    assert customs.as_json()["total"] == customs_total
    penalties = departments_report(
        known_month, test_catalog, OCTOBER, today=AS_OF, theme="admin_penalty"
    )
    assert [(r.department, r.theme) for r in penalties.rows] == [
        (MARKET, "admin_penalty"),
        (CUSTOMS, "admin_penalty"),
    ]
    assert penalties.total.late_rows == 5


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("department", "tax_bureau", "unknown department 'tax_bureau'"),
        ("theme", "penalties", "unknown theme 'penalties'"),
    ],
)
def test_an_unknown_department_or_theme_is_refused(
    engine: Engine, test_catalog: Catalog, option: str, value: str, message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        departments_report(
            engine,
            test_catalog,
            OCTOBER,
            department=value if option == "department" else None,
            theme=value if option == "theme" else None,
        )


def test_a_reject_reason_the_report_does_not_know_is_reported_not_dropped(
    engine: Engine, test_catalog: Catalog
) -> None:
    with engine.begin() as conn:
        batch = add_batch(
            conn, "admin_penalty", MARKET, "2026-10-09T09:00", rows_read=1, rejected=1
        )
        add_rejects(conn, batch, "fine_amount", "negative_fine", 1)
    report = departments_report(engine, test_catalog, OCTOBER, today=AS_OF)
    assert report.reasons == (*REJECT_CODES, "negative_fine")
    assert report.as_json()["total"]["rejected_by_reason"]["negative_fine"] == 1
    assert report.csv_header()[-6] == "rejected_negative_fine"


# --- delivery schedules ----------------------------------------------------------------


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


@pytest.mark.parametrize(
    ("rule", "month", "periods"),
    [
        # the 5th is a holiday (National Day): due the next working day
        ({"every": "month", "by_day": 5}, (2026, 10), [("2026-10-01", "2026-10-08")]),
        # a Saturday that is a working day stays the deadline
        ({"every": "month", "by_day": 10}, (2026, 10), [("2026-10-01", "2026-10-10")]),
        # a Sunday moves to Monday
        ({"every": "month", "by_day": 8}, (2026, 11), [("2026-11-01", "2026-11-09")]),
        (
            {"every": "week", "by_day": 5},  # Fridays; 10-02 is a holiday
            (2026, 10),
            [
                ("2026-09-28", "2026-10-08"),
                ("2026-10-05", "2026-10-09"),
                ("2026-10-12", "2026-10-16"),
                ("2026-10-19", "2026-10-23"),
                ("2026-10-26", "2026-10-30"),
            ],
        ),
        ({"within_working_days": 7}, (2026, 10), []),
    ],
)
def test_delivery_periods_follow_the_working_day_calendar(
    rule: dict[str, Any], month: tuple[int, int], periods: list[tuple[str, str]]
) -> None:
    found = delivery_periods(
        ReportingRule.model_validate(rule, strict=False), ReportMonth(*month), DEFAULT_CALENDAR
    )
    assert found == [(d(a), d(b)) for a, b in periods]


def test_every_working_day_is_due_and_no_day_off() -> None:
    rule = ReportingRule(every=ReportingPeriod.WORKING_DAY)
    days = delivery_periods(rule, ReportMonth(2026, 2), DEFAULT_CALENDAR)
    # 20 weekdays, 6 of them Spring Festival, 2 Saturdays worked
    assert len(days) == 16
    assert (d("2026-02-14"), d("2026-02-14")) in days
    assert all(start == end for start, end in days)
    assert (d("2026-02-16"), d("2026-02-16")) not in days


# --- the month and the catalog's rules ---------------------------------------------------


@pytest.mark.parametrize("text", ["2026-11", " 2026-11 ", "1999-01", "2026-12"])
def test_a_month_is_written_yyyy_mm(text: str) -> None:
    month = ReportMonth.parse(text)
    assert str(month) == text.strip()
    assert month.next_first_day - month.last_day == dt.timedelta(days=1)


@pytest.mark.parametrize(
    "text", ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-11-01", "", "２０２６-１１"]
)
def test_a_malformed_month_is_refused_with_the_form_to_use(text: str) -> None:
    with pytest.raises(ValueError, match="is not a month: write it as YYYY-MM"):
        ReportMonth.parse(text)


def test_the_shipped_catalog_holds_the_double_publicity_rule() -> None:
    catalog = load_catalog()
    for code in ("admin_license", "admin_penalty"):
        rule = catalog.theme(code).reporting
        assert rule is not None and rule.within_working_days == 7
    assert any(t.reporting and t.reporting.every for t in catalog.themes)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({}, "names neither within_working_days nor every"),
        ({"every": "month"}, "every: month needs by_day, the day of the month from 1 to 28"),
        ({"every": "month", "by_day": 31}, "found 31"),
        ({"every": "week", "by_day": 0}, "the ISO weekday from 1 to 7"),
        ({"every": "working_day", "by_day": 3}, "takes no by_day"),
        ({"by_day": 3, "within_working_days": 7}, "by_day is given without every"),
        ({"every": "fortnight", "by_day": 3}, "every"),
        ({"within_working_days": -1}, "greater than or equal to 0"),
        ({"within_working_days": 7, "late_after": 3}, "late_after"),
    ],
)
def test_a_bad_reporting_rule_refuses_the_catalog_naming_its_place(
    rule: dict[str, Any], message: str
) -> None:
    data = catalog_data({"admin_penalty": rule})
    with pytest.raises(CatalogError) as refused:
        parse_catalog(data, "city catalog")
    assert "themes[2](admin_penalty).reporting" in str(refused.value)
    assert message in str(refused.value)


def test_a_late_row_rule_needs_the_themes_decision_date() -> None:
    data = catalog_data({"customs_case": {"within_working_days": 7}})
    [case] = [t for t in data["themes"] if t["code"] == "customs_case"]
    del case["dates"]
    with pytest.raises(CatalogError, match=r"maps no dates\.decision_date"):
        parse_catalog(data, "city catalog")


# --- the command -----------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, database_url: str) -> Path:
    """A node home on this store, with the test catalog and the known month in it."""
    config = create_home(tmp_path / "hz", "huizhou", database_url=database_url)
    (config.home / "catalog.yaml").write_text(
        yaml.safe_dump(catalog_data(), allow_unicode=True), encoding="utf-8"
    )
    with (config.home / "node.toml").open("a", encoding="utf-8") as f:
        f.write('catalog_path = "catalog.yaml"\n')
    engine = open_database(config.database_url)
    write_known_month(engine)
    engine.dispose()
    return config.home


def cli(*args: str, home: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["departments", "report", *args, "--home", str(home)])
    return result.exit_code, result.output


def test_the_command_writes_csv_for_excel(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "october.csv"
    code, output = cli("--month", "2026-10", "--output", str(target), home=home)
    assert code == 0, output
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # the BOM that makes Excel read UTF-8
    lines = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    by_row = {(r["level"], r["department"], r["theme"]): r for r in lines}
    penalties = by_row[("theme", MARKET, "admin_penalty")]
    assert penalties["department_name"] == "市场监督管理局"
    assert (penalties["batches"], penalties["rows_received"], penalties["accepted"]) == (
        "2",
        "14",
        "12",
    )
    assert (penalties["rejected_required"], penalties["rejected_invalid"]) == ("2", "1")
    assert (penalties["late_rows"], penalties["missed_deliveries"]) == ("4", "")
    light = by_row[("theme", CUSTOMS, "customs_light_status")]
    assert (light["missed_deliveries"], light["missed_due_dates"]) == ("1", "2026-10-10")
    assert by_row[("department", CUSTOMS, "")]["batches"] == "3"
    assert by_row[("total", "", "")]["late_rows"] == "5"
    assert [r["level"] for r in lines] == ["theme"] * 5 + ["department"] * 2 + ["total"]


def test_the_command_prints_and_writes_json_with_stable_keys(home: Path, tmp_path: Path) -> None:
    code, output = cli("--month", "2026-10", "--format", "json", home=home)
    assert code == 0, output
    printed = json.loads(output)
    assert printed["rows"] == EXPECTED_ROWS
    assert printed["total"] == EXPECTED_TOTAL
    assert list(printed) == [
        "month", "first_day", "last_day", "as_of", "catalog_version", "department", "theme",
        "holidays_known", "reject_reasons", "rows", "departments", "total",
    ]  # fmt: skip
    target = tmp_path / "october.json"
    code, output = cli("--month", "2026-10", "--output", str(target), home=home)
    assert code == 0, output
    assert json.loads(target.read_text("utf-8")) == printed


def test_the_command_shows_a_table_with_chinese_names(home: Path) -> None:
    code, output = cli("--month", "2026-10", "--department", CUSTOMS, home=home)
    assert code == 0, output
    assert "海关" in output and "进出口企业绿灯黄灯管理信息" in output
    assert "市场监督管理局" not in output
    assert "no file by 2026-10-10" in output


@pytest.mark.parametrize("month", ["2026-13", "November", "2026-1"])
def test_a_bad_month_exits_2_saying_how_to_write_it(home: Path, month: str) -> None:
    code, output = cli("--month", month, home=home)
    assert code == 2
    assert "write it as YYYY-MM" in output


def test_a_file_of_unknown_format_or_a_table_file_is_refused(home: Path, tmp_path: Path) -> None:
    code, output = cli("--month", "2026-10", "--output", str(tmp_path / "x.txt"), home=home)
    assert code == 2 and "cannot tell the format" in output
    code, output = cli(
        "--month", "2026-10", "--format", "table", "--output", str(tmp_path / "x.csv"), home=home
    )
    assert code == 2 and "a table is for the screen" in output


def test_formula_like_cells_reach_the_spreadsheet_as_text(home: Path, tmp_path: Path) -> None:
    """A department code in the store that no catalog holds, written like a formula."""
    engine = open_database(load_config(home).database_url)
    hostile = '=HYPERLINK("http://x","y")'
    with engine.begin() as conn:
        add_batch(conn, "admin_penalty", hostile, "2026-10-09T09:00", rows_read=1, inserted=1)
    engine.dispose()
    target = tmp_path / "october.csv"
    code, output = cli("--month", "2026-10", "--output", str(target), home=home)
    assert code == 0, output
    lines = list(csv.DictReader(io.StringIO(target.read_text("utf-8-sig"))))
    departments = {r["department"] for r in lines}
    assert "'" + hostile in departments and hostile not in departments


# --- with the importer --------------------------------------------------------------------


def test_an_imported_file_is_counted_with_its_rejects_by_reason(
    engine: Engine, test_catalog: Catalog, tmp_path: Path
) -> None:
    """Two good rows (one decided 60 days ago: late), a row with an impossible date and
    a row without its required case number."""
    today = china_today()
    header = [
        "subject_id", "subject_type", "subject_name", "record_key", "case_number",
        "case_kind", "violation_facts", "penalty_content", "decision_date",
        "deciding_customs",
    ]  # fmt: skip

    def line(key: str, case_number: str, decision: str) -> list[str]:
        return [
            ENTERPRISE, "enterprise", "惠州示例有限公司", key, case_number, "smuggling",
            "走私", "罚款", decision, "惠州海关",
        ]  # fmt: skip

    path = tmp_path / "customs_case.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerow(line("C1", "惠关缉违字〔2026〕1号", today.isoformat()))
        writer.writerow(line("C2", "惠关缉违字〔2026〕2号", (today - dt.timedelta(60)).isoformat()))
        writer.writerow(line("C3", "惠关缉违字〔2026〕3号", "2026-02-30"))
        writer.writerow(line("C4", "", today.isoformat()))
    summary = import_file(
        engine, test_catalog, path, "customs_case", reject_dir=tmp_path / "rejects"
    )
    assert (summary.read, summary.inserted, summary.rejected) == (4, 2, 2)
    month = ReportMonth(today.year, today.month)
    if china_today() != today:  # pragma: no cover - run across midnight
        pytest.skip("the import ran across midnight in China")
    report = departments_report(engine, test_catalog, month, theme="customs_case")
    [found] = report.as_json()["rows"]
    assert found["department"] == CUSTOMS
    assert (found["batches"], found["rows_received"], found["accepted"]) == (1, 4, 2)
    assert (found["inserted"], found["rejected"], found["late_rows"]) == (2, 2, 1)
    assert found["rejected_by_reason"]["invalid"] == 1  # the 30th of February
    assert found["rejected_by_reason"]["required"] == 1  # no case number
