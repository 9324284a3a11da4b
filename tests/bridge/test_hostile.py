"""What anyone who may publish under the prefix can send a bridge: it is checked, never trusted.

Announcements, headers and numbers from NATS come from whoever can publish there; each test
sends one kind of hostile input, through a real nats-server where the harm was on the wire."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravpy import Message
from gravpy.bridge.export import ADVERTISED_LIMIT, ExportRoutes
from gravpy.bridge.interest import InterestTable, reduce_patterns
from gravpy.bridge.outbox import Outbox
from gravpy.bridge.sequence import Gaps, number_of, sequence_of
from gravpy.bridge.subjects import MAX_ANNOUNCED, Announcement, SubjectMap
from gravpy.errors import MessageError
from gravpy.proto import is_valid_pattern
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_embedded import node
from tests.bridge.test_sequence import subscribed

pytestmark = pytest.mark.timeout(60)

INTEREST = SubjectMap("gravpy", "east").interest_subject


def announcement(mesh: str, node: str, patterns: list[str], **more: object) -> bytes:
    """An announcement as a plain NATS client could write it."""
    return json.dumps({"mesh": mesh, "node": node, "patterns": patterns, "ready": True, **more})


# -- A: patterns and groups in announcements --------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"patterns": ["a..b"]},
        {"patterns": [""]},
        {"patterns": ["x y"]},
        {"patterns": ["a.>.b"]},
        {"patterns": ["\ud800"]},  # (JSON may carry a lone surrogate: not valid Unicode)
        {"patterns": [7]},
        {"patterns": ["ok"], "groups": [["", "ok", 1]]},
        {"patterns": ["ok"], "groups": [["g*", "ok", 1]]},
        {"patterns": ["ok"], "groups": [["g", "a..b", 1]]},
        {"patterns": ["ok"], "groups": [["g", "ok", 0]]},
        {"patterns": ["ok"], "groups": [["g", "ok", True]]},
        {"patterns": ["ok"], "node": ""},
        {"patterns": ["ok"], "mesh": ["m"]},
        {"patterns": ["ok"], "sent": float("nan")},
    ],
)
def test_an_announcement_with_an_invalid_pattern_or_group_is_refused(
    body: dict[str, object],
) -> None:
    """A pattern or group the mesh protocol would refuse makes the whole announcement invalid
    (MessageError, counted bad_announcement by the bridge), so none of it is acted on."""
    raw = json.dumps({"mesh": "m", "node": "n", "ready": True, **body}).encode()
    with pytest.raises(MessageError):
        Announcement.decode(raw)


def test_an_announcement_nested_deeper_than_json_reads_is_refused() -> None:
    """JSON nested past Python's recursion limit is refused like any other non-announcement."""
    with pytest.raises(MessageError):
        Announcement.decode(b"[" * 100_000)


def test_a_valid_announcement_still_decodes() -> None:
    """What a bridge announces decodes to the same announcement."""
    ann = Announcement("m", "n", ("a.*", "b.>", ">"), True, groups=(("g.x", "a.*", 2),), sent=1.5)
    assert Announcement.decode(ann.encode()) == ann


def test_export_routes_never_advertise_an_invalid_pattern() -> None:
    """Whatever it is given, an exporter advertises to its mesh only valid patterns (an invalid
    one would make the node's every INTERESTS frame fail)."""
    routes = ExportRoutes(SubjectMap("gravpy", "east"), ("x.export",))
    advertised = routes.remote_changed(("", "a..b", "ok.x"), {("g", ""): {"west": 1}})
    assert advertised == ("ok.x", "x.export")


