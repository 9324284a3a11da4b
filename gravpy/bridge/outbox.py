"""The ``Outbox``: what waits to be published to NATS, bounded, and the losses, by reason.

The hub's hot path appends (``put``, never blocking: a full outbox drops the newest and counts
``queue_full``; a message whose command nats-server would refuse is counted by the reason
``gravpy.bridge.wire.refusal`` gives, ``bad_subject`` or ``subject_too_long``, and one over the
server's ``max_payload`` with its headers, ``too_large``, are never sent; ``refused`` keeps the
reason of the last one refused, so the exporter can tell its asker: ``gravpy.bridge.exporter``);
one task per connection (``publish_all``) publishes what is queued in batches of
``BATCH`` (each batch one nats-py command: ``gravpy.bridge.wire``), yielding after each so
nats-py writes a batch in one flush while more arrive. Past
``high_water`` messages the outbox tells its ``Backpressure`` it is congested (so ``Pod.publish``
waits, as it does for a full link), and relieves it below half of that. Publishing fails only while nats-py reconnects with its pending buffer full, or after the
connection closed; each such message is counted under the nats-py error's name. What leaves on a
type subject is numbered (``gravpy.bridge.sequence``), so importers count what NATS loses after.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from gravpy.bridge.sequence import STAMP_MAX, Numbering
from gravpy.bridge.wire import Outgoing, WireClient, hpub_size, refusal

__all__ = ["BATCH", "MAX_PAYLOAD", "Backpressure", "Outbox", "Outgoing"]

BATCH = 256
MAX_PAYLOAD = 1024 * 1024  # nats-server's default ``max_payload``, until a server says its own
_SLACK = 64 + STAMP_MAX  # over the header block's fixed part and a sequence stamp


class Backpressure(Protocol):
    """Who hears that the outbox is over its high-water mark (the hub, for the bus)."""

    def bridge_congested(self, sink: object, congested: bool) -> None: ...


class Outbox:
    """At most ``limit`` messages waiting for NATS, and what was lost on the way, by reason."""

    def __init__(self, limit: int, high_water: int) -> None:
        self.limit = limit
        self.high_water = high_water
        self.backpressure: Backpressure | None = None
        self._congested = False
        self.published = 0
        self.lost: dict[str, int] = {}
        self._items: deque[Outgoing] = deque()
        self.numbering = Numbering()
        self._ready = asyncio.Event()
        self._nc: WireClient | None = None  # while nothing is on its way to it
        self.max_payload = MAX_PAYLOAD  # the connected server's (``NatsBridge`` keeps it)
        self.refused = ""  # why the last message refused was (``refuse``): a ``lost`` reason

    def __len__(self) -> int:
        return len(self._items)

    def put(self, out: Outgoing, clean: bool = False) -> bool:
        """Queue ``out``, or with nothing queued before it hand it to nats-py at once (a
        request or reply waits for no task); False (and counted) if the outbox is full, or if
        nats-server would refuse its command (``gravpy.bridge.wire.refusal``), or its payload
        and headers, once numbered, would be over the server's ``max_payload`` (``too_large``:
        the server would close the connection, and what was in flight on it would be lost);
        the reason is then ``refused``. ``clean``: the caller knows nats-server takes its
        command (``Exporter._never_refused``)."""
        if not clean:
            refused = refusal(out)
            if refused is not None:
                return self.refuse(refused)
        # (the usual message fits even were every header character 4 bytes: no encoding needed)
        roomy = len(out[2]) + 4 * (len(out[3]) + len(out[4])) <= self.max_payload - _SLACK
        if not roomy and self._over(out):
            return self.refuse("too_large")
        nc = self._nc
        if nc is not None and not self._items and nc.publish_now(out, self._numbered):
            self.published += 1
            return True
        if len(self._items) >= self.limit:
            return self.refuse("queue_full")
        self._items.append(out)
        self._ready.set()
        if len(self._items) > self.high_water and not self._congested:
            self._set_congested(True)
        return True

    def refuse(self, reason: str) -> bool:
        """Count a message not sent for ``reason`` and keep that as ``refused``; returns False
        (what ``put`` returns for it). Only refusals pay for this: the usual message does not."""
        self.refused = reason
        self.count(reason)
        return False

    def _over(self, out: Outgoing) -> bool:
        """True if ``out``'s payload and headers, once numbered, are over ``max_payload``."""
        return hpub_size(out) + (STAMP_MAX if out[1] else 0) > self.max_payload

    def drop_all(self, reason: str) -> None:
        """Count everything still queued as lost for ``reason`` and forget it."""
        for _ in range(len(self._items)):
            self.count(reason)
        self._items.clear()
        self._set_congested(False)

    def _set_congested(self, congested: bool) -> None:
        if congested != self._congested:
            self._congested = congested
            if self.backpressure is not None:
                self.backpressure.bridge_congested(self, congested)

    def count(self, reason: str, n: int = 1) -> None:
        self.lost[reason] = self.lost.get(reason, 0) + n

    async def publish_all(self, nc: WireClient) -> None:
        """Publish what is queued on ``nc``, for as long as the connection is served."""
        items = self._items
        try:
            while True:
                self._nc = nc  # (what is queued was handed over: ``put`` may hand over too)
                await self._ready.wait()
                self._ready.clear()
                while items:
                    self._nc = None  # a batch on its way: ``put`` queues behind it
                    batch = self._next_batch()
                    self.published += await nc.publish_batch(batch, self.count)
                    if self._congested and len(items) <= self.high_water // 2:
                        self._set_congested(False)
                    await asyncio.sleep(0)  # let nats-py flush this batch, the mesh send more
        finally:
            self._nc = None

    def _next_batch(self) -> list[Outgoing]:
        """Up to ``BATCH`` queued messages, numbered as they leave."""
        items, numbered = self._items, self._numbered
        return [numbered(items.popleft()) for _ in range(min(BATCH, len(items)))]

    def _numbered(self, out: Outgoing) -> Outgoing:
        """``out`` numbered if it leaves on a type subject (``gravpy.bridge.sequence``; a reply,
        sent to an inbox, has no reply subject)."""
        if not out[1]:
            return out
        subject, reply, data, meta, extra = out
        return (subject, reply, data, meta + self.numbering.stamp(subject), extra)
