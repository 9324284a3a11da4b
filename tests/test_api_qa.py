"""What a QA pass over the core API found: waits, receipts, iteration and handlers that lost,
repeated or hung on a message, and arguments that were accepted silently and then did nothing
(or the wrong thing), each pinned by the behaviour a user sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import msgspec
import pytest

from gravpy import Grav, Message, MsgReceipt
from gravpy.errors import MsgNotWanted, PermissionDenied, UsageError
from gravpy.mesh.permissions import parse_authority
from gravpy.testing import MemoryNetwork, MemoryTransport
from tests._bus_helpers import GUARD, recorder, responder, settle, texts, until


async def test_a_wait_left_alone_on_a_pod_without_a_consumer_gets_what_is_queued() -> None:
    """When one of two waits on a pod with no handler ends (here: cancelled while its wait
    function was busy), the other goes on to the messages still queued instead of hanging."""
    async with Grav() as g:
        sender = g.connect()
        pod = g.connect()
        never = asyncio.Event()
        busy_with: list[str] = []

        async def stuck(msg: Message) -> str:
            busy_with.append(msg.text())
            await never.wait()
            return msg.text()

        def second_one(msg: Message) -> str:
            if msg.text() != "2":
                raise MsgNotWanted
            return msg.text()

        first = asyncio.create_task(pod.wait_on(stuck))
        second = asyncio.create_task(pod.wait_until(GUARD, second_one))
        await until(lambda: pod.receiving)
        sender.send(Message.new("test.r", "1"))
        sender.send(Message.new("test.r", "2"))
        await until(lambda: busy_with == ["1"] and pod.statistics().handled == 1)
        first.cancel()
        async with asyncio.timeout(GUARD):
            assert await second == "2"
        assert first.cancelled()
        s = pod.statistics()
        assert (s.received, s.handled, s.inbox) == (2, 2, 0)


async def test_on_reply_gets_the_reply_and_the_asking_pods_handler_does_not() -> None:
    """on_reply claims the reply as an awaited wait_until does: the asking pod's handler, which
    admits the reply's type, does not also get it."""
    async with Grav() as g:
        responder(g.connect())
        asker = g.connect()
        handled = recorder(asker)
        called: list[str] = []
        asker.send(Message.new("test.ask", "a")).on_reply(lambda m: called.append(m.text()))
        await until(lambda: called == ["hey a"])
        await settle(g)
        assert handled == []
        assert g.statistics().unclaimed_replies == 0


async def test_a_second_wait_on_a_receipt_gets_the_replies_the_first_did_not_return() -> None:
    """Two responders answer at once: wait_until returns one reply, and a later replies() on the
    same receipt yields the other instead of losing it."""
    async with Grav() as g:
        responder(g.connect())
        responder(g.connect())
        receipt = g.connect().send(Message.new("test.ask", "b"))
        first = await receipt.wait_until(GUARD)
        rest = [m async for m in receipt.replies(timeout=GUARD, max=1)]
        assert [first.text(), *texts(rest)] == ["hey b", "hey b"]
        assert rest[0].uuid != first.uuid


async def test_a_reply_handed_to_a_cancelled_wait_is_kept_for_the_next_wait() -> None:
    """A wait cancelled after its reply came but before it returned leaves the reply to the next
    wait on the receipt; it is neither lost nor given to the handler."""
    async with Grav() as g:
        answering = g.connect()
        answering.filter_type("test.ask")
        requests = aiter(answering)
        asker = g.connect()
        handled = recorder(asker)
        receipt = asker.send(Message.new("test.ask", "c"))
        request = await anext(requests)
        waiting = asyncio.create_task(receipt.wait_until(GUARD))
        await asyncio.sleep(0)  # the wait runs to its first await: it is registered
        with pytest.raises(UsageError):  # (shown: a second wait meanwhile is refused)
            await receipt.wait_until(GUARD)
        answering.reply_to(request, Message.new("test.reply", "late"))
        waiting.cancel()  # before the waiting task could run with the reply
        with pytest.raises(asyncio.CancelledError):
            await waiting
        reply = await receipt.wait_until(GUARD)
        assert reply.text() == "late"
        await settle(g)
        assert handled == []


