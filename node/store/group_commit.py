"""Group commit: many small writes from concurrent requests, one transaction and one flush.

A :class:`GroupCommitter` takes items from coroutines (``await submit(item)``),
hands whatever has queued to ``flush(items) -> results`` in a worker thread (one
database transaction), and resolves every waiter with its own result, or with the
flush's exception. Items that arrive during a flush form the next batch, so batches
grow with load and an idle node pays no wait. The replay guard and the quota
counters write through one each, so that neither costs a disk flush per query.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    def __init__(
        self, flush: Callable[[Sequence[T]], Sequence[R]], *, max_batch: int = 1024, name: str
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self.max_batch = max_batch
        self.name = name
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def close(self) -> None:
        """Flush what is queued, then stop."""
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

    async def submit(self, item: T) -> R:
        if self._task is None:
            raise RuntimeError(f"{self.name} is not running")
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        self._wake.set()
        return await done

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            if not self._pending:
                self._wake.clear()
            if not batch:
                continue
            self._idle.clear()
            try:
                results = await asyncio.to_thread(self._flush, [item for item, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
            finally:
                self._idle.set()
