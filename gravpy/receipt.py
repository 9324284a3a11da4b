"""Receipts for sent messages: wait for one reply, or collect many.

A ``MsgReceipt`` comes back from every ``Pod.send``. Waiting on it registers a reply waiter with the
bus; a reply that arrived *before* anyone waited is kept by the bus (a bounded set of recent unclaimed
replies) and handed to the first wait, so a fast reply is never lost, even when the wait starts late.
Likewise a wait that ends holding replies it did not return (several came at once, or it was
cancelled just after one came) leaves them on the receipt, for its next wait (``wait_until``,
``replies``).

The functions a receipt or a pod calls with a message (wait functions, ``on_reply``'s, handlers)
are checked where they are given (``check_callback``): a generator function is refused there, as
calling it would only make a generator, whose body never runs.

With ``Grav(timings=True)`` a receipt notes when its message was sent, and the first reply a wait
returns (``wait_until``, or the first of ``replies``) records the round trip in the node's
``Timings.requests`` (``gravpy.timings``); without, it costs one attribute test per send.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from gravpy._mailbox import Mailbox, WaitFunc, check_timeout, wait_in
from gravpy.errors import MessageDropped, NoResponders, UsageError, WaitTimeout
from gravpy.message import Message
from gravpy.timings import Timings, clock

__all__ = ["MsgReceipt", "ReplyStream", "WaitFunc"]


class ReplyWaiters(Protocol):
    """What a receipt needs from the bus: reply waiters, an owner for ``on_reply`` tasks, and
    the node's timings (None: not kept)."""

    timings: Timings | None

    def register_reply_waiter(self, uuid: str, pod: Any, msg_type: str = "") -> Mailbox: ...
    def unregister_reply_waiter(self, uuid: str, mailbox: Mailbox) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]: ...


class Sender(Protocol):
    """The pod that sent the message (``MsgReceipt.pod``)."""

    @property
    def bus(self) -> ReplyWaiters: ...


class MsgReceipt:
    """A handle on a sent message, to wait for its reply.

    ``await pod.send(msg).wait_until(2.0)`` returns the first reply (a ``Message`` whose ``reply_to``
    is this message's uuid) or raises ``WaitTimeout``. If no pod anywhere admitted the message's type
    when it was sent, every wait raises ``NoResponders`` at once.
    """

    __slots__ = (
        "_kept",
        "_no_responders",
        "_sent_at",
        "_why",
        "dropped",
        "msg_type",
        "pod",
        "uuid",
    )

    def __init__(
        self,
        uuid: str,
        msg_type: str,
        pod: Sender,
        no_responders: bool,
        *,
        dropped: bool = False,
        why: str = "",
    ) -> None:
        self.uuid = uuid
        self.msg_type = msg_type
        self.pod = pod
        self._no_responders = no_responders
        self._why = why  # with ``no_responders``: what its ``NoResponders`` adds, as at the send
        # wanted by links, but each refused it (its send queue full; counted on the link as
        # ``queue_full``): nobody got it, and no reply will come
        self.dropped = dropped
        # when it was sent, while a round trip is still to be recorded (0.0: none to record)
        self._sent_at = 0.0 if pod.bus.timings is None else clock()
        # replies an ended wait was handed but did not return (more than one came, or it was
        # cancelled): the next wait on this receipt gets them first
        self._kept: list[Message] | None = None

    def _start_wait(self) -> Mailbox:
        """Register this receipt's reply waiter with the bus; it first holds what was kept."""
        mailbox = self.pod.bus.register_reply_waiter(self.uuid, self.pod, self.msg_type)
        kept, self._kept = self._kept, None
        if kept:
            mailbox.put_back(kept)  # they came before what the bus kept meanwhile
        return mailbox

    def _end_wait(self, mailbox: Mailbox) -> None:
        """Unregister ``mailbox``, keeping the replies it still holds for the next wait."""
        self.pod.bus.unregister_reply_waiter(self.uuid, mailbox)
        if mailbox.holding:  # (the usual wait took its one reply: nothing to keep)
            left = mailbox.take_all()
            self._kept = left if self._kept is None else self._kept + left

    def _awaited(self) -> str:
        return f"reply to {self.msg_type} {self.uuid}"

    def _replied(self) -> None:
        """A wait returned a reply and ``_sent_at`` is set: record the round trip, once."""
        sent_at, self._sent_at = self._sent_at, 0.0
        timings = self.pod.bus.timings
        if timings is not None:
            timings.requests.observe(clock() - sent_at)

    @property
    def no_responders(self) -> bool:
        """True if no pod, local or remote, admitted the message when it was sent."""
        return self._no_responders

    async def wait_until(self, timeout: object, on: WaitFunc | None = None) -> Any:
        """Wait for the reply, at most ``timeout`` seconds (None: forever).

        Without ``on``, returns the reply message. With ``on``, each reply is passed to it: raising
        ``MsgNotWanted`` keeps waiting, anything else ends the wait with what ``on`` returned or raised.
        Raises ``WaitTimeout``, ``NoResponders``, ``MessageDropped`` (every link that wanted it had
        a full send queue), ``PodDisconnected`` if the pod is closed or closes meanwhile, or
        ``LinkClosedError`` if the only peer that could answer went away; ``UsageError`` for a bad
        ``timeout`` or ``on`` (not callable, or a generator function) and while another wait on
        this receipt is on.
        """
        seconds = check_timeout(timeout)
        if on is not None:
            check_callback(on, "the wait function")
        if self._no_responders:
            raise NoResponders(self.msg_type, self._why)
        if self.dropped:
            raise MessageDropped(self.msg_type, self.uuid)
        mailbox = self._start_wait()
        try:
            # The usual request has no wait function: one coroutine less, and the timeout's
            # text made only when one happens.
            if on is None:
                try:
                    result = await mailbox.first(seconds, "reply")
                except WaitTimeout:
                    raise WaitTimeout(f"no {self._awaited()} within {timeout} s") from None
            else:
                result = await wait_in(mailbox, seconds, on, self._awaited())
        finally:
            self._end_wait(mailbox)
        if self._sent_at:
            self._replied()
        return result

    def replies(self, timeout: object = None, max: object = None) -> ReplyStream:
        """Yield the replies as they come, until ``max`` replies or ``timeout`` seconds have passed.

        ``async for reply in pod.send(req).replies(timeout=1.0, max=3): ...``. Unlike
        ``wait_until``, the end of the window is the normal end of the iteration, not an error:
        it yields what came (perhaps nothing). Raises ``NoResponders`` when nothing could
        answer, ``MessageDropped`` when nobody got the message, ``PodDisconnected`` if the pod is
        closed or closes meanwhile, ``LinkClosedError`` if the only peer that could answer went
        away, and ``UsageError`` if neither bound is given (the iteration would never end by
        itself). ``UsageError``, ``NoResponders`` and ``MessageDropped`` come at the call, the
        rest from the iteration.
        """
        seconds = check_timeout(timeout)
        if max is not None and (not isinstance(max, int) or isinstance(max, bool) or max < 1):
            raise UsageError(f"max must be an int >= 1 or None, got {max!r}")
        if timeout is None and max is None:
            raise UsageError("replies() needs a timeout, a max, or both")
        if self._no_responders:
            raise NoResponders(self.msg_type, self._why)
        if self.dropped:
            raise MessageDropped(self.msg_type, self.uuid)
        return ReplyStream(self, seconds, max)

    async def wait_on(self, on: WaitFunc) -> Any:
        """``wait_until`` with no timeout and the wait function ``on`` (Grav's ``WaitOn``), which
        is required: None is a ``UsageError`` (``wait_until(None)`` waits for the reply itself)."""
        check_callback(on, "the wait function")
        return await self.wait_until(None, on)

    def on_reply(self, fn: Callable[[Message], Awaitable[object] | object]) -> None:
        """Call ``fn`` with the reply when it comes, in a task the bus owns (Grav's ``OnReply``).

        The wait starts at once, as ``wait_until``'s does when awaited: the reply goes to ``fn``
        only, not also to the pod's handler, and another wait on this receipt while it is on is a
        ``UsageError``. Errors from ``fn`` (and ``NoResponders``, ``MessageDropped``) are logged,
        not raised. The task ends when the bus closes. Raised at the call: ``UsageError`` (``fn``
        not callable or a generator function, or another wait on) and ``PodDisconnected`` (the
        pod is closed).
        """
        check_callback(fn, "on_reply's function")
        mailbox = None if self._no_responders or self.dropped else self._start_wait()

        async def run() -> None:
            if mailbox is None:
                reply = await self.wait_until(None)  # raises why no reply can come
            else:
                try:
                    reply = await mailbox.first(None, "reply")
                finally:
                    self._end_wait(mailbox)
                if self._sent_at:
                    self._replied()
            result = fn(reply)
            if inspect.isawaitable(result):
                await result

        self.pod.bus.spawn(run(), name=f"on_reply:{self.uuid}")

    def __repr__(self) -> str:
        return f"MsgReceipt(uuid={self.uuid!r}, type={self.msg_type!r})"


