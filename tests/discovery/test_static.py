"""Tests for discovery.static: a fixed list of endpoints reported once."""

from __future__ import annotations

import asyncio

import pytest

from discovery.static import StaticDiscovery, normalize_endpoint
from gravpy.errors import UsageError
from gravpy.plugins import DiscoveryContext, PeerReport

_CTX = DiscoveryContext(
    node_uuid="self",
    belongs_to="*",
    endpoints=("ws://10.0.0.1:8080/meta/message",),
    protocol_version=1,
)


async def _reports_then_cancel(discovery: StaticDiscovery, expected: int) -> list[PeerReport]:
    """Run ``discovery`` until ``expected`` reports, check it is still running, cancel it."""
    reports: list[PeerReport] = []
    enough = asyncio.Event()

    def report(peer: PeerReport) -> None:
        reports.append(peer)
        if len(reports) >= expected:
            enough.set()

    run = asyncio.create_task(discovery.run(_CTX, report))
    if expected:
        await enough.wait()
    for _ in range(10):
        await asyncio.sleep(0)  # let it run: it must neither finish nor report again
    assert not run.done()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    return reports


async def test_reports_each_endpoint_once_then_waits() -> None:
    """Every endpoint is reported once, with source "static", and run() only ends on cancel."""
    urls = ["ws://10.0.0.5:8080/meta/message", "wss://peer.example:443/grav"]
    reports = await _reports_then_cancel(StaticDiscovery(urls), expected=2)
    assert reports == [PeerReport(url, None, "static") for url in urls]


async def test_duplicates_and_own_endpoints_are_skipped() -> None:
    """A repeated endpoint is reported once and this node's own endpoint never."""
    urls = ["10.0.0.5:8080", "ws://10.0.0.5:8080/meta/message", "10.0.0.1:8080"]
    reports = await _reports_then_cancel(StaticDiscovery(urls), expected=1)
    assert [r.endpoint for r in reports] == ["ws://10.0.0.5:8080/meta/message"]


async def test_an_empty_list_reports_nothing() -> None:
    """With no endpoints run() reports nothing and still waits for cancellation."""
    assert await _reports_then_cancel(StaticDiscovery([]), expected=0) == []


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("10.0.0.5:8080", "ws://10.0.0.5:8080/meta/message"),
        ("10.0.0.5:8080/custom", "ws://10.0.0.5:8080/custom"),
        ("ws://[fe80::1]:9000", "ws://[fe80::1]:9000/meta/message"),
        ("  wss://host.lan:443/x  ", "wss://host.lan:443/x"),
        ("http://10.0.0.7:8081/meta/message", "http://10.0.0.7:8081/meta/message"),
        ("http://10.0.0.7:8081", "http://10.0.0.7:8081/meta/http"),
        ("https://host.lan:443", "https://host.lan:443/meta/http"),
        ("tcp://10.0.0.7:8082", "tcp://10.0.0.7:8082"),  # the TCP transport has no path
        ("tls://host.lan:8082", "tls://host.lan:8082"),
    ],
)
def test_endpoints_are_normalized(given: str, expected: str) -> None:
    """Bare host:port gets ws://; a URL without a path gets its transport's; others are kept."""
    assert normalize_endpoint(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "10.0.0.5",
        "ws://10.0.0.5/meta/message",
        "ws://:8080/x",
        "10.0.0.5:99999",
        "10.0.0.5:0",
        "ws://10.0.0.5:80 80/x",
        "1ws://h:1/x",
    ],
)
def test_a_bad_endpoint_is_named_in_the_error(bad: str) -> None:
    """Construction fails with UsageError quoting the first bad endpoint."""
    with pytest.raises(UsageError, match="bad static endpoint") as info:
        StaticDiscovery(["ws://10.0.0.5:8080/meta/message", bad])
    assert repr(bad) in str(info.value)


def test_a_single_string_is_refused() -> None:
    """Passing one string instead of a list is a usage error, not a list of characters."""
    with pytest.raises(UsageError, match="list of endpoints"):
        StaticDiscovery("ws://10.0.0.5:8080/meta/message")
