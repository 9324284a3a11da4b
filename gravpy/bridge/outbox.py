"""The ``Outbox``: what waits to be published to NATS, bounded, and the losses, by reason.

The hub's hot path appends (``put``, never blocking: a full outbox drops the newest and counts
``queue_full``); one task per connection (``publish_all``) publishes everything queued without
yielding between messages, so nats-py writes the whole burst in one flush when the task waits
again. Publishing fails only while nats-py reconnects with its pending buffer full, or after the
connection closed; each such message is counted under the nats-py error's name.
"""

from __future__ import annotations

import asyncio
from collections import deque

from nats.aio.client import Client
from nats.errors import Error as NatsError

__all__ = ["Outbox", "Outgoing"]

Outgoing = tuple[str, str, bytes, dict[str, str]]  # subject, reply subject, payload, headers


class Outbox:
    """At most ``limit`` messages waiting for NATS, and what was lost on the way, by reason."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.published = 0
        self.lost: dict[str, int] = {}
        self._items: deque[Outgoing] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, out: Outgoing) -> bool:
        """Queue ``out``; False (and counted) if the outbox is full."""
        if len(self._items) >= self.limit:
            self.count("queue_full")
            return False
        self._items.append(out)
        self._ready.set()
        return True

    def count(self, reason: str) -> None:
        self.lost[reason] = self.lost.get(reason, 0) + 1

    async def publish_all(self, nc: Client) -> None:
        """Publish what is queued on ``nc``, for as long as the connection is served."""
        items = self._items
        while True:
            await self._ready.wait()
            self._ready.clear()
            while items:
                subject, reply, data, headers = items.popleft()
                try:
                    await nc.publish(subject, data, reply=reply, headers=headers)
                except NatsError as exc:  # pending buffer full while reconnecting, or closed
                    self.count(type(exc).__name__)
                    continue
                self.published += 1
