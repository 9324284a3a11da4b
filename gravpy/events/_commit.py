"""Group commit: writes that arrive while a transaction is in flight share the next one.

Theory of operation. ``submit(rows)`` queues the rows with a future and, if no writer task is
running, starts one. The writer takes everything queued, writes it in one transaction (through the
``write`` callable, which runs in the store's thread), resolves every future of that batch with
the outcome, and loops while more arrived meanwhile. One writer alone gets one transaction per
call; many concurrent writers share transactions, which is what lets a busy gravd store far more
events per second than the per-transaction cost allows.

A batch whose write fails is written again one submission at a time, each in a transaction of
its own: one caller's bad rows (a value the database cannot take) fail that caller alone, and the
others' rows are stored as if they had come alone. (The first attempt was rolled back whole.)

The queue is bounded by ``limit`` rows: a ``submit`` that finds it full waits for the writer to take
the batch (overflow policy: wait; nothing is dropped). The writer task is owned here and awaited by
``close``; a caller cancelled while waiting does not cancel the write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["GroupCommit"]

Row = tuple[Any, ...]
_Batch = list[tuple[list[Row], "asyncio.Future[None]"]]


class GroupCommit:
    """Batches concurrent writes into shared transactions; see the module docstring."""

    def __init__(self, write: Callable[[list[Row]], Awaitable[None]], *, limit: int) -> None:
        self._write = write
        self.limit = limit
        self._queue: _Batch = []
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0
        self.rows = 0

    async def submit(self, rows: list[Row]) -> None:
        """Write ``rows``; returns once the transaction holding them has committed."""
        while self._queued >= self.limit:
            await self._room.wait()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((rows, done))
        self._queued += len(rows)
        if self._queued >= self.limit:
            self._room.clear()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._run(), name="gravpy-events-writer"
            )
        await asyncio.shield(done)

    async def close(self) -> None:
        """Wait for what is queued to be written."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            self._queued = 0
            self._room.set()
            if len(batch) > 1 and await self._commit(batch):
                continue
            for each in batch:  # (alone; or one of them is bad: the others must not fail with it)
                await self._commit([each])

    async def _commit(self, batch: _Batch) -> bool:
        """Write ``batch`` in one transaction; resolve its futures unless it failed and holds
        several submissions (then return False: the caller retries them one by one)."""
        try:
            await self._write([row for rows, _ in batch for row in rows])
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            if not cancelled and isinstance(exc, Exception) and len(batch) > 1:
                return False
            for _, done in batch:
                if done.done():
                    continue
                if cancelled:
                    done.cancel()
                else:
                    done.set_exception(exc)
                    done.exception()  # retrieved: a cancelled caller no longer waits on it
            if cancelled:
                raise
            return True
        self.transactions += 1
        self.rows += sum(len(rows) for rows, _ in batch)
        for _, done in batch:
            if not done.done():
                done.set_result(None)
        return True
