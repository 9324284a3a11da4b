"""The monitor's gate against hostile requests, in process over real HTTP on 127.0.0.1: DNS
rebinding (a foreign Host header), malformed tokens and numbers."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gravpy import Grav
from gravpy.daemon.config import Address, DaemonConfig
from gravpy.daemon.events_node import DaemonEvents
from gravpy.daemon.monitor import Monitor, NodeStatus


@dataclass
class Served:
    """A running monitor with the dashboard and the events routes: its URL and port."""

    base: str
    port: int


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """A loopback monitor with no token file (the default), events kept in memory."""
    async with Grav() as grav:
        config = DaemonConfig()
        status = NodeStatus(grav, config)
        status.events = await DaemonEvents.open(grav, config, in_memory=True)
        monitor = Monitor(status, Address("127.0.0.1", 0))
        try:
            address = await monitor.start()
            yield Served(f"http://{address}", int(address.rsplit(":", 1)[1]))
        finally:
            await monitor.stop()
            await status.events.close()


async def _ask(
    base: str, method: str, path: str, host: str | None = None, **kwargs: Any
) -> tuple[int, str]:
    headers = {"Host": host} if host is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base + path, headers=headers, **kwargs) as response,
    ):
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            return response.status, ""  # a stream that was let through: not read on
        return response.status, await response.text()


GATED = [
    ("GET", "/"),
    ("GET", "/dashboard/dashboard.js"),
    ("GET", "/v1/mesh"),
    ("GET", "/v1/traffic"),
    ("GET", "/v1/dashboard"),
    ("GET", "/v1/tail?pattern=%3E"),
    ("GET", "/v1/events"),
    ("GET", f"/v1/events/stream?user={uuid.uuid4()}"),
    ("PATCH", f"/v1/events/{uuid.uuid4()}"),
    ("DELETE", f"/v1/events/{uuid.uuid4()}"),
]


@pytest.mark.parametrize("host", ["evil.example:8222", "evil.example", "192.0.2.7:8222", ""])
async def test_without_a_token_a_foreign_host_header_is_refused(served: Served, host: str) -> None:
    """With no token, a request naming another host (a page that rebound its DNS name to
    127.0.0.1) is refused with 403 saying why on every dashboard and events route, and counted;
    the monitor's own /healthz, /v1/node and /metrics still answer."""
    for method, path in GATED:
        status, body = await _ask(served.base, method, path, host, json={"status": "read"})
        assert status == 403, (method, path, body)
        assert "Host" in json.loads(body)["error"], (method, path, body)
    _, about = await _ask(served.base, "GET", "/v1/dashboard")
    assert json.loads(about)["refused"] == len(GATED)
    for path in ("/healthz", "/v1/node", "/metrics"):
        assert (await _ask(served.base, "GET", path, host))[0] == 200, path


async def test_without_a_token_loopback_host_names_pass(served: Served) -> None:
    """localhost, any 127.0.0.0/8 address and [::1], with or without a port, are let through."""
    port = served.port
    for host in (
        f"127.0.0.1:{port}",
        "127.0.0.1",
        f"localhost:{port}",
        "LocalHost",
        "127.10.20.30:80",
        f"[::1]:{port}",
        "[::1]",
    ):
        assert (await _ask(served.base, "GET", "/v1/mesh", host))[0] == 200, host
        assert (await _ask(served.base, "GET", "/v1/events", host))[0] == 200, host
