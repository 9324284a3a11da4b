"""The dashboard against what a demanding user does to it: a tail left open by a browser that
stops reading, a node with many apps, a HEAD request on the tail. In process, over real HTTP
on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from gravpy import Grav, Message
from gravpy.daemon.config import Address, DaemonConfig
from gravpy.daemon.dashboard import Dashboard, install_dashboard
from gravpy.daemon.monitor import DEFAULT_LEAF_PAGE, Monitor, NodeStatus
from gravpy.proto import ROLE_LEAF
from gravpy.testing import MemoryNetwork, MemoryTransport, wait_idle
from tests._bus_helpers import GUARD, until
from tests.daemon.monitor_kit import serving


@pytest.fixture
async def grav() -> AsyncIterator[Grav]:
    async with Grav() as g:
        yield g


@asynccontextmanager
async def _dashboard(grav: Grav) -> AsyncIterator[tuple[Dashboard, str]]:
    """The dashboard of ``grav`` alone on an aiohttp app on 127.0.0.1; it and its base URL."""
    app = web.Application()
    dashboard = install_dashboard(app, NodeStatus(grav, DaemonConfig()), Address("127.0.0.1", 0))
    async with serving(app) as base:
        yield dashboard, base


async def _stalled_tail(base: str, pattern: str) -> AsyncExitStack:
    """A raw HTTP client that asks for the tail on ``pattern`` and then reads nothing (a tiny
    receive buffer, a reader that stops taking bytes at 1 KiB); closed with the returned stack."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    stack = AsyncExitStack()
    stack.callback(sock.close)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    _, writer = await asyncio.open_connection(sock=sock, limit=1024)
    stack.callback(writer.close)
    writer.write(f"GET /v1/tail?pattern={pattern} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    return stack


async def test_a_tail_browser_that_stops_reading_is_cut_off_and_frees_its_place(
    grav: Grav,
) -> None:
    """A tail whose browser stops reading (its connection backs up) is dropped, counted, and its
    stream ends even though its last write can never complete: the viewer's place is free again
    while the stalled client still holds its socket (it used to hang in that write for ever)."""
    async with _dashboard(grav) as (dashboard, base):
        tail = dashboard.tail
        assert tail is not None
        tail.rate = 1e9  # every message becomes a row: the backlog builds at once
        async with await _stalled_tail(base, "load.%3E"):
            await until(lambda: len(tail.viewers) == 1)
            sender = grav.connect()
            payload = b"\x01" * 256  # a row of 2 KiB or so (text escaped as JSON, and hex)
            async with asyncio.timeout(GUARD):
                while not tail.viewers_dropped:
                    for _ in range(100):
                        sender.send(Message.new("load.x", payload))
                    await wait_idle(grav, GUARD)
                await until(lambda: not tail.viewers)
            assert tail.statistics()["viewers"] == 0
            assert tail.viewers_dropped == 1


async def _get_json(url: str) -> object:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_the_mesh_view_counts_every_app_past_the_first_page_of_leaves() -> None:
    """A node with more apps attached than its /v1/node document lists (one page of 100) shows
    them all in /v1/mesh: the count /v1/node gives as leaves_page.total, not the page's 100."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
        url = node.endpoints()[0]
        for _ in range(DEFAULT_LEAF_PAGE + 1):
            leaf = Grav(transport=MemoryTransport(net), role=ROLE_LEAF, attach_to=url)
            await stack.enter_async_context(leaf)
        monitor = Monitor(NodeStatus(node, DaemonConfig()), Address("127.0.0.1", 0))
        base = f"http://{await monitor.start()}"
        stack.push_async_callback(monitor.stop)
        doc = await _get_json(base + "/v1/node")
        mesh = await _get_json(base + "/v1/mesh")
    assert isinstance(doc, dict)
    assert isinstance(mesh, dict)
    assert doc["leaves_page"]["total"] == DEFAULT_LEAF_PAGE + 1
    (entry,) = mesh["nodes"]
    assert entry["leaves"] == DEFAULT_LEAF_PAGE + 1


async def test_head_on_the_tail_answers_headers_only_and_opens_no_viewer(grav: Grav) -> None:
    """HEAD /v1/tail (curl -I, a link checker) gets the stream's headers and no body, and opens
    no viewer: the next request on the same connection is answered as such (an event stream
    written after a HEAD answer used to be read as the next answer's status line)."""
    async with (
        _dashboard(grav) as (dashboard, base),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
    ):
        assert dashboard.tail is not None
        async with session.head(base + "/v1/tail", params={"pattern": "a.b"}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
        async with session.get(base + "/v1/dashboard") as response:  # the same connection
            assert response.status == 200
            about = json.loads(await response.text())
    assert about["tail"]["viewers"] == 0
    assert not dashboard.tail.viewers


BAD_FIELDS: list[dict[str, object]] = [
    {"listen": {"endpoints": "tcp://127.0.0.1:1"}},  # the page joins a list
    {"pods": {"interests": 5}},  # the page iterates a list of patterns
    {"pods": {"count": "many"}},
    {"version": {"major": 1}},
]


async def test_a_node_document_with_fields_of_the_wrong_type_is_left_out_of_the_mesh() -> None:
    """An app on the mesh answering gravd.info with a document whose endpoints, interests, pod
    count or version have the wrong type is left out of /v1/mesh (such an entry stopped the
    page drawing its node table and interests), while a good answer is shown."""
    net = MemoryNetwork()
    good = {"uuid": "good-node", "peers": [], "leaves": [], "listen": {"endpoints": ["x://y"]}}
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
        app = Grav(transport=MemoryTransport(net), role=ROLE_LEAF, attach_to=node.endpoints()[0])
        await stack.enter_async_context(app)
        pod = app.connect()

        def answer(request: Message) -> None:
            for i, fields in enumerate(BAD_FIELDS):
                doc: dict[str, object] = {"uuid": f"bad-{i}", **fields}
                pod.reply_to(request, Message.new("gravd.info.reply", json.dumps(doc)))
            pod.reply_to(request, Message.new("gravd.info.reply", json.dumps(good)))

        pod.on_type("gravd.info", answer)
        await until(lambda: any("gravd.info" in p.interests for p in node.peers()))
        monitor = Monitor(NodeStatus(node, DaemonConfig()), Address("127.0.0.1", 0))
        base = f"http://{await monitor.start()}"
        stack.push_async_callback(monitor.stop)
        mesh = await _get_json(base + "/v1/mesh")
    assert isinstance(mesh, dict)
    assert sorted(n["uuid"] for n in mesh["nodes"]) == sorted([node.node_uuid, "good-node"])
    for entry in mesh["nodes"]:
        assert all(isinstance(e, str) for e in entry["endpoints"])
        assert all(isinstance(p, str) for p in entry["interests"])
