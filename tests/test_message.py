"""Tests for gravpy.message: building messages, their data helpers and the msgpack codec."""

from __future__ import annotations

import gc
import os
import re
import time

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravpy.errors import MessageError, UsageError
from gravpy.message import DEFAULT_TYPE, MAX_TYPE_LENGTH, Message, new_id, validate_type

ID_SHAPE = re.compile(r"[0-9a-f]{32}")


def test_new_keeps_bytes_as_they_are() -> None:
    """Bytes data is stored unchanged and a fresh message answers nothing."""
    msg = Message.new("sensor.temp", b"\x00\xffraw")
    assert msg.data == b"\x00\xffraw"
    assert msg.type == "sensor.temp"
    assert msg.reply_to == ""
    assert msg.parent_id == ""
    assert msg.headers is None


def test_new_encodes_str_as_utf8_and_text_decodes_it() -> None:
    """Str data is stored as UTF-8 and text() gives it back."""
    msg = Message.new(data="Hello, Wörld")
    assert msg.data == "Hello, Wörld".encode()
    assert msg.text() == "Hello, Wörld"


def test_new_accepts_bytearray_and_memoryview() -> None:
    """Bytes-like data is copied into bytes."""
    assert Message.new(data=bytearray(b"ab")).data == b"ab"
    assert Message.new(data=memoryview(b"cd")).data == b"cd"


def test_new_packs_other_values_and_unmarshal_data_unpacks_them() -> None:
    """A msgpack-able value round-trips through unmarshal_data()."""
    value = {"temp": 21.5, "tags": ["a", "b"], "ok": True, "n": None, "blob": b"\x01"}
    msg = Message.new("sensor.temp", value)
    assert msg.data == msgpack.packb(value, use_bin_type=True)
    assert msg.unmarshal_data() == value


def test_new_refuses_data_that_is_not_msgpack_able() -> None:
    """Data msgpack cannot pack is refused with UsageError."""
    with pytest.raises(UsageError, match="not msgpack-able"):
        Message.new(data=object())


def test_text_of_non_utf8_data_raises_message_error() -> None:
    """text() on bytes that are not UTF-8 raises MessageError."""
    with pytest.raises(MessageError, match="not UTF-8"):
        Message.new(data=b"\xff\xfe").text()


def test_unmarshal_data_of_non_msgpack_raises_message_error() -> None:
    """unmarshal_data() on data that is not one msgpack value raises MessageError."""
    with pytest.raises(MessageError, match="not msgpack"):
        Message.new(data=b"\xc1").unmarshal_data()  # 0xc1 is never used in msgpack
    with pytest.raises(MessageError):
        Message.new(data=b"\x01\x02").unmarshal_data()  # two values: extra data


def test_default_type_is_grav_default() -> None:
    """A message made without a type has type grav.default, as in Grav."""
    assert DEFAULT_TYPE == "grav.default"
    assert Message.new().type == "grav.default"
    assert Message.new(data="x").type == "grav.default"


def test_new_sets_timestamp_parent_and_headers() -> None:
    """new() stamps the current time and keeps parent_id and a copy of the headers."""
    before = time.time()
    headers = {"traceparent": "00-abc"}
    msg = Message.new("a.b", parent_id="p-1", headers=headers)
    after = time.time()
    assert before <= msg.timestamp <= after
    assert msg.parent_id == "p-1"
    assert msg.headers == headers
    headers["x"] = "y"
    assert msg.headers == {"traceparent": "00-abc"}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "a.",
        ".a",
        "a..b",
        "a b",
        "a.\tb",
        "sensor.*",
        "sensor.>",
        "*",
        ">",
        "x" * (MAX_TYPE_LENGTH + 1),
    ],
)
def test_invalid_types_are_refused(bad: str) -> None:
    """Empty tokens, whitespace, wildcards and over-long types are refused with UsageError."""
    with pytest.raises(UsageError, match="invalid message type"):
        Message.new(bad)
    with pytest.raises(UsageError):
        validate_type(bad)


