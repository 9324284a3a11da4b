"""The hub: a node's links to other nodes, their lifecycle, and what the nodes tell each other.

Theory of operation
-------------------
The hub runs the node's side of the mesh. It owns four things and delegates the rest:

- **links** (``PeerLink``, ``gravpy.mesh.peer_link``): every accepted or dialled link runs as one;
  the hub decides at HELLO whether to accept it (a second link to a node that is already linked
  is refused as a duplicate, the same one on both sides) and hears, through the ``LinkOwner``
  port, what arrives and when the link ends.
- **routing** is decided by the pure ``Router`` (``gravpy.mesh.routing``); the hub delivers to
  the local bus and enqueues on the links the router names. A reply goes only back where its
  request came from. The bus talks to the hub through one typed port (``gravpy.bus.MeshPort``).
- **dialling** is the ``Dialer``'s (``gravpy.mesh.dialer``): a loop per wanted endpoint with
  capped, jittered backoff; the hub runs each dialled link to its end and reports the outcome.
- **gossip and interests**: peers tell each other the peer endpoints they know (PEERS), so a
  partial static list converges to a full mesh; interests advertised on a link are what can be
  reached *through* this node from there: local pods and leaves for a peer; local pods, other
  leaves and every peer for a leaf. Group interests (group, pattern, members) add up the same way.
- **groups**: the router places each group's copy of a message (here, or one link); a link chosen
  for groups gets a marked copy (``gravpy.groups.marked``); a marked message that arrives is
  unmarked before anything here sees it, and only the groups it names are placed here or behind.

The hub owns every task it starts (one ``TaskSupervisor``) and ends them in ``stop``, which first
withdraws from every peer (they stop sending), drains what is queued (bounded), then closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine, Mapping
from typing import Any

from gravpy import _log as logs
from gravpy._tasks import TaskSupervisor
from gravpy.bridge.port import BridgePort, MeshInterests
from gravpy.bus import Bus
from gravpy.errors import LinkClosedError, TransportError, UsageError
from gravpy.failure import WAITING_TYPE, link_closed_reply, wait_notice
from gravpy.groups import GROUP_HEADER, marked, unmarked
from gravpy.mesh.config import HubConfig, HubStatistics, LinkTotals, fit_to_transports
from gravpy.mesh.dialer import Dialer, DialOutcome, WantedEndpoint
from gravpy.mesh.enforcement import PermissionGate, check_publish, check_subscribe, receivers
from gravpy.mesh.interests import InterestStatistics, InterestTable
from gravpy.mesh.peer_link import PeerInfo, PeerLink
from gravpy.mesh.permissions import (
    GRANT_TYPE,
    Authority,
    Identity,
    Refusal,
    grant_data,
    read_grant,
)
from gravpy.mesh.resume import (
    RESUME_END_TYPE,
    RESUME_TYPE,
    SEQ_HEADER,
    Resumption,
    asked_after,
    resend_answer,
    resume_end,
    stamped,
    unstamped,
)
from gravpy.mesh.resume_gate import ResumeGate
from gravpy.mesh.routing import Placement, Router
from gravpy.message import Message
from gravpy.plugins import Discovery, DiscoveryContext, Link, PeerReport, Transport
from gravpy.pod import Pod
from gravpy.proto import (
    PROTOCOL_VERSION,
    REASON_DUPLICATE,
    REASON_NOT_ALLOWED,
    REASON_SELF,
    REASON_SHUTDOWN,
    ROLE_PEER,
    Closed,
    Event,
    HandshakeComplete,
    HelloReceived,
    InterestsReceived,
    LinkDead,
    NodeInfo,
    PeersReceived,
    ProtocolViolation,
    Rejected,
    WithdrawAcked,
    WithdrawReceived,
)
from gravpy.proto.frames import MAX_HEADERS
from gravpy.proto.handshake import Credentials
from gravpy.replay import REPLAY_HEADER, REPLAY_TYPE, LeafReplays, replay_answer

__all__ = ["Hub", "HubConfig", "HubStatistics"]

_log = logs.get_logger("gravpy.mesh.hub")
# a frame's room for a message beyond its data and headers: ids (3 x 64), type (255), timestamp,
# msgpack headers of the arrays and maps, the frame's own header
_ENVELOPE = 1024


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
        self.authority = authority  # the auth file in force; None: every link is accepted
        self.gate = PermissionGate()
        self.grant: Identity | None = None  # on an app: what its node lets it publish/receive
        self.config = fit_to_transports(config, transports)
        self.listen = listen
        self.links: set[PeerLink] = set()  # every link that has not ended, open or not
        self._running: set[PeerLink] = set()  # every link whose transport is not closed yet
        self.router: Router[PeerLink] = Router()
        self._dialer = Dialer(self, self.config.backoff)
        self._tasks = TaskSupervisor(_log)
        self._discovering: list[asyncio.Task[Any]] = []
        self._interests_pending = False
        self._interests = InterestTable()
        self._changed = asyncio.Event()
        self._stopping = False
        self._log = _log.bind(node=local.node_uuid)
        self._opened = 0
        self._closed = LinkTotals()
        self._rejected: dict[str, int] = {}
        self.bridges: list[BridgePort] = []
        self.replays = LeafReplays(bus.own_replay)
        self.resumption: Resumption[PeerLink] = Resumption(self._resumed)
        self.origin_seq = 0  # the last number given to a message entering the mesh here
        self.origin_skipped = range(0)  # numbers never given (jumped over after a restart)
        self.resume_gate = ResumeGate(self._readvertise_soon)  # a restarted node waits for its apps
        # peers whose link dropped: their interests, still advertised to leaves for a while
        self._absent: dict[str, tuple[frozenset[str], asyncio.TimerHandle]] = {}
        self._accepted = 0  # accepted links running now
        self._refused = 0  # accepted links closed at once: max_connections were running
        self._violations: dict[str, int] = {}
        self._gossip_ignored = 0
        bus.attach_mesh(self)

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
            task = self._tasks.spawn(self._run_discovery(plugin, ctx), f"discovery-{plugin.name}")
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
            await self._wait_withdrawn(open_links)
        for link in list(self.links):
            link.end(REASON_SHUTDOWN)
        running = list(self._running)
        if running:  # each writer sends what is queued and CLOSE, then its transport closes
            closes = [asyncio.ensure_future(link.closed.wait()) for link in running]
            _, pending = await asyncio.wait(closes, timeout=self.config.drain_timeout + 1.0)
            for fut in pending:
                fut.cancel()
            await asyncio.gather(*closes, return_exceptions=True)
        if self.listen:
            for transport in self.transports:
                await transport.stop()
        await self._tasks.close()
        self.resumption.close()
        self.resume_gate.close()
        for _, timer in self._absent.values():
            timer.cancel()
        self._absent.clear()

    async def _wait_withdrawn(self, links: list[PeerLink]) -> None:
        """Wait (bounded) until each peer acked our WITHDRAW or its link ended."""
        waits = [asyncio.ensure_future(link.acked.wait()) for link in links]
        ends = [asyncio.ensure_future(link.ended.wait()) for link in links]
        try:
            async with asyncio.timeout(self.config.drain_timeout):
                for ack, end in zip(waits, ends, strict=True):
                    await asyncio.wait([ack, end], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self._log.warning("withdraw_unacknowledged", timeout=self.config.drain_timeout)
        finally:
            for fut in waits + ends:
                fut.cancel()
            await asyncio.gather(*waits, *ends, return_exceptions=True)

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
        self._transport_for(endpoint)
        for link in self.peers.values():
            if endpoint in (link.dial_endpoint, link.remote.endpoint if link.remote else ""):
                return link.info()
        wanted = self._dialer.get(endpoint)
        if wanted is None:
            wanted = self._dialer.want(endpoint, None, "connect_endpoint")
        link = await asyncio.shield(wanted.first_link())
        # every node states its interests right after the handshake: wait for them, so a request
        # sent as soon as this returns is routed (and NoResponders is not raised too early)
        known = asyncio.ensure_future(link.interests_known.wait())
        ended = asyncio.ensure_future(link.ended.wait())
        try:
            await asyncio.wait([known, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            known.cancel()
            ended.cancel()
            await asyncio.gather(known, ended, return_exceptions=True)
        if not link.interests_known.is_set():
            reason = link.end_reason or "closed"
            raise LinkClosedError(f"the link to {endpoint} closed right after it opened: {reason}")
        return link.info()

    async def dial(self, wanted: WantedEndpoint) -> DialOutcome:
        """Dial ``wanted`` once and run the link to its end (the Dialer's port)."""
        try:
            transport = self._transport_for(wanted.endpoint)
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
                or (link.remote is not None and link.remote.endpoint == wanted.endpoint)
            ):
                return link
        return None

    def link_for(self, uuid: str) -> PeerLink | None:
        """The chosen link to node ``uuid``, if one is up."""
        return self.peers.get(uuid)

    def _transport_for(self, endpoint: str) -> Transport:
        scheme = endpoint.split("://", 1)[0] if "://" in endpoint else ""
        for transport in self.transports:
            if not scheme or scheme in transport.schemes:
                return transport
        raise UsageError(f"no transport of this node dials {endpoint!r}")

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

    def _new_link(self, link: Link, wanted: WantedEndpoint | None) -> PeerLink:
        return PeerLink(
            link,
            self.local,
            owner=self,
            backpressure=self.bus,
            config=self.config.protocol,
            mesh_key=self.mesh_key,
            credentials=self.credentials,
            expected_uuid=wanted.expected_uuid if wanted is not None else None,
            queue_limit=self.config.queue_limit,
            queue_bytes=self.config.queue_bytes,
            dial_endpoint=wanted.endpoint if wanted is not None else "",
            dialer=wanted,
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
        self.gate.forget(peer)
        self._closed.add(peer.info(), peer.was_open)
        if not self.router.remove(peer):
            return
        self._log.info(
            "peer_disconnected", peer=peer.uuid, reason=peer.end_reason, dropped=peer.dropped
        )
        self._fail_requests_to(peer)
        if self.local.role != ROLE_PEER:
            self.replays.link_lost()
        elif peer.is_peer:
            self.resumption.release(peer.uuid)
            self._keep_absent(peer)
        self._interests.remove(peer)
        self._readvertise_soon()
        if peer.is_peer:
            self._gossip()  # our peers learn we no longer reach it (relaying may start)
        self._notify()

    def link_messages(self, peer: PeerLink, messages: list[Message]) -> int:
        """Deliver messages from ``peer`` here and forward them on (the LinkOwner port).

        Returns how many were taken: while a local pod is congested the rest stays with the link,
        whose reader then holds off reading, so TCP pushes back to the sender.
        """
        bus = self.bus
        governed = self.authority is not None
        for i, msg in enumerate(messages):
            if bus.pods_congested:
                return i
            if msg.type == GRANT_TYPE and peer.is_peer and self.local.role != ROLE_PEER:
                self.grant = read_grant(msg.data)  # what this app's node lets it publish/receive
                continue
            if governed and not self.gate.admits(peer, msg):
                continue
            headers = msg.headers
            if headers is not None:
                if SEQ_HEADER in headers and peer.is_peer:
                    self._sequenced(peer, msg)
                    continue
                if REPLAY_HEADER in headers and not peer.is_leaf:
                    self.replays.arrived(msg)
                    continue
            if msg.type in _CONTROL_TYPES:
                self._control(peer, msg)
                continue
            self._take(peer, msg)
        return len(messages)

    def _take(self, peer: PeerLink, msg: Message) -> None:
        """Route one message from ``peer``: deliver here, forward on (numbered, from a leaf)."""
        targets = self.router.arrived(msg, peer)
        if targets is None:
            return
        if self.authority is not None and targets:
            targets = receivers(msg, targets)
        seq = self.sequence() if peer.is_leaf else 0
        headers = msg.headers
        if headers is not None and GROUP_HEADER in headers:
            self._arrived_for_groups(msg, peer, targets, seq)
            return
        self.bus.deliver(msg, None, (), seq)
        self._send_to(targets, msg, seq)
        for bridge in self.bridges:
            bridge.offer(msg)

    def _send_to(self, targets: tuple[PeerLink, ...], msg: Message, seq: int) -> int:
        """Enqueue ``msg`` on ``targets``; peers get it numbered if ``seq`` (once stamped)."""
        n = 0
        numbered: Message | None = None
        for link in targets:
            if seq and link.is_peer:
                if numbered is None:
                    numbered = stamped(msg, self.local.node_uuid, seq)
                n += link.enqueue(numbered)
            else:
                n += link.enqueue(msg)
        return n

    def _sequenced(self, peer: PeerLink, msg: Message) -> None:
        """A numbered message from a peer: held while its origin resends, else taken."""
        plain, origin, seq, resent = unstamped(msg)
        if origin and not resent:
            limit = self.config.queue_limit
            if self.resumption.holds(origin, peer, msg, limit):
                return
        if origin:
            self.resumption.seen(origin, seq)
        self._take(peer, plain)

    def _resumed(self, peer: PeerLink, msg: Message) -> None:
        """A held message, let through once its origin's resend ended."""
        plain, origin, seq, _ = unstamped(msg)
        self.resumption.seen(origin, seq)
        self._take(peer, plain)  # even if its link has ended since: it arrived

    def _control(self, peer: PeerLink, msg: Message) -> None:
        """A request a node makes of its neighbour, consumed here and never forwarded."""
        if peer.is_leaf and msg.type in (WAITING_TYPE, REPLAY_TYPE):
            self._leaf_request(peer, msg)
        elif peer.is_peer and msg.type == RESUME_TYPE:
            self._resend(peer, msg)
        elif peer.is_peer and msg.type == RESUME_END_TYPE:
            self.resumption.ended(peer.uuid, *resume_end(msg.data))
        else:
            self._take(peer, msg)

    def _resend(self, peer: PeerLink, request: Message) -> None:
        """A peer asks for what it missed of ours: resend it from the buffer, then the end."""
        after = asked_after(request, self.origin_seq)
        held = self.bus.buffer.sequenced_after(after)
        answer, lost = resend_answer(
            after, self.local.node_uuid, self.origin_seq, held, peer.wants, self.origin_skipped
        )
        for msg in answer:
            peer.enqueue(msg)
        self.resumption.resent += len(answer) - 1
        self._log.info("resent", peer=peer.uuid, after=after, messages=len(answer) - 1, lost=lost)

    def sequence(self) -> int:
        """The next origin number, on a peer node (a leaf's messages are numbered by its node)."""
        if self.local.role != ROLE_PEER:
            return 0
        self.origin_seq += 1
        return self.origin_seq

    def _keep_absent(self, peer: PeerLink) -> None:
        """A peer's link dropped without a withdraw: keep its interests for leaves a while."""
        window = self.config.resume_window
        if self._stopping or peer.info().withdrawn or not window or not peer.interests:
            return
        self._forget_absent(peer.uuid)
        timer = asyncio.get_running_loop().call_later(window, self._forget_absent, peer.uuid)
        self._absent[peer.uuid] = (frozenset(peer.interests), timer)

    def _forget_absent(self, uuid: str) -> None:
        entry = self._absent.pop(uuid, None)
        if entry is not None:
            entry[1].cancel()
            self.interests_changed()

    def _leaf_request(self, leaf: PeerLink, msg: Message) -> None:
        """A request a leaf makes of its node, consumed here and never forwarded."""
        if msg.type == WAITING_TYPE:
            self.router.waiting(msg.data.decode(errors="replace"), leaf)
            return
        buffered = [m for m, _ in self.bus.buffer.entries()]
        answer = replay_answer(msg, buffered, leaf.wants)
        for each in answer:
            leaf.enqueue(each)
        self._log.debug("replay_answered", peer=leaf.uuid, messages=len(answer) - 1)

    def _arrived_for_groups(
        self, msg: Message, peer: PeerLink, targets: tuple[PeerLink, ...], seq: int = 0
    ) -> None:
        """A marked message: place the groups it names here or behind us; nothing sees the mark."""
        plain, wanted = unmarked(msg)
        if plain.reply_to:
            wanted = ()
        if not self.router.has_groups(plain.type, peer):  # nothing behind us: the bus places
            self.bus.deliver(plain, None, wanted, seq)  # (and counts a group it has no member of)
            self._send_to(targets, plain, seq)
            return
        placement = self.router.place(plain, peer, self.bus.group_weights(plain.type), wanted)
        self.bus.deliver(plain, None, placement.local, seq)
        self._send_placed(plain, targets, placement, seq)

    def _send_placed(
        self,
        msg: Message,
        targets: tuple[PeerLink, ...],
        placement: Placement[PeerLink],
        seq: int = 0,
    ) -> int:
        """Enqueue ``msg`` on ``targets`` and a marked copy on each link chosen for groups
        (numbered for peers if ``seq``)."""
        chosen = dict(placement.links)
        numbered = stamped(msg, self.local.node_uuid, seq) if seq else msg
        n = 0
        for link in targets:
            groups = chosen.pop(link, None)
            base = numbered if link.is_peer else msg
            if link.enqueue(base if groups is None else marked(base, groups)):
                n += 1
        for link, groups in chosen.items():
            base = numbered if link.is_peer else msg
            if link.enqueue(marked(base, groups)):
                n += 1
        return n

    def link_events(self, peer: PeerLink, events: list[Event]) -> None:
        """Handshake steps, interests, gossip, withdraw and ends (the LinkOwner port)."""
        for event in events:
            if isinstance(event, InterestsReceived):
                peer.set_interests(event.patterns, event.groups)
                self._forget_absent(peer.uuid)  # back, and said what it wants: no gap for leaves
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
                self._on_gossip(peer, event.pairs)
            elif isinstance(event, WithdrawReceived):
                self._log.info("peer_withdrew", peer=peer.uuid)
                peer.peer_withdrew()
                self._notify()
            elif isinstance(event, WithdrawAcked):
                peer.acked.set()
            else:
                self._on_end(peer, event)

    def _on_end(self, peer: PeerLink, event: Event) -> None:
        if isinstance(event, Rejected):
            self._rejected[event.reason] = self._rejected.get(event.reason, 0) + 1
            peer.rejected(event.reason)
            self.router.routes_changed()
            self._log.info(
                "handshake_rejected",
                peer=peer.uuid or peer.link.remote_address,
                reason=event.reason,
                detail=event.detail,
                by_remote=event.by_remote,
            )
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
        if self.authority is not None:
            verdict = self.authority.admit(peer.identity_key, peer.proto.remote_token)
            if isinstance(verdict, Refusal):
                self._refuse(peer, verdict.reason, verdict.detail)
                return
            peer.identity = verdict
        existing = self.peers.get(peer.uuid)
        if existing is not None and existing is not peer and not existing.ended.is_set():
            if not may_replace(peer, existing):
                self._refuse(peer, REASON_DUPLICATE, "a link to this node already exists")
                return
            self._log.warning(
                "link_replaced",
                peer=peer.uuid,
                old=existing.link.remote_address,
                new=peer.link.remote_address,
                was_open=existing.is_open,
            )
            existing.end(REASON_DUPLICATE)
            self._interests.remove(existing)
            self._readvertise_soon()
        self.router.add(peer)
        peer.accept()

    def set_authority(self, authority: Authority | None) -> int:
        """Install new auth rules (SIGHUP): new links meet them at once; an open link whose
        identity is no longer admitted is closed (``not_allowed``), the others keep running
        under their identity's new rules. Returns how many links were closed."""
        self.authority = authority
        closed = 0
        for link in list(self.peers.values()):
            if authority is None:
                link.identity = None
                continue
            verdict = authority.admit(link.identity_key, link.proto.remote_token)
            if isinstance(verdict, Refusal):
                self._log.info("link_no_longer_allowed", peer=link.uuid, detail=verdict.detail)
                link.end(REASON_NOT_ALLOWED)
                closed += 1
            else:
                link.identity = verdict
                if link.is_leaf and link.is_open:
                    link.send_now(Message.new(GRANT_TYPE, grant_data(verdict)))
        self.interests_changed()
        return closed

    def _refuse(self, peer: PeerLink, reason: str, detail: str) -> None:
        """Refuse ``peer`` at HELLO, tell it why, count the reason and log it."""
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._log.info(
            "handshake_refused",
            peer=peer.uuid,
            address=peer.link.remote_address,
            reason=reason,
            detail=detail,
        )
        peer.reject(reason, detail)

    def _on_open(self, peer: PeerLink) -> None:
        self._opened += 1
        remote = peer.remote
        assert remote is not None
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
        if peer.is_peer and self.local.role == ROLE_PEER:
            request = self.resumption.start(peer.uuid)  # after the INTERESTS just queued
            if request is not None:
                self.resume_gate.ask(peer, request)
        self._notify()

    # -- gossip ----------------------------------------------------------------------------------

    def _on_gossip(self, sender: PeerLink, pairs: tuple[tuple[str, str], ...]) -> None:
        """A peer told us the endpoints it knows: its own (kept, to pass on) and its peers'
        (each node we are not linked to is dialled at the fastest endpoint we can dial)."""
        limit = self.config.gossip_pairs
        if len(pairs) > limit:
            self._gossip_ignored += len(pairs) - limit
            self._log.warning("gossip_truncated", peer=sender.uuid, pairs=len(pairs), kept=limit)
            pairs = pairs[:limit]
        sender.set_endpoints(ep for uuid, ep in pairs if uuid == sender.uuid and ep)
        if self.local.role != ROLE_PEER or self._stopping:
            return
        known: dict[str, list[str]] = {}
        for uuid, endpoint in pairs:
            if uuid == self.local.node_uuid or uuid in self.peers or not endpoint:
                continue
            try:
                self._transport_for(endpoint)
            except UsageError:
                continue
            known.setdefault(uuid, []).append(endpoint)
        room = self.config.gossip_targets - self._dialer.count("gossip")
        for uuid, endpoints in known.items():
            endpoint = fastest(endpoints)
            if self._dialer.get(endpoint) is None and room <= 0:
                self._gossip_ignored += 1
                continue
            room -= self._dialer.get(endpoint) is None
            self.want(endpoint, uuid, "gossip")

    def _gossip(self) -> None:
        """Tell every peer every endpoint of ours and of the other peers we know."""
        open_peers = [link for link in self.peers.values() if link.is_open and link.is_peer]
        pairs = [(link.uuid, ep) for link in open_peers for ep in link.known_endpoints()]
        pairs.extend((self.local.node_uuid, ep) for ep in self.endpoints())
        for link in open_peers:
            link.send_peers([p for p in pairs if p[0] != link.uuid])

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
        self._interests.absent_changed(p for patterns, _ in self._absent.values() for p in patterns)
        self._interests.expected_changed(self.resume_gate.patterns)
        self._interests.flush(self._local_interests)
        self._tell_bridges()

    def _local_interests(self) -> tuple[tuple[str, ...], tuple[tuple[str, str, int], ...]]:
        """What this node itself reaches: its pods, and what its bridges bring from other meshes."""
        patterns = set(self.bus.interests())
        for bridge in self.bridges:
            patterns.update(bridge.advertised())
        return tuple(sorted(patterns)), self.bus.group_interests()

    def interest_statistics(self) -> InterestStatistics:
        """Advertisements computed and INTERESTS frames sent since start."""
        return self._interests.statistics()

    # -- the bus's port (MeshPort) ---------------------------------------------------------------

    def check_sendable(self, msg: Message) -> None:
        """Refuse, before anything is delivered, a message no link could carry, or that this
        app's node does not let it publish (``PermissionDenied``)."""
        check_publish(self.grant, msg)
        limit = self.config.protocol.limits.max_message_bytes
        if len(msg.data) > limit:
            raise UsageError(
                f"message data is {len(msg.data)} bytes, over the mesh limit of {limit} bytes"
            )
        headers = msg.headers
        if headers:
            if len(headers) > MAX_HEADERS:
                raise UsageError(f"a message may carry at most {MAX_HEADERS} headers")
            size = len(msg.data) + sum(
                len(k.encode()) + len(v.encode()) for k, v in headers.items()
            )
            room = self.config.protocol.limits.max_frame_bytes - _ENVELOPE
            if size > room:
                raise UsageError(
                    f"message data and headers are {size} bytes, over the {room} bytes one frame "
                    "carries"
                )

    def forward_local(
        self, msg: Message, local: Mapping[str, int], seq: int = 0
    ) -> tuple[int, tuple[str, ...]]:
        """A local pod sent ``msg`` (numbered ``seq``): forward it (links, bridges); return how
        many took it and the groups placed here (``local``: members per local group for it)."""
        router = self.router
        targets = router.from_local(msg)
        if self.authority is not None and targets:
            targets = receivers(msg, targets)
        bridged = 0
        for bridge in self.bridges:
            bridged += bridge.offer(msg)
        if msg.reply_to or not router.has_groups(msg.type):
            return self._send_to(targets, msg, seq) + bridged, tuple(local)
        placement = router.place(msg, None, local)
        return self._send_placed(msg, targets, placement, seq) + bridged, placement.local

    def check_subscribable(self, pattern: str) -> None:
        """Raise ``PermissionDenied`` if this app's node lets it receive no type of ``pattern``."""
        check_subscribe(self.grant, pattern)

    def reply_wait_started(self, request_uuid: str, msg_type: str) -> None:
        """A local pod waits for replies: track the links that could answer, so the wait fails
        at once if they all close; a leaf also tells its node, which tracks the links it relayed
        the request on (``gravpy.failure``)."""
        if msg_type:
            self.router.track(request_uuid, msg_type)
        if self.local.role == ROLE_PEER:
            return
        for link in self.peers.values():
            if link.is_open:
                link.enqueue(wait_notice(request_uuid))

    def replays_from_node(self, pod: Pod) -> bool:
        """On a leaf with an open link: hold ``pod`` and ask the node for its buffer, after the
        interests the pod adds (both are sent next loop turn, INTERESTS first)."""
        if self.local.role == ROLE_PEER or self._stopping:
            return False
        node = next((link for link in self.peers.values() if link.is_open), None)
        if node is None:
            return False
        request = self.replays.start(pod)
        self.interests_changed()
        asyncio.get_running_loop().call_soon(node.enqueue, request)
        return True

    def asked_elsewhere(self, request_uuid: str) -> bool:
        """True if the request came from another node (its replies travel back there)."""
        return self.router.asked_elsewhere(request_uuid)

    def _fail_requests_to(self, peer: PeerLink) -> None:
        """Fail waits on replies that only ``peer`` could have sent: local ones at once, and a
        leaf's by telling the leaf (an error reply its node turns into ``LinkClosedError``)."""
        lost = self.router.requests_lost(peer)
        if not lost:
            return
        detail = f"the link to node {peer.uuid} closed: {peer.end_reason}"
        local = [uuid for uuid, asker in lost if asker is None]
        n = self.bus.fail_reply_waiters(local, LinkClosedError(detail)) if local else 0
        for uuid, asker in lost:
            if asker is not None and asker.is_open:
                n += asker.enqueue(link_closed_reply(uuid, detail))
        if n:
            self._log.info("requests_failed", peer=peer.uuid, count=n)

    # -- bridges (gravpy.bridge.port: the hub's side of BridgePort / BridgeHost) -----------------

    def attach_bridge(self, bridge: BridgePort) -> None:
        """Carry this mesh's messages across ``bridge`` (before ``start``)."""
        self.bridges.append(bridge)
        bridge.bind(self)

    @property
    def node_uuid(self) -> str:
        return self.local.node_uuid

    @property
    def mesh_name(self) -> str:
        return self.local.belongs_to

    def inject(self, msg: Message) -> int:
        """A message from outside the mesh: deliver it here and forward it like a local one.

        Returns how many pods and links took it, or -1 for a duplicate (its uuid was seen).
        """
        if self.router.seen(msg.uuid):
            self.router.duplicates += 1
            return -1
        n = self.bus.deliver(msg, None)
        for link in self.router.from_local(msg):
            n += link.enqueue(msg)
        return n

    def bridge_changed(self) -> None:
        """A bridge's ``advertised()`` changed: tell every peer."""
        self.interests_changed()

    def bridge_congested(self, sink: object, congested: bool) -> None:
        """A bridge's queue passed its high-water mark (or fell back): publishers wait meanwhile."""
        if congested:
            self.bus.mark_congested(sink)
        else:
            self.bus.relieve(sink)

    def _tell_bridges(self) -> None:
        if not self.bridges:
            return
        interests = MeshInterests(
            self.bus.interests(),
            {uuid: link.interests for uuid, link in self.peers.items() if link.is_open},
        )
        for bridge in self.bridges:
            bridge.mesh_interests(interests)

    # -- discovery, changes, statistics ----------------------------------------------------------

    async def _run_discovery(self, plugin: Discovery, ctx: DiscoveryContext) -> None:
        def report(found: PeerReport) -> None:
            if found.node_uuid == self.local.node_uuid or self._stopping:
                return
            if found.gone:
                self.unwant(found.endpoint)
            else:
                self.want(found.endpoint, found.node_uuid, found.source or plugin.name)

        await plugin.run(ctx, report)

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
            handshakes_rejected=dict(self._rejected),
            messages_in=closed.messages_in + sum(i.messages_in for i in live),
            messages_out=closed.messages_out + sum(i.messages_out for i in live),
            dropped_link=closed.dropped + sum(i.dropped for i in live),
            dropped_duplicate=self.router.duplicates,
            dropped_no_route=self.router.dropped_no_route,
            dropped_no_member=self.router.unplaced,
            lost_by_origin=dict(self.resumption.lost),
            resent=self.resumption.resent,
            connections_refused=self._refused
            + sum(getattr(t, "connections_refused", 0) for t in self.transports),
            protocol_violations=dict(self._violations),
            gossip_ignored=self._gossip_ignored,
            publish_denied=self.gate.denied_publish,
        )

    def peer_infos(self) -> list[PeerInfo]:
        return [link.info() for link in self.peers.values()]


