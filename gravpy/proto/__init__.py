"""The wire protocol between two nodes, sans I/O: bytes and a clock in, events and bytes out.

- ``config``: ``Limits`` and ``ProtocolConfig``, frozen and validated.
- ``frames``: the frame kinds and their frozen values.
- ``codec``: frames to bytes and back; the only place msgpack is called.
- ``handshake``: link states with every transition in one table, reason codes, hello checks,
  the mesh-key proof.
- ``events``: what the protocol reports to its caller (and ``LinkStatistics``).
- ``peer``: ``PeerProtocol``, the object the hub drives for one link, built on ``link_core``'s
  ``LinkCore`` (state, outbox, counters) and holding a ``greeting.Greeting`` (its HELLO and AUTH,
  and the checks of the remote's).

Nothing here imports asyncio or sockets, reads a clock or logs. docs/protocol.md is the reference
a third party can implement from.
"""

from gravpy.proto.codec import (
    decode_frame,
    encode_frame,
    encode_interests,
    encode_msgs,
    encode_msgs_split,
    encode_peers,
)
from gravpy.proto.config import DEFAULT_LIMITS, Limits, ProtocolConfig
from gravpy.proto.events import (
    Closed,
    Event,
    HandshakeComplete,
    HelloReceived,
    InterestsReceived,
    LinkDead,
    LinkStatistics,
    MessagesReceived,
    MovedReceived,
    PeersReceived,
    ProtocolViolation,
    Rejected,
    WithdrawAcked,
    WithdrawReceived,
)
from gravpy.proto.frames import (
    PROTOCOL_VERSION,
    Frame,
    FrameKind,
    Hello,
    is_valid_pattern,
)
from gravpy.proto.handshake import (
    ANY_MESH,
    CLOSE_REASONS,
    REASON_BAD_FRAME,
    REASON_BAD_SIGNATURE,
    REASON_DEAD,
    REASON_DEADLINE,
    REASON_DUPLICATE,
    REASON_MESH,
    REASON_NORMAL,
    REASON_NOT_ALLOWED,
    REASON_PROOF,
    REASON_ROLE,
    REASON_SELF,
    REASON_SHUTDOWN,
    REASON_UNEXPECTED_FRAME,
    REASON_UNKNOWN_KEY,
    REASON_UUID_MISMATCH,
    REASON_VERSION,
    REJECT_REASONS,
    ROLE_LEAF,
    ROLE_PEER,
    LinkState,
    NodeInfo,
)
from gravpy.proto.peer import PeerProtocol

__all__ = [
    "ANY_MESH",
    "CLOSE_REASONS",
    "DEFAULT_LIMITS",
    "PROTOCOL_VERSION",
    "REASON_BAD_FRAME",
    "REASON_BAD_SIGNATURE",
    "REASON_DEAD",
    "REASON_DEADLINE",
    "REASON_DUPLICATE",
    "REASON_MESH",
    "REASON_NORMAL",
    "REASON_NOT_ALLOWED",
    "REASON_PROOF",
    "REASON_ROLE",
    "REASON_SELF",
    "REASON_SHUTDOWN",
    "REASON_UNEXPECTED_FRAME",
    "REASON_UNKNOWN_KEY",
    "REASON_UUID_MISMATCH",
    "REASON_VERSION",
    "REJECT_REASONS",
    "ROLE_LEAF",
    "ROLE_PEER",
    "Closed",
    "Event",
    "Frame",
    "FrameKind",
    "HandshakeComplete",
    "Hello",
    "HelloReceived",
    "InterestsReceived",
    "Limits",
    "LinkDead",
    "LinkState",
    "LinkStatistics",
    "MessagesReceived",
    "MovedReceived",
    "NodeInfo",
    "PeerProtocol",
    "PeersReceived",
    "ProtocolConfig",
    "ProtocolViolation",
    "Rejected",
    "WithdrawAcked",
    "WithdrawReceived",
    "decode_frame",
    "encode_frame",
    "encode_interests",
    "encode_msgs",
    "encode_msgs_split",
    "encode_peers",
    "is_valid_pattern",
]
