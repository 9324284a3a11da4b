"""InMemoryMessenger: the conformance check, and the URL that opens it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gravpy.errors import PublishFailed, RequestFailed, RequestTimeout, UsageError
from gravpy.messenger import InMemoryMessenger, Messenger, open_messenger
from gravpy.testing import check_messenger


async def test_memory_messenger_passes_the_conformance_check() -> None:
    """The in-memory backend passes every step of check_messenger."""

    async def factory() -> Messenger:
        return InMemoryMessenger()

    await check_messenger(factory)


async def test_open_messenger_memory_url_gives_an_in_memory_messenger() -> None:
    """open_messenger("memory://") returns an InMemoryMessenger that satisfies the Protocol."""
    async with await open_messenger("memory://") as m:
        assert isinstance(m, InMemoryMessenger)
        assert isinstance(m, Messenger)


async def test_open_messenger_rejects_an_unknown_scheme() -> None:
    """An unknown URL scheme raises UsageError naming the schemes that work."""
    with pytest.raises(UsageError, match="sqlite"):
        await open_messenger("carrier-pigeon://coop")


async def test_a_server_with_a_full_inbox_refuses_requests() -> None:
    """A request to a server whose bounded inbox is full raises PublishFailed at once, and the
    server counts it in statistics().dropped."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(data: bytes) -> bytes:
        started.set()
        await release.wait()
        return data

    async with InMemoryMessenger(server_inbox=1) as m:
        served = await m.serve("svc.slow", slow)
        first = asyncio.create_task(m.request("svc.slow", b"1", timeout=5.0))
        await started.wait()  # the worker holds the first; the inbox (1) is empty
        second = asyncio.create_task(m.request("svc.slow", b"2", timeout=5.0))
        third = asyncio.create_task(m.request("svc.slow", b"3", timeout=5.0))  # runs after second
        with pytest.raises(PublishFailed, match="full inbox"):
            await third
        release.set()
        assert await first == b"1"
        assert await second == b"2"
        stats = served.statistics()
    assert (stats.received, stats.delivered, stats.dropped) == (3, 2, 1)


async def test_requests_queued_for_a_server_that_unsubscribes_end_in_request_timeout() -> None:
    """Unsubscribing a server leaves its in-flight and queued requesters with RequestTimeout, as
    on the other backends, not a bare CancelledError."""
    started = asyncio.Event()

    async def stuck(data: bytes) -> bytes:
        started.set()
        await asyncio.Event().wait()
        return data

    async with InMemoryMessenger() as m:
        served = await m.serve("svc.gone", stuck)
        in_flight = asyncio.create_task(m.request("svc.gone", b"1", timeout=0.5))
        await started.wait()
        queued = asyncio.create_task(m.request("svc.gone", b"2", timeout=0.5))
        await asyncio.sleep(0)  # the second request is now in the server's inbox
        await served.unsubscribe()
        results = await asyncio.gather(in_flight, queued, return_exceptions=True)
    assert [type(r) for r in results] == [RequestTimeout, RequestTimeout]


async def test_a_handler_returning_non_bytes_counts_once_as_failed() -> None:
    """A handler that returns a str fails the request and counts as failed, not also delivered."""

    async def wrong(data: bytes) -> bytes:
        return "text"  # type: ignore[return-value]

    async with InMemoryMessenger() as m:
        served = await m.serve("svc.wrong", wrong)
        with pytest.raises(RequestFailed, match="not bytes"):
            await m.request("svc.wrong", b"", timeout=5.0)
        stats = served.statistics()
    assert (stats.received, stats.delivered, stats.failed) == (1, 0, 1)


async def test_a_bool_timeout_is_refused() -> None:
    """request(timeout=True) raises UsageError: a bool is not a number of seconds."""
    async with InMemoryMessenger() as m:
        with pytest.raises(UsageError, match="timeout"):
            await m.request("svc.any", b"", timeout=True)


@pytest.mark.parametrize("url", ["memory://", "sqlite://{tmp}/bus.db", "ws://127.0.0.1:9/x"])
async def test_an_unknown_option_raises_usage_error_naming_it(url: str, tmp_path: Path) -> None:
    """open_messenger(url, bogus=1) raises UsageError naming the option and the accepted ones."""
    with pytest.raises(UsageError, match="bogus_option") as caught:
        await open_messenger(url.format(tmp=tmp_path), bogus_option=1)
    assert "accepted" in str(caught.value)


async def test_sqlite_url_without_a_path_raises_usage_error() -> None:
    """open_messenger("sqlite://") raises UsageError, not a raw sqlite3 error."""
    with pytest.raises(UsageError, match="path"):
        await open_messenger("sqlite://")


async def test_a_publish_to_a_server_with_a_full_inbox_is_dropped_and_counted() -> None:
    """A publish that finds its server's bounded inbox full is dropped (counted in the server's
    statistics) without blocking or failing the publisher."""
    started = asyncio.Event()
    release = asyncio.Event()
    handled: asyncio.Queue[bytes] = asyncio.Queue()

    async def slow(data: bytes) -> bytes:
        started.set()
        await release.wait()
        handled.put_nowait(data)
        return data

    async with InMemoryMessenger(server_inbox=1) as m:
        served = await m.serve("svc.events", slow)
        await m.publish("svc.events", b"1")
        await started.wait()  # the worker holds the first; the inbox (1) is empty
        for data in (b"2", b"3", b"4"):
            await m.publish("svc.events", data)
        assert served.statistics().dropped == 2
        release.set()
        assert [await handled.get(), await handled.get()] == [b"1", b"2"]
        assert await m.request("svc.events", b"fence", timeout=5.0) == b"fence"
        stats = served.statistics()
    assert handled.get_nowait() == b"fence"
    assert (stats.received, stats.delivered, stats.dropped) == (5, 3, 2)


@pytest.mark.parametrize(
    ("url", "option", "value"),
    [
        ("memory://", "server_inbox", "x"),
        ("memory://", "server_inbox", 0),
        ("memory://", "server_inbox", True),
        ("sqlite://{tmp}/bus.db", "poll_interval", "fast"),
        ("sqlite://{tmp}/bus.db", "prune_interval", 0),
        ("sqlite://{tmp}/bus.db", "busy_timeout", -1.0),
        ("sqlite://{tmp}/bus.db", "outbox_limit", 0),
        ("sqlite://{tmp}/bus.db", "server_inbox", 2.5),
        ("sqlite://{tmp}/bus.db", "retention_rows", "all"),
        ("sqlite://{tmp}/bus.db", "retention_seconds", False),
    ],
)
async def test_a_bad_option_value_raises_usage_error_naming_it(
    url: str, option: str, value: object, tmp_path: Path
) -> None:
    """open_messenger refuses an option of the wrong type or range with UsageError naming it."""
    with pytest.raises(UsageError, match=f"^{option} must be") as caught:
        await open_messenger(url.format(tmp=tmp_path), **{option: value})
    assert repr(value) in str(caught.value)
