"""Events a ``PeerProtocol`` returns to its caller, and its statistics. Plain frozen values.

Four events are *terminal*: after ``Rejected``, ``ProtocolViolation``, ``LinkDead`` or ``Closed``
the protocol is in ``LinkState.CLOSED``. Each carries a ``reason`` code (see
``gravpy.proto.handshake``) and a free-text ``detail`` for logs. The caller then writes whatever
``data_to_send()`` still returns (the REJECT or CLOSE frame) and closes the transport.
"""

from __future__ import annotations

from dataclasses import dataclass

from gravpy.errors import HandshakeRejectedError
from gravpy.message import Message
from gravpy.proto.frames import Hello
from gravpy.proto.handshake import LinkState

__all__ = [
    "Closed",
    "Event",
    "HandshakeComplete",
    "HelloReceived",
    "InterestsReceived",
    "LinkDead",
    "LinkStatistics",
    "MessagesReceived",
    "MovedReceived",
    "PeersReceived",
    "ProtocolViolation",
    "Rejected",
    "WithdrawAcked",
    "WithdrawReceived",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every protocol event."""


@dataclass(frozen=True, slots=True)
class HelloReceived(Event):
    """The remote passed every check (and proved the mesh key): call accept() or reject() now."""

    remote: Hello


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """Both sides accepted: the link is OPEN. Send INTERESTS (and PEERS) next."""

    remote: Hello


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """Terminal: the handshake was refused, by the remote (``by_remote``) or by this side."""

    reason: str
    detail: str
    by_remote: bool

    def as_error(self, peer: str = "") -> HandshakeRejectedError:
        """This rejection as the exception a caller of ``connect`` should see."""
        return HandshakeRejectedError(self.reason, peer, self.detail)


@dataclass(frozen=True, slots=True)
class MessagesReceived(Event):
    """A batch of messages, in the order the remote sent them, with their origin numbers
    (``seqs``: one per message, as in ``Msgs``; None if the frame carried none)."""

    messages: list[Message]
    seqs: list[int] | None = None


@dataclass(frozen=True, slots=True)
class InterestsReceived(Event):
    """The remote's full interests; they replace any earlier ones.

    ``groups`` holds ``(group, pattern, members)`` entries (see ``frames.Interests``).
    """

    patterns: tuple[str, ...]
    groups: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PeersReceived(Event):
    """Gossip: ``(node_uuid, endpoint)`` pairs of nodes the remote knows."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class WithdrawReceived(Event):
    """The remote is shutting down; WITHDRAW_ACK was queued. Route nothing more to it."""


@dataclass(frozen=True, slots=True)
class WithdrawAcked(Event):
    """The remote acknowledged our WITHDRAW: it will send no more messages on this link."""


@dataclass(frozen=True, slots=True)
class MovedReceived(Event):
    """The remote moved this link's traffic to another link (MOVED): every message it sent on
    this one has been reported before this event (docs/protocol.md section 7.3)."""


@dataclass(frozen=True, slots=True)
class LinkDead(Event):
    """Terminal: nothing was received for ``dead_after`` seconds. A CLOSE frame was queued."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """Terminal: the remote sent a bad or unexpected frame. A CLOSE frame was queued."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """Terminal: the remote sent CLOSE (``by_remote`` is then True)."""

    reason: str
    detail: str
    by_remote: bool


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """A snapshot of one link's counters (``PeerProtocol.statistics()``)."""

    state: LinkState
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    messages_dropped: int  # passed to send_messages after the remote withdrew
    pings_sent: int
    rtt: float | None  # round trip of the last answered PING, seconds
    messages_ignored: int = 0  # in MSGS frames that arrived after this side closed the link
