"""Tests for gravd's dashboard, in process: its routes over real HTTP on 127.0.0.1, its parts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gravpy import Grav, Message
from gravpy.daemon.config import Address, ConfigError, DaemonConfig, load_config
from gravpy.daemon.dashboard import install_dashboard
from gravpy.daemon.dashboard.access import COOKIE
from gravpy.daemon.dashboard.mesh import MeshSurvey, _node_json, link_state
from gravpy.daemon.dashboard.tail import QUEUE_LIMIT, Tail
from gravpy.daemon.dashboard.traffic import TrafficHistory, read_counters
from gravpy.daemon.events_node import DaemonEvents
from gravpy.daemon.monitor import Monitor, NodeStatus
from gravpy.errors import UsageError
from gravpy.filter import Pattern
from gravpy.testing import wait_idle
from tests.daemon.monitor_kit import serving

TOKEN = "s3cret-token-for-the-dashboard"


@pytest.fixture
async def grav() -> AsyncIterator[Grav]:
    async with Grav() as g:
        yield g


@pytest.fixture
async def monitor(grav: Grav) -> AsyncIterator[str]:
    """A monitor with the dashboard on 127.0.0.1; its base URL."""
    monitor = Monitor(NodeStatus(grav, DaemonConfig()), Address("127.0.0.1", 0))
    address = await monitor.start()
    try:
        yield f"http://{address}"
    finally:
        await monitor.stop()


async def _get(url: str, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:
        return response.status, await response.text()


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """The server-sent events of ``response`` as (event, data)."""
    kind = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


async def test_page_and_assets_are_served_from_the_package(monitor: str) -> None:
    """/ serves the page and /dashboard/<asset> its script and styles; other names are 404."""
    status, page = await _get(monitor + "/")
    assert status == 200
    assert "/dashboard/dashboard.js" in page
    assert (await _get(monitor + "/dashboard/dashboard.js"))[0] == 200
    assert (await _get(monitor + "/dashboard/dashboard.css"))[0] == 200
    assert (await _get(monitor + "/dashboard/secrets.txt"))[0] == 404
    for asset in ("/", "/dashboard/dashboard.js", "/dashboard/dashboard.css"):
        text = (await _get(monitor + asset))[1]
        assert "https://" not in text  # no CDN: nothing is fetched from elsewhere
        assert 'src="http' not in text
        assert 'href="http' not in text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/tail?pattern=a..b",
        "/v1/tail?pattern=",
        "/v1/tail?pattern=x&pattern=y",
        "/v1/traffic?last=-1",
        "/v1/traffic?last=301",
        "/v1/traffic?since=1",
        "/v1/mesh?x=1",
        "/v1/dashboard?x=1",
    ],
)
async def test_bad_input_answers_400_with_the_reason(monitor: str, path: str) -> None:
    """A bad or unknown query parameter answers 400 with a JSON error, and the node keeps serving."""
    status, body = await _get(monitor + path)
    assert status == 400
    assert json.loads(body)["error"]
    assert (await _get(monitor + "/healthz"))[0] == 200


async def test_mesh_of_a_single_node_is_itself(monitor: str, grav: Grav) -> None:
    """/v1/mesh of a node without peers lists that node, serving, with no links."""
    status, body = await _get(monitor + "/v1/mesh")
    doc = json.loads(body)
    assert status == 200
    assert doc["self"] == grav.node_uuid
    assert [(n["uuid"], n["state"]) for n in doc["nodes"]] == [(grav.node_uuid, "serving")]
    assert doc["links"] == []


async def test_concurrent_mesh_requests_share_one_survey(grav: Grav) -> None:
    """Many callers at once get one survey's result: one request goes out, not one per caller."""
    status = NodeStatus(grav, DaemonConfig())
    survey = MeshSurvey(grav, status.snapshot)
    try:
        docs = await asyncio.gather(*(survey.mesh() for _ in range(10)))
    finally:
        survey.close()
    assert survey.surveys == 1
    assert all(d is docs[0] for d in docs)


def test_link_states_map_to_the_four_the_page_colours() -> None:
    """Handshake states are linking, a withdrawn open link withdrawing, closed is dead."""
    assert link_state({"state": "await_hello"}) == "linking"
    assert link_state({"state": "open", "withdrawn": False}) == "open"
    assert link_state({"state": "open", "withdrawn": True}) == "withdrawing"
    assert link_state({"state": "closed"}) == "dead"


def test_traffic_keeps_rates_in_a_bounded_ring() -> None:
    """Samples are per-second differences, a counter reset counts 0, and the ring keeps 3."""
    counters: dict[str, Any] = {
        "in": 0,
        "out": 0,
        "dropped": {"x": 0},
        "links": {"p": {"in": 0, "out": 0, "dropped": 0}},
    }
    history = TrafficHistory(lambda: json.loads(json.dumps(counters)), capacity=3)
    assert history.sample() is None  # the first reading has nothing to compare with
    for step in range(1, 6):
        counters["in"] = 100 * step
        counters["links"]["p"]["in"] = 0 if step == 5 else 10 * step  # the link reconnected at 5
        sample = history.sample()
        assert sample is not None
        assert sample.rate_in > 0
    assert len(history.samples) == 3
    assert history.samples[-1].links["p"][0] == 0
    assert history.to_json()["dropped_by_reason"] == {"x": 0}


def test_traffic_counts_what_bridges_lost_as_drops() -> None:
    """A NATS bridge's losses are drops too (by reason, ``bridge_<reason>``, summed over the
    node's bridges), so the page's drop rate and table do not leave them out."""
    node: dict[str, Any] = {
        "messages": {"in": 5, "out": 3, "dropped": {"overflow": 2}},
        "peers": [],
        "leaves": [],
        "bridges": [{"lost": {"disconnected": 4, "queue_full": 1}}, {"lost": {"disconnected": 6}}],
    }
    counters = read_counters(node)
    assert counters["dropped"] == {"overflow": 2, "bridge_disconnected": 10, "bridge_queue_full": 1}
    history = TrafficHistory(lambda: read_counters(node))
    history.sample()
    node["bridges"][0]["lost"]["disconnected"] = 24  # 20 more lost
    sample = history.sample()
    assert sample is not None
    assert sample.rate_dropped > 0
    assert history.drops_by_reason()["bridge_disconnected"] == 30


async def test_tail_streams_matching_messages_only(monitor: str, grav: Grav) -> None:
    """A tail on sensor.> receives sensor messages as rows with a preview, and not other types."""
    sender = grav.connect()
    async with (
        aiohttp.ClientSession() as session,
        session.get(monitor + "/v1/tail", params={"pattern": "sensor.>"}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        events = _events(response)
        assert (await anext(events))[0] == "stats"  # the stream is open: the pod is receiving
        sender.send(Message.new("other.thing", "no"))
        sender.send(Message.new("sensor.hall.temp", '{"c": 21}'))
        async with asyncio.timeout(5):
            _, rows = await anext(e async for e in events if e[0] == "rows")
    assert [r["type"] for r in rows] == ["sensor.hall.temp"]
    assert rows[0]["json"] == {"c": 21}
    assert rows[0]["text"] == '{"c": 21}'
    assert rows[0]["size"] == 9


async def test_slow_viewer_is_dropped_and_counted(grav: Grav) -> None:
    """A viewer whose queue fills (its browser does not read) is dropped, counted, and ends."""
    tail = Tail(grav, rate=1e9)
    viewer = tail.open(Pattern(">"))
    assert viewer is not None
    sender = grav.connect()
    for i in range(QUEUE_LIMIT + 10):
        sender.send(Message.new("load.x", str(i)))
    async with asyncio.timeout(5):
        await viewer.pod.wait_closed()  # the viewer's queue overflowed: its pod left the bus
    assert viewer.overflowed
    assert await viewer.next_rows() == []  # dropped: nothing more for this viewer
    assert tail.viewers_dropped == 1
    tail.close()


async def test_tail_rate_limit_skips_and_counts(grav: Grav) -> None:
    """Past the per-viewer rate the tail skips messages and counts them."""
    tail = Tail(grav, rate=5)
    viewer = tail.open(Pattern("x.>"))
    assert viewer is not None
    sender = grav.connect()
    for i in range(50):
        sender.send(Message.new("x.y", str(i)))
    await wait_idle(grav)
    rows = await viewer.next_rows()
    assert len(rows) == viewer.shown
    assert viewer.shown + viewer.skipped == 50
    assert 1 <= len(rows) <= 10  # one row per 50 ms slice: a slow loop may see a refill or two
    assert viewer.skipped >= 40
    tail.close()


async def test_stopping_the_monitor_ends_open_tails(grav: Grav) -> None:
    """Stopping the monitor ends a tail stream with an end event instead of hanging on it."""
    monitor = Monitor(NodeStatus(grav, DaemonConfig()), Address("127.0.0.1", 0))
    address = await monitor.start()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{address}/v1/tail") as response,
    ):
        events = _events(response)
        assert (await anext(events))[0] == "stats"
        stopping = asyncio.create_task(monitor.stop())
        kinds = [kind async for kind, _ in events]
        await stopping
    assert kinds[-1] == "end"


async def test_tail_can_be_turned_off(grav: Grav) -> None:
    """With dashboard_tail off, /v1/tail answers 403 and says so; the rest of the page works."""
    monitor = Monitor(NodeStatus(grav, DaemonConfig(dashboard_tail=False)), Address("127.0.0.1", 0))
    address = await monitor.start()
    try:
        status, body = await _get(f"http://{address}/v1/tail?pattern=a.b")
        assert status == 403
        assert "off" in json.loads(body)["error"]
        assert (await _get(f"http://{address}/v1/mesh"))[0] == 200
    finally:
        await monitor.stop()


async def test_dashboard_off_removes_the_page_and_keeps_the_monitor_and_events(
    grav: Grav,
) -> None:
    """With dashboard off the page and every route of its own answer 404, while the monitor's
    /healthz, /readyz, /v1/node and /metrics and the events component's /v1/events still
    answer (probes and scripts do not depend on the page)."""
    config = DaemonConfig(dashboard=False)
    status = NodeStatus(grav, config)
    status.events = await DaemonEvents.open(grav, config, in_memory=True)
    status.ready = True
    monitor = Monitor(status, Address("127.0.0.1", 0))
    address = await monitor.start()
    try:
        for path in ("/", "/dashboard/dashboard.js", "/v1/mesh", "/v1/traffic", "/v1/tail"):
            assert (await _get(f"http://{address}{path}"))[0] == 404, path
        assert (await _get(f"http://{address}/v1/dashboard"))[0] == 404
        for path in ("/healthz", "/readyz", "/v1/node", "/metrics", "/v1/events"):
            assert (await _get(f"http://{address}{path}"))[0] == 200, path
    finally:
        await monitor.stop()
        await status.events.close()


async def test_beyond_loopback_without_a_token_the_dashboard_refuses(grav: Grav) -> None:
    """A monitor said to listen on a LAN address, with no token file, refuses the page with 403."""
    app = web.Application()
    install_dashboard(app, NodeStatus(grav, DaemonConfig()), Address("192.0.2.10", 8222))
    async with serving(app) as base:
        status, body = await _get(base + "/")
        assert status == 403
        assert "--dashboard-token-file" in json.loads(body)["error"]
        assert (await _get(base + "/v1/tail"))[0] == 403


async def test_token_is_asked_then_kept_in_a_cookie(grav: Grav, tmp_path: Path) -> None:
    """With a token file the page asks for it; /?token= sets a cookie, and Bearer works too."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = DaemonConfig(dashboard_token_file=token_file)
    app = web.Application()
    install_dashboard(app, NodeStatus(grav, config), Address("192.0.2.10", 8222))
    async with serving(app) as base:
        assert (await _get(base + "/v1/mesh"))[0] == 401
        assert (await _get(base + "/?token=wrong"))[0] == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert (await _get(base + "/v1/mesh", headers=headers))[0] == 200
        jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP-address host, as browsers do
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(base + f"/?token={TOKEN}") as response:
                assert response.status == 200  # redirected to / with the cookie
                assert str(response.url) == base + "/"
            assert session.cookie_jar.filter_cookies(URL(base))[COOKIE].value == TOKEN
            async with session.get(base + "/v1/dashboard") as response:
                assert response.status == 200


def test_dashboard_settings_come_from_flags_env_and_toml(tmp_path: Path) -> None:
    """dashboard and dashboard_tail read on/off from every source; other words are refused."""
    toml, token = tmp_path / "gravd.toml", tmp_path / "t"
    token.write_text(TOKEN)  # the loader reads it: a token file that is not one is refused
    toml.write_text(f'dashboard_tail = "off"\ndashboard_token_file = "{token}"\n')
    config = load_config({"config": str(toml)}, {"GRAVD_DASHBOARD": "on"})
    assert (config.dashboard, config.dashboard_tail) == (True, False)
    assert config.dashboard_token_file == token
    assert load_config({"dashboard": "off"}, {"GRAVD_DASHBOARD": "on"}).dashboard is False
    with pytest.raises(ConfigError, match="GRAVD_DASHBOARD_TAIL"):
        load_config({}, {"GRAVD_DASHBOARD_TAIL": "maybe"})


async def _surveyed(grav: Grav) -> tuple[dict[str, Any], MeshSurvey]:
    """One survey of ``grav``'s mesh (a 0.2 s window): its document, and the survey."""
    survey = MeshSurvey(grav, NodeStatus(grav, DaemonConfig()).snapshot, window=0.2)
    try:
        return await survey.mesh(), survey
    finally:
        survey.close()


async def test_survey_skips_malformed_answers_and_keeps_good_ones(grav: Grav) -> None:
    """A gravd.info answer that is not a node document is counted and left out; others are kept."""
    responder = grav.connect()
    other = {"uuid": "other-node", "peers": [], "leaves": [], "pods": {"count": 1}}

    def answer(request: Message) -> None:
        for data in ("not json", json.dumps({"uuid": 5}), json.dumps({**other, "peers": 3})):
            responder.reply_to(request, Message.new("gravd.info.reply", data))
        responder.reply_to(request, Message.new("gravd.info.reply", json.dumps(other)))

    responder.on_type("gravd.info", answer)
    doc, survey = await _surveyed(grav)
    assert sorted(n["uuid"] for n in doc["nodes"]) == sorted([grav.node_uuid, "other-node"])
    assert survey.bad_replies == 3


async def test_survey_takes_only_answers_of_the_node_document_type(grav: Grav) -> None:
    """An answer to gravd.info of another type than gravd.info.reply (an app's, whose answers
    may have any type) is counted and left out, however well formed its document."""
    responder = grav.connect()
    posing = {"uuid": "posing-node", "peers": [], "leaves": [], "pods": {"count": 1}}

    def answer(request: Message) -> None:
        responder.reply_to(request, Message.new("sensor.temp", json.dumps(posing)))

    responder.on_type("gravd.info", answer)
    doc, survey = await _surveyed(grav)
    assert [n["uuid"] for n in doc["nodes"]] == [grav.node_uuid]
    assert survey.bad_replies == 1


async def test_a_linked_node_that_never_answers_is_shown_silent_with_its_link(
    grav: Grav,
) -> None:
    """A node this one has an open link to but that answers no gravd.info (a program embedding
    a full node) is in the mesh view, silent, with the link to it."""
    status = NodeStatus(grav, DaemonConfig())
    quiet = {"uuid": "quiet-node", "state": "open", "transport": "tcp"}
    survey = MeshSurvey(grav, lambda: {**status.snapshot(), "peers": [quiet]}, window=0.05)
    try:
        doc = await survey.mesh()
    finally:
        survey.close()
    states = {n["uuid"]: n["state"] for n in doc["nodes"]}
    assert states == {grav.node_uuid: "serving", "quiet-node": "silent"}
    assert [(link["a"], link["b"]) for link in doc["links"]] == [
        tuple(sorted((grav.node_uuid, "quiet-node")))
    ]


async def test_unreadable_token_file_stops_the_monitor_from_starting(
    grav: Grav, tmp_path: Path
) -> None:
    """A token file that is missing or too short is refused when the monitor starts."""
    short = tmp_path / "short"
    short.write_text("abc")
    for path in (tmp_path / "missing", short):
        config = DaemonConfig(dashboard_token_file=path)
        monitor = Monitor(NodeStatus(grav, config), Address("127.0.0.1", 0))
        with pytest.raises(UsageError, match=str(path)):
            await monitor.start()


def test_the_mesh_view_names_the_apps_attached_to_a_node() -> None:
    """A node's entry lists the names its leaves gave (unnamed ones left out), sorted."""
    doc = {
        "uuid": "u",
        "leaves": [{"uuid": "a", "name": "billing"}, {"uuid": "b"}, {"uuid": "c", "name": "audit"}],
    }
    node = _node_json(doc, "serving", True)
    assert (node["leaves"], node["leaf_names"]) == (3, ["audit", "billing"])
