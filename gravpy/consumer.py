"""The receiving end of a pod: its bounded inbox, and the consumer that empties it, in order.

Theory of operation. The bus pushes each message a pod admits into its bounded *inbox* (``push``)
and wakes the pod's single consumer: its handler, run by a drain the bus schedules, one message at
a time, in order (a plain handler drains in loop-turn slices of ``_DRAIN_BUDGET``, and longer while
the inbox stays over a quarter full, so a consumer faster than its producer never drops); an async
handler, up to ``concurrency`` at once; or whoever iterates the pod with ``async for``. A full inbox
applies the pod's ``Overflow`` policy and counts every drop. Past half full the pod tells the bus
it is congested (``Pod.publish`` then waits), and relieves it below a quarter.

Waits (``Pod.wait_until``) watch what the consumer takes. With no handler and no iterator the waits
are the consumer: ``_feed_waits`` shows them the front of the inbox only once each has looked at
the last message (a ``Watch`` is ready), and a message leaves the inbox, counted handled, when a
wait looks at it. So a wait that accepts one leaves the rest queued for whoever consumes next, and
every message received is handled, dropped, or still queued.

A handler that raises keeps its message: after the handler next succeeds, failed messages go back to
the front of the inbox in their original order. When ``failure_limit`` failures are pending the pod
is closed with the reason; a message that keeps failing is given up after ``max_attempts`` and
counted in ``dropped_failed``. ``Pod`` (``gravpy.pod``) is the application's side of the same object.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Final

from gravpy import _log as logs
from gravpy import tracing
from gravpy._mailbox import Mailbox
from gravpy.counters import PodCounts
from gravpy.errors import UsageError
from gravpy.message import Message
from gravpy.ports import PodHost
from gravpy.tracing import TRACEPARENT

__all__ = ["Consumer", "ConsumerMode", "Handler", "Overflow", "Watch", "check_overflow"]

Handler = Callable[[Message], Awaitable[object] | object]
_DRAIN_BUDGET = 0.010  # seconds a sync drain runs before it lets the loop turn
_CHECK_EVERY = 256  # messages between two looks at the clock
_log = logs.get_logger("gravpy.pod")


class Overflow(enum.Enum):
    """What a pod does with a message that arrives when its inbox is full. Every drop is counted."""

    DROP_NEWEST = "drop_newest"
    """Refuse the arriving message (what NATS does to a slow consumer); the inbox keeps its order."""
    DROP_OLDEST = "drop_oldest"
    """Evict the oldest queued message to make room: the pod always sees the most recent."""


def check_overflow(policy: object) -> Overflow:
    """``policy`` as an ``Overflow`` (given as one or by its value, ``"drop_oldest"``); else
    ``UsageError``."""
    if isinstance(policy, Overflow):
        return policy
    for each in Overflow:
        if policy == each.value:
            return each
    names = ", ".join(repr(each.value) for each in Overflow)
    raise UsageError(f"overflow must be an Overflow or one of {names}, got {policy!r}")


class ConsumerMode(enum.Enum):
    """Who takes messages out of the inbox."""

    IDLE = 0  # no consumer (only waits, if any)
    SYNC = 1
    ASYNC = 2
    ITER = 3


# Python 3.11 looks an enum member up on its class in about 70 ns, a module global in about 10:
# the loops that run once per message compare with these.
_IDLE: Final = ConsumerMode.IDLE
_SYNC: Final = ConsumerMode.SYNC
_ASYNC: Final = ConsumerMode.ASYNC
_ITER: Final = ConsumerMode.ITER


class Watch(Mailbox):
    """The mailbox of one ``Pod.wait_until``. On a pod with no handler or iterator the waits
    consume, and a watch tells the pod when it is ready for the next message (``_feed_waits``)
    and when it looked at the one it was shown (``_took``)."""

    __slots__ = ("_consumer", "ready", "shown")

    def __init__(self, consumer: Consumer) -> None:
        super().__init__()
        self._consumer = consumer
        self.ready = False  # waiting, with nothing unread
        self.shown: Message | None = None  # what ``_feed_waits`` offered it, until it looks

    def hungry(self) -> bool:
        """Ready for the next message: waiting, with nothing unread."""
        return self.ready and not self._items

    async def get(self) -> Message:
        if not self._items:
            self.ready = True
            self._consumer._feed_waits()
        try:
            msg = await super().get()
        finally:
            self.ready = False
        if msg is self.shown:
            self.shown = None
            self._consumer._took(msg)
        return msg


class Consumer:
    """A pod's inbox and the consumer that empties it; see the module docstring."""

    __slots__ = (
        "_active",
        "_attempts",
        "_closed",
        "_concurrency",
        "_congested",
        "_counts",
        "_failed",
        "_fed",
        "_handler",
        "_held",
        "_high_water",
        "_inbox",
        "_iter_waker",
        "_mode",
        "_received",
        "_scheduled",
        "_waits",
        "bus",
        "id",
        "inbox_limit",
        "overflow",
    )

    def __init__(self, bus: PodHost, pod_id: int, inbox_limit: int, overflow: Overflow) -> None:
        self.bus = bus
        self.id = pod_id
        self.inbox_limit = inbox_limit
        self.overflow = overflow
        self._inbox: deque[Message] = deque()
        self._high_water = max(1, inbox_limit // 2)
        self._congested = False
        self._handler: Handler | None = None
        self._mode = ConsumerMode.IDLE
        self._concurrency = 1
        self._scheduled = False
        self._active = 0  # async drain tasks running (at most ``_concurrency``)
        self._held: list[Message] | None = None  # live messages kept aside while a replay runs
        self._iter_waker: asyncio.Future[None] | None = None
        self._waits: list[Watch] = []
        self._fed: Message | None = None  # the front of the inbox, shown to the waits (no consumer)
        self._failed: list[Message] = []
        self._attempts: dict[str, int] = {}
        self._closed = False
        self._counts = PodCounts()
        self._received = 0  # admitted and queued: counted here, not in ``_counts``, on the hot path

    def close(self, reason: str, *, error: bool) -> None:
        """Close the pod (``Pod.close``); the consumer calls it when too many messages failed."""
        raise NotImplementedError

    # -- the bus side ----------------------------------------------------------------------------

    def hold(self) -> None:
        """Keep live messages aside (in order, within the inbox limit) until ``release``."""
        if self._held is None:
            self._held = []

    def release(self, replayed: list[Message]) -> None:
        """Push ``replayed``, then what was held that ``replayed`` does not already hold."""
        held, self._held = self._held or [], None
        if self._closed:  # closed meanwhile: what it held is counted by ``close``
            return
        seen = {msg.uuid for msg in replayed}
        for msg in replayed:
            self.push(msg)
        for msg in held:
            if msg.uuid not in seen:
                self.push(msg)

    def push(self, msg: Message) -> None:
        """Queue an admitted message (called by the bus)."""
        held = self._held
        if held is not None:
            if len(held) < self.inbox_limit:
                held.append(msg)
            else:
                self._counts.dropped_overflow += 1
            return
        inbox = self._inbox
        inbox.append(msg)
        if len(inbox) >= self._high_water and not self._crowded():
            return
        self._received += 1
        if not self._scheduled:
            self._schedule()
        elif self._concurrency > 1 and self._active < self._concurrency:
            self._spawn_drain()  # up to ``concurrency`` at once, also for messages that trickle in

    def _crowded(self) -> bool:
        """``push`` appended to an inbox at its high-water mark: apply the limit and the overflow
        policy (False: the new message was refused), and tell the bus the pod is congested."""
        inbox = self._inbox
        if len(inbox) > self.inbox_limit:
            self._counts.dropped_overflow += 1
            if self.overflow is Overflow.DROP_NEWEST:
                inbox.pop()
                return False
            inbox.popleft()
        if not self._congested:
            self._congested = True
            self.bus.congestion.mark_congested(self)
        return True

    def _relieve(self) -> None:
        """Tell the bus this inbox has room again (below a quarter of its limit)."""
        if len(self._inbox) <= self._high_water // 2:
            self._congested = False
            self.bus.congestion.relieve(self)

    def _schedule(self) -> None:
        mode = self._mode
        if mode is _ITER:
            self._wake_iterator()
        elif mode is _ASYNC:
            for _ in range(min(self._concurrency - self._active, len(self._inbox))):
                self._spawn_drain()
        elif mode is _SYNC or self._waits:
            self._scheduled = True
            self.bus.call_soon(self._drain_sync)

    def _wake_iterator(self) -> None:
        waker = self._iter_waker
        if waker is not None and not waker.done():
            waker.set_result(None)

    def _drain_sync(self) -> None:
        self._scheduled = False
        inbox = self._inbox
        if self._congested:
            self._relieve()
        deadline = time.perf_counter() + _DRAIN_BUDGET
        steps = _CHECK_EVERY
        while inbox and not self._closed:
            if steps <= 0:  # drain while there is time, and past it while the inbox is still
                # over a quarter full: a burst never overflows a pod faster than its producer
                if time.perf_counter() > deadline and len(inbox) <= self._high_water // 2:
                    break
                steps = _CHECK_EVERY
            if self._mode is _SYNC and not (self._waits or self._failed or self._attempts):
                taken = self._run_handler(steps)  # the usual state: a batch in the fewest steps
            else:  # one message, and what waits and failures need done for it
                mode = self._mode
                if mode is _IDLE:
                    self._feed_waits()  # the waits take the messages, at their own pace
                    return
                if mode is not _SYNC:
                    self._schedule()
                    return
                if self._waits:
                    self._offer_waits(inbox[0])
                taken = self._run_handler(1, retrying=bool(self._failed or self._attempts))
            if taken < 0:
                return
            steps -= taken
        if self._congested:
            self._relieve()
        if inbox and not self._closed:
            self._schedule()

    def _run_handler(self, limit: int, *, retrying: bool = False) -> int:
        """Hand the plain handler up to ``limit`` messages in the fewest steps per message:
        ``_drain_sync`` asks for a batch when nothing else has work to do per message (no wait,
        no failure pending: those change only in other tasks or by raising), one at a time
        otherwise (``retrying``: failures are pending, a success puts them back in the inbox).
        Stops early if the handler raised or changed its pod. Returns how many it took, or -1
        if the handler returned an awaitable: the pod went on as an async consumer."""
        inbox = self._inbox
        popleft = inbox.popleft
        counts = self._counts
        handler = self._handler
        if handler is None:  # pragma: no cover - checked by the caller
            return 0
        n = min(limit, len(inbox))
        for taken in range(1, n + 1):
            msg = popleft()
            try:
                if msg.headers is not None and TRACEPARENT in msg.headers and tracing.ENABLED:
                    result = tracing.call_in_span(handler, msg)
                else:
                    result = handler(msg)
            except Exception as exc:
                self._handler_failed(msg, exc)
                return taken
            if result is not None and inspect.isawaitable(result):
                self._mode = ConsumerMode.ASYNC  # a plain function that returned a coroutine
                self._spawn_drain(msg, result)
                return -1
            if retrying:
                self._handler_succeeded(msg)
            else:
                counts.handled += 1
            if self._handler is not handler or self._closed:
                return taken
        return n

    def _spawn_drain(
        self, first: Message | None = None, running: Awaitable[object] | None = None
    ) -> None:
        self._scheduled = True
        self._active += 1
        self.bus.spawn(self._drain_async(first, running), name=f"pod-{self.id}-drain")

    async def _drain_async(
        self, first: Message | None = None, running: Awaitable[object] | None = None
    ) -> None:
        """One async consumer; up to ``concurrency`` of them run at once, each taking the next message."""
        try:
            if first is not None and running is not None:
                await self._finish(first, running)
            await self._work()
        finally:
            self._active -= 1
            if not self._active:
                self._scheduled = False
        if self._inbox and not self._closed and not self._scheduled:
            self._schedule()

    async def _work(self) -> None:
        inbox = self._inbox
        while (
            inbox
            and not self._closed
            and self._mode is _ASYNC
            and self._active <= self._concurrency  # the surplus stops after a lower concurrency
        ):
            msg = inbox.popleft()
            if self._congested and len(inbox) <= self._high_water // 2:
                self._relieve()
            if self._waits:
                self._offer_waits(msg)
            handler = self._handler
            if handler is None:  # pragma: no cover - mode would not be ASYNC
                return
            try:  # the handler's coroutine is awaited here, not in a helper: one frame less each
                result: object = (
                    tracing.await_in_span(handler, msg)
                    if msg.headers is not None and TRACEPARENT in msg.headers and tracing.ENABLED
                    else handler(msg)
                )
                if type(result) is CoroutineType or (
                    result is not None and inspect.isawaitable(result)
                ):
                    await result
            except asyncio.CancelledError:
                self._counts.dropped_closed += 1  # cut off by the bus closing
                raise
            except Exception as exc:
                self._handler_failed(msg, exc)
                continue
            if self._failed or self._attempts:
                self._handler_succeeded(msg)
            else:
                self._counts.handled += 1

    async def _finish(self, msg: Message, result: object) -> None:
        try:
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            self._counts.dropped_closed += 1  # cut off by the bus closing
            raise
        except Exception as exc:
            self._handler_failed(msg, exc)
        else:
            self._handler_succeeded(msg)

    def _handler_succeeded(self, msg: Message) -> None:
        self._counts.handled += 1
        if self._attempts:
            self._attempts.pop(msg.uuid, None)
        if self._failed:
            failed, self._failed = self._failed, []
            self._counts.redelivered += len(failed)
            self._inbox.extendleft(reversed(failed))

    def _handler_failed(self, msg: Message, exc: Exception) -> None:
        self._counts.failed += 1
        attempts = self._attempts.get(msg.uuid, 0) + 1
        if attempts >= self.bus.max_attempts:
            self._attempts.pop(msg.uuid, None)
            self._counts.dropped_failed += 1
            _log.warning(
                "message_given_up", pod=self.id, msg_uuid=msg.uuid, type=msg.type, error=repr(exc)
            )
            return
        self._attempts[msg.uuid] = attempts
        self._failed.append(msg)
        if len(self._failed) >= self.bus.failure_limit:
            failed = len(self._failed)
            self._counts.dropped_failed += failed  # lost to the handler: not to the closing,
            self._failed.clear()  # which counts only what was still queued (``pod_closed``)
            self.close(
                f"{failed} messages failed in its handler with no success since; "
                f"last error: {exc!r}",
                error=True,
            )

    def _offer_waits(self, msg: Message) -> None:
        """Show the waits ``msg``, which the handler or the iterator takes."""
        for watch in self._waits:
            if watch.shown is msg:  # shown before the pod had a consumer: not twice
                watch.shown = None
            else:
                watch.offer(msg)

    def _feed_waits(self) -> None:
        """No handler or iterator: the waits consume. Show them the front of the inbox once every
        wait is ready for it (has looked at the last one); it leaves the inbox when one looks."""
        inbox = self._inbox
        if not inbox or self._mode is not _IDLE or self._closed:
            return
        waits = self._waits
        if not waits:
            return
        for watch in waits:
            if not watch.hungry():
                return
        msg = self._fed = inbox[0]
        for watch in waits:
            watch.shown = msg
            watch.offer(msg)

    def _took(self, msg: Message) -> None:
        """A wait looked at ``msg``, shown by ``_feed_waits``: the first to look takes it."""
        if msg is not self._fed:
            return
        self._fed = None
        inbox = self._inbox
        if inbox and inbox[0] is msg:
            inbox.popleft()
            self._counts.handled += 1
            if self._congested:
                self._relieve()
