"""The hub: a node's links to other nodes, and the routing between them and the local bus.

Theory of operation
-------------------
Peers form a full mesh and forward one hop: a message a local pod (or a leaf attached here) sends
goes to every peer whose interests admit its type; a message that arrives from a peer is delivered
to local pods and to attached leaves, and to another peer only when the sender told us (PEERS) it
has no link of its own to that peer (two nodes that share no transport still share the mesh
through one that speaks both). A relayed message is never relayed again by the peer it reaches
unless that peer, too, is the only path, and a bounded seen-set drops any duplicate, so no loop
lasts. A reply goes only back where its request
came from (the seen-set remembers each message's origin), whatever the asker's interests.

Peers tell each other the peer endpoints they know (PEERS), so a partial static list converges to a
full mesh. Interests advertised on a link are what can be reached *through* this node from there:
local pods and leaves for a peer; local pods, other leaves and every peer for a leaf.

Every link runs as a ``PeerLink`` (``gravpy.link``). Links this node dials are kept by dial loops,
one per wanted endpoint, that redial with capped, jittered backoff; accepted links run inside the
transport's handler. The hub owns every task it starts and ends them in ``stop``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from gravpy.backoff import BackoffPolicy
from gravpy.bus import Bus
from gravpy.errors import HandshakeRejectedError, LinkClosedError, TransportError, UsageError
from gravpy.link import PeerInfo, PeerLink
from gravpy.message import Message
from gravpy.plugins import Discovery, DiscoveryContext, Link, PeerReport, Transport
from gravpy.proto import (
    PROTOCOL_VERSION,
    REASON_DUPLICATE,
    REASON_SELF,
    REASON_SHUTDOWN,
    ROLE_LEAF,
    ROLE_PEER,
    Closed,
    Event,
    HandshakeComplete,
    HelloReceived,
    InterestsReceived,
    LinkDead,
    MessagesReceived,
    NodeInfo,
    PeersReceived,
    ProtocolConfig,
    ProtocolViolation,
    Rejected,
    WithdrawAcked,
    WithdrawReceived,
)
from gravpy.proto.config import MESSAGE_OVERHEAD
from gravpy.proto.frames import MAX_HEADERS
from gravpy.recent import RecentMap

__all__ = ["Hub", "HubConfig", "HubStatistics"]

_log = structlog.get_logger("gravpy.hub")
_SEEN_LIMIT = 65_536
_GOSSIP_GIVE_UP = 5  # consecutive failed dials before a gossiped endpoint is forgotten


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """Totals since the node started, closed links included (monotonic counters)."""

    links_opened: int
    links_closed: int
    handshakes_rejected: dict[str, int]  # by reason code
    messages_in: int  # received from links
    messages_out: int  # written to links
    dropped_link: int  # could not be sent on a link: queue full, link closed, peer withdrawn
    dropped_duplicate: int  # arrived twice (seen-set)
    dropped_no_route: int  # a reply whose asker's link was gone


@dataclass(frozen=True, slots=True)
class HubConfig:
    """How a node links to others. Validated on construction."""

    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    dial_timeout: float = 5.0
    queue_limit: int = 65_536  # messages waiting per link
    drain_timeout: float = 2.0  # how long stop() waits for withdraw acks and queues to empty

    def __post_init__(self) -> None:
        if not self.dial_timeout > 0 or not self.drain_timeout >= 0:
            raise UsageError("dial_timeout must be > 0 and drain_timeout >= 0")
        if not isinstance(self.queue_limit, int) or self.queue_limit < 16:
            raise UsageError("queue_limit must be an int >= 16")


class _Dialer:
    """One wanted endpoint and the loop that keeps a link to it."""

    def __init__(self, endpoint: str, expected_uuid: str | None, source: str) -> None:
        self.endpoint = endpoint
        self.expected_uuid = expected_uuid
        self.source = source
        self.task: asyncio.Task[None] | None = None
        self.first: asyncio.Future[PeerLink] | None = None  # connect_endpoint waits on it


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
    ) -> None:
        self.bus = bus
        self.local = local
        self.transports = transports
        self.discovery = discovery
        self.mesh_key = mesh_key
        self.config = _fit_to_transports(config, transports)
        self.listen = listen
        self.links: set[PeerLink] = set()  # every running link, open or not
        self.peers: dict[str, PeerLink] = {}  # the one chosen link per remote node
        self._dialers: dict[str, _Dialer] = {}
        self._seen: RecentMap[str, PeerLink | None] = RecentMap(_SEEN_LIMIT)  # uuid -> origin
        self._sent_to: RecentMap[str, tuple[PeerLink, ...]] = RecentMap(_SEEN_LIMIT)
        self._routes_from_leaf: dict[str, tuple[PeerLink, ...]] = {}  # and from local pods
        self._routes_from_peer: dict[tuple[str, str], tuple[PeerLink, ...]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._interests_pending = False
        self._changed = asyncio.Event()
        self._stopping = False
        self._log = _log.bind(node=local.node_uuid)
        self.duplicates = 0
        self.dropped_no_route = 0
        self._opened = 0
        self._closed_totals = [0, 0, 0, 0]  # links closed, messages in, out, dropped
        self._rejected: dict[str, int] = {}
        bus.outbound = self.forward_local
        bus.check_outbound = self._check_sendable
        bus.asked_elsewhere = self._asked_elsewhere
        bus.on_routes_changed = self.interests_changed

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.listen:
            for transport in self.transports:
                await transport.start(self._accept)
            endpoints = self.endpoints()
            if endpoints:  # advertise where we can be dialled, now that the ports are known
                self.local = dataclasses.replace(self.local, endpoint=endpoints[0])
        ctx = DiscoveryContext(
            node_uuid=self.local.node_uuid,
            belongs_to=self.local.belongs_to,
            endpoints=tuple(self.endpoints()),
            protocol_version=PROTOCOL_VERSION,
        )
        for plugin in self.discovery:
            self._spawn(self._run_discovery(plugin, ctx), f"discovery-{plugin.name}")

    def endpoints(self) -> list[str]:
        if not self.listen:
            return []
        return [ep for t in self.transports for ep in t.endpoints()]

    async def stop(self) -> None:
        """Withdraw from every peer, drain what is queued (bounded), close links, end tasks."""
        if self._stopping:
            return
        self._stopping = True
        for dialer in self._dialers.values():
            _settle(dialer, UsageError("the node is stopping"))
        # discovery first, once, and awaited: it withdraws its advertisement while it ends
        discovering = [t for t in self._tasks if t.get_name().startswith("discovery-")]
        for task in discovering:
            task.cancel()
        await asyncio.gather(*discovering, return_exceptions=True)
        open_links = [link for link in self.links if link.is_open]
        for link in open_links:
            link.proto.withdraw()
            link.flush()
        if open_links and self.config.drain_timeout > 0:
            # peers stop sending to us once they ack; then our queues go out with the CLOSE
            waits = [asyncio.ensure_future(link.acked.wait()) for link in open_links]
            ends = [asyncio.ensure_future(link.ended.wait()) for link in open_links]
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
        ending = list(self.links)
        for link in ending:
            link.end(REASON_SHUTDOWN)
        if ending:  # let each writer send what is queued and CLOSE (bounded)
            ends = [asyncio.ensure_future(link.ended.wait()) for link in ending]
            _, pending = await asyncio.wait(ends, timeout=self.config.drain_timeout + 1.0)
            for fut in pending:
                fut.cancel()
            await asyncio.gather(*ends, return_exceptions=True)
        if self.listen:
            for transport in self.transports:
                await transport.stop()
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- dialling --------------------------------------------------------------------------------

    def want(self, endpoint: str, expected_uuid: str | None = None, source: str = "") -> _Dialer:
        """Keep a link to ``endpoint``, redialling with backoff until the hub stops."""
        dialer = self._dialers.get(endpoint)
        if dialer is None:
            dialer = _Dialer(endpoint, expected_uuid, source)
            self._dialers[endpoint] = dialer
            dialer.task = self._spawn(self._dial_loop(dialer), f"dial-{endpoint}")
        else:
            if expected_uuid is not None and expected_uuid != dialer.expected_uuid:
                # a new node at a known address (restarted, new uuid): expect the one reported now
                dialer.expected_uuid = expected_uuid
                dialer.source = source or dialer.source
            if dialer.source == "gossip" and source not in ("", "gossip"):
                dialer.source = source  # discovery saw it: keep dialling, do not give up
        return dialer

    def dialers(self) -> list[str]:
        """The endpoints this node keeps links to (static, discovered, gossiped)."""
        return list(self._dialers)

    def unwant(self, endpoint: str) -> None:
        """Stop keeping a link to ``endpoint`` (discovery saw the node leave).

        An open link stays until it closes; it is not redialled afterwards.
        """
        dialer = self._dialers.pop(endpoint, None)
        if dialer is None or dialer.task is None:
            return
        if not any(link.is_open and link.dial_endpoint == endpoint for link in self.links):
            dialer.task.cancel()
        else:
            dialer.source = "gone"

    async def connect_endpoint(self, endpoint: str) -> PeerInfo:
        """Dial ``endpoint`` now and keep the link; raise if the first attempt fails.

        Raises ``UsageError`` at once if no transport of this node dials ``endpoint``'s scheme.
        """
        self._transport_for(endpoint)
        dialer = self._dialers.get(endpoint)
        for link in self.peers.values():
            if endpoint in (link.dial_endpoint, link.remote.endpoint if link.remote else ""):
                return link.info()
        if dialer is None:
            dialer = _Dialer(endpoint, None, "connect_endpoint")
            dialer.first = asyncio.get_running_loop().create_future()
            self._dialers[endpoint] = dialer
            dialer.task = self._spawn(self._dial_loop(dialer), f"dial-{endpoint}")
        elif dialer.first is None or dialer.first.done():
            dialer.first = asyncio.get_running_loop().create_future()
        link = await asyncio.shield(dialer.first)
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
        return link.info()

    async def _dial_loop(self, dialer: _Dialer) -> None:
        backoff = self.config.backoff.new_backoff()
        failures = 0
        while not self._stopping:
            peer = self._peer_at(dialer)
            if peer is not None:  # already linked (perhaps the other side dialled): wait it out
                await self._wait_link_end(peer)
                continue
            if dialer.source == "gone":
                return
            outcome = await self._dial_once(dialer)
            if outcome == "open":
                backoff.reset()
                failures = 0
            elif outcome in ("self", "no_transport"):
                self._log.info("dial_abandoned", endpoint=dialer.endpoint, reason=outcome)
                return
            else:
                failures += 1
                if dialer.source == "gossip" and failures >= _GOSSIP_GIVE_UP:
                    self._log.info("dial_abandoned", endpoint=dialer.endpoint, reason="unreachable")
                    self._dialers.pop(dialer.endpoint, None)
                    return
            await asyncio.sleep(backoff.next_delay())

    async def _dial_once(self, dialer: _Dialer) -> str:
        try:
            transport = self._transport_for(dialer.endpoint)
        except UsageError as exc:  # e.g. discovery found an http:// endpoint of a dual node
            _settle(dialer, exc)
            return "no_transport"
        try:
            link = await transport.dial(dialer.endpoint, timeout=self.config.dial_timeout)
        except (TransportError, UsageError) as exc:
            self._log.info("dial_failed", endpoint=dialer.endpoint, error=str(exc))
            _settle(dialer, exc)
            return "failed"
        peer = self._new_link(link, dialer.expected_uuid)
        peer.dial_endpoint = dialer.endpoint
        peer.first_waiter = dialer
        await self._run_link(peer)
        if peer.reject_reason == REASON_SELF:
            return "self"
        if peer.reject_reason == REASON_DUPLICATE:
            return "duplicate"
        return "open" if peer.was_open else "failed"

    def _transport_for(self, endpoint: str) -> Transport:
        scheme = endpoint.split("://", 1)[0] if "://" in endpoint else ""
        for transport in self.transports:
            if not scheme or scheme in transport.schemes:
                return transport
        raise UsageError(f"no transport of this node dials {endpoint!r}")

    def _peer_at(self, dialer: _Dialer) -> PeerLink | None:
        for link in self.peers.values():
            if link.is_open and (
                link.dial_endpoint == dialer.endpoint
                or (dialer.expected_uuid is not None and link.uuid == dialer.expected_uuid)
                or (link.remote is not None and link.remote.endpoint == dialer.endpoint)
            ):
                return link
        return None

    async def _wait_link_end(self, peer: PeerLink) -> None:
        await peer.ended.wait()

    # -- links -----------------------------------------------------------------------------------

    async def _accept(self, link: Link) -> None:
        if self._stopping:
            await link.close(REASON_SHUTDOWN)
            return
        await self._run_link(self._new_link(link, None))

    def _new_link(self, link: Link, expected_uuid: str | None) -> PeerLink:
        return PeerLink(
            link,
            self.local,
            bus=self.bus,
            on_events=self._on_events,
            on_resume=self._resume,
            on_ended=self._link_ended,
            config=self.config.protocol,
            mesh_key=self.mesh_key,
            expected_uuid=expected_uuid,
            queue_limit=self.config.queue_limit,
        )

    async def _run_link(self, peer: PeerLink) -> None:
        self.links.add(peer)
        try:
            await peer.run()
        finally:
            self._link_ended(peer)  # already done by the link, unless it was cut off first

    def _link_ended(self, peer: PeerLink) -> None:
        """The link is over (called once, before its transport closes)."""
        if peer.ended.is_set():
            return
        peer.ended.set()
        self.links.discard(peer)
        info = peer.info()
        totals = self._closed_totals
        totals[0] += 1 if peer.was_open else 0
        totals[1] += info.messages_in
        totals[2] += info.messages_out
        totals[3] += info.dropped
        if self.peers.get(peer.uuid) is peer:
            del self.peers[peer.uuid]
            self._log.info(
                "peer_disconnected", peer=peer.uuid, reason=peer.end_reason, dropped=peer.dropped
            )
            self._fail_requests_to(peer)
            self.interests_changed()
            if peer.remote is not None and peer.remote.role == ROLE_PEER:
                self._gossip()  # our peers learn we no longer reach it (relaying may start)
            self._notify()
        dialer = peer.first_waiter
        if dialer is not None and dialer.first is not None and not dialer.first.done():
            existing = self.peers.get(peer.uuid)
            if peer.reject_reason == REASON_DUPLICATE and existing is not None:
                dialer.first.set_result(existing)  # already linked: the other side dialled first
                return
            reason = peer.reject_reason or "closed"
            _settle(dialer, HandshakeRejectedError(reason, dialer.endpoint, peer.end_reason))

    def _on_events(self, peer: PeerLink, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, MessagesReceived):
                self._from_link(peer, event.messages)
            elif isinstance(event, InterestsReceived):
                peer.set_interests(event.patterns)
                self._log.debug("peer_interests", peer=peer.uuid, patterns=list(event.patterns))
                self.interests_changed()  # what others can reach through us changed too
                self._notify()
            elif isinstance(event, HelloReceived):
                self._on_hello(peer)
            elif isinstance(event, HandshakeComplete):
                self._on_open(peer)
            elif isinstance(event, PeersReceived):
                peer.neighbours = frozenset(uuid for uuid, _ in event.pairs)
                self._routes_changed()
                self.interests_changed()  # relaying for this peer may have changed
                self._on_gossip(event.pairs)
            elif isinstance(event, WithdrawReceived):
                self._log.info("peer_withdrew", peer=peer.uuid)
                peer.dropped += peer.drop_queue()
                self._notify()
            elif isinstance(event, WithdrawAcked):
                peer.acked.set()
            elif isinstance(event, Rejected):
                peer.reject_reason = event.reason
                self._rejected[event.reason] = self._rejected.get(event.reason, 0) + 1
                peer.end(event.reason)
                self._routes_changed()
                self._log.info(
                    "handshake_rejected",
                    peer=peer.uuid or peer.link.remote_address,
                    reason=event.reason,
                    detail=event.detail,
                    by_remote=event.by_remote,
                )
            elif isinstance(event, ProtocolViolation | LinkDead | Closed):
                peer.end(event.reason)
                self._routes_changed()
                level = "info" if isinstance(event, Closed) else "warning"
                getattr(self._log, level)(
                    "link_closed",
                    peer=peer.uuid or peer.link.remote_address,
                    reason=event.reason,
                    detail=event.detail,
                    kind=type(event).__name__,
                )

    def _on_hello(self, peer: PeerLink) -> None:
        uuid = peer.uuid
        existing = self.peers.get(uuid)
        if existing is not None and existing is not peer and not existing.ended.is_set():
            if not _preferred(peer, existing):
                peer.proto.reject(REASON_DUPLICATE, "a link to this node already exists")
                peer.reject_reason = REASON_DUPLICATE
                peer.end(REASON_DUPLICATE)
                return
            existing.end(REASON_DUPLICATE)
            self._routes_changed()
        self.peers[uuid] = peer
        events = peer.proto.accept()
        if events:
            self._on_events(peer, events)

    def _on_open(self, peer: PeerLink) -> None:
        peer.was_open = True
        peer.opened_at = time.time()
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
        dialer = peer.first_waiter
        if dialer is not None and dialer.first is not None and not dialer.first.done():
            dialer.first.set_result(peer)
        self._advertise(peer)
        if remote.role == ROLE_PEER and self.local.role == ROLE_PEER:
            self._gossip()
        self.interests_changed()
        self._notify()

    def _on_gossip(self, pairs: tuple[tuple[str, str], ...]) -> None:
        if self.local.role != ROLE_PEER or self._stopping:
            return
        for uuid, endpoint in pairs:
            if uuid == self.local.node_uuid or uuid in self.peers or not endpoint:
                continue
            try:
                self._transport_for(endpoint)
            except UsageError:
                continue
            self.want(endpoint, uuid, "gossip")

    def _gossip(self) -> None:
        pairs = [
            (link.uuid, link.remote.endpoint)
            for link in self.peers.values()
            if link.is_open
            and link.remote is not None
            and link.remote.role == ROLE_PEER
            and link.remote.endpoint
        ]
        for uuid, endpoint in ((self.local.node_uuid, ep) for ep in self.endpoints()[:1]):
            pairs.append((uuid, endpoint))
        for link in self.peers.values():
            if link.is_open and link.remote is not None and link.remote.role == ROLE_PEER:
                link.proto.send_peers([p for p in pairs if p[0] != link.uuid])
                link.flush()

    # -- interests -------------------------------------------------------------------------------

    def interests_changed(self) -> None:
        """Local routes or a leaf's interests changed: re-advertise soon (once per loop turn)."""
        if self._interests_pending or self._stopping:
            return
        self._interests_pending = True
        asyncio.get_running_loop().call_soon(self._readvertise)

    def _readvertise(self) -> None:
        self._interests_pending = False
        for link in list(self.peers.values()):
            if link.is_open:
                self._advertise(link)

    def _advertise(self, to: PeerLink) -> None:
        patterns = set(self.bus.interests())
        for link in self.peers.values():
            if link is to or not link.is_open or link.remote is None:
                continue
            if (
                link.remote.role == ROLE_LEAF
                or (to.remote is not None and to.remote.role == ROLE_LEAF)
                or _relays(to, link)
            ):
                patterns.update(link.interests)
        wanted = (">",) if ">" in patterns else tuple(sorted(patterns))
        if wanted != to.advertised:
            to.advertised = wanted
            to.proto.send_interests(wanted)
            to.flush()

    # -- routing ---------------------------------------------------------------------------------

    def _check_sendable(self, msg: Message) -> None:
        """Refuse, before anything is delivered, a message no link could carry."""
        limit = self.config.protocol.limits.max_message_bytes
        if len(msg.data) > limit:
            raise UsageError(
                f"message data is {len(msg.data)} bytes, over the mesh limit of {limit} bytes"
            )
        if msg.headers is not None and len(msg.headers) > MAX_HEADERS:
            raise UsageError(f"a message may carry at most {MAX_HEADERS} headers")

    def forward_local(self, msg: Message) -> int:
        """Bus hook: a local pod sent ``msg``. Forward it; return how many links took it."""
        self._seen[msg.uuid] = None
        return self._forward(msg, None, True)

    def _asked_elsewhere(self, request_uuid: str) -> bool:
        """Bus hook: the request came from another node (its replies travel back there)."""
        return isinstance(self._seen.get(request_uuid), PeerLink)

    def _from_link(self, peer: PeerLink, messages: list[Message], *, force: bool = False) -> None:
        """Deliver messages from ``peer`` here and forward them on.

        While a local pod is congested the rest waits in ``peer.backlog``: the link's reader then
        holds off reading, so TCP pushes back to the sender (see ``PeerLink``). ``force`` delivers
        everything (after a bounded hold: a full inbox then applies its overflow policy).
        """
        seen = self._seen
        bus = self.bus
        from_leaf = peer.remote is not None and peer.remote.role == ROLE_LEAF
        for i, msg in enumerate(messages):
            if not force and bus.pods_congested:
                peer.backlog.extend(messages[i:])
                return
            if msg.uuid in seen:
                self.duplicates += 1
                continue
            seen[msg.uuid] = peer
            bus.deliver(msg, None)
            self._forward(msg, peer, from_leaf)

    def _resume(self, peer: PeerLink, force: bool) -> None:
        """PeerLink hook: deliver what waits in its backlog (all of it if ``force``)."""
        pending = list(peer.backlog)
        peer.backlog.clear()
        self._from_link(peer, pending, force=force)

    def _forward(self, msg: Message, origin: PeerLink | None, from_leaf: bool) -> int:
        """Send ``msg`` on to the links that should get it; return how many took it."""
        if msg.reply_to:
            back = self._seen.get(msg.reply_to, False)
            if back is None:  # the request was asked here: the reply is for local pods only
                return 0
            if isinstance(back, PeerLink):
                if back is origin or not back.is_open:
                    self.dropped_no_route += 1  # the asker's link is gone; its wait already failed
                    return 0
                return 1 if back.enqueue(msg) else 0
        if from_leaf:
            targets = self._routes_from_leaf.get(msg.type)
            if targets is None:
                targets = self._targets(msg.type, None)
        else:
            assert origin is not None
            targets = self._routes_from_peer.get((origin.uuid, msg.type))
            if targets is None:
                targets = self._targets(msg.type, origin)
        n = 0
        for link in targets:
            if link is not origin and link.enqueue(msg):
                n += 1
        if origin is None and n:
            self._sent_to[msg.uuid] = targets
        return n

    def _targets(self, msg_type: str, origin: PeerLink | None) -> tuple[PeerLink, ...]:
        """The open links that want ``msg_type``, for a message from a local pod or a leaf
        (``origin`` None: every link) or from the peer ``origin``: one hop, so only leaves, and
        the peers ``origin`` has no link of its own to (this node relays for it)."""
        targets = tuple(
            link
            for link in self.peers.values()
            if link.is_open
            and link.remote is not None
            and link is not origin
            and (origin is None or link.remote.role == ROLE_LEAF or _relays(origin, link))
            and link.wants(msg_type)
        )
        if origin is None:
            cache: dict[Any, tuple[PeerLink, ...]] = self._routes_from_leaf
            key: Any = msg_type
        else:
            cache, key = self._routes_from_peer, (origin.uuid, msg_type)
        if len(cache) >= 4096:
            cache.clear()
        cache[key] = targets
        return targets

    def _routes_changed(self) -> None:
        self._routes_from_leaf.clear()
        self._routes_from_peer.clear()

    def _fail_requests_to(self, peer: PeerLink) -> None:
        """Fail waits on replies that only ``peer`` could have sent."""
        doomed = [
            uuid
            for uuid, targets in self._sent_to.items()
            if peer in targets and all(t is peer or not t.is_open for t in targets)
        ]
        if doomed:
            n = self.bus.fail_reply_waiters(
                doomed, LinkClosedError(f"the link to node {peer.uuid} closed: {peer.end_reason}")
            )
            if n:
                self._log.info("requests_failed", peer=peer.uuid, count=n)

    # -- discovery and tasks ---------------------------------------------------------------------

    async def _run_discovery(self, plugin: Discovery, ctx: DiscoveryContext) -> None:
        def report(found: PeerReport) -> None:
            if found.node_uuid == self.local.node_uuid or self._stopping:
                return
            if found.gone:
                self.unwant(found.endpoint)
            else:
                self.want(found.endpoint, found.node_uuid, found.source or plugin.name)

        await plugin.run(ctx, report)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error("task_failed", task=task.get_name(), error=repr(exc), exc_info=exc)

    def _notify(self) -> None:
        """Wake everyone in ``wait_changed``: a link opened or ended, interests changed."""
        self._routes_changed()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self) -> None:
        """Wait for the next change of links or interests."""
        await self._changed.wait()

    def statistics(self) -> HubStatistics:
        """Totals since start: what closed links carried is kept, not lost with them."""
        live = [link.info() for link in self.links]
        closed, m_in, m_out, dropped = self._closed_totals
        return HubStatistics(
            links_opened=self._opened,
            links_closed=closed,
            handshakes_rejected=dict(self._rejected),
            messages_in=m_in + sum(i.messages_in for i in live),
            messages_out=m_out + sum(i.messages_out for i in live),
            dropped_link=dropped + sum(i.dropped for i in live),
            dropped_duplicate=self.duplicates,
            dropped_no_route=self.dropped_no_route,
        )

    def peer_infos(self) -> list[PeerInfo]:
        return [link.info() for link in self.peers.values()]


