"""Quota counters for the memorandum's rules, persisted in the store.

The decision engine is pure: it is told how many queries a requester has already
made under each rule in the rule's current period. This module keeps those
counts in the database, so they hold across restarts and across several node
processes sharing one database. Counting is an atomic upsert (``used = used + 1``),
never a read-modify-write in Python.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

from sqlalchemy import Engine

from node.store.database import driver_sql
from node.store.group_commit import GroupCommitter


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


class QuotaCounter:
    """The quota counts of a serving node: read once, counted in memory, written in groups.

    ``used(requester, rule, period_start)`` is what the engine is told; it is read
    from the store on first use and then kept: ``confirmed`` (the store's total at
    the last write, other processes' counts included) plus this process's counts
    not yet written. ``charge`` counts one query at once in memory, so the next
    decision sees it, and writes it with the next group commit, whose
    ``RETURNING used`` refreshes ``confirmed``. Several processes sharing one
    database can together overshoot a quota only by the queries in flight between
    two writes.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 1024) -> None:
        self.engine = engine
        self._confirmed: dict[tuple[str, str, int], int] = {}
        self._pending: dict[tuple[str, str, int], int] = {}
        self._committer: GroupCommitter[
            tuple[tuple[str, str, int], int], tuple[int, int] | None
        ] = GroupCommitter(self._write, max_batch=max_batch, name="quota-counter")

    def start(self) -> None:
        self._committer.start()

    async def close(self) -> None:
        await self._committer.close()

    def used(self, requester: str, rule: str, start: dt.datetime) -> int:
        key = (requester, rule, _stamp(start))
        confirmed = self._confirmed.get(key)
        if confirmed is None:
            confirmed = usage(self.engine, requester, {rule: start})[rule]
            self._confirmed[key] = confirmed
        return confirmed + self._pending.get(key, 0)

    async def charge(
        self, requester: str, periods: Mapping[str, dt.datetime], times: int = 1
    ) -> None:
        """Count ``times`` queries against each rule's current period; durable when it returns."""
        keys = [(requester, rule, _stamp(start)) for rule, start in periods.items()]
        for key in keys:
            self._pending[key] = self._pending.get(key, 0) + times
        for key in keys:
            written = await self._committer.submit((key, times))
            if written is not None:  # the first of its key in the batch carries the total
                total, n = written
                left = self._pending[key] - n
                if left:
                    self._pending[key] = left
                else:
                    del self._pending[key]
                self._confirmed[key] = total

    def _write(
        self, items: Sequence[tuple[tuple[str, str, int], int]]
    ) -> list[tuple[int, int] | None]:
        """Runs in a worker thread: touches the database only, never the counters."""
        counts: Counter[tuple[str, str, int]] = Counter()
        for key, n in items:
            counts[key] += n
        with self.engine.begin() as conn:
            sql = driver_sql(
                conn.dialect.name,
                "INSERT INTO quota_usage (requester, rule_id, period_start, used) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (requester, rule_id, period_start) "
                "DO UPDATE SET used = quota_usage.used + excluded.used RETURNING used",
            )
            totals = {
                key: int(conn.exec_driver_sql(sql, (*key, n)).scalar_one())
                for key, n in counts.items()
            }
        results: list[tuple[int, int] | None] = []
        for key, _ in items:
            if key in totals:
                results.append((totals.pop(key), counts[key]))
            else:
                results.append(None)
        return results
