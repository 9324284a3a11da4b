"""Pods as receivers: handlers and their concurrency, async iteration, filters, per-receiver order,
handler failures and redelivery, replay of the buffer, overflow of a stuck inbox, disconnect."""

from __future__ import annotations

import asyncio

import pytest

from gravpy import Grav, Message, Overflow
from gravpy.errors import PodDisconnected, UsageError
from tests._bus_helpers import recorder, settle, texts, until

# -- handler failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad_index", [0, 4, 9], ids=["bad-first", "bad-middle", "bad-last"])
async def test_failing_pod_is_disconnected_at_64_failures(bad_index: int) -> None:
    """TestPodFailure(Pt2): 64 bad messages then 10 more give 730 calls; then 10 good give 90."""
    async with Grav() as g:
        calls = 0

        def good(msg: Message) -> None:
            nonlocal calls
            calls += 1

        def bad(msg: Message) -> None:
            nonlocal calls
            calls += 1
            if msg.type == "test.bad":
                raise ValueError("cannot handle test.bad")

        pods = [g.connect() for _ in range(10)]
        for i, pod in enumerate(pods):
            pod.on(bad if i == bad_index else good)
        bad_pod = pods[bad_index]
        sender = g.connect()

        for _ in range(64):
            sender.send(Message.new("test.bad"))
        await until(lambda: calls == 640)
        assert bad_pod.closed
        for _ in range(10):
            sender.send(Message.new("test.bad"))
        await until(lambda: calls == 730)
        await settle(g)
        assert calls == 730

        calls = 0
        for _ in range(10):
            sender.send(Message.new("test.good"))
        await until(lambda: calls == 90)
        await settle(g)
        assert calls == 90

        with pytest.raises(PodDisconnected) as info:
            await bad_pod.wait_closed()
        assert "64 messages failed" in info.value.reason
        assert "cannot handle test.bad" in info.value.reason
        assert bad_pod.close_reason == info.value.reason
        with pytest.raises(PodDisconnected):
            bad_pod.send(Message.new())

        s = bad_pod.statistics()
        assert (s.received, s.handled, s.failed, s.redelivered) == (64, 0, 64, 0)
        assert s.pending_failures == 0
        assert (s.dropped_failed, s.dropped_closed) == (64, 0)  # lost to the handler, counted
        for pod in pods:
            if pod is not bad_pod:
                assert pod.statistics().handled == 84
        total = g.statistics()
        assert total.pods == 10  # 9 good ones and the sender
        assert total.receivers == 9
        assert total.sent == 84
        assert total.delivered == 640 + 90 + 90
        assert total.handler_failures == 64
        assert total.dropped_failed == 64
        assert total.dropped_overflow == total.dropped_closed == 0


async def test_failed_messages_are_redelivered_in_order_after_a_success() -> None:
    """TestPodFlushFailed: 5 failures, a new handler, 9 good, then 1 more make 20 calls in order."""
    async with Grav() as g:
        pod = g.connect()
        sender = g.connect()
        calls = 0
        seen: list[str] = []

        def failing(msg: Message) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("not now")

        def working(msg: Message) -> None:
            nonlocal calls
            calls += 1
            seen.append(msg.text())

        pod.on(failing)
        for i in range(5):
            sender.send(Message.new("test.bad", f"bad-{i}"))
        await until(lambda: calls == 5)
        assert pod.statistics().pending_failures == 5

        pod.on(working)
        for i in range(9):
            sender.send(Message.new("test.good", f"good-{i}"))
        await until(lambda: calls == 5 + 9 + 5)
        sender.send(Message.new("test.good", "flushing!"))
        await until(lambda: calls == 20)
        await settle(g)

        assert calls == 20
        bad = [f"bad-{i}" for i in range(5)]
        good = [f"good-{i}" for i in range(9)]
        assert seen == [good[0], *bad, *good[1:], "flushing!"]
        s = pod.statistics()
        assert (s.failed, s.redelivered, s.handled, s.pending_failures) == (5, 5, 15, 0)


async def test_async_handler_failures_are_redelivered_too() -> None:
    """An async handler that raises keeps its message, and gets it again after its next success."""
    async with Grav() as g:
        pod = g.connect()
        sender = g.connect()
        seen: list[str] = []
        fail = {"a", "b"}

        async def handler(msg: Message) -> None:
            await asyncio.sleep(0)
            seen.append(msg.text())
            if msg.text() in fail:
                fail.discard(msg.text())
                raise RuntimeError("once")

        pod.on(handler)
        for item in ["a", "b", "c", "d"]:
            sender.send(Message.new(data=item))
        await until(lambda: pod.statistics().handled == 4)
        await settle(g)
        assert seen == ["a", "b", "c", "a", "b", "d"]
        assert pod.statistics().redelivered == 2


