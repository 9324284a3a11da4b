"""Frame authentication after a keyed handshake: a session key per direction, a MAC per frame.

Theory of operation
-------------------
The mesh-key proof (AUTH) shows that both ends of a link know the key, but only for the
handshake: a node in the middle that relays a handshake between two real nodes (it made one of
them dial it) could inject frames afterwards. So on a keyed link every frame a side sends after its
own AUTH carries a tag, and every frame received after the remote's AUTH must carry a valid one.

Each direction has its own key, derived from the mesh key and both HELLO frames (so both fresh
nonces): ``HMAC-SHA256(mesh_key, SESSION_CONTEXT || u32be(len S) || S || u32be(len R) || R)``
where S is the sender's HELLO and R the receiver's. The tag of a frame is the first 16 bytes of
``HMAC-SHA256(direction_key, u64be(sequence) || frame)``, appended to the frame; the sequence counts
the tagged frames of that direction from 0 and is not sent, so a frame dropped, replayed or
reordered by the relay fails the check. A relay can still cut the link; it cannot speak on it.
Frames are not encrypted: use TLS for confidentiality (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

__all__ = ["SESSION_CONTEXT", "TAG_LENGTH", "FrameSealer", "direction_key"]

SESSION_CONTEXT: Final = b"gravpy/3 session key\x00"
TAG_LENGTH: Final = 16


def direction_key(mesh_key: bytes, sender_hello: bytes, receiver_hello: bytes) -> bytes:
    """The key that tags frames sent by the sender of ``sender_hello`` (see the module docstring)."""
    mac = hmac.new(mesh_key, SESSION_CONTEXT, hashlib.sha256)
    for hello in (sender_hello, receiver_hello):
        mac.update(len(hello).to_bytes(4, "big"))
        mac.update(hello)
    return mac.digest()


class FrameSealer:
    """Tags (``seal``) or checks and strips (``open``) the frames of one direction, in order."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._sequence = 0

    def _tag(self, frame: bytes) -> bytes:
        mac = hmac.new(self._key, self._sequence.to_bytes(8, "big"), hashlib.sha256)
        mac.update(frame)
        self._sequence += 1
        return mac.digest()[:TAG_LENGTH]

    def seal(self, frame: bytes) -> bytes:
        """``frame`` with its tag appended."""
        return frame + self._tag(frame)

    def open(self, sealed: bytes) -> bytes | None:
        """The frame inside ``sealed`` if its tag is the next one expected, else None."""
        if len(sealed) <= TAG_LENGTH:
            return None
        frame, tag = sealed[:-TAG_LENGTH], sealed[-TAG_LENGTH:]
        return frame if hmac.compare_digest(tag, self._tag(frame)) else None
