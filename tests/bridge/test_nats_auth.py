"""gravd bridging to a real nats-server that demands TLS, a token, an NKEY or a JWT (.creds).

For each: a gravd with the right credential links and a plain nats-py client's message crosses
into its mesh; a gravd with a wrong one (another token, an unknown NKEY, a user signed by an
unknown account, a CA that did not sign the server) shows its bridge ``connecting`` with
``failed_connects`` counted in ``/v1/node`` and ``/metrics``, and keeps serving its LAN.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import nats
import pytest

import gravpy
from gravpy import Message
from gravpy.testing.gravd import GRAVD, Gravd, run, running_gravd
from tests.bridge.lans import bridge_of, subscribed
from tests.bridge.nats_auth import auth_case
from tests.bridge.nats_proc import NatsServer

pytestmark = pytest.mark.timeout(60)


async def _crosses(stack: AsyncExitStack, node: Gravd, server: NatsServer, client: dict) -> None:  # type: ignore[type-arg]
    """A plain nats-py client's message reaches a pod attached to ``node``."""
    app = await stack.enter_async_context(gravpy.connect(node.endpoint))
    got: asyncio.Queue[Message] = asyncio.Queue()
    app.connect().on_type("sensor.*", got.put_nowait)
    await node.wait_http(subscribed("sensor.temp"))
    nc = await nats.connect(server.url, connect_timeout=2, allow_reconnect=False, **client)
    stack.push_async_callback(nc.close)
    await nc.publish("gravpy.outside.sensor.temp", b"21.5")
    msg = await asyncio.wait_for(got.get(), 10)
    assert (msg.type, msg.data) == ("sensor.temp", b"21.5")


async def _refused_but_serving(stack: AsyncExitStack, node: Gravd) -> None:
    """``node``'s bridge keeps failing to connect, counted and shown, while its LAN works."""
    seen = await node.wait_http(lambda n: bridge_of(n)["failed_connects"] >= 2)
    bridge = bridge_of(seen)
    assert bridge["state"] == "connecting"
    assert bridge["last_error"]
    assert bridge["connects"] == 0
    _, metrics = await node.get("/metrics")
    assert "gravd_bridge_connect_failures_total{" in metrics
    app = await stack.enter_async_context(gravpy.connect(node.endpoint))
    responder, asker = app.connect(), app.connect()
    responder.on_type("svc.x", lambda m: responder.reply_to(m, Message.new("r", b"ok")))
    await node.wait_interest("svc.x")
    assert (await asker.send(Message.new("svc.x")).wait_until(5.0)).data == b"ok"


@pytest.mark.parametrize("kind", ["token", "nkey", "creds", "tls"])
async def test_bridge_authenticates_or_reports_why_not(kind: str, tmp_path: Path) -> None:
    """With the right credential (token file, NKEY seed, .creds JWT, or the CA for tls://) the
    bridge links and a message crosses; with a wrong one the failure is counted and shown as
    bridge state while gravd serves its LAN."""
    case = auth_case(kind, tmp_path)
    server = NatsServer(kind, tmp_path / "nats.log", config=case.server_config)
    async with AsyncExitStack() as stack:
        await server.start()
        stack.push_async_callback(server.stop)
        assert server.url.startswith(f"{case.scheme}://")
        base = ("--nats", server.url, "--log-level", "info")
        good = await stack.enter_async_context(running_gravd("--mesh", "ok", *base, *case.good))
        bad = await stack.enter_async_context(running_gravd("--mesh", "no", *base, *case.bad))
        await _crosses(stack, good, server, case.client)
        assert bridge_of(await good.node())["failed_connects"] == 0
        await _refused_but_serving(stack, bad)


async def test_a_password_in_the_nats_url_is_shown_nowhere(tmp_path: Path) -> None:
    """With --nats nats://user:password@host, the bridge links, and the password is in none of
    what gravd shows: its log (bridge_connected names host:port), /metrics, /v1/node, and
    --check-config."""
    password = "s3cret-pw"
    config = f'authorization {{ user: alice, password: "{password}" }}\n'
    server = NatsServer("userpass", tmp_path / "nats.log", config=config)
    async with AsyncExitStack() as stack:
        await server.start()
        stack.push_async_callback(server.stop)
        url = f"nats://alice:{password}@127.0.0.1:{server.port}"
        args = ("--nats", url, "--log-level", "info")
        node = await stack.enter_async_context(running_gravd(*args))
        connected = await node.process.wait_event("bridge_connected")
        doc = await node.wait_http(lambda n: bridge_of(n)["state"] == "connected")
        _, metrics = await node.get("/metrics")
        checked = await run([*GRAVD, "--check-config", *args])
        log = "\n".join(node.process.stderr)
    assert connected["server"] == f"127.0.0.1:{server.port}"
    assert bridge_of(doc)["servers"] == [f"nats://***@127.0.0.1:{server.port}"]
    assert checked.code == 0, checked.stderr
    assert f"nats://***@127.0.0.1:{server.port}" in checked.stdout
    for shown in (log, metrics, str(doc), checked.stdout, checked.stderr):
        assert password not in shown
