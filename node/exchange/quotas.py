"""Quota counters for the memorandum's rules, persisted in the store.

The decision engine is pure: it is told how many queries a requester has already
made under each rule in the rule's current period. This module keeps those
counts in the database, so they hold across restarts and across several node
processes sharing one database. Counting is an atomic upsert (``used = used + n``),
never a read-modify-write in Python; a serving node makes it in the transaction
of the call's audit entry (:class:`QuotaCharge`, a ledger side write).

The database has the last word: a charge is a ledger
:class:`~creditexchange.node.ledger.log.Claim`, judged against the stored count
under the ledger's head lock before the answer's entry is written. Every process
sharing the database (``serve --workers``, several pods) judges in turn and sees
the others' committed counts, so together they never exceed a quota; a call that
one process's cached count let through but the store's does not is refused
(``RESOURCE_EXHAUSTED``) before its answer is sent.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Dialect, Engine, and_, bindparam, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from creditexchange.errors import Refused
from creditexchange.node.database.driver import Prepared, select_keyed
from creditexchange.node.database.models import QUOTA_USAGE
from creditexchange.node.ledger import SideWrite
from creditexchange.policy.document import Quota
from creditexchange.policy.engine import quota_period_start

__all__ = [
    "QuotaCharge",
    "QuotaCounter",
    "count",
    "exceeded",
    "usage",
    "usage_this_period",
]

Key = tuple[str, str, int]  # requester, rule id, period start (unix seconds, UTC)
_KEY = ("requester", "rule_id", "period_start")  # its columns


def _add(dialect: str) -> ClauseElement:
    """Add ``used`` to a counter, creating it at that value."""
    values: dict[str, Any] = {
        "requester": bindparam("requester"),
        "rule_id": bindparam("rule_id"),
        "period_start": bindparam("period_start"),
        "used": bindparam("used"),
    }
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(QUOTA_USAGE).values(values)
    upsert: ClauseElement = insert.on_conflict_do_update(
        index_elements=["requester", "rule_id", "period_start"],
        set_={"used": QUOTA_USAGE.c.used + insert.excluded.used},
    )
    return upsert


_ADD = Prepared(_add)


def _stamp(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def exceeded(requester: str, rule: str, limit: int, period: str, asked: int, used: int) -> Refused:
    """The refusal of a call of ``asked`` queries under a quota with ``used`` already."""
    left = max(0, limit - used)
    return Refused(
        "RESOURCE_EXHAUSTED",
        f"quota of {limit} per {period} of rule {rule} exceeded for {requester}: the call "
        f"asks about {asked} subjects under it and {left} are left in this period; split the "
        "batch or wait for the next period",
        "policy",
    )


@dataclass(frozen=True)
class QuotaCharge:
    """``used`` more queries by a requester under a rule in one period, written in the
    transaction of the call's audit entry.

    With a ``limit`` it is a claim: an answer whose charge would take the stored count
    past the limit is refused (:meth:`judge`); the counter that made it learns the
    stored count.
    """

    key: Key
    used: int
    limit: int | None = None
    period: str = ""
    counter: QuotaCounter | None = field(default=None, compare=False, repr=False)

    def write(self, cursor: Any, dialect: Dialect) -> None:
        requester, rule, start = self.key
        _ADD.execute(
            cursor,
            dialect,
            {"requester": requester, "rule_id": rule, "period_start": start, "used": self.used},
        )

    @staticmethod
    def write_all(cursor: Any, dialect: Dialect, charges: Sequence[QuotaCharge]) -> None:
        """Every count a batch charges, one upsert per counter (its charges summed)."""
        totals: dict[Key, int] = {}
        for charge in charges:
            totals[charge.key] = totals.get(charge.key, 0) + charge.used
        _ADD.executemany(
            cursor,
            dialect,
            [
                {"requester": r, "rule_id": u, "period_start": p, "used": n}
                for (r, u, p), n in totals.items()
            ],
        )

    def judge(
        self, cursor: Any, dialect: Dialect, claims: Sequence[Sequence[QuotaCharge]]
    ) -> dict[int, Exception]:
        """Refuse the answers that would take a stored count past its limit, counting
        the answers accepted before them in the batch."""
        keys = sorted({c.key for entry in claims for c in entry})
        rows = select_keyed(cursor, dialect, QUOTA_USAGE, (*_KEY, "used"), _KEY, keys)
        stored = {(str(r), str(u), int(p)): int(n) for r, u, p, n in rows}
        running = dict(stored)
        refused: dict[int, Exception] = {}
        for k, entry in enumerate(claims):
            over = [
                (c, c.limit, running.get(c.key, 0))
                for c in entry
                if c.limit is not None and running.get(c.key, 0) + c.used > c.limit
            ]
            if over:
                charge, limit, used = over[0]
                requester, rule, _ = charge.key
                refused[k] = exceeded(requester, rule, limit, charge.period, charge.used, used)
                continue
            for c in entry:
                running[c.key] = running.get(c.key, 0) + c.used
        for entry in claims:
            for c in entry:
                if c.counter is not None:
                    c.counter.observed(c.key, stored.get(c.key, 0))
        return refused


def usage(engine: Engine, requester: str, periods: Mapping[str, dt.datetime]) -> dict[str, int]:
    """Queries counted so far: rule id -> count in the period starting at ``periods[rule]``."""
    if not periods:
        return {}
    q = QUOTA_USAGE.c
    wanted = sorted({(rule, _stamp(start)) for rule, start in periods.items()})
    with engine.connect() as conn:
        rows = conn.execute(
            select(q.rule_id, q.period_start, q.used).where(
                q.requester == requester,
                or_(*(and_(q.rule_id == rule, q.period_start == start) for rule, start in wanted)),
            )
        )
        found = {(rule, start): used for rule, start, used in rows}
    return {rule: int(found.get((rule, _stamp(start)), 0)) for rule, start in periods.items()}


def usage_this_period(
    engine: Engine, requester: str, quotas: Mapping[str, Quota], now: dt.datetime
) -> dict[str, int]:
    """The requester's counted queries under every rule with a quota, in its current period."""
    return usage(
        engine,
        requester,
        {rule: quota_period_start(quota.period, now) for rule, quota in quotas.items()},
    )


