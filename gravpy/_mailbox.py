"""The small mailbox every wait reads from, and the wait loop over it.

A ``Mailbox`` holds the messages offered to one waiter, in order, and an error that ends the wait
once those are taken. ``wait_in`` reads a mailbox until a wait function accepts a message or the
timeout passes (``WaitTimeout``). Receipts (replies) and pods (``wait_until`` on incoming
messages) both wait this way.

Every request's reply wait has a timeout, and an asyncio timer costs about 2 µs to schedule and
cancel (a heap of handles compared in Python), as much as a tenth of a request's CPU. So the
waits of ``SHARED_FROM`` seconds or more share timers: one per slot of ``SLOT`` seconds, ending
every wait whose deadline falls in it. Such a wait ends at most ``SLOT`` s after its timeout (at
most 1.6% late); a shorter one keeps a timer of its own, exact as asyncio's.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from gravpy.errors import MsgNotWanted, UsageError, WaitTimeout
from gravpy.message import Message

__all__ = ["SHARED_FROM", "SLOT", "Mailbox", "WaitFunc", "check_timeout", "wait_in"]

SHARED_FROM: Final = 1.0  # seconds: waits at least this long share their timer
SLOT: Final = 1 / 64  # seconds: a shared timer ends the waits whose deadlines fall in its slot

WaitFunc = Callable[[Message], Any]
"""A wait function: return (or return an awaitable of) a value to accept the message; raise
``MsgNotWanted`` to keep waiting; any other exception ends the wait and propagates."""


class Mailbox:
    """Messages offered to one waiter, in order, plus an error that ends the wait."""

    __slots__ = ("_error", "_expired", "_items", "_waker")

    def __init__(self) -> None:
        self._items: deque[Message] = deque()
        self._waker: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._expired = False  # the timer of ``first`` went off

    def offer(self, msg: Message) -> None:
        self._items.append(msg)
        self._wake()

    def put_back(self, msgs: list[Message]) -> None:
        """Offer ``msgs`` ahead of what the mailbox holds (they came first)."""
        self._items.extendleft(reversed(msgs))
        self._wake()

    @property
    def holding(self) -> bool:
        """True if messages were offered and not taken."""
        return bool(self._items)

    def take_all(self) -> list[Message]:
        """Empty the mailbox: what was offered and not taken, in order."""
        items = list(self._items)
        self._items.clear()
        return items

    def fail(self, error: BaseException) -> None:
        """End the wait with ``error`` once the messages already offered are taken."""
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None and not waker.done():
            waker.set_result(None)

    async def first(self, timeout: float | None, what: str) -> Message:
        """The next message, or ``WaitTimeout`` after ``timeout`` seconds: ``wait_in`` without a
        wait function, on one timer handle rather than an ``asyncio.timeout`` (every request's
        reply wait comes here)."""
        items = self._items
        if items:
            return items.popleft()
        loop = asyncio.get_running_loop()
        self._expired = False  # (an earlier call's timer may have gone off)
        expiry: asyncio.TimerHandle | None = None
        shared: _SharedTimers | None = None
        slot = 0
        if timeout is None or timeout == math.inf:
            pass
        elif timeout < SHARED_FROM:
            expiry = loop.call_later(timeout, self._expire)
        else:
            shared = _shared_timers(loop)
            slot = shared.start(loop, self, timeout)
        try:
            while not items:
                if self._error is not None:
                    raise self._error
                if self._expired:
                    raise WaitTimeout(f"no {what} within {timeout} s")
                self._waker = loop.create_future()
                try:
                    await self._waker
                finally:
                    self._waker = None
        finally:
            if expiry is not None:
                expiry.cancel()
            elif shared is not None:
                shared.stop(self, slot)
        return items.popleft()

    def _expire(self) -> None:
        self._expired = True
        self._wake()

    async def get(self) -> Message:
        while not self._items:
            if self._error is not None:
                raise self._error
            self._waker = asyncio.get_running_loop().create_future()
            try:
                await self._waker
            finally:
                self._waker = None
        return self._items.popleft()


class _SharedTimers:
    """The timers of one event loop's long waits: one loop timer per ``SLOT`` with a deadline in
    it, ending every wait still in that slot when it goes off. It keeps only a weak reference to
    its loop (the loop's handles keep it)."""

    __slots__ = ("_slots", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)
        self._slots: dict[int, set[Mailbox]] = {}  # slot number (its end / SLOT) -> its waits

    def start(self, loop: asyncio.AbstractEventLoop, mailbox: Mailbox, timeout: float) -> int:
        """Expire ``mailbox`` in the first slot ending at or after ``timeout`` s from now."""
        slot = math.ceil((loop.time() + timeout) / SLOT)
        waits = self._slots.get(slot)
        if waits is None:
            waits = self._slots[slot] = set()
            loop.call_at(slot * SLOT, self._end, slot)
        waits.add(mailbox)
        return slot

    def stop(self, mailbox: Mailbox, slot: int) -> None:
        """``mailbox``'s wait ended before its slot did."""
        waits = self._slots.get(slot)
        if waits is not None:
            waits.discard(mailbox)

    def _end(self, slot: int) -> None:
        for mailbox in self._slots.pop(slot, ()):
            mailbox._expire()


_timers_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedTimers] = (
    weakref.WeakKeyDictionary()
)
_last_timers: _SharedTimers | None = None  # the last loop's, found without a dictionary lookup


def _shared_timers(loop: asyncio.AbstractEventLoop) -> _SharedTimers:
    global _last_timers
    timers = _last_timers
    if timers is None or timers.loop() is not loop:
        timers = _timers_by_loop.get(loop)
        if timers is None:
            timers = _timers_by_loop[loop] = _SharedTimers(loop)
        _last_timers = timers
    return timers


def check_timeout(timeout: object, name: str = "timeout") -> float | None:
    """``timeout`` if it is a positive number of seconds (an int or a float, not a bool; ``inf``
    waits forever) or None; else ``UsageError``, naming the argument ``name``."""
    if timeout is None:
        return None
    if type(timeout) is float or type(timeout) is int:  # every request's wait: the usual first
        if timeout > 0:  # (nan is not)
            return timeout
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return timeout  # a subclass, such as numpy's float64
    raise UsageError(f"{name} must be a positive number of seconds or None, got {timeout!r}")


async def wait_in(mailbox: Mailbox, timeout: float | None, fn: WaitFunc | None, what: str) -> Any:
    """Read ``mailbox`` until ``fn`` accepts a message (or the first message when ``fn`` is None)."""
    if fn is None:
        return await mailbox.first(timeout, what)
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            while True:
                msg = await mailbox.get()
                if fn is None:
                    return msg
                try:
                    result = fn(msg)
                    if inspect.isawaitable(result):
                        result = await result
                except MsgNotWanted:
                    continue
                return result
    except TimeoutError:
        if deadline.expired():
            raise WaitTimeout(f"no {what} within {timeout} s") from None
        raise