async def test_a_message_that_always_fails_is_given_up_and_counted() -> None:
    """A message failing max_attempts times is dropped (dropped_failed), the others go on."""
    async with Grav() as g:
        pod = g.connect()
        sender = g.connect()
        handled: list[str] = []

        def handler(msg: Message) -> None:
            if msg.text() == "poison":
                raise ValueError("never")
            handled.append(msg.text())

        pod.on(handler)
        sender.send(Message.new(data="poison"))
        for i in range(30):
            sender.send(Message.new(data=str(i)))
        await until(lambda: len(handled) == 30)
        await settle(g)
        s = pod.statistics()
        assert s.dropped_failed == 1
        assert s.failed == g.bus.max_attempts
        assert s.pending_failures == 0
        assert not pod.closed
        assert handled == [str(i) for i in range(30)]
        assert g.statistics().dropped_failed == 1


# -- replay ---------------------------------------------------------------------------------------


async def test_replay_gives_the_buffer_then_the_live_stream_with_no_seam() -> None:
    """TestPodReplay: a replay pod gets the 100 buffered messages in order, then live ones, no duplicate."""
    async with Grav() as g:
        p1 = g.connect()
        seen1 = recorder(p1)
        sender = g.connect()
        for i in range(100):
            sender.send(Message.new(data=f"old-{i}"))
        await until(lambda: len(seen1) == 100)

        p2 = g.connect_with_replay()
        seen2 = recorder(p2)
        for i in range(5):
            sender.send(Message.new(data=f"live-{i}"))
        await until(lambda: len(seen2) == 105)
        await settle(g)

        expected = [f"old-{i}" for i in range(100)] + [f"live-{i}" for i in range(5)]
        assert texts(seen2) == expected
        assert texts(seen1) == expected


async def test_replay_gives_only_the_last_128() -> None:
    """TestPodReplayPt2: after 1000 messages a replay pod gets exactly the last 128, in order."""
    async with Grav() as g:
        sender = g.connect()
        for i in range(1000):
            sender.send(Message.new(data=str(i)))
        p2 = g.connect_with_replay()
        seen = recorder(p2)
        sender.send(Message.new(data="trigger"))
        await until(lambda: len(seen) == 129)
        await settle(g)
        assert texts(seen) == [str(i) for i in range(872, 1000)] + ["trigger"]
        assert g.buffer.evicted == 1000 + 1 - 128


async def test_replay_happens_once_and_skips_the_pods_own_messages() -> None:
    """A replay pod never gets its own earlier messages back, and a second handler replays nothing."""
    async with Grav() as g:
        p = g.connect_with_replay()
        other = g.connect()
        p.send(Message.new(data="mine-0"))
        other.send(Message.new(data="theirs-0"))
        p.send(Message.new(data="mine-1"))
        other.send(Message.new(data="theirs-1"))
        seen = recorder(p)
        await until(lambda: len(seen) == 2)
        await settle(g)
        assert texts(seen) == ["theirs-0", "theirs-1"]

        seen_again = recorder(p)
        other.send(Message.new(data="theirs-2"))
        await until(lambda: len(seen_again) == 1)
        await settle(g)
        assert texts(seen_again) == ["theirs-2"]
        assert texts(seen) == ["theirs-0", "theirs-1"]


async def test_replay_respects_the_pods_filters() -> None:
    """A replay pod that filters types gets only the buffered messages it admits."""
    async with Grav() as g:
        sender = g.connect()
        for t in ["a.x", "b.x", "a.y"]:
            sender.send(Message.new(t))
        p = g.connect_with_replay()
        seen: list[Message] = []
        p.on_type("a.*", seen.append)
        await until(lambda: len(seen) == 2)
        await settle(g)
        assert [m.type for m in seen] == ["a.x", "a.y"]


# -- disconnect -----------------------------------------------------------------------------------