async def test_invalid_announcements_are_counted_and_leave_the_bridge_working(
    nats_one: NatsServer,
) -> None:
    """An announcement of this mesh with the pattern 'a..b' (which the bridge would subscribe
    to: the server would close its connection, again and again) and one of another mesh with
    the pattern '' (which the node would advertise: every INTERESTS frame would fail) are both
    refused and counted; the bridge stays on its first connection and hears valid ones."""
    g, bridge = node("east", nats_one.url)
    async with g:
        async with asyncio.timeout(10):
            await until(lambda: bridge.statistics().state == "connected")
        nc = await nats.connect(nats_one.url)
        try:
            await nc.publish(INTEREST, announcement("east", "zz-own", ["a..b"]).encode())
            await nc.publish(INTEREST, announcement("evil", "zz-evil", ["", "ok.*"]).encode())
            await nc.publish(INTEREST, announcement("west", "zz-west", ["fine.*"]).encode())
            await nc.flush()
            async with asyncio.timeout(10):
                await until(lambda: "fine.*" in bridge.statistics().remote_wants)
            stats = bridge.statistics()
            assert stats.lost.get("bad_announcement") == 2
            assert stats.remote_wants == ("fine.*",)
            assert stats.remote_meshes == ("west",)
            assert all(is_valid_pattern(p) for p in bridge.advertised())
            assert "fine.*" in bridge.advertised()
            await until(lambda: bridge.statistics().ready)  # (a few announcement intervals)
            stats = bridge.statistics()
            assert (stats.state, stats.connects, stats.errors) == ("connected", 1, 0)
        finally:
            await nc.close()


# -- B: the cost of announcements -------------------------------------------------------------


@pytest.mark.parametrize("field", ["patterns", "groups"])
def test_an_announcement_over_max_interests_is_refused(field: str) -> None:
    """An announcement may carry as many patterns, and group entries, as one INTERESTS frame
    (the mesh protocol's max_interests); one more and it is refused."""
    for n, ok in ((MAX_ANNOUNCED, True), (MAX_ANNOUNCED + 1, False)):
        entries: list[object] = [f"svc.p{i}" for i in range(n)]
        if field == "groups":
            entries = [["g", pattern, 1] for pattern in entries]
        body = {"mesh": "m", "node": "n", "ready": True, "patterns": [], field: entries}
        raw = json.dumps(body).encode()
        if ok:
            assert len(getattr(Announcement.decode(raw), field)) == n
        else:
            with pytest.raises(MessageError):
                Announcement.decode(raw)


def test_an_unchanged_announcement_changes_nothing_but_its_time() -> None:
    """A bridge that announces what it announced before (every interval) changes no view and
    is kept alive by it; a changed one changes the view."""
    table = InterestTable("east", "me", ttl=3.5)
    first = Announcement("west", "w", ("a.*", "b.c"), True, sent=1.0)
    assert table.heard(first, now=0.0)
    again = Announcement("west", "w", ("a.*", "b.c"), True, query=True, sent=3.0)
    assert not table.heard(again, now=3.0)
    assert not table.expire(now=5.0)  # (silent since 3.0, not since 0.0)
    assert table.remote_patterns() == ("a.*", "b.c")
    assert table.heard(Announcement("west", "w", ("a.*",), True), now=4.0)
    assert table.remote_patterns() == ("a.*",)
    assert table.expire(now=8.0)
    assert table.remote_patterns() == ()


def test_many_meshes_of_many_patterns_are_worked_out_within_the_hang_guard() -> None:
    """Four meshes announcing 4,096 patterns each (the most one may), each announcing twice,
    are worked out, and what to export follows from them (comparing every pattern with every
    other one took minutes per announcement here)."""
    table = InterestTable("east", "me", ttl=3.5)
    routes = ExportRoutes(SubjectMap("gravpy", "east"), ())
    for mesh in range(4):
        patterns = tuple(f"gravd.events.{mesh}-{i:08d}.*" for i in range(MAX_ANNOUNCED - 1))
        patterns += (f"site{mesh}.>",)
        for now in (0.0, 1.0):
            ann = Announcement.decode(Announcement(f"m{mesh}", f"n{mesh}", patterns, True).encode())
            if table.heard(ann, now):
                routes.remote_changed(table.remote_patterns(), table.remote_groups())
    assert len(table.remote_patterns()) == 4 * MAX_ANNOUNCED
    assert routes.route("gravd.events.3-00000009.started") is not None
    assert routes.route("site3.x.y") is not None
    assert routes.route("gravd.events.4-00000009.started") is None


