"""PeerLink: one link to another node, driven by asyncio around a sans-I/O ``PeerProtocol``.

``run`` first drives the handshake from its own task, so a refused attempt costs no other task.
Once the link is OPEN, a PeerLink owns three loops for the life of the link, in one
``TaskGroup``: the reader (``gravpy.mesh.link_reader``) feeds frames to the protocol and hands
what arrives to its owner (the hub, through the ``LinkOwner`` port): the messages to
``link_messages`` and every other event to ``link_events``, keeping in its backlog what congested
local pods cannot take yet; the writer (``gravpy.mesh.link_writer``: the bounded send queue, its
batching into MSGS frames, and the direct path for a lone message on a transport that can write
without waiting) writes every frame in order; the ticker runs the protocol's timers (pings, the
handshake deadline, the dead-link check). When any of them ends, the link is closed and ``run``
returns.

The link owns all of its state: the hub tells it what happened (``mark_open``, ``reject``,
``peer_withdrew``) and what to say (``advertise``, ``send_peers``, ``withdraw``); each of those
flushes itself.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping

from gravpy import _log as logs
from gravpy.errors import LinkClosedError
from gravpy.filter import Pattern
from gravpy.mesh.link_reader import LinkReader
from gravpy.mesh.link_stats import LinkDrops, PeerInfo, link_info
from gravpy.mesh.link_writer import LinkWriter
from gravpy.mesh.permissions import Identity
from gravpy.message import Message
from gravpy.plugins import Link
from gravpy.ports import Backpressure, DialWaiter, LinkOwner
from gravpy.proto import (
    REASON_NORMAL,
    Hello,
    LinkDead,
    NodeInfo,
    PeerProtocol,
    ProtocolConfig,
)
from gravpy.proto.handshake import CLOSED, OPEN, ROLE_LEAF, ROLE_PEER, Credentials
from gravpy.recent import RecentMap

__all__ = ["Backpressure", "LinkOwner", "PeerInfo", "PeerLink"]

_log = logs.get_logger("gravpy.mesh.peer_link")
_NO_GROUPS: Mapping[str, int] = {}

# messages sent to a remote whose identity restricts what it publishes, remembered so that its
# answers to them pass (``answers``): at least the last half of this many
ANSWERABLE = 16_384
_DETAIL_LIMIT = 500  # characters of a refusal's detail kept for the one refused


def _refused_or_closed(proto: PeerProtocol) -> bool:
    """True once the handshake ended without opening (a REJECT or CLOSE is queued last)."""
    return proto.state is CLOSED


class PeerLink:
    """One link; see the module docstring. The hub creates it and calls ``run``."""

    def __init__(
        self,
        link: Link,
        local: NodeInfo,
        *,
        owner: LinkOwner,
        backpressure: Backpressure,
        config: ProtocolConfig,
        mesh_key: bytes | None,
        expected_uuid: str | None,
        credentials: Credentials | None = None,
        queue_limit: int,
        queue_bytes: int = 64 << 20,
        dial_endpoint: str = "",
        dialer: DialWaiter | None = None,
        screen: Callable[[Hello], tuple[str, str] | None] | None = None,
        origin_seq: int = 0,
        upgrade_token: bytes = b"",
    ) -> None:
        self.link = link
        self._owner = owner
        self._bus = backpressure
        self.proto = PeerProtocol(
            local,
            initiator=link.initiator,
            now=time.monotonic(),
            nonce=os.urandom(16),
            mesh_key=mesh_key,
            expected_uuid=expected_uuid,
            config=config,
            credentials=credentials,
            screen=screen,
            origin_seq=origin_seq,
            upgrade_token=upgrade_token,
        )
        self.identity: Identity | None = None  # what the auth file grants (None: no auth file)
        # what was sent to a remote whose identity restricts its publishing (``answers``)
        self._sent: RecentMap[str, None] | None = None
        # who the remote is, known from its HELLO on (``_learn_remote``): "", False, False before
        self.uuid = ""
        self.is_leaf = False  # an application attached here, not a mesh peer
        self.is_peer = False  # a node of the mesh
        self.dial_endpoint = dial_endpoint
        self._dialer = dialer
        self.interests: tuple[str, ...] = ()
        self.group_interests: tuple[tuple[str, str, int], ...] = ()  # (group, pattern, members)
        self.neighbours: frozenset[str] | None = None  # peers the remote says it links to
        self._endpoints: tuple[str, ...] = ()  # where the remote says it listens
        self._advertised: object = None  # what we last told the remote we want
        self.drops = LinkDrops()  # what could not be carried, by reason (gravpy.mesh.link_stats)
        self.end_reason = ""
        self._patterns: list[Pattern] = []
        self._admits: dict[str, bool] = {}
        self._group_patterns: list[tuple[str, Pattern, int]] = []
        self._group_weights: dict[str, Mapping[str, int]] = {}
        self._writer = LinkWriter(
            link,
            self.proto,
            self.drops,
            backpressure,
            queue_limit=queue_limit,
            queue_bytes=queue_bytes,
        )
        self._wake = self._writer.wake
        self._reader = LinkReader(self, link, self.proto, owner, backpressure, self._writer)
        self._timer_changed = asyncio.Event()
        self.ended = asyncio.Event()  # set once the link is gone (``finish``)
        self.closed = asyncio.Event()  # set once the transport is closed too (after ``ended``)
        self.acked = asyncio.Event()  # the remote acknowledged our WITHDRAW
        self.interests_known = asyncio.Event()  # the remote's first INTERESTS arrived
        self.was_open = False
        self.opened_at: float | None = None  # wall clock, when the handshake completed
        self.reject_reason = ""  # why the handshake was refused (by either side)
        self.reject_detail = ""  # ... in words, as the refusing side said it

    # -- what the hub reads ----------------------------------------------------------------------

    @property
    def remote(self) -> Hello | None:
        return self.proto.remote

    @property
    def is_open(self) -> bool:
        return self.proto.state is OPEN and not self._writer.closing

    def _learn_remote(self, remote: Hello) -> None:
        """The remote's HELLO arrived: who it is, kept as plain fields for the hot path."""
        self.uuid = remote.node_uuid
        self.is_leaf = remote.role == ROLE_LEAF
        self.is_peer = remote.role == ROLE_PEER

    def authorized(self, identity: Identity | None) -> None:
        """What the auth file in force grants this link's remote (None: no auth file). From
        the moment its publishing is restricted, what is sent to it is remembered
        (``answers``)."""
        self.identity = identity
        if identity is None or identity.publish.allows_all:
            self._sent = None
        elif self._sent is None:
            self._sent = RecentMap(ANSWERABLE)

    def answers(self, request_uuid: str) -> bool:
        """True if ``request_uuid`` names a message sent to the remote (one of the last
        ``ANSWERABLE // 2`` at least), or its publishing is not restricted: an answer to it
        may pass whatever its type (``gravpy.mesh.enforcement``)."""
        sent = self._sent
        return sent is None or request_uuid in sent

    @property
    def identity_key(self) -> bytes:
        """The public key the remote proved it holds in the handshake; empty if none."""
        return self.proto.verified_key

    @property
    def initiator_uuid(self) -> str:
        """The uuid of the node that dialled this link (ties between duplicate links use it)."""
        return self.proto.local.node_uuid if self.link.initiator else self.uuid

    def set_endpoints(self, endpoints: Iterable[str]) -> None:
        """The endpoints the remote said it listens on (its own entries in PEERS)."""
        self._endpoints = tuple(dict.fromkeys(endpoints))

    def known_endpoints(self) -> tuple[str, ...]:
        """Where the remote can be dialled: what it told us, else the endpoint in its HELLO."""
        if self._endpoints:
            return self._endpoints
        remote = self.proto.remote
        return (remote.endpoint,) if remote is not None and remote.endpoint else ()

    def set_neighbours(self, uuids: Iterable[str]) -> None:
        """The remote told us which peers it links to (PEERS)."""
        self.neighbours = frozenset(uuids)

    def set_interests(
        self, patterns: tuple[str, ...], groups: tuple[tuple[str, str, int], ...] = ()
    ) -> None:
        self.interests = patterns
        self.group_interests = groups
        self.interests_known.set()
        self._patterns = [Pattern(p) for p in patterns]
        self._admits.clear()
        self._group_patterns = [(g, Pattern(p), n) for g, p, n in groups]
        self._group_weights.clear()

    @property
    def congested(self) -> bool:
        """True while the send queue is over its high-water mark (groups prefer other links)."""
        return self._writer.congested

    def group_weights(self, msg_type: str) -> Mapping[str, int]:
        """Members per group that the remote said admit ``msg_type`` (empty once withdrawn)."""
        if self.proto.remote_withdrawn or not self._group_patterns:
            return _NO_GROUPS
        cached = self._group_weights.get(msg_type)
        if cached is None:
            weights: dict[str, int] = {}
            for group, pattern, members in self._group_patterns:
                if pattern.matches(msg_type) and members > weights.get(group, 0):
                    weights[group] = members
            cached = weights or _NO_GROUPS
            if len(self._group_weights) >= 4096:
                self._group_weights.clear()
            self._group_weights[msg_type] = cached
        return cached

    def wants(self, msg_type: str) -> bool:
        """True if the remote said its side admits ``msg_type`` (and it has not withdrawn)."""
        cached = self._admits.get(msg_type)
        if cached is None:
            cached = any(p.matches(msg_type) for p in self._patterns)
            if len(self._admits) >= 4096:
                self._admits.clear()
            self._admits[msg_type] = cached
        return cached and not self.proto.remote_withdrawn

    @property
    def dropped(self) -> int:
        """Messages this link could not send (by reason in ``drops``)."""
        return self.drops.sent_side

    @property
    def queued(self) -> int:
        """Messages waiting in the send queue."""
        return self._writer.queued

    def info(self) -> PeerInfo:
        return link_info(self)

    # -- what the hub calls ----------------------------------------------------------------------

    def accept(self) -> None:
        """Accept the remote's HELLO (the hub found no reason to refuse it)."""
        events = self.proto.accept()
        if events:
            self._reader.dispatch(events)
        self.flush()

    def reject(self, reason: str, detail: str) -> None:
        """Refuse the remote's HELLO with a reason code, tell it why, and close the link."""
        self.proto.reject(reason, detail)
        self.rejected(reason, detail)

    def rejected(self, reason: str, detail: str = "") -> None:
        """The handshake was refused (here or by the remote): remember why and close."""
        self.reject_reason = reason
        self.reject_detail = detail[:_DETAIL_LIMIT]  # (the remote's words: bounded)
        self.end(reason)

    def mark_open(self) -> None:
        """The handshake completed: tell whoever dialled, and start the clock."""
        self.was_open = True
        self.opened_at = time.time()
        if self._dialer is not None:
            self._dialer.opened(self)

    def advertise(
        self, patterns: tuple[str, ...], groups: tuple[tuple[str, str, int], ...] = ()
    ) -> bool:
        """Tell the remote what it may send us, if that changed since we last said (True: sent)."""
        said = (patterns, groups)
        if said == self._advertised:
            return False
        self._advertised = said
        self.proto.send_interests(patterns, groups)
        self.flush()
        return True

    def send_peers(self, pairs: list[tuple[str, str]]) -> None:
        """Tell the remote the peers we link to (uuid, endpoint)."""
        self.proto.send_peers(pairs)
        self.flush()

    def withdraw(self) -> None:
        """Ask the remote to stop sending to us (shutdown): it acks, then we drain and close."""
        self.proto.withdraw()
        self.flush()

    def peer_withdrew(self) -> None:
        """The remote withdrew: what is queued for it will never be sent; count it dropped."""
        self.drops.remote_withdrew += self.drop_queue()

    def moved(self) -> None:
        """Tell the remote, after everything queued, that nothing more follows on this link
        (MOVED: its traffic moved to a faster link, ``gravpy.mesh.upgrade``)."""
        self._writer.after_queue(self.proto.send_moved)

    def send_now(self, msg: Message) -> None:
        """Send ``msg`` ahead of anything queued (a node's notice to its app)."""
        if self.is_open:
            self.proto.send_messages([msg])
            self.flush()

    def enqueue(self, msg: Message, seq: int = 0) -> bool:
        """Queue a message for the remote, with its origin number ``seq`` for a peer (0: none;
        negative: resent). False (and counted) if the queue is full."""
        sent = self._sent
        if sent is not None:
            sent[msg.uuid] = None
        return self._writer.enqueue(msg, seq)

    def flush(self) -> None:
        """Wake the writer: the protocol has frames to send."""
        self._wake.set()
        self._timer_changed.set()

    def end(self, reason: str) -> None:
        """Close the link soon: the writer sends what is queued, then CLOSE, then stops.

        ``reason`` is a protocol reason code (``gravpy.proto.REASON_*``).
        """
        if self._writer.end(reason):
            if not self.end_reason:
                self.end_reason = reason
            self._reader.interrupt()  # if it waits for a handshake frame: stop waiting

    def take_again(self) -> None:
        """The owner declined this link's messages with no pod congested and takes them now:
        the reader, waiting for that, hands the backlog on."""
        self._reader.take_again()

    def drop_queue(self) -> int:
        """Forget what is queued; how many there were (the caller counts them by reason)."""
        return self._writer.drop_queue()

    # -- the loops -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the link until it ends, then close it. Never raises on what the remote does."""
        try:
            if await self._handshake():
                async with asyncio.TaskGroup() as tg:
                    reader = tg.create_task(self._reader.run(), name="link-read")
                    ticker = tg.create_task(self._tick(), name="link-tick")
                    await self._writer.run()
                    reader.cancel()
                    ticker.cancel()
        except BaseExceptionGroup as group:  # not ``except*``: mypyc cannot compile that yet
            closed, rest = group.split(LinkClosedError)
            if closed is not None and not self.end_reason:
                self.end_reason = str(closed.exceptions[0])
            if rest is not None:
                raise rest from None
        finally:
            self._writer.closing = True
            self.drops.link_closed += self.drop_queue()
            # the hub forgets the link now, not after a close handshake a dead peer never answers
            self.finish()
            try:
                await self.link.close(self.end_reason or REASON_NORMAL)
            finally:
                self.closed.set()

    async def _handshake(self) -> bool:
        """Drive the handshake from ``run``'s own task: no reader, writer or ticker task is made
        until the link is OPEN, so a refused attempt costs none of them. True once OPEN; else
        the REJECT or CLOSE is written (when the transport still can) and False returned."""
        proto = self.proto
        try:
            await self._writer.write_all()  # our HELLO
            while proto.state not in (OPEN, CLOSED) and not self._writer.closing:
                frame = await self._reader.handshake_frame(proto.next_timer())
                now = time.monotonic()
                events = proto.tick(now) if frame is None else proto.receive_frame(frame, now)
                if not self.uuid and proto.remote is not None:
                    self._learn_remote(proto.remote)
                if events:
                    self._reader.dispatch(events)
                if not (self._writer.closing or _refused_or_closed(proto)):  # else: below
                    await self._writer.write_all()
            if proto.state is OPEN and not self._writer.closing:
                return True
            await self._writer.write_last(self.end_reason)
        except LinkClosedError as exc:
            await self._reader.read_refusal()  # it may have refused us before the link failed
            if not self.end_reason:
                self.end_reason = str(exc)
        return False

    def finish(self) -> None:
        """The link is over: tell the owner and whoever dialled it (once)."""
        if self.ended.is_set():
            return
        self.ended.set()
        self._owner.link_ended(self)
        if self._dialer is not None:
            self._dialer.failed(self)

    def read_closed(self, reason: str) -> None:
        """The transport failed under the reader (``reason``, unless the link already has one):
        the writer sends what it still can, then stops."""
        if not self.end_reason:
            self.end_reason = reason
        self._writer.end(REASON_NORMAL)

    async def _tick(self) -> None:
        while True:
            deadline = self.proto.next_timer()
            self._timer_changed.clear()
            if deadline is None:
                return
            delay = max(0.0, deadline - time.monotonic())
            try:
                async with asyncio.timeout(delay):
                    await self._timer_changed.wait()
                continue
            except TimeoutError:
                pass
            events = self.proto.tick(time.monotonic())
            if events:
                self._reader.dispatch(events)
            if self.proto.state is CLOSED and not self.proto.data_to_send():
                return
            if any(isinstance(e, LinkDead) for e in events):
                # nothing has come back for dead_after: do not wait on a write that may never end
                raise LinkClosedError(f"link to {self.link.remote_address} is dead")
            self._wake.set()

    def __repr__(self) -> str:
        return f"<PeerLink {self.uuid or '?'} {self.link.remote_address} {self.proto.state.name}>"
