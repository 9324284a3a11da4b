"""Subjects, escaping, headers and the interest table, without sockets or an event loop."""

from __future__ import annotations

import struct

import pytest

from gravpy.bridge.interest import InterestTable, reduce_patterns
from gravpy.bridge.subjects import (
    ORIGIN_HEADER,
    PLAIN_HEADER,
    Announcement,
    SubjectMap,
    escape_token,
    from_nats,
    to_headers,
    unescape_token,
)
from gravpy.errors import MessageError
from gravpy.message import Message


@pytest.mark.parametrize("token", ["temp", "a-b_c", "déjà", "50%", "x\x01y", "$sys", "a/b"])
def test_escaping_round_trips(token: str) -> None:
    """Every token escapes to one NATS token of printable ASCII and comes back unchanged."""
    escaped = escape_token(token)
    assert all(0x21 <= ord(c) < 0x7F and c not in ".*>" for c in escaped)
    assert unescape_token(escaped) == token


def test_plain_types_map_to_themselves() -> None:
    """An ordinary type keeps its spelling on NATS, under the prefix and the mesh."""
    subjects = SubjectMap("gravpy", "lan1")
    assert subjects.subject("sensor.temp") == "gravpy.lan1.sensor.temp"
    assert subjects.subscription("sensor.*") == "gravpy.*.sensor.*"
    assert subjects.subscription("sensor.>") == "gravpy.*.sensor.>"
    assert subjects.split("gravpy.lan1.sensor.temp") == ("lan1", "sensor.temp")


def test_any_mesh_and_odd_mesh_names_are_one_token() -> None:
    """A '*' mesh maps to a default name; a dotted mesh name stays one token."""
    assert SubjectMap("gravpy", "*").subject("a") == "gravpy._any.a"
    subjects = SubjectMap("p", "site.1")
    assert subjects.subject("a.b") == "p.site%2E1.a.b"
    assert subjects.split("p.site%2E1.a.b") == ("site%2E1", "a.b")


def test_bad_subjects_are_refused() -> None:
    """A subject outside the prefix or without a type raises MessageError."""
    subjects = SubjectMap("gravpy", "m")
    for subject in ("other.m.a", "gravpy.m", "gravpy.m.a..b"):
        with pytest.raises(MessageError):
            subjects.split(subject)


def test_headers_round_trip() -> None:
    """uuid, parent, reply_to, timestamp and the message's own headers survive NATS headers."""
    msg = Message.new("a.b", b"\x00data", headers={"k:ey": "v\r\nal%", "plain": "x"})
    msg.reply_to = "r-1"
    headers = to_headers(msg)
    assert all(0x20 <= ord(c) < 0x7F for kv in headers.items() for s in kv for c in s)
    back, groups = from_nats("a.b", msg.data, headers, "m1")
    assert (back.uuid, back.reply_to, back.timestamp) == (msg.uuid, "r-1", msg.timestamp)
    assert back.headers == {"k:ey": "v\r\nal%", "plain": "x", ORIGIN_HEADER: "m1"}
    assert groups == ()  # a gravpy message that placed no group here


def test_gravpy_fields_travel_in_one_header() -> None:
    """A message without headers of its own travels with exactly one NATS header, Grav-Meta,
    which carries parent, reply_to and (for replies) the type when they are set."""
    msg = Message.new("a.b", b"x", parent_id="p-1")
    msg.reply_to = "r-1"
    headers = to_headers(msg, with_type=True)
    assert list(headers) == ["Grav-Meta"]
    back, _ = from_nats(None, msg.data, headers, "reply")
    assert (back.uuid, back.parent_id, back.reply_to, back.type) == (msg.uuid, "p-1", "r-1", "a.b")
    assert back.timestamp == msg.timestamp
    assert list(to_headers(Message.new("a.b"))) == ["Grav-Meta"]


@pytest.mark.parametrize(
    "stamp", [1796116887.9218066, 0.1 + 0.2, 5e-324, -1.0, 1.7976931348623157e308, 1e16]
)
def test_the_time_travels_exactly_as_16_hex_digits(stamp: float) -> None:
    """Grav-Meta carries the timestamp as the float's bytes (big-endian, 16 hex digits): every
    float comes back equal, through both readers (the usual message's and the full one)."""
    msg = Message("u-1", "", "", "a.b", stamp, b"", None)
    meta = to_headers(msg)["Grav-Meta"]
    assert meta.split(" ")[1] == struct.pack(">d", stamp).hex()
    assert from_nats("a.b", b"", {"Grav-Meta": meta}, "m1")[0].timestamp == stamp
    full = {"Grav-Meta": meta + " p=parent"}  # (a field: read by ``read_meta``)
    assert from_nats("a.b", b"", full, "m1")[0].timestamp == stamp


