"""``Congestion``: which receivers of one process are over their high-water mark, and how long
the ones who feed them wait.

Theory of operation
-------------------
A *sink* is anything that queues what this process sends: a pod's inbox, a link's write queue,
the bridge's outbox. Past its high-water mark a sink says so (``mark_congested``); below its
low-water mark it says it has room again (``relieve``), which wakes whoever waits for it.

Two kinds of waiter feed sinks. ``Pod.publish`` waits until no sink is congested
(``wait_room``); a link's reader, before it delivers more from the network, waits until no
*pod* is congested (``wait_pods``). Links and the bridge are waited for as long as they stay
congested: TCP pushes back, and that is the push-back a publisher should feel. Pods are not:
DESIGN §3 says a slow consumer never slows its publishers for long. So every waiter keeps a
``PodHold``: how long congested pods have held it, less the time it has run free since. A wait
for pods lasts one ``step`` at most; a pod that took nothing in a step (stuck), or whose
waiter's hold outgrew its ``budget`` (slow: relieving within each step, yet holding the waiter
most of the time), is *set aside*: nobody waits for it until it relieves, and meanwhile it
applies its own overflow policy, counted (``gravpy.consumer``). A burst is still waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from gravpy.pod import Pod

__all__ = ["Congestion", "PodHold"]


class PodHold:
    """How long one waiter (a link's reader, or this process's publishers) has been held by
    congested pods, less the time it ran free since (free running pays it back): what
    ``Congestion.wait_pods`` sets slow pods aside by. ``step``: the longest single wait, and the
    time a pod that takes nothing at all is given; ``budget``: the held time a slow one is
    given."""

    __slots__ = ("budget", "held", "step", "until")

    def __init__(self, step: float, budget: float) -> None:
        self.step = step
        self.budget = budget
        self.held = 0.0
        self.until = 0.0  # when the last wait ended (monotonic)


class Congestion:
    """The congested sinks of one process, and the waits for them; see the module."""

    def __init__(self, stall_step: float, hold_budget: float) -> None:
        self.stall_step = stall_step  # a publisher's step (``PodHold.step``)
        self.hold_budget = hold_budget  # ... and budget
        self._publish_hold = PodHold(stall_step, hold_budget)  # for ``wait_room``
        self._congested: set[object] = set()
        self._congested_pods: set[Pod] = set()
        self._stuck_pods: set[Pod] = set()
        self._room: asyncio.Event | None = None
        self._pod_room: asyncio.Event | None = None

    @property
    def congested(self) -> bool:
        """True while some receiver's inbox, or some link's queue, is over its high-water mark."""
        return bool(self._congested)

    @property
    def pods_congested(self) -> bool:
        """True while some local pod's inbox is over its high-water mark."""
        return bool(self._congested_pods)

    def mark_congested(self, sink: object) -> None:
        """Record that ``sink`` (a pod, a link) is over its high-water mark.

        A pod that was set aside (it made no progress) is not waited for again until it relieves.
        """
        if sink in self._stuck_pods:
            return
        self._congested.add(sink)
        if isinstance(sink, Pod):
            self._congested_pods.add(sink)

    def relieve(self, sink: object) -> None:
        """Record that ``sink`` has room again; wakes the waits that this frees."""
        self._congested.discard(sink)
        self._congested_pods.discard(sink)
        self._stuck_pods.discard(sink)
        if not self._congested and self._room is not None:
            self._room.set()
        if not self._congested_pods and self._pod_room is not None:
            self._pod_room.set()

    async def wait_room(self) -> None:
        """Wait until no sink is congested (``Pod.publish``): congested pods as a link waits
        for them (``wait_pods``, with this process's ``PodHold``), congested links and bridges
        for as long as they stay so."""
        while self._congested:
            if self._congested_pods:
                hold = self._publish_hold
                hold.step, hold.budget = self.stall_step, self.hold_budget
                await self.wait_pods(hold)
                continue
            if self._room is None or self._room.is_set():
                self._room = asyncio.Event()
            with contextlib.suppress(TimeoutError):  # (a pod may become congested meanwhile)
                async with asyncio.timeout(self.stall_step):
                    await self._room.wait()

    async def wait_pods(self, hold: PodHold) -> None:
        """Wait (a step of ``hold`` at most) for the congested pods to relieve. Set them aside
        if they took nothing in the step (stuck), or if ``hold``'s waits for them outgrew its
        free running by its budget (slow); from then on they drop their own overflow,
        counted."""
        start = time.monotonic()
        held = max(0.0, hold.held - (start - hold.until))
        before = self.pods_queued()
        try:
            async with asyncio.timeout(min(hold.step, max(0.0, hold.budget - held))):
                await self.wait_pod_room()
        except TimeoutError:
            end = time.monotonic()
            held += end - start
            if held >= hold.budget or self.pods_queued() >= before:
                self.set_congested_pods_aside()
                held = 0.0
        else:
            end = time.monotonic()
            held += end - start
        hold.held, hold.until = held, end

    def pods_queued(self) -> int:
        """Messages waiting in the inboxes of the congested pods (to tell progress from a stall)."""
        return sum(pod.queued for pod in self._congested_pods)

    def set_congested_pods_aside(self) -> None:
        """The congested pods made no progress: stop holding links for them until they relieve.

        They still apply their overflow policy (counted drops); other pods are not slowed by them.
        """
        self._stuck_pods.update(self._congested_pods)
        self._congested.difference_update(self._congested_pods)
        self._congested_pods.clear()
        if self._pod_room is not None:
            self._pod_room.set()
        if not self._congested and self._room is not None:
            self._room.set()

    async def wait_pod_room(self) -> None:
        """Wait until no local pod is congested (a link's reader, before it delivers more)."""
        while self._congested_pods:
            if self._pod_room is None or self._pod_room.is_set():
                self._pod_room = asyncio.Event()
            await self._pod_room.wait()
