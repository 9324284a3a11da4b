"""The small mailbox every wait reads from, and the wait loop over it.

A ``Mailbox`` holds the messages offered to one waiter, in order, and an error that ends the wait
once those are taken. ``wait_in`` reads a mailbox until a wait function accepts a message or the
timeout passes (``WaitTimeout``). Receipts (replies) and pods (``wait_until`` on incoming
messages) both wait this way.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable
from typing import Any

from gravpy.errors import MsgNotWanted, UsageError, WaitTimeout
from gravpy.message import Message

__all__ = ["Mailbox", "WaitFunc", "check_timeout", "wait_in"]

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
        expiry = None if timeout is None else loop.call_later(timeout, self._expire)
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


def check_timeout(timeout: float | None) -> None:
    """Raise ``UsageError`` unless ``timeout`` is a positive number of seconds or None."""
    if timeout is not None and not timeout > 0:
        raise UsageError(f"timeout must be a positive number of seconds or None, got {timeout!r}")


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
