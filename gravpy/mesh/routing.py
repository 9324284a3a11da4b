"""The Router: which links a message goes to. Pure and synchronous: no I/O, no event loop.

Theory of operation
-------------------
Peers form a full mesh and forward one hop. The router holds the routing table (``peers``: the one
chosen link per remote node), a bounded seen-set of message ids with the link each came from, and
the links each locally sent message went to; from those it answers three questions:

- ``from_local(msg)``: a local pod (or a leaf's message, by ``arrived``) sent ``msg``: every open
  link whose interests admit its type.
- ``arrived(msg, origin)``: ``msg`` came in on ``origin``: ``None`` if it is a duplicate (seen
  before), else the links to forward it to: leaves attached here, and the peers ``origin`` told us
  it has no link of its own to (this node relays between them; ``relays``). A message from a leaf
  goes where a local message would.
- a reply goes only back where its request came from (``from_local`` and ``arrived`` both follow
  ``reply_to`` through the seen-set), or nowhere when the request was asked here.

Target lists are cached per (origin, type) until ``routes_changed``. ``requests_lost(link)`` names
the requests that only ``link`` could have answered, so the hub can fail their waits at once.
The hub does the sending; the router only decides, so every decision is testable without sockets.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from gravpy.message import Message
from gravpy.recent import RecentMap

__all__ = ["RouteLink", "Router", "relays"]

SEEN_LIMIT = 65_536
_CACHE_LIMIT = 4096


class RouteLink(Protocol):
    """What the router reads of a link (``gravpy.mesh.PeerLink``)."""

    @property
    def uuid(self) -> str: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def is_leaf(self) -> bool: ...
    @property
    def is_peer(self) -> bool: ...
    @property
    def neighbours(self) -> frozenset[str] | None: ...
    def wants(self, msg_type: str) -> bool: ...


L = TypeVar("L", bound=RouteLink)


class Router(Generic[L]):
    """Routing decisions for one node; see the module docstring."""

    def __init__(self, seen_limit: int = SEEN_LIMIT) -> None:
        self.peers: dict[str, L] = {}  # the one chosen link per remote node
        self._seen: RecentMap[str, L | None] = RecentMap(seen_limit)  # uuid -> origin
        self._sent_to: RecentMap[str, tuple[L, ...]] = RecentMap(seen_limit)
        self._waited: RecentMap[str, L] = RecentMap(seen_limit)  # a leaf's request -> the leaf
        self._routes: dict[Hashable, tuple[L, ...]] = {}
        self.duplicates = 0  # messages that arrived twice (dropped)
        self.dropped_no_route = 0  # replies whose asker's link was gone

    # -- the table -------------------------------------------------------------------------------

    def add(self, link: L) -> L | None:
        """Make ``link`` the route to its node; return the link it replaces, if any."""
        old = self.peers.get(link.uuid)
        self.peers[link.uuid] = link
        self.routes_changed()
        return None if old is link else old

    def remove(self, link: L) -> bool:
        """Forget ``link`` if it is the route to its node; True if it was."""
        if self.peers.get(link.uuid) is not link:
            return False
        del self.peers[link.uuid]
        self.routes_changed()
        return True

    def routes_changed(self) -> None:
        """Links, interests or neighbours changed: recompute targets from now on."""
        self._routes.clear()

    # -- decisions -------------------------------------------------------------------------------

    def from_local(self, msg: Message) -> tuple[L, ...]:
        """The links a message sent by a local pod goes to."""
        self._seen[msg.uuid] = None
        if msg.reply_to:
            back = self._reply_route(msg, None)
            if back is not None:
                return back
        targets = self._routes.get(msg.type)
        if targets is None:
            targets = self._targets(msg.type, None)
        if targets:
            self._sent_to[msg.uuid] = targets
        return targets

    def arrived(self, msg: Message, origin: L) -> tuple[L, ...] | None:
        """The links a message from ``origin`` goes on to; ``None`` if it is a duplicate."""
        seen = self._seen
        if msg.uuid in seen:
            self.duplicates += 1
            return None
        seen[msg.uuid] = origin
        if msg.reply_to:
            back = self._reply_route(msg, origin)
            if back is not None:
                return back
        if origin.is_leaf:
            key: Hashable = msg.type
            targets = self._routes.get(key)
            if targets is None:
                targets = self._targets(msg.type, None)
            if origin in targets:
                targets = tuple(t for t in targets if t is not origin)
            if targets:  # sent for the leaf: if it waits (``waiting``), its wait fails with them
                self._sent_to[msg.uuid] = targets
            return targets
        key = (origin.uuid, msg.type)
        targets = self._routes.get(key)
        if targets is None:
            targets = self._targets(msg.type, origin)
        return targets

    def seen(self, uuid: str) -> bool:
        """True if a message with this uuid was sent or arrived here recently."""
        return uuid in self._seen

    def asked_elsewhere(self, request_uuid: str) -> bool:
        """True if the request came from another node (its replies travel back there)."""
        return self._seen.get(request_uuid) is not None

    def waiting(self, request_uuid: str, leaf: L) -> None:
        """The leaf ``leaf`` waits for replies to a message it sent (a wait notice)."""
        if self._seen.get(request_uuid) is leaf:
            self._waited[request_uuid] = leaf

    def requests_lost(self, link: L) -> list[tuple[str, L | None]]:
        """The requests whose replies only ``link`` could have carried, each with who asked:
        ``None`` for a local pod, else the leaf's link (only requests the leaf waits on)."""
        lost: list[tuple[str, L | None]] = []
        for uuid, targets in self._sent_to.items():
            if link in targets and all(t is link or not t.is_open for t in targets):
                asker = self._seen.get(uuid)
                if asker is None or self._waited.get(uuid) is asker:
                    lost.append((uuid, asker))
        return lost

    # -- internals -------------------------------------------------------------------------------

    def _reply_route(self, msg: Message, origin: L | None) -> tuple[L, ...] | None:
        """Where a reply goes: back to its asker's link, nowhere, or ``None`` (not a known
        request: route it by type like any message)."""
        if msg.reply_to not in self._seen:
            return None
        back = self._seen.get(msg.reply_to)
        if back is None:  # the request was asked here: the reply is for local pods only
            return ()
        if back is origin or not back.is_open:
            self.dropped_no_route += 1  # the asker's link is gone; its wait already failed
            return ()
        return (back,)

    def _targets(self, msg_type: str, origin: L | None) -> tuple[L, ...]:
        """The open links that want ``msg_type``, for a message from a local pod or a leaf
        (``origin`` None: every link) or from the peer ``origin``: one hop, so only leaves, and
        the peers ``origin`` has no link of its own to (this node relays for it)."""
        targets = tuple(
            link
            for link in self.peers.values()
            if link.is_open
            and link is not origin
            and (origin is None or link.is_leaf or relays(origin, link))
            and link.wants(msg_type)
        )
        key: Hashable = msg_type if origin is None else (origin.uuid, msg_type)
        if len(self._routes) >= _CACHE_LIMIT:
            self._routes.clear()
        self._routes[key] = targets
        return targets


def relays(origin: RouteLink, other: RouteLink) -> bool:
    """True if this node carries traffic between two of its peers that are not linked.

    They told us whom they are linked to (PEERS): two peers that cannot reach each other
    directly (an HTTP-only node and a WebSocket-only node, say) still share a mesh through us.
    Until ``origin``'s list arrives we do not relay (in a full mesh it arrives with the link);
    when a list is stale, the seen-set drops the duplicate that results.
    """
    if not origin.is_peer or not other.is_peer:
        return False
    known = origin.neighbours
    return known is not None and other.uuid not in known