def may_replace(new: PeerLink, old: PeerLink) -> bool:
    """True if ``new`` takes the place of ``old``, a live link that claims the same node uuid.

    A link whose remote proved an identity key is replaced only by one proving the same key. An
    open link is not replaced by a claim alone from the same dialler (any app learns every uuid
    from ``gravd.info``): the new one is refused as a duplicate until the old one ends (a node
    that restarted waits for its old link to be found dead). Links dialled by different nodes
    (two nodes dialled each other at once) are settled by ``_preferred``, the same on both sides.
    """
    if old.identity_key and new.identity_key != old.identity_key:
        return False
    if old.is_open and not old.identity_key and new.initiator_uuid == old.initiator_uuid:
        return False
    return _preferred(new, old)


def _preferred(new: PeerLink, old: PeerLink) -> bool:
    """Of two links between the same nodes, both sides keep the same one.

    Links dialled by different nodes: the one dialled by the smaller uuid wins. Dialled by the same
    node: the newer wins (that node has given up on the old one).
    """
    if new.initiator_uuid != old.initiator_uuid:
        return new.initiator_uuid < old.initiator_uuid
    return True


_CONTROL_TYPES = frozenset((WAITING_TYPE, REPLAY_TYPE, RESUME_TYPE, RESUME_END_TYPE))

# Transports by speed on a LAN: raw TCP, then WebSocket, then HTTP (DESIGN.md section 5).
_SCHEME_RANK = {"tcp": 0, "tls": 0, "ws": 1, "wss": 1, "http": 2, "https": 2}


def fastest(endpoints: list[str]) -> str:
    """The endpoint of the fastest transport (tcp, then websocket, then http; others last)."""
    return min(endpoints, key=lambda ep: _SCHEME_RANK.get(ep.split("://", 1)[0], 9))
