"""The monitor's gate against hostile requests, in process over real HTTP on 127.0.0.1: DNS
rebinding (a foreign Host header), malformed tokens and numbers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gravpy import Grav
from gravpy.daemon.config import Address, DaemonConfig
from gravpy.daemon.monitor import Monitor, NodeStatus
from tests._bus_helpers import GUARD
from tests.daemon.monitor_kit import Served, served_monitor


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """A loopback monitor with no token file (the default), events kept in memory."""
    async with served_monitor() as running:
        yield running


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


async def _raw(base: str, request: bytes) -> bytes:
    """Send ``request`` as is on a new connection; the answer's status line."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        async with asyncio.timeout(GUARD):
            return await reader.readuntil(b"\r\n")
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/traffic?last=%C2%B2", "last"),  # "²": a digit to str.isdigit, not to int
        ("/v1/traffic?last=%D9%A3", "last"),  # an Arabic-Indic three
        ("/v1/traffic?last=" + "9" * 5000, "last"),  # past int()'s 4,300 digits
        ("/v1/node?leaves_offset=%C2%B2", "leaves_offset"),
        ("/v1/node?leaves_offset=" + "9" * 5000, "leaves_offset"),
        ("/v1/node?leaves_limit=%C2%B2", "leaves_limit"),
    ],
)
async def test_a_number_that_is_not_plain_digits_answers_400(
    served: Served, path: str, name: str
) -> None:
    """A count written with other digits than 0-9, or too long for int(), answers 400 naming
    the parameter, not 500."""
    status, body = await _ask(served.base, "GET", path)
    assert status == 400, body
    assert json.loads(body)["error"].startswith(name)


async def test_a_token_that_is_not_utf8_is_refused_401(tmp_path: Path) -> None:
    """With a token file, a Bearer token, cookie or ?token= holding a byte that is not UTF-8
    answers 401 (wrong token), not 500."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-for-the-dashboard\n")
    async with Grav() as grav:
        config = DaemonConfig(dashboard_token_file=token_file)
        monitor = Monitor(NodeStatus(grav, config), Address("127.0.0.1", 0))
        base = f"http://{await monitor.start()}"
        try:
            for header in (b"Authorization: Bearer \xff\xfe", b"Cookie: gravd_dashboard=\xff"):
                request = b"GET /v1/mesh HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n\r\n"
                assert (await _raw(base, request)).startswith(b"HTTP/1.1 401"), header
            login = b"GET /?token=%FF%FE HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            assert (await _raw(base, login)).startswith(b"HTTP/1.1 401")
        finally:
            await monitor.stop()
