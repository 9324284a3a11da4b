"""``NodeWatcher``: gravd's own notable events, seen from outside the hub.

Theory of operation. The watcher keeps the last snapshot of ``grav.peers()`` and of the hub's and
bus's counters. It wakes at every change of links or interests (``hub.wait_changed()``) and at
least every ``interval`` seconds (drops change no link, so they have no wake-up of their own), and
turns what differs into events:

- a link that opened: ``peer linked`` (``leaf linked`` for an attached app, at debug severity);
- a link that went away: ``peer lost`` (a warning, informational if the peer withdrew first);
- a handshake refused, by reason code (``peer refused``, metadata ``reason``): a warning, except
  ``duplicate`` and ``self``, which are routine when two nodes dial each other (debug);
- drops of one reason growing by ``drop_threshold`` or more since the last report
  (``messages dropped``), and handler failures likewise (``pod handler_failed``).

Each check reads every link (``grav.peers()``, the hub's drop totals), so a burst of changes is
checked once: the watcher waits ``settle`` seconds after the first change before it looks. Under
a 2,000-connection flood a check per link event took 10-25 ms of loop time each, one after
another, and ``/healthz`` waited behind them.

It reads only public snapshots: the hub is not changed for it. A hook in the hub reporting each
link event (with the refused peer and the close reason) would be exact where this is a diff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from gravpy.events.event import Event, EventError, Severity, check_uuid
from gravpy.grav import Grav
from gravpy.mesh import PeerInfo
from gravpy.proto import ROLE_LEAF

__all__ = ["DROP_THRESHOLD", "NodeWatcher"]

_log = logging.getLogger("gravpy.daemon.events_watch")
DROP_THRESHOLD: Final = 1000
_ROUTINE_REFUSALS: Final = frozenset({"duplicate", "self"})

Record = Callable[[Event], Awaitable[None]]


class NodeWatcher:
    """Records gravd's link, refusal and drop events through ``record``. Run ``run()`` in a task."""

    def __init__(
        self,
        grav: Grav,
        record: Record,
        *,
        drop_threshold: int = DROP_THRESHOLD,
        interval: float = 1.0,
        settle: float = 0.25,
    ) -> None:
        self.grav = grav
        self.record = record
        self.drop_threshold = drop_threshold
        self.interval = interval
        self.settle = settle  # after a change, how long to let a burst of changes gather
        self._peers: dict[str, PeerInfo] = {}
        self._refused: dict[str, int] = {}
        self._drops: dict[str, int] = {}

    async def run(self) -> None:
        """Watch until cancelled."""
        hub = self.grav.hub
        self._peers = self._open_links()
        self._refused = dict(hub.admission.rejected) if hub else {}
        self._drops = self._drop_counts()
        while True:
            try:
                async with asyncio.timeout(self.interval):
                    if hub is not None:
                        await hub.wait_changed()
                    else:
                        await asyncio.Event().wait()
                await asyncio.sleep(self.settle)  # the rest of a burst of changes: one check
            except TimeoutError:
                pass
            await self.check()

    async def check(self) -> None:
        """Compare with the last snapshot and record what changed."""
        for event in self._link_events() + self._refusal_events() + self._drop_events():
            await self.record(event)

    def _open_links(self) -> dict[str, PeerInfo]:
        return {p.uuid: p for p in self.grav.peers() if p.state == "open" and p.uuid}

    def _link_events(self) -> list[Event]:
        now = self._open_links()
        events = [_linked(info) for uuid, info in now.items() if uuid not in self._peers]
        events += [_lost(info) for uuid, info in self._peers.items() if uuid not in now]
        self._peers = now
        return events

    def _refusal_events(self) -> list[Event]:
        hub = self.grav.hub
        if hub is None:
            return []
        counts = dict(hub.admission.rejected)  # not hub.statistics(): that reads every link
        events = [
            _refused(reason, n - self._refused.get(reason, 0), n)
            for reason, n in sorted(counts.items())
            if n > self._refused.get(reason, 0)
        ]
        self._refused = counts
        return events

    def _drop_counts(self) -> dict[str, int]:
        stats = self.grav.statistics()
        counts = {
            "inbox_overflow": stats.dropped_overflow,
            "handler_failed": stats.dropped_failed,
            "handler_failures": stats.handler_failures,
        }
        hub = self.grav.hub
        if hub is not None:
            h = hub.statistics()
            counts.update(link=h.dropped_link, no_route=h.dropped_no_route)
        return counts

    def _drop_events(self) -> list[Event]:
        events = []
        for reason, total in self._drop_counts().items():
            grown = total - self._drops.get(reason, 0)
            if grown >= self.drop_threshold:
                events.append(_dropped(self.grav.node_uuid, reason, grown, total))
                self._drops[reason] = total
        return events


def _event(
    category: str, action: str, severity: Severity, text: str, about: str, meta: dict[str, Any]
) -> Event:
    builder = Event.builder().with_category(category).with_action(action).with_severity(severity)
    try:
        builder.acted_upon(check_uuid("acted_upon", about))
    except EventError:  # a node named by the app with a uuid that is not a UUID
        meta = {**meta, "node": about}
    return builder.with_description(text).with_metadata(meta).build()


def _linked(info: PeerInfo) -> Event:
    leaf = info.role == ROLE_LEAF
    return _event(
        info.role,
        "linked",
        Severity.DEBUG if leaf else Severity.SUCCESS,
        f"{info.role} {info.uuid} linked over {info.transport}",
        info.uuid,
        {"endpoint": info.endpoint, "transport": info.transport, "address": info.remote_address},
    )


def _lost(info: PeerInfo) -> Event:
    leaf = info.role == ROLE_LEAF
    calm = leaf or info.withdrawn
    return _event(
        info.role,
        "lost",
        Severity.DEBUG if leaf else (Severity.INFORMATIONAL if calm else Severity.WARNING),
        f"{info.role} {info.uuid} is gone" + (" (it withdrew)" if info.withdrawn else ""),
        info.uuid,
        {"endpoint": info.endpoint, "withdrew": info.withdrawn, "dropped": info.dropped},
    )


def _refused(reason: str, new: int, total: int) -> Event:
    routine = reason in _ROUTINE_REFUSALS
    builder = (
        Event.builder()
        .with_category("peer")
        .with_action("refused")
        .with_severity(Severity.DEBUG if routine else Severity.WARNING)
        .with_description(f"{new} link(s) refused in the handshake: {reason}")
        .with_metadata({"reason": reason, "count": new, "total": total})
    )
    return builder.build()


def _dropped(node: str, reason: str, grown: int, total: int) -> Event:
    failures = reason == "handler_failures"
    return _event(
        "pod" if failures else "messages",
        "handler_failed" if failures else "dropped",
        Severity.WARNING,
        f"{grown} {'handler failures' if failures else 'messages dropped'} ({reason}) "
        f"since the last report; {total} in all",
        node,
        {"reason": reason, "count": grown, "total": total},
    )