async def test_a_second_task_waiting_on_a_pods_iterator_is_refused_and_the_first_still_ends() -> (
    None
):
    """While one task waits in ``async for`` over a pod, another waiting on the same pod is a
    UsageError; the first keeps receiving, and ends when the pod is disconnected."""
    async with Grav() as g:
        sender = g.connect()
        pod = g.connect()
        got: list[str] = []

        async def collect() -> None:
            async for msg in pod:
                got.append(msg.text())

        first = asyncio.create_task(collect())
        await until(lambda: pod.receiving)
        async with asyncio.timeout(GUARD):
            with pytest.raises(UsageError):
                await anext(aiter(pod))
        sender.send(Message.new("test.r", "1"))
        sender.send(Message.new("test.r", "2"))
        await until(lambda: got == ["1", "2"])
        pod.disconnect()
        async with asyncio.timeout(GUARD):
            await first


async def _agen_handler(msg: Message) -> AsyncIterator[None]:
    yield


def _gen_handler(msg: Message) -> Iterator[None]:
    yield


@pytest.mark.parametrize("handler", [_agen_handler, _gen_handler])
async def test_a_generator_handler_is_refused_rather_than_never_run(
    handler: Callable[[Message], object],
) -> None:
    """A (async) generator function given as a handler is a UsageError: calling it would only
    make a generator, so its body would never run while every message counted as handled. The
    refused call leaves the pod's filter and handler as they were."""
    async with Grav() as g:
        pod = g.connect()
        with pytest.raises(UsageError):
            pod.on(handler)
        with pytest.raises(UsageError):
            pod.on_type("test.only", handler)
        assert not pod.receiving
        assert pod.allowed_patterns() is None


async def test_messages_held_for_a_replay_are_counted_when_the_pod_closes_first() -> None:
    """A pod closed while a leaf's replay holds its live messages aside counts them received and
    dropped (pod_closed), in its statistics and the bus's; the replay ending afterwards queues
    nothing into the closed pod."""
    async with Grav() as g:
        sender = g.connect()
        pod = g.connect()
        pod.on(lambda msg: None)
        pod.hold()  # what ``LeafReplays.start`` does while it asks the node for its buffer
        sender.send(Message.new("test.r", "live"))
        pod.disconnect()
        pod.release([Message.new("test.r", "replayed")])  # the node's answer, come too late
        s = pod.statistics()
        assert (s.received, s.dropped_closed, s.inbox) == (1, 1, 0)
        assert g.statistics().dropped_closed == 1


# -- arguments that were accepted silently ---------------------------------------------------------


async def test_on_type_without_a_handler_is_refused_and_changes_nothing() -> None:
    """on_type(pattern, None) is a UsageError naming the handler, not a filter set on a pod that
    then receives nothing; the pod's filter stays as it was."""
    async with Grav() as g:
        pod = g.connect()
        pod.filter_type("test.old")
        with pytest.raises(UsageError, match="handler must be callable, got None"):
            pod.on_type("test.new", None)  # type: ignore[arg-type]
        assert pod.allowed_patterns() == ("test.old",)
        assert not pod.receiving


async def test_a_receipts_wait_on_without_a_function_is_refused() -> None:
    """receipt.wait_on(None) is a UsageError naming the wait function, as pod.wait_on(None) is,
    and the reply stays for a later wait."""
    async with Grav() as g:
        responder(g.connect())
        receipt = g.connect().send(Message.new("test.ask", "x"))
        with pytest.raises(UsageError, match="the wait function must be callable, got None"):
            await receipt.wait_on(None)  # type: ignore[arg-type]
        assert (await receipt.wait_until(GUARD)).text() == "hey x"


GENERATORS = pytest.mark.parametrize("fn", [_gen_handler, _agen_handler], ids=["gen", "agen"])
NOT_A_GENERATOR = "must be a plain or async function, not a generator"


@GENERATORS
@pytest.mark.parametrize("which", ["wait_until", "wait_on"])
async def test_a_generator_wait_function_on_a_pod_is_refused(
    fn: Callable[[Message], object], which: str
) -> None:
    """pod.wait_until and pod.wait_on refuse a (async) generator function with a UsageError
    instead of returning the generator it makes as if it were the answer."""
    async with Grav() as g:
        pod, sender = g.connect(), g.connect()
        wait = asyncio.ensure_future(
            pod.wait_on(fn) if which == "wait_on" else pod.wait_until(GUARD, fn)
        )
        await asyncio.sleep(0)  # the wait runs to its first step
        sender.send(Message.new("test.r", "1"))  # (what a generator would have been returned for)
        async with asyncio.timeout(GUARD):
            with pytest.raises(UsageError, match=f"the wait function {NOT_A_GENERATOR}"):
                await wait
        assert not pod.receiving


