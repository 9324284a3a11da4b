"""The messenger conformance check: ``await check_messenger(factory)``.

Every backend's tests run it, and a third-party backend can too: ``factory`` makes a new, open
``Messenger`` (an async callable); each step uses a fresh one and closes it. The check raises
AssertionError naming the first step that failed, or that hung past ``step_timeout`` seconds.

What it checks: order per publisher; ``*`` and ``>`` subjects; fan-out to every stream; ``serve`` is
deliver-to-one among several servers (each request handled exactly once); a handler that raises makes
``request`` raise ``RequestFailed`` with its text; no server at all raises ``NoResponders`` (or, with
``no_responders=False``, ``RequestTimeout``, for backends that cannot know); the traffic of a
subject as on NATS: a stream gets the requests on it too (never the replies), a server handles the
plain publishes on it too, and a request only a stream hears ends in ``RequestTimeout``; a full
stream queue drops the newest and counts it without blocking the publisher; ``unsubscribe`` is
idempotent and stops delivery; ``close()`` ends a pending request with ``MessengerClosed`` and
refuses later calls.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from gravpy.errors import (
    MessengerClosed,
    NoResponders,
    RequestFailed,
    RequestTimeout,
    UsageError,
    WaitTimeout,
)
from gravpy.messenger.base import Messenger

__all__ = ["check_messenger"]

Factory = Callable[[], Awaitable[Messenger]]
_POLL = 0.005


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def _take(queue: asyncio.Queue[bytes], n: int) -> list[bytes]:
    return [await queue.get() for _ in range(n)]


async def _until(predicate: Callable[[], bool]) -> None:
    """Re-check ``predicate`` until it holds (the step's timeout is the guard)."""
    while True:
        if predicate():
            return
        await asyncio.sleep(_POLL)  # statistics change with no event to wait on; re-check


async def _order(m: Messenger) -> None:
    q: asyncio.Queue[bytes] = asyncio.Queue()
    await m.stream("check.order", q)
    sent = [str(i).encode() for i in range(300)]
    for data in sent:
        await m.publish("check.order", data)
    got = await _take(q, len(sent))
    _expect(got == sent, f"messages from one publisher arrived out of order: {got[:20]!r}...")


async def _wildcards(m: Messenger) -> None:
    queues: dict[str, asyncio.Queue[bytes]] = {}
    for subject in ("check.wild.*", "check.wild.>", "check.wild.a"):
        queues[subject] = asyncio.Queue()
        await m.stream(subject, queues[subject])
    for subject in ("check.wild.a", "check.wild.a.b", "check.other", "check.wild.z"):
        await m.publish(subject, subject.encode())
    await m.publish("check.wild.a", b"end")
    expected = {
        "check.wild.*": [b"check.wild.a", b"check.wild.z", b"end"],
        "check.wild.>": [b"check.wild.a", b"check.wild.a.b", b"check.wild.z", b"end"],
        "check.wild.a": [b"check.wild.a", b"end"],
    }
    for subject, want in expected.items():
        got: list[bytes] = []
        while not got or got[-1] != b"end":
            got.append(await queues[subject].get())
        _expect(got == want, f"stream {subject!r} got {got!r}, expected {want!r}")


async def _fan_out(m: Messenger) -> None:
    a: asyncio.Queue[bytes] = asyncio.Queue()
    b: asyncio.Queue[bytes] = asyncio.Queue()
    await m.stream("check.fan", a)
    await m.stream("check.fan", b)
    sent = [bytes([i]) for i in range(50)]
    for data in sent:
        await m.publish("check.fan", data)
    _expect(await _take(a, 50) == sent, "the first of two streams missed messages")
    _expect(await _take(b, 50) == sent, "the second of two streams missed messages")


async def _deliver_to_one(m: Messenger) -> None:
    handled: Counter[str] = Counter()

    def server(name: str) -> Callable[[bytes], Awaitable[bytes]]:
        async def handle(data: bytes) -> bytes:
            handled[name] += 1
            return name.encode() + b":" + data

        return handle

    names = ("s1", "s2", "s3")
    for name in names:
        await m.serve("check.svc", server(name))
    replies = [await m.request("check.svc", b"seq%d" % i, timeout=5.0) for i in range(30)]
    replies += await asyncio.gather(
        *(m.request("check.svc", b"par%d" % i, timeout=5.0) for i in range(30))
    )
    for i, reply in enumerate(replies):
        want = (b"seq%d" if i < 30 else b"par%d") % (i % 30)
        server_name, _, data = reply.partition(b":")
        _expect(
            server_name.decode() in names and data == want, f"request {want!r} got reply {reply!r}"
        )
    total = sum(handled.values())
    _expect(total == 60, f"60 requests were handled {total} times ({dict(handled)}): not one each")


async def _handler_error(m: Messenger) -> None:
    async def fail(data: bytes) -> bytes:
        raise ValueError(f"boom {data.decode()}")

    await m.serve("check.fail", fail)
    try:
        await m.request("check.fail", b"42", timeout=5.0)
    except RequestFailed as exc:
        _expect("boom 42" in str(exc), f"RequestFailed does not carry the handler's text: {exc}")
    except RequestTimeout as exc:
        raise AssertionError("a failing handler made request time out, not fail") from exc
    else:
        raise AssertionError("a failing handler's request did not raise")


async def _no_server(m: Messenger, no_responders: bool) -> None:
    expected = NoResponders if no_responders else RequestTimeout
    try:
        await m.request("check.nobody", b"?", timeout=0.5)
    except expected:
        pass
    except Exception as exc:
        raise AssertionError(f"with no server, request raised {exc!r}, not {expected}") from exc
    else:
        raise AssertionError("a request with no server returned")
    release = asyncio.Event()

    async def slow(data: bytes) -> bytes:
        await release.wait()
        return data

    await m.serve("check.slow", slow)
    try:
        await m.request("check.slow", b"?", timeout=0.3)
    except RequestTimeout as exc:
        _expect(isinstance(exc, WaitTimeout), "RequestTimeout is not a WaitTimeout")
    else:
        raise AssertionError("a request to a server that never answers did not time out")
    finally:
        release.set()


async def _requests_and_publishes(m: Messenger) -> None:
    heard: asyncio.Queue[bytes] = asyncio.Queue()
    handled: asyncio.Queue[bytes] = asyncio.Queue()
    await m.stream("check.traffic", heard)

    async def handle(data: bytes) -> bytes:
        handled.put_nowait(data)
        return b"reply:" + data

    served = await m.serve("check.traffic", handle)
    reply = await m.request("check.traffic", b"req", timeout=5.0)
    _expect(reply == b"reply:req", f"the server's reply was {reply!r}")
    await m.publish("check.traffic", b"pub")
    await m.publish("check.traffic", b"end")
    got: list[bytes] = []
    while not got or got[-1] != b"end":
        got.append(await heard.get())
    _expect(
        got == [b"req", b"pub", b"end"],
        f"a stream must get the requests and publishes on its subject, no replies: got {got!r}",
    )
    done = await _take(handled, 3)
    _expect(
        done == [b"req", b"pub", b"end"],
        f"a server must handle the publishes on its subject too (as on NATS): it had {done!r}",
    )
    await _until(lambda: served.statistics().delivered == 3)
    stats = served.statistics()
    _expect((stats.received, stats.dropped) == (3, 0), f"the server counted {stats}")


async def _request_heard_by_a_stream(m: Messenger) -> None:
    heard: asyncio.Queue[bytes] = asyncio.Queue()
    await m.stream("check.heard", heard)
    try:
        await m.request("check.heard", b"anyone?", timeout=0.5)
    except RequestTimeout:
        pass
    except Exception as exc:
        raise AssertionError(
            f"a request only a stream hears raised {exc!r}, not RequestTimeout (a stream is a "
            "subscriber that answers nothing)"
        ) from exc
    else:
        raise AssertionError("a request only a stream hears returned")
    got = await heard.get()
    _expect(got == b"anyone?", f"the stream got {got!r} instead of the request")


async def _full_queue(m: Messenger) -> None:
    q: asyncio.Queue[bytes] = asyncio.Queue(2)
    sub = await m.stream("check.full", q)
    for i in range(10):
        await m.publish("check.full", b"%d" % i)  # must not block on the full queue
    await _until(lambda: sub.statistics().received == 10)
    stats = sub.statistics()
    _expect(stats.dropped == 8 and stats.delivered == 2, f"full queue counted {stats}")
    kept = [q.get_nowait(), q.get_nowait()]
    _expect(kept == [b"0", b"1"], f"a full queue must drop the newest; it kept {kept!r}")


async def _unsubscribe(m: Messenger, no_responders: bool) -> None:
    gone: asyncio.Queue[bytes] = asyncio.Queue()
    control: asyncio.Queue[bytes] = asyncio.Queue()
    sub = await m.stream("check.unsub", gone)
    await m.stream("check.unsub", control)
    await sub.unsubscribe()
    await sub.unsubscribe()
    _expect(not sub.active, "an unsubscribed stream still says it is active")
    for data in (b"a", b"b"):
        await m.publish("check.unsub", data)
    _expect(await _take(control, 2) == [b"a", b"b"], "the remaining stream missed messages")
    _expect(gone.empty(), "an unsubscribed stream still received messages")

    async def echo(data: bytes) -> bytes:
        return data

    served = await m.serve("check.unserve", echo)
    _expect(await m.request("check.unserve", b"x", timeout=5.0) == b"x", "echo server broken")
    await served.unsubscribe()
    await served.unsubscribe()
    expected = NoResponders if no_responders else RequestTimeout
    try:
        await m.request("check.unserve", b"y", timeout=0.5)
    except expected:
        pass
    else:
        raise AssertionError("a request was answered after its only server unsubscribed")


async def _payloads(m: Messenger) -> None:
    q: asyncio.Queue[bytes] = asyncio.Queue()
    await m.stream("check.bytes", q)
    sent = [b"", bytes(range(256)), b"\x00" * 65536]
    for data in sent:
        await m.publish("check.bytes", data)
    _expect(await _take(q, 3) == sent, "payloads (empty, binary, 64 KiB) were altered")

    async def echo(data: bytes) -> bytes:
        return data

    await m.serve("check.echo", echo)
    for data in sent:
        _expect(await m.request("check.echo", data, timeout=5.0) == data, "request altered data")


async def _bad_subjects(m: Messenger) -> None:
    q: asyncio.Queue[bytes] = asyncio.Queue()
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("publish to a pattern", lambda: m.publish("check.*", b"")),
        ("request to a pattern", lambda: m.request("check.>", b"", timeout=1.0)),
        ("stream on an empty token", lambda: m.stream("check..x", q)),
    ]
    for what, call in calls:
        try:
            await call()
        except UsageError:
            continue
        raise AssertionError(f"{what} did not raise UsageError")