async def test_disconnected_pod_receives_nothing_and_cannot_send() -> None:
    """TestPodDisconnect: after p1 disconnects, 5 messages reach only p2; p1.send raises."""
    async with Grav() as g:
        p1 = g.connect()
        p2 = g.connect()
        seen1 = recorder(p1)
        seen2 = recorder(p2)
        p1.disconnect()
        p3 = g.connect()
        for i in range(5):
            p3.send(Message.new(data=str(i)))
        await until(lambda: len(seen2) == 5)
        await settle(g)
        assert len(seen1) + len(seen2) == 5
        assert seen1 == []
        assert p1.closed
        assert p1.close_reason == "disconnected by its owner"
        with pytest.raises(PodDisconnected):
            p1.send(Message.new())
        with pytest.raises(PodDisconnected):
            p1.on(print)
        await p1.wait_closed()  # an owner's disconnect is not an error


async def test_disconnect_drops_and_counts_queued_messages() -> None:
    """Messages still queued when a pod disconnects are dropped and counted in dropped_closed."""
    async with Grav() as g:
        pod = g.connect()
        seen = recorder(pod)
        sender = g.connect()
        for i in range(5):
            sender.send(Message.new(data=str(i)))
        pod.disconnect()
        await settle(g)
        assert seen == []
        assert pod.statistics().dropped_closed == 5
        assert g.statistics().dropped_closed == 5


async def test_wait_closed_wakes_when_the_owner_disconnects() -> None:
    """A task blocked in wait_closed() returns, without raising, when the owner disconnects."""
    async with Grav() as g:
        pod = g.connect()
        task = asyncio.create_task(pod.wait_closed())
        await asyncio.sleep(0)
        assert not task.done()
        pod.disconnect()
        await task
        assert task.exception() is None


# -- async iteration ------------------------------------------------------------------------------


async def test_async_iteration_receives_in_order() -> None:
    """`async for msg in pod` yields the admitted messages in send order."""
    async with Grav() as g:
        pod = g.connect()
        sender = g.connect()
        it = aiter(pod)  # from here on the pod is a receiver
        assert pod.receiving
        for i in range(10):
            sender.send(Message.new(data=str(i)))
        got = [await anext(it) for _ in range(10)]
        assert texts(got) == [str(i) for i in range(10)]
        assert pod.statistics().handled == 10


async def test_async_for_loop_collects_until_disconnect() -> None:
    """An `async for` loop blocked on an empty pod ends (StopAsyncIteration) when the pod disconnects."""
    async with Grav() as g:
        pod = g.connect()
        sender = g.connect()
        got: list[Message] = []

        async def consume() -> None:
            async for msg in pod:
                got.append(msg)

        task = asyncio.create_task(consume())
        await until(lambda: pod.receiving)
        for i in range(3):
            sender.send(Message.new(data=str(i)))
        await until(lambda: len(got) == 3)
        pod.disconnect()
        await task
        assert texts(got) == ["0", "1", "2"]
        with pytest.raises(StopAsyncIteration):
            await anext(aiter(pod))


async def test_removing_the_handler_keeps_what_the_inbox_holds_for_the_next() -> None:
    """on(None) while messages wait in the inbox keeps them, counted, for the next handler."""
    async with Grav() as g:
        sender, pod = g.connect(), g.connect()
        first = recorder(pod)
        for i in range(3):
            sender.send(Message.new("test.seq", str(i)))
        pod.on(None)  # before the drain those sends scheduled has run
        await settle(g)
        s = pod.statistics()
        assert (first, s.received, s.handled, s.inbox) == ([], 3, 0, 3)
        second = recorder(pod)
        await settle(g)
        assert texts(second) == ["0", "1", "2"]


async def test_setting_a_handler_ends_iteration_and_the_handler_gets_the_rest() -> None:
    """A handler set while a pod is iterated ends the iteration; queued and later messages go to it."""
    async with Grav() as g:
        pod = g.connect()
        sender = g.connect()
        it = aiter(pod)
        for i in range(10):
            sender.send(Message.new(data=str(i)))
        got = [await anext(it) for _ in range(3)]
        seen = recorder(pod)
        # Observed: the next step of the iteration stops at once, although messages are queued;
        # they are the handler's now, so none is lost and none is seen twice.
        with pytest.raises(StopAsyncIteration):
            await anext(it)
        sender.send(Message.new(data="10"))
        await until(lambda: len(seen) == 8)
        await settle(g)
        assert texts(got) == ["0", "1", "2"]
        assert texts(seen) == [str(i) for i in range(3, 11)]