async def _give(receipt: MsgReceipt, which: str, fn: Callable[[Message], object]) -> object:
    """Hand ``fn`` to ``receipt`` the way ``which`` names."""
    if which == "on_reply":
        receipt.on_reply(fn)
        return None
    if which == "wait_on":
        return await receipt.wait_on(fn)
    return await receipt.wait_until(GUARD, fn)


@GENERATORS
@pytest.mark.parametrize("which", ["wait_until", "wait_on", "on_reply"])
async def test_a_generator_function_given_to_a_receipt_is_refused_at_the_call(
    fn: Callable[[Message], object], which: str
) -> None:
    """receipt.wait_until, wait_on and on_reply refuse a (async) generator function with a
    UsageError before they wait, and the reply stays for a later wait."""
    async with Grav() as g:
        responder(g.connect())
        receipt = g.connect().send(Message.new("test.ask", "x"))
        with pytest.raises(UsageError, match=NOT_A_GENERATOR):
            await _give(receipt, which, fn)
        assert (await receipt.wait_until(GUARD)).text() == "hey x"


@pytest.mark.parametrize("same", ["itself", "copy"])
async def test_replying_with_the_request_or_a_copy_of_it_is_refused(same: str) -> None:
    """pod.reply_to(request, request), or a copy that keeps its uuid, is a UsageError that leaves
    the request unchanged: the mesh would drop such a reply as a message it has already seen."""
    async with Grav() as g:
        pod = g.connect()
        request = Message.new("test.ask", "q")
        reply = request if same == "itself" else msgspec.structs.replace(request, data=b"a")
        with pytest.raises(UsageError, match="reply must be a new message"):
            pod.reply_to(request, reply)
        assert (request.reply_to, reply.reply_to) == ("", "")
        assert g.statistics().sent == 0


SECRETS_DENIED = {
    "name": "app",
    "token": "app-token",
    "subscribe": {"allow": [">"], "deny": ["secret.>"]},
}


def _node_and_app(identity: Mapping[str, object]) -> tuple[Grav, Grav]:
    """A node whose auth file holds ``identity``, and an app that attaches to it as that identity
    (in memory: no sockets)."""
    network = MemoryNetwork()
    authority = parse_authority({"identities": [identity]})
    node = Grav(transport=MemoryTransport(network, "node"), authority=authority)
    app = Grav(
        role="leaf",
        transport=MemoryTransport(network),
        attach_to="memory://node",
        token="app-token",
    )
    return node, app


async def test_filter_type_refuses_a_pattern_the_app_may_not_receive_as_on_type_does() -> None:
    """On an app whose node lets it receive no secret.* type, filter_type("secret.>") raises
    PermissionDenied (as on_type does) and leaves the filter as it was; denying it is allowed."""
    node, app = _node_and_app(SECRETS_DENIED)
    async with node, app:
        pod = app.connect()
        pod.filter_type("public.>")
        with pytest.raises(PermissionDenied, match="secret"):
            pod.filter_type("secret.>")
        assert pod.allowed_patterns() == ("public.>",)
        pod.filter_type("secret.>", allow=False)
        assert not pod.admits_type("secret.plan")


async def test_an_event_subscription_the_app_may_not_receive_leaves_no_pod_behind() -> None:
    """Subscribing to a user's events on an app whose node denies that type raises
    PermissionDenied, and the pod made for the subscription is disconnected, not left over."""
    from gravpy.events import EventBroadcaster

    no_events = {**SECRETS_DENIED, "subscribe": {"allow": [">"], "deny": ["grav.events.>"]}}
    node, app = _node_and_app(no_events)
    async with node, app:
        before = len(app.bus.pods())
        with pytest.raises(PermissionDenied):
            EventBroadcaster(app).subscribe("0" * 32)
        assert len(app.bus.pods()) == before


@pytest.mark.parametrize("predicate", [5, None, "peers"])
async def test_wait_for_with_a_predicate_that_is_not_callable_is_a_usage_error(
    predicate: object,
) -> None:
    """``Grav.wait_for`` names a predicate it cannot call, rather than a bare TypeError."""
    async with Grav(transport=MemoryTransport(MemoryNetwork())) as g:
        with pytest.raises(UsageError, match="predicate must be callable"):
            await g.wait_for(predicate, 1)  # type: ignore[arg-type]
