"""The outbox of ``SQLiteMessenger.publish``: events queued in order, committed in batches.

Theory of operation. A thread hop per event would cap ``publish`` at a few thousand a second on a
busy machine, so ``publish`` only appends to this bounded outbox (what nats-py does with its
client buffer) and one writer task commits what has gathered, up to ``batch`` events in one
transaction and one hop. Events leave in the order they were published. A failed write keeps the
batch and retries it with capped backoff, so nothing queued is dropped while the process lives.

Overflow policy: *wait*. A ``put`` into a full outbox waits for room (backpressure on the
publisher, never a drop); if no room comes within ``stall_timeout`` seconds (the database stays
unwritable) it raises ``PublishFailed`` naming the last error. ``flush()`` waits until everything
put so far is committed; ``close`` of the messenger flushes first.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable

from gravpy._log import get_logger
from gravpy.errors import PublishFailed

__all__ = ["Outbox"]

_log = get_logger("gravpy.messenger.sqlite")
Event = tuple[str, bytes]


class Outbox:
    """See the module docstring. ``write`` commits a batch (raising on failure)."""

    def __init__(
        self,
        write: Callable[[list[Event]], Awaitable[None]],
        *,
        limit: int = 10_000,
        batch: int = 1_000,
        stall_timeout: float = 10.0,
    ) -> None:
        self._write = write
        self._queue: deque[Event] = deque()
        self._limit = limit
        self._batch = batch
        self._stall_timeout = stall_timeout
        self._queued = 0  # events put, ever
        self._committed = 0  # events committed, ever
        self._changed = asyncio.Condition()
        self._work = asyncio.Event()
        self.last_error: BaseException | None = None
        self.retries = 0

    def __len__(self) -> int:
        return len(self._queue)

    async def put(self, subject: str, data: bytes) -> None:
        """Queue an event; waits while the outbox is full (see the module docstring)."""
        if len(self._queue) >= self._limit:
            await self._wait_room()
        self._queue.append((subject, data))
        self._queued += 1
        self._work.set()

    async def _wait_room(self) -> None:
        try:
            async with asyncio.timeout(self._stall_timeout), self._changed:
                await self._changed.wait_for(lambda: len(self._queue) < self._limit)
        except TimeoutError:
            raise PublishFailed(
                f"the SQLite outbox is full ({self._limit} events) and the database took none "
                f"for {self._stall_timeout} s; last error: {self.last_error!r}"
            ) from None

    async def flush(self) -> None:
        """Wait until every event put so far is committed."""
        target = self._queued
        async with self._changed:
            await self._changed.wait_for(lambda: self._committed >= target)

    async def run(self, on_written: Callable[[], None]) -> None:
        """The writer task: commit batches in order, forever (cancel it to stop)."""
        failures = 0
        while True:
            await self._work.wait()
            batch = list(itertools.islice(self._queue, self._batch))
            if not batch:
                self._work.clear()
                continue
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error, self.retries = exc, self.retries + 1
                _log.warning("sqlite_write_retry", events=len(batch), error=repr(exc))
                await asyncio.sleep(min(1.0, 0.01 * 2 ** min(failures, 7)))  # capped backoff
                failures += 1
                continue
            failures = 0
            for _ in batch:
                self._queue.popleft()
            async with self._changed:
                self._committed += len(batch)
                self._changed.notify_all()
            on_written()
