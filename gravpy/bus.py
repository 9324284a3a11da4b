"""The in-process router: pods, routes by type, the replay buffer; reply waiters in ``Replies``.

``deliver`` is the hot path: one cached lookup of the pods whose type rules admit a message's type,
then a push into each one's inbox. Nothing runs a handler inline; the pods' drains do, in order, on
later turns of the event loop, so a sender never waits on a receiver and a message that a pod sends
is never delivered before ``send`` returns (which is why a waiter registered right after ``send`` can
never miss a reply).

The mesh plugs in through one typed port, ``MeshPort`` (``attach_mesh``): the bus asks it to check
and forward what local pods send, whether a request came from another node, and tells it when the
local interests changed. The mesh injects remote messages with ``deliver``.

With a mesh, a message is sent once: ``send`` refuses, before any delivery, a uuid this node sent
or received recently, since every other node that saw it would drop it as a duplicate; the
router's seen-set decides (``forward_local`` raises), with the insert it makes anyway. Without a
mesh nothing drops a copy, and the bus keeps no ids: a message sent twice is delivered twice.

Groups (``gravpy.groups``): a route is the ungrouped pods plus, per group, its members. ``deliver``
gives a message to one member of each group it is told to place here (``placed``; ``None``, as
without a mesh, means every group): the next member in turn that admits it, skipping members whose
inbox is congested while another has room. With a mesh, the hub's router first decides which
groups of a locally sent message stay here (``forward_local`` returns them).

``deliver`` hands a reply to the bus's ``Replies`` (``gravpy.replies``) first: the waiting receipt
gets it, or it is kept for a later wait. The reply waiter methods of ``PodHost`` pass through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any

from gravpy import _log as logs
from gravpy._mailbox import Mailbox
from gravpy._tasks import TaskSupervisor
from gravpy.buffer import MsgBuffer
from gravpy.congestion import Congestion
from gravpy.consumer import check_overflow
from gravpy.counters import BusStatistics, RetiredCounts
from gravpy.errors import PodDisconnected, UsageError
from gravpy.failure import FAILURE_TYPE
from gravpy.groups import GROUP_HEADER
from gravpy.message import Message
from gravpy.pod import Overflow, Pod
from gravpy.ports import MeshPort
from gravpy.receipt import MsgReceipt
from gravpy.replies import Replies
from gravpy.timings import Timings

__all__ = ["Bus", "BusStatistics", "MeshPort"]

_log = logs.get_logger("gravpy.bus")

_Groups = tuple[tuple[str, tuple[Pod, ...]], ...]  # (group, its members) admitting a type
# The receivers of one type: ungrouped pods, ungrouped pods with uuid rules, and groups.
_Route = tuple[tuple[Pod, ...], tuple[Pod, ...], _Groups]
_NO_GROUPS: Mapping[str, int] = {}


def _count(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (not a bool), else ``UsageError``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _check_headers(msg: Message) -> None:
    """``UsageError`` unless ``msg``'s headers are None or a dict without the routers' header."""
    # (getattr: compiled, a plain read checks the declared type first, raising TypeError)
    headers: object = getattr(msg, "headers")  # noqa: B009
    if headers is not None:
        if type(headers) is not dict:
            raise UsageError(f"a message's headers are a dict, got {type(headers).__name__}")
        if GROUP_HEADER in headers:
            raise UsageError(f"the header {GROUP_HEADER!r} is reserved for the mesh's routers")


def resent_error(msg: Message) -> UsageError:
    """The error for a message sent again, or a received one sent on: a uuid reaches each pod
    once (across the mesh, every node that saw it drops it as a duplicate)."""
    return UsageError(
        f"message {msg.uuid} was already sent or received on this node: a message is delivered "
        "once per uuid, so send a new one (Message.new, Message.new_reply)"
    )


def _weights(groups: _Groups, sender: Pod | None) -> dict[str, int]:
    """How many members (``sender`` aside) each of ``groups`` has; groups left empty omitted."""
    weights: dict[str, int] = {}
    for name, members in groups:
        n = len(members) - (sender in members) if sender is not None else len(members)
        if n:
            weights[name] = n
    return weights


class Bus:
    """Routes messages between the pods of one process. Use it through ``Grav``."""

    def __init__(
        self,
        *,
        buffer_size: object = 128,
        inbox_limit: object = 10_000,
        overflow: Overflow = Overflow.DROP_NEWEST,
        failure_limit: object = 64,
        max_attempts: object = 16,
        unclaimed_replies: object = 1024,
        stall_step: float = 0.25,
        hold_budget: float = 3.0,
        buffer: MsgBuffer | None = None,
        timings: Timings | None = None,
    ) -> None:
        # object, checked here: a wrong type is a UsageError in the mypyc-compiled build too
        inbox_limit = _count("inbox_limit", inbox_limit)
        failure_limit = _count("failure_limit", failure_limit)
        max_attempts = _count("max_attempts", max_attempts)
        unclaimed_replies = _count("unclaimed_replies", unclaimed_replies)
        self.buffer = MsgBuffer(buffer_size) if buffer is None else buffer
        if inbox_limit < self.buffer.limit:
            raise UsageError("inbox_limit must be at least buffer_size, or a replay would overflow")
        self.inbox_limit = inbox_limit
        self.overflow = check_overflow(overflow)
        self.failure_limit = failure_limit
        self.max_attempts = max_attempts
        self._mesh: MeshPort | None = None
        # which pods, links and bridges are congested; ``Pod.publish`` waits through it
        self.congestion = Congestion(stall_step, hold_budget)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pods: dict[int, Pod] = {}
        self._next_id = 1
        self._routes: dict[str, _Route] = {}
        self._turns: dict[str, int] = {}  # group -> where its next member pick starts
        self.replies = Replies(unclaimed_replies, self._may_answer_here)  # the mesh's too
        self._tasks = TaskSupervisor(_log, ignore=(PodDisconnected,))
        self._closed = False
        self._sent = 0
        self._delivered = 0
        self._undelivered = 0
        self._group_misses = 0
        self._retired = RetiredCounts()
        self.timings = timings  # request and handler histograms, if kept (gravpy.timings)

    def attach_mesh(self, mesh: MeshPort) -> None:
        """Plug the mesh in (once): from now on what local pods send is forwarded through it."""
        if self._mesh is not None:
            raise UsageError("this bus already has a mesh")
        self._mesh = mesh
        self.replies.mesh = mesh

    # -- pods ------------------------------------------------------------------------------------

    def connect(
        self,
        *,
        replay: bool = False,
        inbox_limit: object = None,
        overflow: Overflow | None = None,
    ) -> Pod:
        """A new pod on this bus (call from a running event loop)."""
        if self._closed:
            raise UsageError("the bus is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        limit = self.inbox_limit if inbox_limit is None else inbox_limit
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise UsageError(f"inbox_limit must be an int >= 1, got {limit!r}")
        pod = Pod(
            self,
            self._next_id,
            replay=replay,
            inbox_limit=limit,
            overflow=self.overflow if overflow is None else check_overflow(overflow),
        )
        self._next_id += 1
        self._pods[pod.id] = pod
        return pod

    def detach(self, pod: Pod) -> None:
        """Forget a closed pod, keeping its counters in the totals (called by ``Pod.close``)."""
        if self._pods.pop(pod.id, None) is None:
            return
        self._retired.add(pod.statistics())
        self.replies.pod_detached(pod)
        self.routes_changed()

    def routes_changed(self) -> None:
        """Drop the route cache: a pod started or stopped receiving, or changed its filters."""
        self._routes.clear()
        if self._mesh is not None:
            self._mesh.interests_changed()

    def replay_into(self, pod: Pod) -> None:
        """Give a replaying pod the buffer: the node's, on a leaf that can ask it, else this one's."""
        if self._mesh is not None and self._mesh.replays_from_node(pod):
            return
        for msg in self.own_replay(pod):
            pod.push(msg)

    def own_replay(self, pod: Pod) -> list[Message]:
        """What this node's buffer holds for ``pod``: what it admits and did not send itself."""
        return [m for m, origin in self.buffer.entries() if origin is not pod and pod.admits(m)]

    def check_subscribable(self, pattern: str) -> None:
        """Raise ``PermissionDenied`` if the mesh lets this node receive no type of ``pattern``."""
        if self._mesh is not None:
            self._mesh.check_subscribable(pattern)

    def interests(self) -> tuple[str, ...]:
        """The type patterns local ungrouped receivers admit (``(">",)`` when one admits all)."""
        patterns: set[str] = set()
        for pod in self._pods.values():
            if not pod.receiving or pod.group is not None:
                continue
            allowed = pod.allowed_patterns()
            if allowed is None:
                return (">",)
            patterns.update(allowed)
        return tuple(sorted(patterns))

    def group_interests(self) -> tuple[tuple[str, str, int], ...]:
        """``(group, pattern, members)`` for local group members that receive: what peers learn."""
        counts: dict[tuple[str, str], int] = {}
        for pod in self._pods.values():
            if not pod.receiving or pod.group is None:
                continue
            allowed = pod.allowed_patterns()
            for pattern in (">",) if allowed is None else allowed:
                key = (pod.group, pattern)
                counts[key] = counts.get(key, 0) + 1
        return tuple(sorted((g, p, n) for (g, p), n in counts.items()))

    def group_weights(self, msg_type: str, sender: Pod | None = None) -> Mapping[str, int]:
        """How many local members (``sender`` aside) each group has for ``msg_type``."""
        route = self._routes.get(msg_type)
        if route is None:
            route = self._route(msg_type)
        groups = route[2]
        return _weights(groups, sender) if groups else _NO_GROUPS

    # -- the hot path ----------------------------------------------------------------------------

    def send(self, msg: Message, sender: Pod) -> MsgReceipt:
        """Deliver ``msg`` locally and hand it to the mesh; see ``Pod.send``. With a mesh,
        ``UsageError``, nothing delivered, for a uuid sent or received here recently
        (``resent_error``)."""
        if self._closed:
            raise PodDisconnected("the bus is closed")
        if msg.__class__ is not Message:
            raise UsageError(f"expected a Message, got {type(msg).__name__}")
        _check_headers(msg)
        mesh = self._mesh
        if mesh is None:
            self._sent += 1
            n = self.deliver(msg, sender)
        else:
            mesh.check_sendable(msg)
            route = self._routes.get(msg.type)
            if route is None:
                route = self._route(msg.type)
            groups = route[2]
            local = _NO_GROUPS if not groups or msg.reply_to else _weights(groups, sender)
            seq = mesh.sequence()
            # (refuses a uuid seen here; before ``_sent`` and ``deliver``: it was never sent)
            n, placed = mesh.forward_local(msg, local, seq)
            self._sent += 1
            n += self.deliver(msg, sender, placed, seq, route)
        if n == 0:
            if mesh is not None and mesh.wanted(msg):  # wanted, but each link refused it (its
                return MsgReceipt(msg.uuid, msg.type, sender, False, dropped=True)  # queue full)
            self._undelivered += 1
            return MsgReceipt(msg.uuid, msg.type, sender, True, why=self.no_responders_why())
        return MsgReceipt(msg.uuid, msg.type, sender, False)

    def deliver(
        self,
        msg: Message,
        sender: Pod | None = None,
        placed: Collection[str] | None = None,
        seq: int = 0,
        route: _Route | None = None,
    ) -> int:
        """Push ``msg`` to every receiving pod that admits it (never to ``sender``); return how many.

        Ungrouped pods each get it; of each group named in ``placed`` (every group, if None) one
        member gets it. A reply that a receipt is waiting for goes to that waiter instead of the
        asking pod's handler; replies are never given to groups. ``route``: the receivers of its
        type, if the caller looked them up already.
        """
        if route is None:
            route = self._routes.get(msg.type)
            if route is None:
                route = self._route(msg.type)
        claimer: Pod | None = None
        n = 0
        if msg.reply_to:
            replies = self.replies
            if msg.type == FAILURE_TYPE and replies.deliver_failure(msg):
                return 1
            claimer = replies.deliver(msg)
            if claimer is not None:
                n = 1
        self.buffer.push(msg, sender, seq)
        pods, checked, groups = route
        n += len(pods)
        for pod in pods:
            if pod is sender or pod is claimer:
                n -= 1
                continue
            pod.push(msg)
        for pod in checked:  # pods with uuid rules: asked message by message
            if pod is not sender and pod is not claimer and pod.admits(msg):
                pod.push(msg)
                n += 1
        if groups and not msg.reply_to and (placed is None or placed):
            n += self._deliver_grouped(msg, sender, groups, placed)
        elif placed and not msg.reply_to:
            self._group_misses += len(placed)  # placed here, but its members have left
        self._delivered += n
        return n

    def _deliver_grouped(
        self, msg: Message, sender: Pod | None, groups: _Groups, placed: Collection[str] | None
    ) -> int:
        n = 0
        found = 0
        for name, members in groups:
            if placed is not None and name not in placed:
                continue
            found += 1
            pod = self._pick(name, members, msg, sender)
            if pod is None:
                self._group_misses += 1
                continue
            pod.push(msg)
            n += 1
        if placed is not None and found < len(placed):
            self._group_misses += len(placed) - found
        return n

    def _pick(
        self, name: str, members: tuple[Pod, ...], msg: Message, sender: Pod | None
    ) -> Pod | None:
        """The member of group ``name`` that gets ``msg``: the next in turn with room."""
        count = len(members)
        start = self._turns.get(name, 0)
        fallback: Pod | None = None
        for i in range(count):
            pod = members[(start + i) % count]
            if pod is sender or (pod.uuid_rules and not pod.admits(msg)):
                continue
            if pod.congested:
                if fallback is None or pod.queued < fallback.queued:
                    fallback = pod
                continue
            self._turns[name] = (start + i + 1) % count
            return pod
        return fallback

    def _route(self, msg_type: str) -> _Route:
        pods: list[Pod] = []
        checked: list[Pod] = []
        members: dict[str, list[Pod]] = {}
        for pod in self._pods.values():
            if pod.receiving and pod.admits_type(msg_type):
                if pod.group is not None:
                    members.setdefault(pod.group, []).append(pod)
                elif pod.uuid_rules:
                    checked.append(pod)
                else:
                    pods.append(pod)
        groups = tuple((g, tuple(m)) for g, m in sorted(members.items()))
        route = (tuple(pods), tuple(checked), groups)
        if len(self._routes) >= 4096:
            self._routes.clear()
        self._routes[msg_type] = route
        return route

    def _may_answer_here(self, msg_type: str, asker: Pod) -> bool:
        """True if a pod here other than ``asker`` receives ``msg_type`` (or the type is not
        known: it may)."""
        if not msg_type:
            return True
        route = self._routes.get(msg_type)
        if route is None:
            route = self._route(msg_type)
        pods, checked, groups = route
        receivers = (*pods, *checked, *(m for _, members in groups for m in members))
        return any(p is not asker for p in receivers)

    # -- replies (``Replies``) -------------------------------------------------------------------

    def register_reply_waiter(self, uuid: str, pod: Pod, msg_type: str = "") -> Mailbox:
        """A mailbox that receives the replies to message ``uuid``; see ``Replies.register``."""
        return self.replies.register(uuid, pod, msg_type)

    def unregister_reply_waiter(self, uuid: str, mailbox: Mailbox) -> None:
        """The wait with ``mailbox`` is over (``Replies.unregister``)."""
        self.replies.unregister(uuid, mailbox)

    def no_responders_why(self) -> str:
        """What a ``NoResponders`` adds to its type: that this app is cut off from its node, if
        it is (``MeshPort.cut_off``)."""
        return "" if self._mesh is None else self._mesh.cut_off()

    # -- tasks -----------------------------------------------------------------------------------

    def call_soon(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:  # pragma: no cover - connect() sets it before any pod exists
            loop = self._loop = asyncio.get_running_loop()
        loop.call_soon(callback)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in a task the bus owns: failures are logged, ``close()`` cancels it."""
        return self._tasks.spawn(coro, name)

    async def close(self) -> None:
        """Disconnect every pod, end every wait, and cancel and await every task the bus owns."""
        if self._closed:
            return
        self._closed = True
        for pod in list(self._pods.values()):
            pod.close("the bus closed", error=False)
        self.replies.close()
        await self._tasks.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def pods(self) -> list[Pod]:
        return list(self._pods.values())

    def statistics(self) -> BusStatistics:
        live = [p.statistics() for p in self._pods.values()]
        r = self._retired
        return BusStatistics(
            pods=len(live),
            receivers=sum(1 for p in self._pods.values() if p.receiving),
            sent=self._sent,
            delivered=self._delivered,
            dropped_overflow=r.dropped_overflow + sum(s.dropped_overflow for s in live),
            dropped_failed=r.dropped_failed + sum(s.dropped_failed for s in live),
            dropped_closed=r.dropped_closed + sum(s.dropped_closed for s in live),
            handler_failures=r.handler_failures + sum(s.failed for s in live),
            buffered=len(self.buffer),
            unclaimed_replies=self.replies.unclaimed(),
            undelivered=self._undelivered,
            group_misses=self._group_misses,
        )
