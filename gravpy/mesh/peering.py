"""Peering: what a node makes of everything its links report but their messages.

Theory of operation
-------------------
A link reports to the hub through the ``LinkOwner`` port (``gravpy.ports``); messages go
straight to ``Traffic``, every other report comes here, as the sans-I/O protocol's events. Each
one changes the node's picture of the mesh, and ``Peering`` carries the change to the pieces that
keep that picture:

- at HELLO, ``Admission`` says whether the node may link; a link that moves a live one waits for
  its open to switch, any other becomes the route to its node at once, and a live link it
  duplicates is ended (what that link carried is resent from its HELLO's number);
- at open, the link is the route (or takes the place of the link it moves: ``switch``), a leaf
  hears its grant before anything else, the link hears what it may send (``Advertiser``), the
  peers hear the endpoints we know (``Gossip``), a peer is asked to resend what it numbered
  since the last number heard (``gravpy.mesh.resume``, through the ``ResumeGate``), and the
  ``Mover`` considers moving it to a faster transport;
- INTERESTS, PEERS, WITHDRAW and MOVED update the link and what is advertised, gossiped and
  moved;
- a refused handshake, a protocol violation, a dead or closed link ends it (counted, logged on
  the hub's logger), and a link that ended (``left``) leaves the route: requests waiting on it
  fail, its interests are kept for leaves a while (``AbsentPeers``), gossip says it is gone.

Every change that others wait for ends with ``changed`` (the hub's ``wait_changed``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gravpy.mesh.admission import Admission
from gravpy.mesh.advertiser import Advertiser
from gravpy.mesh.dialer import Dialer
from gravpy.mesh.gossip import Gossip
from gravpy.mesh.mover import Mover
from gravpy.mesh.peer_link import PeerLink
from gravpy.mesh.permissions import GRANT_TYPE, grant_data
from gravpy.mesh.resume_gate import ResumeGate
from gravpy.mesh.roster import Roster
from gravpy.mesh.routing import Router
from gravpy.mesh.traffic import Traffic
from gravpy.mesh.upgrade import Move, Upgrades
from gravpy.message import Message
from gravpy.proto import (
    REASON_DUPLICATE,
    ROLE_PEER,
    Closed,
    Event,
    HandshakeComplete,
    HelloReceived,
    InterestsReceived,
    LinkDead,
    MovedReceived,
    PeersReceived,
    ProtocolViolation,
    Rejected,
    WithdrawAcked,
    WithdrawReceived,
)

__all__ = ["Peering"]


class Peering:
    """The node's side of its links' handshakes, interests, gossip, withdrawals and ends."""

    def __init__(
        self,
        local_role: str,
        *,
        router: Router[PeerLink],
        admission: Admission,
        upgrades: Upgrades,
        advertiser: Advertiser,
        traffic: Traffic,
        resume_gate: ResumeGate,
        roster: Roster,
        mover: Mover,
        dialer: Dialer,
        gossip: Gossip,
        endpoints: Callable[[], list[str]],
        changed: Callable[[], None],
        stopping: Callable[[], bool],
        log: Any,
    ) -> None:
        self._role = local_role
        self._router = router
        self._admission = admission
        self._upgrades = upgrades
        self._advertiser = advertiser
        self._traffic = traffic
        self._resume_gate = resume_gate
        self._roster = roster
        self._mover = mover
        self._dialer = dialer
        self._gossip = gossip
        self._endpoints = endpoints  # this node's own, to gossip
        self._changed = changed
        self._stopping = stopping
        self._log = log

    def events(self, peer: PeerLink, events: list[Event]) -> None:
        """Handshake steps, interests, gossip, withdraw and ends, in the order reported."""
        for event in events:
            if isinstance(event, InterestsReceived):
                self._interests(peer, event)
            elif isinstance(event, HelloReceived):
                self._hello(peer)
            elif isinstance(event, HandshakeComplete):
                self._open(peer)
            elif isinstance(event, PeersReceived):
                peer.set_neighbours(uuid for uuid, _ in event.pairs)
                self._router.routes_changed()
                self._advertiser.neighbours_changed(peer)  # relaying for it may have changed
                dial = self._role == ROLE_PEER and not self._stopping()
                self._gossip.heard(peer, event.pairs, dial=dial)
            elif isinstance(event, WithdrawReceived):
                self._log.info("peer_withdrew", peer=peer.uuid)
                peer.peer_withdrew()
                self._changed()
            elif isinstance(event, WithdrawAcked):
                peer.acked.set()
            elif isinstance(event, MovedReceived):
                self._upgrades.marker_in(peer)
            else:
                self._end(peer, event)

    def _interests(self, peer: PeerLink, event: InterestsReceived) -> None:
        peer.set_interests(event.patterns, event.groups)
        self._log.debug("peer_interests", peer=peer.uuid, patterns=list(event.patterns))
        self._advertiser.heard(peer)  # what others can reach through us changed too
        if peer.is_leaf:
            self._resume_gate.leaf_back(peer.uuid)  # after the readvertise just scheduled
        self._changed()

    def _hello(self, peer: PeerLink) -> None:
        if not self._admission.admit(peer):
            return
        if self._upgrades.of_new(peer) is not None:  # moves a live link: the switch is at open
            peer.accept()
            return
        existing = self._router.peers.get(peer.uuid)
        if existing is not None and existing is not peer and not existing.ended.is_set():
            self._log.warning(
                "link_replaced",
                peer=peer.uuid,
                old=existing.link.remote_address,
                new=peer.link.remote_address,
                was_open=existing.is_open,
            )
            existing.end(REASON_DUPLICATE)
            self._resume_baseline(existing)
            self._advertiser.remove(existing)
            self._advertiser.soon()
        self._router.add(peer)
        peer.accept()

    def _open(self, peer: PeerLink) -> None:
        self._roster.link_opened()
        remote = peer.remote
        assert remote is not None
        move = self._upgrades.of_new(peer)
        if move is not None:
            self._switch(move)
        elif peer.uuid not in self._router.peers:  # it was to move a link that ended meanwhile
            self._router.add(peer)
        self._log.info(
            "peer_connected",
            peer=remote.node_uuid,
            role=remote.role,
            endpoint=remote.endpoint,
            transport=peer.link.transport,
        )
        peer.mark_open()
        self._dialer.node_linked(peer)
        if peer.is_leaf and peer.identity is not None:  # before INTERESTS: known when attached
            peer.send_now(Message.new(GRANT_TYPE, grant_data(peer.identity)))
        self._advertiser.opened(peer)  # the new link hears what it may send now
        if peer.is_peer and self._role == ROLE_PEER:
            self._tell_endpoints()
            if move is None:  # a moved link loses nothing: its old link drains first
                self.resume(peer)
        self._mover.consider(peer, self._role)
        self._changed()

    def _switch(self, move: Move) -> None:
        """``move``'s new link opened: it is the route to the node from now on (what the node
        said on the old link holds until it says it again), and the old link drains."""
        old, new = move.old, move.new
        self._router.add(new)
        new.set_interests(old.interests, old.group_interests)
        if old.neighbours is not None:
            new.set_neighbours(old.neighbours)
        new.set_endpoints(old.known_endpoints())
        self._advertiser.remove(old)
        self._resume_baseline(old)
        self._resume_gate.moved(old, new)  # a restarted node's request, held for its apps
        self._upgrades.switched(move)

    def _resume_baseline(self, replaced: PeerLink) -> None:
        """A replaced link may have carried messages we now ignore (it is closed here first): the
        new link asks the origin to resend from the number in the old link's HELLO, if nothing
        newer is known (a node heard from before already has its number)."""
        remote = replaced.remote
        if self._role == ROLE_PEER and replaced.is_peer and remote is not None:
            self._traffic.resumption.baseline(replaced.uuid, remote.origin_seq)

    def resume(self, peer: PeerLink) -> None:
        """Ask the peer to resend what it numbered after the last number heard (if any)."""
        request = self._traffic.resumption.start(peer.uuid)  # after the INTERESTS just queued
        if request is not None:
            self._resume_gate.ask(peer, request)

    def _end(self, peer: PeerLink, event: Event) -> None:
        if isinstance(event, Rejected):
            self._admission.ended(peer, event, self._log)  # counted; logged a few per reason
            self._router.routes_changed()
        elif isinstance(event, ProtocolViolation | LinkDead | Closed):
            if isinstance(event, ProtocolViolation):
                self._roster.violation(event.reason)
            peer.end(event.reason)
            self._router.routes_changed()
            level = "info" if isinstance(event, Closed) else "warning"
            getattr(self._log, level)(
                "link_closed",
                peer=peer.uuid or peer.link.remote_address,
                reason=event.reason,
                detail=event.detail,
                kind=type(event).__name__,
            )

    def left(self, peer: PeerLink) -> None:
        """``peer`` is over (called once, before its transport closes): it leaves the route."""
        self._roster.ended(peer)
        moved = self._upgrades.ended(peer)
        self._traffic.gate.forget(peer)
        if not self._router.remove(peer):
            if moved:  # the link it moved to is the route: nothing else changed
                self._changed()
            return
        self._log.info(
            "peer_disconnected", peer=peer.uuid, reason=peer.end_reason, dropped=peer.dropped
        )
        self._traffic.fail_requests_to(peer)
        if self._role != ROLE_PEER:
            self._traffic.replays.link_lost()
        elif peer.is_peer:
            self._traffic.resumption.release(peer.uuid)
        keep = self._role == ROLE_PEER and peer.is_peer and not self._stopping()
        self._advertiser.lost(peer, keep=keep)
        if peer.is_peer:
            self._tell_endpoints()  # our peers learn we no longer reach it (relaying may start)
        self._changed()

    def _tell_endpoints(self) -> None:
        """Tell every peer every endpoint of ours and of the other peers we know."""
        self._gossip.tell(self._endpoints())
