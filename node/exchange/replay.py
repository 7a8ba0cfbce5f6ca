"""Replay protection: a signed request is answered at most once.

Every request carries a random nonce and its creation time. The provider refuses
a request whose time is outside its window (``±window`` seconds from its clock)
and one whose ``(requester, nonce)`` it has seen.

A nonce is spent the moment a call claims it (in memory, before the policy
decides), and it is persisted (``request_nonces``) in the very transaction that
appends the call's audit entry (a :class:`SpentNonce`, a ledger side write), so
that no extra disk flush is paid for it and the nonce is durable exactly when the
answer or refusal is. At start the guard loads the nonces still inside the
window, so a replay is refused after a restart too. Nonces older than the window
can never pass the time check again; they are forgotten in memory and deleted
from the store (:class:`ForgetNonces`, with the next spent nonce).

Several node processes sharing one database each load the others' nonces only
at start: a replay sent to two processes within the same window is refused by
neither. A city that runs several processes routes each requester to one
process (or runs one) — see the README's scale notes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Engine, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from creditexchange.clock import now_us
from creditexchange.node.database.driver import Prepared
from creditexchange.node.database.models import NONCES
from creditexchange.node.ledger import SideWrite

__all__ = ["MAX_NONCE_BYTES", "MIN_NONCE_BYTES", "ForgetNonces", "ReplayGuard", "SpentNonce"]

MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
_SWEEP_EVERY_S = 10.0


def _insert_once(dialect: str) -> ClauseElement:
    values: dict[str, Any] = {
        "requester": bindparam("requester"),
        "nonce": bindparam("nonce"),
        "created_us": bindparam("created_us"),
    }
    if dialect == "postgresql":
        return postgresql.insert(NONCES).values(values).on_conflict_do_nothing()
    return sqlite.insert(NONCES).values(values).on_conflict_do_nothing()


_SPEND = Prepared(_insert_once)
_FORGET = Prepared(delete(NONCES).where(NONCES.c.created_us < bindparam("horizon")))


@dataclass(frozen=True)
class SpentNonce:
    """A request's nonce, written in the transaction of the call's audit entry."""

    requester: str
    nonce: bytes
    created_us: int

    def write(self, cursor: Any, dialect: Dialect) -> None:
        _SPEND.execute(
            cursor,
            dialect,
            {"requester": self.requester, "nonce": self.nonce, "created_us": self.created_us},
        )


@dataclass(frozen=True)
class ForgetNonces:
    """Delete the nonces created before ``horizon_us``: they can never pass the time check."""

    horizon_us: int

    def write(self, cursor: Any, dialect: Dialect) -> None:
        _FORGET.execute(cursor, dialect, {"horizon": self.horizon_us})


class ReplayGuard:
    def __init__(self, engine: Engine, window_s: float) -> None:
        self.engine = engine
        self.window_us = int(window_s * 1_000_000)
        self._seen: dict[tuple[str, bytes], int] = {}  # -> created_us
        self._next_sweep = 0.0

    def load(self) -> int:
        """Remember the nonces the store holds from inside the window; how many."""
        horizon = now_us() - 2 * self.window_us
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(NONCES.c.requester, NONCES.c.nonce, NONCES.c.created_us).where(
                    NONCES.c.created_us >= horizon
                )
            ).all()
        for requester, nonce, created in rows:
            self._seen[(str(requester), bytes(nonce))] = int(created)
        return len(rows)

    def time_problem(self, created_us: int, now_us: int) -> str | None:
        """Why a request created at ``created_us`` is outside the window, or None."""
        skew = created_us - now_us
        if abs(skew) <= self.window_us:
            return None
        direction = "in the future" if skew > 0 else "old"
        return (
            f"the request was created {abs(skew) / 1e6:.0f} s {direction}; this node accepts "
            f"±{self.window_us / 1e6:.0f} s: check the requester's clock (NTP) and send a new "
            "request"
        )

    def claim(self, requester: str, nonce: bytes, created_us: int) -> list[SideWrite] | None:
        """Spend the nonce: the writes that persist it, or None if it was seen before.

        The caller passes the writes to the ledger append of the call's entry.
        """
        key = (requester, nonce)
        if key in self._seen:
            return None
        self._seen[key] = created_us
        writes: list[SideWrite] = [SpentNonce(requester, nonce, created_us)]
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY_S
            horizon = now_us() - 2 * self.window_us
            for old in [k for k, created in self._seen.items() if created < horizon]:
                del self._seen[old]
            writes.append(ForgetNonces(horizon))
        return writes
