"""The dialer: endpoints this node wants links to, and the loops that keep those links.

Theory of operation
-------------------
Every endpoint the node wants (a static peer, one discovery reported, one a peer gossiped, one
``connect_endpoint`` asked for) is a ``WantedEndpoint`` with one dial loop. The loop dials through
the hub (``DialPort.dial``, which runs the link until it ends and reports a ``DialOutcome``), waits
out a link that is already up (perhaps dialled by the other side), and redials with capped,
jittered backoff. It gives up for good only when the endpoint is this node itself, when no
transport dials its scheme, when discovery saw the node leave, or (for gossiped endpoints, which
anyone could name) after a few consecutive failures.

A node has an endpoint per transport, and mDNS and static lists name them all: the loop of a slower
endpoint (websocket, http) waits while a faster endpoint of the same node (tcp) has a loop that has
not failed, so two nodes link over the fastest transport both speak, and do not race links over
each that end as duplicates. A failure of the faster one (a firewall that passes only WebSocket)
lets the slower one dial. Discovery reports a node's endpoints one by one (mDNS resolves each of
its services on its own), so a slower endpoint of a node discovery named waits ``SIBLING_GRACE``
before its first dial for the faster ones to be reported. The loops wake each other on the
dialer's ``_turn`` pulse (a dial ended, a loop stopped, an endpoint became wanted).

An endpoint that stops being wanted while its loop backs off after failed dials (discovery saw
the node leave) keeps its backoff for a while (``_cooling``): wanted again (a record that flaps),
its new loop waits out what is left of the delay and carries on backing off from there, so a
flapping record of an unreachable node makes no more dials than a steady one.

``connect_endpoint`` waits on the wanted endpoint's *first link*: a future the link settles when
its handshake completes (``opened``) or when it ends without opening (``failed``, carrying the
refusal's reason; a refusal as a duplicate of a link that is up resolves to that link instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from gravpy import _log as logs
from gravpy.backoff import Backoff, BackoffPolicy
from gravpy.errors import HandshakeRejectedError, LinkClosedError, NodeUUIDMismatch, UsageError
from gravpy.plugins import Discovery, DiscoveryContext, PeerReport, Transport
from gravpy.proto import REASON_DUPLICATE, REASON_UUID_MISMATCH

if TYPE_CHECKING:
    from gravpy.mesh.peer_link import PeerLink

__all__ = [
    "DialOutcome",
    "DialPort",
    "Dialer",
    "WantedEndpoint",
    "dials",
    "fastest",
    "rank",
    "transport_for",
]

_log = logs.get_logger("gravpy.mesh.dialer")
GOSSIP_GIVE_UP = 5  # consecutive failed dials before a gossiped endpoint is forgotten
SIBLING_GRACE = 0.5  # seconds a slower endpoint of a discovered node waits for its faster ones
COOLING_LIMIT = 1024  # endpoints no longer wanted whose backoff is kept (``Dialer._cooling``)


class DialOutcome(enum.Enum):
    """How one dial ended."""

    OPEN = "open"  # the link opened (and has ended since)
    FAILED = "failed"  # unreachable, refused, or closed before opening: try again later
    DUPLICATE = "duplicate"  # a link to that node already exists: wait on it instead
    SELF = "self"  # the endpoint is this node: never dial it again
    NO_TRANSPORT = "no_transport"  # no transport of this node dials that scheme


class DialPort(Protocol):
    """What the dialer needs from the hub."""

    @property
    def stopping(self) -> bool: ...
    async def dial(self, wanted: WantedEndpoint) -> DialOutcome: ...
    def link_to(self, wanted: WantedEndpoint) -> PeerLink | None: ...
    def link_for(self, uuid: str) -> PeerLink | None: ...
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...


class WantedEndpoint:
    """One endpoint the node keeps a link to, and the waiters for its first link."""

    def __init__(self, endpoint: str, expected_uuid: str | None, source: str, port: DialPort):
        self.endpoint = endpoint
        self.expected_uuid = expected_uuid
        self.source = source
        self.task: asyncio.Task[None] | None = None
        self.fallbacks: tuple[str, ...] = ()  # gossip: the node's slower endpoints, to try next
        self.unreachable = 0  # consecutive dials that failed (a duplicate refusal is no failure)
        self.backoff: Backoff | None = None  # its loop's, once it runs
        self.not_before = 0.0  # (loop time) when that backoff lets the loop dial again
        # the node a link dialled here opened to: a link to it, whoever dialled, serves this
        # endpoint (a node's HELLO names its fastest endpoint, not necessarily this one)
        self.linked_uuid: str | None = None
        self._first: asyncio.Future[PeerLink] | None = None
        self._awaiting = ""  # a duplicate was refused: the first link is the other one to this node
        self._port = port

    def first_link(self) -> asyncio.Future[PeerLink]:
        """A future for the next link to open (or the refusal of the next attempt)."""
        if self._first is None or self._first.done():
            self._first = asyncio.get_running_loop().create_future()
        return self._first

    def opened(self, link: PeerLink) -> None:
        """A link dialled for this endpoint (or the one it was a duplicate of) opened."""
        self._awaiting = ""
        if link.uuid:
            self.linked_uuid = link.uuid
        if self._first is not None and not self._first.done():
            self._first.set_result(link)

    def node_linked(self, link: PeerLink) -> None:
        """Some link opened: if ours was refused as its duplicate, that link is our first."""
        if self._awaiting and link.uuid == self._awaiting:
            self.opened(link)

    def failed(self, link: PeerLink) -> None:
        """A link dialled for this endpoint ended; settle a waiter if it never opened.

        Two nodes that dial each other at once keep one link of the two: the other one ends as
        a duplicate. Then the waiter gets the link that is kept, once it is open.
        """
        if self._first is None or self._first.done() or link.was_open:
            return
        if REASON_DUPLICATE in (link.reject_reason, link.end_reason) and link.uuid:
            kept = self._port.link_for(link.uuid)
            if kept is not None and kept.is_open:
                self.opened(kept)
                return
            if kept is not None:
                self._awaiting = link.uuid  # settled when it opens, or by the next dial
                return
            # no other link of ours to that node: the remote already has a live link claiming
            # this node's uuid, so this refusal is the caller's answer
        reason = link.reject_reason or "closed"
        if reason == REASON_UUID_MISMATCH and self.expected_uuid is not None:
            self.settle(NodeUUIDMismatch(self.endpoint, self.expected_uuid, link.uuid or "?"))
            return
        self.settle(
            HandshakeRejectedError(reason, self.endpoint, link.reject_detail or link.end_reason)
        )

    def settle(self, exc: BaseException) -> None:
        """Fail the waiter for the first link (if any waits) with ``exc``."""
        self._awaiting = ""
        if self._first is not None and not self._first.done():
            self._first.set_exception(exc)
            self._first.exception()  # mark retrieved: connect_endpoint may not be waiting


class Dialer:
    """The wanted endpoints of one node and their dial loops."""

    def __init__(self, port: DialPort, backoff: BackoffPolicy, log: Any = _log) -> None:
        self._port = port
        self._backoff = backoff
        self._wanted: dict[str, WantedEndpoint] = {}
        # endpoints no longer wanted while backing off: their backoff, and when it allows a dial
        self._cooling: dict[str, tuple[Backoff, float]] = {}
        self._log = log
        self._turn = asyncio.Event()  # set and replaced when a dial ends or a loop stops

    def _pulse(self) -> None:
        self._turn.set()
        self._turn = asyncio.Event()

    def endpoints(self) -> list[str]:
        """The endpoints this node keeps links to."""
        return list(self._wanted)

    def get(self, endpoint: str) -> WantedEndpoint | None:
        return self._wanted.get(endpoint)

    def want(
        self, endpoint: str, expected_uuid: str | None = None, source: str = ""
    ) -> WantedEndpoint:
        """Keep a link to ``endpoint``, redialling with backoff until the node stops."""
        wanted = self._wanted.get(endpoint)
        if wanted is None:
            wanted = WantedEndpoint(endpoint, expected_uuid, source, self._port)
            self._wanted[endpoint] = wanted
            wanted.task = self._port.spawn(self._loop(wanted), f"dial-{endpoint}")
            self._pulse()
            return wanted
        if expected_uuid is not None and expected_uuid != wanted.expected_uuid:
            # a new node at a known address (restarted, new uuid): expect the one reported now
            wanted.expected_uuid = expected_uuid
            wanted.source = source or wanted.source
        if wanted.source == "gossip" and source not in ("", "gossip"):
            wanted.source = source  # discovery saw it: keep dialling, do not give up
        return wanted

    async def first_link(self, endpoint: str) -> PeerLink:
        """Keep a link to ``endpoint`` and wait for its first one to open and say what it wants.

        Raises if the first attempt is refused or fails, and ``LinkClosedError`` if the link ends
        before its INTERESTS (so a caller never goes on with a link it cannot use: a request
        sent as soon as this returns is routed, and ``NoResponders`` is not raised too early).
        """
        wanted = self.get(endpoint) or self.want(endpoint, None, "connect_endpoint")
        link = await asyncio.shield(wanted.first_link())
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
        return link

    async def follow(self, plugin: Discovery, ctx: DiscoveryContext) -> None:
        """Run a discovery plugin: keep a link to each node it reports, until it reports the
        node gone (never this node itself; nothing new once the node stops)."""

        def report(found: PeerReport) -> None:
            if found.node_uuid == ctx.node_uuid or self._port.stopping:
                return
            if found.gone:
                self.unwant(found.endpoint)
            else:
                self.want(found.endpoint, found.node_uuid, found.source or plugin.name)

        await plugin.run(ctx, report)

    def unwant(self, endpoint: str) -> None:
        """Stop keeping a link to ``endpoint``; an open link stays until it closes."""
        wanted = self._wanted.pop(endpoint, None)
        if wanted is None or wanted.task is None:
            return
        if self._port.link_to(wanted) is None:
            wanted.task.cancel()
            if wanted.backoff is not None and wanted.backoff.attempts:  # it was backing off
                self._cool(endpoint, wanted.backoff, wanted.not_before)
        else:
            wanted.source = "gone"

    def _cool(self, endpoint: str, backoff: Backoff, not_before: float) -> None:
        """Keep ``endpoint``'s backoff until it allows a dial again plus its longest delay."""
        now = asyncio.get_running_loop().time()
        cooling = self._cooling
        if len(cooling) >= COOLING_LIMIT:
            for key in [k for k, (b, t) in cooling.items() if t + b.policy.maximum < now]:
                del cooling[key]
            if len(cooling) >= COOLING_LIMIT:
                del cooling[next(iter(cooling))]
        cooling[endpoint] = (backoff, not_before)

    def _warm(self, endpoint: str) -> tuple[Backoff, float]:
        """The backoff a loop for ``endpoint`` starts with, and when it may first dial: what
        was kept when it stopped being wanted lately, else a new one, at once."""
        kept = self._cooling.pop(endpoint, None)
        now = asyncio.get_running_loop().time()
        if kept is not None and kept[1] + kept[0].policy.maximum >= now:
            return kept
        return self._backoff.new_backoff(), now

    def count(self, source: str) -> int:
        """How many endpoints are kept because ``source`` named them (e.g. ``"gossip"``)."""
        return sum(1 for wanted in self._wanted.values() if wanted.source == source)

    def node_linked(self, link: PeerLink) -> None:
        """A link to a node opened (whoever dialled it)."""
        for wanted in self._wanted.values():
            wanted.node_linked(link)

    def settle_all(self, exc: BaseException) -> None:
        """Fail every waiter for a first link (the node is stopping)."""
        for wanted in self._wanted.values():
            wanted.settle(exc)

    def want_fastest(self, uuid: str, endpoints: list[str]) -> WantedEndpoint:
        """Keep a link to a gossiped node by the fastest of its ``endpoints``; if that one stays
        unreachable (a firewall may pass WebSocket but not TCP), the next fastest, and so on."""
        ranked = sorted(endpoints, key=rank)
        wanted = self.want(ranked[0], uuid, "gossip")
        if wanted.source == "gossip":
            wanted.fallbacks = tuple(ranked[1:])
        return wanted

    def _give_up(self, wanted: WantedEndpoint) -> None:
        """A gossiped endpoint failed ``GOSSIP_GIVE_UP`` times: forget it, try its fallback."""
        self._log.info("dial_abandoned", endpoint=wanted.endpoint, reason="unreachable")
        self._wanted.pop(wanted.endpoint, None)
        if wanted.fallbacks and wanted.expected_uuid is not None:
            self.want_fastest(wanted.expected_uuid, list(wanted.fallbacks))

    async def _loop(self, wanted: WantedEndpoint) -> None:
        try:
            await self._keep(wanted)
        finally:
            self._pulse()

    async def _keep(self, wanted: WantedEndpoint) -> None:
        port = self._port
        backoff, not_before = self._warm(wanted.endpoint)
        wanted.backoff, wanted.not_before = backoff, not_before
        loop = asyncio.get_running_loop()
        if not_before > loop.time():  # wanted again while it was backing off: wait the rest
            await asyncio.sleep(not_before - loop.time())
        failures = 0
        grace = wanted.expected_uuid is not None and rank(wanted.endpoint) > 0
        while not port.stopping:
            link = port.link_to(wanted)
            if link is not None:  # already linked (perhaps the other side dialled): wait it out
                await link.ended.wait()
                continue
            if wanted.source == "gone":
                return
            if await self._yield_to_faster(wanted, grace):
                grace = False
                continue
            outcome = await port.dial(wanted)
            self._pulse()
            wanted.unreachable = wanted.unreachable + 1 if outcome is DialOutcome.FAILED else 0
            if outcome is DialOutcome.OPEN:
                backoff.reset()
                failures = 0
            elif outcome in (DialOutcome.SELF, DialOutcome.NO_TRANSPORT):
                self._log.info("dial_abandoned", endpoint=wanted.endpoint, reason=outcome.value)
                return
            else:
                failures += 1
                if wanted.source == "gossip" and failures >= GOSSIP_GIVE_UP:
                    self._give_up(wanted)
                    return
            delay = backoff.next_delay()
            wanted.not_before = loop.time() + delay
            await asyncio.sleep(delay)

    async def _yield_to_faster(self, wanted: WantedEndpoint, grace: bool) -> bool:
        """Wait (True) while a faster endpoint of the node dials; with ``grace`` (the first dial of
        a slower endpoint of a discovered node), up to ``SIBLING_GRACE`` for one to be reported."""
        turn = self._turn
        if self._faster(wanted):
            await turn.wait()
            return True
        if not grace:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SIBLING_GRACE):
                await turn.wait()
        return True

    def _faster(self, wanted: WantedEndpoint) -> bool:
        """True if a faster endpoint of ``wanted``'s node has a running loop that has not failed."""
        uuid = wanted.expected_uuid
        if uuid is None:
            return False
        own = rank(wanted.endpoint)
        return any(
            other.expected_uuid == uuid
            and rank(other.endpoint) < own
            and other.unreachable == 0
            and other.task is not None
            and not other.task.done()
            for other in self._wanted.values()
        )