async def test_setting_a_handler_ends_a_blocked_async_for() -> None:
    """An `async for` waiting on an empty inbox ends when a handler is set."""
    async with Grav() as g:
        pod = g.connect()

        async def consume() -> list[Message]:
            return [msg async for msg in pod]

        task = asyncio.create_task(consume())
        await until(lambda: pod.receiving)
        await asyncio.sleep(0)
        seen = recorder(pod)
        assert await task == []
        g.connect().send(Message.new())
        await until(lambda: len(seen) == 1)


async def test_iterating_a_pod_with_a_handler_is_refused() -> None:
    """A pod has one consumer: iterating one that has a handler raises UsageError."""
    async with Grav() as g:
        pod = g.connect()
        pod.on(print)
        with pytest.raises(UsageError):
            aiter(pod)
        pod.on(None)
        assert aiter(pod) is pod


# -- order ----------------------------------------------------------------------------------------


# -- what a plain handler does to its own pod in the middle of a burst -----------------------------


async def test_a_handler_that_replaces_itself_mid_burst_hands_the_rest_to_the_new_one() -> None:
    """The whole burst is queued before the drain runs; the new handler gets the rest, in order."""
    async with Grav() as g:
        pod, sender = g.connect(), g.connect()
        first: list[str] = []
        second: list[str] = []

        def before(msg: Message) -> None:
            first.append(msg.text())
            if msg.text() == "3":
                pod.on(lambda m: second.append(m.text()))

        pod.on(before)
        for i in range(10):
            sender.send(Message.new(data=str(i)))
        await settle(g)
        assert first == ["0", "1", "2", "3"]
        assert second == [str(i) for i in range(4, 10)]
        assert pod.statistics().handled == 10


async def test_a_handler_that_disconnects_its_pod_mid_burst_stops_cleanly() -> None:
    """Nothing more is handled, the rest is counted, and the drain ends without an error."""
    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    async with Grav() as g:
        pod, sender = g.connect(), g.connect()
        seen: list[str] = []

        def handler(msg: Message) -> None:
            seen.append(msg.text())
            if msg.text() == "3":
                pod.disconnect()

        pod.on(handler)
        for i in range(10):
            sender.send(Message.new(data=str(i)))
        await settle(g)
        assert seen == ["0", "1", "2", "3"]
        assert pod.statistics().dropped_closed == 6
    assert loop_errors == []


async def test_a_plain_function_that_returns_a_coroutine_makes_the_pod_an_async_consumer() -> None:
    """Every coroutine is awaited, one at a time and in order, the rest of the burst included."""
    async with Grav() as g:
        pod, sender = g.connect(), g.connect()
        done: list[str] = []

        async def work(msg: Message) -> None:
            await asyncio.sleep(0)
            done.append(msg.text())

        pod.on(lambda msg: work(msg))  # a plain function: the pod sees a coroutine only when called
        for i in range(10):
            sender.send(Message.new(data=str(i)))
        await settle(g)
        assert done == [str(i) for i in range(10)]
        assert pod.statistics().handled == 10


async def test_order_is_kept_for_each_receiver_with_sync_handlers() -> None:
    """10,000 messages from one sender reach each of 3 sync handlers in send order."""
    await _check_order(asynchronous=False, publish=False)


async def test_order_is_kept_for_each_receiver_with_async_handlers() -> None:
    """10,000 messages reach each of 3 async handlers (that yield) in send order."""
    await _check_order(asynchronous=True, publish=False)


async def test_order_is_kept_with_publish() -> None:
    """10,000 messages published (with backpressure) reach each of 3 receivers in send order."""
    await _check_order(asynchronous=True, publish=True, inbox_limit=200)


async def _check_order(*, asynchronous: bool, publish: bool, inbox_limit: int = 10_000) -> None:
    n = 10_000
    async with Grav(inbox_limit=inbox_limit) as g:
        seen: list[list[int]] = []
        for _ in range(3):
            got: list[int] = []
            seen.append(got)
            if asynchronous:

                async def handler(msg: Message, got: list[int] = got) -> None:
                    got.append(int(msg.text()))
                    await asyncio.sleep(0)

                g.connect().on(handler)
            else:
                g.connect().on(lambda msg, got=got: got.append(int(msg.text())))
        sender = g.connect()
        for i in range(n):
            msg = Message.new("test.seq", str(i))
            if publish:
                await sender.publish(msg)
            else:
                sender.send(msg)
        await until(lambda: all(len(got) == n for got in seen))
        await settle(g)
        assert all(got == list(range(n)) for got in seen)
        assert g.statistics().dropped_overflow == 0


