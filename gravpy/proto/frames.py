"""Frames: what two nodes exchange on a link, as frozen values.

Every frame is one msgpack array whose first element is the frame kind (a small int)::

    HELLO         [1, version, node_uuid, role, belongs_to, endpoint, nonce, keyed, public_key,
                   has_token, name, origin_seq, upgrade_token, ...]
    AUTH          [2, proof]
    ACCEPT        [3]
    REJECT        [4, reason, detail]
    MSGS          [5, [message, ...]]          each message is ``Message.to_wire()``
    INTERESTS     [6, [pattern, ...], [[group, pattern, members], ...]]
                                               a full replacement of the sender's interests
    PEERS         [7, [[node_uuid, endpoint], ...]]
    WITHDRAW      [8]
    WITHDRAW_ACK  [9]
    PING          [10, nonce]
    PONG          [11, nonce]
    CLOSE         [12, reason, detail]
    MOVED         [13]                         the last frame of its sender's on a link it moved
                                               off (gravpy.mesh.upgrade; only to a node whose
                                               HELLO issued an upgrade token)

Each frame class has ``to_wire()``, its msgpack array; ``gravpy.proto.codec`` packs and checks
them (MSGS frames through msgspec, which packs the messages themselves into the same bytes).
docs/protocol.md is the reference for the field types and limits. ``MAX_HEADERS`` (headers per
message, also the msgpack map length limit) is defined by ``gravpy.message``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from gravpy.message import MAX_HEADERS, MAX_TYPE_LENGTH, Message

__all__ = [
    "MAX_APP_NAME_LENGTH",
    "MAX_DETAIL_LENGTH",
    "MAX_ENDPOINT_LENGTH",
    "MAX_GROUP_MEMBERS",
    "MAX_HEADERS",
    "MAX_NAME_LENGTH",
    "MAX_NONCE_LENGTH",
    "MAX_PING_NONCE",
    "MAX_REASON_LENGTH",
    "MAX_UPGRADE_TOKEN_LENGTH",
    "MAX_UUID_LENGTH",
    "MIN_NONCE_LENGTH",
    "PROOF_LENGTH",
    "PROTOCOL_VERSION",
    "SIZE_ESTIMATE_OVERHEAD",
    "Accept",
    "Auth",
    "Close",
    "Frame",
    "FrameKind",
    "Hello",
    "Interests",
    "Moved",
    "Msgs",
    "Peers",
    "Ping",
    "Pong",
    "Reject",
    "Withdraw",
    "WithdrawAck",
    "is_valid_pattern",
]

# 2: INTERESTS carries groups; 3: grav-seq and resume after a link flap (docs); 4: keyed links
# tag every frame, HELLO/AUTH carry credentials; 5: origin numbers travel in MSGS, not headers
PROTOCOL_VERSION: Final = 5
MAX_GROUP_MEMBERS: Final = (1 << 31) - 1
MAX_UUID_LENGTH: Final = 64
MAX_NAME_LENGTH: Final = 255  # mesh names and roles
MAX_APP_NAME_LENGTH: Final = 64  # an application's name in HELLO (gravpy.connect(url, name=...))
MAX_ENDPOINT_LENGTH: Final = 1024
MAX_REASON_LENGTH: Final = 64
MAX_DETAIL_LENGTH: Final = 1024
MIN_NONCE_LENGTH: Final = 16
MAX_NONCE_LENGTH: Final = 64
PROOF_LENGTH: Final = 32  # HMAC-SHA256
PUBLIC_KEY_LENGTH: Final = 32  # Ed25519
SIGNATURE_LENGTH: Final = 64  # Ed25519
MAX_TOKEN_LENGTH: Final = 256
MAX_UPGRADE_TOKEN_LENGTH: Final = 32  # HELLO's upgrade token (gravpy.mesh.upgrade issues 16 bytes)
MAX_PING_NONCE: Final = (1 << 64) - 1
SIZE_ESTIMATE_OVERHEAD: Final = 128  # per-message guess used to split batches before packing

_TOKEN = r"(?:[^.\s*>]+|\*)"
_PATTERN_RE: Final = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*(?:\.>)?|>")


class FrameKind(enum.IntEnum):
    """The first element of every frame. Numbers are part of the wire format: never reuse one."""

    HELLO = 1
    AUTH = 2
    ACCEPT = 3
    REJECT = 4
    MSGS = 5
    INTERESTS = 6
    PEERS = 7
    WITHDRAW = 8
    WITHDRAW_ACK = 9
    PING = 10
    PONG = 11
    CLOSE = 12
    MOVED = 13


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame each side sends. ``keyed`` says whether a mesh key is in use."""

    kind: ClassVar[FrameKind] = FrameKind.HELLO
    node_uuid: str
    role: str
    belongs_to: str
    endpoint: str
    nonce: bytes
    keyed: bool
    version: int = PROTOCOL_VERSION
    public_key: bytes = b""  # the Ed25519 key the sender will sign with in AUTH; empty if none
    has_token: bool = False  # the sender will present a token in AUTH
    # the application's name, for operators (leaves listing, gravctl peers); empty if none. An
    # optional last element: version-5 nodes that predate it read the first ten and ignore it
    name: str = ""
    # the last origin number the sender gave a message when it made this HELLO (0: none or a
    # leaf): the receiver's baseline for resuming after the link is replaced (gravpy.mesh.resume)
    origin_seq: int = 0
    # moving a live link to a faster transport (gravpy.mesh.upgrade): in an acceptor's HELLO, the
    # random token it issues on this link; in an initiator's, the token of the live link it
    # replaces. Empty if none. An optional last element: version-5 nodes that predate it read
    # the first twelve elements and ignore it
    upgrade_token: bytes = b""

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        wire = [
            self.kind,
            self.version,
            self.node_uuid,
            self.role,
            self.belongs_to,
            self.endpoint,
            self.nonce,
            self.keyed,
            self.public_key,
            self.has_token,
        ]
        if self.name or self.origin_seq or self.upgrade_token:
            wire.append(self.name)
        if self.origin_seq or self.upgrade_token:
            wire.append(self.origin_seq)
        if self.upgrade_token:
            wire.append(self.upgrade_token)
        return wire