def _fit_to_transports(config: HubConfig, transports: list[Transport]) -> HubConfig:
    """Frames no larger than every transport carries, messages that fit in such a frame."""
    limits = config.protocol.limits
    frame = min([limits.max_frame_bytes, *(t.max_frame_bytes for t in transports)])
    if frame == limits.max_frame_bytes:
        return config
    message = min(limits.max_message_bytes, frame - MESSAGE_OVERHEAD)
    if message < 1:
        raise UsageError(f"a transport's max_frame_bytes ({frame}) leaves no room for a message")
    fitted = dataclasses.replace(limits, max_frame_bytes=frame, max_message_bytes=message)
    protocol = dataclasses.replace(config.protocol, limits=fitted)
    return dataclasses.replace(config, protocol=protocol)


def _relays(origin: PeerLink, other: PeerLink) -> bool:
    """True if this node carries traffic between two of its peers that are not linked.

    They told us whom they are linked to (PEERS): two peers that cannot reach each other
    directly (an HTTP-only node and a WebSocket-only node, say) still share a mesh through us.
    Until ``origin``'s list arrives we do not relay (in a full mesh it arrives with the link);
    when a list is stale, the seen-set drops the duplicate that results.
    """
    if origin.remote is None or other.remote is None:
        return False
    if origin.remote.role != ROLE_PEER or other.remote.role != ROLE_PEER:
        return False
    known = origin.neighbours
    return known is not None and other.uuid not in known


def _preferred(new: PeerLink, old: PeerLink) -> bool:
    """Of two links between the same nodes, both sides keep the same one.

    Links dialled by different nodes: the one dialled by the smaller uuid wins. Dialled by the same
    node: the newer wins (that node has given up on the old one).
    """
    if new.initiator_uuid != old.initiator_uuid:
        return new.initiator_uuid < old.initiator_uuid
    return True


def _settle(dialer: _Dialer, exc: BaseException) -> None:
    if dialer.first is not None and not dialer.first.done():
        dialer.first.set_exception(exc)
        dialer.first.exception()  # mark retrieved: connect_endpoint may not be waiting
