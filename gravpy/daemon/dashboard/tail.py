"""The live tail: the messages passing this node whose type matches a viewer's pattern.

Theory of operation. Each viewer (one browser's ``/v1/tail`` stream) is a pod on gravd's own bus
whose type filter is the viewer's pattern (``sensor.>``), with a plain (synchronous) handler, so
the bus does the matching and the handler runs on the loop without a task per message. The
handler never waits: it takes at most ``rate`` rows per second (a token bucket; the rest are
counted as ``skipped``, since no person reads faster; the allowance is topped up by a timer
every ``REFILL_EVERY`` seconds, so an over-rate message costs one compare), turns each into a small JSON-able row
(type, size, sender, time, and a preview of the first ``PREVIEW_BYTES`` as text, JSON and hex)
and puts it into the viewer's bounded queue. The stream task takes rows from that queue and writes
them to the browser.

Overflow policy: a viewer whose queue is full is a browser that does not keep up (its socket
backs up); it is *dropped*: the pod disconnects, ``viewers_dropped`` counts it, and ``on_drop``
tells the stream, which ends (and cuts a connection still backed up, whose write would wait for
ever). The pod's own inbox is bounded too (``drop_oldest``, counted by the bus). It is large
(``INBOX_LIMIT``) on purpose: at half of it the bus would call the pod congested and hold the
links back, and a tail must never do that; the cheap handler keeps it nearly empty, and the inbox
only holds references to messages the node has anyway.

A tail pod's interest travels to the peers like any pod's: a tail on ``>`` asks the mesh for every
message, which is why the tail can be turned off (``--dashboard-tail off``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from gravpy.filter import Pattern
from gravpy.grav import Grav
from gravpy.message import Message
from gravpy.pod import Overflow

__all__ = ["PREVIEW_BYTES", "Tail", "Viewer", "row"]

PREVIEW_BYTES = 256
QUEUE_LIMIT = 256
INBOX_LIMIT = 65536
MAX_VIEWERS = 16
REFILL_EVERY = 0.05  # seconds: a viewer may take rate * REFILL_EVERY rows per such slice
_SENDER_PREFIX = 23  # the per-process part of a gravpy message id (see gravpy.message)


def row(msg: Message) -> dict[str, Any]:
    """A tail row: what the page shows of ``msg``."""
    head = msg.data[:PREVIEW_BYTES]
    try:
        text: str | None = head.decode()
    except UnicodeDecodeError:
        text = None
    parsed: Any = None
    if text is not None and len(msg.data) <= PREVIEW_BYTES:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    return {
        "type": msg.type,
        "uuid": msg.uuid,
        "sender": msg.uuid[:_SENDER_PREFIX],
        "reply_to": msg.reply_to,
        "time": msg.timestamp,
        "size": len(msg.data),
        "truncated": len(msg.data) > PREVIEW_BYTES,
        "text": text,
        "json": parsed,
        "hex": head.hex(" "),
    }


class Viewer:
    """One browser's tail: a pod filtered by ``pattern`` feeding a bounded queue of rows."""

    def __init__(self, tail: Tail, pattern: Pattern, rate: float) -> None:
        self.tail = tail
        self.pattern = pattern
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_LIMIT)
        self.shown = 0
        self.skipped = 0
        self.overflowed = False
        self.closed = False
        self.on_drop: Callable[[], None] | None = None  # told when the viewer is dropped
        self._grant = max(1, round(rate * REFILL_EVERY))
        self._tokens = self._grant
        self._refill: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.pod = tail.grav.connect(inbox_limit=INBOX_LIMIT, overflow=Overflow.DROP_OLDEST)
        self.pod.on_type(pattern.text, self._offer)

    def _offer(self, msg: Message) -> None:
        """The pod's handler: the hot path, so an over-rate message costs one compare."""
        if self._tokens <= 0:
            self.skipped += 1
            return
        self._tokens -= 1
        if self._refill is None:
            self._refill = self._loop.call_later(REFILL_EVERY, self._top_up)
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(row(msg))
        except asyncio.QueueFull:
            self.overflowed = True
            self.tail.viewers_dropped += 1
            self.pod.disconnect()
            self._wake()
            if self.on_drop is not None:
                self.on_drop()
            return
        self.shown += 1

    def _top_up(self) -> None:
        self._refill = None
        self._tokens = self._grant

    def _wake(self) -> None:
        """Make a waiting ``next_rows`` return (the queue is full or the tail closes)."""
        if self.queue.empty():
            self.queue.put_nowait(None)

    async def next_rows(self, limit: int = 64) -> list[dict[str, Any]]:
        """Wait for at least one row; return up to ``limit`` (empty once dropped or closed)."""
        first = await self.queue.get()
        rows = [] if first is None else [first]
        while len(rows) < limit and not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None:
                rows.append(item)
        return [] if self.overflowed or self.closed else rows

    def statistics(self) -> dict[str, Any]:
        stats = self.pod.statistics()
        return {
            "pattern": self.pattern.text,
            "shown": self.shown,
            "skipped": self.skipped,
            "inbox_dropped": stats.dropped_overflow,
            "dropped": self.overflowed,
        }

    def close(self) -> None:
        self.closed = True
        if self._refill is not None:
            self._refill.cancel()
        self.pod.disconnect()
        self._wake()


class Tail:
    """Every viewer of this node's tail; at most ``MAX_VIEWERS`` at once."""

    def __init__(self, grav: Grav, *, rate: float = 200.0) -> None:
        self.grav = grav
        self.rate = rate
        self.viewers: set[Viewer] = set()
        self.viewers_dropped = 0
        self.viewers_refused = 0

    def open(self, pattern: Pattern) -> Viewer | None:
        """A new viewer on ``pattern``, or None when ``MAX_VIEWERS`` are open (counted)."""
        if len(self.viewers) >= MAX_VIEWERS:
            self.viewers_refused += 1
            return None
        viewer = Viewer(self, pattern, self.rate)
        self.viewers.add(viewer)
        return viewer

    def release(self, viewer: Viewer) -> None:
        viewer.close()
        self.viewers.discard(viewer)

    def close(self) -> None:
        """End every viewer's stream (the monitor is shutting down)."""
        for viewer in list(self.viewers):
            self.release(viewer)

    def statistics(self) -> dict[str, Any]:
        return {
            "viewers": len(self.viewers),
            "viewers_dropped": self.viewers_dropped,
            "viewers_refused": self.viewers_refused,
            "rate_per_viewer": self.rate,
        }