def test_what_remote_meshes_want_is_advertised_within_the_mesh_protocols_limit() -> None:
    """Meshes that together want more patterns than a bridge may advertise (half of what an
    INTERESTS frame may carry: the rest is its node's own) are advertised as fewer, wider
    patterns that cover them all, ``>`` at the last; only what they want is exported."""
    routes = ExportRoutes(SubjectMap("gravpy", "east"), ())
    wanted = (*(f"gravd.events.m{i}.*" for i in range(ADVERTISED_LIMIT)), "solo", "x.y")
    advertised = routes.remote_changed(wanted, {("g", "grouped.p"): {"west": 1}})
    assert advertised == ("gravd.>", "grouped.>", "solo", "x.>")
    assert routes.route("gravd.events.m7.started") is not None
    assert routes.route("gravd.events.other.started") is None
    within = wanted[:ADVERTISED_LIMIT]
    assert routes.remote_changed(within, {}) == tuple(sorted(within))
    many = tuple(f"t{i}.p" for i in range(ADVERTISED_LIMIT + 1))
    assert routes.remote_changed(many, {}) == (">",)
    assert routes.route("t5.p") is not None
    assert routes.route("t5.q") is None


def _covers(wide: str, narrow: str) -> bool:
    """The definition: every type ``narrow`` matches, ``wide`` matches too."""
    w, n = wide.split("."), narrow.split(".")
    if w[-1] == ">":  # (n ends in '>' or not: it has at least as many tokens)
        return len(n) >= len(w) and all(a in ("*", b) for a, b in zip(w[:-1], n, strict=False))
    if n[-1] == ">":
        return False
    return len(w) == len(n) and all(a in ("*", b) for a, b in zip(w, n, strict=True))


_PATTERN = st.builds(
    lambda tokens, tail: ".".join(tokens + ([">"] if tail else [])),
    st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4),
    st.booleans(),
)


@given(st.sets(_PATTERN | st.just(">"), max_size=12))
def test_reduced_patterns_are_those_no_other_covers(patterns: set[str]) -> None:
    """reduce_patterns keeps exactly the patterns no other one of them covers, sorted."""
    if ">" in patterns:
        assert reduce_patterns(patterns) == (">",)
        return
    kept = sorted(p for p in patterns if not any(q != p and _covers(q, p) for q in patterns))
    assert reduce_patterns(patterns) == tuple(kept)


# -- C: what the bridge writes on the wire -----------------------------------------------------


async def test_a_type_too_long_for_a_nats_command_line_is_refused_and_the_rest_crosses(
    nats_one: NatsServer,
) -> None:
    """A valid type of 255 characters that escapes to a command line over nats-server's limit
    (4,096 bytes) is not sent, and counted subject_too_long: the server would close the
    connection and what was in flight with it would be lost, uncounted. What comes before and
    after it crosses, on the first connection."""
    g1, b1 = node("east", nats_one.url)
    g2, _ = node("west", nats_one.url)
    async with g1, g2:
        got: asyncio.Queue[Message] = asyncio.Queue()
        g2.connect().on_type("x.>", got.put_nowait)
        east = g1.connect()
        async with asyncio.timeout(10):
            await until(lambda: b1.statistics().exporter and "x.>" in b1.statistics().remote_wants)
        long_type = "x." + "\U0001f600" * 253  # (each character 12 on NATS: %F0%9F%98%80)
        for i in range(5):
            east.send(Message.new("x.y", str(i)))
        east.send(Message.new(long_type, "long"))
        for i in range(5, 10):
            east.send(Message.new("x.y", str(i)))
        texts = [(await asyncio.wait_for(got.get(), 10)).text() for _ in range(10)]
        assert texts == [str(i) for i in range(10)]
        stats = b1.statistics()
        assert stats.lost == {"subject_too_long": 1}
        assert (stats.connects, stats.errors, stats.state) == (1, 0, "connected")


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("gravpy.east.a", "_INBOX.x\r\nPUB evil 4"),
        ("gravpy.east.a", "_INBOX.x y"),
        ("gravpy.east.a", "_INBOX.x\ty"),
        ("gravpy.east.a\x00", ""),
        ("gravpy.east.a\u2028b", ""),
        ("", ""),
    ],
)
def test_a_subject_or_reply_subject_with_whitespace_or_a_control_character_is_refused(
    subject: str, reply: str
) -> None:
    """Whatever built it, a subject or reply subject that would not be one field of the NATS
    command (or would end it, and start another) never reaches the wire: refused, counted."""
    outbox = Outbox(limit=10, high_water=5)
    assert not outbox.put((subject, reply, b"x", "uuid 0", ""))
    assert (len(outbox), outbox.lost) == (0, {"bad_subject": 1})
    assert outbox.put(("gravpy.east.a", "_INBOX.x.y", b"x", "uuid 0", ""))


