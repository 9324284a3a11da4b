"""``Greeting``: what one side of a link says in its HELLO and AUTH, and what it checks in the remote's.

Theory of operation
-------------------
A ``Greeting`` is made with the link (``PeerProtocol`` makes one): it checks what the caller gave
(the nonce, the mesh key, the uuid expected), builds this side's HELLO and encodes it once. When
the remote's HELLO arrives it is kept as received, bytes and all, because everything keyed is
computed over the exact bytes of both HELLOs: ``hello_received`` runs ``check_hello`` and then
the owner's screen. If either side authenticates (a mesh key, a public key or a token),
``auth_frame`` is this side's AUTH (the mesh-key proof, the signature of the transcript, the
token) and ``auth_received`` checks the remote's, keeping the key it proved it holds and the
token it presented. On a keyed link ``sealer`` and ``opener`` tag and check every frame after
each side's AUTH (``gravpy.proto.session``), and what this side sends leaves room for the tag
(``send_limits``).

A Greeting holds no link state: ``PeerProtocol`` moves through the transition table, queues the
frames and decides what a failed check costs (a REJECT).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gravpy.errors import UsageError
from gravpy.proto import handshake as hs
from gravpy.proto.codec import encode_frame
from gravpy.proto.config import MESSAGE_OVERHEAD, Limits
from gravpy.proto.frames import MAX_NONCE_LENGTH, MAX_UUID_LENGTH, MIN_NONCE_LENGTH, Auth, Hello
from gravpy.proto.handshake import NodeInfo
from gravpy.proto.session import TAG_LENGTH, FrameSealer, direction_key

__all__ = ["Greeting"]


class Greeting:
    """This side's HELLO and AUTH, and what the remote's proved; see the module docstring.

    ``PeerProtocol`` passes its own arguments on; a wrong one raises ``UsageError``. ``nonce`` is
    16..64 random bytes from the caller (``os.urandom(16)``); ``mesh_key``, when set, is at least
    16 bytes and must be the same on every node; ``expected_uuid`` is the node uuid discovery
    reported for the endpoint dialled. ``credentials`` are what this side presents in AUTH;
    ``screen`` is the owner's look at the remote's HELLO. ``origin_seq`` is the last origin number
    the node gave (its HELLO carries it: a receiver's resume baseline, ``gravpy.mesh.resume``).
    ``upgrade_token`` is what our HELLO carries for moving a live link to a faster transport
    (``gravpy.mesh.upgrade``): an acceptor's issued token, or the token an upgrading initiator
    presents; empty for none.
    """

    def __init__(
        self,
        local: NodeInfo,
        *,
        nonce: object,
        mesh_key: object,
        expected_uuid: object,
        credentials: hs.Credentials | None,
        screen: Callable[[Hello], tuple[str, str] | None] | None,
        origin_seq: int,
        upgrade_token: bytes,
    ) -> None:
        if type(nonce) is not bytes or not MIN_NONCE_LENGTH <= len(nonce) <= MAX_NONCE_LENGTH:
            raise UsageError(f"nonce must be {MIN_NONCE_LENGTH}..{MAX_NONCE_LENGTH} random bytes")
        key = hs.check_mesh_key(mesh_key)
        if expected_uuid is not None and not (
            isinstance(expected_uuid, str) and 0 < len(expected_uuid) <= MAX_UUID_LENGTH
        ):
            raise UsageError(f"expected_uuid must be a string of 1..{MAX_UUID_LENGTH} characters")
        self.key = key
        self._credentials = credentials if credentials is not None else hs.Credentials()
        self._expected_uuid = expected_uuid
        # the owner's look at a HELLO before anything is proved: (reason, detail) refuses it at
        # once, before our AUTH is signed and sent and before the remote's signature is checked
        self._screen = screen
        self.remote: Hello | None = None  # the remote's HELLO once received
        self.remote_raw = b""  # ... as its bytes arrived
        self.verified_key = b""  # the public key the remote proved it holds; empty if none
        self.remote_token = ""  # the token the remote presented in AUTH, if it said it would
        self.hello = Hello(
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
        self.hello_raw = encode_frame(self.hello)

    def send_limits(self, limits: Limits) -> Limits:
        """``limits`` for what this side sends: on a keyed link every frame leaves room for its
        tag."""
        if not self.key:
            return limits
        frame = limits.max_frame_bytes - TAG_LENGTH
        message = min(limits.max_message_bytes, frame - MESSAGE_OVERHEAD)
        return dataclasses.replace(limits, max_frame_bytes=frame, max_message_bytes=message)

    def hello_received(self, remote: Hello, raw: bytes) -> tuple[str, str] | None:
        """Keep the remote's HELLO (``raw``: its bytes) and say why to refuse it, as
        ``(reason, detail)``, or None if it passes ``check_hello`` and the owner's screen."""
        self.remote = remote
        self.remote_raw = raw
        problem = hs.check_hello(self.hello, remote, self._expected_uuid)
        if problem is None and self._screen is not None:
            problem = self._screen(remote)
        return problem

    def authenticating(self) -> bool:
        """True if either HELLO says its side authenticates: then both send AUTH."""
        remote = self.remote
        assert remote is not None  # only asked once the remote's HELLO passed
        return hs.authenticating(self.hello) or hs.authenticating(remote)

    def auth_frame(self) -> bytes:
        """This side's AUTH, encoded: the mesh-key proof, the signature, the token."""
        creds, ours, theirs = self._credentials, self.hello_raw, self.remote_raw
        proof = hs.auth_proof(self.key, ours, theirs) if self.key else b""
        signed = creds.sign(hs.signed_transcript(ours, theirs)) if creds.sign else b""
        return encode_frame(Auth(proof, signed, creds.token))

    def auth_received(self, frame: Auth) -> tuple[str, str] | None:
        """Check the remote's AUTH: why to refuse it, as ``(reason, detail)``, or None once its
        key (``verified_key``) and its token (``remote_token``) are kept."""
        remote = self.remote
        assert remote is not None  # AUTH is only allowed after HELLO
        theirs, ours = self.remote_raw, self.hello_raw
        if self.key is not None and not hs.verify_proof(self.key, frame.proof, theirs, ours):
            return hs.REASON_PROOF, "the remote's mesh key proof is wrong"
        if remote.public_key:
            if not hs.verify_signature(remote.public_key, frame.signature, theirs, ours):
                detail = "the signature does not verify with the public key presented"
                return hs.REASON_BAD_SIGNATURE, detail
            self.verified_key = remote.public_key
        self.remote_token = frame.token if remote.has_token else ""
        return None

    def sealer(self) -> FrameSealer | None:
        """What tags the frames this side sends after its AUTH; None without a mesh key."""
        if self.key is None:
            return None
        return FrameSealer(direction_key(self.key, self.hello_raw, self.remote_raw))

    def opener(self) -> FrameSealer | None:
        """What checks the frames received after the remote's AUTH; None without a mesh key."""
        if self.key is None:
            return None
        return FrameSealer(direction_key(self.key, self.remote_raw, self.hello_raw))
