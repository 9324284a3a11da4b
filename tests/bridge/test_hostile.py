"""What anyone who may publish under the prefix can send a bridge: it is checked, never trusted.

Announcements, headers and numbers from NATS come from whoever can publish there; each test
sends one kind of hostile input, through a real nats-server where the harm was on the wire."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from gravpy.bridge.export import ExportRoutes
from gravpy.bridge.subjects import Announcement, SubjectMap
from gravpy.errors import MessageError
from gravpy.proto import is_valid_pattern
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_embedded import node

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
