"""The asynchronous appender of the audit ledger: group commit.

``await ledger.append(body)`` returns the entry's :class:`Receipt` once it is
durable. Invariants:

* **Durable before acknowledged.** An append resolves only after the transaction
  holding its entry has committed (:meth:`AuditLog.commit_with_proofs`).
* **Group commit.** Concurrent appends share one transaction and one flush: the
  committer takes whatever has queued up (at most ``max_batch``; when the last
  batch held more than one entry, after waiting ``max_wait`` seconds for more, so
  an idle node never waits), and commits it with the appends' side writes.
* **Several processes, one log.** Processes sharing the database (``audit prune``
  from another process, ``serve --workers``, several pods) append in turn: each
  commit locks the head and goes on top of it (:meth:`AuditLog.commit_entries`).
* **Conditional entries.** An entry appended with ``conditional=True`` (an answer)
  has its claims judged in its batch's transaction (a nonce already spent, a quota
  already filled, by another process); a refused one is left out of the batch and
  its ``append`` raises what the claim said, the others commit without it.
* **An oversized entry joins no batch.** An entry larger than
  :data:`~creditexchange.node.ledger.entries.MAX_ENTRY_BYTES` is refused by
  :meth:`Ledger.append` before it is queued, so the appends it would have been
  committed with are committed as if it had never been offered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from creditexchange.errors import LedgerError
from creditexchange.node.ledger import entries
from creditexchange.node.ledger.log import AuditLog, Pending, Receipt, SideWrite

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_WAIT", "Ledger"]

DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_WAIT = 0.0
"""Seconds the committer waits for more appends; 0 batches what queued during a flush."""


class Ledger:
    """The asynchronous appender: ``await ledger.append(body)`` returns a Receipt once durable.

    Appends go into a list; the committer swaps the list out (at most ``max_batch``
    at a time), commits it in a worker thread and resolves every waiter. Appends
    that arrive during a commit form the next batch, so batches grow with load.
    """

    def __init__(
        self,
        log: AuditLog,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.log = log
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._pending: list[tuple[Pending, asyncio.Future[Receipt]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes of recent batches, for metrics (bounded)
        self.on_batch: Callable[[int], object] | None = None  # told each batch's size
        self._busy = False  # the last batch held more than one entry: waiting pays

    async def __aenter__(self) -> Ledger:
        await asyncio.to_thread(self.log.frontier)
        self._idle.set()
        self._task = asyncio.create_task(self._commit_loop(), name="ledger-committer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        while self._pending or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()
            await asyncio.sleep(0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def append(
        self, body: bytes, side_writes: Sequence[SideWrite] = (), *, conditional: bool = False
    ) -> Receipt:
        """Append ``body``, running ``side_writes`` in its transaction; its receipt once durable.

        With ``conditional``, the claims among ``side_writes`` are judged first and a
        refused claim's exception is raised instead (the entry is not written). Raises
        :class:`LedgerError` at once, queueing nothing, when ``body`` is larger than
        :data:`~creditexchange.node.ledger.entries.MAX_ENTRY_BYTES`.
        """
        return await self.submit(body, side_writes, conditional=conditional)

    def submit(
        self, body: bytes, side_writes: Sequence[SideWrite] = (), *, conditional: bool = False
    ) -> asyncio.Future[Receipt]:
        """Queue ``body`` as :meth:`append` does; the future of its receipt. Awaiting it
        through :func:`asyncio.shield` lets a caller that is cancelled still learn what
        became of the entry (a conditional one may yet be refused)."""
        if self._task is None:
            raise LedgerError("the ledger is not running; use 'async with Ledger(...)'")
        entries.check_size(body)  # before it is queued: a refusal never touches a batch
        done: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._pending.append((Pending(body, side_writes, conditional), done))
        self._wake.set()
        return done

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.max_wait and self._busy and len(self._pending) < self.max_batch:
                await asyncio.sleep(self.max_wait)  # under load: let the batch fill a little
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            if not self._pending:
                self._wake.clear()
            if not batch:
                continue
            self._idle.clear()
            try:
                done_batch = await asyncio.to_thread(
                    self.log.commit_entries, [item for item, _ in batch]
                )
            except Exception as exc:  # every waiter hears of it; nothing was acknowledged
                for _, done in batch:
                    if not done.done():
                        done.set_exception(LedgerError(f"the audit entry was not recorded: {exc}"))
            else:
                index, note, refused = done_batch.first, done_batch.note, done_batch.refused
                written = zip(done_batch.leaves, done_batch.proofs, strict=True)
                for i, (_, done) in enumerate(batch):
                    if i in refused:
                        if not done.done():
                            done.set_exception(refused[i])
                        continue
                    leaf, proof = next(written)
                    if not done.done():
                        done.set_result(Receipt(index, leaf, note, tuple(proof)))
                    index += 1
                self.batches.append(len(batch))
                del self.batches[:-1000]
                self._busy = len(batch) > 1
                if self.on_batch is not None:
                    self.on_batch(len(batch))
            finally:
                self._idle.set()
