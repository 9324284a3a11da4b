"""Receipts for sent messages, and the small mailbox every wait reads from.

A ``MsgReceipt`` comes back from every ``Pod.send``. Waiting on it registers a reply waiter with the
bus; a reply that arrived *before* anyone waited is kept by the bus (a bounded set of recent unclaimed
replies) and handed to the first wait, so a fast reply is never lost, even when the wait starts late.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gravpy.errors import MsgNotWanted, NoResponders, UsageError, WaitTimeout
from gravpy.message import Message

if TYPE_CHECKING:
    from gravpy.pod import Pod

__all__ = ["MsgReceipt", "WaitFunc"]

WaitFunc = Callable[[Message], Any]
"""A wait function: return (or return an awaitable of) a value to accept the message; raise
``MsgNotWanted`` to keep waiting; any other exception ends the wait and propagates."""


class Mailbox:
    """Messages offered to one waiter, in order, plus an error that ends the wait."""

    __slots__ = ("_error", "_items", "_waker")

    def __init__(self) -> None:
        self._items: deque[Message] = deque()
        self._waker: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

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
    if timeout is not None and not timeout > 0:
        raise UsageError(f"timeout must be a positive number of seconds or None, got {timeout!r}")


async def wait_in(mailbox: Mailbox, timeout: float | None, fn: WaitFunc | None, what: str) -> Any:
    """Read ``mailbox`` until ``fn`` accepts a message (or the first message when ``fn`` is None)."""
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


class MsgReceipt:
    """A handle on a sent message, to wait for its reply.

    ``await pod.send(msg).wait_until(2.0)`` returns the first reply (a ``Message`` whose ``reply_to``
    is this message's uuid) or raises ``WaitTimeout``. If no pod anywhere admitted the message's type
    when it was sent, every wait raises ``NoResponders`` at once.
    """

    __slots__ = ("_no_responders", "msg_type", "pod", "uuid")

    def __init__(self, uuid: str, msg_type: str, pod: Pod, no_responders: bool) -> None:
        self.uuid = uuid
        self.msg_type = msg_type
        self.pod = pod
        self._no_responders = no_responders

    @property
    def no_responders(self) -> bool:
        """True if no pod, local or remote, admitted the message when it was sent."""
        return self._no_responders

    async def wait_until(self, timeout: float | None, on: WaitFunc | None = None) -> Any:
        """Wait for the reply, at most ``timeout`` seconds (None: forever).

        Without ``on``, returns the reply message. With ``on``, each reply is passed to it: raising
        ``MsgNotWanted`` keeps waiting, anything else ends the wait with what ``on`` returned or raised.
        Raises ``WaitTimeout``, ``NoResponders``, ``PodDisconnected`` if the pod closes meanwhile, or
        ``LinkClosedError`` if the only peer that could answer went away.
        """
        check_timeout(timeout)
        if self._no_responders:
            raise NoResponders(self.msg_type)
        bus = self.pod.bus
        mailbox = bus.register_reply_waiter(self.uuid, self.pod)
        try:
            return await wait_in(mailbox, timeout, on, f"reply to {self.msg_type} {self.uuid}")
        finally:
            bus.unregister_reply_waiter(self.uuid, mailbox)

    async def wait_on(self, on: WaitFunc) -> Any:
        """``wait_until`` with no timeout (Grav's ``WaitOn``)."""
        return await self.wait_until(None, on)

    def on_reply(self, fn: Callable[[Message], Awaitable[object] | object]) -> None:
        """Call ``fn`` with the reply when it comes, in a task the bus owns (Grav's ``OnReply``).

        Errors from ``fn`` are logged, not raised. The task ends when the bus closes.
        """

        async def run() -> None:
            reply = await self.wait_until(None)
            result = fn(reply)
            if inspect.isawaitable(result):
                await result

        self.pod.bus.spawn(run(), name=f"on_reply:{self.uuid}")

    def __repr__(self) -> str:
        return f"MsgReceipt(uuid={self.uuid!r}, type={self.msg_type!r})"