@dataclass(frozen=True, slots=True)
class Auth:
    """Proof of the mesh key (HMAC-SHA256 over both HELLOs, empty on an unkeyed link), an
    Ed25519 signature over both HELLOs (empty without a key pair) and a token (see handshake.py)."""

    kind: ClassVar[FrameKind] = FrameKind.AUTH
    proof: bytes
    signature: bytes = b""
    token: str = ""

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind, self.proof, self.signature, self.token]


@dataclass(frozen=True, slots=True)
class Accept:
    """The sender's caller accepted the link."""

    kind: ClassVar[FrameKind] = FrameKind.ACCEPT

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind]


@dataclass(frozen=True, slots=True)
class Reject:
    """The sender refused the link; ``reason`` is a reason code, ``detail`` free text."""

    kind: ClassVar[FrameKind] = FrameKind.REJECT
    reason: str
    detail: str = ""

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind, self.reason, self.detail]


@dataclass(frozen=True, slots=True)
class Msgs:
    """A batch of messages, in the order the sender sent them.

    ``seqs``, if present, holds one origin number per message (docs/protocol.md section 7.2):
    0 for a message the sender did not number, ``n`` for its number ``n``, ``-n`` for its
    number ``n`` resent after a resume request.
    """

    kind: ClassVar[FrameKind] = FrameKind.MSGS
    messages: list[Message]
    seqs: list[int] | None = None

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        wire: list[Any] = [self.kind, [m.to_wire() for m in self.messages]]
        if self.seqs is not None:
            wire.append(list(self.seqs))
        return wire


@dataclass(frozen=True, slots=True)
class Interests:
    """What the sender's pods want; replaces any earlier list.

    ``patterns``: what ungrouped pods admit (each gets its own copy). ``groups``: ``(group,
    pattern, members)``: how many members of a group admit ``pattern`` (one of them gets a copy).
    """

    kind: ClassVar[FrameKind] = FrameKind.INTERESTS
    patterns: tuple[str, ...]
    groups: tuple[tuple[str, str, int], ...] = ()

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind, list(self.patterns), [list(g) for g in self.groups]]


@dataclass(frozen=True, slots=True)
class Peers:
    """Gossip: ``(node_uuid, endpoint)`` of nodes the sender knows."""

    kind: ClassVar[FrameKind] = FrameKind.PEERS
    pairs: tuple[tuple[str, str], ...]

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind, [list(p) for p in self.pairs]]


@dataclass(frozen=True, slots=True)
class Withdraw:
    """The sender is shutting down: send it no more messages."""

    kind: ClassVar[FrameKind] = FrameKind.WITHDRAW

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind]


@dataclass(frozen=True, slots=True)
class WithdrawAck:
    """Answer to WITHDRAW: the sender will send no more messages on this link."""

    kind: ClassVar[FrameKind] = FrameKind.WITHDRAW_ACK

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind]


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe; answered by a PONG with the same nonce."""

    kind: ClassVar[FrameKind] = FrameKind.PING
    nonce: int

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind, self.nonce]


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a PING."""

    kind: ClassVar[FrameKind] = FrameKind.PONG
    nonce: int

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind, self.nonce]


@dataclass(frozen=True, slots=True)
class Close:
    """The sender is closing the link; ``reason`` is a reason code, ``detail`` free text."""

    kind: ClassVar[FrameKind] = FrameKind.CLOSE
    reason: str
    detail: str = ""

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind, self.reason, self.detail]


@dataclass(frozen=True, slots=True)
class Moved:
    """The sender moved this link's traffic to a faster link: nothing follows on this one but
    its CLOSE (docs/protocol.md section 7.3)."""

    kind: ClassVar[FrameKind] = FrameKind.MOVED

    def to_wire(self) -> list[Any]:
        """The msgpack array of this frame."""
        return [self.kind]


Frame: TypeAlias = (
    Hello
    | Auth
    | Accept
    | Reject
    | Msgs
    | Interests
    | Peers
    | Withdraw
    | WithdrawAck
    | Ping
    | Pong
    | Close
    | Moved
)


def is_valid_pattern(pattern: object) -> bool:
    """True if ``pattern`` is a type pattern: tokens, ``*`` (one token), a last ``>`` (the rest)."""
    return (
        type(pattern) is str
        and len(pattern) <= MAX_TYPE_LENGTH
        and _PATTERN_RE.fullmatch(pattern) is not None
    )
