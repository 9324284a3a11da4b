"""The handshake: link states, every transition in one table, hello checks and the key proof.

Theory of operation
-------------------
The handshake is symmetric but for who speaks first. When a link opens, the initiator sends
HELLO; the acceptor sends its own only once the initiator's has passed its checks
(``check_hello``, in a fixed order, then its owner's screen), so a HELLO it refuses gets a
REJECT alone: no HELLO, no signature, no AUTH. The initiator checks the acceptor's HELLO the
same way. Each side either rejects the link or goes on.
With a mesh key, each side then sends AUTH, a proof computed by ``auth_proof`` over both HELLO
frames, and checks the remote's. The caller (the hub, which alone knows about duplicate links)
then decides: it accepts or rejects. The link is OPEN once each side has sent ACCEPT and received
the other's. REJECT and CLOSE end the link from any state where they make sense; after that
nothing more is read.

``TRANSITIONS`` maps ``(state, input)`` to the next state. An input is either a received frame
(its ``FrameKind``) or a ``Trigger`` (a local call, or a step the protocol takes by itself). A
received frame with no entry for the current state is a protocol violation by the remote; a
local call with no entry is a ``UsageError`` (the caller used the API in the wrong state).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gravpy.errors import UsageError
from gravpy.proto.frames import (
    MAX_APP_NAME_LENGTH,
    MAX_ENDPOINT_LENGTH,
    MAX_NAME_LENGTH,
    MAX_TOKEN_LENGTH,
    MAX_UUID_LENGTH,
    PROTOCOL_VERSION,
    PUBLIC_KEY_LENGTH,
    FrameKind,
    Hello,
)

__all__ = [
    "ANY_MESH",
    "AUTH_CONTEXT",
    "CLOSED",
    "CLOSE_REASONS",
    "MIN_KEY_LENGTH",
    "OPEN",
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
    "ROLES",
    "ROLE_LEAF",
    "ROLE_PEER",
    "SIGN_CONTEXT",
    "TRANSITIONS",
    "Credentials",
    "Input",
    "LinkState",
    "NodeInfo",
    "Trigger",
    "auth_proof",
    "authenticating",
    "check_app_name",
    "check_hello",
    "check_mesh_key",
    "mesh_compatible",
    "signed_transcript",
    "verify_proof",
    "verify_signature",
]

ROLE_PEER: Final = "peer"
ROLE_LEAF: Final = "leaf"
ROLES: Final = frozenset({ROLE_PEER, ROLE_LEAF})
ANY_MESH: Final = "*"
MIN_KEY_LENGTH: Final = 16
AUTH_CONTEXT: Final = b"gravpy/1 mesh-key proof\x00"
SIGN_CONTEXT: Final = b"gravpy/3 identity signature\x00"

# Reasons a handshake is refused (REJECT frames, ``Rejected`` events).
REASON_VERSION: Final = "version"
REASON_SELF: Final = "self"
REASON_UUID_MISMATCH: Final = "uuid_mismatch"
REASON_MESH: Final = "mesh"
REASON_ROLE: Final = "role"
REASON_PROOF: Final = "proof"
REASON_DUPLICATE: Final = "duplicate"
REASON_DEADLINE: Final = "deadline"
REASON_BAD_SIGNATURE: Final = "bad_signature"  # the AUTH signature does not verify
REASON_UNKNOWN_KEY: Final = "unknown_key"  # a key or token the node does not list (or none)
REASON_NOT_ALLOWED: Final = "not_allowed"  # a listed identity that may not link in that role
REJECT_REASONS: Final = frozenset(
    {
        REASON_BAD_SIGNATURE,
        REASON_UNKNOWN_KEY,
        REASON_NOT_ALLOWED,
        REASON_VERSION,
        REASON_SELF,
        REASON_UUID_MISMATCH,
        REASON_MESH,
        REASON_ROLE,
        REASON_PROOF,
        REASON_DUPLICATE,
        REASON_DEADLINE,
    }
)
# Reasons an open link is closed (CLOSE frames, ``Closed``/``ProtocolViolation``/``LinkDead``).
REASON_NORMAL: Final = "normal"
REASON_SHUTDOWN: Final = "shutdown"
REASON_BAD_FRAME: Final = "bad_frame"
REASON_UNEXPECTED_FRAME: Final = "unexpected_frame"
REASON_DEAD: Final = "dead"
CLOSE_REASONS: Final = frozenset(
    {REASON_NORMAL, REASON_SHUTDOWN, REASON_BAD_FRAME, REASON_UNEXPECTED_FRAME, REASON_DEAD}
)


class LinkState(enum.Enum):
    """Where a link is. Everything before OPEN is the handshake."""

    AWAIT_HELLO = "await_hello"  # waiting for the remote's HELLO (an initiator sent its own)
    AWAIT_AUTH = "await_auth"  # remote HELLO checked; our AUTH sent, waiting for theirs
    AWAIT_DECISION = "await_decision"  # HelloReceived emitted; the caller must accept or reject
    REMOTE_ACCEPTED = "remote_accepted"  # as AWAIT_DECISION, and the remote already accepted
    AWAIT_ACCEPT = "await_accept"  # we accepted; waiting for the remote's ACCEPT
    OPEN = "open"  # handshake complete: messages flow
    CLOSED = "closed"  # finished; flush data_to_send() once and close the transport


# The states the per-frame and per-message paths compare with, as module globals: Python 3.11 looks
# an enum member up on its class in about 70 ns, a global in about 10.
OPEN: Final = LinkState.OPEN
CLOSED: Final = LinkState.CLOSED


class Trigger(enum.Enum):
    """Inputs that are not received frames: local calls and the protocol's own steps."""

    NO_KEY = "no_key"  # no mesh key: the AUTH step is empty
    ACCEPT = "accept"  # caller's accept()
    REJECT = "reject"  # caller's reject(), or a failed hello check or proof
    CLOSE = "close"  # caller's close()
    DEADLINE = "deadline"  # tick(): handshake_timeout passed before OPEN
    DEAD = "dead"  # tick(): nothing received for dead_after
    VIOLATION = "violation"  # the remote sent a bad or unexpected frame


