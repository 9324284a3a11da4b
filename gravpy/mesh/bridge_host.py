"""The mesh's side of its bridges: what a bridge may ask of this node, and what it is offered.

Theory of operation
-------------------
A bridge (``gravpy.bridge``, e.g. to NATS) carries this mesh's messages to other meshes and back.
It sees the node only through ``BridgeHost`` (``gravpy.bridge.port``), which ``Bridges``
implements: the node's uuid and mesh name, a check before a message enters, ``inject`` for a
message from outside (delivered here and forwarded like a local one, once: its uuid joins the
seen-set; the groups the bridge says were placed in this mesh are placed here or on one link
each, as the router places a local message's), and two signals back (its advertised interests changed; its queue is congested, so
publishers wait). The other way, every message this node delivers or forwards is ``offer``-ed to
each bridge, and each bridge hears what the mesh wants (``tell``) whenever interests change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from gravpy.bridge.port import BridgePort, MeshInterests
from gravpy.bus import Bus
from gravpy.errors import NoResponders
from gravpy.failure import no_responders_reply
from gravpy.groups import marked
from gravpy.message import Message
from gravpy.proto import NodeInfo

if TYPE_CHECKING:
    from gravpy.mesh.peer_link import PeerLink
    from gravpy.mesh.routing import Router

__all__ = ["Bridges"]


class Bridges:
    """The bridges of one node, and the ``BridgeHost`` each of them is bound to."""

    def __init__(
        self,
        bus: Bus,
        router: Router[PeerLink],
        local: NodeInfo,
        *,
        sendable: Callable[[Message], None],
        fits_plain: Callable[[int, int], bool],
        permitted: Callable[[Message, tuple[PeerLink, ...]], tuple[PeerLink, ...]],
        changed: Callable[[], None],
    ) -> None:
        self._bus = bus
        self._router = router
        self._local = local
        # (the traffic's own check, not a method calling it: it runs on every imported message)
        self.check_sendable: Callable[[Message], None] = sendable
        self.fits_plain: Callable[[int, int], bool] = fits_plain  # (``Traffic.fits_plain``)
        self._permitted = permitted  # the links whose identity may receive a message
        self._changed = changed
        self.attached: list[BridgePort] = []

    def attach(self, bridge: BridgePort) -> None:
        """Carry this mesh's messages across ``bridge`` (before the node starts)."""
        self.attached.append(bridge)
        bridge.bind(self)

    def offer(self, msg: Message) -> int:
        """Offer ``msg`` to every bridge; return how many took it."""
        n = 0
        for bridge in self.attached:  # (a loop: no generator made per message)
            n += bridge.offer(msg)
        return n

    def advertised(self) -> set[str]:
        """What the bridges bring from other meshes (part of what this node reaches)."""
        return {p for bridge in self.attached for p in bridge.advertised()}

    def tell(self, peers: dict[str, tuple[str, ...]]) -> None:
        """Tell every bridge what this mesh wants: the local pods' patterns and each peer's, and
        the group members here and behind each open peer link."""
        if not self.attached:
            return
        groups = list(self._bus.group_interests())
        for link in self._router.peers.values():
            if link.is_open:
                groups.extend(link.group_interests)
        interests = MeshInterests(self._bus.interests(), peers, tuple(groups))
        for bridge in self.attached:
            bridge.mesh_interests(interests)

    # -- BridgeHost ------------------------------------------------------------------------------

    @property
    def node_uuid(self) -> str:
        return self._local.node_uuid

    @property
    def mesh_name(self) -> str:
        return self._local.belongs_to

    def no_responders(self, request_uuid: str, msg_type: str) -> None:
        """Nothing beyond a bridge answers ``request_uuid``: its asker's wait fails. A request
        asked here fails in the bus, with no message made (a bridge exporting to no subscriber
        hears this for every message it publishes); one from another node gets the failure
        reply, which travels back there."""
        if self._router.asked_elsewhere(request_uuid):
            self.inject(no_responders_reply(request_uuid, msg_type))
        else:
            self._bus.replies.request_failed(request_uuid, NoResponders(msg_type))

    def inject(self, msg: Message, groups: Collection[str] | None = None) -> int:
        """A message from outside the mesh: deliver it here and forward it like a local one
        (only to the links whose identity may receive it), placing one copy in this mesh for
        each of ``groups`` (None: every group admitting it).

        Returns how many pods and links took it, or -1 for a duplicate (its uuid was seen).
        """
        router = self._router
        targets = router.from_outside(msg)
        if targets is None:
            return -1
        if targets:
            targets = self._permitted(msg, targets)
        bus = self._bus
        if msg.reply_to or groups == () or not router.has_groups(msg.type):
            n = bus.deliver(msg, None, groups)
            for link in targets:
                n += link.enqueue(msg)
            return n
        placement = router.place(msg, None, bus.group_weights(msg.type), groups)
        n = bus.deliver(msg, None, placement.local)
        chosen = dict(placement.links)
        for link in targets:  # a link chosen for groups gets the marked copy instead
            named = chosen.pop(link, None)
            n += link.enqueue(msg if named is None else marked(msg, named))
        for link, named in chosen.items():
            n += link.enqueue(marked(msg, named))
        return n

    def redeliver(self, msg: Message) -> int:
        """A message from outside that this node already has, delivered again by a bridge that
        takes over (``gravpy.bridge.shadow``): pass it on to the links it goes to, where a node
        that has it drops it, and not to this node's pods again. Group copies are not placed
        again (where the old bridge placed them is not known here). Returns how many links took
        it."""
        n = 0
        for link in self._permitted(msg, self._router.passed_on(msg)):
            n += link.enqueue(msg)
        return n

    def bridge_changed(self) -> None:
        """A bridge's ``advertised()`` changed: tell every peer."""
        self._changed()

    def peer_wants(self, node: str, msg_type: str) -> bool:
        """True if this node has an open link to ``node`` and ``node`` said it admits
        ``msg_type`` (so a node of a full mesh sending ``msg_type`` sends it there too)."""
        link = self._router.peers.get(node)
        return link is not None and link.is_open and link.wants(msg_type)

    def bridge_congested(self, sink: object, congested: bool) -> None:
        """A bridge's queue passed its high-water mark (or fell back): publishers wait meanwhile."""
        if congested:
            self._bus.congestion.mark_congested(sink)
        else:
            self._bus.congestion.relieve(sink)
