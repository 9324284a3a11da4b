"""``PeerProtocol``: the sans-I/O protocol of one link, driven by the hub.

The caller feeds it whole frames with ``receive_frame(frame, now)`` and reads back events; it
writes, in order, every frame ``data_to_send()`` returns; it calls ``tick(now)`` at (or soon after)
``next_timer()`` for pings and deadlines. ``now`` is a monotonic clock in seconds. Nothing here
blocks, sleeps, logs or touches a socket.

Bad input from the remote never raises: it yields a terminal event and a queued CLOSE frame.
Misuse by the caller (sending before the handshake completes, accepting twice) raises
``UsageError``.

The protocol moves through the transition table (``gravpy.proto.handshake``); its state, outbox
and counters are those of its base class (``gravpy.proto.link_core``); what it says in its HELLO
and AUTH, and what it checks in the remote's, is its ``Greeting`` (``gravpy.proto.greeting``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import assert_never

from gravpy.errors import FrameError, UsageError
from gravpy.message import Message
from gravpy.proto import events as ev
from gravpy.proto import handshake as hs
from gravpy.proto.codec import (
    decode_frame,
    encode_frame,
    encode_interests,
    encode_msgs_split,
    encode_peers,
)
from gravpy.proto.config import ProtocolConfig
from gravpy.proto.frames import (
    MAX_DETAIL_LENGTH,
    MAX_REASON_LENGTH,
    Accept,
    Auth,
    Close,
    Frame,
    FrameKind,
    Hello,
    Interests,
    Moved,
    Msgs,
    Peers,
    Ping,
    Pong,
    Reject,
    Withdraw,
    WithdrawAck,
)
from gravpy.proto.greeting import Greeting
from gravpy.proto.handshake import CLOSED, OPEN, NodeInfo, Trigger
from gravpy.proto.link_core import LinkCore

__all__ = ["PeerProtocol"]


class PeerProtocol(LinkCore):
    """The protocol of one link, from this node's side. See the module docstring.

    ``initiator`` says this side dialled: it sends HELLO at once; an acceptor sends its HELLO
    only once the remote's passed its checks and ``screen`` (a refused HELLO gets a REJECT
    alone). The protocol is otherwise symmetric. What the HELLO carries and how the remote's is
    checked (``nonce``, ``mesh_key``, ``expected_uuid``, ``credentials``, ``screen``,
    ``origin_seq``, ``upgrade_token``) is documented on ``gravpy.proto.greeting.Greeting``.
    """

    def __init__(
        self,
        local: NodeInfo,
        *,
        initiator: bool,
        now: float,
        nonce: object,
        mesh_key: object = None,
        expected_uuid: object = None,
        config: ProtocolConfig | None = None,
        credentials: hs.Credentials | None = None,
        screen: Callable[[Hello], tuple[str, str] | None] | None = None,
        origin_seq: int = 0,
        upgrade_token: bytes = b"",
    ) -> None:
        greeting = Greeting(
            local,
            nonce=nonce,
            mesh_key=mesh_key,
            expected_uuid=expected_uuid,
            credentials=credentials,
            screen=screen,
            origin_seq=origin_seq,
            upgrade_token=upgrade_token,
        )
        super().__init__(config if config is not None else ProtocolConfig(), now)
        self._greeting = greeting
        self.local = local
        self.initiator = initiator
        self._send_limits = greeting.send_limits(self.config.limits)
        self._opened_at = now
        self._holding = False  # the caller holds reading (backpressure): no dead-link verdict
        self._ping_nonce = 0
        self._ping_sent_at: float | None = None
        self._local_withdrawn = False
        self._remote_withdrawn = False
        self._withdraw_acked = False
        if initiator:  # the acceptor says HELLO only to a remote whose HELLO passed its checks
            self._queue(greeting.hello_raw, now)

    # -- state ------------------------------------------------------------------------------

    @property
    def remote(self) -> Hello | None:
        """The remote's HELLO once received (even if the link was then rejected)."""
        return self._greeting.remote

    @property
    def upgrade_token(self) -> bytes:
        """The upgrade token our HELLO carried (empty if none)."""
        return self._greeting.hello.upgrade_token

    @property
    def verified_key(self) -> bytes:
        """The public key whose signature over our nonce the remote presented; empty if none."""
        return self._greeting.verified_key

    @property
    def remote_token(self) -> str:
        """The token the remote presented in AUTH, if its HELLO said it would; empty if none."""
        return self._greeting.remote_token

    @property
    def remote_withdrawn(self) -> bool:
        """True once the remote sent WITHDRAW: route no more messages to it."""
        return self._remote_withdrawn

    @property
    def local_withdrawn(self) -> bool:
        """True once ``withdraw()`` was called on this side."""
        return self._local_withdrawn

    # -- I/O side (``data_to_send`` and ``statistics``: ``LinkCore``) -------------------------

    def receive_frame(self, frame: bytes | bytearray | memoryview, now: float) -> list[ev.Event]:
        """Process one whole frame from the remote and return what happened. Never raises.

        Every frame counts as a sign of life. PING is answered and WITHDRAW acknowledged here.
        Frames that arrive once the link is CLOSED are ignored; the messages in them are counted
        (``statistics().messages_ignored``).
        """
        if self._state is CLOSED:
            self._count_ignored(frame)
            return []
        raw = bytes(frame)
        self._frames_in += 1
        self._bytes_in += len(raw)
        self._clock = max(self._clock, now)
        self._last_received = now
        if self._opener is not None:
            opened = self._opener.open(raw)
            if opened is None:
                detail = "a frame failed authentication (wrong session tag)"
                self._opener = None  # the CLOSE we send is tagged; nothing more is read
                return self._violation(hs.REASON_BAD_FRAME, detail, now)
            raw = opened
        try:
            decoded = decode_frame(raw, self.config.limits)
        except FrameError as exc:
            return self._violation(hs.REASON_BAD_FRAME, str(exc), now)
        if (self._state, decoded.kind) not in hs.TRANSITIONS:
            detail = f"{decoded.kind.name} frame in state {self._state.name}"
            return self._violation(hs.REASON_UNEXPECTED_FRAME, detail, now)
        return self._dispatch(decoded, raw, now)

    def _count_ignored(self, frame: bytes | bytearray | memoryview) -> None:
        """A frame after CLOSED: count the messages it carried (what cannot be read is not)."""
        raw = bytes(frame)
        if self._opener is not None:
            opened = self._opener.open(raw)
            if opened is None:
                return
            raw = opened
        try:
            decoded = decode_frame(raw, self.config.limits)
        except FrameError:
            return
        if isinstance(decoded, Msgs):
            self._messages_ignored += len(decoded.messages)

    def tick(self, now: float) -> list[ev.Event]:
        """Run the timers: the handshake deadline, then liveness (PING, dead link)."""
        if self._state is CLOSED:
            return []
        self._clock = max(self._clock, now)
        cfg = self.config
        if self._state is not OPEN:
            if now >= self._opened_at + cfg.handshake_timeout:
                detail = f"handshake not complete within {cfg.handshake_timeout:g} s"
                self._queue(encode_frame(Reject(hs.REASON_DEADLINE, detail)), now)
                self._advance(Trigger.DEADLINE)
                return [ev.Rejected(hs.REASON_DEADLINE, detail, by_remote=False)]
            return []
        if not self._holding and now >= self._last_received + cfg.dead_after:
            detail = f"nothing received for {now - self._last_received:.3g} s"
            self._queue(encode_frame(Close(hs.REASON_DEAD, detail)), now)
            self._advance(Trigger.DEAD)
            return [ev.LinkDead(hs.REASON_DEAD, detail)]
        if now >= self._last_sent + cfg.ping_interval:
            self._ping_nonce += 1
            self._ping_sent_at = now
            self._pings_sent += 1
            self._queue(encode_frame(Ping(self._ping_nonce)), now)
        return []

    def next_timer(self) -> float | None:
        """When ``tick`` next has work to do (same clock as ``now``); None once CLOSED."""
        cfg = self.config
        if self._state is CLOSED:
            return None
        if self._state is not OPEN:
            return self._opened_at + cfg.handshake_timeout
        if self._holding:
            return self._last_sent + cfg.ping_interval
        return min(self._last_sent + cfg.ping_interval, self._last_received + cfg.dead_after)

    def hold_reading(self) -> None:
        """The caller stops reading for a while (backpressure): the silence is not the remote's.

        No ``LinkDead`` is reported until ``resume_reading``; pings still go out, so the remote
        keeps hearing from us. Keep holds short (the caller bounds them well under dead_after).
        """
        self._holding = True

    def resume_reading(self, now: float) -> None:
        """The caller reads again: the remote's silence is counted from ``now``."""
        self._holding = False
        self._last_received = max(self._last_received, now)

    # -- caller's decisions -----------------------------------------------------------------

    def accept(self) -> list[ev.Event]:
        """Accept the link after ``HelloReceived``. Returns ``[HandshakeComplete]`` if that
        completes the handshake (the remote accepted first), else ``[]``."""
        self._advance(Trigger.ACCEPT, "accept()")
        self._queue(encode_frame(Accept()), self._clock)
        return self._completed()

    def reject(self, reason: str, detail: str = "") -> None:
        """Refuse the link (e.g. ``REASON_DUPLICATE``): queues REJECT and ends the protocol."""
        _check_reason(reason)
        self._advance(Trigger.REJECT, "reject()")
        self._queue(encode_frame(Reject(reason, detail[:MAX_DETAIL_LENGTH])), self._clock)

    def close(self, reason: str = hs.REASON_NORMAL, detail: str = "") -> None:
        """Queue CLOSE and end the protocol. Does nothing if the link is already CLOSED."""
        _check_reason(reason)
        if self._state is CLOSED:
            return
        self._advance(Trigger.CLOSE, "close()")
        self._queue(encode_frame(Close(reason, detail[:MAX_DETAIL_LENGTH])), self._clock)

    # -- sending on an open link ------------------------------------------------------------

    def send_messages(self, messages: Sequence[Message], seqs: Sequence[int] | None = None) -> int:
        """Queue ``messages`` in order (usually one MSGS frame) and return how many were queued.

        After the remote withdrew, nothing is queued: the messages are counted as dropped and 0
        is returned. Raises ``UsageError`` before OPEN or after CLOSED, and (queuing nothing) if
        a message is over the limits.
        """
        self._require_open("send_messages()")
        if self._remote_withdrawn:
            self._messages_dropped += len(messages)
            return 0
        if not messages:
            return 0
        for frame in encode_msgs_split(messages, self._send_limits, seqs):
            self._queue(frame, self._clock)
        self._messages_out += len(messages)
        return len(messages)

    def send_interests(
        self, patterns: Iterable[str], groups: Iterable[tuple[str, str, int]] = ()
    ) -> None:
        """Queue INTERESTS: the type patterns this node's ungrouped pods want, and the
        ``(group, pattern, members)`` of its groups (both full lists)."""
        self._require_open("send_interests()")
        self._queue(encode_interests(patterns, self._send_limits, groups), self._clock)

    def send_peers(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Queue PEERS: ``(node_uuid, endpoint)`` of nodes the remote may dial."""
        self._require_open("send_peers()")
        self._queue(encode_peers(pairs, self._send_limits), self._clock)

    def withdraw(self) -> None:
        """Queue WITHDRAW (once): the remote stops sending messages and answers WITHDRAW_ACK.

        This side may still send messages afterwards (to drain), then ``close(REASON_SHUTDOWN)``.
        """
        self._require_open("withdraw()")
        if not self._local_withdrawn:
            self._local_withdrawn = True
            self._queue(encode_frame(Withdraw()), self._clock)

    def send_moved(self) -> None:
        """Queue MOVED: this side sends nothing more on this link but its CLOSE. Queue it after
        the last MSGS (send it only to a node whose HELLO issued an upgrade token)."""
        self._require_open("send_moved()")
        self._queue(encode_frame(Moved()), self._clock)

    # -- received frames (only those the table allows in the current state) -----------------

    def _dispatch(self, frame: Frame, raw: bytes, now: float) -> list[ev.Event]:
        match frame:
            case Hello():
                return self._on_hello(frame, raw, now)
            case Auth():
                return self._on_auth(frame, now)
            case Accept():
                self._advance(FrameKind.ACCEPT)
                return self._completed()
            case Reject():
                self._advance(FrameKind.REJECT)
                return [ev.Rejected(frame.reason, frame.detail, by_remote=True)]
            case Close():
                self._advance(FrameKind.CLOSE)
                return [ev.Closed(frame.reason, frame.detail, by_remote=True)]
            case Msgs():
                self._messages_in += len(frame.messages)
                return [ev.MessagesReceived(frame.messages, frame.seqs)]
            case Interests():
                return [ev.InterestsReceived(frame.patterns, frame.groups)]
            case Peers():
                remote = self._greeting.remote
                if remote is not None and remote.role != hs.ROLE_PEER:
                    detail = "only peers may gossip: a leaf sent PEERS"
                    return self._violation(hs.REASON_UNEXPECTED_FRAME, detail, now)
                return [ev.PeersReceived(frame.pairs)]
            case Withdraw() | WithdrawAck():
                return self._on_withdraw(frame, now)
            case Ping() | Pong():
                return self._on_ping(frame, now)
            case Moved():
                return [ev.MovedReceived()]
            case _:  # pragma: no cover
                assert_never(frame)

    def _on_hello(self, frame: Hello, raw: bytes, now: float) -> list[ev.Event]:
        greeting = self._greeting
        self._advance(FrameKind.HELLO)
        problem = greeting.hello_received(frame, raw)
        if problem is not None:
            return self._reject_here(*problem, now)
        if not self.initiator:
            self._queue(greeting.hello_raw, now)
        if not greeting.authenticating():
            self._advance(Trigger.NO_KEY)
            return [ev.HelloReceived(frame)]
        self._queue(greeting.auth_frame(), now)
        self._sealer = greeting.sealer()  # what we send from now on is tagged (with a mesh key)
        return []

    def _on_auth(self, frame: Auth, now: float) -> list[ev.Event]:
        greeting = self._greeting
        problem = greeting.auth_received(frame)
        if problem is not None:
            return self._reject_here(*problem, now)
        self._advance(FrameKind.AUTH)
        self._opener = greeting.opener()  # what arrives from now on must be tagged (mesh key)
        remote = greeting.remote
        assert remote is not None  # AUTH is only allowed after HELLO
        return [ev.HelloReceived(remote)]

    def _on_withdraw(self, frame: Withdraw | WithdrawAck, now: float) -> list[ev.Event]:
        if isinstance(frame, Withdraw):
            if self._remote_withdrawn:
                return self._violation(hs.REASON_UNEXPECTED_FRAME, "WITHDRAW sent twice", now)
            self._remote_withdrawn = True
            self._queue(encode_frame(WithdrawAck()), now)
            return [ev.WithdrawReceived()]
        if not self._local_withdrawn or self._withdraw_acked:
            return self._violation(hs.REASON_UNEXPECTED_FRAME, "WITHDRAW_ACK without WITHDRAW", now)
        self._withdraw_acked = True
        return [ev.WithdrawAcked()]

    def _on_ping(self, frame: Ping | Pong, now: float) -> list[ev.Event]:
        if isinstance(frame, Ping):
            self._queue(encode_frame(Pong(frame.nonce)), now)
        elif frame.nonce == self._ping_nonce and self._ping_sent_at is not None:
            self._rtt = max(0.0, now - self._ping_sent_at)
            self._ping_sent_at = None
        return []

    def _completed(self) -> list[ev.Event]:
        if self._state is not OPEN:
            return []
        remote = self._greeting.remote
        assert remote is not None
        return [ev.HandshakeComplete(remote)]


def _check_reason(reason: str) -> None:
    if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON_LENGTH:
        raise UsageError(f"a reason code is a string of 1..{MAX_REASON_LENGTH} characters")