@pytest.mark.parametrize("bad", [None, 3, b"a.b", ["a"], {"a": 1}])
def test_non_string_types_are_refused_with_usage_error(bad: object) -> None:
    """A type that is not a str, hashable or not, is refused with UsageError (not TypeError)."""
    with pytest.raises(UsageError):
        validate_type(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Message.new(bad)  # type: ignore[arg-type]


def test_valid_types_are_accepted() -> None:
    """Dot-separated non-empty tokens (any non-space characters but wildcards) are valid."""
    for good in ["a", "sensor.kitchen.temp", "grav-x_1.y:2", "ünï.cødé", "x" * MAX_TYPE_LENGTH]:
        assert validate_type(good) == good
        assert Message.new(good).type == good


def test_invalid_headers_are_refused() -> None:
    """Headers must map str to str."""
    with pytest.raises(UsageError, match="headers"):
        Message.new(headers={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="headers"):
        Message.new(headers=[("a", "b")])  # type: ignore[arg-type]


def test_what_could_not_travel_is_refused_at_construction() -> None:
    """Lone surrogates anywhere and over-long parent ids are refused by new(), not later by marshal()."""
    with pytest.raises(UsageError):
        Message.new("sensor.\ud800")
    with pytest.raises(UsageError):
        Message.new(data="\udfff")
    with pytest.raises(UsageError):
        Message.new(headers={"k": "\ud800"})
    with pytest.raises(UsageError):
        Message.new(parent_id="\ud800")
    with pytest.raises(UsageError):
        Message.new(parent_id="p" * 65)
    assert Message.new(parent_id="p" * 64).parent_id == "p" * 64


def test_ids_are_unique_hex_and_in_creation_order() -> None:
    """Message ids (and new_id()) never repeat, are 32 hex digits and sort in creation order."""
    ids = [Message.new().uuid for _ in range(10_000)] + [new_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(ID_SHAPE.fullmatch(i) for i in ids)
    assert ids == sorted(ids)


def test_a_forked_child_draws_a_new_id_prefix() -> None:
    """After fork the child's ids do not continue the parent's sequence (the counter is reseeded)."""
    parent = new_id()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(writer, new_id().encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert ID_SHAPE.fullmatch(child)
    assert child[:20] != parent[:20]
    assert new_id()[:20] == parent[:20]


def test_new_reply_answers_the_request() -> None:
    """new_reply() sets reply_to and parent_id to the request's uuid and gets a fresh uuid."""
    request = Message.new("svc.ask", "joey")
    reply = Message.new_reply(request, "svc.answer", "hey joey")
    assert reply.reply_to == request.uuid
    assert reply.parent_id == request.uuid
    assert reply.uuid != request.uuid
    assert reply.type == "svc.answer"
    assert reply.text() == "hey joey"
    assert Message.new_reply(request).type == DEFAULT_TYPE


def test_marshal_unmarshal_round_trip() -> None:
    """Grav's TestMessageMarshalUnmarshal: marshal then unmarshal gives the same message back."""
    msg = Message.new("default", "Hello, World", parent_id="p", headers={"k": "v"})
    msg.reply_to = "r"
    back = Message.unmarshal(msg.marshal())
    assert back == msg
    assert back.text() == "Hello, World"
    assert (back.uuid, back.parent_id, back.reply_to, back.headers) == (
        msg.uuid,
        "p",
        "r",
        {"k": "v"},
    )
    assert back.timestamp == msg.timestamp


def test_messages_compare_by_every_field_and_are_unhashable() -> None:
    """Two messages are equal only if all seven fields are, and a message is not hashable."""
    msg = Message.new("a", b"x")
    other = Message.unmarshal(msg.marshal())
    assert other == msg
    other.data = b"y"
    assert other != msg
    assert msg != "not a message"
    with pytest.raises(TypeError):
        hash(msg)


def test_messages_are_not_tracked_by_the_gc_and_fields_stay_assignable() -> None:
    """A message (headers or not) is invisible to the cycle collector, and its fields can be set."""
    msg = Message.new("a.b", b"x", headers={"k": "v"})
    assert not gc.is_tracked(msg)
    assert not gc.is_tracked(Message.unmarshal(msg.marshal()))
    msg.reply_to = "r"
    msg.parent_id = "p"
    assert (msg.reply_to, msg.parent_id) == ("r", "p")
    with pytest.raises(AttributeError):
        msg.colour = "red"  # type: ignore[attr-defined]


def test_positional_and_keyword_construction_default_headers_to_none() -> None:
    """Message(uuid, parent_id, reply_to, type, timestamp, data) works with headers left out."""
    msg = Message("u", "p", "r", "a.b", 1.5, b"d")
    assert msg.to_wire() == ["u", "p", "r", "a.b", 1.5, b"d", None]
    assert (
        Message(uuid="u", parent_id="p", reply_to="r", type="a.b", timestamp=1.5, data=b"d") == msg
    )


def test_new_without_headers_shares_nothing_and_with_headers_copies() -> None:
    """Bytes data is kept as the same object; headers are copied, so later edits do not leak in."""
    data = b"payload"
    headers = {"k": "v"}
    msg = Message.new("a.b", data, headers=headers)
    assert msg.data is data
    assert msg.headers == headers
    assert msg.headers is not headers
    assert Message.new("a.b", data, headers={}).headers is None


def test_repr_names_type_and_uuid() -> None:
    """repr() shows the type, the uuid and, for a reply, what it answers."""
    msg = Message.new_reply(Message.new(), "a.b")
    text = repr(msg)
    assert "a.b" in text
    assert msg.uuid in text
    assert msg.reply_to in text


def _wire(**fields: object) -> bytes:
    base: dict[str, object] = {
        "uuid": "u",
        "parent_id": "",
        "reply_to": "",
        "type": "a.b",
        "timestamp": 1.5,
        "data": b"",
        "headers": None,
    }
    base.update(fields)
    return msgpack.packb(list(base.values()), use_bin_type=True)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        b"\x93\x01\x02\x03",  # an array of 3
        msgpack.packb({"uuid": "u"}),
        msgpack.packb([1, 2, 3, 4, 5, 6, 7]),
        _wire(uuid=""),
        _wire(uuid="u" * 65),
        _wire(uuid=b"u"),
        _wire(parent_id=None),
        _wire(reply_to=1),
        _wire(type="a..b"),
        _wire(type="a.*"),
        _wire(type=["a"]),  # unhashable
        _wire(type={"a": "b"}),
        _wire(type=None),
        _wire(timestamp="now"),
        _wire(data="text, not bytes"),
        _wire(headers={"a": 1}),
        _wire(headers=[1]),
        _wire() + b"\x00",  # trailing bytes
        msgpack.packb({1: 2}),  # non-str map key
        msgpack.packb([[]] * 7),
        b"\x91" * 100_000,  # nested arrays deeper than msgpack's stack
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
    ],
)
def test_unmarshal_garbage_raises_message_error(raw: bytes) -> None:
    """Anything that is not a valid message raises MessageError and nothing else."""
    with pytest.raises(MessageError):
        Message.unmarshal(raw)


def test_unmarshal_accepts_integer_timestamp() -> None:
    """An integer timestamp from another implementation is read as a float."""
    msg = Message.unmarshal(_wire(timestamp=7))
    assert msg.timestamp == 7.0
    assert type(msg.timestamp) is float


# Text that can travel: msgpack strings are UTF-8, so no lone surrogates (category Cs).
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=64)
tokens = st.text(
    alphabet=st.characters(blacklist_characters=".*>", blacklist_categories=("Zs", "Cc", "Cs")),
    min_size=1,
    max_size=8,
).filter(lambda t: t.split() == [t])
types = st.lists(tokens, min_size=1, max_size=5).map(".".join)
messages = st.builds(
    Message,
    uuid=ids.filter(bool),
    parent_id=ids,
    reply_to=ids,
    type=types,
    timestamp=st.floats(allow_nan=False),
    data=st.binary(max_size=256),
    headers=st.none() | st.dictionaries(ids, ids, max_size=4),
)


@given(messages)
def test_round_trip_of_arbitrary_messages(msg: Message) -> None:
    """Every valid message, all seven fields arbitrary, survives marshal/unmarshal unchanged."""
    back = Message.unmarshal(msg.marshal())
    assert back == msg
    assert back.to_wire() == msg.to_wire()
    assert Message.from_wire(msg.to_wire()) == msg


@given(messages)
def test_marshal_is_byte_identical_to_msgpack_of_the_wire_array(msg: Message) -> None:
    """The msgspec encoder writes exactly the bytes msgpack-python writes for to_wire()."""
    assert msg.marshal() == msgpack.packb(msg.to_wire(), use_bin_type=True)


@given(st.binary(max_size=512))
def test_unmarshal_of_arbitrary_bytes_only_raises_message_error(raw: bytes) -> None:
    """Arbitrary bytes either decode to a message or raise MessageError, never anything else."""
    try:
        msg = Message.unmarshal(raw)
    except MessageError:
        return
    assert Message.unmarshal(msg.marshal()) == msg


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | texts
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)


