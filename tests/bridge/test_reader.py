"""The bridge's NATS protocol reader (``gravpy.bridge.reader.Reader``) reads any byte stream,
however it is split into chunks, exactly as nats-py's own parser does.

The client here records what the parser hands it; the real client and server are in
``test_wire.py`` and every bridge test, which read all their traffic through a ``Reader``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from gravpy.bridge.reader import Reader, Sink, headers_of

SINK_SIDS = (1, 2)  # sids 3 and 4 have no sink: nats-py's ``_process_msg`` takes them
Event = tuple[Any, ...]


class Recorder:
    """What a parser hands a nats-py client, in order; sinks on ``sinks``."""

    def __init__(self, sinks: tuple[int, ...] = SINK_SIDS) -> None:
        self.events: list[Event] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self._sinks: dict[int, Sink] = {sid: self._sink(sid) for sid in sinks}
        self._error_cb: Callable[[Exception], Awaitable[None]] = self._record_error

    def _sink(self, sid: int) -> Sink:
        def sink(subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
            if data == b"boom":
                raise ValueError("a sink's bug")
            self.events.append(("msg", sid, subject, reply, data, headers))

        return sink

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        await asyncio.sleep(0)  # (a real await: the reader keeps the chunk's rest meanwhile)
        self.events.append(
            ("msg", sid, subject.decode(), reply.decode(), data, headers_of(headers))
        )

    async def _record_error(self, exc: Exception) -> None:
        self.events.append(("error", repr(exc)))

    async def _process_ping(self) -> None:
        self.events.append(("ping",))

    async def _process_pong(self) -> None:
        self.events.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.events.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.events.append(("err", err))


def message(sid: int, reply: str, headers: bytes, payload: bytes) -> bytes:
    subject = f"gravpy.m.t{sid}"
    args = f"{subject} {sid} {reply} " if reply else f"{subject} {sid} "
    if not headers:
        return f"MSG {args}{len(payload)}\r\n".encode() + payload + b"\r\n"
    size = f"{len(headers)} {len(headers) + len(payload)}"
    return f"HMSG {args}{size}\r\n".encode() + headers + payload + b"\r\n"


HEADER_BLOCKS = (
    b"",
    b"NATS/1.0\r\nGrav-Meta: 0a1b 1764550000.5 s=t:7\r\n\r\n",
    b"NATS/1.0\r\nGrav-Meta: u 1.5\r\nGrav-H-k: v\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
)
CONTROL = (b"PING\r\n", b"PONG\r\n", b"+OK\r\n", b'INFO {"max_payload": 1048576}\r\n')

items = st.one_of(
    st.builds(
        message,
        st.sampled_from((1, 2, 3, 4)),
        st.sampled_from(("", "_INBOX.x.1", "r")),
        st.sampled_from(HEADER_BLOCKS),
        st.binary(max_size=40).filter(lambda b: b != b"boom"),
    ),
    st.sampled_from(CONTROL),
)


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


async def read(parser: Parser, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await parser.parse(chunk)


def events_of(make: type[Parser], chunks: list[bytes]) -> tuple[list[Event], bytes]:
    client = Recorder()
    parser = make(client)
    asyncio.run(read(parser, chunks))
    return client.events, bytes(parser.buf)


@settings(max_examples=300, deadline=None)
@given(st.lists(items, max_size=12), st.lists(st.integers(min_value=0), max_size=8))
def test_any_stream_in_any_chunks_reads_as_nats_py_reads_it(
    stream_items: list[bytes], cuts: list[int]
) -> None:
    """Same messages (to sinks or not), same control lines, same order, same leftover."""
    stream = b"".join(stream_items)
    expected, _ = events_of(Parser, [stream])
    got, left = events_of(Reader, chunked(stream, cuts))
    assert got == expected
    assert left == b""


def test_an_incomplete_message_waits_for_the_rest() -> None:
    """A message cut anywhere, even inside its control line, arrives once it is whole."""
    stream = message(1, "r", HEADER_BLOCKS[1], b"payload") + b"PING\r\n"
    for cut in range(1, len(stream)):
        client = Recorder()
        parser = Reader(client)
        asyncio.run(read(parser, [stream[:cut]]))
        assert ("ping",) not in client.events
        assert len(client.events) == (1 if cut >= len(stream) - len(b"PING\r\n") else 0)
        asyncio.run(read(parser, [stream[cut:]]))
        assert client.events == [
            ("msg", 1, "gravpy.m.t1", "r", b"payload", {"Grav-Meta": "0a1b 1764550000.5 s=t:7"}),
            ("ping",),
        ]
        assert parser.buf == b""


@pytest.mark.parametrize(
    "line",
    [
        b"MSG gravpy.m.t 1\r\n",
        b"MSG gravpy.m.t x 3\r\nabc\r\n",
        b"HMSG gravpy.m.t 1 9 4\r\nabcd\r\n",  # headers larger than the whole
        b"HMSG gravpy.m.t 1 r 4 -1\r\n",
        b"MSG gravpy.m.t 1 a b 3\r\nabc\r\n",
        b"BOGUS\r\n",
    ],
)
def test_a_malformed_line_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        events_of(Reader, [message(1, "", b"", b"ok") + line])


def test_a_sink_that_raises_is_reported_and_the_stream_goes_on() -> None:
    stream = message(1, "", b"", b"boom") + message(2, "", b"", b"next")
    events, _ = events_of(Reader, [stream])
    assert events == [
        ("error", 'ValueError("a sink\'s bug")'),
        ("msg", 2, "gravpy.m.t2", "", b"next", None),
    ]


def test_what_follows_a_reset_during_an_await_is_dropped() -> None:
    """nats-py resets the parser when it reconnects: the rest of a chunk read from the old
    connection must not be read as the new connection's."""
    client = Recorder()
    parser = Reader(client)

    async def reconnect() -> None:
        client.events.append(("ping",))
        parser.reset()

    client._process_ping = reconnect  # type: ignore[method-assign]
    stream = message(1, "", b"", b"a") + b"PING\r\n" + message(2, "", b"", b"old")
    asyncio.run(read(parser, [stream]))
    asyncio.run(read(parser, [message(2, "", b"", b"new")]))
    assert [e[4] if e[0] == "msg" else e[0] for e in client.events] == [b"a", "ping", b"new"]