def count(engine: Engine, requester: str, periods: Mapping[str, dt.datetime]) -> None:
    """Count one query against each rule's current period, atomically."""
    if not periods:
        return
    with engine.begin() as conn:
        cursor = conn.connection.cursor()
        for rule, start in periods.items():
            QuotaCharge((requester, rule, _stamp(start)), 1).write(cursor, conn.dialect)


class QuotaCounter:
    """The quota counts of a serving node: read from the store, counted in memory and in the ledger.

    ``used(requester, rule, period_start)`` is what the engine is told: the
    store's count (read on first use, and again every ``refresh_s`` seconds so
    that other processes sharing the database are seen) plus this process's
    counts not yet committed. ``charge`` counts a query at once in memory, so the
    next decision sees it, and returns the side writes that persist it; the caller
    makes them in the transaction of the call's audit entry, so a query is
    counted durably exactly when it is recorded, with no extra disk flush. When
    that append resolves the caller calls :meth:`settled`. Several processes on
    one database can together overshoot a quota only by the queries in flight
    between two refreshes.
    """

    def __init__(self, engine: Engine, *, refresh_s: float = 10.0) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._stored: dict[Key, tuple[int, float]] = {}  # -> (used, read at)
        self._uncommitted: dict[Key, int] = {}

    def used(self, requester: str, rule: str, start: dt.datetime) -> int:
        key = (requester, rule, _stamp(start))
        stored = self._stored.get(key)
        now = time.monotonic()
        if stored is None or now - stored[1] > self.refresh_s:
            stored = (usage(self.engine, requester, {rule: start})[rule], now)
            self._stored[key] = stored
        return stored[0] + self._uncommitted.get(key, 0)

    def charge(
        self,
        requester: str,
        periods: Mapping[str, dt.datetime],
        counts: Mapping[str, int],
        quotas: Mapping[str, Quota] | None = None,
    ) -> tuple[list[SideWrite], list[QuotaCharge]]:
        """Count ``counts[rule]`` queries against each rule's period, at once, in memory.

        Returns the side writes that persist the counts (for the transaction of the
        call's audit entry) and the charges (for :meth:`settled`). With ``quotas`` (the
        rules' quotas) the charges are claims the store judges against their limits.
        """
        charged = [
            QuotaCharge(
                (requester, rule, _stamp(start)),
                counts[rule],
                quotas[rule].limit if quotas else None,
                quotas[rule].period if quotas else "",
                self,
            )
            for rule, start in periods.items()
        ]
        for charge in charged:
            self._uncommitted[charge.key] = self._uncommitted.get(charge.key, 0) + charge.used
        return list(charged), charged

    def observed(self, key: Key, stored: int) -> None:
        """The store held ``stored`` for ``key`` when a batch was judged: the count this
        process reads next, other processes' queries included."""
        self._stored[key] = (stored, time.monotonic())

    def settled(self, charged: Sequence[QuotaCharge], committed: bool) -> None:
        """The append carrying these counts resolved: they are in the store now, or never."""
        for charge in charged:
            key, n = charge.key, charge.used
            left = self._uncommitted.get(key, 0) - n
            if left > 0:
                self._uncommitted[key] = left
            else:
                self._uncommitted.pop(key, None)
            if committed and key in self._stored:
                used, read_at = self._stored[key]
                self._stored[key] = (used + n, read_at)