class ReplyStream:
    """The replies to one request as they come: ``MsgReceipt.replies``' async iterator.

    The wait registers with the bus on the first ``__anext__`` and unregisters when the stream ends
    (``max`` replies, the deadline, an error or a cancellation), on ``aclose()``, or when the stream
    is collected after a ``break``. A class rather than an async generator, which mypyc cannot compile.
    """

    __slots__ = ("_count", "_deadline", "_mailbox", "_max", "_receipt", "_timeout")

    def __init__(self, receipt: MsgReceipt, timeout: float | None, max: int | None) -> None:
        self._receipt = receipt
        self._timeout = timeout
        self._max = max
        self._count = 0
        self._deadline: float | None = None
        self._mailbox: Mailbox | None = None

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._next()
        except BaseException:  # the end, an error or a cancellation: stop waiting
            self.close()
            raise

    async def aclose(self) -> None:
        """Stop waiting for replies (as an async generator's ``aclose``)."""
        self.close()

    def close(self) -> None:
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is not None:
            self._receipt._end_wait(mailbox)
        self._max = self._count  # an ended stream stays ended

    def __del__(self) -> None:
        self.close()

    async def _next(self) -> Message:
        if self._max is not None and self._count >= self._max:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = self._receipt._start_wait()
            if self._timeout is not None:
                self._deadline = loop.time() + self._timeout
        left = None if self._deadline is None else self._deadline - loop.time()
        if left is not None and left <= 0:
            raise StopAsyncIteration
        try:
            reply: Message = await wait_in(mailbox, left, None, "reply")
        except WaitTimeout:
            raise StopAsyncIteration from None
        if not self._count and self._receipt._sent_at:
            self._receipt._replied()
        self._count += 1
        return reply


def check_callback(fn: object, name: str) -> None:
    """Raise ``UsageError``, naming the argument ``name``, unless ``fn`` is a function gravpy can
    call with a message: a wait function, ``on_reply``'s, a pod's handler. A generator function
    (or an async one) is refused: calling it only makes a generator, whose body would never run,
    and a wait would return the generator as its answer."""
    if not callable(fn):
        raise UsageError(f"{name} must be callable, got {fn!r}")
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects too
    if any(inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f) for f in (fn, call)):
        raise UsageError(f"{name} must be a plain or async function, not a generator: {fn!r}")
