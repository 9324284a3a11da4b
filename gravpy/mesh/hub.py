"""The hub: a node's links to other nodes, their lifecycle, and what the nodes tell each other.

Theory of operation
-------------------
The hub runs the node's side of the mesh. It owns the links and their events, and wires the
pieces that do the rest, each with a module of its own: ``Traffic`` (every message's path; the bus's
``MeshPort``), the pure ``Router``, ``Admission`` (who may link at HELLO; a second link to a node
already linked is refused as a duplicate, the same one on both sides), ``Gossip`` (endpoints
peers tell each other, so a partial static list converges to a full mesh), the ``InterestTable``
(what each link is told it may send: what can be reached *through* this node from there),
``Bridges``, the ``Dialer`` (a loop per wanted endpoint; the hub runs each dialled link to its
end) and ``Upgrades`` (a link this node dialled over a slower transport than the other node's
HELLO names moves there, make before break). A link reports to the hub through the
``LinkOwner`` port (``gravpy.ports``).

The hub owns every task it starts (one ``TaskSupervisor``) and ends them in ``stop``, which first
withdraws from every peer (they stop sending), drains what is queued (bounded, ``gravpy.mesh.drain``),
then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Coroutine
from typing import Any

from gravpy import _log as logs
from gravpy._tasks import TaskSupervisor
from gravpy.bridge.port import BridgePort
from gravpy.bus import Bus
from gravpy.errors import TransportError, UsageError
from gravpy.mesh.admission import Admission
from gravpy.mesh.bridge_host import Bridges
from gravpy.mesh.config import HubConfig, HubStatistics, LinkTotals, fit_to_transports
from gravpy.mesh.dialer import Dialer, DialOutcome, WantedEndpoint, fastest, transport_for
from gravpy.mesh.drain import wait_closed, wait_withdrawn
from gravpy.mesh.gossip import Gossip
from gravpy.mesh.interests import AbsentPeers, InterestStatistics, InterestTable
from gravpy.mesh.peer_link import PeerInfo, PeerLink
from gravpy.mesh.permissions import GRANT_TYPE, Authority, grant_data
from gravpy.mesh.resume_gate import ResumeGate
from gravpy.mesh.routing import Router
from gravpy.mesh.traffic import Traffic
from gravpy.mesh.upgrade import Move, Upgrades, issued_token, upgrade_endpoint
from gravpy.message import Message
from gravpy.plugins import Discovery, DiscoveryContext, Link, Transport
from gravpy.proto import (
    PROTOCOL_VERSION,
    REASON_DUPLICATE,
    REASON_SELF,
    REASON_SHUTDOWN,
    ROLE_PEER,
    Closed,
    Event,
    HandshakeComplete,
    HelloReceived,
    InterestsReceived,
    LinkDead,
    MovedReceived,
    NodeInfo,
    PeersReceived,
    ProtocolViolation,
    Rejected,
    WithdrawAcked,
    WithdrawReceived,
)
from gravpy.proto.handshake import Credentials

__all__ = ["Hub", "HubConfig", "HubStatistics"]

_log = logs.get_logger("gravpy.mesh.hub")


class Hub:
    """Links, routing and interests of one node. ``Grav`` creates and drives it."""

    def __init__(
        self,
        bus: Bus,
        local: NodeInfo,
        *,
        transports: list[Transport],
        discovery: list[Discovery],
        mesh_key: bytes | None,
        config: HubConfig,
        listen: bool = True,
        credentials: Credentials | None = None,
        authority: Authority | None = None,
    ) -> None:
        self.bus = bus
        self.local = local
        self.transports = transports
        self.discovery = discovery
        self.mesh_key = mesh_key
        self.credentials = credentials
        self.config = fit_to_transports(config, transports)
        self.listen = listen
        self.links: set[PeerLink] = set()  # every link that has not ended, open or not
        self._running: set[PeerLink] = set()  # every link whose transport is not closed yet
        self.router: Router[PeerLink] = Router()
        self._dialer = Dialer(self, self.config.backoff)
        self.traffic = Traffic(
            bus,
            self.router,
            local,
            self.config,
            authority,
            changed=self.interests_changed,
            stopping=lambda: self._stopping,
        )
        self._bridges = Bridges(
            bus,
            self.router,
            local,
            sendable=self.traffic.check_sendable,
            permitted=self.traffic.permitted,
            changed=self.interests_changed,
        )
        self.traffic.bridge_to(self._bridges)
        marker_timeout = self.config.protocol.handshake_timeout
        self.upgrades = Upgrades(local.node_uuid, marker_timeout, self._resume)
        self.admission = Admission(local.node_uuid, self.router.peers, authority, self.upgrades)
        self.gossip = Gossip(local.node_uuid, self.router.peers, self._dialer, transports, config)
        # peers whose link dropped: their interests, still advertised to leaves for a while
        self._absent = AbsentPeers(self.config.resume_window, self.interests_changed)
        self.resume_gate = ResumeGate(self._readvertise_soon)  # a restarted node waits for its apps
        self._tasks = TaskSupervisor(_log)
        self._discovering: list[asyncio.Task[Any]] = []
        self._interests_pending = False
        self._interests = InterestTable()
        self._changed = asyncio.Event()
        self._stopping = False
        self._log = _log.bind(node=local.node_uuid)
        self._opened = 0
        self._closed = LinkTotals()
        self._accepted = 0  # accepted links running now
        self._refused = 0  # accepted links closed at once: max_connections were running
        self._violations: dict[str, int] = {}
        bus.attach_mesh(self.traffic)  # the bus's port (MeshPort)

    @property
    def peers(self) -> dict[str, PeerLink]:
        """The one chosen link per remote node."""
        return self.router.peers

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def duplicates(self) -> int:
        return self.router.duplicates

    @property
    def dropped_no_route(self) -> int:
        return self.router.dropped_no_route

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.listen:
            for transport in self.transports:
                await transport.start(self._accept)
            endpoints = self.endpoints()
            if endpoints:  # advertise where we can be dialled fastest, now the ports are known
                self.local = dataclasses.replace(self.local, endpoint=fastest(endpoints))
        ctx = DiscoveryContext(
            node_uuid=self.local.node_uuid,
            belongs_to=self.local.belongs_to,
            endpoints=tuple(self.endpoints()),
            protocol_version=PROTOCOL_VERSION,
        )
        for plugin in self.discovery:
            task = self._tasks.spawn(self._dialer.follow(plugin, ctx), f"discovery-{plugin.name}")
            self._discovering.append(task)

    def endpoints(self) -> list[str]:
        if not self.listen:
            return []
        return [ep for t in self.transports for ep in t.endpoints()]

    async def stop(self) -> None:
        """Withdraw from every peer, drain what is queued (bounded), close links, end tasks."""
        if self._stopping:
            return
        self._stopping = True
        self._dialer.settle_all(UsageError("the node is stopping"))
        # discovery first, once, and awaited: it withdraws its advertisement while it ends
        for task in self._discovering:
            task.cancel()
        await asyncio.gather(*self._discovering, return_exceptions=True)
        open_links = [link for link in self.links if link.is_open]
        for link in open_links:
            link.withdraw()
        if open_links and self.config.drain_timeout > 0:
            await wait_withdrawn(open_links, self.config.drain_timeout, self._log)
        for link in list(self.links):
            link.end(REASON_SHUTDOWN)
        await wait_closed(list(self._running), self.config.drain_timeout + 1.0)
        if self.listen:
            for transport in self.transports:
                await transport.stop()
        await self._tasks.close()
        self.traffic.resumption.close()
        self.upgrades.close()
        self.resume_gate.close()
        self._absent.close()
        self._notify()  # the last change: whoever waits for one sees the node has stopped

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in a task the hub owns (``stop`` ends it)."""
        return self._tasks.spawn(coro, name)

    # -- dialling (the Dialer keeps the loops; the hub runs each dialled link) -------------------

    def want(
        self, endpoint: str, expected_uuid: str | None = None, source: str = ""
    ) -> WantedEndpoint:
        """Keep a link to ``endpoint``, redialling with backoff until the hub stops."""
        return self._dialer.want(endpoint, expected_uuid, source)

    def unwant(self, endpoint: str) -> None:
        """Stop keeping a link to ``endpoint`` (discovery saw the node leave)."""
        self._dialer.unwant(endpoint)

    def dialers(self) -> list[str]:
        """The endpoints this node keeps links to (static, discovered, gossiped)."""
        return self._dialer.endpoints()

    async def connect_endpoint(self, endpoint: str) -> PeerInfo:
        """Dial ``endpoint`` now and keep the link; raise if the first attempt fails.

        Raises ``UsageError`` at once if no transport of this node dials ``endpoint``'s scheme,
        and ``LinkClosedError`` if the link ends before the node said what it wants (so a caller
        never goes on with a link it cannot use).
        """
        transport_for(self.transports, endpoint)
        wanted = self._dialer.get(endpoint)
        kept = self.link_to(wanted) if wanted is not None else None
        if kept is not None:  # (perhaps moved to a faster transport since)
            return kept.info()
        for link in self.peers.values():
            if endpoint in (link.dial_endpoint, link.remote.endpoint if link.remote else ""):
                return link.info()
        link = await self._dialer.first_link(endpoint)
        return link.info()

    async def dial(self, wanted: WantedEndpoint) -> DialOutcome:
        """Dial ``wanted`` once and run the link to its end (the Dialer's port)."""
        try:
            transport = transport_for(self.transports, wanted.endpoint)
        except UsageError as exc:  # e.g. discovery found an http:// endpoint of a dual node
            wanted.settle(exc)
            return DialOutcome.NO_TRANSPORT
        try:
            link = await transport.dial(wanted.endpoint, timeout=self.config.dial_timeout)
        except (TransportError, UsageError) as exc:
            self._log.info("dial_failed", endpoint=wanted.endpoint, error=str(exc))
            wanted.settle(exc)
            return DialOutcome.FAILED
        peer = self._new_link(link, wanted)
        await self._run_link(peer)
        if peer.reject_reason == REASON_SELF:
            return DialOutcome.SELF
        if peer.reject_reason == REASON_DUPLICATE:
            return DialOutcome.DUPLICATE
        return DialOutcome.OPEN if peer.was_open else DialOutcome.FAILED

    def link_to(self, wanted: WantedEndpoint) -> PeerLink | None:
        """The open link that serves ``wanted``, if any (the Dialer's port)."""
        for link in self.peers.values():
            if link.is_open and (
                link.dial_endpoint == wanted.endpoint
                or (wanted.expected_uuid is not None and link.uuid == wanted.expected_uuid)
                or (wanted.linked_uuid is not None and link.uuid == wanted.linked_uuid)
                or (link.remote is not None and link.remote.endpoint == wanted.endpoint)
            ):
                return link
        return None

    def link_for(self, uuid: str) -> PeerLink | None:
        """The chosen link to node ``uuid``, if one is up."""
        return self.peers.get(uuid)

    # -- links -----------------------------------------------------------------------------------

    async def _accept(self, link: Link) -> None:
        if self._stopping:
            await link.close(REASON_SHUTDOWN)
            return
        if self._accepted >= self.config.max_connections:
            self._refused += 1
            await link.close(f"too many connections ({self.config.max_connections})")
            return
        self._accepted += 1
        try:
            await self._run_link(self._new_link(link, None))
        finally:
            self._accepted -= 1

    def _new_link(
        self, link: Link, wanted: WantedEndpoint | None, moving: PeerLink | None = None
    ) -> PeerLink:
        """A link to run: dialled for ``wanted``, accepted (both None), or dialled to move the
        live link ``moving`` to a faster transport (presenting the token it was issued)."""
        if moving is not None and moving.remote is not None:
            endpoint, token = moving.remote.endpoint, moving.remote.upgrade_token
            return self._link(link, moving.uuid, endpoint, None, token)
        token = issued_token(self.local.role, link.initiator)
        if wanted is None:
            return self._link(link, None, "", None, token)
        return self._link(link, wanted.expected_uuid, wanted.endpoint, wanted, token)

    def _link(
        self,
        link: Link,
        expected_uuid: str | None,
        dial_endpoint: str,
        dialer: WantedEndpoint | None,
        upgrade_token: bytes,
    ) -> PeerLink:
        return PeerLink(
            link,
            self.local,
            owner=self,
            backpressure=self.bus.congestion,
            config=self.config.protocol,
            mesh_key=self.mesh_key,
            credentials=self.credentials,
            expected_uuid=expected_uuid,
            queue_limit=self.config.queue_limit,
            queue_bytes=self.config.queue_bytes,
            dial_endpoint=dial_endpoint,
            dialer=dialer,
            screen=self.admission.screen,
            origin_seq=self.traffic.origin_seq,
            upgrade_token=upgrade_token,
        )

    async def _run_link(self, peer: PeerLink) -> None:
        self.links.add(peer)
        self._running.add(peer)
        try:
            await peer.run()
        finally:
            self._running.discard(peer)
            peer.finish()  # already done by the link, unless it was cut off first

    def link_ended(self, peer: PeerLink) -> None:
        """The link is over (the LinkOwner port; called once, before its transport closes)."""
        self.links.discard(peer)
        moved = self.upgrades.ended(peer)
        self.traffic.gate.forget(peer)
        self._closed.add(peer)  # what it carried, without a whole PeerInfo snapshot
        if not self.router.remove(peer):
            if moved:  # the link it moved to is the route: nothing else changed
                self._notify()
            return
        self._log.info(
            "peer_disconnected", peer=peer.uuid, reason=peer.end_reason, dropped=peer.dropped
        )
        self.traffic.fail_requests_to(peer)
        if self.local.role != ROLE_PEER:
            self.traffic.replays.link_lost()
        elif peer.is_peer:
            self.traffic.resumption.release(peer.uuid)
            if not self._stopping:
                self._absent.keep(peer)
        self._interests.remove(peer)
        self._readvertise_soon()
        if peer.is_peer:
            self._gossip()  # our peers learn we no longer reach it (relaying may start)
        self._notify()

    def link_messages(self, peer: PeerLink, messages: list[Message], seqs: list[int]) -> int:
        """Messages from ``peer`` (the LinkOwner port): ``Traffic`` takes them; returns how many
        (fewer while a local pod is congested: the link's reader then holds off)."""
        moving = self.upgrades.moving  # links moving to TCP (gravpy.mesh.upgrade)
        if moving:
            if peer in self.upgrades.draining:  # a new link: taken once the old one drained
                return 0
            move = moving.get(peer)
            if move is not None and move.switched:  # an old link: the node is on the new one
                peer = move.new  # (a resume request it carried is answered there, say)
        return self.traffic.from_link(peer, messages, seqs)

    def link_events(self, peer: PeerLink, events: list[Event]) -> None:
        """Handshake steps, interests, gossip, withdraw and ends (the LinkOwner port)."""
        for event in events:
            if isinstance(event, InterestsReceived):
                peer.set_interests(event.patterns, event.groups)
                self._absent.forget(peer.uuid)  # back, and said what it wants: no gap for leaves
                self._log.debug("peer_interests", peer=peer.uuid, patterns=list(event.patterns))
                self._interests.update(peer)  # what others can reach through us changed too
                self._readvertise_soon()
                if peer.is_leaf:
                    self.resume_gate.leaf_back(peer.uuid)  # after the readvertise just scheduled
                self._notify()
            elif isinstance(event, HelloReceived):
                self._on_hello(peer)
            elif isinstance(event, HandshakeComplete):
                self._on_open(peer)
            elif isinstance(event, PeersReceived):
                peer.set_neighbours(uuid for uuid, _ in event.pairs)
                self.router.routes_changed()
                self._interests.neighbours_changed(peer)  # relaying for this peer may have changed
                self._readvertise_soon()
                dial = self.local.role == ROLE_PEER and not self._stopping
                self.gossip.heard(peer, event.pairs, dial=dial)
            elif isinstance(event, WithdrawReceived):
                self._log.info("peer_withdrew", peer=peer.uuid)
                peer.peer_withdrew()
                self._notify()
            elif isinstance(event, WithdrawAcked):
                peer.acked.set()
            elif isinstance(event, MovedReceived):
                self.upgrades.marker_in(peer)
            else:
                self._on_end(peer, event)

    def _on_end(self, peer: PeerLink, event: Event) -> None:
        if isinstance(event, Rejected):
            self.admission.ended(peer, event, self._log)  # counted; logged a few per reason
            self.router.routes_changed()
        elif isinstance(event, ProtocolViolation | LinkDead | Closed):
            if isinstance(event, ProtocolViolation):
                self._violations[event.reason] = self._violations.get(event.reason, 0) + 1
            peer.end(event.reason)
            self.router.routes_changed()
            level = "info" if isinstance(event, Closed) else "warning"
            getattr(self._log, level)(
                "link_closed",
                peer=peer.uuid or peer.link.remote_address,
                reason=event.reason,
                detail=event.detail,
                kind=type(event).__name__,
            )

    def _on_hello(self, peer: PeerLink) -> None:
        if not self.admission.admit(peer):
            return
        if self.upgrades.of_new(peer) is not None:  # moves a live link: the switch is at open
            peer.accept()
            return
        existing = self.peers.get(peer.uuid)
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
            self._interests.remove(existing)
            self._readvertise_soon()
        self.router.add(peer)
        peer.accept()

    def _resume_baseline(self, replaced: PeerLink) -> None:
        """A replaced link may have carried messages we now ignore (it is closed here first): the
        new link asks the origin to resend from the number in the old link's HELLO, if nothing
        newer is known (a node heard from before already has its number)."""
        remote = replaced.remote
        if self.local.role == ROLE_PEER and replaced.is_peer and remote is not None:
            self.traffic.resumption.baseline(replaced.uuid, remote.origin_seq)

    def set_authority(self, authority: Authority | None) -> int:
        """Install new auth rules (SIGHUP): new links meet them at once; an open link whose
        identity is no longer admitted is closed (``not_allowed``), the others keep running
        under their identity's new rules. Returns how many links were closed."""
        self.traffic.govern(authority)
        closed = self.admission.reauthorize(authority, list(self.peers.values()))
        for link in self.peers.values():  # the group members each is offered, by its new rules
            self._interests.update(link)
        self.router.routes_changed()  # group placement reads the identities' rules
        self.interests_changed()
        return closed

    def _on_open(self, peer: PeerLink) -> None:
        self._opened += 1
        remote = peer.remote
        assert remote is not None
        move = self.upgrades.of_new(peer)
        if move is not None:
            self._switch(move)
        elif peer.uuid not in self.peers:  # it was to move a link that ended meanwhile
            self.router.add(peer)
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
        self._interests.add(peer)
        self._interests.flush(self._local_interests)  # the new link hears what it may send now
        if peer.is_peer and self.local.role == ROLE_PEER:
            self._gossip()
            if move is None:  # a moved link loses nothing: its old link drains first
                self._resume(peer)
        target = upgrade_endpoint(peer, self.local.role, self.transports)
        if target and not self._stopping:
            self._tasks.spawn(self._move(peer, target), f"move-{peer.uuid}")
        self._notify()

    async def _move(self, old: PeerLink, endpoint: str) -> None:
        """Dial ``endpoint``, faster than ``old``'s transport, to move ``old`` there; while the
        dial fails, retry with the dialler's backoff for as long as ``old`` is the route."""
        backoff = self.config.backoff.new_backoff()
        while True:
            try:
                link = await transport_for(self.transports, endpoint).dial(
                    endpoint, timeout=self.config.dial_timeout
                )
                break
            except (TransportError, UsageError) as exc:
                self.upgrades.failed += 1
                delay = backoff.next_delay()
                retry = isinstance(exc, TransportError)
                self._log.info(
                    "move_failed",
                    peer=old.uuid,
                    endpoint=endpoint,
                    reason=str(exc),
                    retry_in=round(delay, 3) if retry else None,
                )
                if not retry or not await self._still_route(old, delay):
                    return
        if old.ended.is_set() or self.peers.get(old.uuid) is not old or self._stopping:
            await link.close(REASON_SHUTDOWN if self._stopping else REASON_DUPLICATE)
            return
        new = self._new_link(link, None, moving=old)
        self.upgrades.begin(old, new)
        await self._run_link(new)

    async def _still_route(self, old: PeerLink, delay: float) -> bool:
        """Wait ``delay`` seconds; True if ``old`` is still the live route to its node then."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await old.ended.wait()
        return not (old.ended.is_set() or self._stopping or self.peers.get(old.uuid) is not old)

    def _switch(self, move: Move) -> None:
        """``move``'s new link opened: it is the route to the node from now on (what the node
        said on the old link holds until it says it again), and the old link drains."""
        old, new = move.old, move.new
        self.router.add(new)
        new.set_interests(old.interests, old.group_interests)
        if old.neighbours is not None:
            new.set_neighbours(old.neighbours)
        new.set_endpoints(old.known_endpoints())
        self._interests.remove(old)
        self._resume_baseline(old)
        self.resume_gate.moved(old, new)  # a restarted node's request, held for its apps
        self.upgrades.switched(move)

    def _resume(self, peer: PeerLink) -> None:
        """Ask the peer to resend what it numbered after the last number heard (if any)."""
        request = self.traffic.resumption.start(peer.uuid)  # after the INTERESTS just queued
        if request is not None:
            self.resume_gate.ask(peer, request)

    def _gossip(self) -> None:
        """Tell every peer every endpoint of ours and of the other peers we know."""
        self.gossip.tell(self.endpoints())

    # -- interests -------------------------------------------------------------------------------

    def interests_changed(self) -> None:
        """The local pods' interests changed (the bus's port): re-advertise soon."""
        self._interests.local_changed()
        self._readvertise_soon()

    def _readvertise_soon(self) -> None:
        """Re-advertise to the links whose advertisement changed, once per loop turn."""
        if self._interests_pending or self._stopping:
            return
        self._interests_pending = True
        asyncio.get_running_loop().call_soon(self._readvertise)

    def _readvertise(self) -> None:
        self._interests_pending = False
        self._interests.absent_changed(self._absent.patterns())
        self._interests.expected_changed(self.resume_gate.patterns)
        self._interests.flush(self._local_interests)
        self._bridges.tell(
            {uuid: link.interests for uuid, link in self.peers.items() if link.is_open}
        )

    def _local_interests(self) -> tuple[tuple[str, ...], tuple[tuple[str, str, int], ...]]:
        """What this node itself reaches: its pods, and what its bridges bring from other meshes."""
        patterns = set(self.bus.interests())
        patterns.update(self._bridges.advertised())
        return tuple(sorted(patterns)), self.bus.group_interests()

    def interest_statistics(self) -> InterestStatistics:
        """Advertisements computed and INTERESTS frames sent since start."""
        return self._interests.statistics()

    # -- bridges (gravpy.mesh.bridge_host) ----------------------------------------------------

    def attach_bridge(self, bridge: BridgePort) -> None:
        """Carry this mesh's messages across ``bridge`` (before ``start``)."""
        self._bridges.attach(bridge)

    # -- discovery, changes, statistics ----------------------------------------------------------

    def _notify(self) -> None:
        """Wake everyone in ``wait_changed``: a link opened or ended, interests changed."""
        self.router.routes_changed()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self) -> None:
        """Wait for the next change of links or interests."""
        await self._changed.wait()

    def statistics(self) -> HubStatistics:
        """Totals since start: what closed links carried is kept, not lost with them."""
        live = [link.info() for link in self.links]
        closed = self._closed
        return HubStatistics(
            links_opened=self._opened,
            links_closed=closed.links,
            handshakes_rejected=dict(self.admission.rejected),
            messages_in=closed.messages_in + sum(i.messages_in for i in live),
            messages_out=closed.messages_out + sum(i.messages_out for i in live),
            dropped_link=closed.dropped + sum(i.dropped for i in live),
            dropped_duplicate=self.router.duplicates,
            dropped_no_route=self.router.dropped_no_route,
            dropped_no_member=self.router.unplaced,
            lost_by_origin=dict(self.traffic.resumption.lost),
            resent=self.traffic.resumption.resent,
            connections_refused=self._refused
            + sum(getattr(t, "connections_refused", 0) for t in self.transports),
            tls_handshakes_failed=sum(
                getattr(t, "tls_handshakes_failed", 0) for t in self.transports
            ),
            protocol_violations=dict(self._violations),
            gossip_ignored=self.gossip.ignored,
            publish_denied=self.traffic.gate.denied_publish,
            link_moves=self.upgrades.statistics().outcomes(),
            by_role=closed.by_role(live),
        )

    def peer_infos(self) -> list[PeerInfo]:
        return [link.info() for link in self.peers.values()]
