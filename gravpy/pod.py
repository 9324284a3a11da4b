"""Pods: an application's two-way handle on the bus.

Theory of operation. The bus pushes each message a pod admits into the pod's bounded *inbox* and wakes
the pod's single consumer: its handler (run by a drain that the bus schedules, one message at a time,
in order) or, with no handler, whoever iterates the pod with ``async for``. A pod with neither (and no
``wait_on`` in progress) is not a receiver: the bus sends it nothing, and it does not count as a
responder for requests. A full inbox applies the pod's overflow policy and counts every drop.

A handler that raises keeps its message: after the handler next succeeds, failed messages go back to
the front of the inbox in their original order. When ``failure_limit`` failures are pending the pod
is disconnected and ``wait_closed()`` raises ``PodDisconnected`` with the reason; a message that keeps
failing is given up after ``max_attempts`` and counted in ``dropped_failed``.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any

from gravpy import _log as logs
from gravpy import tracing
from gravpy._mailbox import Mailbox, WaitFunc, check_timeout, wait_in
from gravpy.counters import PodCounts, PodStatistics
from gravpy.errors import PodDisconnected, UsageError
from gravpy.filter import Filter
from gravpy.groups import check_group
from gravpy.message import Message
from gravpy.ports import PodHost
from gravpy.receipt import MsgReceipt
from gravpy.timings import timed_handler

__all__ = ["Handler", "Overflow", "Pod", "PodHost", "PodStatistics"]

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


class _Mode(enum.Enum):
    IDLE = 0  # no consumer (only waits, if any)
    SYNC = 1
    ASYNC = 2
    ITER = 3


class Pod:
    """A two-way handle on a bus. Get one from ``Grav.connect()``; see the module docstring."""

    __slots__ = (
        "__weakref__",
        "_active",
        "_attempts",
        "_close_reason",
        "_closed",
        "_closed_by_bus",
        "_closed_event",
        "_concurrency",
        "_congested",
        "_counts",
        "_failed",
        "_filter",
        "_handler",
        "_held",
        "_high_water",
        "_inbox",
        "_iter_waker",
        "_mode",
        "_replay",
        "_scheduled",
        "_waits",
        "bus",
        "group",
        "id",
        "inbox_limit",
        "overflow",
        "uuid_rules",
    )

    def __init__(
        self, bus: PodHost, pod_id: int, *, replay: bool, inbox_limit: int, overflow: Overflow
    ) -> None:
        self.bus = bus
        self.id = pod_id
        self.inbox_limit = inbox_limit
        self.overflow = overflow
        self._inbox: deque[Message] = deque()
        self._high_water = max(1, inbox_limit // 2)
        self._congested = False
        self._filter: Filter | None = None
        self.uuid_rules = False  # read by the bus on the hot path
        self.group: str | None = None  # the group this pod shares messages with (deliver to one)
        self._handler: Handler | None = None
        self._mode = _Mode.IDLE
        self._concurrency = 1
        self._scheduled = False
        self._active = 0  # async drain tasks running (at most ``_concurrency``)
        self._replay = replay
        self._held: list[Message] | None = None  # live messages kept aside while a replay runs
        self._iter_waker: asyncio.Future[None] | None = None
        self._waits: list[Mailbox] = []
        self._failed: list[Message] = []
        self._attempts: dict[str, int] = {}
        self._closed_by_bus = False
        self._closed = False
        self._close_reason = ""
        self._closed_event: asyncio.Event | None = None
        self._counts = PodCounts()

    # -- receiving -------------------------------------------------------------------------------

    def on(self, handler: Handler | None, *, concurrency: object = 1, group: object = None) -> None:
        """Set the handler that receives every message this pod admits; ``None`` stops receiving.

        The handler may be a plain or an ``async`` function. It runs one message at a time, in order,
        unless ``concurrency`` > 1 (async handlers only), which lets that many run at once and gives up
        ordering. Filters are kept; replacing the handler loses no queued message. ``group`` joins
        that group (see ``join_group``); without it the pod keeps the group it has, if any.
        """
        self._check_open()
        if group is not None:
            self.group = check_group(group)
        if not isinstance(concurrency, int) or concurrency < 1:
            raise UsageError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if handler is not None and not callable(handler):
            raise UsageError(f"handler must be callable, got {handler!r}")
        if handler is None:
            mode = _Mode.IDLE
        elif _is_async(handler):
            mode = _Mode.ASYNC
        else:
            mode = _Mode.SYNC
        if mode is not _Mode.ASYNC and concurrency > 1:
            raise UsageError("concurrency > 1 needs an async handler")
        timings = self.bus.timings
        if handler is not None and timings is not None:
            handler = timed_handler(handler, mode is _Mode.ASYNC, timings.handlers)
        self._handler = handler
        self._concurrency = concurrency
        self._set_mode(mode)

    def on_type(
        self, pattern: str, handler: Handler, *, concurrency: int = 1, group: str | None = None
    ) -> None:
        """Set the handler and admit only types matching ``pattern`` (replacing earlier allow rules).

        ``group`` as for ``on``.
        """
        if group is not None:
            check_group(group)
        self.bus.check_subscribable(pattern)
        self._ensure_filter().set_type_allow([pattern])
        self.bus.routes_changed()
        self.on(handler, concurrency=concurrency, group=group)

    def join_group(self, name: object) -> None:
        """Share messages with the other members of group ``name`` (deliver to one).

        Each message that this pod's filters admit goes to exactly one live member of the group
        anywhere on the mesh; pods outside the group still get their own copy. A pod is in at most
        one group: joining another leaves the first. Group members get no replay and no replies
        (a reply is for its asker). Use it for pods you iterate; ``on(handler, group=...)`` does
        the same for handlers.
        """
        self._check_open()
        self.group = check_group(name)
        self.bus.routes_changed()

    def leave_group(self) -> None:
        """Stop sharing: from now on this pod gets its own copy of every message it admits."""
        self._check_open()
        if self.group is not None:
            self.group = None
            self.bus.routes_changed()

    def filter_type(self, pattern: object, allow: bool = True) -> None:
        """Admit (``allow=True``) or refuse the types matching ``pattern``; see ``gravpy.filter``."""
        self._ensure_filter().filter_type(pattern, allow)
        self.bus.routes_changed()

    def filter_uuid(self, uuid: object, allow: bool = True) -> None:
        """Admit only (``allow=True``) or refuse the message with this uuid."""
        self._ensure_filter().filter_uuid(uuid, allow)
        self.uuid_rules = True
        self.bus.routes_changed()

    def admits(self, msg: Message) -> bool:
        """True if this pod's filters admit ``msg`` (whether or not it is receiving)."""
        f = self._filter
        return f is None or f.admits(msg.type, msg.uuid)

    def admits_type(self, msg_type: str) -> bool:
        """True if this pod's type rules admit ``msg_type``."""
        f = self._filter
        return f is None or f.admits_type(msg_type)

    def allowed_patterns(self) -> tuple[str, ...] | None:
        """The type patterns this pod allows, or None when it admits every type not denied."""
        f = self._filter
        return None if f is None else f.allowed_patterns()

    @property
    def congested(self) -> bool:
        """True while the inbox is over its high-water mark (a group skips such a member)."""
        return self._congested

    @property
    def queued(self) -> int:
        """Messages waiting in the inbox."""
        return len(self._inbox)

    @property
    def idle(self) -> bool:
        """True if nothing waits in the inbox or for redelivery and no handler call is running."""
        return not self._inbox and not self._failed and not self._scheduled and not self._active

    @property
    def receiving(self) -> bool:
        """True if the bus delivers to this pod (it has a handler, an iterator or a wait)."""
        return not self._closed and (self._mode is not _Mode.IDLE or bool(self._waits))

    def __aiter__(self) -> Pod:
        """Iterate the messages this pod admits. Ends when the pod closes or a handler is set."""
        if self._mode in (_Mode.SYNC, _Mode.ASYNC):
            raise UsageError("this pod has a handler; a pod has one consumer, iterate another pod")
        if not self._closed:
            self._set_mode(_Mode.ITER)
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._inbox and self._mode is _Mode.ITER:
                msg = self._inbox.popleft()
                self._offer_waits(msg)
                self._counts.handled += 1
                if self._congested:
                    self._relieve()
                return msg
            if self._closed or self._mode is not _Mode.ITER:
                raise StopAsyncIteration
            self._iter_waker = asyncio.get_running_loop().create_future()
            try:
                await self._iter_waker
            finally:
                self._iter_waker = None

    async def wait_on(self, fn: WaitFunc) -> Any:
        """Wait, without a timeout, for the first admitted message ``fn`` accepts; see ``wait_until``."""
        return await self.wait_until(None, fn)

    async def wait_until(self, timeout: float | None, fn: WaitFunc) -> Any:
        """Watch the messages this pod admits until ``fn`` accepts one, for at most ``timeout`` s.

        ``fn`` raising ``MsgNotWanted`` keeps waiting; otherwise the wait returns what ``fn`` returned
        or raises what it raised. The pod's handler still receives every message: waiting never
        replaces it. Raises ``WaitTimeout`` or ``PodDisconnected``.
        """
        check_timeout(timeout)
        self._check_open()
        mailbox = Mailbox()
        self._waits.append(mailbox)
        self._subscribed()
        try:
            return await wait_in(mailbox, timeout, fn, f"accepted message on pod {self.id}")
        finally:
            self._waits.remove(mailbox)
            if not self._waits and self._mode is _Mode.IDLE:
                self.bus.routes_changed()

    # -- sending ---------------------------------------------------------------------------------

    def send(self, msg: Message) -> MsgReceipt:
        """Send ``msg`` to every other pod that admits it, here and across the mesh. Never blocks.

        Returns a receipt to wait for a reply. Raises ``PodDisconnected`` if this pod is closed.
        """
        if self._closed:
            raise PodDisconnected(self._close_reason)
        if tracing.ENABLED:
            tracing.inject(msg)
        return self.bus.send(msg, self)

    async def publish(self, msg: Message) -> MsgReceipt:
        """``send``, then wait while any receiver's inbox is over half full (backpressure).

        Use it in a loop that produces faster than receivers consume: ``send`` never waits and
        lets full inboxes drop (counted); ``publish`` makes the producer wait for room instead.
        """
        receipt = self.send(msg)
        if self.bus.congested:
            await self.bus.wait_room()
        return receipt

    def reply_to(self, request: Message, msg: Message) -> MsgReceipt:
        """Send ``msg`` as the reply to ``request`` (sets ``msg.reply_to``)."""
        msg.reply_to = request.uuid
        if not msg.parent_id:
            msg.parent_id = request.uuid
        return self.send(msg)

    # -- closing ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str:
        """Why the pod closed ("" while open)."""
        return self._close_reason

    def disconnect(self) -> None:
        """Leave the bus: nothing more is delivered; queued messages are dropped and counted."""
        self.close("disconnected by its owner", error=False)

    async def wait_closed(self) -> None:
        """Wait until the pod is closed. Raises ``PodDisconnected`` if the bus closed it (with why)."""
        if not self._closed:
            if self._closed_event is None:
                self._closed_event = asyncio.Event()
            await self._closed_event.wait()
        if self._closed_by_bus:
            raise PodDisconnected(self._close_reason)

    def close(self, reason: str, *, error: bool) -> None:
        """Close the pod (the bus calls this; owners call ``disconnect``)."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._closed_by_bus = error
        self._counts.dropped_closed += len(self._inbox) + len(self._failed)
        self._inbox.clear()
        if self._congested:
            self._relieve()
        self._failed.clear()
        self._attempts.clear()
        self.bus.detach(self)
        exc = PodDisconnected(reason)
        for mailbox in self._waits:
            mailbox.fail(exc)
        self._wake_iterator()
        if self._closed_event is not None:
            self._closed_event.set()
        if error:
            _log.warning("pod_disconnected", pod=self.id, reason=reason)

    def statistics(self) -> PodStatistics:
        c = self._counts
        return PodStatistics(
            received=c.received,
            handled=c.handled,
            failed=c.failed,
            redelivered=c.redelivered,
            pending_failures=len(self._failed),
            inbox=len(self._inbox),
            inbox_limit=self.inbox_limit,
            dropped_overflow=c.dropped_overflow,
            dropped_failed=c.dropped_failed,
            dropped_closed=c.dropped_closed,
        )

    # -- the bus side ----------------------------------------------------------------------------

    def hold(self) -> None:
        """Keep live messages aside (in order, within the inbox limit) until ``release``."""
        if self._held is None:
            self._held = []

    def release(self, replayed: list[Message]) -> None:
        """Push ``replayed``, then what was held that ``replayed`` does not already hold."""
        held, self._held = self._held or [], None
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
        if len(inbox) >= self.inbox_limit:
            self._counts.dropped_overflow += 1
            if self.overflow is Overflow.DROP_NEWEST:
                return
            inbox.popleft()
        inbox.append(msg)
        self._counts.received += 1
        if len(inbox) >= self._high_water and not self._congested:
            self._congested = True
            self.bus.mark_congested(self)
        if not self._scheduled:
            self._schedule()
        elif self._concurrency > 1 and self._active < self._concurrency:
            self._spawn_drain()  # up to ``concurrency`` at once, also for messages that trickle in

    def _relieve(self) -> None:
        """Tell the bus this inbox has room again (below a quarter of its limit)."""
        if len(self._inbox) <= self._high_water // 2:
            self._congested = False
            self.bus.relieve(self)

    def _schedule(self) -> None:
        mode = self._mode
        if mode is _Mode.ITER:
            self._wake_iterator()
        elif mode is _Mode.ASYNC:
            for _ in range(min(self._concurrency - self._active, len(self._inbox))):
                self._spawn_drain()
        elif mode is _Mode.SYNC or self._waits:
            self._scheduled = True
            self.bus.call_soon(self._drain_sync)

    def _wake_iterator(self) -> None:
        waker = self._iter_waker
        if waker is not None and not waker.done():
            waker.set_result(None)

    def _drain_sync(self) -> None:
        self._scheduled = False
        inbox = self._inbox
        counts = self._counts
        if self._congested:
            self._relieve()
        deadline = time.perf_counter() + _DRAIN_BUDGET
        steps = _CHECK_EVERY
        while inbox and not self._closed:
            steps -= 1
            if not steps:  # drain while there is time, and past it while the inbox is still
                # over a quarter full: a burst never overflows a pod faster than its producer
                if time.perf_counter() > deadline and len(inbox) <= self._high_water // 2:
                    break
                steps = _CHECK_EVERY
            if self._mode is not _Mode.SYNC and self._mode is not _Mode.IDLE:
                self._schedule()
                return
            msg = inbox.popleft()
            if self._waits:
                self._offer_waits(msg)
            handler = self._handler
            if handler is None:
                continue
            headers = msg.headers
            try:
                if headers is not None and tracing.carries_context(msg):
                    result = tracing.call_in_span(handler, msg)
                else:
                    result = handler(msg)
            except Exception as exc:
                self._handler_failed(msg, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                # a plain function that returned a coroutine: continue as an async consumer
                self._mode = _Mode.ASYNC
                self._spawn_drain(msg, result)
                return
            if self._failed or self._attempts:
                self._handler_succeeded(msg)
            else:
                counts.handled += 1
        if self._congested:
            self._relieve()
        if inbox and not self._closed:
            self._schedule()

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
            and self._mode is _Mode.ASYNC
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
                    if msg.headers is not None and tracing.carries_context(msg)
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
            self.close(
                f"{len(self._failed)} messages failed in its handler with no success since; "
                f"last error: {exc!r}",
                error=True,
            )

    def _offer_waits(self, msg: Message) -> None:
        for mailbox in self._waits:
            mailbox.offer(msg)

    # -- helpers ---------------------------------------------------------------------------------

    def _set_mode(self, mode: _Mode) -> None:
        previous = self._mode
        self._mode = mode
        if previous is _Mode.ITER and mode is not _Mode.ITER:
            self._wake_iterator()
        if mode is _Mode.IDLE and self._congested:
            # no longer a receiver: what it holds waits for a consumer, publishers need not
            self._congested = False
            self.bus.relieve(self)
        self._subscribed()
        if self._inbox and (not self._scheduled or mode is _Mode.ASYNC):
            self._schedule()  # for ASYNC: tops up to a raised concurrency, never past it

    def _subscribed(self) -> None:
        """Called whenever the pod may have become a receiver: replays once, updates routes."""
        if self._replay and self.receiving and self.group is None:
            self._replay = False
            self.bus.replay_into(self)
        self.bus.routes_changed()

    def _ensure_filter(self) -> Filter:
        self._check_open()
        if self._filter is None:
            self._filter = Filter()
        return self._filter

    def _check_open(self) -> None:
        if self._closed:
            raise PodDisconnected(self._close_reason)

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._mode.name.lower()
        group = f" group={self.group}" if self.group is not None else ""
        return f"<Pod {self.id} {state}{group} inbox={len(self._inbox)}>"


def _is_async(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )
