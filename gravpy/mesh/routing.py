"""The Router: which links a message goes to. Pure and synchronous: no I/O, no event loop.

Theory of operation
-------------------
Peers form a full mesh and forward one hop. The router holds the routing table (``peers``: the one
chosen link per remote node), a bounded seen-set of message ids with the link each came from, and
the links each locally sent message went to; from those it answers three questions:

- ``from_local(msg)``: a local pod (or a leaf's message, by ``arrived``) sent ``msg``: every open
  link whose interests admit its type, or ``None`` if its uuid is in the seen-set (the pod sends
  again a message sent or received here: the hub refuses it); ``from_outside(msg)`` the same for
  what a bridge brought in, ``None`` meaning a duplicate.
- ``arrived(msg, origin)``: ``msg`` came in on ``origin``: ``None`` if it is a duplicate (seen
  before), else the links to forward it to: leaves attached here, and the peers ``origin`` told us
  it has no link of its own to (this node relays between them; ``relays``). A message from a leaf
  goes where a local message would.
- a reply goes only back where its request came from (``from_local`` and ``arrived`` both follow
  ``reply_to`` through the seen-set), or nowhere when the request was asked here. The seen-set
  holds the last 32,768 to 65,536 ids, a fraction of a second under heavy traffic; for a reply
  that comes later, the router knows the node whose link the asker's process last sent from
  (``_senders``: an id's first ``PROCESS_DIGITS`` digits name the process that made it), so a
  slow answer still finds its way back. Ids are predictable, so an app could send one with
  another process's digits: an app's link claims a process only while no live node has it.

Target lists are cached per (origin, type) until ``routes_changed``. ``requests_lost(link)`` names
the requests that only ``link`` could have answered, so the hub can fail their waits at once.
The hub does the sending; the router only decides, so every decision is testable without sockets.

Groups (deliver to one; see ``gravpy.groups``). ``place(msg, origin, local, wanted)`` decides, for
each group, the one place its copy goes: this node (``local`` says how many members each group
has here) or one link whose interests name members of the group for the message's type, weighted
by member count (``WeightedTurns``), a congested link only when every option is. For a message
sent here every group that admits its type is placed (``wanted`` None); for a message that
arrived, only the groups its sender placed on this node (named by its mark), and only among what
lies behind this node: local pods, leaves, and the peers it relays to. A link whose identity
(``gravd --auth-file``) may not receive the type is no candidate at all (``may_receive``): its
members are never chosen, so a group with members elsewhere goes there. A group with nowhere to go
is counted in ``unplaced``. The hub sends the chosen links a marked copy, the others the message.

``relayed`` times a leaf's waited-on requests: from its wait notice to the first reply routed back.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Final, Generic, Protocol, TypeVar

from gravpy.groups import WeightedTurns
from gravpy.mesh.permissions import Identity
from gravpy.message import PROCESS_DIGITS, Message, process_of
from gravpy.recent import RecentMap
from gravpy.timings import RoundTrips

__all__ = ["Placement", "RouteLink", "Router", "may_receive", "relays"]

SEEN_LIMIT = 65_536
# processes whose last link is kept for late replies; ids of another form (random ones a program
# made) can fill it, and then it starts over
_SENDERS_LIMIT: Final = 65_536
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
    @property
    def congested(self) -> bool: ...
    @property
    def identity(self) -> Identity | None: ...
    def wants(self, msg_type: str) -> bool: ...
    def group_weights(self, msg_type: str) -> Mapping[str, int]: ...


L = TypeVar("L", bound=RouteLink)
_HERE = ""  # the key of "this node" among a group's options (no link has an empty uuid)


class _Unseen(enum.Enum):
    """What the seen-set gives for a uuid it does not hold (an enum, so ``is`` narrows types)."""

    TOKEN = 0


_UNSEEN: Final = _Unseen.TOKEN  # a module global: an enum member looked up costs ~70 ns on 3.11


class Placement(Generic[L]):
    """Where the groups of one message go: here, on links (with the groups each was chosen for),
    or nowhere (no live member). Not a dataclass: mypyc cannot compile a generic one."""

    __slots__ = ("links", "local", "unplaced")

    def __init__(
        self,
        local: tuple[str, ...] = (),
        links: tuple[tuple[L, tuple[str, ...]], ...] = (),
        unplaced: tuple[str, ...] = (),
    ) -> None:
        self.local = local
        self.links = links
        self.unplaced = unplaced

    def __repr__(self) -> str:
        return f"Placement(local={self.local!r}, links={self.links!r}, unplaced={self.unplaced!r})"


class Router(Generic[L]):
    """Routing decisions for one node; see the module docstring."""

    def __init__(
        self,
        seen_limit: int = SEEN_LIMIT,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.peers: dict[str, L] = {}  # the one chosen link per remote node
        self._seen: RecentMap[str, L | None] = RecentMap(seen_limit)  # uuid -> origin
        self._sent_to: RecentMap[str, tuple[L, ...]] = RecentMap(seen_limit)
        self._waited: RecentMap[str, L] = RecentMap(seen_limit)  # a leaf's request -> the leaf
        self._senders: dict[str, str] = {}  # an id's process digits -> the node its last came from
        self.relayed = RoundTrips(seen_limit, clock)  # a leaf's wait to its first reply back
        self._routes: dict[Hashable, tuple[L, ...]] = {}
        self._group_routes: dict[Hashable, tuple[tuple[L, Mapping[str, int]], ...]] = {}
        self._turns = WeightedTurns(rng)
        self._fixed: dict[str, Placement[L] | None] = {}  # type -> placement with no turns
        self.duplicates = 0  # messages that arrived twice (dropped)
        self.dropped_no_route = 0  # replies whose asker's link was gone
        self.unplaced = 0  # groups a message was for that had no live member behind this node

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
        self._group_routes.clear()
        self._fixed.clear()

    # -- decisions -------------------------------------------------------------------------------

    def from_local(self, msg: Message) -> tuple[L, ...] | None:
        """The links a message sent by a local pod goes to; ``None``, and nothing recorded, if
        its uuid was sent or arrived here recently (every node that saw it drops it again)."""
        if not self._seen.add(msg.uuid, None):
            return None
        return self._local_targets(msg)

    def from_outside(self, msg: Message) -> tuple[L, ...] | None:
        """``from_local`` for a message from outside the mesh (a bridge brought it); ``None``,
        and counted, if its uuid was seen here."""
        if not self._seen.add(msg.uuid, None):
            self.duplicates += 1
            return None
        return self._local_targets(msg)

    def passed_on(self, msg: Message) -> tuple[L, ...]:
        """The links a message this node already has goes to when a bridge that takes over
        delivers it again (the nodes that have it drop it; ``Bridges.redeliver``)."""
        return self._local_targets(msg)

    def _local_targets(self, msg: Message) -> tuple[L, ...]:
        if msg.reply_to:
            back = self._reply_route(msg, None)
            if back is not None:
                return back
        targets = self._routes.get(msg.type)
        if targets is None:
            targets = self._targets(msg.type, None)
        return targets

    def local_route(self, msg_type: str) -> tuple[L, ...]:
        """The open links that want ``msg_type`` from a local pod (``from_local``'s route for
        it, without the seen-set)."""
        targets = self._routes.get(msg_type)
        if targets is None:
            targets = self._targets(msg_type, None)
        return targets

    def track(self, request_uuid: str, msg_type: str) -> None:
        """A local pod waits for replies to a message it sent: remember the links that could
        answer (the message's route), for ``requests_lost``. Only waited-on messages pay this."""
        if self._seen.get(request_uuid, _UNSEEN) is not None:
            return  # not sent from here (unseen, or it came in on a link)
        targets = self._routes.get(msg_type)
        if targets is None:
            targets = self._targets(msg_type, None)
        if targets:
            known = self._sent_to.get(request_uuid)  # group copies went there too (``place``)
            if known is not None:
                targets = (*known, *(t for t in targets if t not in known))
            self._sent_to[request_uuid] = targets

    def arrived(self, msg: Message, origin: L) -> tuple[L, ...] | None:
        """The links a message from ``origin`` goes on to; ``None`` if it is a duplicate."""
        if not self._seen.add(msg.uuid, origin):
            self.duplicates += 1
            return None
        senders = self._senders  # (a node's uuid, not the link: no closed link is kept alive)
        if len(senders) >= _SENDERS_LIMIT:
            senders.clear()
        leaf = origin.is_leaf
        if leaf:  # an app claims a process no live node has: it cannot take another's replies
            process = msg.uuid[:PROCESS_DIGITS]
            if senders.get(process) not in self.peers:  # (None is no node's uuid)
                senders[process] = origin.uuid
        else:  # a peer carries its own and its apps' processes, which may move between nodes
            senders[msg.uuid[:PROCESS_DIGITS]] = origin.uuid
        if msg.reply_to:
            back = self._reply_route(msg, origin)
            if back is not None:
                return back
        if leaf:
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

    def knows_asker(self, request_uuid: str) -> bool:
        """True if a reply to ``request_uuid`` travels back towards its asker (the request, or
        the process that asked it, is known here); False if it is routed by type like any
        message (``_reply_route``)."""
        if request_uuid in self._seen:
            return True
        process = process_of(request_uuid)
        return bool(process) and process in self._senders

    def asked_elsewhere(self, request_uuid: str) -> bool:
        """True if the request came from another node (its replies travel back there): as the
        seen-set says or, once it forgot, if the asker's process sends from another node."""
        origin = self._seen.get(request_uuid, _UNSEEN)
        if origin is not _UNSEEN:
            return origin is not None
        process = process_of(request_uuid)
        return bool(process) and process in self._senders

    def waiting(self, request_uuid: str, leaf: L) -> None:
        """The leaf ``leaf`` waits for replies to a message it sent (a wait notice)."""
        if self._seen.get(request_uuid) is leaf:
            self._waited[request_uuid] = leaf
            self.relayed.asked(request_uuid)

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

    # -- groups ----------------------------------------------------------------------------------

    def has_groups(self, msg_type: str, origin: L | None = None) -> bool:
        """True if some link (behind this node, for a message from ``origin``) has group
        members for ``msg_type``."""
        if origin is None:  # a local message: the cached answer, without a call
            found = self._group_routes.get(msg_type)
            if found is not None:
                return bool(found)
        return bool(self._group_candidates(msg_type, origin))

    def place(
        self,
        msg: Message,
        origin: L | None,
        local: Mapping[str, int],
        wanted: Collection[str] | None = None,
    ) -> Placement[L]:
        """Where each group's copy of ``msg`` goes; see the module docstring."""
        candidates = self._group_candidates(msg.type, origin)
        if not candidates:  # only this node can hold members
            if wanted is None:
                return Placement(tuple(local))
            here = tuple(n for n in wanted if local.get(n, 0) > 0)
            missing = tuple(n for n in wanted if n not in here)
            self.unplaced += len(missing)
            return Placement(here, (), missing)
        if wanted is None and not local:
            if msg.type in self._fixed:
                fixed = self._fixed[msg.type]
            else:
                fixed = self._fixed_placement(msg.type, candidates)
            if fixed is not None:  # each group has one place: no turn to take
                if origin is None:  # (``arrived`` records a leaf's; fixed is for local only)
                    self._record_sent(msg.uuid, fixed.links)
                return fixed
        if wanted is None:
            names = dict.fromkeys(local)
            for _, weights in candidates:
                names.update(dict.fromkeys(weights))
            wanted = names
        here_list: list[str] = []
        chosen: dict[L, list[str]] = {}
        unplaced: list[str] = []
        for name in wanted:
            where = self._choose(name, local.get(name, 0), candidates)
            if where is None:
                unplaced.append(name)
            elif where is _HERE:
                here_list.append(name)
            else:
                chosen.setdefault(where, []).append(name)  # type: ignore[arg-type]
        if unplaced:
            self.unplaced += len(unplaced)
        links = tuple((link, tuple(groups)) for link, groups in chosen.items())
        if links and (origin is None or origin.is_leaf):
            self._record_sent(msg.uuid, links)
        return Placement(tuple(here_list), links, tuple(unplaced))

    def _record_sent(self, uuid: str, links: tuple[tuple[L, tuple[str, ...]], ...]) -> None:
        """Remember the links a local message's group copies went to (``requests_lost``)."""
        sent = self._sent_to.get(uuid)
        if sent is None:
            self._sent_to[uuid] = tuple(link for link, _ in links)
        else:
            self._sent_to[uuid] = (*sent, *(link for link, _ in links if link not in sent))

    def _fixed_placement(
        self, msg_type: str, candidates: tuple[tuple[L, Mapping[str, int]], ...]
    ) -> Placement[L] | None:
        """For a local message with no local members: the placement when every group has
        exactly one link to go to (cached until routes change), else None (take turns)."""
        chosen: dict[str, L] = {}
        shared = False  # some group has members behind two links
        for link, weights in candidates:
            for name, weight in weights.items():
                if weight > 0:
                    shared = shared or name in chosen
                    chosen[name] = link
        fixed: Placement[L] | None = None
        if not shared:
            by_link: dict[L, list[str]] = {}
            for name, link in chosen.items():
                by_link.setdefault(link, []).append(name)
            fixed = Placement((), tuple((link, tuple(names)) for link, names in by_link.items()))
        if len(self._fixed) >= _CACHE_LIMIT:
            self._fixed.clear()
        self._fixed[msg_type] = fixed
        return fixed

    def _choose(
        self, name: str, here: int, candidates: tuple[tuple[L, Mapping[str, int]], ...]
    ) -> object:
        """Where group ``name`` goes: ``_HERE``, a link, or None (nowhere)."""
        options: list[tuple[Hashable, int]] = [(_HERE, here)] if here > 0 else []
        crowded: list[tuple[Hashable, int]] = []
        by_uuid: dict[Hashable, L] = {}
        for link, weights in candidates:
            weight = weights.get(name, 0)
            if weight > 0 and link.is_open:
                (crowded if link.congested else options).append((link.uuid, weight))
                by_uuid[link.uuid] = link
        options = options or crowded
        # one place: no turn to take
        key = options[0][0] if len(options) == 1 else self._turns.pick(name, options)
        if key is None:
            return None
        return _HERE if key == _HERE else by_uuid[key]

    def _group_candidates(
        self, msg_type: str, origin: L | None
    ) -> tuple[tuple[L, Mapping[str, int]], ...]:
        """The links with group members for ``msg_type`` that a message from ``origin`` may
        take (as ``_targets``: every link for a local or leaf message, else leaves and relays)."""
        origin_key = None if origin is not None and origin.is_leaf else origin
        key: Hashable = msg_type if origin_key is None else (origin_key.uuid, msg_type)
        found = self._group_routes.get(key)
        if found is None:
            found = tuple(
                (link, weights)
                for link in self.peers.values()
                if link.is_open
                and link is not origin
                and (origin_key is None or link.is_leaf or relays(origin_key, link))
                and may_receive(link, msg_type)
                and (weights := link.group_weights(msg_type))
            )
            if len(self._group_routes) >= _CACHE_LIMIT:
                self._group_routes.clear()
            self._group_routes[key] = found
        if origin is not None and origin_key is None:  # a leaf: never back to it
            return tuple(c for c in found if c[0] is not origin)
        return found

    # -- internals -------------------------------------------------------------------------------

    def _reply_route(self, msg: Message, origin: L | None) -> tuple[L, ...] | None:
        """Where a reply goes: back to its asker's link, nowhere, or ``None`` (not a known
        request: route it by type like any message)."""
        asker = msg.reply_to
        back = self._seen.get(asker, _UNSEEN)
        if back is _UNSEEN:  # forgotten (or never here): where the asker's process last sent from
            process = process_of(asker)
            node = self._senders.get(process) if process else None
            if node is None:
                return None
            back = self.peers.get(node)
            if back is None:
                self.dropped_no_route += 1  # that node's link is gone; the wait already failed
                return ()
        if back is None:  # the request was asked here: the reply is for local pods only
            return ()
        chosen = self.peers.get(back.uuid)
        if chosen is not None and chosen is not back:  # the asker's node is on a newer link now
            back = chosen  # (moved to a faster transport: gravpy.mesh.upgrade)
        if back is origin or not back.is_open:
            self.dropped_no_route += 1  # the asker's link is gone; its wait already failed
            return ()
        if self.relayed.pending:
            self.relayed.answered(msg.reply_to)
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


def may_receive(link: RouteLink, msg_type: str) -> bool:
    """True if ``link``'s identity may receive ``msg_type`` (a link with no identity: no auth
    file is in force, so no rules). Replies never get here: they are never given to a group."""
    identity = link.identity
    return identity is None or identity.subscribe.allows(msg_type)


def relays(origin: RouteLink, other: RouteLink) -> bool:
    """True if this node carries traffic between two of its peers that are not linked.

    They told us whom they are linked to (PEERS): two peers that cannot reach each other
    directly (an HTTP-only node and a WebSocket-only node, say) still share a mesh through us.
    Until ``origin``'s list arrives we do not relay (in a full mesh it arrives with the link);
    when a list is stale, the seen-set drops the duplicate that results.
    """
    if not origin.is_peer or not other.is_peer or other.uuid == origin.uuid:
        return False  # never back to the origin's node (on a link that replaced ``origin``)
    known = origin.neighbours
    return known is not None and other.uuid not in known
