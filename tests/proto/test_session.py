"""Frame authentication on keyed links: injected, replayed and reordered frames are refused."""

from __future__ import annotations

from collections.abc import Sequence

from gravpy import Message
from gravpy.proto import MessagesReceived, ProtocolViolation, encode_frame
from gravpy.proto.frames import Msgs, Ping
from gravpy.proto.session import TAG_LENGTH, FrameSealer, direction_key

from .wiring import KEY, START, link


def violations(events: Sequence[object]) -> list[str]:
    return [e.reason for e in events if isinstance(e, ProtocolViolation)]


def test_messages_cross_a_keyed_link_with_a_tag_on_every_frame() -> None:
    """After a keyed handshake every frame carries a tag and messages still arrive."""
    pair = link(mesh_key=KEY)
    pair.handshake()
    msg = Message.new("t.x", b"hi")
    pair.a.send_messages([msg])
    (sealed,) = pair.a.data_to_send()
    assert sealed[:-TAG_LENGTH] == encode_frame(Msgs([msg]))
    events = pair.b.receive_frame(sealed, START)
    assert [type(e) for e in events] == [MessagesReceived]


def test_a_frame_injected_after_a_keyed_handshake_closes_the_link() -> None:
    """An untagged frame (what a relay in the middle would inject) is a violation, not a message."""
    pair = link(mesh_key=KEY)
    pair.handshake()
    injected = encode_frame(Msgs([Message.new("evil.x", b"")]))
    events = pair.b.receive_frame(injected, START)
    assert violations(events) == ["bad_frame"]
    assert not any(isinstance(e, MessagesReceived) for e in events)


def test_a_replayed_tagged_frame_is_refused() -> None:
    """A tagged frame sent twice fails the second time: the tag covers its sequence number."""
    pair = link(mesh_key=KEY)
    pair.handshake()
    pair.a.send_messages([Message.new("t.x", b"once")])
    (sealed,) = pair.a.data_to_send()
    assert [type(e) for e in pair.b.receive_frame(sealed, START)] == [MessagesReceived]
    assert violations(pair.b.receive_frame(sealed, START)) == ["bad_frame"]


def test_a_tag_made_with_a_guessed_key_is_refused() -> None:
    """A frame tagged with another key (the relay does not know the mesh key) is refused."""
    pair = link(mesh_key=KEY)
    pair.handshake()
    forged = FrameSealer(direction_key(b"x" * 32, b"a", b"b")).seal(encode_frame(Ping(1)))
    assert violations(pair.b.receive_frame(forged, START)) == ["bad_frame"]


def test_each_direction_has_its_own_key() -> None:
    """A frame tagged for one direction does not verify in the other (no reflection)."""
    ab = direction_key(KEY, b"hello-a", b"hello-b")
    ba = direction_key(KEY, b"hello-b", b"hello-a")
    assert ab != ba
    frame = encode_frame(Ping(1))
    assert FrameSealer(ba).open(FrameSealer(ab).seal(frame)) is None
    assert FrameSealer(ab).open(FrameSealer(ab).seal(frame)) == frame


def test_unkeyed_links_send_frames_without_tags() -> None:
    """Without a mesh key, frames are sent as they are encoded."""
    pair = link()
    pair.handshake()
    msg = Message.new("t.x", b"hi")
    pair.a.send_messages([msg])
    (raw,) = pair.a.data_to_send()
    assert raw == encode_frame(Msgs([msg]))