Input: TypeAlias = FrameKind | Trigger

_HANDSHAKE: Final = (
    LinkState.AWAIT_HELLO,
    LinkState.AWAIT_AUTH,
    LinkState.AWAIT_DECISION,
    LinkState.REMOTE_ACCEPTED,
    LinkState.AWAIT_ACCEPT,
)
_OPEN_FRAMES: Final = (
    FrameKind.MSGS,
    FrameKind.INTERESTS,
    FrameKind.PEERS,
    FrameKind.WITHDRAW,
    FrameKind.WITHDRAW_ACK,
    FrameKind.PING,
    FrameKind.PONG,
    FrameKind.MOVED,
)


def _table() -> dict[tuple[LinkState, Input], LinkState]:
    s = LinkState
    table: dict[tuple[LinkState, Input], LinkState] = {
        (s.AWAIT_HELLO, FrameKind.HELLO): s.AWAIT_AUTH,
        (s.AWAIT_AUTH, Trigger.NO_KEY): s.AWAIT_DECISION,
        (s.AWAIT_AUTH, FrameKind.AUTH): s.AWAIT_DECISION,
        (s.AWAIT_DECISION, FrameKind.ACCEPT): s.REMOTE_ACCEPTED,
        (s.AWAIT_DECISION, Trigger.ACCEPT): s.AWAIT_ACCEPT,
        (s.REMOTE_ACCEPTED, Trigger.ACCEPT): s.OPEN,
        (s.AWAIT_ACCEPT, FrameKind.ACCEPT): s.OPEN,
        (s.OPEN, Trigger.DEAD): s.CLOSED,
    }
    table.update({(s.OPEN, kind): s.OPEN for kind in _OPEN_FRAMES})
    for state in _HANDSHAKE:
        table[state, Trigger.DEADLINE] = s.CLOSED
        if state is not s.REMOTE_ACCEPTED:  # once the remote accepted, it may no longer reject
            table[state, FrameKind.REJECT] = s.CLOSED
        if state is not s.AWAIT_ACCEPT:  # once we accepted, we may no longer reject
            table[state, Trigger.REJECT] = s.CLOSED
    for state in (*_HANDSHAKE, s.OPEN):
        table[state, FrameKind.CLOSE] = s.CLOSED
        table[state, Trigger.CLOSE] = s.CLOSED
        table[state, Trigger.VIOLATION] = s.CLOSED
    return table


