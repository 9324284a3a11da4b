"""PeerLink: one link to another node, driven by asyncio around a sans-I/O ``PeerProtocol``.

A PeerLink owns three loops for the life of the link, in one ``TaskGroup``: the reader feeds frames
to the protocol and hands what arrives to its owner (the hub, through the ``LinkOwner`` port): the
messages to ``link_messages`` and every other event to ``link_events``; the writer batches queued
messages into MSGS frames and writes every frame the protocol queued, in order; the ticker runs the
protocol's timers (pings, the handshake deadline, the dead-link check). When any of them ends, the
link is closed and ``run`` returns.

A link whose transport can write without waiting (``write_now``, the TCP transport's) sends the
first message of a loop turn straight out when the writer is idle and nothing is queued: a lone
request or reply leaves without a hop through the writer task, and the rest of a burst queues for
the writer as before. If the transport's buffer is full, the frames wait for the writer instead.

Outgoing messages wait in a bounded queue (``queue_limit``). Past half of it the link reports itself
congested to the bus (``Pod.publish`` waits); when it is full, new messages are dropped and counted
in ``dropped``.

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
from gravpy.errors import LinkClosedError, UsageError
from gravpy.filter import Pattern
from gravpy.mesh.link_stats import LinkDrops, PeerInfo, link_info
from gravpy.mesh.permissions import Identity
from gravpy.message import Message
from gravpy.plugins import Link
from gravpy.ports import Backpressure, DialWaiter, LinkOwner
from gravpy.proto import (
    REASON_NORMAL,
    Event,
    Hello,
    LinkDead,
    LinkState,
    MessagesReceived,
    NodeInfo,
    PeerProtocol,
    ProtocolConfig,
)
from gravpy.proto.handshake import ROLE_LEAF, ROLE_PEER, Credentials

__all__ = ["Backpressure", "LinkOwner", "PeerInfo", "PeerLink"]

_log = logs.get_logger("gravpy.mesh.peer_link")
_NO_GROUPS: Mapping[str, int] = {}


# Messages handed on per loop turn. A frame of hundreds is delivered in chunks with a loop turn
# between them, so replies and the writer's next frame go out while the rest is still being
# delivered: the two ends of a link work at once instead of in turns (bench_mesh, 100 in flight).
_CHUNK = 32


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
        )
        self.identity: Identity | None = None  # what the auth file grants (None: no auth file)
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
        self._queue: deque[Message] = deque()
        self._queue_seqs: deque[int] = deque()  # the origin number of each queued message (0: none)
        self._queue_limit = queue_limit
        self._queue_bytes = queue_bytes  # bound on the data and headers of the queued messages
        self._pending = 0  # bytes of data queued now
        # publish() waits past a few frames' worth, so the writer starts early and often
        self._high_water = min(queue_limit // 2, 4 * config.limits.max_batch)
        self._congested = False
        self._wake = asyncio.Event()
        self._wake.set()  # the protocol queued our HELLO
        # a link that can write without waiting (the TCP transport's ``write_now``) takes the first
        # message of a loop turn at once when idle: a request or reply leaves without a writer hop
        self._write_now: Callable[[bytes], bool] | None = getattr(link, "write_now", None)
        self._writing = False  # the writer is between taking frames and writing the last one
        self._direct_turn = False  # a message went straight out this loop turn
        self._unsent: list[bytes] = []  # frames a direct write could not write: the writer's first
        self._timer_changed = asyncio.Event()
        self._closing = False
        self._close_code = REASON_NORMAL
        self.ended = asyncio.Event()  # set once the link is gone (``finish``)
        self.closed = asyncio.Event()  # set once the transport is closed too (after ``ended``)
        self.acked = asyncio.Event()  # the remote acknowledged our WITHDRAW
        self.interests_known = asyncio.Event()  # the remote's first INTERESTS arrived
        self.was_open = False
        self.opened_at: float | None = None  # wall clock, when the handshake completed
        self.reject_reason = ""  # why the handshake was refused (by either side)
        self._handshake_task: asyncio.Task[object] | None = None  # waiting for a handshake frame
        self._interrupted = False  # ``end`` cancelled that wait

    # -- what the hub reads ----------------------------------------------------------------------

    @property
    def remote(self) -> Hello | None:
        return self.proto.remote

    @property
    def is_open(self) -> bool:
        return self.proto.state is LinkState.OPEN and not self._closing

    def _learn_remote(self, remote: Hello) -> None:
        """The remote's HELLO arrived: who it is, kept as plain fields for the hot path."""
        self.uuid = remote.node_uuid
        self.is_leaf = remote.role == ROLE_LEAF
        self.is_peer = remote.role == ROLE_PEER

    def authorized(self, identity: Identity | None) -> None:
        """What the auth file in force grants this link's remote (None: no auth file)."""
        self.identity = identity

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
        return self._congested

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
        return len(self._queue)

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
        self.rejected(reason)

    def rejected(self, reason: str) -> None:
        """The handshake was refused (here or by the remote): remember why and close."""
        self.reject_reason = reason
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

    def send_now(self, msg: Message) -> None:
        """Send ``msg`` ahead of anything queued (a node's notice to its app)."""
        if self.is_open:
            self.proto.send_messages([msg])
            self.flush()

    def enqueue(self, msg: Message, seq: int = 0) -> bool:
        """Queue a message for the remote, with its origin number ``seq`` for a peer (0: none;
        negative: resent). False (and counted) if the queue is full."""
        queue = self._queue
        if not queue and self._write_now is not None and self._send_directly(msg, seq):
            return True
        size = len(msg.data)
        if (
            len(queue) >= self._queue_limit
            or self._closing
            or self._pending + size > self._queue_bytes
        ):
            self.drops.refuse(closing=self._closing, full=len(queue) >= self._queue_limit)
            return False
        queue.append(msg)
        self._queue_seqs.append(seq)
        self._pending += size
        n = len(queue)
        if n == 1:  # the writer empties the queue before it waits: wake it only then
            self._wake.set()
        elif not self._congested and n >= self._high_water:
            self._congested = True
            self._bus.mark_congested(self)
        return True

    def _send_directly(self, msg: Message, seq: int) -> bool:
        """Write ``msg`` now if the writer is idle and nothing went straight out this loop turn;
        the rest of a burst queues for the writer, which batches it into frames."""
        write_now, proto = self._write_now, self.proto
        if (
            write_now is None
            or self._direct_turn
            or self._writing
            or self._unsent
            or self._closing
            or proto.state is not LinkState.OPEN
        ):
            return False
        self._direct_turn = True
        asyncio.get_running_loop().call_soon(self._next_turn)
        self._send_batch([msg], [seq] if seq else None)
        frames = proto.data_to_send()
        for i, frame in enumerate(frames):
            if not write_now(frame):  # the transport's buffer is full: the writer waits for room
                self._unsent = frames[i:]
                self._wake.set()
                break
        return True

    def _next_turn(self) -> None:
        self._direct_turn = False

    def flush(self) -> None:
        """Wake the writer: the protocol has frames to send."""
        self._wake.set()
        self._timer_changed.set()

    def end(self, reason: str) -> None:
        """Close the link soon: the writer sends what is queued, then CLOSE, then stops.

        ``reason`` is a protocol reason code (``gravpy.proto.REASON_*``).
        """
        if not self._closing:
            self._closing = True
            self._close_code = reason
            if not self.end_reason:
                self.end_reason = reason
            self._wake.set()
            if self._handshake_task is not None:  # waiting for a handshake frame: stop waiting
                self._interrupted = True
                self._handshake_task.cancel()

    def drop_queue(self) -> int:
        n = len(self._queue)
        self._queue.clear()
        self._queue_seqs.clear()
        self._pending = 0
        self._relieve()
        return n

    # -- the loops -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the link until it ends, then close it. Never raises on what the remote does."""
        try:
            if await self._handshake():
                async with asyncio.TaskGroup() as tg:
                    reader = tg.create_task(self._read(), name="link-read")
                    ticker = tg.create_task(self._tick(), name="link-tick")
                    await self._write()
                    reader.cancel()
                    ticker.cancel()
        except BaseExceptionGroup as group:  # not ``except*``: mypyc cannot compile that yet
            closed, rest = group.split(LinkClosedError)
            if closed is not None and not self.end_reason:
                self.end_reason = str(closed.exceptions[0])
            if rest is not None:
                raise rest from None
        finally:
            self._closing = True
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
            await self._write_all()  # our HELLO
            while proto.state not in (LinkState.OPEN, LinkState.CLOSED) and not self._closing:
                frame = await self._handshake_frame(proto.next_timer())
                now = time.monotonic()
                events = proto.tick(now) if frame is None else proto.receive_frame(frame, now)
                if not self.uuid and proto.remote is not None:
                    self._learn_remote(proto.remote)
                if events:
                    self._dispatch(events)
                await self._write_all()
            if proto.state is LinkState.OPEN and not self._closing:
                return True
            if proto.state is not LinkState.CLOSED:
                proto.close(self._close_code)
            await self._write_all()
        except LinkClosedError as exc:
            await self._read_refusal()  # the remote may have refused us before our write failed
            if not self.end_reason:
                self.end_reason = str(exc)
        return False

    async def _read_refusal(self) -> None:
        """Read what the remote sent before it closed (its REJECT, say) until the link ends."""
        proto = self.proto
        try:
            while proto.state is not LinkState.CLOSED and not self._closing:
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
        try:
            if self._backlog:  # left by the handshake's last frame
                await self._take_backlog()
            while True:
                frame = await self.link.recv()
                proto = self.proto
                events = proto.receive_frame(frame, time.monotonic())
                if not self.uuid and proto.remote is not None:
                    self._learn_remote(proto.remote)
                if events:
                    self._dispatch(events)
                if proto.has_data_to_send:  # a PONG, a handshake step, a WITHDRAW_ACK
                    self._wake.set()
                if self._backlog:
                    await self._take_backlog()
        except LinkClosedError as exc:
            if not self.end_reason:
                self.end_reason = str(exc)
            self._closing = True
            self._wake.set()

    async def _take_backlog(self) -> None:
        self.proto.hold_reading()
        try:
            await self._hold()
        finally:
            self.proto.resume_reading(time.monotonic())

    async def _hold(self) -> None:
        """Hand on the backlog a chunk per loop turn; read no more until it is empty, and while
        local pods are congested, so the sender's link backs up.

        Waits in steps of a quarter of ``dead_after``. Congested pods are set aside when a step
        passes with no progress (a stuck pod), or when they still hold the link after two steps
        (a slow one): they then drop by their overflow policy (counted) instead of holding this
        link, their siblings get everything that follows, and the link reads again well before
        its unread pings could make it look dead.
        """
        bus = self._bus
        step = self.proto.config.dead_after / 4
        waited = 0
        while self._backlog:
            if bus.pods_congested:
                before = bus.pods_queued()
                try:
                    async with asyncio.timeout(step):
                        await bus.wait_pod_room()
                except TimeoutError:
                    waited += 1
                    if waited >= 2 or bus.pods_queued() >= before:
                        bus.set_congested_pods_aside()
            backlog, backlog_seqs = self._backlog, self._backlog_seqs
            n = min(len(backlog), _CHUNK)
            pending = [backlog.popleft() for _ in range(n)]
            numbers = [backlog_seqs.popleft() for _ in range(n)]
            taken = self._owner.link_messages(self, pending, numbers)
            backlog.extendleft(reversed(pending[taken:]))
            backlog_seqs.extendleft(reversed(numbers[taken:]))
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
            if self.proto.state is LinkState.CLOSED and not self.proto.data_to_send():
                return
            if any(isinstance(e, LinkDead) for e in events):
                # nothing has come back for dead_after: do not wait on a write that may never end
                raise LinkClosedError(f"link to {self.link.remote_address} is dead")
            self._wake.set()

    async def _write(self) -> None:
        proto = self.proto
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_all()
            if self._closing:
                if proto.state is not LinkState.CLOSED:
                    proto.close(self._close_code)
                await self._write_all()
                return
            if proto.state is LinkState.CLOSED:
                return

    async def _write_all(self) -> None:
        """Batch the queued messages into frames and write every frame the protocol has."""
        self._writing = True
        try:
            await self._write_frames()
        finally:
            self._writing = False

    async def _write_frames(self) -> None:
        proto, queue, link = self.proto, self._queue, self.link
        numbers = self._queue_seqs
        max_batch = proto.config.limits.max_batch
        if self._unsent:
            unsent, self._unsent = self._unsent, []
            for frame in unsent:
                await link.send(frame)
        while True:
            if queue and proto.state is LinkState.OPEN:
                n = min(len(queue), max_batch)
                batch = [queue.popleft() for _ in range(n)]
                seqs = [numbers.popleft() for _ in range(n)]
                self._pending -= sum(len(m.data) for m in batch)
                self._send_batch(batch, seqs if any(seqs) else None)
                if self._congested and len(queue) <= self._high_water // 2:
                    self._relieve()
            frames = proto.data_to_send()
            if not frames:
                return
            for frame in frames:
                await link.send(frame)

    def _send_batch(self, batch: list[Message], seqs: list[int] | None) -> None:
        try:
            self.proto.send_messages(batch, seqs)
        except UsageError:  # a message over the limits: send the others, count it dropped
            for i, msg in enumerate(batch):
                try:
                    self.proto.send_messages([msg], None if seqs is None else seqs[i : i + 1])
                except UsageError as exc:
                    self.drops.too_large += 1
                    _log.warning(
                        "message_too_large", msg_uuid=msg.uuid, type=msg.type, error=str(exc)
                    )

    def _relieve(self) -> None:
        if self._congested:
            self._congested = False
            self._bus.relieve(self)

    def __repr__(self) -> str:
        return f"<PeerLink {self.uuid or '?'} {self.link.remote_address} {self.proto.state.name}>"
