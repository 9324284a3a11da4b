"""Pods: an application's two-way handle on the bus.

Theory of operation. The bus pushes each message a pod admits into the pod's bounded *inbox* and wakes
the pod's single consumer: its handler (run by a drain that the bus schedules, one message at a time,
in order) or, with no handler, whoever iterates the pod with ``async for``. Waits (``wait_until``)
watch what that consumer takes; with neither, the waits are the consumer, taking one message at a
time and leaving what they did not look at queued. A pod with no handler, iterator or wait is not
a receiver: the bus sends it nothing, and it does not count as a responder for requests (what its
inbox holds waits for a consumer). A full inbox applies the pod's overflow policy and counts every
drop.

A handler that raises keeps its message: after the handler next succeeds, failed messages go back to
the front of the inbox in their original order. When ``failure_limit`` failures are pending the pod
is disconnected and ``wait_closed()`` raises ``PodDisconnected`` with the reason; a message that keeps
failing is given up after ``max_attempts`` and counted in ``dropped_failed``. The receiving end (the
inbox, the drains, redelivery) is ``gravpy.consumer.Consumer``, which ``Pod`` extends with what the
application calls.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Final

from gravpy import _log as logs
from gravpy import tracing
from gravpy._mailbox import WaitFunc, check_timeout, wait_in
from gravpy.consumer import Consumer, ConsumerMode, Handler, Overflow, Watch
from gravpy.counters import PodStatistics
from gravpy.errors import PodDisconnected, UsageError
from gravpy.filter import Filter, Pattern
from gravpy.groups import check_group
from gravpy.message import Message
from gravpy.ports import PodHost
from gravpy.receipt import MsgReceipt, check_callback
from gravpy.timings import timed_handler

__all__ = ["Handler", "Overflow", "Pod", "PodHost", "PodStatistics"]

_log = logs.get_logger("gravpy.pod")
_ITER: Final = ConsumerMode.ITER  # compared once per message iterated (a global: see consumer)


class Pod(Consumer):
    """A two-way handle on a bus. Get one from ``Grav.connect()``; see the module docstring."""

    __slots__ = (
        "__weakref__",
        "_close_reason",
        "_closed_by_bus",
        "_closed_event",
        "_filter",
        "_replay",
        "group",
        "uuid_rules",
    )

    def __init__(
        self, bus: PodHost, pod_id: int, *, replay: bool, inbox_limit: int, overflow: Overflow
    ) -> None:
        super().__init__(bus, pod_id, inbox_limit, overflow)
        self._filter: Filter | None = None
        self.uuid_rules = False  # read by the bus on the hot path
        self.group: str | None = None  # the group this pod shares messages with (deliver to one)
        self._replay = replay
        self._closed_by_bus = False
        self._close_reason = ""
        self._closed_event: asyncio.Event | None = None

    # -- receiving -------------------------------------------------------------------------------

    def on(self, handler: Handler | None, *, concurrency: object = 1, group: object = None) -> None:
        """Set the handler that receives every message this pod admits; ``None`` stops receiving.

        The handler may be a plain or an ``async`` function. It runs one message at a time, in order,
        unless ``concurrency`` > 1 (async handlers only), which lets that many run at once and gives up
        ordering. Filters are kept; replacing the handler loses no queued message. ``group`` joins
        that group (see ``join_group``); without it the pod keeps the group it has, if any. Every
        argument is checked before anything changes (``UsageError``).
        """
        self._check_open()
        mode, count = _consumer_mode(handler, concurrency)
        joins = None if group is None else check_group(group)
        self._set_handler(handler, mode, count, joins)

    def on_type(
        self, pattern: object, handler: Handler, *, concurrency: object = 1, group: object = None
    ) -> None:
        """Set the handler and admit only types matching ``pattern`` (replacing earlier allow rules).

        ``concurrency`` and ``group`` as for ``on``; nothing changes unless every argument is right
        (``UsageError``; ``PermissionDenied`` if this app may receive no type of ``pattern``). The
        handler may not be None: ``filter_type`` filters without setting one.
        """
        self._check_open()
        text = Pattern(pattern).text
        if handler is None:  # a filter and no handler: the pod would silently receive nothing
            raise UsageError(
                "handler must be callable, got None (filter_type filters without a handler)"
            )
        mode, count = _consumer_mode(handler, concurrency)
        joins = None if group is None else check_group(group)
        self.bus.check_subscribable(text)
        self._ensure_filter().set_type_allow([text])
        self._set_handler(handler, mode, count, joins)

    def join_group(self, name: object) -> None:
        """Share messages with the other members of group ``name`` (deliver to one).

        Each message that this pod's filters admit goes to exactly one live member of the group
        anywhere on the mesh; pods outside the group still get their own copy. A pod is in at most
        one group: joining another leaves the first. Group members get no replies (a reply is for
        its asker) and no replay: a ``connect_with_replay`` pod that starts receiving as a member
        is never replayed, not even after it leaves the group. Use it for pods you iterate;
        ``on(handler, group=...)`` does the same for handlers.
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

    def filter_type(self, pattern: object, allow: object = True) -> None:
        """Admit (``allow=True``) or refuse the types matching ``pattern``; see ``gravpy.filter``.

        Admitting a pattern of which this app may receive no type raises ``PermissionDenied``, as
        ``on_type`` does; nothing changes unless every argument is right.
        """
        self._check_open()
        text = Pattern(pattern).text
        admit = _check_allow(allow)
        if admit:
            self.bus.check_subscribable(text)
        self._ensure_filter().filter_type(text, admit)
        self.bus.routes_changed()

    def filter_uuid(self, uuid: object, allow: object = True) -> None:
        """Admit only (``allow=True``) or refuse the message with this uuid."""
        self._ensure_filter().filter_uuid(uuid, _check_allow(allow))
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
        """True if no handler call is running or due: nothing waits in the inbox or for redelivery,
        or nothing consumes it (no handler, iterator or wait: it waits for one)."""
        if self._scheduled or self._active:
            return False
        return not (self._inbox or self._failed) or not self.receiving

    @property
    def receiving(self) -> bool:
        """True if the bus delivers to this pod (it has a handler, an iterator or a wait)."""
        return not self._closed and (self._mode is not ConsumerMode.IDLE or bool(self._waits))

    def __aiter__(self) -> Pod:
        """Iterate the messages this pod admits. Ends when the pod closes or a handler is set.

        A pod has one consumer: a second task waiting for its next message while another already
        waits is a ``UsageError`` (iterate a pod of its own, or share one group between pods).
        """
        if self._mode in (ConsumerMode.SYNC, ConsumerMode.ASYNC):
            raise UsageError("this pod has a handler; a pod has one consumer, iterate another pod")
        if not self._closed:
            self._set_mode(ConsumerMode.ITER)
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._inbox and self._mode is _ITER:
                msg = self._inbox.popleft()
                self._offer_waits(msg)
                self._counts.handled += 1
                if self._congested:
                    self._relieve()
                return msg
            if self._closed or self._mode is not _ITER:
                raise StopAsyncIteration
            if self._iter_waker is not None:  # it would wake only the last: the other would hang
                raise UsageError("another task is waiting on this pod's iterator: a pod has one")
            self._iter_waker = asyncio.get_running_loop().create_future()
            try:
                await self._iter_waker
            finally:
                self._iter_waker = None

    async def wait_on(self, fn: WaitFunc) -> Any:
        """Wait, without a timeout, for the first admitted message ``fn`` accepts; see ``wait_until``."""
        return await self.wait_until(None, fn)

    async def wait_until(self, timeout: object, fn: WaitFunc) -> Any:
        """Watch the messages this pod admits until ``fn`` accepts one, for at most ``timeout`` s.

        ``fn`` raising ``MsgNotWanted`` keeps waiting; otherwise the wait returns what ``fn`` returned
        or raises what it raised. The pod's handler still receives every message: waiting never
        replaces it. On a pod with no handler or iterator the waits take the messages, one at a
        time (each counted handled when a wait looks at it): what comes after the one accepted
        stays queued for the next consumer, a handler, an iterator or another wait. Raises
        ``WaitTimeout`` or ``PodDisconnected``; a bad ``timeout`` or ``fn`` (not callable, or a
        generator function, whose generator would be taken for the answer) is a ``UsageError``
        before it waits.
        """
        seconds = check_timeout(timeout)
        check_callback(fn, "the wait function")
        self._check_open()
        watch = Watch(self)
        self._waits.append(watch)
        self._subscribed()
        try:
            return await wait_in(watch, seconds, fn, f"accepted message on pod {self.id}")
        finally:
            self._waits.remove(watch)
            if self._waits:
                self._feed_waits()  # the waits left may have been held back by this one
            elif self._mode is ConsumerMode.IDLE:
                self._stopped_receiving()

    # -- sending ---------------------------------------------------------------------------------

    def send(self, msg: Message) -> MsgReceipt:
        """Send ``msg`` to every other pod that admits it, here and across the mesh. Never blocks.

        Returns a receipt to wait for a reply. Raises ``PodDisconnected`` if this pod is closed,
        ``UsageError`` for anything but a ``Message`` or one no link could carry, or, on a node
        with a mesh, for a message whose uuid the node sent or received recently (sent again, or
        a received one sent on: every node that saw it would drop it), and ``PermissionDenied``
        for a type this app may not publish.
        """
        if self._closed:
            raise PodDisconnected(self._close_reason)
        if tracing.ENABLED and tracing.traced(msg):
            return tracing.send_in_span(msg, self._send_untraced)
        return self.bus.send(msg, self)

    def _send_untraced(self, msg: Message) -> MsgReceipt:
        return self.bus.send(msg, self)

    async def publish(self, msg: Message) -> MsgReceipt:
        """``send``, then wait while anything it feeds is congested (backpressure): a receiver's
        inbox over half full, a link's send queue or a bridge's outbox past its high-water mark.

        Use it in a loop that produces in bursts faster than receivers consume: ``send`` never
        waits and lets full inboxes and send queues drop (counted); ``publish`` makes the producer
        wait for room instead: for a link or a bridge as long as it stays congested, for a pod that
        cannot keep up at all only for a while (``Congestion.wait_room``), after which the pod
        drops its own overflow, counted.
        """
        receipt = self.send(msg)
        congestion = self.bus.congestion
        if congestion.congested:
            await congestion.wait_room()
        return receipt

    def reply_to(self, request: Message, msg: Message) -> MsgReceipt:
        """Send ``msg`` as the reply to ``request`` (sets ``msg.reply_to``).

        ``msg`` must be a message of its own: the request itself, or a copy keeping its uuid, is a
        ``UsageError`` (the mesh drops a message whose uuid it has seen, so it would never arrive).
        """
        if not isinstance(request, Message):
            raise UsageError(f"request must be a Message, got {type(request).__name__!r}")
        if not isinstance(msg, Message):
            raise UsageError(f"reply must be a Message, got {type(msg).__name__!r}")
        if msg.uuid == request.uuid:
            raise UsageError(
                f"reply must be a new message, not the request {request.uuid} itself (or a copy "
                "with its uuid): make one with Message.new or Message.new_reply"
            )
        before = msg.reply_to, msg.parent_id
        msg.reply_to = request.uuid
        if not msg.parent_id:
            msg.parent_id = request.uuid
        try:
            return self.send(msg)
        except BaseException:  # refused (a reply reused...): it still answers what it answered
            msg.reply_to, msg.parent_id = before
            raise

    # -- closing ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the pod is closed (by its owner's ``disconnect`` or by the bus)."""
        return self._closed

    @property
    def close_reason(self) -> str:
        """Why the pod closed ("" while open)."""
        return self._close_reason

    def disconnect(self) -> None:
        """Leave the bus: nothing more is delivered; queued messages are dropped and counted."""
        self.close("disconnected by its owner", error=False)

    async def wait_closed(self) -> None:
        """Wait until the pod is closed. Raises ``PodDisconnected`` (with why) if the bus
        disconnected it for its handler's failures; an owner's ``disconnect`` or the node stopping
        ends the wait quietly."""
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
        held, self._held = self._held or [], None  # kept aside while a leaf's replay ran:
        self._received += len(held)  # received as if queued, and dropped with the queue
        self._counts.dropped_closed += len(self._inbox) + len(self._failed) + len(held)
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
        """A frozen snapshot of this pod's counters (``gravpy.counters.PodStatistics``)."""
        c = self._counts
        return PodStatistics(
            received=self._received,
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

    # -- helpers ---------------------------------------------------------------------------------

    def _set_handler(
        self, handler: Handler | None, mode: ConsumerMode, concurrency: int, group: str | None
    ) -> None:
        """Apply what ``on`` or ``on_type`` checked."""
        if group is not None:
            self.group = group
        timings = self.bus.timings
        if handler is not None and timings is not None:
            handler = timed_handler(handler, mode is ConsumerMode.ASYNC, timings.handlers)
        self._handler = handler
        self._concurrency = concurrency
        self._set_mode(mode)

    def _set_mode(self, mode: ConsumerMode) -> None:
        previous = self._mode
        self._mode = mode
        if previous is ConsumerMode.ITER and mode is not ConsumerMode.ITER:
            self._wake_iterator()
        if mode is ConsumerMode.IDLE and self._congested:
            self._relieve_publishers()
        self._subscribed()
        if self._inbox and (not self._scheduled or mode is ConsumerMode.ASYNC):
            self._schedule()  # for ASYNC: tops up to a raised concurrency, never past it

    def _stopped_receiving(self) -> None:
        """The last wait of a pod with no handler or iterator ended."""
        if self._congested:
            self._relieve_publishers()
        self.bus.routes_changed()

    def _relieve_publishers(self) -> None:
        """No longer a receiver: what the inbox holds waits for a consumer, publishers need not."""
        self._congested = False
        self.bus.congestion.relieve(self)

    def _subscribed(self) -> None:
        """Called whenever the pod may have become a receiver: updates routes, and replays once,
        when it first receives. A pod that first receives as a group member is not replayed,
        then or after it leaves the group: its members already had what the buffer holds."""
        if self._replay and self.receiving:
            self._replay = False
            if self.group is None:
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


def _consumer_mode(handler: object, concurrency: object) -> tuple[ConsumerMode, int]:
    """How ``handler`` consumes (IDLE for None) and its concurrency, or ``UsageError``."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"concurrency must be an int >= 1, got {concurrency!r}")
    if handler is None:
        mode = ConsumerMode.IDLE
    else:
        check_callback(handler, "handler")
        mode = ConsumerMode.ASYNC if _is_async(handler) else ConsumerMode.SYNC
    if mode is not ConsumerMode.ASYNC and concurrency > 1:
        raise UsageError("concurrency > 1 needs an async handler")
    return mode, concurrency


def _check_allow(allow: object) -> bool:
    if allow is True or allow is False:
        return allow
    raise UsageError(f"allow must be True or False, got {allow!r}")


def _is_async(handler: object) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )
