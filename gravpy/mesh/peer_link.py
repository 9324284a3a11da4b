"""PeerLink: one link to another node, driven by asyncio around a sans-I/O ``PeerProtocol``.

A PeerLink owns three loops for the life of the link, in one ``TaskGroup``: the reader feeds frames
to the protocol and hands what arrives to its owner (the hub, through the ``LinkOwner`` port): the
messages to ``link_messages`` and every other event to ``link_events`` (on a link that offers
``take_frames``, the frames that arrive while the reader waits take that path in the transport's
callback, and the reader is woken only for a backlog); the writer
(``gravpy.mesh.link_writer``: the bounded send queue, its batching into MSGS frames, and the direct
path for a lone message on a transport that can write without waiting) writes every frame in
order; the ticker runs the protocol's timers (pings, the handshake deadline, the dead-link check).
When any of them ends, the link is closed and ``run`` returns.

Incoming messages that the owner cannot take yet (a local pod is congested: ``link_messages``
returns how many it took) wait in the link's own ``backlog``; the reader then holds off reading, so
TCP pushes back to the sender, and retries in steps (see ``_hold``). A large frame goes the same
way: 32 messages are handed on, the rest wait in the backlog and follow 32 per loop turn, so that
the replies and sends they cause leave while the rest is delivered (both ends work at once). The link owns all of its state:
the hub tells it what happened (``mark_open``, ``reject``, ``peer_withdrew``) and what to say
(``advertise``, ``send_peers``, ``withdraw``); each of those flushes itself.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from gravpy import _log as logs
from gravpy.congestion import PodHold
from gravpy.errors import LinkClosedError
from gravpy.filter import Pattern
from gravpy.mesh.link_stats import LinkDrops, PeerInfo, link_info
from gravpy.mesh.link_writer import LinkWriter
from gravpy.mesh.permissions import Identity
from gravpy.message import Message
from gravpy.plugins import Link
from gravpy.ports import Backpressure, DialWaiter, LinkOwner
from gravpy.proto import (
    REASON_NORMAL,
    Event,
    Hello,
    LinkDead,
    MessagesReceived,
    NodeInfo,
    PeerProtocol,
    ProtocolConfig,
)
from gravpy.proto.handshake import CLOSED, OPEN, ROLE_LEAF, ROLE_PEER, Credentials
from gravpy.recent import RecentMap

__all__ = ["Backpressure", "LinkOwner", "PeerInfo", "PeerLink"]

_log = logs.get_logger("gravpy.mesh.peer_link")
FrameSink = Callable[[bytes], bool]  # a link's ``take_frames`` argument
_NO_GROUPS: Mapping[str, int] = {}


# Messages handed on per loop turn. A frame of hundreds is delivered in chunks with a loop turn
# between them, so replies and the writer's next frame go out while the rest is still being
# delivered: the two ends of a link work at once instead of in turns (bench_mesh, 100 in flight).
_CHUNK = 32
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
        self._backlog: deque[Message] = deque()  # received, held while a local pod is congested
        self._backlog_seqs: deque[int] = deque()  # their origin numbers (0: none)
        # its waits for congested pods (``_hold``): steps of a quarter of dead_after, two of them
        step = config.dead_after / 4
        self._pod_hold = PodHold(step, 2 * step)
        self._writer = LinkWriter(
            link,
            self.proto,
            self.drops,
            backpressure,
            queue_limit=queue_limit,
            queue_bytes=queue_bytes,
        )
        self._wake = self._writer.wake
        self._timer_changed = asyncio.Event()
        self.ended = asyncio.Event()  # set once the link is gone (``finish``)
        self.closed = asyncio.Event()  # set once the transport is closed too (after ``ended``)
        self.acked = asyncio.Event()  # the remote acknowledged our WITHDRAW
        self.interests_known = asyncio.Event()  # the remote's first INTERESTS arrived
        self.was_open = False
        self.opened_at: float | None = None  # wall clock, when the handshake completed
        self.reject_reason = ""  # why the handshake was refused (by either side)
        self.reject_detail = ""  # ... in words, as the refusing side said it
        self._handshake_task: asyncio.Task[object] | None = None  # waiting for a handshake frame
        self._interrupted = False  # ``end`` cancelled that wait
        self._poked = False  # the frame sink woke the reader: its next empty frame is no frame
        self._sink_error: Exception | None = None  # raised in the sink, for the reader to raise
        self._owner_ready = asyncio.Event()  # the owner takes messages again (``take_again``)

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
            self._dispatch(events)
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
            if self._handshake_task is not None:  # waiting for a handshake frame: stop waiting
                self._interrupted = True
                self._handshake_task.cancel()

    def take_again(self) -> None:
        """The owner declined this link's messages with no pod congested and takes them now:
        the reader, waiting for that, hands the backlog on."""
        self._owner_ready.set()

    def drop_queue(self) -> int:
        """Forget what is queued; how many there were (the caller counts them by reason)."""
        return self._writer.drop_queue()

    # -- the loops -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the link until it ends, then close it. Never raises on what the remote does."""
        try:
            if await self._handshake():
                async with asyncio.TaskGroup() as tg:
                    reader = tg.create_task(self._read(), name="link-read")
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
                frame = await self._handshake_frame(proto.next_timer())
                now = time.monotonic()
                events = proto.tick(now) if frame is None else proto.receive_frame(frame, now)
                if not self.uuid and proto.remote is not None:
                    self._learn_remote(proto.remote)
                if events:
                    self._dispatch(events)
                if not (self._writer.closing or _refused_or_closed(proto)):  # else: below
                    await self._writer.write_all()
            if proto.state is OPEN and not self._writer.closing:
                return True
            await self._writer.write_last(self.end_reason)
        except LinkClosedError as exc:
            await self._read_refusal()  # the remote may have refused us before our write failed
            if not self.end_reason:
                self.end_reason = str(exc)
        return False

    async def _read_refusal(self) -> None:
        """Read what the remote sent before it closed (its REJECT, say) until the link ends."""
        proto = self.proto
        try:
            while proto.state is not CLOSED and not self._writer.closing:
                frame = await self._handshake_frame(proto.next_timer())
                now = time.monotonic()
                events = proto.tick(now) if frame is None else proto.receive_frame(frame, now)
                if events:
                    self._dispatch(events)
        except LinkClosedError:
            return

    async def _handshake_frame(self, deadline: float | None) -> bytes | None:
        """The next frame, or None at the handshake ``deadline`` or when ``end`` was called."""
        self._handshake_task = asyncio.current_task()
        try:
            delay = None if deadline is None else max(0.0, deadline - time.monotonic())
            async with asyncio.timeout(delay):
                return await self.link.recv()
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            task = self._handshake_task
            if not self._interrupted or task is None or task.uncancel() > 0:
                raise
            return None
        finally:
            self._handshake_task = None

    def finish(self) -> None:
        """The link is over: tell the owner and whoever dialled it (once)."""
        if self.ended.is_set():
            return
        self.ended.set()
        self._owner.link_ended(self)
        if self._dialer is not None:
            self._dialer.failed(self)

    def _dispatch(self, events: list[Event]) -> None:
        """Messages to ``link_messages`` (what is not taken waits in the backlog), the rest to
        ``link_events``, in the order the protocol reported them."""
        owner = self._owner
        for event in events:
            if type(event) is MessagesReceived:
                messages = event.messages
                seqs = event.seqs if event.seqs is not None else [0] * len(messages)
                if self._backlog:
                    self._backlog.extend(messages)
                    self._backlog_seqs.extend(seqs)
                    continue
                if len(messages) > _CHUNK:
                    taken = owner.link_messages(self, messages[:_CHUNK], seqs[:_CHUNK])
                else:
                    taken = owner.link_messages(self, messages, seqs)
                if taken < len(messages):  # the rest of a large frame, or what pods refused
                    self._backlog.extend(messages[taken:])
                    self._backlog_seqs.extend(seqs[taken:])
            else:
                owner.link_events(self, [event])

    async def _read(self) -> None:
        # a link that can hand frames over from its transport callback (``take_frames``) saves
        # the wake-up of this task per frame; this task then runs only for the backlog
        take_frames: Callable[[FrameSink | None], None] | None = getattr(
            self.link, "take_frames", None
        )
        try:
            if self._backlog:  # left by the handshake's last frame
                await self._take_backlog()
            if take_frames is not None:
                take_frames(self._frame_now)
            while True:
                frame = await self.link.recv()
                if self._poked and not frame:  # the sink's wake-up, not a frame
                    self._poked = False
                    error, self._sink_error = self._sink_error, None
                    if error is not None:
                        raise error
                else:
                    self._receive(frame)
                if self._backlog:
                    await self._take_backlog()
        except LinkClosedError as exc:
            if not self.end_reason:
                self.end_reason = str(exc)
            self._writer.end(REASON_NORMAL)
        finally:
            if take_frames is not None:
                take_frames(None)

    def _receive(self, frame: bytes) -> None:
        """One frame to the protocol, and what it reports to the owner."""
        proto = self.proto
        events = proto.receive_frame(frame, time.monotonic())
        if not self.uuid and proto.remote is not None:
            self._learn_remote(proto.remote)
        if events:
            self._dispatch(events)
        if proto.has_data_to_send:  # a PONG, a handshake step, a WITHDRAW_ACK
            self._wake.set()

    def _frame_now(self, frame: bytes) -> bool:
        """The link's frame sink, run in its transport callback while the reader waits: False
        when the reader must run (a backlog to hand on, or an error to raise as its own)."""
        try:
            self._receive(frame)
        except Exception as exc:
            self._sink_error = exc
        if self._backlog or self._sink_error is not None:
            self._poked = True
            return False
        return True

    async def _take_backlog(self) -> None:
        self.proto.hold_reading()
        try:
            await self._hold()
        finally:
            self.proto.resume_reading(time.monotonic())

    async def _hold(self) -> None:
        """Hand on the backlog a chunk per loop turn; read no more until it is empty, and while
        local pods are congested, so the sender's link backs up.

        Waits in steps of a quarter of ``dead_after``. A burst is held: the pods catch up and the
        link reads on. Congested pods are set aside when a step passes with no progress (a stuck
        pod), or when the link's waits for them, less the time it ran free in between, add up to
        two steps (a slow one: it relieves within each step, yet holds the link most of the
        time). They then drop by their overflow policy (counted) instead of holding this link,
        their siblings get everything that follows, and the link reads again well before its
        unread pings could make it look dead.
        """
        bus = self._bus
        while self._backlog:
            if bus.pods_congested:
                await bus.wait_pods(self._pod_hold)
            backlog, backlog_seqs = self._backlog, self._backlog_seqs
            n = min(len(backlog), _CHUNK)
            pending = [backlog.popleft() for _ in range(n)]
            numbers = [backlog_seqs.popleft() for _ in range(n)]
            self._owner_ready.clear()
            taken = self._owner.link_messages(self, pending, numbers)
            backlog.extendleft(reversed(pending[taken:]))
            backlog_seqs.extendleft(reversed(numbers[taken:]))
            if not taken and not bus.pods_congested:  # the owner holds them (a move draining)
                await self._owner_ready.wait()
            await asyncio.sleep(0)  # let the pods' drains run between chunks

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
                self._dispatch(events)
            if self.proto.state is CLOSED and not self.proto.data_to_send():
                return
            if any(isinstance(e, LinkDead) for e in events):
                # nothing has come back for dead_after: do not wait on a write that may never end
                raise LinkClosedError(f"link to {self.link.remote_address} is dead")
            self._wake.set()

    def __repr__(self) -> str:
        return f"<PeerLink {self.uuid or '?'} {self.link.remote_address} {self.proto.state.name}>"