@given(st.lists(wire_values, min_size=7, max_size=7))
def test_from_wire_of_arbitrary_arrays_only_raises_message_error(obj: list[object]) -> None:
    """A 7-array with arbitrary fields either makes a message or raises MessageError."""
    try:
        msg = Message.unmarshal(msgpack.packb(obj, use_bin_type=True))
    except MessageError:
        return
    assert msg.to_wire()[:4] == obj[:4]


@given(
    texts.filter(lambda t: t.split() == [t] and t != "") | st.sampled_from(["a.b", "x"]),
    texts | st.binary(),
    texts,
    st.none() | st.dictionaries(texts, texts, max_size=3),
)
def test_whatever_new_accepts_can_travel(
    msg_type: str, data: str | bytes, parent_id: str, headers: dict[str, str] | None
) -> None:
    """Message.new either refuses its input with UsageError or makes a message that round-trips."""
    try:
        msg = Message.new(msg_type, data, parent_id=parent_id, headers=headers)
    except UsageError:
        return
    assert Message.unmarshal(msg.marshal()) == msg


def _careful(raw: bytes) -> Message | None:
    """The reference decoder: generic msgpack, then Message.from_wire; None where it refuses."""
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        return Message.from_wire(obj)
    except (ValueError, TypeError, msgpack.UnpackException, MessageError):
        return None


