"""GravMessenger on the mesh: leaves attached to a real gravd process (the full conformance check,
deliver-to-one across leaves through pod groups, errors, close)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from gravpy.errors import (
    MessengerClosed,
    NoResponders,
    PublishFailed,
    RequestFailed,
    WaitTimeout,
)
from gravpy.grav import Grav
from gravpy.mesh import HubConfig
from gravpy.messenger import GravMessenger, Messenger, open_messenger
from gravpy.proto import ROLE_LEAF
from gravpy.testing import MemoryNetwork, MemoryTransport, check_messenger
from gravpy.testing.gravd import Gravd, running_gravd


@pytest.fixture
async def gravd() -> AsyncIterator[Gravd]:
    async with running_gravd() as node:
        yield node


async def test_grav_messenger_passes_the_conformance_check(gravd: Gravd) -> None:
    """A leaf messenger on a real gravd passes every step of check_messenger."""

    async def factory() -> Messenger:
        return await open_messenger(gravd.endpoint)

    await check_messenger(factory)


def _counting(handled: Counter[str]) -> Callable[[str], Callable[[bytes], Awaitable[bytes]]]:
    """Servers that answer with their name and count what each handled in ``handled``."""

    def server(name: str) -> Callable[[bytes], Awaitable[bytes]]:
        async def handle(data: bytes) -> bytes:
            handled[name] += 1
            return name.encode()

        return handle

    return server


@asynccontextmanager
async def _two_servers(
    gravd: Gravd, served: list[tuple[str, str]], subject: str, handled: Counter[str]
) -> AsyncIterator[Messenger]:
    """Two leaves serving ``served`` ((pattern, the server's name), counted in ``handled``), and
    a third one, yielded once gravd and it know both servers of ``subject``."""
    server = _counting(handled)
    async with (
        await open_messenger(gravd.endpoint) as a,
        await open_messenger(gravd.endpoint) as b,
        await open_messenger(gravd.endpoint) as asker,
    ):
        for messenger, (pattern, name) in zip((a, b), served, strict=True):
            await messenger.serve(pattern, server(name))
        await gravd.wait_http(lambda node: _leaves_wanting(node, subject) == 2)
        await _leaf(asker).wait_server(subject, timeout=10.0)
        yield asker


async def test_each_request_is_served_once_by_servers_on_two_leaves(gravd: Gravd) -> None:
    """Of two servers on two leaves, exactly one answers each request from a third leaf."""
    handled: Counter[str] = Counter()
    async with _two_servers(
        gravd, [("mesh.svc", "a"), ("mesh.svc", "b")], "mesh.svc", handled
    ) as asker:
        replies = await asyncio.gather(
            *(asker.request("mesh.svc", b"%d" % i, timeout=5.0) for i in range(40))
        )
    assert set(replies) <= {b"a", b"b"}
    assert sum(handled.values()) == 40


async def test_a_stream_on_one_leaf_gets_what_another_leaf_publishes(gravd: Gravd) -> None:
    """Messages published by one leaf reach a stream on another leaf, in order, via gravd."""
    async with (
        await open_messenger(gravd.endpoint) as publisher,
        await open_messenger(gravd.endpoint) as reader,
    ):
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await reader.stream("mesh.events.>", q)
        await _leaf(publisher).wait_interest("mesh.events.x", timeout=10.0)
        sent = [b"%d" % i for i in range(200)]
        for data in sent:
            await publisher.publish("mesh.events.x", data)
        assert [await q.get() for _ in sent] == sent


async def test_a_request_crosses_the_mesh_to_a_server_on_another_leaf(gravd: Gravd) -> None:
    """A request from one leaf is answered by the one server on another leaf; errors come back."""

    async def handle(data: bytes) -> bytes:
        if data == b"fail":
            raise ValueError("no such thing")
        return data.upper()

    async with (
        await open_messenger(gravd.endpoint) as server,
        await open_messenger(gravd.endpoint) as asker,
    ):
        with pytest.raises(NoResponders):
            await asker.request("mesh.upper", b"early", timeout=2.0)
        await server.serve("mesh.upper", handle)
        await _leaf(asker).wait_server("mesh.upper", timeout=10.0)
        assert await asker.request("mesh.upper", b"abc", timeout=5.0) == b"ABC"
        with pytest.raises(RequestFailed, match="no such thing"):
            await asker.request("mesh.upper", b"fail", timeout=5.0)


async def test_close_while_a_mesh_request_is_pending_raises_messenger_closed(gravd: Gravd) -> None:
    """close() on the asking leaf ends its pending request with MessengerClosed."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def stuck(data: bytes) -> bytes:
        started.set()
        await release.wait()
        return data

    async with await open_messenger(gravd.endpoint) as server:
        await server.serve("mesh.stuck", stuck)
        asker = await open_messenger(gravd.endpoint)
        await _leaf(asker).wait_server("mesh.stuck", timeout=10.0)
        pending = asyncio.create_task(asker.request("mesh.stuck", b"?", timeout=30.0))
        await started.wait()
        await asker.close()
        with pytest.raises(MessengerClosed):
            await pending
        release.set()


async def test_a_wrapped_grav_is_left_running_by_close() -> None:
    """GravMessenger(grav) works in-process and close() does not stop the Grav it was given."""
    async with Grav() as grav:
        m = GravMessenger(grav)
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("local.events", q)

        async def echo(data: bytes) -> bytes:
            return data

        await m.serve("local.echo", echo)
        await m.publish("local.events", b"hi")
        assert await q.get() == b"hi"
        assert await m.request("local.echo", b"ping", timeout=2.0) == b"ping"
        await m.close()
        pod = grav.connect()
        assert not pod.closed


def _leaf(messenger: Messenger) -> GravMessenger:
    assert isinstance(messenger, GravMessenger)
    return messenger


def _leaves_wanting(node: dict[str, object], msg_type: str) -> int:
    from gravpy.filter import Pattern

    leaves = node["leaves"]
    assert isinstance(leaves, list)
    return sum(
        1
        for link in leaves
        if link["state"] == "open"
        and any(
            Pattern(p).matches(msg_type)
            for p in [*link["interests"], *(entry[1] for entry in link.get("groups", ()))]
        )
    )


async def test_publish_does_not_wait_for_a_slow_server_of_another_subject() -> None:
    """A server whose inbox backs up (a slow reader) does not hold up a publish on another
    subject: the mesh's publish waits only for its carrier, never for readers."""
    release = asyncio.Event()

    async def slow(data: bytes) -> bytes:
        await release.wait()
        return data

    async with Grav() as grav:
        grav.bus.congestion.stall_step = grav.bus.congestion.hold_budget = (
            3600.0  # the slow server is never set
        )
        # aside: it counts as moving, and may hold publishers as long as it likes
        m = GravMessenger(grav, inbox_limit=16)
        await m.serve("slow.svc", slow)
        pending = [asyncio.create_task(m.request("slow.svc", b"", timeout=60.0)) for _ in range(12)]
        await asyncio.sleep(0)  # every request is sent: one in the handler, eleven queued
        assert grav.bus.congestion.pods_congested
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await m.stream("other.events", q)
        async with asyncio.timeout(5.0):  # hang guard: before the fix this waited for `release`
            await m.publish("other.events", b"not held")
        assert await q.get() == b"not held"
        release.set()
        assert await asyncio.gather(*pending) == [b""] * 12
        await m.close()


async def test_overlapping_servers_on_two_leaves_share_each_request(gravd: Gravd) -> None:
    """Servers of "ov.*" and "*.x" on two leaves: a request on ov.x crosses gravd to one of them."""
    handled: Counter[str] = Counter()
    async with _two_servers(gravd, [("ov.*", "star"), ("*.x", "tail")], "ov.x", handled) as asker:
        replies = [await asker.request("ov.x", b"%d" % i, timeout=5.0) for i in range(20)]
        # each server handles in order: a request only it matches comes after any copy of ov.x
        assert await asker.request("ov.fence", b"", timeout=5.0) == b"star"
        assert await asker.request("fence.x", b"", timeout=5.0) == b"tail"
    assert set(replies) <= {b"star", b"tail"}
    assert sum(handled.values()) == 20 + 2


async def test_wait_server_waits_for_a_server_not_for_a_stream(gravd: Gravd) -> None:
    """wait_server does not return for a stream of the subject; it returns once a server joins,
    and the request that follows is answered."""

    async def echo(data: bytes) -> bytes:
        return data

    async with (
        await open_messenger(gravd.endpoint) as other,
        await open_messenger(gravd.endpoint) as asker,
    ):
        q: asyncio.Queue[bytes] = asyncio.Queue()
        await other.stream("ws.svc", q)
        await _leaf(asker).wait_interest("ws.svc", timeout=10.0)  # the stream is known here
        with pytest.raises(WaitTimeout):
            await _leaf(asker).wait_server("ws.svc", timeout=0.3)
        await other.serve("ws.svc", echo)
        await _leaf(asker).wait_server("ws.svc", timeout=10.0)
        assert await asker.request("ws.svc", b"found", timeout=5.0) == b"found"


async def test_a_wildcard_stream_does_not_see_the_mesh_s_own_events(gravd: Gravd) -> None:
    """A stream on ">" gets what applications publish, not gravd's grav.events.system traffic
    (a leaf linked); a stream naming grav.events.> still gets those."""
    async with await open_messenger(gravd.endpoint) as reader:
        everything: asyncio.Queue[bytes] = asyncio.Queue()
        events: asyncio.Queue[bytes] = asyncio.Queue()
        await reader.stream(">", everything)
        await reader.stream("grav.events.>", events)
        await gravd.wait_http(lambda node: _leaves_wanting(node, "grav.events.system") == 1)
        async with await open_messenger(gravd.endpoint) as writer:  # gravd: "leaf ... linked"
            await events.get()  # the event reached the reader, so ">" had its copy before now
            await _leaf(writer).wait_interest("app.marker", timeout=10.0)
            await writer.publish("app.marker", b"marker")
            assert await everything.get() == b"marker"


async def _echo(data: bytes) -> bytes:
    return data


async def test_requests_a_full_server_pod_refuses_count_as_the_server_s_drops() -> None:
    """Requests lost to a server pod's full inbox count as received and dropped in the server's
    statistics (as the node counts them), and every request answered counts as delivered."""
    release = asyncio.Event()

    async def slow(data: bytes) -> bytes:
        await release.wait()
        return data

    async with Grav() as grav, GravMessenger(grav, inbox_limit=4) as m:
        served = await m.serve("full.svc", slow)
        asks = [
            asyncio.create_task(m.request("full.svc", b"%d" % i, timeout=60.0)) for i in range(10)
        ]
        try:
            await asyncio.sleep(0)  # each task sends its request in its first step
            lost = grav.statistics().dropped_overflow  # what the node saw the pod refuse
            assert 0 < lost < 10
            assert served.statistics().dropped == lost
            release.set()
            kept = 10 - lost  # the pod drops the newest: the first ones are answered
            assert await asyncio.gather(*asks[:kept]) == [b"%d" % i for i in range(kept)]
            assert not any(ask.done() for ask in asks[kept:])  # nobody will answer these
            stats = served.statistics()
            assert (stats.received, stats.delivered, stats.dropped) == (10, kept, lost)
        finally:
            for ask in asks:
                ask.cancel()
            await asyncio.gather(*asks, return_exceptions=True)


async def test_a_request_every_link_refuses_raises_publish_failed_at_once() -> None:
    """A request to a server on a leaf whose link queue is full raises PublishFailed at once (the
    receipt says dropped), not the core's MessageDropped and not a timeout; the rest are answered."""
    net = MemoryNetwork()
    node_grav = Grav(transport=MemoryTransport(net), hub_config=HubConfig(queue_limit=16))
    async with node_grav as node, GravMessenger(node) as asker:
        leaf_grav = Grav(
            transport=MemoryTransport(net),
            role=ROLE_LEAF,
            attach_to=node.endpoints()[0],
            attach_timeout=5,
        )
        async with leaf_grav as leaf, GravMessenger(leaf) as server:
            await server.serve("load.svc", _echo)
            await asker.wait_server("load.svc", timeout=10.0)
            asks = [asker.request("load.svc", b"%d" % i, timeout=30.0) for i in range(40)]
            results = await asyncio.gather(*asks, return_exceptions=True)  # one loop turn
    refused = [r for r in results if not isinstance(r, bytes)]
    answered = [r for r in results if isinstance(r, bytes)]
    assert refused, "the link queue (16) took all 40 requests of one loop turn"
    assert all(isinstance(r, PublishFailed) and "did not leave" in str(r) for r in refused)
    assert answered == [b"%d" % i for i in range(len(answered))]
