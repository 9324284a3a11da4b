"""The signed handshake, sans I/O: a signature is bound to the verifier's fresh nonce."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gravpy.proto import Hello, HelloReceived, NodeInfo, PeerProtocol, Rejected, decode_frame
from gravpy.proto.frames import Auth, Reject
from gravpy.proto.handshake import Credentials

from .wiring import make


def credentials() -> Credentials:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Credentials(public_key=raw, sign=key.sign)


def side(uuid: str, creds: Credentials | None, nonce: bytes = b"b" * 16) -> PeerProtocol:
    """The dialling side (an app): it says HELLO first."""
    return PeerProtocol(NodeInfo(uuid), initiator=True, now=100.0, nonce=nonce, credentials=creds)


def test_a_signed_hello_is_accepted_and_the_key_is_reported_verified() -> None:
    """A side with a key pair signs; the other verifies and reports the key as proven."""
    creds = credentials()
    a = make("node-a", initiator=False)
    b = side("node-b", creds)
    for frame in b.data_to_send():
        a.receive_frame(frame, 100.0)
    for frame in a.data_to_send():
        b.receive_frame(frame, 100.0)
    events = [e for f in b.data_to_send() for e in a.receive_frame(f, 100.0)]
    assert [type(e) for e in events] == [HelloReceived]
    assert a.verified_key == creds.public_key


def test_a_replayed_handshake_is_refused_with_bad_signature() -> None:
    """HELLO and AUTH captured from one handshake fail against a fresh nonce: bad_signature."""
    creds = credentials()
    victim = make("node-a", initiator=False)
    signer = side("node-b", creds)
    captured = signer.data_to_send()  # its HELLO
    for frame in captured:
        victim.receive_frame(frame, 100.0)
    for frame in victim.data_to_send():
        signer.receive_frame(frame, 100.0)
    captured += signer.data_to_send()  # its AUTH, signed over the victim's nonce of that link
    assert isinstance(decode_frame(captured[-1]), Auth)
    fresh = side("node-a", None, nonce=b"f" * 16)
    events = [e for frame in captured for e in fresh.receive_frame(frame, 100.0)]
    refused = [e for e in events if isinstance(e, Rejected)]
    assert [e.reason for e in refused] == ["bad_signature"]
    assert fresh.verified_key == b""


def test_a_screened_out_hello_is_refused_before_any_auth_is_sent() -> None:
    """A HELLO the acceptor's screen refuses (an unlisted key) is rejected at once: the refusing
    side sends its REJECT and nothing else (no HELLO of its own, no AUTH signed), and the reason
    reaches the other side."""
    creds = credentials()
    seen: list[bytes] = []

    def screen(hello: Hello) -> tuple[str, str] | None:
        seen.append(hello.public_key)
        return ("unknown_key", "this node does not list the public key presented")

    guard = PeerProtocol(
        NodeInfo("node-a"), initiator=False, now=100.0, nonce=b"a" * 16, screen=screen
    )
    assert guard.data_to_send() == []  # the acceptor waits for the remote's HELLO
    dialler = side("node-b", creds)
    for frame in dialler.data_to_send():  # its HELLO, with its public key
        events = guard.receive_frame(frame, 100.0)
    assert seen == [creds.public_key]
    assert [(type(e), getattr(e, "reason", "")) for e in events] == [(Rejected, "unknown_key")]
    raw = guard.data_to_send()
    assert [type(decode_frame(frame)) for frame in raw] == [Reject]  # no HELLO, no AUTH
    told = [e for frame in raw for e in dialler.receive_frame(frame, 100.0)]
    assert [e.reason for e in told if isinstance(e, Rejected)] == ["unknown_key"]