TRANSITIONS: Final[dict[tuple[LinkState, Input], LinkState]] = _table()


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node says about itself in its HELLO. Validated on construction (``UsageError``).

    ``role`` is ``"peer"`` (a node of the mesh) or ``"leaf"`` (an app attached to one peer);
    ``belongs_to`` is the mesh name, ``"*"`` to join any mesh; ``endpoint`` is where others can
    dial this node, empty if they cannot (leaves); ``name`` is what the application calls itself
    (``gravpy.connect(url, name="billing")``), shown to operators, empty if none.
    """

    node_uuid: str
    role: str = ROLE_PEER
    belongs_to: str = ANY_MESH
    endpoint: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        check_app_name(self.name)
        if type(self.node_uuid) is not str or not 0 < len(self.node_uuid) <= MAX_UUID_LENGTH:
            raise UsageError(f"node_uuid must be a string of 1..{MAX_UUID_LENGTH} characters")
        if self.role not in ROLES:
            raise UsageError(f"role must be one of {sorted(ROLES)}, not {self.role!r}")
        if type(self.belongs_to) is not str or not 0 < len(self.belongs_to) <= MAX_NAME_LENGTH:
            raise UsageError(f"belongs_to must be a string of 1..{MAX_NAME_LENGTH} characters")
        if not self.belongs_to.isprintable():  # (nor a lone surrogate: no HELLO could carry it)
            raise UsageError(
                f"belongs_to must be printable text, no control characters: {self.belongs_to!r}"
            )
        if type(self.endpoint) is not str or len(self.endpoint) > MAX_ENDPOINT_LENGTH:
            raise UsageError(
                f"endpoint must be a string of at most {MAX_ENDPOINT_LENGTH} characters"
            )


@dataclass(frozen=True, slots=True)
class Credentials:
    """What this side presents in AUTH: an Ed25519 public key and a function that signs with
    its private key (``gravpy.identity`` loads them from a key file), and/or a token."""

    public_key: bytes = b""
    sign: Callable[[bytes], bytes] | None = None
    token: str = ""

    def __post_init__(self) -> None:
        if bool(self.public_key) != (self.sign is not None):
            raise UsageError("Credentials need both a public key and a signer, or neither")
        if self.public_key and len(self.public_key) != PUBLIC_KEY_LENGTH:
            raise UsageError(f"an Ed25519 public key is {PUBLIC_KEY_LENGTH} bytes")
        if len(self.token) > MAX_TOKEN_LENGTH:
            raise UsageError(f"a token is at most {MAX_TOKEN_LENGTH} characters")


def check_mesh_key(key: object) -> bytes | None:
    """``key`` if it is None or bytes, at least ``MIN_KEY_LENGTH`` of them; else ``UsageError``."""
    if key is None:
        return None
    if type(key) is not bytes or len(key) < MIN_KEY_LENGTH:
        raise UsageError(f"mesh_key must be bytes, at least {MIN_KEY_LENGTH} of them")
    return key


def check_app_name(name: object) -> str:
    """``name`` if it can name an application in HELLO, else ``UsageError`` saying why."""
    if type(name) is not str:
        raise UsageError(f"an app name must be a string, not {type(name).__name__}")
    if len(name) > MAX_APP_NAME_LENGTH:
        raise UsageError(
            f"an app name is at most {MAX_APP_NAME_LENGTH} characters; {name[:20]!r}... has "
            f"{len(name)}"
        )
    if not name.isprintable():
        raise UsageError(f"an app name must be printable text (no control characters): {name!r}")
    return name


def authenticating(hello: Hello) -> bool:
    """True if the sender of ``hello`` takes part in the AUTH step (key, key pair or token).

    The AUTH step happens when either HELLO says so; both sides see both HELLOs and agree.
    """
    return hello.keyed or bool(hello.public_key) or hello.has_token


def signed_transcript(prover_hello: bytes, verifier_hello: bytes) -> bytes:
    """What the prover signs: ``SIGN_CONTEXT || u32be(len P) || P || u32be(len V) || V``.

    V carries the verifier's fresh nonce, so a signature from one handshake is worthless in any
    other (no replay), and the order says who signed (no reflection)."""
    parts = [SIGN_CONTEXT]
    for hello in (prover_hello, verifier_hello):
        parts += [len(hello).to_bytes(4, "big"), hello]
    return b"".join(parts)


@functools.lru_cache(maxsize=256)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """The key object of ``raw`` (parsed once per key: the listed ones come back on every link;
    a flood of fresh keys only churns the bounded cache)."""
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(
    public_key: bytes, signature: bytes, prover_hello: bytes, verifier_hello: bytes
) -> bool:
    """True if ``signature`` is the prover's Ed25519 signature of the transcript."""
    try:
        key = _public_key(public_key)
        key.verify(signature, signed_transcript(prover_hello, verifier_hello))
    except (InvalidSignature, ValueError):
        return False
    return True


