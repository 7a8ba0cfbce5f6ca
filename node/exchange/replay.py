"""Replay protection: a signed request is answered at most once.

Every request carries a random nonce and its creation time. The provider refuses
a request whose time is outside its window (``±window`` seconds from its clock)
and one whose ``(requester, nonce)`` it has seen. Seen nonces are kept in the
store (``request_nonces``) so that a replay is refused after a restart and by any
other node process sharing the database: a nonce counts as fresh only when this
process's insert of it succeeded (``ON CONFLICT DO NOTHING RETURNING``). Inserts
are group-committed, and a memory of recent nonces refuses a replay within one
process before it reaches the database. Nonces older than the window can never
pass the time check again, so they are deleted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Engine

from node.store.database import driver_sql
from node.store.group_commit import GroupCommitter

MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64


class ReplayGuard:
    def __init__(self, engine: Engine, window_s: float, *, max_batch: int = 1024) -> None:
        self.engine = engine
        self.window_us = int(window_s * 1_000_000)
        self._recent: dict[tuple[str, bytes], int] = {}  # -> created_us
        self._next_sweep = 0.0
        self._committer: GroupCommitter[tuple[str, bytes, int], bool] = GroupCommitter(
            self._insert, max_batch=max_batch, name="replay-guard"
        )

    def start(self) -> None:
        self._committer.start()

    async def close(self) -> None:
        await self._committer.close()

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

    async def claim(self, requester: str, nonce: bytes, created_us: int) -> bool:
        """True if this nonce is fresh (and now spent), False if it was seen before."""
        key = (requester, nonce)
        if key in self._recent:
            return False
        self._recent[key] = created_us
        self._sweep()
        return await self._committer.submit((requester, nonce, created_us))

    def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 10
        horizon = time.time_ns() // 1000 - 2 * self.window_us
        for key in [k for k, created in self._recent.items() if created < horizon]:
            del self._recent[key]

    def _insert(self, items: Sequence[tuple[str, bytes, int]]) -> list[bool]:
        rows = list(dict.fromkeys(items))  # the same key twice in one batch: the first wins
        values = ", ".join("(?, ?, ?)" for _ in rows)
        params = tuple(x for row in rows for x in row)
        with self.engine.begin() as conn:
            inserted = {
                (str(requester), bytes(nonce))
                for requester, nonce in conn.exec_driver_sql(
                    driver_sql(
                        conn.dialect.name,
                        f"INSERT INTO request_nonces (requester, nonce, created_us) "
                        f"VALUES {values} ON CONFLICT DO NOTHING RETURNING requester, nonce",
                    ),
                    params,
                )
            }
            horizon = time.time_ns() // 1000 - 2 * self.window_us
            conn.exec_driver_sql(
                driver_sql(conn.dialect.name, "DELETE FROM request_nonces WHERE created_us < ?"),
                (horizon,),
            )
        fresh: list[bool] = []
        for requester, nonce, _ in items:
            key = (requester, nonce)
            fresh.append(key in inserted)
            inserted.discard(key)  # a duplicate within the batch is a replay of the first
        return fresh
