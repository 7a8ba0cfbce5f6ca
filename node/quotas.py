"""Quota counters for the memorandum's rules, persisted in the store.

The decision engine is pure: it is told how many queries a requester has already
made under each rule in the rule's current period. This module keeps those
counts in the database, so they hold across restarts and across several node
processes sharing one database. Counting is an atomic upsert (``used = used + 1``),
never a read-modify-write in Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import Engine

from node.store.database import driver_sql


def _stamp(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def usage(engine: Engine, requester: str, periods: Mapping[str, dt.datetime]) -> dict[str, int]:
    """Queries counted so far: rule id -> count in the period starting at ``periods[rule]``."""
    if not periods:
        return {}
    wanted = {(rule, _stamp(start)) for rule, start in periods.items()}
    where = " OR ".join("(rule_id = ? AND period_start = ?)" for _ in wanted)
    params = tuple(x for pair in sorted(wanted) for x in pair)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            driver_sql(
                conn.dialect.name,
                f"SELECT rule_id, period_start, used FROM quota_usage "
                f"WHERE requester = ? AND ({where})",
            ),
            (requester, *params),
        )
        found = {(rule, start): used for rule, start, used in rows}
    return {rule: int(found.get((rule, _stamp(start)), 0)) for rule, start in periods.items()}


def count(engine: Engine, requester: str, periods: Mapping[str, dt.datetime]) -> None:
    """Count one query against each rule's current period, atomically."""
    if not periods:
        return
    with engine.begin() as conn:
        conn.exec_driver_sql(
            driver_sql(
                conn.dialect.name,
                "INSERT INTO quota_usage (requester, rule_id, period_start, used) "
                "VALUES (?, ?, ?, 1) ON CONFLICT (requester, rule_id, period_start) "
                "DO UPDATE SET used = quota_usage.used + 1",
            ),
            [(requester, rule, _stamp(start)) for rule, start in periods.items()],
        )
