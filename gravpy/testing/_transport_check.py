"""The transport conformance check behind :func:`gravpy.testing.check_transport`.

Any transport's tests run it: ``await check_transport(lambda: MyTransport(host="127.0.0.1",
port=0))``. It drives two instances through every behaviour the core relies on and raises
AssertionError naming the first step that failed or hung.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from gravpy.errors import GravError, LinkClosedError, TransportError, UsageError
from gravpy.plugins import Link, Transport
from gravpy.testing.logs import capture_logs

__all__ = ["check_transport"]


class _Accepted:
    """A link handed to the check by ``on_link``, whose handler runs until ``release`` is set."""

    __slots__ = ("link", "release")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.release = asyncio.Event()


class _Listener:
    """An ``on_link`` handler that hands each accepted link over to the check."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[_Accepted] = asyncio.Queue(maxsize=16)
        self.every: list[_Accepted] = []

    async def on_link(self, link: Link) -> None:
        box = _Accepted(link)
        self.every.append(box)
        await self.accepted.put(box)
        await box.release.wait()

    def release_all(self) -> None:
        for box in self.every:
            box.release.set()


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def _expect_closed(link: Link, what: str) -> LinkClosedError:
    """The next ``link.recv()`` must raise LinkClosedError; ``what`` names the link on failure."""
    try:
        frame = await link.recv()
    except LinkClosedError as exc:
        return exc
    raise AssertionError(
        f"{what}: expected LinkClosedError from recv(), got a {len(frame)}-byte frame"
    )


async def _send_all(link: Link, frames: list[bytes]) -> None:
    for frame in frames:
        await link.send(frame)


async def _recv_n(link: Link, n: int) -> list[bytes]:
    return [await link.recv() for _ in range(n)]


