"""Which of the processes serving one node runs its background duties.

A node may be several processes sharing one database (``serve --workers N``, or
several pods on one PostgreSQL). Every process answers calls; only one of them
witnesses the peers' logs, follows their change feeds and publishes this node's,
so that those rounds are not made twice over.

* **PostgreSQL:** the process holding a session advisory lock, keyed by the
  member and the database, leads. The others try again every few seconds, so when
  the leader stops (its connection closes and PostgreSQL releases the lock) another
  process takes over within that interval.
* **SQLite:** the database is on one machine, so ``serve --workers`` decides: its
  first worker leads (``lead=True``), the others never do; a single ``serve`` leads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from sqlalchemy import Engine, text

__all__ = ["Leadership"]

log = logging.getLogger("node.leadership")

_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")


def _lock_key(member_id: str, url: str) -> int:
    """A signed 64-bit key for the member's node on this database."""
    digest = hashlib.sha256(f"credit-node duties\0{member_id}\0{url}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """``await leadership.acquire()`` returns once this process leads; :meth:`release`
    gives it up (and closes the connection that held it)."""

    def __init__(
        self, engine: Engine, member_id: str, *, lead: bool = True, retry_s: float = 5.0
    ) -> None:
        self.engine = engine
        self.lead = lead
        self.retry_s = retry_s
        self.leading = False
        self._key = _lock_key(member_id, engine.url.render_as_string(hide_password=True))
        self._connection: Any = None

    @property
    def shared(self) -> bool:
        """Several processes decide between themselves (PostgreSQL), rather than the
        process's own ``lead``."""
        return self.engine.dialect.name == "postgresql"

    async def acquire(self) -> None:
        """Wait until this process leads (forever, for a SQLite worker that never does)."""
        if not self.shared:
            if not self.lead:
                await asyncio.Event().wait()
            self.leading = True
            return
        while not await asyncio.to_thread(self._try):
            await asyncio.sleep(self.retry_s)
        self.leading = True
        log.info("leading the node's background duties")

    def _try(self) -> bool:
        if self._connection is None:
            self._connection = self.engine.connect()
        got = bool(self._connection.execute(_TRY_LOCK, {"key": self._key}).scalar())
        self._connection.commit()  # the lock is the session's, not the transaction's
        return got

    def release(self) -> None:
        connection, self._connection = self._connection, None
        self.leading = False
        if connection is None:
            return
        try:
            connection.execute(_UNLOCK, {"key": self._key})
            connection.commit()
        except Exception:  # closing the session releases it anyway
            log.debug("advisory unlock failed", exc_info=True)
        finally:
            connection.close()
