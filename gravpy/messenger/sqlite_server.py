"""The server side of ``SQLiteMessenger``: a wake-up signal and what one ``serve`` holds.

Theory of operation. SQLite cannot notify, so every waiter here also wakes after a timeout (the
poll). A ``Server`` is the state of one ``serve``: its pattern, handler and counters, the id of the
last event before it subscribed (it gets later ones only), and a bounded inbox of the published
events its messenger won for it (``Store.claim_events``); a full inbox drops the newest, counted.
Requests are not queued here: the messenger's worker claims them from the file one at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque

from gravpy.filter import Pattern
from gravpy.messenger.base import Handler, ServeCounters
from gravpy.messenger.sqlite_store import Event

__all__ = ["Server", "Signal"]


class Signal:
    """Wakes every waiter at once; a waiter also wakes after its timeout (the poll)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass


class Server:
    """One ``serve``: the publishes it won (a bounded inbox, drop newest) and its wake-up."""

    def __init__(
        self, pattern: Pattern, handler: Handler, counters: ServeCounters, limit: int, start: int
    ) -> None:
        self.pattern = pattern
        self.handler = handler
        self.counters = counters
        self.start = start  # the last event id before it subscribed
        self.inbox: deque[bytes] = deque()
        self.limit = limit
        self.wake = Signal()  # a publish in the inbox, or requests to claim

    def offer(self, data: bytes) -> None:
        """Queue a published event's data; a full inbox drops it (counted)."""
        if len(self.inbox) >= self.limit:
            self.counters.refused()
            return
        self.inbox.append(data)
        self.wake.notify()

    def wants(self, event: Event) -> bool:
        """True for an event published after this server subscribed, on a subject it serves."""
        return event.id > self.start and self.pattern.matches(event.subject)
