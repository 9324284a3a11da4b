"""``GravMessenger``: the messenger over gravpy's own mesh (a node, or a leaf attached to gravd).

Theory of operation. A subject is a gravpy message type. The messenger holds one *sender* pod for
``publish`` and ``request``, and one pod per subscription, since a pod never receives its own
messages but its siblings do:

- ``stream``: a pod admitting the pattern (``on_type``) whose synchronous handler offers each
  message's data to the caller's queue (``StreamSink``). Replies travelling on the same type are
  skipped, and so is the mesh's own traffic (``MESH_NAMESPACES``) unless the pattern names it.
- ``serve``: a pod admitting the pattern, in the one group ``group`` (default ``messenger``) that
  every server of every pattern joins, so that each request reaches exactly one server anywhere on
  the mesh (``on_type(..., group=)``), even when several patterns match its subject (``ov.*`` and
  ``ov.>``): a group places each message once among the members that admit its type, as a NATS
  queue group does across subscriptions.
  Its handler runs for requests and publishes alike (a request is a message like any other, as on
  NATS) and answers with ``reply_to`` set and the type ``messenger.reply`` (replies travel back by
  ``reply_to``; a distinct type keeps them out of groups and streams of the subject); a handler
  error travels back in the reply's ``messenger-error`` header and ``request`` raises
  ``RequestFailed`` with it. What the server pod's full inbox refuses counts in the server's
  ``dropped``; its requester is not told, and ends in ``RequestTimeout`` (as on NATS).
- ``request``: ``send`` plus ``receipt.wait_until``, so nobody anywhere admitting the subject (no
  server, no stream) fails at once with ``NoResponders``, a request every link refused (its send
  queue full: the receipt's ``dropped``) with ``PublishFailed``, and a fast reply is never lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import gravpy
from gravpy._log import get_logger
from gravpy.errors import (
    MessageDropped,
    MessengerClosed,
    PodDisconnected,
    PublishFailed,
    RequestFailed,
    RequestTimeout,
    StreamSubscriptionFailed,
    WaitTimeout,
)
from gravpy.filter import Pattern
from gravpy.grav import Grav
from gravpy.groups import check_group
from gravpy.message import Message
from gravpy.messenger.base import (
    Handler,
    MessengerBase,
    ServeCounters,
    StreamSink,
    check_subject,
    run_handler,
)
from gravpy.pod import Pod

__all__ = ["ERROR_HEADER", "MESH_NAMESPACES", "REPLY_TYPE", "GravMessenger"]

ERROR_HEADER = "messenger-error"
REPLY_TYPE = "messenger.reply"
"""The type of every reply: not the request's subject, so replies never enter a server's group or a
stream's pod on that subject (a reply is routed back by its ``reply_to``, not by type)."""

MESH_NAMESPACES = frozenset(("grav", "gravd", "gravpy"))
"""First tokens of the types the mesh sends for itself: ``grav.events.system`` (gravd's node events,
``gravpy.events``), ``gravd.info`` and ``gravd.events.*`` (gravd's services), ``gravpy.*`` (link
control). A stream whose pattern starts with a wildcard (``>``, ``*.events.>``) skips them; one
that names the namespace (``grav.events.>``) gets them."""

_log = get_logger("gravpy.messenger.grav")