# -- D: headers and numbers from NATS --------------------------------------------------------


@pytest.mark.parametrize("text", ["-7", "+5", "0", "5_0", " 5", "\u0663", "", str(2**63), "9" * 40])
def test_a_sequence_number_that_is_not_one_is_no_number(text: str) -> None:
    """A number is decimal digits from 1 to 2**63 - 1; anything else is read as no number, and
    an importer given one counts no gap and forgets nothing."""
    assert number_of(text) is None
    assert sequence_of(f"uuid 0 s=t:{text}") is None
    gaps = Gaps()
    assert gaps.seen("t", "a", 5) == 4
    assert gaps.seen("t", "a", -7) == 0
    assert gaps.seen("t", "a", 2**63) == 0
    assert gaps.seen("t", "a", 6) == 0


def test_the_largest_sequence_number_is_one() -> None:
    """1 and 2**63 - 1 are numbers."""
    assert sequence_of("uuid 0 s=t:1") == ("t", 1)
    assert sequence_of(f"uuid 0 s=t:{2**63 - 1}") == ("t", 2**63 - 1)


async def test_forged_numbers_times_and_headers_from_nats_are_not_believed(
    nats_one: NatsServer,
) -> None:
    """From a plain NATS publisher: a negative or malformed sequence number is no number (the
    message crosses, no gap is counted: -7 used to take 8 off the count); a time that is NaN
    or infinite, or a negative decimal, or an empty header key, makes the message malformed
    (bad_message; a gravpy exporter's exact time, in hex, may be any finite float);
    a header posing as the bridge's own origin does not replace it."""
    g, bridge = node("west", nats_one.url)
    async with g:
        got: asyncio.Queue[Message] = asyncio.Queue()
        g.connect().on_type("stream.n", got.put_nowait)
        async with asyncio.timeout(10):
            while True:
                if await subscribed(nats_one, "gravpy.*.stream.n"):
                    break
                await asyncio.sleep(0.02)  # the server has no event to wait on: re-ask
        cases: list[tuple[str, dict[str, str]]] = [
            ("a1", {"Grav-Meta": "a1 0 s=t:-7"}),
            ("a2", {"Grav-Meta": "a2 0 s=t:+5"}),
            ("nan", {"Grav-Meta": "a3 nan"}),
            ("inf", {"Grav-Meta": "a4 1e400"}),
            ("negative", {"Grav-Meta": "a5 -5"}),
            ("hex nan", {"Grav-Meta": "a6 7ff8000000000000"}),
            ("empty key", {"Grav-Meta": "a7 0", "Grav-H-": "v"}),
            ("a8", {"Grav-Meta": "a8 0", "Grav-H-grav-bridge-origin": "west"}),
            ("a9", {"Grav-Meta": "a9 0", "Grav-H-grav-bridge-plain": "1", "Grav-H-k": "v"}),
            ("hex inf", {"Grav-Meta": "a11 fff0000000000000"}),
            ("a10", {"Grav-Meta": "a10 bff0000000000000 s=t:2"}),
        ]
        nc = await nats.connect(nats_one.url)
        try:
            for name, headers in cases:
                await nc.publish("gravpy.east.stream.n", name.encode(), headers=headers)
            await nc.flush()
        finally:
            await nc.close()
        received = [await asyncio.wait_for(got.get(), 10) for _ in range(5)]
        assert [m.uuid for m in received] == ["a1", "a2", "a8", "a9", "a10"]
        assert [m.timestamp for m in received] == [0.0, 0.0, 0.0, 0.0, -1.0]
        assert received[2].headers == {"grav-bridge-origin": "east"}
        assert received[3].headers == {"grav-bridge-origin": "east", "k": "v"}
        assert bridge.statistics().lost == {"bad_message": 6, "gap": 1}