def mesh_compatible(a: str, b: str) -> bool:
    """True if nodes of meshes ``a`` and ``b`` may link: equal names, or either is ``"*"``."""
    return a == b or ANY_MESH in (a, b)


def check_hello(local: Hello, remote: Hello, expected_uuid: str | None) -> tuple[str, str] | None:
    """Why ``remote`` must be refused, as ``(reason, detail)``, or None if it passes.

    The checks run in this order: version, self, uuid_mismatch, mesh, role, key presence (proof).
    Both sides run them; the acceptor first (before its own HELLO), so it finds a symmetric
    problem and the initiator hears it in the REJECT.
    """
    if remote.version != PROTOCOL_VERSION:
        return REASON_VERSION, (
            f"remote speaks protocol version {remote.version}, this node speaks "
            f"{PROTOCOL_VERSION}; upgrade the older node (2 added groups, 3 resume after a link "
            "flap, 4 credentials and tagged frames on keyed links, 5 origin numbers in MSGS)"
        )
    if remote.node_uuid == local.node_uuid:
        return REASON_SELF, f"remote node uuid {remote.node_uuid} is this node's own"
    if expected_uuid is not None and remote.node_uuid != expected_uuid:
        return REASON_UUID_MISMATCH, f"expected node {expected_uuid}, got {remote.node_uuid}"
    if not mesh_compatible(local.belongs_to, remote.belongs_to):
        return REASON_MESH, f"remote belongs to {remote.belongs_to!r}, not {local.belongs_to!r}"
    if remote.role not in ROLES:
        return REASON_ROLE, f"unknown role {remote.role!r}"
    if local.role == ROLE_LEAF and remote.role == ROLE_LEAF:
        return REASON_ROLE, "a leaf links only to a peer"
    if local.keyed != remote.keyed:
        side = "this node" if local.keyed else "the remote"
        return REASON_PROOF, f"only {side} uses a mesh key"
    return None


def auth_proof(key: bytes, prover_hello: bytes, verifier_hello: bytes) -> bytes:
    """The AUTH proof that the sender of ``prover_hello`` owes the sender of ``verifier_hello``.

    ``HMAC-SHA256(key, AUTH_CONTEXT || u32be(len P) || P || u32be(len V) || V)`` where P and V
    are the exact bytes of the prover's and the verifier's HELLO frames. The order of the two
    frames says which side proves, so a proof reflected back to its sender does not verify.
    """
    mac = hmac.new(key, AUTH_CONTEXT, hashlib.sha256)
    for hello in (prover_hello, verifier_hello):
        mac.update(len(hello).to_bytes(4, "big"))
        mac.update(hello)
    return mac.digest()


def verify_proof(key: bytes, proof: bytes, prover_hello: bytes, verifier_hello: bytes) -> bool:
    """True if ``proof`` is ``auth_proof(key, prover_hello, verifier_hello)`` (constant time)."""
    return hmac.compare_digest(proof, auth_proof(key, prover_hello, verifier_hello))
