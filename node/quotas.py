"""Quota counters for the memorandum's rules, persisted in the store.

The decision engine is pure: it is told how many queries a requester has already
made under each rule in the rule's current period. This module keeps those
counts in the database, so they hold across restarts and across several node
processes sharing one database. Counting is an atomic upsert (``used = used + 1``),
never a read-modify-write in Python.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence

from sqlalchemy import Engine

from creditexchange.node.ledger.log import SideWrite
from creditexchange.node.store.database import driver_sql

_UPSERT = (
    "INSERT INTO quota_usage (requester, rule_id, period_start, used) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (requester, rule_id, period_start) "
    "DO UPDATE SET used = quota_usage.used + excluded.used"
)


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
            driver_sql(conn.dialect.name, _UPSERT),
            [(requester, rule, _stamp(start), 1) for rule, start in periods.items()],
        )


class QuotaCounter:
    """The quota counts of a serving node: read from the store, counted in memory and in the ledger.

    ``used(requester, rule, period_start)`` is what the engine is told: the
    store's count (read on first use, and again every ``refresh_s`` seconds so
    that other processes sharing the database are seen) plus this process's
    counts not yet committed. ``charge`` counts a query at once in memory, so the
    next decision sees it, and returns the upserts that persist it; the caller
    runs them in the transaction of the call's audit entry, so a query is
    counted durably exactly when it is recorded, with no extra disk flush. When
    that append resolves the caller calls :meth:`settled`. Several processes on
    one database can together overshoot a quota only by the queries in flight
    between two refreshes.
    """

    def __init__(self, engine: Engine, *, refresh_s: float = 10.0) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._stored: dict[tuple[str, str, int], tuple[int, float]] = {}  # -> (used, read at)
        self._uncommitted: dict[tuple[str, str, int], int] = {}

    def used(self, requester: str, rule: str, start: dt.datetime) -> int:
        key = (requester, rule, _stamp(start))
        stored = self._stored.get(key)
        now = time.monotonic()
        if stored is None or now - stored[1] > self.refresh_s:
            stored = (usage(self.engine, requester, {rule: start})[rule], now)
            self._stored[key] = stored
        return stored[0] + self._uncommitted.get(key, 0)

    def charge(
        self, requester: str, periods: Mapping[str, dt.datetime], counts: Mapping[str, int]
    ) -> tuple[list[SideWrite], list[tuple[tuple[str, str, int], int]]]:
        """Count ``counts[rule]`` queries against each rule's period, at once, in memory.

        Returns the writes that persist the counts (for the transaction of the
        call's audit entry) and what was charged (for :meth:`settled`).
        """
        charged = [
            ((requester, rule, _stamp(start)), counts[rule]) for rule, start in periods.items()
        ]
        for key, n in charged:
            self._uncommitted[key] = self._uncommitted.get(key, 0) + n
        return [SideWrite(_UPSERT, (*key, n)) for key, n in charged], charged

    def settled(self, charged: Sequence[tuple[tuple[str, str, int], int]], committed: bool) -> None:
        """The append carrying these counts resolved: they are in the store now, or never."""
        for key, n in charged:
            left = self._uncommitted.get(key, 0) - n
            if left > 0:
                self._uncommitted[key] = left
            else:
                self._uncommitted.pop(key, None)
            if committed and key in self._stored:
                used, read_at = self._stored[key]
                self._stored[key] = (used + n, read_at)
