"""Replay protection: a signed request is answered at most once.

Every request carries a random nonce and its creation time. The provider refuses
a request whose time is outside its window (``±window`` seconds from its clock)
and one whose ``(requester, nonce)`` was spent before.

Two places decide, and the database has the last word:

* **In memory, at once.** A nonce is spent in this process the moment a call
  claims it (before the policy decides), so a replay sent to the same process is
  refused without touching the store. At start the guard loads the nonces still
  inside the window, so a replay is refused after a restart too.
* **In the database, with the answer.** The nonce is written (``request_nonces``)
  in the very transaction that appends the call's audit entry (a
  :class:`SpentNonce`, a ledger :class:`~creditexchange.node.ledger.log.Claim`),
  so no extra disk flush is paid for it and it is durable exactly when the answer
  is. For an answer it is judged first, under the ledger's head lock: a nonce that
  another process sharing the database (``serve --workers``, another pod) already
  spent refuses the answer, which is then never sent; the call is refused as a
  replay instead. So no nonce is answered twice, however many processes serve.

Nonces older than the window can never pass the time check again; they are
forgotten in memory and deleted from the store (:class:`ForgetNonces`, with the
next spent nonce).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Engine, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from creditexchange.clock import now_us
from creditexchange.errors import Refused
from creditexchange.node.database.driver import Prepared, select_keyed
from creditexchange.node.database.models import NONCES
from creditexchange.node.ledger import SideWrite

__all__ = [
    "MAX_NONCE_BYTES",
    "MIN_NONCE_BYTES",
    "ForgetNonces",
    "ReplayGuard",
    "SpentNonce",
    "replayed",
]

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


def replayed() -> Refused:
    """The refusal of a request whose nonce was spent before."""
    return Refused(
        "UNAUTHENTICATED",
        "this nonce was used before: the request is a replay; a new request needs a new nonce",
        "replay",
    )


_KEY = ("requester", "nonce")  # the primary key of a spent nonce
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

    @staticmethod
    def write_all(cursor: Any, dialect: Dialect, spent: Sequence[SpentNonce]) -> None:
        """Every nonce a batch spends, in one statement."""
        _SPEND.executemany(
            cursor,
            dialect,
            [
                {"requester": s.requester, "nonce": s.nonce, "created_us": s.created_us}
                for s in spent
            ],
        )

    def judge(
        self, cursor: Any, dialect: Dialect, claims: Sequence[Sequence[SpentNonce]]
    ) -> dict[int, Exception]:
        """Refuse the answers whose nonce the store holds already (spent by another
        process) or an earlier answer of the same batch spends."""
        pairs = [(c.requester, c.nonce) for entry in claims for c in entry]
        rows = select_keyed(cursor, dialect, NONCES, _KEY, _KEY, pairs)
        spent = {(str(r), bytes(n)) for r, n in rows}
        refused: dict[int, Exception] = {}
        for k, entry in enumerate(claims):
            mine = [(c.requester, c.nonce) for c in entry]
            if any(pair in spent for pair in mine):
                refused[k] = replayed()
            else:
                spent.update(mine)
        return refused


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
