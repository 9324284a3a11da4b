"""gravd listening on WebSocket and HTTP at once: real processes on 127.0.0.1, ports bound as 0.

The mesh these tests build: M listens on both transports; X listens on both too (gravd always
listens on WebSocket) and links to M over HTTP (``--peer http://...``); Y listens on WebSocket only
and links to M over WebSocket. Peers then gossip each other's endpoint, and gossip carries one
endpoint per node, the one it states in its handshake: its WebSocket one. So X and Y also link
directly, over WebSocket, and a message between them takes that link (peers forward one hop, never
through M). What crosses HTTP is what concerns M and X, and the apps attached to X over HTTP.
Every gravd here has its TCP listener off (``NO_TCP``), which would otherwise be the fastest
transport every pair speaks (tests/daemon/test_tcp_auto.py and tests/mesh/test_endpoints.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gravpy.testing.gravd import GRAVCTL, GRAVD, Gravd, Process, gravctl, running_gravd

NO_TCP = ("--listen-tcp", "off")
HTTP = ("--listen-http", "127.0.0.1:0", *NO_TCP)


def endpoint(node: Gravd, scheme: str) -> str:
    """The one endpoint of ``node``'s ``listening`` event with this URL scheme."""
    found = [ep for ep in node.listening["endpoints"] if ep.startswith(f"{scheme}://")]
    assert len(found) == 1, node.listening["endpoints"]
    return str(found[0])


def transports(doc: dict[str, Any]) -> dict[str, str]:
    """Peer uuid -> transport of its open link, from a ``/v1/node`` document."""
    return {p["uuid"]: p["transport"] for p in doc["peers"] if p["state"] == "open"}


@asynccontextmanager
async def mesh() -> AsyncIterator[tuple[Gravd, Gravd, Gravd]]:
    """M on both transports, X linked to it over HTTP, Y over WebSocket; all three fully meshed."""
    async with running_gravd(*HTTP) as m:
        m_http = endpoint(m, "http").removesuffix("/meta/http")  # as the README says: no path
        async with (
            running_gravd(*HTTP, "--peer", m_http) as x,
            running_gravd("--peer", endpoint(m, "ws"), *NO_TCP) as y,
        ):
            for node in (m, x, y):
                await node.wait_peers(2)
            yield m, x, y
            for node in (y, x):
                assert (await node.stop()).code == 0
        assert (await m.stop()).code == 0


@asynccontextmanager
async def background(*args: str) -> AsyncIterator[Process]:
    """A gravctl command left running (sub, reply), killed on exit if it has not ended."""
    process = await Process.start([*GRAVCTL, *args])
    try:
        yield process
    finally:
        await process.close()


async def test_listening_event_and_node_document_list_both_endpoints() -> None:
    """A gravd given --listen-http reports its WebSocket and its HTTP endpoint, with bound ports."""
    async with running_gravd(*HTTP, "--http-path", "/grav/http") as node:
        ws, http = endpoint(node, "ws"), endpoint(node, "http")
        http_port = int(http.split(":")[2].split("/")[0])
        assert http == f"http://127.0.0.1:{http_port}/grav/http"
        assert http_port != 0
        assert node.listening["endpoints"] == [ws, http]
        assert node.listening["listen_http"] == f"127.0.0.1:{http_port}"
        assert node.listening["listen"] != node.listening["listen_http"]
        doc = await node.node()
        assert doc["listen"]["endpoints"] == [ws, http]
        assert doc["listen"]["http_address"] == "127.0.0.1:0"  # as configured
        assert (await node.stop()).code == 0


async def test_http_port_in_use_exits_1_with_start_failed() -> None:
    """A gravd that binds WebSocket but not its HTTP port logs start_failed and exits 1."""
    async with running_gravd(*HTTP) as first:
        taken = first.listening["listen_http"]
        argv = [*GRAVD, "--listen", "127.0.0.1:0", "--listen-http", taken, "--monitor", "off"]
        second = await Process.start(argv)
        try:
            result = await second.wait()
        finally:
            await second.close()
        assert result.code == 1
        failed = [e for e in second.events() if e["event"] == "start_failed"]
        assert [(e["listen_http"], taken.rsplit(":", 1)[1] in e["error"]) for e in failed] == [
            (taken, True)
        ]
        assert (await first.stop()).code == 0