# -- overflow --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        (Overflow.DROP_NEWEST, list(range(1, 101))),
        (Overflow.DROP_OLDEST, list(range(901, 1001))),
    ],
)
async def test_stuck_pod_drops_past_its_limit_and_counts(policy: Overflow, kept: list[int]) -> None:
    """A stuck pod keeps 100 messages by its policy, counts 900 drops; a healthy pod gets all 1001."""
    async with Grav() as g:
        release = asyncio.Event()
        stuck_seen: list[int] = []

        async def stuck(msg: Message) -> None:
            stuck_seen.append(int(msg.text()))
            await release.wait()

        slow = g.connect(inbox_limit=100, overflow=policy)
        slow.on(stuck)
        fast = g.connect()
        fast_seen = recorder(fast)
        sender = g.connect()

        sender.send(Message.new(data="0"))
        await until(lambda: stuck_seen == [0])
        for i in range(1, 1001):
            sender.send(Message.new(data=str(i)))
        await until(lambda: len(fast_seen) == 1001)
        assert stuck_seen == [0]  # the healthy pod got everything while the slow one was stuck
        s = slow.statistics()
        assert (s.inbox, s.dropped_overflow, s.inbox_limit) == (100, 900, 100)
        assert g.statistics().dropped_overflow == 900

        release.set()
        await until(lambda: len(stuck_seen) == 101)
        await settle(g)
        assert stuck_seen == [0, *kept]
        assert texts(fast_seen) == [str(i) for i in range(1001)]


# -- concurrency ----------------------------------------------------------------------------------


async def test_concurrency_runs_up_to_n_handlers_at_once() -> None:
    """on(async_handler, concurrency=4) runs 4 handlers at once, never more, and all messages run."""
    async with Grav() as g:
        pod = g.connect()
        release = asyncio.Event()
        in_flight = max_in_flight = done = 0

        async def handler(msg: Message) -> None:
            nonlocal in_flight, max_in_flight, done
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            await release.wait()
            in_flight -= 1
            done += 1

        pod.on(handler, concurrency=4)
        sender = g.connect()
        for _ in range(10):
            sender.send(Message.new())
        await until(lambda: in_flight == 4)
        for _ in range(20):
            await asyncio.sleep(0)
        assert in_flight == 4
        release.set()
        await until(lambda: done == 10)
        assert max_in_flight == 4
        assert pod.statistics().handled == 10


async def test_concurrency_applies_to_messages_that_trickle_in() -> None:
    """Messages arriving one at a time while earlier ones are still running also run concurrently."""
    async with Grav() as g:
        pod = g.connect()
        release = asyncio.Event()
        in_flight = done = 0

        async def handler(msg: Message) -> None:
            nonlocal in_flight, done
            in_flight += 1
            await release.wait()
            in_flight -= 1
            done += 1

        pod.on(handler, concurrency=3)
        sender = g.connect()
        for n in range(1, 4):
            sender.send(Message.new())
            await until(lambda n=n: in_flight == n)
        sender.send(Message.new())
        for _ in range(20):
            await asyncio.sleep(0)
        assert in_flight == 3
        assert pod.statistics().inbox == 1
        release.set()
        await until(lambda: done == 4)
        await settle(g)
        assert pod.statistics().handled == 4


async def test_concurrency_applies_to_a_backlog_taken_over_from_iteration() -> None:
    """Messages already queued when a concurrent handler is set run up to `concurrency` at once."""
    async with Grav() as g:
        pod = g.connect()
        aiter(pod)  # receive into the inbox without consuming
        sender = g.connect()
        for _ in range(10):
            sender.send(Message.new())
        release = asyncio.Event()
        in_flight = done = 0

        async def handler(msg: Message) -> None:
            nonlocal in_flight, done
            in_flight += 1
            await release.wait()
            in_flight -= 1
            done += 1

        pod.on(handler, concurrency=4)
        await until(lambda: in_flight == 4)
        release.set()
        await until(lambda: done == 10)


