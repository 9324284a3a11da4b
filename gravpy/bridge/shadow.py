"""``Shadow``: what a standby bridge heard from NATS that the active bridge may not have delivered.

Theory of operation
-------------------
One bridge per mesh is active: it imports what NATS carries for the mesh. If it dies (SIGKILL,
power), the others notice only when its announcements stop for ``ttl``; whatever NATS carried for
the mesh meanwhile reached no pod. So every standby bridge subscribes too, and *holds* each
message it hears (``hold``) instead of delivering it. It advertises the mesh's wants to its peers,
so the active bridge forwards what it delivers to the standby's node as well; each such message
is *struck* (``delivered``). On takeover the new active bridge delivers what is left (``take``),
in the order NATS gave it, before anything newer.

Seeing a message arrive does not prove every other node got it: the dead bridge wrote it to each
link's queue at once, but its link to another node may not have drained before the kill. So a
struck message is kept until the active bridge proves it lived ``settle`` seconds longer (its
next announcement: ``settled``), and a takeover delivers the struck messages still kept too.
The new active bridge's node has those already (their copies came there), so it passes them on
to its links without delivering them here again (``BridgeHost.redeliver``). A message delivered
twice reaches each node once: it keeps its uuid, and every node's seen-set drops the second
copy. Each sender's order holds: the dead bridge delivered a prefix of each stream on each link,
and the shadow replays from before the end of every such prefix.

A message is recognised by its uuid; a plain NATS publisher's message has none (each bridge gives
it a fresh one), so it is recognised by its origin, type and data (``PLAIN_HEADER`` marks it), and
identical plain messages are struck in turn. If the active bridge's copy reaches the standby
before NATS's does, the key is remembered (bounded) and the NATS copy is struck on arrival.

Bounds: at most ``limit`` messages are kept; past it the oldest is dropped and counted
``overflow`` (perhaps lost if a takeover follows, so the bridge reports it under ``lost``). A
message held longer than ``max_age`` (longer than any takeover takes) and never struck is dropped
and counted ``expired``: the active bridge took it but did not deliver it here (no pod wanted it
any more). Pure: times are passed in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from gravpy.bridge.subjects import ORIGIN_HEADER, PLAIN_HEADER
from gravpy.message import Message
from gravpy.recent import RecentMap

__all__ = ["Held", "Shadow", "shadow_key"]

Key = str | tuple[str, str, str, bytes]


@dataclass(frozen=True, slots=True)
class Held:
    """One message held: what ``NatsBridge`` needs to deliver it later, and when it came."""

    msg: Message
    groups: tuple[str, ...] | None
    reply: str
    at: float
    missing: int = 0  # numbers missing before it on its subject (gravpy.bridge.sequence)


def shadow_key(msg: Message) -> Key:
    """How the shadow recognises ``msg`` (a message imported from NATS) on both of its paths."""
    headers = msg.headers
    if headers is not None and PLAIN_HEADER in headers:
        return ("plain", headers.get(ORIGIN_HEADER, ""), msg.type, msg.data)
    return msg.uuid


class Shadow:
    """The messages a standby bridge holds; see the module docstring."""

    def __init__(self, limit: int, max_age: float) -> None:
        self.limit = limit
        self.max_age = max_age
        self.overflow = 0
        self.expired = 0
        self.struck = 0
        self._held: OrderedDict[int, Held] = OrderedDict()  # by number: the order NATS gave
        self._index: dict[Key, list[int]] = {}  # key -> numbers not struck yet, oldest first
        self._struck: deque[tuple[float, int]] = deque()  # (when, number), in striking order
        self._early: RecentMap[Key, int] = RecentMap(max(2, limit))  # delivered, not yet heard
        self._next = 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, held: Held) -> None:
        """Keep a message heard from NATS (struck at once if the active bridge's copy came
        first)."""
        key = shadow_key(held.msg)
        self.expire(held.at)
        if len(self._held) >= self.limit:
            self._drop_oldest()
            self.overflow += 1
        number = self._next
        self._next += 1
        self._held[number] = held
        early = self._early.pop(key)
        if early is None:
            self._index.setdefault(key, []).append(number)
            return
        if early > 1:
            self._early[key] = early - 1
        self._strike(number, held.at)

    def delivered(self, msg: Message, now: float) -> None:
        """The active bridge delivered ``msg`` into the mesh: strike it."""
        key = shadow_key(msg)
        numbers = self._index.get(key)
        if numbers is None:
            self._early[key] = self._early.get(key, 0) + 1
            return
        number = numbers.pop(0)
        if not numbers:
            del self._index[key]
        self._strike(number, now)

    def settled(self, before: float) -> None:
        """The active bridge lived on: forget what was struck before ``before``."""
        struck, held = self._struck, self._held
        while struck and struck[0][0] < before:
            held.pop(struck.popleft()[1], None)

    def expire(self, now: float) -> None:
        """Drop what was held longer than ``max_age``."""
        held = self._held
        while held and now - next(iter(held.values())).at > self.max_age:
            if self._drop_oldest():
                self.expired += 1

    def take(self, now: float) -> list[Held]:
        """Everything still kept (not expired), in the order NATS gave it; the shadow is empty
        afterwards."""
        self.expire(now)
        taken = list(self._held.values())
        self.clear()
        return taken

    def clear(self) -> None:
        self._held.clear()
        self._index.clear()
        self._struck.clear()

    def _strike(self, number: int, now: float) -> None:
        self._struck.append((now, number))
        self.struck += 1

    def _drop_oldest(self) -> bool:
        """Drop the oldest message kept; True if it had not been struck."""
        number, held = self._held.popitem(last=False)
        key = shadow_key(held.msg)
        numbers = self._index.get(key)
        if numbers is None or number not in numbers:
            return False
        numbers.remove(number)
        if not numbers:
            del self._index[key]
        return True
