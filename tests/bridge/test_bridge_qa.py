"""The NATS bridge used the way a demanding user uses it: odd configuration, unusable files,
messages at NATS's limits. Each test is a fault found by trying, against a real nats-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.aio.subscription import Subscription

from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.bridge.wire import Sink, WireClient
from gravpy.errors import UsageError
from gravpy.testing.gravd import GRAVD, run
from tests._bus_helpers import until
from tests.bridge.nats_proc import NatsServer
from tests.bridge.test_embedded import node
from transports.websocket import WebSocketTransport

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-token"


# -- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "nats://127.0.0.1:99999",
        "nats://127.0.0.1:port",
        "nats://",
        "tls://:4222",
        "nats://alice:pw@127.0.0.1:70000",
    ],
)
def test_a_nats_url_without_a_host_or_with_a_bad_port_is_refused_naming_it(url: str) -> None:
    """A NATS URL nats-py cannot connect to by its form (no host, a port that is not 1 to
    65535) is refused when the bridge is configured, naming the URL without its password,
    instead of a bridge that retries it forever as "nats: invalid connect url option"."""
    with pytest.raises(UsageError, match="NATS URL") as caught:
        NatsBridgeConfig(servers=(url,))
    assert "pw" not in str(caught.value)
    assert url.rpartition("@")[2] in str(caught.value)


def test_a_nats_url_with_a_host_and_a_port_or_none_is_accepted() -> None:
    """URLs nats-py connects to (a host name or address, IPv6 too, a port or the default, user
    and password, a websocket path) are accepted as they are."""
    urls = (
        "nats://nats.example",
        "nats://[::1]:4222",
        "tls://alice:pw@127.0.0.1:4443",
        "ws://127.0.0.1:8080/nats",
    )
    assert NatsBridgeConfig(servers=urls).servers == urls


def test_servers_given_as_one_str_are_refused_as_such() -> None:
    """``servers`` given as one URL string (not a tuple) is refused saying so, not character by
    character ("'n' is not a NATS URL")."""
    with pytest.raises(UsageError, match="tuple of URLs"):
        NatsBridgeConfig(servers="nats://127.0.0.1:4222")  # type: ignore[arg-type]


async def test_gravd_refuses_a_nats_url_with_a_bad_port() -> None:
    """gravd --check-config refuses --nats with a port that is not one, exit status 2, naming the
    setting and the URL."""
    checked = await run([*GRAVD, "--check-config", "--nats", "nats://127.0.0.1:99999"])
    assert checked.code == 2, checked.stderr
    assert "nats" in checked.stderr
    assert "127.0.0.1:99999" in checked.stderr


# -- credential files ------------------------------------------------------------------------------


def token_server(tmp_path: Path) -> NatsServer:
    return NatsServer(
        "token", tmp_path / "nats.log", config=f'authorization {{ token: "{TOKEN}" }}\n'
    )


def bridged(mesh: str, config: NatsBridgeConfig) -> tuple[Grav, NatsBridge]:
    bridge = NatsBridge(config)
    transport = WebSocketTransport("127.0.0.1", 0)
    return Grav(transport=transport, belongs_to=mesh, bridges=[bridge]), bridge


@pytest.mark.parametrize(
    ("setting", "content"),
    [
        ("token_file", b"\xff\xfe binary, not text"),
        ("creds", b"\xff\xfe-----BEGIN NATS USER JWT-----"),
        ("creds", b"SUnot-a-seed\n"),
    ],
)
async def test_an_unusable_credential_file_is_counted_and_retried(
    tmp_path: Path, setting: str, content: bytes
) -> None:
    """A token or credentials file that is not text, or a seed file whose seed is malformed,
    counts each failed attempt and names the file in ``last_error`` while the bridge keeps
    retrying (it used to stop trying after the first, for good)."""
    server = token_server(tmp_path)
    await server.start()
    try:
        path = tmp_path / "credential"
        path.write_bytes(content)
        config = NatsBridgeConfig(servers=(server.url,), **{setting: path})
        grav, bridge = bridged("east", config)
        async with grav:
            async with asyncio.timeout(20):
                await until(lambda: bridge.statistics().failed_connects >= 2)
            stats = bridge.statistics()
            assert stats.state == "connecting"
            assert str(path) in stats.last_error
    finally:
        await server.stop()


async def test_a_token_file_fixed_while_the_bridge_retries_is_picked_up(tmp_path: Path) -> None:
    """A token file that was not text when the bridge started is read again at the next
    attempt once it holds the token: the bridge connects with no restart."""
    server = token_server(tmp_path)
    await server.start()
    try:
        path = tmp_path / "token"
        path.write_bytes(b"\xff\xfe binary, not text")
        grav, bridge = bridged("east", NatsBridgeConfig(servers=(server.url,), token_file=path))
        async with grav:
            async with asyncio.timeout(20):
                await until(lambda: bridge.statistics().failed_connects >= 1)
            path.write_text(TOKEN)
            async with asyncio.timeout(30):
                await until(lambda: bridge.statistics().state == "connected")
    finally:
        await server.stop()


async def test_a_credential_path_given_as_a_str_is_read(tmp_path: Path) -> None:
    """``token_file``, ``creds`` and ``ca`` given as a str (as a user writes a path) are paths:
    the bridge reads the token file and connects, not fails on ``str.read_text``."""
    server = token_server(tmp_path)
    await server.start()
    try:
        path = tmp_path / "token"
        path.write_text(TOKEN)
        config = NatsBridgeConfig(servers=(server.url,), token_file=str(path))  # type: ignore[arg-type]
        assert config.token_file == path
        grav, bridge = bridged("east", config)
        async with grav:
            async with asyncio.timeout(20):
                await until(lambda: bridge.statistics().state == "connected")
            assert bridge.statistics().failed_connects == 0
    finally:
        await server.stop()


# -- messages at NATS's limits ---------------------------------------------------------------------


async def test_a_message_whose_headers_take_it_over_max_payload_is_counted_not_sent(
    nats_one: NatsServer,
) -> None:
    """A message whose data fits NATS's max_payload but not with its gravpy headers is not sent
    (nats-server would close the bridge's connection, and what followed it would be lost
    uncounted): it is counted ``too_large``, the connection stays up and the messages after it
    cross."""
    nc = await nats.connect(nats_one.url)
    max_payload = nc.max_payload
    await nc.close()
    g1, b1 = node("east", nats_one.url)
    g2, _ = node("west", nats_one.url)
    async with g1, g2:
        got: asyncio.Queue[Message] = asyncio.Queue()
        g2.connect().on_type("big.*", got.put_nowait)
        async with asyncio.timeout(10):
            await until(lambda: b1.statistics().exporter and bool(b1.statistics().remote_wants))
        east = g1.connect()
        east.send(Message.new("big.one", b"x" * (max_payload - 10)))
        small = [Message.new("big.small", str(i)) for i in range(5)]
        for m in small:
            east.send(m)
        received = [await asyncio.wait_for(got.get(), 10) for _ in small]
        assert [m.uuid for m in received] == [m.uuid for m in small]
        stats = b1.statistics()
        assert (stats.lost, stats.connects) == ({"too_large": 1}, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("announce_interval", 0.0),
        ("announce_interval", -1.0),
        ("ttl", float("nan")),
        ("connect_timeout", 0.0),
        ("pending_bytes", 0),
        ("reconnect_wait", -0.5),
    ],
)
def test_timings_and_sizes_that_cannot_work_are_refused_naming_the_field(
    field: str, value: float
) -> None:
    """An announce interval of 0 (announcements in a busy loop), a ttl that is not a number, a
    connect timeout of 0, no pending buffer or a negative reconnect wait is refused when the
    bridge is configured, naming the field."""
    with pytest.raises(UsageError, match=field):
        NatsBridgeConfig(servers=("nats://127.0.0.1:4222",), **{field: value})


# -- announcements at NATS's limits ----------------------------------------------------------------


async def test_a_mesh_whose_wants_overflow_one_nats_message_still_bridges(
    nats_one: NatsServer,
) -> None:
    """A mesh wanting more than one NATS message can announce (400 types of 250 emoji: each
    emoji is 12 bytes of JSON) announces wider patterns instead, so its bridge keeps its
    connection and a message of one of those types crosses (the bridge used to fail every
    connection on nats-py's MaxPayloadError, five times a second)."""
    g1, b1 = node("east", nats_one.url)
    g2, b2 = node("west", nats_one.url)
    types = [f"t{i}." + "\U0001f600" * 250 for i in range(400)]
    types.append("t7.short")  # (a long one would not fit a NATS command line: subject_too_long)
    async with g1, g2:
        got: asyncio.Queue[Message] = asyncio.Queue()
        west = g2.connect()
        west.on(got.put_nowait)
        for t in types:
            west.filter_type(t)
        async with asyncio.timeout(20):
            await until(lambda: b1.statistics().exporter and "t7.>" in b1.statistics().remote_wants)
            await until(lambda: len(b2.statistics().mesh_wants) == len(types))
        sent = Message.new("t7.short", b"hi")
        g1.connect().send(sent)
        assert (await asyncio.wait_for(got.get(), 10)).uuid == sent.uuid
        assert (b2.statistics().errors, b2.statistics().connects) == (0, 1)


async def test_an_error_in_a_connections_task_is_reported_as_itself(
    nats_one: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in one of the tasks serving a connection (here the first type
    subscription) is kept in ``last_error`` as that error, not as "ExceptionGroup: unhandled
    errors in a TaskGroup", and the bridge connects again."""
    subscribe_direct = WireClient.subscribe_direct
    calls = 0

    async def fails_second(self: WireClient, subject: str, sink: Sink) -> Subscription:
        nonlocal calls
        calls += 1
        if calls == 2:  # (the first is the inbox's, before the tasks start)
            raise RuntimeError("injected")
        return await subscribe_direct(self, subject, sink)

    monkeypatch.setattr(WireClient, "subscribe_direct", fails_second)
    g, bridge = node("west", nats_one.url)
    async with g:
        g.connect().on_type("sensor.*", lambda m: None)
        async with asyncio.timeout(20):
            await until(lambda: bridge.statistics().errors == 1)
            await until(lambda: bridge.statistics().state == "connected")
        assert bridge.statistics().last_error == "RuntimeError: injected"
