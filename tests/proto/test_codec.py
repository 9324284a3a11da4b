"""The frame codec: round-trips of every kind, limits, and fuzzing that only FrameError escapes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gravpy.errors import FrameError, UsageError
from gravpy.message import Message
from gravpy.proto import (
    Limits,
    NodeInfo,
    PeerProtocol,
    ProtocolConfig,
    decode_frame,
    encode_frame,
    encode_msgs,
    encode_msgs_split,
    is_valid_pattern,
)
from gravpy.proto.codec import _decode_careful, _decode_msgs_typed  # the two paths compared
from gravpy.proto.frames import (
    PROTOCOL_VERSION,
    Frame,
    FrameKind,
    Hello,
    Interests,
    Msgs,
    Peers,
    Ping,
)

from .strategies import FRAMES, any_frame, ids, messages, msg_types, msgpack_values

DEFAULT = Limits()


def decode_or_frame_error(raw: bytes) -> Frame | None:
    """Decode ``raw``: a FrameError gives None, any other exception fails the test, and a frame
    that decodes must re-encode to bytes that decode to the same encoding again."""
    try:
        frame = decode_frame(raw)
    except FrameError:
        return None
    again = encode_frame(frame)
    assert encode_frame(decode_frame(again)) == again
    return frame


def test_every_frame_kind_has_a_strategy() -> None:
    """The round-trip strategies cover every frame kind the protocol defines."""
    assert set(FRAMES) == set(FrameKind)


@pytest.mark.parametrize("kind", list(FrameKind), ids=lambda k: k.name)
@given(data=st.data())
def test_encode_decode_round_trips(kind: FrameKind, data: st.DataObject) -> None:
    """Every frame kind decodes to a frame equal to the one encoded."""
    frame = data.draw(FRAMES[kind])
    raw = encode_frame(frame)
    assert raw[0] >> 4 == 0x9  # a msgpack fixarray
    assert decode_frame(raw) == frame


@settings(max_examples=50)
@given(st.lists(messages, min_size=1, max_size=12))
def test_encode_msgs_is_the_msgs_frame(batch: list[Message]) -> None:
    """The msgspec MSGS encoder writes the bytes msgpack writes for the frame array, and decodes back."""
    raw = encode_msgs(batch)
    assert raw == encode_frame(Msgs(batch))
    assert raw == msgpack.packb(Msgs(batch).to_wire(), use_bin_type=True)
    assert raw == encode_msgs(tuple(batch))
    assert decode_frame(raw) == Msgs(batch)


def test_a_msgs_frame_in_a_wider_array_encoding_still_decodes() -> None:
    """A MSGS frame whose outer array is written as array 16 (not fixarray) takes the careful path."""
    msg = Message.new("a.b", b"x")
    raw = b"\xdc\x00\x02\x05" + msgpack.packb([msg.to_wire()], use_bin_type=True)
    assert decode_frame(raw) == Msgs([msg])


def test_encoding_a_message_that_cannot_pack_is_a_usage_error() -> None:
    """A message built by hand with an unpackable field raises UsageError from the encoder."""
    bad = Message("u", "", "", "a.b", 1.0, b"", {"k": object()})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="cannot be encoded"):
        encode_msgs([bad])
    with pytest.raises(UsageError):
        encode_msgs_split([bad])


@settings(max_examples=500)
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_only_raise_frame_error(raw: bytes) -> None:
    """Arbitrary bytes either decode to a frame or raise FrameError, never anything else."""
    decode_or_frame_error(raw)


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_behind_the_msgs_prefix_only_raise_frame_error(tail: bytes) -> None:
    """Bytes that start like a MSGS frame (so reach the typed decoder) only ever raise FrameError."""
    decode_or_frame_error(b"\x92\x05" + tail)


@settings(max_examples=150)
@given(st.integers(-1, 14), st.lists(msgpack_values, max_size=9))
def test_arbitrary_msgpack_arrays_only_raise_frame_error(kind: int, rest: list[object]) -> None:
    """Well-formed msgpack of any shape behind a plausible kind only ever raises FrameError."""
    decode_or_frame_error(msgpack.packb([kind, *rest]))


@settings(max_examples=200)
@given(any_frame, st.data())
def test_mutated_valid_frames_only_raise_frame_error(frame: Frame, data: st.DataObject) -> None:
    """Valid frames with bytes flipped, cut or inserted only ever raise FrameError."""
    raw = bytearray(encode_frame(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and pos < len(raw):
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    decode_or_frame_error(bytes(raw))


near_valid_messages = st.tuples(
    ids | msgpack_values,
    st.text(max_size=64) | msgpack_values,
    st.text(max_size=64) | msgpack_values,
    msg_types | st.sampled_from(["a..b", "a.*", ""]) | msgpack_values,
    st.floats() | st.integers(-(2**63), 2**64 - 1) | msgpack_values,
    st.binary(max_size=40) | msgpack_values,
    st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=6),
).map(list) | st.lists(msgpack_values, min_size=6, max_size=8)
near_valid_msgs = st.lists(near_valid_messages, max_size=5).flatmap(
    lambda b: (
        st.just([FrameKind.MSGS, b])
        | st.lists(st.integers(-(2**63), 2**64 - 1) | st.booleans(), max_size=6).map(
            lambda seqs: [FrameKind.MSGS, b, seqs]  # origin numbers, of the right count or not
        )
    )
)
small = Limits(max_frame_bytes=2048, max_message_bytes=16, max_batch=3)


@settings(max_examples=150)
@given(near_valid_msgs | any_frame.map(lambda f: f.to_wire()), st.sampled_from([DEFAULT, small]))
def test_typed_msgs_decoder_accepts_only_what_the_careful_decoder_accepts(
    obj: list[object], limits: Limits
) -> None:
    """Where the MSGS fast path decodes a frame, the careful decoder gives the same frame."""
    raw = msgpack.packb(obj, use_bin_type=True)
    fast = _decode_msgs_typed(raw, limits)
    try:
        careful = _decode_careful(raw, limits)
    except FrameError:
        assert fast is None
        return
    assert fast is None or encode_frame(fast) == encode_frame(careful)
    assert encode_frame(decode_frame(raw, limits)) == encode_frame(careful)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "not valid msgpack"),
        (msgpack.packb([]), "non-empty msgpack array"),
        (msgpack.packb("hello"), "non-empty msgpack array"),
        (msgpack.packb([42]), "unknown frame kind 42"),
        (msgpack.packb([True]), "unknown frame kind True"),
        (msgpack.packb([FrameKind.ACCEPT, 1]), "ACCEPT frame must have 1 elements"),
        (msgpack.packb([FrameKind.AUTH, b"short", b"", ""]), "AUTH proof must be empty or 32"),
        (msgpack.packb([FrameKind.AUTH, b"", b"short", ""]), "AUTH signature must be empty or 64"),
        (msgpack.packb([FrameKind.PONG, -5]), "nonce"),
        (msgpack.packb([FrameKind.CLOSE, "", ""]), "CLOSE reason must not be empty"),
        (msgpack.packb([FrameKind.MSGS, []]), "at least one message"),
        (msgpack.packb([FrameKind.MSGS, [["u", "", "", "t", 1.0, b"", None]], [1, 2]]), "2 origin"),
        (msgpack.packb([FrameKind.MSGS, [["u", "", "", "t", 1.0, b"", None]], [True]]), "integers"),
        (msgpack.packb([FrameKind.MSGS, [["u", "", "", "t", 1.0, b"", None]], 7]), "an array"),
        (msgpack.packb([FrameKind.MSGS, [["u", "", "", ["x"], 1.0, b"", None]]]), "message 0"),
        (msgpack.packb([FrameKind.MSGS, [["u", "", "", "t", 1.0, "s", None]]]), "data must be"),
        (msgpack.packb([FrameKind.INTERESTS, ["a.>.b"], []]), "invalid type pattern"),
        (msgpack.packb([FrameKind.INTERESTS, ["a"]]), "INTERESTS frame must have 3 elements"),
        (msgpack.packb([FrameKind.INTERESTS, [], [["g", "a"]]]), "group entries must be"),
        (msgpack.packb([FrameKind.INTERESTS, [], [["g*", "a", 1]]]), "invalid group name"),
        (msgpack.packb([FrameKind.INTERESTS, [], [["g", "a.>.b", 1]]]), "invalid type pattern"),
        (msgpack.packb([FrameKind.INTERESTS, [], [["g", "a", 0]]]), "members must be an int"),
        (msgpack.packb([FrameKind.PEERS, [["n", ""]]]), "PEERS endpoint must not be empty"),
        (msgpack.packb([FrameKind.HELLO, 1, "n", "peer", "*", "", b"x" * 8, False]), "nonce"),
        (msgpack.packb([FrameKind.HELLO, 1, "n", "peer"]), "at least 8 elements"),
        (msgpack.packb([FrameKind.PING, 1]) + b"\x00", "extra data"),
        (b"\x91" * 3000 + b"\x01", "not valid msgpack"),
        (msgpack.packb([FrameKind.PING, msgpack.ExtType(1, b"x")]), "max_ext_len"),
    ],
)
def test_invalid_frames_say_what_is_wrong(raw: bytes, match: str) -> None:
    """Each kind of malformed frame raises FrameError with a message naming the problem."""
    with pytest.raises(FrameError, match=match):
        decode_frame(raw)


def test_limits_are_enforced_on_decode() -> None:
    """Frame size, batch length, message data, interests and peers are all bounded by Limits."""
    limits = Limits(
        max_frame_bytes=4096, max_message_bytes=1024, max_batch=3, max_interests=2, max_peers=2
    )
    cases = [
        (b"\x00" * 4097, "max_frame_bytes"),
        (encode_msgs([Message.new("t")] * 4), "over the limit of 3"),
        (encode_msgs([Message.new("t", b"x" * 1025)]), "max_message_bytes"),
        (encode_frame(Interests(("a", "b", "c"))), "INTERESTS patterns has 3 entries"),
        (encode_frame(Interests((), (("g", "a", 1),) * 3)), "INTERESTS groups has 3 entries"),
        (encode_frame(Peers((("a", "x"), ("b", "y"), ("c", "z")))), "PEERS list has 3 entries"),
    ]
    for raw, match in cases:
        with pytest.raises(FrameError, match=match):
            decode_frame(raw, limits)


def test_hello_from_a_later_version_keeps_its_prefix_readable() -> None:
    """A HELLO with extra trailing fields decodes, so its version can be refused cleanly."""
    raw = msgpack.packb([FrameKind.HELLO, 2, "n", "peer", "*", "", b"x" * 16, False, {"new": 1}])
    hello = decode_frame(raw)
    assert isinstance(hello, Hello)
    assert hello.version == 2


def test_hello_carries_its_origin_number_after_the_name() -> None:
    """A HELLO's origin number travels after the name (an empty name is written to keep its
    place) and reads back; a HELLO without one reads as 0."""
    nonce = b"n" * 16
    for name in ("", "billing"):
        hello = Hello("u", "peer", "*", "ws://h:1/p", nonce, False, name=name, origin_seq=41)
        assert decode_frame(encode_frame(hello)) == hello
    plain = Hello("u", "peer", "*", "", nonce, False)
    assert decode_frame(encode_frame(plain)).origin_seq == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [-1, 1 << 63, "7", 1.5, None])
def test_a_hello_origin_number_that_is_not_a_small_natural_number_is_refused(bad: object) -> None:
    """An origin number that is negative, too large or not an int is a FrameError."""
    raw = msgpack.packb(
        [
            FrameKind.HELLO,
            PROTOCOL_VERSION,
            "n",
            "peer",
            "*",
            "",
            b"x" * 16,
            False,
            b"",
            False,
            "",
            bad,
        ]
    )
    with pytest.raises(FrameError, match="origin_seq"):
        decode_frame(raw)


def test_bytes_like_input_is_accepted() -> None:
    """decode_frame takes bytearray and memoryview as well as bytes."""
    raw = encode_frame(Ping(3))
    assert decode_frame(bytearray(raw)) == decode_frame(memoryview(raw)) == Ping(3)
    msgs = Msgs([Message.new("a.b", b"x")])
    raw = encode_frame(msgs)
    assert decode_frame(bytearray(raw)) == decode_frame(memoryview(raw)) == msgs


def test_split_refuses_a_message_that_cannot_fit_any_frame() -> None:
    """A message whose envelope (headers) overflows a frame is a UsageError, not a bad frame."""
    limits = Limits(max_frame_bytes=2048, max_message_bytes=1024)
    big_headers = Message.new("t", b"x" * 1000, headers={"h": "y" * 2000})
    with pytest.raises(UsageError, match="does not fit"):
        encode_msgs_split([Message.new("t"), big_headers], limits)


def test_split_keeps_one_frame_for_a_normal_batch() -> None:
    """A batch within the limits is packed into exactly one frame identical to encode_msgs."""
    batch = [Message.new("t", f"m{i}") for i in range(100)]
    assert encode_msgs_split(batch) == [encode_msgs(batch)]


sized_messages = st.builds(
    lambda n, h: Message.new("t", b"x" * n, headers={f"h{i}": "" for i in range(h)}),
    st.integers(0, 1100),
    st.sampled_from([0, 0, 0, 3, 257]),
)


@settings(max_examples=100)
@given(st.lists(sized_messages, max_size=12), st.integers(1, 4))
def test_split_frames_hold_the_batch_in_order_within_limits(batch: list[Message], cut: int) -> None:
    """Split frames decode back to the batch in order, each within the limits, or UsageError
    names the first message that breaks a limit."""
    limits = Limits(max_frame_bytes=4096, max_message_bytes=1024, max_batch=cut)
    bad = [m for m in batch if len(m.data) > 1024 or len(m.headers or ()) > 256]
    if bad:
        with pytest.raises(UsageError, match=f"message {bad[0].uuid} has"):
            encode_msgs_split(batch, limits)
        return
    frames = encode_msgs_split(batch, limits)
    decoded = [decode_frame(raw, limits) for raw in frames]
    assert all(len(raw) <= 4096 for raw in frames)
    assert [m for f in decoded if isinstance(f, Msgs) for m in f.messages] == batch
    assert len(frames) >= -(-len(batch) // cut)


@pytest.mark.parametrize(
    "pattern", [">", "a", "a.b.c", "a.*.c", "a.>", "*", "*.>", "sensor.kitchen.temp"]
)
def test_valid_patterns(pattern: str) -> None:
    """Tokens, "*" tokens and a final ">" make valid interest patterns."""
    assert is_valid_pattern(pattern)


@pytest.mark.parametrize("pattern", ["", ".", "a.", ".a", "a..b", ">.a", "a.>.b", "a b", "a*", 7])
def test_invalid_patterns(pattern: object) -> None:
    """Empty tokens, misplaced ">", partial wildcards, spaces and non-strings are not patterns."""
    assert not is_valid_pattern(pattern)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Limits(max_batch=0),
        lambda: Limits(max_interests=True),
        lambda: Limits(max_frame_bytes=1024, max_message_bytes=1024),
        lambda: ProtocolConfig(dead_after=2.0, ping_interval=2.0),
        lambda: ProtocolConfig(handshake_timeout=float("nan")),
        lambda: ProtocolConfig(ping_interval=-1),
        lambda: NodeInfo(""),
        lambda: NodeInfo("n", role="boss"),
        lambda: NodeInfo("n", belongs_to=""),
        lambda: PeerProtocol(NodeInfo("n"), initiator=True, now=0.0, nonce=b"short"),
        lambda: PeerProtocol(
            NodeInfo("n"), initiator=True, now=0.0, nonce=b"n" * 16, mesh_key=b"weak"
        ),
    ],
)
def test_invalid_configuration_is_refused_at_construction(build: object) -> None:
    """Bad limits, timers, node info, nonces and keys raise UsageError when constructed."""
    with pytest.raises(UsageError):
        build()  # type: ignore[operator]


def test_origin_numbers_stay_with_their_messages_when_a_batch_is_cut() -> None:
    """A numbered batch cut into several frames keeps each origin number with its message."""
    limits = Limits(max_frame_bytes=2048, max_message_bytes=1024, max_batch=3)
    batch = [Message.new("a.b", bytes([i]) * 500) for i in range(7)]
    seqs = [0, 11, 12, -3, 0, 14, 15]
    frames = encode_msgs_split(batch, limits, seqs)
    decoded = [decode_frame(raw, limits) for raw in frames]
    assert len(frames) > 2
    assert all(isinstance(frame, Msgs) and frame.seqs is not None for frame in decoded)
    assert [m for f in decoded if isinstance(f, Msgs) for m in f.messages] == batch
    assert [n for f in decoded if isinstance(f, Msgs) for n in f.seqs or ()] == seqs


def test_an_unnumbered_batch_has_the_two_element_layout() -> None:
    """A batch without origin numbers (to a leaf) is packed as ``[MSGS, batch]`` as before."""
    batch = [Message.new("a.b", b"x")]
    assert msgpack.unpackb(encode_msgs_split(batch)[0])[0:1] == [FrameKind.MSGS]
    assert len(msgpack.unpackb(encode_msgs_split(batch)[0])) == 2
    assert len(msgpack.unpackb(encode_msgs_split(batch, seqs=[5])[0])) == 3
    with pytest.raises(UsageError, match="1 origin numbers for 2 messages"):
        encode_msgs(batch * 2, [1])
