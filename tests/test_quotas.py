"""Quota counters persist in the store, per requester, rule and period."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import Engine

from creditexchange.node.exchange.quotas import count, usage

DAY = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
NEXT_DAY = DAY + dt.timedelta(days=1)


def test_counts_accumulate_per_requester_rule_and_period(engine: Engine) -> None:
    for _ in range(3):
        count(engine, "shenzhen", {"core-bank": DAY, "core-lists": DAY})
    count(engine, "heyuan", {"core-bank": DAY})
    count(engine, "shenzhen", {"core-bank": NEXT_DAY})
    assert usage(engine, "shenzhen", {"core-bank": DAY, "core-lists": DAY}) == {
        "core-bank": 3,
        "core-lists": 3,
    }
    assert usage(engine, "heyuan", {"core-bank": DAY}) == {"core-bank": 1}
    assert usage(engine, "shenzhen", {"core-bank": NEXT_DAY, "other": DAY}) == {
        "core-bank": 1,
        "other": 0,
    }


def test_concurrent_counting_loses_no_query(engine: Engine) -> None:
    def worker() -> None:
        for _ in range(25):
            count(engine, "dongguan", {"core-bank": DAY})

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert usage(engine, "dongguan", {"core-bank": DAY}) == {"core-bank": 100}
