"""gravd's limits under a connection flood, and its warning when nothing authenticates."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gravpy.testing.gravd import GRAVD, run, running_gravd

FLOOD = 2000
CAP = 100


def _refused(metrics: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "gravd_connections_refused_total":
                return sample.value
    raise AssertionError("gravd_connections_refused_total is missing")


async def _upgrade(host: str, port: int, path: str) -> tuple[int, asyncio.StreamWriter | None]:
    """Ask for a WebSocket upgrade over a raw socket; the answer's status, and the socket when
    upgraded (kept open: it then holds a link until the handshake deadline)."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0, None
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 30)
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        writer.close()
        return 0, None
    status = int(line.split()[1])
    if status == 101:
        return status, writer
    writer.close()
    return status, None


async def test_a_flood_of_connects_stays_under_the_cap_and_healthz_answers() -> None:
    """2,000 concurrent upgrades to a gravd with --max-connections 100: at most 100 are upgraded,
    the rest refused and counted, and /healthz answers while the flood is in."""
    async with running_gravd("--max-connections", str(CAP)) as node:
        url = node.endpoint.removeprefix("ws://")
        hostport, _, path = url.partition("/")
        host, _, port = hostport.rpartition(":")
        flood = [asyncio.ensure_future(_upgrade(host, int(port), "/" + path)) for _ in range(FLOOD)]
        status, body = await node.get("/healthz")  # meanwhile
        assert status == 200, body
        results = await asyncio.gather(*flood)
        upgraded = [w for s, w in results if s == 101 and w is not None]
        assert 0 < len(upgraded) <= CAP
        assert sum(s == 503 for s, _ in results) >= FLOOD - CAP - sum(s == 0 for s, _ in results)
        status, metrics = await node.get("/metrics")
        assert _refused(metrics) >= sum(s == 503 for s, _ in results)
        for writer in upgraded:
            writer.close()
        status, _ = await node.get("/healthz")
        assert status == 200


async def test_gravd_warns_when_it_listens_beyond_loopback_unauthenticated(tmp_path: Path) -> None:
    """Listening on every interface with no key and no client verification, gravd logs
    'unauthenticated'; on loopback, or with a mesh key, it does not."""
    async with running_gravd("--listen", "0.0.0.0:0", "--discovery", "none") as node:
        await node.process.wait_event("unauthenticated")
        await node.stop()
    async with running_gravd() as node:
        await node.stop()
    assert not any(e["event"] == "unauthenticated" for e in node.process.events())
    key = tmp_path / "mesh.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    args = ("--listen", "0.0.0.0:0", "--discovery", "none", "--mesh-key-file", str(key))
    async with running_gravd(*args) as node:
        await node.stop()
    assert not any(e["event"] == "unauthenticated" for e in node.process.events())


async def _first_answer(sockets: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> bytes:
    """What the first of ``sockets`` to be answered reads (all of it, up to the drop)."""
    reads = [asyncio.ensure_future(reader.read()) for reader, _ in sockets]
    try:
        done, _ = await asyncio.wait(reads, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert done, "no socket was answered"
        return done.pop().result()
    finally:
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        for _, writer in sockets:
            writer.close()


async def test_max_upgrading_bounds_the_sockets_in_flight_of_a_real_gravd() -> None:
    """With --max-upgrading 2, a third silent socket finds both slots taken: one of the three
    is answered 503 at once (the newcomer, or the oldest if it was silent a second) and counted."""
    async with running_gravd("--max-upgrading", "2") as node:
        hostport = node.endpoint.removeprefix("ws://").partition("/")[0]
        host, _, port = hostport.rpartition(":")
        sockets = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
        answer = await _first_answer(sockets)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        _, metrics = await node.get("/metrics")
        assert _refused(metrics) == 1


async def test_max_upgrading_bounds_the_tcp_connections_not_yet_greeted() -> None:
    """--max-upgrading bounds the TCP listener too: with 2, one of three silent sockets is
    turned away at once with a close frame naming the reason, counted."""
    async with running_gravd("--max-upgrading", "2", "--listen-tcp", "127.0.0.1:0") as node:
        tcp = next(e for e in node.listening["endpoints"] if e.startswith("tcp://"))
        host, _, port = tcp.removeprefix("tcp://").rpartition(":")
        sockets = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
        answer = await _first_answer(sockets)
        assert b"too many connections in their handshake (2)" in answer, answer
        _, metrics = await node.get("/metrics")
        assert _refused(metrics) == 1


async def test_check_config_shows_max_upgrading_and_refuses_zero() -> None:
    """--check-config reports max_upgrading from GRAVD_MAX_UPGRADING and refuses 0 by flag."""
    result = await run([*GRAVD, "--check-config"], env={"GRAVD_MAX_UPGRADING": "7"})
    assert result.code == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["max_upgrading"] == 7
    assert effective["sources"]["max_upgrading"] == "environment GRAVD_MAX_UPGRADING"
    result = await run([*GRAVD, "--check-config", "--max-upgrading", "0"])
    assert result.code == 2
    assert result.stderr.startswith("gravd: invalid max_upgrading (from flag --max-upgrading)")
