"""Waiting for messages: request-reply through receipts (sync and async responders, early replies
kept, NoResponders at once, timeouts) and a pod's own wait_on/wait_until, which share the wait plumbing."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import weakref
from collections.abc import Callable

import pytest

from gravpy import Grav, Message, Pod, _mailbox
from gravpy._mailbox import SHARED_FROM, SLOT, Mailbox
from gravpy.bus import Bus
from gravpy.errors import MsgNotWanted, NoResponders, UsageError, WaitTimeout
from tests._bus_helpers import GUARD, recorder, responder, settle, texts, until

# how late a loop may run a timer on this machine (scaled like GUARD on a slow one)
LATE = 0.5 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))

# -- Pod.wait_on / wait_until ---------------------------------------------------------------------


class Goodbye(Exception):
    """The error a wait function raises to end the wait (Grav's errGoodbye)."""


async def test_pod_wait_on_returns_what_the_function_returns_or_raises() -> None:
    """TestWaitOn: a wait ends on the first accepted message with fn's value, or raises fn's error."""
    async with Grav() as g:
        waiter = g.connect()
        sender = g.connect()
        offered: list[str] = []

        def fn(msg: Message) -> str:
            offered.append(msg.text())
            if msg.text() == "hello, world":
                return "greeted"
            if msg.text() == "goodbye, world":
                raise Goodbye
            raise MsgNotWanted

        async def send(*items: str) -> None:
            for item in items:
                sender.send(Message.new(data=item))

        task = asyncio.create_task(send("noise", "hello, world"))  # runs once the wait has started
        assert await waiter.wait_on(fn) == "greeted"
        await task
        assert offered == ["noise", "hello, world"]

        task = asyncio.create_task(send("more noise", "goodbye, world"))
        with pytest.raises(Goodbye):
            await waiter.wait_on(fn)
        await task
        assert offered[2:] == ["more noise", "goodbye, world"]


async def test_pod_wait_on_accepts_an_async_function() -> None:
    """An async wait function is awaited and its result returned."""
    async with Grav() as g:
        waiter = g.connect()
        sender = g.connect()

        async def fn(msg: Message) -> str:
            await asyncio.sleep(0)
            if msg.text() != "yes":
                raise MsgNotWanted
            return msg.text().upper()

        async def send() -> None:
            sender.send(Message.new(data="no"))
            sender.send(Message.new(data="yes"))

        task = asyncio.create_task(send())
        assert await waiter.wait_on(fn) == "YES"
        await task


async def test_pod_wait_until_times_out() -> None:
    """A pod wait that nothing satisfies raises WaitTimeout (a TimeoutError) after its timeout."""
    async with Grav() as g:
        waiter = g.connect()
        with pytest.raises(WaitTimeout):
            await waiter.wait_until(0.05, lambda m: m)
        assert issubclass(WaitTimeout, TimeoutError)
        assert not waiter.receiving  # the wait is gone, so is the pod's interest


def unaccounted(pod: Pod) -> int:
    """What the pod received that is neither handled, dropped, queued nor pending (0 when idle)."""
    s = pod.statistics()
    drops = s.dropped_overflow + s.dropped_failed + s.dropped_closed
    return s.received - (s.handled + drops + s.inbox + s.pending_failures)


def text_is(want: str, seen: list[str] | None = None) -> Callable[[Message], str]:
    """A wait function accepting only the message whose text is ``want`` (noting each in ``seen``)."""

    def fn(msg: Message) -> str:
        if seen is not None:
            seen.append(msg.text())
        if msg.text() != want:
            raise MsgNotWanted
        return want

    return fn


async def test_a_wait_on_a_replay_pod_takes_only_what_it_looks_at() -> None:
    """A wait on a replay pod without a handler takes the buffered messages one at a time: when it
    accepts one, the rest stay queued for the handler set afterwards, and every one is counted."""
    async with Grav(buffer_size=10) as g:
        sender = g.connect()
        for i in range(10):
            sender.send(Message.new("test.r", str(i)))
        pod = g.connect_with_replay()
        assert await pod.wait_until(GUARD, lambda m: m.text()) == "0"
        assert not pod.receiving
        assert (pod.statistics().handled, pod.statistics().inbox) == (1, 9)
        assert unaccounted(pod) == 0
        seen = recorder(pod)
        await settle(g)
        assert texts(seen) == [str(i) for i in range(1, 10)]
        assert (pod.statistics().received, pod.statistics().handled) == (10, 10)
        assert unaccounted(pod) == 0


async def test_a_wait_on_a_pod_without_a_consumer_leaves_the_rest_for_the_next() -> None:
    """Messages a wait on a pod with no handler looked at are handled; those after the one it
    accepted stay queued, and the next wait (or iterator) gets them first, in order."""
    async with Grav() as g:
        sender = g.connect()
        pod = g.connect()
        waiting = asyncio.create_task(pod.wait_until(GUARD, text_is("5")))
        await until(lambda: pod.receiving)
        for i in range(10):
            sender.send(Message.new("test.r", str(i)))
        assert await waiting == "5"
        s = pod.statistics()
        assert (s.received, s.handled, s.inbox) == (10, 6, 4)
        await settle(g)  # a pod that is not receiving is idle, whatever it holds
        assert unaccounted(pod) == 0
        assert await pod.wait_until(GUARD, lambda m: m.text()) == "6"
        got = []
        async for msg in pod:
            got.append(msg.text())
            if len(got) == 3:
                break
        assert got == ["7", "8", "9"]
        assert (pod.statistics().handled, unaccounted(pod)) == (10, 0)


async def test_two_waits_on_a_pod_without_a_consumer_each_see_every_message() -> None:
    """Two waits on a pod with no handler both see each message in order; what neither looked at
    stays queued."""
    async with Grav() as g:
        sender = g.connect()
        pod = g.connect()
        seen_first: list[str] = []
        seen_second: list[str] = []
        first = asyncio.create_task(pod.wait_on(text_is("2", seen_first)))
        second = asyncio.create_task(pod.wait_on(text_is("4", seen_second)))
        await until(lambda: pod.receiving)  # (both waits start in the same loop turn)
        for i in range(6):
            sender.send(Message.new("test.r", str(i)))
        assert (await first, await second) == ("2", "4")
        assert (seen_first, seen_second) == (["0", "1", "2"], ["0", "1", "2", "3", "4"])
        assert (pod.statistics().handled, pod.statistics().inbox, unaccounted(pod)) == (5, 1, 0)


async def test_a_wait_that_times_out_counts_what_it_looked_at() -> None:
    """A wait that accepts nothing has handled every message it was shown, and counts them."""
    async with Grav() as g:
        sender = g.connect()
        pod = g.connect()
        seen: list[str] = []

        def fn(msg: Message) -> None:
            seen.append(msg.text())
            raise MsgNotWanted

        async def send() -> None:
            for i in range(5):
                sender.send(Message.new("test.r", str(i)))
            await until(lambda: len(seen) == 5)

        sending = asyncio.create_task(send())
        with pytest.raises(WaitTimeout):
            await pod.wait_until(0.2, fn)
        await sending
        assert seen == ["0", "1", "2", "3", "4"]
        assert (pod.statistics().handled, unaccounted(pod)) == (5, 0)


async def test_a_wait_that_ends_with_a_full_inbox_does_not_hold_publishers() -> None:
    """When a wait on a pod with no handler ends, what it left queued does not hold publish."""
    async with Grav() as g:
        sender = g.connect()
        pod = g.connect(inbox_limit=4)
        waiting = asyncio.create_task(pod.wait_until(GUARD, lambda m: m.text()))
        await until(lambda: pod.receiving)
        for i in range(4):
            sender.send(Message.new("test.r", str(i)))
        assert g.bus.congestion.pods_congested  # over half full while the wait receives
        assert await waiting == "0"
        assert pod.statistics().inbox == 3
        assert (
            not g.bus.congestion.pods_congested
        )  # no longer a receiver: publishers need not wait for it


@pytest.mark.parametrize("timeout", [0, -1.0])
async def test_non_positive_timeouts_are_refused(timeout: float) -> None:
    """A timeout must be positive (None waits forever); 0 or less is a UsageError, not a hang."""
    async with Grav() as g:
        pod = g.connect()
        with pytest.raises(UsageError):
            await pod.wait_until(timeout, lambda m: m)
        receipt = pod.send(Message.new())
        with pytest.raises(UsageError):
            await receipt.wait_until(timeout)


# -- request-reply --------------------------------------------------------------------------------


async def test_request_reply_with_a_sync_responder() -> None:
    """TestRequestReply: a reply sent synchronously inside the responder's handler is never lost."""
    async with Grav() as g:
        requester = g.connect()
        responder(g.connect_with_replay())
        receipt = requester.send(Message.new("test.ask", "joey"))
        assert not receipt.no_responders
        reply = await receipt.wait_until(GUARD)
        assert reply.text() == "hey joey"
        assert reply.reply_to == receipt.uuid


async def test_request_reply_with_an_async_responder() -> None:
    """A reply sent from an async handler after it awaited reaches the waiting receipt."""
    async with Grav() as g:
        requester = g.connect()
        pod = g.connect()

        async def answer(msg: Message) -> None:
            await asyncio.sleep(0)
            pod.reply_to(msg, Message.new("test.reply", "hey " + msg.text()))

        pod.on(answer)
        reply = await requester.send(Message.new("test.ask", "joey")).wait_until(GUARD)
        assert reply.text() == "hey joey"


async def test_reply_that_arrives_before_the_wait_is_still_returned() -> None:
    """A reply delivered before anyone waits is kept and handed to the first wait (Grav bug #48)."""
    async with Grav() as g:
        requester = g.connect()
        responder(g.connect())
        receipt = requester.send(Message.new("test.ask", "early"))
        await until(lambda: g.statistics().unclaimed_replies == 1)
        reply = await receipt.wait_until(GUARD)
        assert reply.text() == "hey early"
        assert g.statistics().unclaimed_replies == 0


async def test_an_early_reply_reaches_the_handler_and_the_later_wait_a_claimed_one_the_wait() -> (
    None
):
    """A reply that comes before any wait goes to the asking pod's handler and is kept for a
    later wait too (docs/guarantees.md); one that comes while a wait is on goes to the wait only."""
    async with Grav() as g:
        requester = g.connect()
        handled: list[str] = []
        requester.on_type("test.reply", lambda m: handled.append(m.text()))
        responder(g.connect())
        early = requester.send(Message.new("test.ask", "early"))
        await until(lambda: g.statistics().unclaimed_replies == 1)
        assert (await early.wait_until(GUARD)).text() == "hey early"
        claimed = await requester.send(Message.new("test.ask", "waited")).wait_until(GUARD)
        assert claimed.text() == "hey waited"
        await settle(g)
        assert handled == ["hey early"]


async def test_every_reply_that_arrives_before_the_wait_is_kept() -> None:
    """Two replies delivered before the wait starts both reach it, in arrival order."""
    async with Grav() as g:
        requester = g.connect()
        for name in ("first", "second"):
            pod = g.connect()
            pod.on_type(
                "test.ask",
                lambda m, pod=pod, name=name: pod.reply_to(m, Message.new("test.reply", name)),
            )
        receipt = requester.send(Message.new("test.ask"))
        await until(lambda: g.statistics().unclaimed_replies == 2)
        offered: list[str] = []

        def on(reply: Message) -> list[str]:
            offered.append(reply.text())
            if len(offered) < 2:
                raise MsgNotWanted
            return offered

        assert await receipt.wait_until(GUARD, on=on) == ["first", "second"]
        assert g.statistics().unclaimed_replies == 0


async def test_unclaimed_replies_are_bounded() -> None:
    """Early replies are kept for the last ``unclaimed_replies`` requests at most, oldest forgotten."""
    bus = Bus(unclaimed_replies=4)
    try:
        requester = bus.connect()
        responder(bus.connect())
        receipts = [requester.send(Message.new("test.ask", str(i))) for i in range(7)]
        await until(lambda: receipts[6].uuid in bus.replies._unclaimed)
        for _ in range(20):
            await asyncio.sleep(0)
        assert 2 <= bus.statistics().unclaimed_replies <= 4
        assert (await receipts[6].wait_until(GUARD)).text() == "hey 6"
        assert (await receipts[5].wait_until(GUARD)).text() == "hey 5"
        with pytest.raises(WaitTimeout):
            await receipts[0].wait_until(0.05)
    finally:
        await bus.close()


async def test_a_thousand_sequential_request_replies_complete() -> None:
    """TestRequestReplyLoop: 1000 send-then-wait round trips all complete, each with its own reply."""
    async with Grav() as g:
        requester = g.connect()
        responder(g.connect())
        for i in range(1000):
            reply = await requester.send(Message.new("test.ask", str(i))).wait_until(GUARD)
            assert reply.text() == f"hey {i}"
        assert g.statistics().unclaimed_replies == 0


async def test_silent_responder_gives_wait_timeout() -> None:
    """TestRequestReplyTimeout: a pod receives the request but never replies, so the wait times out."""
    async with Grav() as g:
        requester = g.connect()
        silent = g.connect()
        seen = recorder(silent)
        receipt = requester.send(Message.new("test.ask"))
        assert not receipt.no_responders
        with pytest.raises(WaitTimeout):
            await receipt.wait_until(0.05)
        assert len(seen) == 1


async def test_a_long_wait_times_out_on_its_shared_timer_not_before_its_timeout() -> None:
    """A wait of SHARED_FROM s or more ends on a timer shared per SLOT: never before its timeout,
    at most SLOT after it (plus the loop's own slack), and the waits answered in time in the
    same slot leave it without expiring."""
    async with Grav() as g:
        requester = g.connect()
        silent_pod, answerer = g.connect(), g.connect()
        seen: list[Message] = []
        silent_pod.on_type("test.ask", seen.append)  # receives the requests and never answers
        answerer.on_type(
            "test.answered", lambda msg: answerer.reply_to(msg, Message.new("test.reply"))
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        silent = [requester.send(Message.new("test.ask")) for _ in range(3)]
        asked = requester.send(Message.new("test.answered"))
        waits = [asyncio.ensure_future(r.wait_until(SHARED_FROM)) for r in silent]
        reply = await asked.wait_until(SHARED_FROM)
        assert reply.reply_to == asked.uuid
        for wait in waits:
            with pytest.raises(WaitTimeout, match=f"within {SHARED_FROM} s"):
                await wait
        waited = loop.time() - start
        assert SHARED_FROM <= waited < SHARED_FROM + SLOT + LATE
        assert len(seen) == 3


async def test_shared_timers_forget_answered_waits_and_never_hold_the_loop() -> None:
    """A thousand long waits answered at once leave no mailbox behind in their slots, a wait
    with an infinite timeout waits like None, and the loop is not kept alive by the timers."""

    async def run() -> weakref.ref[asyncio.AbstractEventLoop]:
        async with Grav() as g:
            requester = g.connect()
            responder(g.connect())
            for i in range(1000):
                reply = await requester.send(Message.new("test.ask", str(i))).wait_until(5.0)
                assert reply.text() == f"hey {i}"
            loop = asyncio.get_running_loop()
            timers = _mailbox._shared_timers(loop)
            assert sum(len(waits) for waits in timers._slots.values()) == 0
            forever = Mailbox()
            loop.call_soon(forever.offer, Message.new("test.late"))  # once the wait sleeps
            assert (await forever.first(math.inf, "late message")).type == "test.late"
            return weakref.ref(loop)

    loop_ref = await asyncio.to_thread(asyncio.run, run())
    gc.collect()
    assert loop_ref() is None


async def test_a_mailbox_read_again_after_a_timeout_waits_anew() -> None:
    """A mailbox whose first read timed out gives the next read what is offered later."""
    mailbox = Mailbox()
    with pytest.raises(WaitTimeout):
        await mailbox.first(0.01, "reply")
    later = Message.new("svc.answer")
    asyncio.get_running_loop().call_soon(mailbox.offer, later)
    assert await mailbox.first(GUARD, "reply") is later


async def test_request_no_pod_admits_raises_no_responders_at_once() -> None:
    """A request whose type no receiving pod admits raises NoResponders before waiting at all."""
    async with Grav() as g:
        requester = g.connect()
        recorder(requester)  # the sender itself never counts as a responder
        g.connect()  # connected but not receiving: not a responder
        g.connect().on_type("other.*", print)
        receipt = requester.send(Message.new("nobody.home"))
        assert receipt.no_responders
        wait = receipt.wait_until(30)
        with pytest.raises(NoResponders) as info:
            wait.send(None)  # raises on its first step: it never suspends, so never waits
        wait.close()
        assert info.value.msg_type == "nobody.home"
        with pytest.raises(NoResponders):
            await receipt.wait_on(lambda m: m)


async def test_wait_until_on_skips_unwanted_replies() -> None:
    """With two responders, `on` refusing the first reply (MsgNotWanted) makes the wait take the second."""
    async with Grav() as g:
        requester = g.connect()
        first, second = g.connect(), g.connect()
        first_replied = asyncio.Event()

        def answer_first(msg: Message) -> None:
            first.reply_to(msg, Message.new("test.reply", "from-first"))
            first_replied.set()

        async def answer_second(msg: Message) -> None:
            await first_replied.wait()
            second.reply_to(msg, Message.new("test.reply", "from-second"))

        first.on(answer_first)
        second.on(answer_second)
        offered: list[str] = []

        def on(reply: Message) -> str:
            offered.append(reply.text())
            if reply.text() == "from-first":
                raise MsgNotWanted
            return reply.text().upper()

        receipt = requester.send(Message.new("test.ask"))
        assert await receipt.wait_until(GUARD, on=on) == "FROM-SECOND"
        assert offered == ["from-first", "from-second"]


async def test_receipt_wait_function_errors_propagate() -> None:
    """An error other than MsgNotWanted raised by `on` ends the reply wait with that error."""
    async with Grav() as g:
        requester = g.connect()
        responder(g.connect())

        def on(reply: Message) -> None:
            raise Goodbye(reply.text())

        with pytest.raises(Goodbye, match="hey x"):
            await requester.send(Message.new("test.ask", "x")).wait_until(GUARD, on=on)


async def test_receipt_wait_on_and_on_reply() -> None:
    """receipt.wait_on returns fn's result; receipt.on_reply calls its (sync or async) function."""
    async with Grav() as g:
        requester = g.connect()
        responder(g.connect())
        result = await requester.send(Message.new("test.ask", "a")).wait_on(lambda r: r.text())
        assert result == "hey a"

        got: list[str] = []
        done = asyncio.Event()

        def on_sync(reply: Message) -> None:
            got.append(reply.text())

        async def on_async(reply: Message) -> None:
            await asyncio.sleep(0)
            got.append(reply.text())
            done.set()

        requester.send(Message.new("test.ask", "b")).on_reply(on_sync)
        await until(lambda: got == ["hey b"])
        requester.send(Message.new("test.ask", "c")).on_reply(on_async)
        await done.wait()
        assert got == ["hey b", "hey c"]


async def test_claimed_reply_skips_the_requesters_handler_but_not_other_pods() -> None:
    """A reply a receipt waits for is not also handed to the requester's handler; other pods get it."""
    async with Grav() as g:
        requester = g.connect()
        requester_seen = recorder(requester)
        observer = g.connect()
        observer_seen = recorder(observer)
        responder(g.connect())
        receipt = requester.send(Message.new("test.ask", "x"))
        reply = await receipt.wait_until(GUARD)
        await settle(g)
        assert requester_seen == []
        assert [m.uuid for m in observer_seen] == [receipt.uuid, reply.uuid]


async def test_waiting_never_removes_the_pods_handler() -> None:
    """After pod.wait_until and receipt.wait_until the pod's own handler still gets every message."""
    async with Grav() as g:
        pod = g.connect()
        seen = recorder(pod)
        sender = g.connect()
        responder(g.connect())

        async def send(item: str) -> None:
            sender.send(Message.new(data=item))

        sending = asyncio.create_task(send("during"))
        assert await pod.wait_until(GUARD, lambda m: m.text()) == "during"
        await sending

        reply = await pod.send(Message.new("test.ask", "q")).wait_until(GUARD)
        assert reply.text() == "hey q"

        sender.send(Message.new(data="after"))
        await until(lambda: len(seen) == 2)
        await settle(g)
        assert texts(seen) == ["during", "after"]  # the claimed reply went to the receipt only


async def test_replies_collects_every_answer_up_to_max() -> None:
    """Three responders answer one request: replies(max=3) yields the three answers, then ends."""
    async with Grav() as g:
        for _ in range(3):
            responder(g.connect())
        receipt = g.connect().send(Message.new("test.ask", "all"))
        got = [m.text() async for m in receipt.replies(timeout=GUARD, max=3)]
        assert got == ["hey all"] * 3


async def test_replies_window_ends_quietly_with_what_came() -> None:
    """With only a timeout, the window's end ends the iteration with what came; no error."""
    async with Grav() as g:
        responder(g.connect())
        receipt = g.connect().send(Message.new("test.ask", "one"))
        got = [m.text() async for m in receipt.replies(timeout=0.2)]
        assert got == ["hey one"]


async def test_replies_needs_a_bound_and_knows_no_responders() -> None:
    """replies() with neither bound is a UsageError; a type nobody admits raises NoResponders."""
    async with Grav() as g:
        responder(g.connect())
        receipt = g.connect().send(Message.new("test.ask", "x"))
        with pytest.raises(UsageError):
            [m async for m in receipt.replies()]
        nobody = g.connect().send(Message.new("nobody.listens", "x"))
        with pytest.raises(NoResponders):
            [m async for m in nobody.replies(max=1)]


async def test_replies_stops_waiting_when_left_or_closed() -> None:
    """Leaving replies() early (break, aclose) ends its wait, so the receipt can be waited on again."""
    async with Grav() as g:
        responder(g.connect())
        sender = g.connect()
        left = sender.send(Message.new("test.ask", "one"))
        async for reply in left.replies(timeout=GUARD, max=2):
            assert reply.text() == "hey one"
            break
        closed = sender.send(Message.new("test.ask", "two"))
        stream = closed.replies(timeout=GUARD, max=2)
        assert (await anext(stream)).text() == "hey two"
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        for receipt in (left, closed):  # a second wait while the first is registered: UsageError
            assert [m async for m in receipt.replies(timeout=0.05)] == []
