"""``LinkCore``: what every part of ``PeerProtocol`` keeps: its state, its outbox, its counters.

Theory of operation
-------------------
A link's state changes only through ``_advance``, which looks the next state up in the one
transition table (``gravpy.proto.handshake.TRANSITIONS``): a received frame with no entry never
gets this far (``PeerProtocol.receive_frame`` checks it first), so a missing entry here is the
caller's misuse, a ``UsageError``. Every frame this side sends goes through ``_queue``: tagged
once our AUTH has gone out on a keyed link (``_sealer``, ``gravpy.proto.session``), counted,
stamped with the clock, and kept in the outbox until the caller takes it (``data_to_send``). A
link ends on its own in one of two ways: a REJECT during the handshake (``_reject_here``) or a
CLOSE for the remote's violation (``_violation``); either way the frame is queued before the
state moves on, and the event that says so is returned.

``statistics`` is a frozen snapshot of the counters; ``PeerProtocol`` counts what it receives,
what it pings and what it could not send in the same fields. It is a base class of
``PeerProtocol``, not a part the protocol holds, so that the path of every frame reads and writes
these fields as its own, without an attribute hop (both modules are compiled with mypyc).
"""

from __future__ import annotations

from gravpy.errors import UsageError
from gravpy.proto import events as ev
from gravpy.proto import handshake as hs
from gravpy.proto.codec import encode_frame
from gravpy.proto.config import ProtocolConfig
from gravpy.proto.frames import MAX_DETAIL_LENGTH, Close, Reject
from gravpy.proto.handshake import OPEN, LinkState, Trigger
from gravpy.proto.session import FrameSealer

__all__ = ["LinkCore"]


class LinkCore:
    """The state, outbox, clock and counters of one link; see the module docstring."""

    def __init__(self, config: ProtocolConfig, now: float) -> None:
        self.config = config
        self._state = LinkState.AWAIT_HELLO
        self._sealer: FrameSealer | None = None  # tags what we send after our AUTH
        self._opener: FrameSealer | None = None  # checks what arrives after the remote's AUTH
        self._outbox: list[bytes] = []
        self._clock = now  # the latest `now` seen; stamps frames queued by calls without one
        self._last_sent = now
        self._last_received = now
        self._rtt: float | None = None
        self._frames_in = self._frames_out = self._bytes_in = self._bytes_out = 0
        self._messages_in = self._messages_out = self._messages_dropped = self._pings_sent = 0
        self._messages_ignored = 0

    @property
    def state(self) -> LinkState:
        """Where the link is; ``LinkState.CLOSED`` once it has ended for any reason."""
        return self._state

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
