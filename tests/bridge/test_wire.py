"""The bridge's NATS wire (``WireClient``): its fast path is there, and it reads and writes what
plain nats-py clients do, through a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from gravpy.bridge import wire
from gravpy.bridge.outbox import Outbox
from gravpy.bridge.sequence import sequence_of
from gravpy.bridge.wire import FAST, WireClient, parse_headers
from tests.bridge.nats_proc import NatsServer

pytestmark = pytest.mark.timeout(60)

Seen = asyncio.Queue[tuple[str, str, bytes, dict[str, str] | None]]


def test_the_installed_nats_py_has_the_internals_the_fast_path_uses() -> None:
    """nats-py still has ``_send_command``, ``_flush_pending``, its pending buffer and flusher
    task, and ``_process_msg(sid, subject, reply, data, headers)``; if an upgrade loses them
    the bridge falls back, slower: this fails."""
    assert FAST


def test_header_blocks_parse_as_nats_py_reads_them() -> None:
    """A status line gives ``Status``; other lines give their trimmed key and value."""
    assert parse_headers(b"NATS/1.0 503\r\n\r\n") == {"Status": "503"}
    raw = b"NATS/1.0\r\nGrav-Meta: u 1.5\r\nGrav-H-k:  v w \r\nbad key: x\r\n\r\n"
    assert parse_headers(raw) == {"Grav-Meta": "u 1.5", "Grav-H-k": "v w"}
    assert parse_headers(b"NATS/1.0\r\n\r\n") is None


@contextlib.asynccontextmanager
async def clients(url: str, subject: str) -> AsyncIterator[tuple[WireClient, Client, Subscription]]:
    """A ``WireClient`` and a plain nats-py client with a subscription to ``subject``, both
    flushed (without it the server sometimes drops a fresh client's first messages)."""
    nc, plain = WireClient(), await nats.connect(url)
    try:
        await nc.connect(url)
        sub = await plain.subscribe(subject)
        await plain.flush()
        await nc.flush()
        yield nc, plain, sub
    finally:
        await plain.close()
        await nc.close()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public-api"])
async def test_batches_reach_plain_subscribers_and_plain_publishers_reach_sinks(
    nats_one: NatsServer, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A published batch reaches a nats-py subscriber with payloads untouched and the headers
    set; a nats-py publisher's messages (with and without headers) reach a direct sink."""
    monkeypatch.setattr(wire, "FAST", fast)
    async with clients(nats_one.url, "w.>") as (nc, plain, sub):
        batch = [
            ("w.a", "in.1", b"one", "u1 1.5 s=t:1", ""),
            ("w.b", "", b"", "u2 2.5", "Grav-H-k: v w\r\n"),
        ]
        failed: dict[str, int] = {}
        assert await nc.publish_batch(batch, lambda e, n: failed.update({e: n})) == 2
        first, second = await sub.next_msg(timeout=5), await sub.next_msg(timeout=5)
        assert (first.subject, first.reply, first.data) == ("w.a", "in.1", b"one")
        assert first.headers == {"Grav-Meta": "u1 1.5 s=t:1"}
        assert (second.data, second.headers) == (b"", {"Grav-Meta": "u2 2.5", "Grav-H-k": "v w"})
        assert failed == {}
        seen: Seen = asyncio.Queue()
        await nc.subscribe_direct("p.>", lambda s, r, d, h: seen.put_nowait((s, r, d, h)))
        await nc.flush()
        await plain.flush()
        await plain.publish("p.x", b"plain", reply="back")
        await plain.publish("p.y", b"meta", headers={"Grav-Meta": "u3 3.5"})
        async with asyncio.timeout(5):
            assert await seen.get() == ("p.x", "back", b"plain", None)
            assert await seen.get() == ("p.y", "", b"meta", {"Grav-Meta": "u3 3.5"})


async def test_a_line_break_in_an_id_cannot_add_a_header(nats_one: NatsServer) -> None:
    """An id with a line break (ids are checked for length only) travels as spaces inside
    ``Grav-Meta``, as nats-py's ``publish`` would send it: no header is added."""
    async with clients(nats_one.url, "w.a") as (nc, _, sub):
        batch = [("w.a", "", b"x", "u1 1.5 p=a\r\nGrav-H-k: v", "")]
        assert await nc.publish_batch(batch, lambda e, n: None) == 1
        got = await sub.next_msg(timeout=5)
        assert got.headers == {"Grav-Meta": "u1 1.5 p=a  Grav-H-k: v"}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public-api"])
async def test_a_batch_handed_over_while_the_flusher_is_gone_is_sent_or_counted(
    nats_one: NatsServer, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-py's flusher ends on a write error without a word; until its read loop sees the
    connection drop, the client says connected and nats-py's own flush writes to the dead
    transport and raises. A batch handed over then raises nothing. The fast path sends all of
    it, and what nats-py's own ``publish`` adds, in order, once nats-py has reconnected; the
    public API's path may have written a message to the dead transport: it is counted."""
    monkeypatch.setattr(wire, "FAST", fast)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    failed: dict[str, int] = {}

    def count(error: str, n: int) -> None:
        failed[error] = failed.get(error, 0) + n

    async with clients(nats_one.url, "w.a") as (nc, _, sub):
        await nc.close()
        await nc.connect(nats_one.url, reconnected_cb=on_reconnect, reconnect_time_wait=0.05)
        await nc.flush()
        flusher = nc._flusher_task
        assert flusher is not None
        flusher.cancel()  # what a RuntimeError from a closed transport does to it
        await asyncio.gather(flusher, return_exceptions=True)
        nc._transport.close()  # the connection drops; nats-py has not noticed yet
        assert nc.is_connected
        batch = [("w.a", "", str(i).encode(), f"u{i} 1.0", "") for i in range(3)]
        sent = await nc.publish_batch(batch, count)
        if fast:  # nats-py's own publish goes through the same flush
            await nc.publish("w.a", b"3")
            sent += 1
        async with asyncio.timeout(10):
            await reconnected.wait()
        assert await nc.publish_batch([("w.a", "", b"end", "u 1.0", "")], count) == 1
        got = []
        while (m := await sub.next_msg(timeout=5)).data != b"end":
            got.append(m.data)
        assert len(got) == sent, (got, sent)
        assert sent + sum(failed.values()) == 3 + fast, (sent, failed)
        assert got == sorted(got)
        if fast:
            assert failed == {}


async def test_a_closed_client_counts_the_whole_batch(nats_one: NatsServer) -> None:
    """Publishing on a closed connection hands nothing over and counts every message by the
    nats-py error's name."""
    nc = WireClient()
    await nc.connect(nats_one.url)
    await nc.close()
    failed: dict[str, int] = {}
    batch = [("w.a", "", b"x", "u 1.0", "")] * 3
    assert await nc.publish_batch(batch, lambda e, n: failed.update({e: n})) == 0
    assert failed == {"ConnectionClosedError": 3}


async def test_an_idle_outbox_hands_over_at_once_and_keeps_order_and_numbers(
    nats_one: NatsServer,
) -> None:
    """With nothing queued, ``put`` hands a message to nats-py before returning; a burst that
    queues behind it arrives after it, in order, numbered 1, 2, 3... without a gap."""
    nc, plain = WireClient(), await nats.connect(nats_one.url)
    await nc.connect(nats_one.url)
    outbox = Outbox(limit=1000, high_water=500)
    task = asyncio.create_task(outbox.publish_all(nc))
    try:
        sub = await plain.subscribe("w.a")
        await plain.flush()
        await nc.flush()  # (without it the server sometimes drops nc's first messages)
        assert outbox.put(("w.a", "in.x", b"0", "u0 1.0", ""))
        assert outbox.published == 1  # handed over, not queued
        for i in range(1, 300):
            assert outbox.put(("w.a", "in.x", str(i).encode(), f"u{i} 1.0", ""))
        got = [await sub.next_msg(timeout=5) for _ in range(300)]
        assert [m.data for m in got] == [str(i).encode() for i in range(300)]
        numbers = [sequence_of(m.headers["Grav-Meta"]) for m in got if m.headers]
        assert [n for _, n in filter(None, numbers)] == list(range(1, 301))
        assert outbox.lost == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await plain.close()
        await nc.close()
