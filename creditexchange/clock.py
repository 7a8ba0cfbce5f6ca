"""Time as the federation counts it.

Credit dates are China Standard Time dates: a publicity period ends, a rule comes
into force and a quota day resets at midnight in China, whatever the zone of the
machine a node runs on. Timestamps on the wire and in the ledger are UTC
microseconds since the epoch.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Final

__all__ = ["CST", "china_today", "now_us", "utc_now"]

CST: Final = dt.timezone(dt.timedelta(hours=8), "CST")
"""China Standard Time (UTC+8): the zone of credit dates, rule dates and quota periods."""


def now_us() -> int:
    """Now, in microseconds since the epoch (UTC): the time of requests and entries."""
    return time.time_ns() // 1000


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def china_today() -> dt.date:
    """Today's date in China: the day publicity periods are counted against."""
    return dt.datetime.now(CST).date()