async def test_raising_concurrency_takes_effect_for_a_waiting_backlog() -> None:
    """A backlog queued behind one busy handler runs 4 at once after on(h, concurrency=4)."""
    async with Grav() as g:
        pod = g.connect()
        release = asyncio.Event()
        in_flight = done = 0

        async def handler(msg: Message) -> None:
            nonlocal in_flight, done
            in_flight += 1
            await release.wait()
            in_flight -= 1
            done += 1

        pod.on(handler)
        sender = g.connect()
        for _ in range(10):
            sender.send(Message.new())
        await until(lambda: in_flight == 1)
        pod.on(handler, concurrency=4)
        await until(lambda: in_flight == 4)
        for _ in range(20):
            await asyncio.sleep(0)
        assert in_flight == 4
        release.set()
        await until(lambda: done == 10)


async def test_lowering_concurrency_takes_effect_for_the_next_messages() -> None:
    """After on(h, concurrency=1) replaces a concurrency of 4, the remaining messages run one at a time."""
    async with Grav() as g:
        pod = g.connect()
        release = asyncio.Event()
        in_flight = max_after = done = 0

        async def wide(msg: Message) -> None:
            nonlocal in_flight, done
            in_flight += 1
            await release.wait()
            in_flight -= 1
            done += 1

        async def narrow(msg: Message) -> None:
            nonlocal in_flight, max_after, done
            in_flight += 1
            max_after = max(max_after, in_flight)
            await asyncio.sleep(0)
            in_flight -= 1
            done += 1

        pod.on(wide, concurrency=4)
        sender = g.connect()
        for _ in range(20):
            sender.send(Message.new())
        await until(lambda: in_flight == 4)
        pod.on(narrow)
        release.set()
        await until(lambda: done == 20)
        await settle(g)
        assert max_after == 1
        assert pod.statistics().handled == 20


async def test_concurrency_needs_an_async_handler() -> None:
    """concurrency > 1 with a plain function, or concurrency < 1, raises UsageError."""
    async with Grav() as g:
        pod = g.connect()
        with pytest.raises(UsageError, match="async"):
            pod.on(print, concurrency=2)
        with pytest.raises(UsageError):
            pod.on(print, concurrency=0)
        assert not pod.receiving


# -- filters --------------------------------------------------------------------------------------


async def test_on_type_admits_only_matching_types() -> None:
    """on_type("sensor.*", h) gets sensor.<one token> messages and nothing else."""
    async with Grav() as g:
        pod = g.connect()
        seen: list[Message] = []
        pod.on_type("sensor.*", seen.append)
        sender = g.connect()
        for t in ["sensor.kitchen", "sensor.kitchen.temp", "other", "sensor", "sensor.hall"]:
            sender.send(Message.new(t))
        await settle(g)
        assert [m.type for m in seen] == ["sensor.kitchen", "sensor.hall"]


async def test_filter_type_allows_and_denies() -> None:
    """filter_type allow rules restrict what a pod gets; deny rules cut out of them."""
    async with Grav() as g:
        pod = g.connect()
        seen = recorder(pod)
        pod.filter_type("app.>")
        pod.filter_type("app.debug.*", allow=False)
        sender = g.connect()
        for t in ["app.start", "app.debug.trace", "app.x.y", "other"]:
            sender.send(Message.new(t))
        await settle(g)
        assert [m.type for m in seen] == ["app.start", "app.x.y"]
        assert sender.send(Message.new("other")).no_responders
        assert not sender.send(Message.new("app.z")).no_responders


async def test_filter_uuid_denies_or_allows_single_messages() -> None:
    """filter_uuid(deny) refuses that message; filter_uuid(allow) admits only the allowed ones."""
    async with Grav() as g:
        denier = g.connect()
        denied_seen = recorder(denier)
        picker = g.connect()
        picked_seen = recorder(picker)
        msgs = [Message.new(data=str(i)) for i in range(3)]
        denier.filter_uuid(msgs[1].uuid, allow=False)
        picker.filter_uuid(msgs[2].uuid, allow=True)
        sender = g.connect()
        receipts = [sender.send(m) for m in msgs]
        await settle(g)
        assert texts(denied_seen) == ["0", "2"]
        assert texts(picked_seen) == ["2"]
        assert [r.no_responders for r in receipts] == [False, True, False]  # 1: both refuse it


async def test_filters_survive_a_new_handler() -> None:
    """Replacing the handler keeps the pod's filters (unlike Grav, which reset them)."""
    async with Grav() as g:
        pod = g.connect()
        pod.filter_type("keep.*")
        recorder(pod)
        seen = recorder(pod)
        sender = g.connect()
        sender.send(Message.new("drop"))
        sender.send(Message.new("keep.me"))
        await settle(g)
        assert [m.type for m in seen] == ["keep.me"]