class GravMessenger(MessengerBase):
    """A messenger on a ``Grav`` node or leaf.

    ``GravMessenger(grav)`` wraps a started ``Grav`` you own (``close()`` leaves it running);
    ``await GravMessenger.connect(url)`` (or ``open_messenger("ws://...")``) attaches a leaf to the
    gravd at ``url`` and stops it on ``close()``. ``inbox_limit`` bounds each subscription pod's
    inbox (its drops count in the subscription's statistics); ``group`` is the pod group every
    server joins (servers of different groups each get a copy of a request).
    """

    name = "grav"

    def __init__(
        self,
        grav: Grav,
        *,
        owns_grav: bool = False,
        group: str = "messenger",
        inbox_limit: int = 10_000,
    ) -> None:
        super().__init__()
        self.grav = grav
        self._owns_grav = owns_grav
        self._group = check_group(group)
        self._inbox_limit = inbox_limit
        self._sender = grav.connect()

    @classmethod
    async def connect(cls, url: str, *, timeout: float = 5.0, **options: Any) -> GravMessenger:
        """A messenger on a new leaf attached to the gravd at ``url`` (``gravpy.connect``)."""
        grav = gravpy.connect(url, timeout=timeout, **options)
        await grav.start()
        return cls(grav, owns_grav=True)

    async def wait_interest(self, subject: str, timeout: float | None = None) -> None:
        """Wait until a linked node wants ``subject``: a stream or a server there reaches it.

        What a ``publish`` needs: on the mesh a subscription becomes known to other nodes a moment
        after it is made, and what is published before that reaches nobody, as with NATS before a
        subscription arrives. Before a ``request``, wait with ``wait_server``: a stream alone
        answers nothing. Raises ``WaitTimeout`` after ``timeout`` seconds.
        """
        check_subject(subject)
        await self.grav.wait_for(
            lambda peers: any(
                Pattern(p).matches(subject)
                for peer in peers
                for p in (*peer.interests, *(pattern for _, pattern, _ in peer.groups))
            ),
            timeout,
        )

    async def wait_server(self, subject: str, timeout: float | None = None) -> None:
        """Wait until a linked node has a server of ``subject`` (a member of this messenger's
        group admitting it), so that a ``request`` finds it. Streams do not count.

        Raises ``WaitTimeout`` after ``timeout`` seconds.
        """
        check_subject(subject)
        await self.grav.wait_for(
            lambda peers: any(
                group == self._group and members > 0 and Pattern(pattern).matches(subject)
                for peer in peers
                for group, pattern, members in peer.groups
            ),
            timeout,
        )

    async def _publish(self, subject: str, data: bytes) -> None:
        """``send`` (never waits), then wait only if the carrier is congested, not a reader.

        ``Pod.publish`` would also wait while any pod of the node, on any subject, has a backed-up
        inbox; the messenger promises that a slow reader never holds up a publisher (its stream
        drops, counted). A link's queue over its high-water mark is the carrier filling up, as
        SQLite's outbox: then, and only while no local reader is congested, publish waits.
        """
        try:
            self._sender.send(Message.new(subject, data))
        except PodDisconnected as exc:
            raise MessengerClosed(f"the grav node closed: {exc.reason}") from exc
        bus = self.grav.bus
        congestion = bus.congestion
        if congestion.congested and not congestion.pods_congested:
            await congestion.wait_room()

    async def _stream(self, sink: StreamSink) -> Callable[[], Awaitable[None]]:
        hide_mesh = sink.pattern.text.split(".", 1)[0] in ("*", ">")

        def deliver(msg: Message) -> None:
            if msg.reply_to:
                return
            if hide_mesh and msg.type.split(".", 1)[0] in MESH_NAMESPACES:
                return  # the mesh's own traffic: only a pattern naming its namespace gets it
            sink.offer(msg.data)

        pod = self._pod()
        sink.upstream_dropped = lambda: pod.statistics().dropped_overflow
        pod.on_type(sink.pattern.text, deliver)
        return _disconnector(pod)

    async def _serve(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters
    ) -> Callable[[], Awaitable[None]]:
        pod = self._pod()

        async def answer(msg: Message) -> None:
            if msg.reply_to:
                return  # a reply to someone's request, travelling on the same type
            data, error = await run_handler(handler, msg.data, counters)
            reply = Message.new(REPLY_TYPE, data, headers={ERROR_HEADER: error} if error else None)
            if not pod.closed:
                pod.reply_to(msg, reply)

        counters.upstream_dropped = lambda: pod.statistics().dropped_overflow  # a full pod inbox
        pod.on_type(pattern.text, answer, group=self._group)
        return _disconnector(pod)

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        try:
            receipt = self._sender.send(Message.new(subject, data))
            reply = await receipt.wait_until(timeout)
        except MessageDropped as exc:  # every link that wanted it had a full send queue
            raise PublishFailed(f"the request on {subject!r} did not leave: {exc}") from exc
        except WaitTimeout:
            raise RequestTimeout(subject, timeout) from None
        except PodDisconnected as exc:
            raise MessengerClosed(f"the grav node closed: {exc.reason}") from exc
        assert isinstance(reply, Message)
        error = (reply.headers or {}).get(ERROR_HEADER)
        if error is not None:
            raise RequestFailed(subject, error)
        return reply.data

    async def _shutdown(self) -> None:
        self._sender.disconnect()
        if self._owns_grav:
            await self.grav.stop()

    def _pod(self) -> Pod:
        try:
            return self.grav.connect(inbox_limit=self._inbox_limit)
        except PodDisconnected as exc:
            raise StreamSubscriptionFailed(f"the grav node closed: {exc.reason}") from exc


def _disconnector(pod: Pod) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        pod.disconnect()

    return stop