async def _exchange(a: Link, b: Link, a_to_b: list[bytes], b_to_a: list[bytes]) -> None:
    """Send both lists at once, both ways, and check each arrives whole and in order."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_send_all(a, a_to_b))
        tg.create_task(_send_all(b, b_to_a))
        got_b = tg.create_task(_recv_n(b, len(a_to_b)))
        got_a = tg.create_task(_recv_n(a, len(b_to_a)))
    _expect(got_b.result() == a_to_b, "frames from the dialler arrived changed or out of order")
    _expect(got_a.result() == b_to_a, "frames from the acceptor arrived changed or out of order")


def _pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class _TransportCheck:
    """The steps of :func:`check_transport`; ``b`` listens, ``a`` dials it."""

    def __init__(self, a: Transport, b: Transport, listener: _Listener, timeout: float) -> None:
        self.a, self.b, self.listener, self.timeout = a, b, listener, timeout

    async def connect(self) -> tuple[Link, _Accepted]:
        dialled = await self.a.dial(self.b.endpoints()[0], timeout=self.timeout)
        return dialled, await self.listener.accepted.get()

    async def identity(self) -> None:
        for t in (self.a, self.b):
            urls = t.endpoints()
            _expect(bool(urls), f"{t!r}.endpoints() is empty after start()")
            for url in urls:
                _expect(url.partition("://")[0] in t.schemes, f"{url!r} not in {t.schemes}")
        dialled, acc = await self.connect()
        _expect(dialled.initiator and not acc.link.initiator, "initiator flags are wrong")
        _expect(dialled.transport == acc.link.transport == self.a.name, "link.transport is wrong")
        _expect(bool(dialled.remote_address and acc.link.remote_address), "remote_address is empty")
        await dialled.close()

    async def frames_in_order(self) -> None:
        dialled, acc = await self.connect()
        await _exchange(dialled, acc.link, [b"ping"], [b"pong"])
        limit = min(self.a.max_frame_bytes, self.b.max_frame_bytes)
        await _exchange(dialled, acc.link, [_pattern(limit)], [_pattern(limit)[::-1]])
        small = [b""] + [i.to_bytes(4, "big") * (i % 8) for i in range(1, 1000)]
        await _exchange(dialled, acc.link, small, small[::-1])
        await dialled.close()

    async def oversize_frame(self) -> None:
        dialled, acc = await self.connect()
        with contextlib.suppress(LinkClosedError):
            await dialled.send(_pattern(self.b.max_frame_bytes + 1))
        await _expect_closed(acc.link, "receiver of an oversize frame")
        await _expect_closed(dialled, "sender of an oversize frame")

    async def close_by(self, closer: Link, other: Link, reason: str) -> None:
        await closer.send(b"last")
        await closer.close(reason)
        _expect(await other.recv() == b"last", "a frame sent before close() was lost")
        exc = await _expect_closed(other, "peer of a closed link")
        _expect(reason in str(exc), f"the close reason {reason!r} is missing from {exc}")
        for link, side in ((closer, "closer"), (other, "peer")):
            with contextlib.suppress(LinkClosedError):
                await link.send(b"after close")
                raise AssertionError(f"send() on a closed link ({side}) did not raise")
        await _expect_closed(closer, "recv() after close()")
        await closer.close(reason)  # idempotent

    async def close_by_dialler(self) -> None:
        dialled, acc = await self.connect()
        await self.close_by(dialled, acc.link, "bye from the dialler")

    async def close_by_acceptor(self) -> None:
        dialled, acc = await self.connect()
        await self.close_by(acc.link, dialled, "bye from the acceptor")

    async def handler_return_closes(self) -> None:
        dialled, acc = await self.connect()
        acc.release.set()
        await _expect_closed(dialled, "link whose on_link handler returned")

    async def dial_closed_port(self, make_transport: Callable[[], Transport]) -> None:
        gone = make_transport()
        await gone.start(_Listener().on_link)
        url = gone.endpoints()[0]
        await gone.stop()
        await self.expect_dial_fails(url)

    async def expect_dial_fails(self, url: str) -> None:
        try:
            link = await self.a.dial(url, timeout=self.timeout)
        except TransportError as exc:
            _expect(exc.__cause__ is not None, f"TransportError without __cause__: {exc}")
            return
        await link.close()
        raise AssertionError(f"dial({url!r}) to a stopped transport succeeded")

    async def failing_handler(self, make_transport: Callable[[], Transport]) -> None:
        async def failing(link: Link) -> None:
            raise RuntimeError("handler bug")

        faulty = make_transport()
        await faulty.start(failing)
        try:
            with capture_logs() as logs:
                link = await self.a.dial(faulty.endpoints()[0], timeout=self.timeout)
                await _expect_closed(link, "link whose on_link handler raised")
                await link.close()
        finally:
            await faulty.stop()
        errors = [e["event"] for e in logs if e.get("log_level") == "error"]
        _expect(errors == ["link_handler_failed"], f"a failing handler logged {errors}")

    async def dial_timeout(self) -> None:
        """A server that accepts TCP but never answers: dial() gives up after its timeout.

        Only for transports whose endpoints are TCP ``host:port`` URLs (not the in-memory one).
        """
        endpoint = urlsplit(self.b.endpoints()[0])
        if endpoint.port is None:
            return
        hung_up = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # returns when the dialler gives up and disconnects
            writer.close()
            await writer.wait_closed()
            hung_up.set()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            url = endpoint._replace(netloc=f"127.0.0.1:{port}").geturl()
            try:
                link = await self.a.dial(url, timeout=0.2)
            except TransportError as exc:
                _expect(
                    isinstance(exc.__cause__, TimeoutError),
                    f"dial to a silent server failed without a TimeoutError cause: {exc!r}",
                )
            else:
                await link.close()
                raise AssertionError("dial to a server that never answers succeeded")
            await hung_up.wait()

    async def lifecycle_misuse(self, make_transport: Callable[[], Transport]) -> None:
        fresh = make_transport()
        try:
            fresh.endpoints()
        except UsageError:
            pass
        else:
            raise AssertionError("endpoints() before start() did not raise UsageError")
        await fresh.start(_Listener().on_link)
        try:
            try:
                await fresh.start(_Listener().on_link)
            except UsageError:
                return
            raise AssertionError("a second start() did not raise UsageError")
        finally:
            await fresh.stop()

    async def stop_closes_links(self) -> None:
        self.listener.release_all()  # the links of earlier steps are closed: let handlers return
        dialled, acc = await self.connect()
        url = self.b.endpoints()[0]
        async with asyncio.TaskGroup() as tg:
            stopping = tg.create_task(self.b.stop())
            await _expect_closed(acc.link, "accepted link of a stopped transport")
            acc.release.set()
            await _expect_closed(dialled, "dialled link to a stopped transport")
        _expect(stopping.done(), "stop() did not return")
        await self.expect_dial_fails(url)
        await self.b.stop()  # idempotent


async def check_transport(
    make_transport: Callable[[], Transport],
    *,
    timeout: float = 10.0,
) -> None:
    """Check that the transports ``make_transport()`` builds behave as gravpy needs.

    Starts two, dials one from the other, and checks: frames both ways in order (one at the size
    limit, 1,000 small ones both ways at once); a frame over the limit closes the link on both
    sides; a close from either side reaches the other's ``recv`` with its reason, after the frames
    sent before it; returning from ``on_link`` closes the link, and so does raising from it (logged as
    ``link_handler_failed``); ``endpoints()`` before ``start()`` and a second ``start()`` raise
    UsageError; dialling a server that never answers gives up after the dial's timeout with a
    TransportError caused by TimeoutError (TCP transports); dialling a stopped transport raises
    TransportError with a ``__cause__``; ``stop()`` closes accepted links and is idempotent; no task
    is left behind. Each step must finish within ``timeout`` seconds. Raises AssertionError naming
    the failed step.
    """
    before = asyncio.all_tasks()
    a, b, listener = make_transport(), make_transport(), _Listener()
    await a.start(_Listener().on_link)
    try:
        await b.start(listener.on_link)
        check = _TransportCheck(a, b, listener, timeout)
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("identity", check.identity),
            ("frames in order", check.frames_in_order),
            ("oversize frame", check.oversize_frame),
            ("close by dialler", check.close_by_dialler),
            ("close by acceptor", check.close_by_acceptor),
            ("handler return closes", check.handler_return_closes),
            ("dial a stopped transport", lambda: check.dial_closed_port(make_transport)),
            ("failing handler", lambda: check.failing_handler(make_transport)),
            ("dial times out", check.dial_timeout),
            ("start twice, endpoints early", lambda: check.lifecycle_misuse(make_transport)),
            ("stop closes links", check.stop_closes_links),
        ]
        for label, step in steps:
            await _run_step(label, step, timeout)
    finally:
        listener.release_all()
        await b.stop()
        await a.stop()
    await _expect_no_new_tasks(before)


async def _run_step(label: str, step: Callable[[], Awaitable[None]], limit: float) -> None:
    try:
        async with asyncio.timeout(limit):
            await step()
    except TimeoutError as exc:
        raise AssertionError(f"transport check {label!r}: hung for {limit} s") from exc
    except (AssertionError, GravError) as exc:
        raise AssertionError(f"transport check {label!r}: {exc}") from exc


async def _expect_no_new_tasks(before: set[asyncio.Task[object]]) -> None:
    """Give finished tasks a few loop turns to complete, then fail on any still running."""
    current = asyncio.current_task()
    for _ in range(100):
        leaked = asyncio.all_tasks() - before - {current}
        if not leaked:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"transport check: tasks left running: {sorted(map(repr, leaked))}")