@pytest.mark.parametrize("text", ["1796116887.9218066", "1796116887.92180", "17", "1e9", "0"])
def test_a_decimal_time_is_read_too(text: str) -> None:
    """A plain publisher writes Grav-Meta's time as a decimal number of seconds; a decimal of
    16 characters is not taken for the hex form."""
    for meta in (f"u-1 {text}", f"u-1 {text} p=parent"):
        assert from_nats("a.b", b"", {"Grav-Meta": meta}, "m1")[0].timestamp == float(text)


@pytest.mark.parametrize(
    "meta",
    [
        "",
        "only-uuid",
        "u not-a-time",
        "u 3ff000000000000g",
        "u 3ff00000000000",
        "x" * 65 + " 1.0",
        "u 1 p=" + "y" * 65,
    ],
)
def test_a_malformed_meta_header_is_refused(meta: str) -> None:
    """A Grav-Meta value that is not '<uuid> <time> [k=v]...' with ids of at most 64 characters
    raises MessageError (counted as bad_message by the bridge) instead of passing through."""
    with pytest.raises(MessageError):
        from_nats("a.b", b"", {"Grav-Meta": meta}, "m1")


def test_group_placements_name_their_mesh() -> None:
    """The groups an exporter placed travel in Grav-Meta; each mesh reads only its own, with
    mesh and group names that hold the field's separators intact."""
    msg = Message.new("job.x")
    placed = (("east", "workers"), ("we:st,1", "odd=g,r:p"), ("east", "other.g"))
    headers = to_headers(msg, placed=placed)
    assert list(headers) == ["Grav-Meta"]
    assert from_nats("job.x", b"", headers, "o", here="east")[1] == ("workers", "other.g")
    assert from_nats("job.x", b"", headers, "o", here="we:st,1")[1] == ("odd=g,r:p",)
    assert from_nats("job.x", b"", headers, "o", here="north")[1] == ()


def test_a_plain_nats_message_gets_a_fresh_uuid() -> None:
    """A NATS message without gravpy headers becomes a new Message with its payload untouched,
    marked as a plain publisher's."""
    msg, groups = from_nats("sensor.temp", b"21.5", None, "outside")
    assert groups is None  # a plain publisher placed nothing: every group takes one
    assert msg.uuid
    assert msg.data == b"21.5"
    assert msg.headers == {ORIGIN_HEADER: "outside", PLAIN_HEADER: "1"}


def test_patterns_reduce_to_those_not_covered() -> None:
    """Patterns covered by a wider one are dropped; '>' covers everything."""
    assert reduce_patterns({"a.b", "a.*", "a.>", "c.d"}) == ("a.>", "c.d")
    assert reduce_patterns({"a.*", "a.b.c"}) == ("a.*", "a.b.c")
    assert reduce_patterns({"x", ">"}) == (">",)


def test_interest_table_elects_the_smallest_ready_bridge() -> None:
    """Of a mesh's ready bridges the smallest uuid exports; remote wants exclude the own mesh."""
    table = InterestTable("m1", "node-b", ttl=3.0)
    assert table.exporter(True) == "node-b"
    assert table.heard(Announcement("m1", "node-a", ("own.*",), ready=False), 0.0)
    assert table.exporter(True) == "node-b"  # node-a is not ready yet
    table.heard(Announcement("m1", "node-a", ("own.*",), ready=True), 0.5)
    assert table.exporter(True) == "node-a"
    table.heard(Announcement("m2", "node-z", ("x.>",), ready=True), 0.5)
    assert table.remote_patterns() == ("x.>",)
    assert table.own_bridges() == frozenset({"node-a"})
    assert table.expired == 0
    assert table.expire(10.0)
    assert table.expired == 2  # node-a and node-z fell silent: counted
    assert table.exporter(True) == "node-b"
    assert table.remote_patterns() == ()


def test_announcements_round_trip_and_garbage_is_refused() -> None:
    """An announcement decodes to itself; anything else raises MessageError."""
    ann = Announcement("m", "n", ("a.*",), ready=True, query=True, sent=1_700_000_000.25)
    assert Announcement.decode(ann.encode()) == ann
    with pytest.raises(MessageError):
        Announcement.decode(b"{}")


def test_an_announcement_says_how_late_it_arrived() -> None:
    """``lag`` is how long ago it was sent by the wall clock, so a standby settles only what
    the active bridge delivered before it *sent* the announcement; an older bridge's
    announcement (no ``sent``) and a sender whose clock is ahead give 0."""
    ann = Announcement("m", "n", (), ready=True, sent=1000.0)
    assert ann.lag(1001.5) == 1.5
    assert ann.lag(999.0) == 0.0  # its clock is ahead of ours
    older = Announcement.decode(b'{"mesh":"m","node":"n","patterns":[],"ready":true}')
    assert (older.sent, older.lag(1001.5)) == (0.0, 0.0)
