"""The hub: a node's links to other nodes, their lifecycle, and what the nodes tell each other.

Theory of operation
-------------------
The hub runs the node's side of the mesh. It makes and runs the links, and wires the pieces that
do the rest, each with a module of its own: ``Traffic`` (every message's path; the bus's
``MeshPort``), the pure ``Router``, ``Admission`` (who may link at HELLO; a second link to a node
already linked is refused as a duplicate, the same one on both sides), ``Gossip`` (endpoints
peers tell each other, so a partial static list converges to a full mesh), the ``Advertiser``
(what each link is told it may send: what can be reached *through* this node from there, once
per loop turn), ``Bridges``, the ``Dialer`` (a loop per wanted endpoint; the hub runs each
dialled link to its end), the ``Roster`` (every link from accept or dial to its end, and the
totals of those that ended) and ``Upgrades`` with the ``Mover`` (a link this node dialled over
a slower transport than the other node's HELLO names moves there, make before break).

A link reports to the hub through the ``LinkOwner`` port (``gravpy.ports``): its messages go
straight to ``Traffic``; everything else goes to ``Peering``, which carries each event (a HELLO,
an open, INTERESTS, PEERS, a withdraw, an end) to the pieces above.

The hub owns every task it starts (one ``TaskSupervisor``) and ends them in ``stop``, which first
withdraws from every peer (they stop sending), drains what is queued (bounded, ``Roster.leave``),
then closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any

from gravpy import _log as logs
from gravpy._tasks import TaskSupervisor
from gravpy.bridge.port import BridgePort
from gravpy.bus import Bus
from gravpy.errors import TransportError, UsageError
from gravpy.mesh.admission import Admission
from gravpy.mesh.advertiser import Advertiser
from gravpy.mesh.bridge_host import Bridges
from gravpy.mesh.config import HubConfig, HubStatistics, fit_to_transports
from gravpy.mesh.dialer import Dialer, DialOutcome, WantedEndpoint, fastest, transport_for
from gravpy.mesh.gossip import Gossip
from gravpy.mesh.interests import InterestStatistics
from gravpy.mesh.mover import Mover
from gravpy.mesh.peer_link import PeerInfo, PeerLink
from gravpy.mesh.peering import Peering
from gravpy.mesh.permissions import Authority
from gravpy.mesh.resume_gate import ResumeGate
from gravpy.mesh.roster import Roster
from gravpy.mesh.routing import Router
from gravpy.mesh.traffic import Traffic
from gravpy.mesh.upgrade import Upgrades, issued_token
from gravpy.message import Message
from gravpy.plugins import Discovery, DiscoveryContext, Link, Transport
from gravpy.proto import (
    PROTOCOL_VERSION,
    REASON_DUPLICATE,
    REASON_SELF,
    REASON_SHUTDOWN,
    Event,
    NodeInfo,
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
        self.roster = Roster(self.config.max_connections)
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
            fits_plain=self.traffic.fits_plain,
            permitted=self.traffic.permitted,
            changed=self.interests_changed,
        )
        self.traffic.bridge_to(self._bridges)
        marker_timeout = self.config.protocol.handshake_timeout
        # an old link that ended before its marker: the new one asks for a resend
        self.upgrades = Upgrades(local.node_uuid, marker_timeout, lambda p: self._peering.resume(p))
        self.admission = Admission(local.node_uuid, self.router.peers, authority, self.upgrades)
        self.gossip = Gossip(local.node_uuid, self.router.peers, self._dialer, transports, config)
        self._interests = Advertiser(  # what each link is told it may send, and when
            bus,
            self._bridges,
            self.router.peers,
            resume_window=self.config.resume_window,
            expected=lambda: self.resume_gate.patterns,
            stopping=lambda: self._stopping,
        )
        self.resume_gate = ResumeGate(self._interests.soon)  # a restarted node waits for its apps
        self._tasks = TaskSupervisor(_log)
        self._discovering: list[asyncio.Task[Any]] = []
        self._changed = asyncio.Event()
        self._stopping = False
        self._log = _log.bind(node=local.node_uuid)
        mover = Mover(self, transports, self.config, self.upgrades, self.roster, self._log)
        self._peering = Peering(
            local.role,
            router=self.router,
            admission=self.admission,
            upgrades=self.upgrades,
            advertiser=self._interests,
            traffic=self.traffic,
            resume_gate=self.resume_gate,
            roster=self.roster,
            mover=mover,
            dialer=self._dialer,
            gossip=self.gossip,
            endpoints=self.endpoints,
            changed=self._notify,
            stopping=lambda: self._stopping,
            log=self._log,
        )
        bus.attach_mesh(self.traffic)  # the bus's port (MeshPort)

    @property
    def peers(self) -> dict[str, PeerLink]:
        """The one chosen link per remote node."""
        return self.router.peers

    @property
    def links(self) -> set[PeerLink]:
        """Every link that has not ended, open or not."""
        return self.roster.links

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
        await self.roster.leave(self.config.drain_timeout, self._log)
        if self.listen:
            for transport in self.transports:
                await transport.stop()
        await self._tasks.close()
        self.traffic.resumption.close()
        self.upgrades.close()
        self.resume_gate.close()
        self._interests.close()
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
        await self.roster.run(peer)
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
        await self.roster.accept(link, lambda: self._new_link(link, None))

    def new_link(self, link: Link, moving: PeerLink) -> PeerLink:
        """A link dialled to move the live link ``moving`` to a faster transport, presenting the
        token it was issued (the Mover's port)."""
        if moving.remote is None:
            return self._new_link(link, None)
        endpoint, token = moving.remote.endpoint, moving.remote.upgrade_token
        return self._link(link, moving.uuid, endpoint, None, token)

    def _new_link(self, link: Link, wanted: WantedEndpoint | None) -> PeerLink:
        """A link to run: dialled for ``wanted``, or accepted (None)."""
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

    def link_ended(self, peer: PeerLink) -> None:
        """The link is over (the LinkOwner port; called once, before its transport closes)."""
        self._peering.left(peer)

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
        self._peering.events(peer, events)

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

    # -- interests -------------------------------------------------------------------------------

    def interests_changed(self) -> None:
        """The local pods' interests changed (the bus's port): re-advertise soon."""
        self._interests.local_changed()

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
        live = self.roster.infos()
        closed = self.roster.closed
        return HubStatistics(
            links_opened=self.roster.opened,
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
            connections_refused=self.roster.refused
            + sum(getattr(t, "connections_refused", 0) for t in self.transports),
            connections_timed_out=sum(
                getattr(t, "connections_timed_out", 0) for t in self.transports
            ),
            tls_handshakes_failed=sum(
                getattr(t, "tls_handshakes_failed", 0) for t in self.transports
            ),
            protocol_violations=dict(self.roster.violations),
            gossip_ignored=self.gossip.ignored,
            publish_denied=self.traffic.gate.denied_publish,
            link_moves=self.upgrades.statistics().outcomes(),
            by_role=closed.by_role(live),
        )

    def peer_infos(self) -> list[PeerInfo]:
        return [link.info() for link in self.peers.values()]