def test_a_large_message_in_small_chunks_arrives_whole_and_what_follows_is_read() -> None:
    """A 300 KB message read 1 KB at a time arrives once, whole; a line cut after it is read
    as soon as its end comes (the reader waits for the large message only while it is one)."""
    client = Recorder()
    parser = Reader(client)
    payload = bytes(range(256)) * 1200
    stream = message(1, "", HEADER_BLOCKS[1], payload) + b"PI"
    asyncio.run(read(parser, [stream[i : i + 1024] for i in range(0, len(stream), 1024)]))
    assert [(e[0], e[1], len(e[4])) for e in client.events] == [("msg", 1, len(payload))]
    assert client.events[0][4] == payload
    asyncio.run(read(parser, [b"NG\r\n"]))
    assert client.events[-1] == ("ping",)
    assert parser.buf == b""


def test_what_goes_to_sinks_is_in_nats_pys_stats_up_to_a_malformed_line() -> None:
    """Messages to sinks count in nats-py's ``in_msgs`` and ``in_bytes`` (its own
    ``_process_msg`` counts the others), across awaits and chunks, and up to a malformed
    line, which raises ``ProtocolError``."""
    payloads = [b"a", b"bb", b"ccc", b"dddd"]
    first = message(1, "r", HEADER_BLOCKS[1], payloads[0]) + message(2, "", b"", payloads[1])
    second = (
        b"PING\r\n"
        + message(1, "", HEADER_BLOCKS[2], payloads[2])
        + message(3, "", b"", b"not to a sink")
        + message(2, "r", b"", payloads[3])
        + b"HMSG gravpy.m.t1 1 r x 10\r\n"
    )
    client = Recorder()
    parser = Reader(client)
    asyncio.run(read(parser, [first]))
    assert client.stats == {"in_msgs": 2, "in_bytes": 3}
    with pytest.raises(ProtocolError):
        asyncio.run(read(parser, [second]))
    assert client.stats == {"in_msgs": 4, "in_bytes": 10}
    assert [e[4] for e in client.events if e[0] == "msg"] == [
        *payloads[:3],
        b"not to a sink",
        payloads[3],
    ]
