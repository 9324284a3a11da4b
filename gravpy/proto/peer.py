"""``PeerProtocol``: the sans-I/O protocol of one link, driven by the hub.

The caller feeds it whole frames with ``receive_frame(frame, now)`` and reads back events; it
writes, in order, every frame ``data_to_send()`` returns; it calls ``tick(now)`` at (or soon after)
``next_timer()`` for pings and deadlines. ``now`` is a monotonic clock in seconds. Nothing here
blocks, sleeps, logs or touches a socket.

Bad input from the remote never raises: it yields a terminal event and a queued CLOSE frame.
Misuse by the caller (sending before the handshake completes, accepting twice) raises
``UsageError``.
"""

from __future__ import annotations

import dataclasses
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
from gravpy.proto.config import MESSAGE_OVERHEAD, Limits, ProtocolConfig
from gravpy.proto.frames import (
    MAX_DETAIL_LENGTH,
    MAX_NONCE_LENGTH,
    MAX_REASON_LENGTH,
    MAX_UUID_LENGTH,
    MIN_NONCE_LENGTH,
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
from gravpy.proto.handshake import CLOSED, OPEN, LinkState, NodeInfo, Trigger
from gravpy.proto.session import TAG_LENGTH, FrameSealer, direction_key

__all__ = ["PeerProtocol"]


class PeerProtocol:
    """The protocol of one link, from this node's side. See the module docstring.

    ``nonce`` is 16..64 random bytes from the caller (``os.urandom(16)``); ``mesh_key``, when
    set, is at least 16 bytes and must be the same on every node; ``expected_uuid`` is the node
    uuid discovery reported for the endpoint dialled. ``origin_seq`` is the last origin number the
    node gave (its HELLO carries it: a receiver's resume baseline, ``gravpy.mesh.resume``).
    ``upgrade_token`` is what our HELLO carries for moving a live link to a faster transport
    (``gravpy.mesh.upgrade``): an acceptor's issued token, or the token an upgrading initiator
    presents; empty for none. ``initiator`` says this side dialled: it
    sends HELLO at once; an acceptor sends its HELLO only once the remote's passed its checks and
    ``screen`` (a refused HELLO gets a REJECT alone). The protocol is otherwise symmetric.
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
        if type(nonce) is not bytes or not MIN_NONCE_LENGTH <= len(nonce) <= MAX_NONCE_LENGTH:
            raise UsageError(f"nonce must be {MIN_NONCE_LENGTH}..{MAX_NONCE_LENGTH} random bytes")
        key = hs.check_mesh_key(mesh_key)
        if expected_uuid is not None and not (
            isinstance(expected_uuid, str) and 0 < len(expected_uuid) <= MAX_UUID_LENGTH
        ):
            raise UsageError(f"expected_uuid must be a string of 1..{MAX_UUID_LENGTH} characters")
        self.local = local
        self.initiator = initiator
        self.config = config if config is not None else ProtocolConfig()
        self._key = key
        self._credentials = credentials if credentials is not None else hs.Credentials()
        self.remote_token = ""  # the token the remote presented in AUTH, if it said it would
        self._expected_uuid = expected_uuid
        # the owner's look at a HELLO before anything is proved: (reason, detail) refuses it at
        # once, before our AUTH is signed and sent and before the remote's signature is checked
        self._screen = screen
        self._state = LinkState.AWAIT_HELLO
        self._remote: Hello | None = None
        self._remote_hello_raw = b""
        self._verified_key = b""
        self._send_limits = _room_for_tag(self.config.limits) if key else self.config.limits
        self._sealer: FrameSealer | None = None  # tags what we send after our AUTH
        self._opener: FrameSealer | None = None  # checks what arrives after the remote's AUTH
        self._outbox: list[bytes] = []
        self._opened_at = now
        self._clock = now  # the latest `now` seen; stamps frames queued by calls without one
        self._last_sent = now
        self._last_received = now
        self._holding = False  # the caller holds reading (backpressure): no dead-link verdict
        self._ping_nonce = 0
        self._ping_sent_at: float | None = None
        self._rtt: float | None = None
        self._local_withdrawn = False
        self._remote_withdrawn = False
        self._withdraw_acked = False
        self._frames_in = self._frames_out = self._bytes_in = self._bytes_out = 0
        self._messages_in = self._messages_out = self._messages_dropped = self._pings_sent = 0
        self._messages_ignored = 0
        self._hello = Hello(
            local.node_uuid,
            local.role,
            local.belongs_to,
            local.endpoint,
            nonce,
            key is not None,
            public_key=self._credentials.public_key,
            has_token=bool(self._credentials.token),
            name=local.name,
            origin_seq=origin_seq,
            upgrade_token=upgrade_token,
        )
        self._hello_raw = encode_frame(self._hello)
        if initiator:  # the acceptor says HELLO only to a remote whose HELLO passed its checks
            self._queue(self._hello_raw, now)

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        """Where the link is; ``LinkState.CLOSED`` once it has ended for any reason."""
        return self._state

    @property
    def remote(self) -> Hello | None:
        """The remote's HELLO once received (even if the link was then rejected)."""
        return self._remote

    @property
    def upgrade_token(self) -> bytes:
        """The upgrade token our HELLO carried (empty if none)."""
        return self._hello.upgrade_token

    @property
    def verified_key(self) -> bytes:
        """The public key whose signature over our nonce the remote presented; empty if none."""
        return self._verified_key

    @property
    def remote_withdrawn(self) -> bool:
        """True once the remote sent WITHDRAW: route no more messages to it."""
        return self._remote_withdrawn

    @property
    def local_withdrawn(self) -> bool:
        """True once ``withdraw()`` was called on this side."""
        return self._local_withdrawn

    def statistics(self) -> ev.LinkStatistics:
        """A frozen snapshot of this link's counters."""
        return ev.LinkStatistics(
            self._state,
            self._frames_in,
            self._frames_out,
            self._bytes_in,
            self._bytes_out,
            self._messages_in,
            self._messages_out,
            self._messages_dropped,
            self._pings_sent,
            self._rtt,
            self._messages_ignored,
        )

    # -- I/O side ---------------------------------------------------------------------------

    @property
    def has_data_to_send(self) -> bool:
        """True if frames are queued (``data_to_send`` would return some)."""
        return bool(self._outbox)

    def data_to_send(self) -> list[bytes]:
        """The frames queued since the last call, oldest first. Write each as one frame.

        Call it after every other method; after the link is CLOSED, call it once more and
        write what it returns (REJECT or CLOSE) before closing the transport.
        """
        out, self._outbox = self._outbox, []
        return out

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
                if self._remote is not None and self._remote.role != hs.ROLE_PEER:
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
        self._remote = frame
        self._remote_hello_raw = raw
        self._advance(FrameKind.HELLO)
        problem = hs.check_hello(self._hello, frame, self._expected_uuid)
        if problem is None and self._screen is not None:
            problem = self._screen(frame)
        if problem is not None:
            return self._reject_here(*problem, now)
        if not self.initiator:
            self._queue(self._hello_raw, now)
        if not (hs.authenticating(self._hello) or hs.authenticating(frame)):
            self._advance(Trigger.NO_KEY)
            return [ev.HelloReceived(frame)]
        creds = self._credentials
        proof = hs.auth_proof(self._key, self._hello_raw, raw) if self._key else b""
        signed = creds.sign(hs.signed_transcript(self._hello_raw, raw)) if creds.sign else b""
        self._queue(encode_frame(Auth(proof, signed, creds.token)), now)
        if self._key is not None:
            self._sealer = FrameSealer(direction_key(self._key, self._hello_raw, raw))
        return []

    def _on_auth(self, frame: Auth, now: float) -> list[ev.Event]:
        remote = self._remote
        assert remote is not None  # AUTH is only allowed after HELLO
        theirs, ours = self._remote_hello_raw, self._hello_raw
        if self._key is not None and not hs.verify_proof(self._key, frame.proof, theirs, ours):
            return self._reject_here(hs.REASON_PROOF, "the remote's mesh key proof is wrong", now)
        if remote.public_key:
            if not hs.verify_signature(remote.public_key, frame.signature, theirs, ours):
                detail = "the signature does not verify with the public key presented"
                return self._reject_here(hs.REASON_BAD_SIGNATURE, detail, now)
            self._verified_key = remote.public_key
        self.remote_token = frame.token if remote.has_token else ""
        self._advance(FrameKind.AUTH)
        if self._key is not None:
            self._opener = FrameSealer(direction_key(self._key, theirs, ours))
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
        assert self._remote is not None
        return [ev.HandshakeComplete(self._remote)]

    # -- internals --------------------------------------------------------------------------

    def _advance(self, event: hs.Input, call: str = "") -> None:
        nxt = hs.TRANSITIONS.get((self._state, event))
        if nxt is None:
            # Frames are checked against the table before their handler runs, so only a local
            # call can get here.
            raise UsageError(f"{call or event} is not allowed in state {self._state.name}")
        self._state = nxt

    def _require_open(self, call: str) -> None:
        if self._state is not OPEN:
            raise UsageError(f"{call} is only allowed on an OPEN link, not {self._state.name}")

    def _queue(self, frame: bytes, now: float) -> None:
        if self._sealer is not None:
            frame = self._sealer.seal(frame)
        self._outbox.append(frame)
        self._frames_out += 1
        self._bytes_out += len(frame)
        self._last_sent = max(self._last_sent, now)

    def _reject_here(self, reason: str, detail: str, now: float) -> list[ev.Event]:
        self._queue(encode_frame(Reject(reason, detail[:MAX_DETAIL_LENGTH])), now)
        self._advance(Trigger.REJECT)
        return [ev.Rejected(reason, detail, by_remote=False)]

    def _violation(self, reason: str, detail: str, now: float) -> list[ev.Event]:
        self._queue(encode_frame(Close(reason, detail[:MAX_DETAIL_LENGTH])), now)
        self._advance(Trigger.VIOLATION)
        return [ev.ProtocolViolation(reason, detail)]


def _room_for_tag(limits: Limits) -> Limits:
    """``limits`` for what this side sends on a keyed link: every frame leaves room for its tag."""
    frame = limits.max_frame_bytes - TAG_LENGTH
    message = min(limits.max_message_bytes, frame - MESSAGE_OVERHEAD)
    return dataclasses.replace(limits, max_frame_bytes=frame, max_message_bytes=message)


def _check_reason(reason: str) -> None:
    if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON_LENGTH:
        raise UsageError(f"a reason code is a string of 1..{MAX_REASON_LENGTH} characters")
