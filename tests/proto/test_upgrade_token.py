"""HELLO's optional upgrade token (docs/protocol.md section 7.3): encoding, limits, old readers."""

from __future__ import annotations

import msgpack
import pytest

from gravpy.errors import FrameError
from gravpy.proto import PROTOCOL_VERSION, FrameKind, Hello, NodeInfo, PeerProtocol, decode_frame
from gravpy.proto.codec import encode_frame

NONCE = b"n" * 16


def test_a_hello_carries_its_upgrade_token_after_the_origin_number() -> None:
    """The token travels as the 13th element, after a name and origin number written to keep
    their places, and reads back; a HELLO without one reads as empty."""
    token = bytes(range(16))
    for name, seq in (("", 0), ("billing", 41)):
        hello = Hello("u", "peer", "*", "tcp://h:1", NONCE, False, name=name, origin_seq=seq,
                      upgrade_token=token)  # fmt: skip
        wire = msgpack.unpackb(encode_frame(hello))
        assert wire[10:] == [name, seq, token]
        assert decode_frame(encode_frame(hello)) == hello
    plain = Hello("u", "peer", "*", "", NONCE, False)
    assert len(msgpack.unpackb(encode_frame(plain))) == 10
    assert decode_frame(encode_frame(plain)).upgrade_token == b""  # type: ignore[union-attr]


def test_an_old_reader_sees_the_same_first_twelve_elements() -> None:
    """Adding a token leaves the first twelve elements as an older version-5 node reads them."""
    bare = Hello("u", "peer", "*", "tcp://h:1", NONCE, False, origin_seq=7)
    tokened = Hello("u", "peer", "*", "tcp://h:1", NONCE, False, origin_seq=7,
                    upgrade_token=b"t" * 16)  # fmt: skip
    assert msgpack.unpackb(encode_frame(tokened))[:12] == msgpack.unpackb(encode_frame(bare))


@pytest.mark.parametrize("bad", [b"x" * 33, "text", 5, None, [b"x"]])
def test_an_upgrade_token_that_is_not_short_bytes_is_refused(bad: object) -> None:
    """A token that is not bytes, or longer than 32 bytes, is a FrameError."""
    raw = msgpack.packb(
        [FrameKind.HELLO, PROTOCOL_VERSION, "n", "peer", "*", "", NONCE, False, b"", False, "",
         0, bad]
    )  # fmt: skip
    with pytest.raises(FrameError, match="upgrade_token"):
        decode_frame(raw)


def test_the_initiator_hears_the_token_the_acceptor_issues() -> None:
    """In memory: the acceptor's HELLO carries the token it was given, the initiator's the one
    it presents; each side reads the other's from ``remote``."""
    issued, presented = b"i" * 16, b"p" * 16
    dialler = PeerProtocol(NodeInfo("a"), initiator=True, now=0.0, nonce=NONCE,
                           upgrade_token=presented)  # fmt: skip
    acceptor = PeerProtocol(NodeInfo("b"), initiator=False, now=0.0, nonce=NONCE,
                            upgrade_token=issued)  # fmt: skip
    for frame in dialler.data_to_send():
        acceptor.receive_frame(frame, 0.0)
    for frame in acceptor.data_to_send():
        dialler.receive_frame(frame, 0.0)
    assert acceptor.remote is not None
    assert dialler.remote is not None
    assert (acceptor.remote.upgrade_token, dialler.remote.upgrade_token) == (presented, issued)
    assert (dialler.upgrade_token, acceptor.upgrade_token) == (presented, issued)
