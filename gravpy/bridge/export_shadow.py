"""``ExportShadow``: what a standby bridge would export, held until the active bridge did.

Theory of operation
-------------------
Every node of a mesh sends a message that another mesh wants to every bridging node of its mesh
(each advertises what remote meshes want), but only the active bridge publishes it to NATS. If
the active bridge dies (SIGKILL, power), what it had in hand (in its link buffers, its outbox,
nats-py's pending buffer, its socket) never reaches NATS, and it held the only record.

So a standby *holds* each message it would have exported (``hold``) instead of dropping it, and
listens on NATS to what its own mesh publishes there. Hearing a held message's uuid (``heard``)
proves NATS has it: it is forgotten. If the echo comes first, the uuid is remembered (bounded)
and the message is forgotten as it arrives. When the standby stops trusting the active bridge to
export (its link to it closed, or the standby takes over), it publishes what it still holds,
oldest first, before anything newer (``take``). A message the active bridge did publish but
whose echo had not come yet is published twice with one uuid; every node of every other mesh
drops the second copy (its seen-set), and it comes after the first, so each sender's order
holds.

Bounds: at most ``limit`` messages; past it the oldest is dropped and counted ``overflow`` (lost
if a takeover followed before the echo). A message held longer than ``max_age`` without its
echo is dropped and counted ``expired``: the active bridge did not publish it (its queue was
full, counted there, or it does not route the type any more). Pure: times are passed in.
"""

from __future__ import annotations

from collections import OrderedDict

from gravpy.message import Message
from gravpy.recent import RecentMap

__all__ = ["ExportShadow"]


class ExportShadow:
    """The messages a standby bridge holds for export; see the module docstring."""

    def __init__(self, limit: int, max_age: float) -> None:
        self.limit = limit
        self.max_age = max_age
        self.overflow = 0
        self.expired = 0
        self.struck = 0  # held, then heard on NATS (or heard first)
        self._held: OrderedDict[str, tuple[Message, float]] = OrderedDict()  # uuid -> (msg, at)
        self._early: RecentMap[str, bool] = RecentMap(max(2, limit))  # heard, not yet held

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, msg: Message, now: float) -> None:
        """Keep ``msg``, which the active bridge should publish (forgotten at once if its echo
        came first)."""
        if self._early.pop(msg.uuid) is not None:
            self.struck += 1
            return
        self.expire(now)
        held = self._held
        if len(held) >= self.limit:
            held.popitem(last=False)
            self.overflow += 1
        held[msg.uuid] = (msg, now)

    def heard(self, uuid: str) -> None:
        """NATS carried the message ``uuid`` from this mesh: forget it."""
        if self._held.pop(uuid, None) is not None:
            self.struck += 1
        else:
            self._early[uuid] = True

    def expire(self, now: float) -> None:
        """Drop what was held longer than ``max_age``."""
        held = self._held
        while held and now - next(iter(held.values()))[1] > self.max_age:
            held.popitem(last=False)
            self.expired += 1

    def take(self, now: float) -> list[Message]:
        """Everything still held (not expired), oldest first; the shadow is empty afterwards."""
        self.expire(now)
        taken = [msg for msg, _ in self._held.values()]
        self._held.clear()
        return taken