async def _close(m: Messenger) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def stuck(data: bytes) -> bytes:
        started.set()
        await release.wait()
        return data

    served = await m.serve("check.stuck", stuck)
    pending = asyncio.create_task(m.request("check.stuck", b"?", timeout=30.0))
    try:
        await started.wait()
        await m.close()
        try:
            await pending
        except MessengerClosed:
            pass
        else:
            raise AssertionError("a request pending at close() did not raise MessengerClosed")
    finally:
        release.set()
        pending.cancel()
    _expect(not served.active, "close() left a server active")
    await served.unsubscribe()
    await m.close()
    await _closed_calls(m)


async def _closed_calls(m: Messenger) -> None:
    async def echo(data: bytes) -> bytes:
        return data

    q: asyncio.Queue[bytes] = asyncio.Queue()
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("publish", lambda: m.publish("check.closed", b"")),
        ("stream", lambda: m.stream("check.closed", q)),
        ("request", lambda: m.request("check.closed", b"", timeout=1.0)),
        ("serve", lambda: m.serve("check.closed", echo)),
    ]
    for what, call in calls:
        try:
            await call()
        except MessengerClosed:
            continue
        raise AssertionError(f"{what} after close() did not raise MessengerClosed")


async def check_messenger(
    factory: Factory, *, no_responders: bool = True, step_timeout: float = 20.0
) -> None:
    """Run every conformance step on fresh messengers from ``factory``; see the module docstring.

    ``no_responders=False`` is for backends that cannot know a request has no server (SQLite):
    they must raise ``RequestTimeout`` instead of ``NoResponders``.
    """
    steps: list[tuple[str, Callable[[Messenger], Awaitable[None]]]] = [
        ("order per publisher", _order),
        ("wildcard subjects", _wildcards),
        ("fan-out to every stream", _fan_out),
        ("serve delivers each request to one server", _deliver_to_one),
        ("a failing handler fails the request", _handler_error),
        ("no server", lambda m: _no_server(m, no_responders)),
        ("a stream sees requests, a server handles publishes", _requests_and_publishes),
        ("a request only a stream hears times out", _request_heard_by_a_stream),
        ("a full stream queue drops the newest", _full_queue),
        ("unsubscribe", lambda m: _unsubscribe(m, no_responders)),
        ("payloads travel unchanged", _payloads),
        ("bad subjects", _bad_subjects),
        ("close", _close),
    ]
    for name, step in steps:
        messenger = await factory()
        guard = asyncio.timeout(step_timeout)
        try:
            async with guard:
                await step(messenger)
        except TimeoutError as exc:
            if guard.expired():
                raise AssertionError(f"step {name!r} hung for {step_timeout} s") from exc
            raise AssertionError(f"step {name!r} raised {exc!r}") from exc
        except AssertionError as exc:
            raise AssertionError(f"step {name!r}: {exc}") from exc
        finally:
            await messenger.close()