# Transports by speed on a LAN: raw TCP, then WebSocket, then HTTP (DESIGN.md section 5).
_SCHEME_RANK = {"tcp": 0, "tls": 0, "ws": 1, "wss": 1, "http": 2, "https": 2}


def fastest(endpoints: list[str]) -> str:
    """The endpoint of the fastest transport (tcp, then websocket, then http; others last)."""
    return min(endpoints, key=rank)


def rank(endpoint: str) -> int:
    """How fast ``endpoint``'s transport is: 0 for tcp (the fastest), 1 websocket, 2 http."""
    return _SCHEME_RANK.get(endpoint.split("://", 1)[0], 9)


def transport_for(transports: Sequence[Transport], endpoint: str) -> Transport:
    """The first of ``transports`` that dials ``endpoint``'s scheme; ``UsageError`` if none."""
    scheme = endpoint.split("://", 1)[0] if "://" in endpoint else ""
    for transport in transports:
        if not scheme or scheme in transport.schemes:
            return transport
    raise UsageError(f"no transport of this node dials {endpoint!r}")


def dials(transports: Sequence[Transport], endpoint: str) -> bool:
    """True if one of ``transports`` dials ``endpoint``'s scheme."""
    try:
        transport_for(transports, endpoint)
    except UsageError:
        return False
    return True
