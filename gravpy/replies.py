"""Replies: the waits on replies to messages sent from this node, and what they have not claimed yet.

A receipt that waits registers a *waiter* (``register``): a ``Mailbox`` keyed by the request's
uuid, one per request, owned by the pod that waits. The bus hands each reply it delivers to
``deliver`` first: a reply with a waiter goes into its mailbox (and not to the asking pod's
handler); one without is *unclaimed* and kept for a wait that starts later, every reply of it, as
a request may get several. A request can also fail before anyone waits (a failure reply,
``gravpy.failure``, or a bridge's ``NoResponders``): the error is kept the same way and ends the
first wait on it, after the replies that came first.

Both are bounded by request (``RecentMap``, ``unclaimed_replies`` of the bus): what the oldest
requests left is forgotten first. A reply to a request that came from another node is not kept:
it travels back there (``MeshPort.asked_elsewhere``).

With a mesh, a wait that starts is told to it (``MeshPort.reply_wait_started``), which says if no
link can carry a reply now; the wait then fails at once, unless a pod here may still answer.
"""

from __future__ import annotations

from collections.abc import Callable

from gravpy._mailbox import Mailbox
from gravpy.errors import PodDisconnected, UsageError
from gravpy.failure import failure_of
from gravpy.message import Message
from gravpy.pod import Pod
from gravpy.ports import MeshPort
from gravpy.recent import RecentMap

__all__ = ["Replies"]


class Replies:
    """The reply waiters of one bus, with the replies and failures that came before their wait.

    ``may_answer_here(msg_type, asker)``: True if a pod here other than ``asker`` may answer a
    request of ``msg_type`` (the bus's routes know; "": a type not known, which it may).
    """

    def __init__(self, limit: int, may_answer_here: Callable[[str, Pod], bool]) -> None:
        self.mesh: MeshPort | None = None  # set by ``Bus.attach_mesh``
        self._may_answer_here = may_answer_here
        self._waiters: dict[str, tuple[Pod, Mailbox]] = {}
        self._unclaimed: RecentMap[str, list[Message]] = RecentMap(max(2, limit))
        self._failed: RecentMap[str, Exception] = RecentMap(max(2, limit))

    def deliver(self, msg: Message) -> Pod | None:
        """Give the reply ``msg`` to its waiter and return the pod that waits; None if nobody
        waits yet (then it is kept for a later wait)."""
        waiting = self._waiters.get(msg.reply_to)
        if waiting is None:
            self._keep_unclaimed(msg)
            return None
        waiting[1].offer(msg)
        return waiting[0]

    def deliver_failure(self, msg: Message) -> bool:
        """A failure reply (``gravpy.failure``): end the wait it answers; True if it was one."""
        error = failure_of(msg)
        if error is None:
            return False
        self.request_failed(msg.reply_to, error)
        return True

    def _keep_unclaimed(self, msg: Message) -> None:
        """Keep a reply nobody waits for yet, unless its request came from another node."""
        if self.mesh is not None and self.mesh.asked_elsewhere(msg.reply_to):
            return
        kept = self._unclaimed.get(msg.reply_to)
        if kept is None:
            self._unclaimed[msg.reply_to] = [msg]
        else:
            kept.append(msg)

    def request_failed(self, request_uuid: str, error: Exception) -> None:
        """End the wait on replies to ``request_uuid`` with ``error``; kept for a wait that starts
        later (bounded, as unclaimed replies are)."""
        waiting = self._waiters.get(request_uuid)
        if waiting is not None:
            waiting[1].fail(error)
        else:
            self._failed[request_uuid] = error

    def register(self, uuid: str, pod: Pod, msg_type: str) -> Mailbox:
        """A mailbox that receives the replies to message ``uuid`` (one waiter per message).

        ``msg_type`` is the request's type: the mesh then tracks which links could answer it.
        """
        if pod.closed:
            raise PodDisconnected(pod.close_reason)
        if uuid in self._waiters:
            raise UsageError(f"a wait on the reply to {uuid} is already in progress")
        mailbox = Mailbox()
        early = self._unclaimed.pop(uuid, None)
        if early is not None:
            for reply in early:
                mailbox.offer(reply)
        failed = self._failed.pop(uuid, None)
        if failed is None and self.mesh is not None:
            cut_off = self.mesh.reply_wait_started(uuid, msg_type)
            if cut_off is not None and not self._may_answer_here(msg_type, pod):
                failed = cut_off  # (a pod here may still answer: wait for it)
        if failed is not None:
            mailbox.fail(failed)  # (after the replies that came first: ``early``)
        self._waiters[uuid] = (pod, mailbox)
        return mailbox

    def unregister(self, uuid: str, mailbox: Mailbox) -> None:
        """The wait with ``mailbox`` is over: forget it (not a later wait on the same uuid)."""
        waiting = self._waiters.get(uuid)
        if waiting is not None and waiting[1] is mailbox:
            del self._waiters[uuid]

    def fail_waits(self, uuids: list[str], error: BaseException) -> int:
        """End the waits on replies to these messages with ``error`` (the hub: a link died);
        return how many there were."""
        failed = 0
        for uuid in uuids:
            waiting = self._waiters.get(uuid)
            if waiting is not None:
                waiting[1].fail(error)
                failed += 1
        return failed

    def pod_detached(self, pod: Pod) -> None:
        """End and forget the waits of a closed pod (``PodDisconnected``)."""
        for uuid, (owner, mailbox) in list(self._waiters.items()):
            if owner is pod:
                del self._waiters[uuid]
                mailbox.fail(PodDisconnected(pod.close_reason))

    def close(self) -> None:
        """The bus closed: end and forget every wait."""
        for _, mailbox in self._waiters.values():
            mailbox.fail(PodDisconnected("the bus closed"))
        self._waiters.clear()

    def unclaimed(self) -> int:
        """How many replies are kept for a wait that has not started."""
        return sum(len(kept) for _, kept in self._unclaimed.items())