async def test_node_on_both_transports_holds_one_link_of_each() -> None:
    """M's /v1/node shows X's link as HTTP and Y's as WebSocket; X and Y link over WebSocket."""
    async with mesh() as (m, x, y):
        assert transports(await m.node()) == {x.uuid: "http", y.uuid: "websocket"}
        assert transports(await x.node()) == {m.uuid: "http", y.uuid: "websocket"}
        assert transports(await y.node()) == {m.uuid: "websocket", x.uuid: "websocket"}
        m_links = {p["uuid"]: p for p in (await m.node())["peers"]}
        assert not m_links[x.uuid]["initiator"]  # X dialled M's HTTP endpoint
        x_links = {p["uuid"]: p for p in (await x.node())["peers"]}
        assert x_links[m.uuid]["initiator"]
        assert x_links[m.uuid]["endpoint"] == endpoint(m, "ws")  # what M states in its handshake


async def test_pub_through_an_http_peer_reaches_subscribers_on_every_node() -> None:
    """A gravctl pub attached to X over HTTP reaches a sub on Y and one on M (over the HTTP link)."""
    async with mesh() as (m, x, y):
        args = ("sub", "multi.>", "--count", "1", "--json")
        async with (
            background("--url", endpoint(y, "ws"), *args) as on_y,
            background("--url", endpoint(m, "ws"), *args) as on_m,
        ):
            for sub in (on_y, on_m):
                await sub.wait_line(lambda line: line.startswith('Subscribing on "multi.>"'))
            await x.wait_http(
                lambda doc: (
                    {p["uuid"] for p in doc["peers"] if "multi.>" in p["interests"]}
                    == {m.uuid, y.uuid}
                )
            )
            before = {p["uuid"]: p["messages_in"] for p in (await m.node())["peers"]}
            published = await gravctl("--url", endpoint(x, "http"), "pub", "multi.hello", "hi")
            assert published.code == 0, published.stderr
            got_y, got_m = await on_y.wait(), await on_m.wait()
        for got in (got_y, got_m):
            assert got.code == 0, got.stderr
            messages = [json.loads(line) for line in got.stdout.splitlines()]
            assert [(msg["type"], msg["data"]) for msg in messages] == [("multi.hello", "hi")]
        after = {p["uuid"]: p["messages_in"] for p in (await m.node())["peers"]}
        assert after[x.uuid] == before[x.uuid] + 1  # it came to M over the HTTP link
        assert after[y.uuid] == before[y.uuid]


async def test_requests_through_websocket_nodes_are_answered_on_the_http_peer() -> None:
    """A gravctl reply attached to X over HTTP answers gravctl req made through Y and through M."""
    async with mesh() as (m, x, y):
        args = ("--url", endpoint(x, "http"), "reply", "multi.echo", "pong", "--count", "2")
        async with background(*args) as replier:
            await replier.wait_line(lambda line: line.startswith('Listening on "multi.echo"'))
            for asker in (y, m):
                await asker.wait_interest("multi.echo")
            through_y = await gravctl("--url", endpoint(y, "ws"), "req", "multi.echo", "from y")
            through_m = await gravctl("--url", endpoint(m, "ws"), "req", "multi.echo", "from m")
            answered = await replier.wait()
        assert (through_y.code, through_y.stdout) == (0, "pong"), through_y.stderr
        assert (through_m.code, through_m.stdout) == (0, "pong"), through_m.stderr
        assert answered.code == 0
        assert '[#1] Received on "multi.echo"' in answered.stdout
        assert [ln for ln in answered.stdout.splitlines() if ln.startswith("from")] == [
            "from y",
            "from m",
        ]


async def test_apps_on_different_transports_meet_through_one_node() -> None:
    """A sub attached to a gravd over HTTP receives what a pub attached over WebSocket sends."""
    async with running_gravd(*HTTP) as node:
        ws, http = endpoint(node, "ws"), endpoint(node, "http")
        async with background("--url", http, "sub", "apps.*", "--count", "1") as sub:
            await sub.wait_line(lambda line: line.startswith('Subscribing on "apps.*"'))
            doc = await node.wait_interest("apps.note")
            assert [leaf["transport"] for leaf in doc["leaves"]] == ["http"]
            published = await gravctl("--url", ws, "pub", "apps.note", "over websocket")
            assert published.code == 0, published.stderr
            got = await sub.wait()
        assert got.code == 0, got.stderr
        assert got.stdout.splitlines() == ['[#1] Received on "apps.note"', "over websocket"]
        assert (await node.stop()).code == 0