near_valid_wires = st.tuples(
    ids.filter(bool) | wire_values,
    ids | wire_values,
    ids | wire_values,
    types | wire_values,
    st.floats() | st.integers(-(2**63), 2**64 - 1) | wire_values,
    st.binary(max_size=64) | wire_values,
    st.none() | st.dictionaries(texts, texts, max_size=300) | wire_values,
).map(list)


@given(near_valid_wires | st.lists(wire_values, max_size=9))
def test_typed_and_careful_decoding_agree(obj: list[object]) -> None:
    """unmarshal (typed msgspec decoder first) accepts exactly what from_wire accepts, alike."""
    raw = msgpack.packb(obj, use_bin_type=True)
    expected = _careful(raw)
    if expected is None:
        with pytest.raises(MessageError):
            Message.unmarshal(raw)
    else:
        assert Message.unmarshal(raw).marshal() == expected.marshal()  # bytes: NaN-safe


def test_a_message_the_typed_decoder_refuses_may_still_be_valid() -> None:
    """More headers than a frame carries is still a message: unmarshal falls back and accepts it."""
    headers = {f"h{i}": "v" for i in range(300)}
    msg = Message.new("a.b", b"x", headers=headers)
    assert Message.unmarshal(msg.marshal()) == msg


def test_a_six_field_message_reads_as_no_headers_on_both_paths() -> None:
    """A wire array without its headers field decodes, typed or careful, as headers nil."""
    wire = ["ab" * 16, "", "", "a.b", 1.5, b"x"]
    raw = msgpack.packb(wire, use_bin_type=True)
    expected = Message("ab" * 16, "", "", "a.b", 1.5, b"x", None)
    assert _careful(raw) == expected
    assert Message.unmarshal(raw) == expected


@pytest.mark.parametrize("size", [5, 8])
def test_a_message_array_of_the_wrong_length_is_refused_on_both_paths(size: int) -> None:
    """Fewer than six or more than seven fields is no message, for either decoder."""
    wire = ["ab" * 16, "", "", "a.b", 1.5, b"x", None, "extra"][:size]
    raw = msgpack.packb(wire, use_bin_type=True)
    assert _careful(raw) is None
    with pytest.raises(MessageError, match="array of 7 fields"):
        Message.unmarshal(raw)
