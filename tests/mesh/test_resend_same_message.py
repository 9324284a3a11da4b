"""A message is sent once: sending a message again, or sending on one received with its uuid, is
refused at the call on every node, before anything is delivered here or forwarded, since every
node that saw its uuid would drop it as a duplicate (in memory: no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from gravpy import Grav, Message, Pod
from gravpy.errors import UsageError
from gravpy.proto import ROLE_LEAF
from gravpy.testing import MemoryNetwork, MemoryTransport
from tests._bus_helpers import GUARD, recorder, settle, texts, until

from .test_router import FakeLink, table


@pytest.fixture(params=["peer", "leaf"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Grav, Grav]]:
    """Two nodes linked in memory: ``a``, and ``b`` as its peer or as an app attached to it."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
        if request.param == "peer":
            b = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
            await b.connect_endpoint(a.endpoints()[0])
        else:
            leaf = Grav(transport=MemoryTransport(net), role=ROLE_LEAF, attach_to=a.endpoints()[0])
            b = await stack.enter_async_context(leaf)
        yield a, b


async def _wanted(node: Grav, pattern: str) -> None:
    """Wait until ``node`` has a link that wants ``pattern``."""
    await node.wait_for(lambda links: any(pattern in p.interests for p in links), GUARD)


def _pods_on(node: Grav, pattern: str) -> tuple[Pod, list[Message]]:
    """A pod on ``node`` that records what it gets of ``pattern``."""
    pod = node.connect()
    pod.filter_type(pattern)
    return pod, recorder(pod)


async def test_a_message_sent_again_is_refused_and_each_pod_gets_it_once(
    nodes: tuple[Grav, Grav],
) -> None:
    """The second send of a message is a UsageError naming its uuid; a pod here and one on the
    other node each got it once, the next message follows it, and the other node saw no
    duplicate."""
    a, b = nodes
    _, there = _pods_on(b, "resend.>")
    _, here = _pods_on(a, "resend.>")
    await _wanted(a, "resend.>")
    sender = a.connect()
    msg = Message.new("resend.x", "1")
    sender.send(msg)
    with pytest.raises(UsageError, match=f"message {msg.uuid} was already sent.*Message.new"):
        sender.send(msg)
    sender.send(Message.new("resend.x", "2"))
    await until(lambda: len(there) == 2 and len(here) == 2)
    await settle(a)
    await settle(b)
    assert (texts(here), texts(there)) == (["1", "2"], ["1", "2"])
    assert a.statistics().sent == 2
    assert b.hub is not None
    assert b.hub.statistics().dropped_duplicate == 0


async def test_a_refused_send_uses_up_no_origin_number(nodes: tuple[Grav, Grav]) -> None:
    """A message sent again is refused without taking a number of the node's origin sequence,
    so the messages it numbers have no gap (a receiver that resumes would count one as lost)."""
    a, _ = nodes
    assert a.hub is not None
    sender = a.connect()
    msg = Message.new("resend.x", "1")
    sender.send(msg)
    before = a.hub.traffic.origin_seq
    with pytest.raises(UsageError):
        sender.send(msg)
    assert a.hub.traffic.origin_seq == before


async def test_a_message_from_another_node_sent_on_with_its_uuid_is_refused(
    nodes: tuple[Grav, Grav],
) -> None:
    """A pod that sends on a message it got from the other node, with its type changed but its
    uuid kept, gets a UsageError: neither a pod beside it nor one on the sender's node gets it."""
    a, b = nodes
    _, on_b = _pods_on(b, "resend.on")
    _, on_a = _pods_on(a, "resend.on")
    relay = b.connect()
    errors: list[UsageError] = []

    def send_on(msg: Message) -> None:
        msg.type = "resend.on"
        try:
            relay.send(msg)
        except UsageError as exc:
            errors.append(exc)

    relay.on_type("resend.first", send_on)
    await _wanted(a, "resend.first")
    await _wanted(b, "resend.on")
    msg = Message.new("resend.first", "x")
    a.connect().send(msg)
    await until(lambda: len(errors) == 1)
    relay.send(Message.new("resend.on", "new"))  # a new message goes through, and after it
    await until(lambda: len(on_a) == 1 and len(on_b) == 1)
    await settle(a)
    await settle(b)
    assert msg.uuid in str(errors[0])
    assert (texts(on_a), texts(on_b)) == (["new"], ["new"])


async def test_a_reply_message_reused_for_a_second_request_is_refused(
    nodes: tuple[Grav, Grav],
) -> None:
    """A responder that answers a second request with the message it answered the first with
    gets a UsageError at reply_to, and can answer with a new message, which arrives."""
    a, b = nodes
    responder = b.connect()
    canned = Message.new("resend.answer", "canned")
    errors: list[UsageError] = []

    def answer(request: Message) -> None:
        try:
            responder.reply_to(request, canned)
        except UsageError as exc:
            errors.append(exc)
            responder.reply_to(request, Message.new("resend.answer", "fresh"))

    responder.on_type("resend.ask", answer)
    await _wanted(a, "resend.ask")
    asker = a.connect()
    first = await asker.send(Message.new("resend.ask")).wait_until(GUARD)
    second = await asker.send(Message.new("resend.ask")).wait_until(GUARD)
    assert (first.text(), second.text()) == ("canned", "fresh")
    assert len(errors) == 1
    assert canned.uuid in str(errors[0])


def test_the_router_refuses_a_local_send_of_a_uuid_it_saw_and_keeps_where_it_came_from() -> None:
    """from_local gives None for a uuid that arrived on a link (or was sent here), and the
    seen-set still routes replies to it back to the link it came from."""
    b, c = FakeLink("b"), FakeLink("c")
    router = table(b, c)
    request = Message.new("svc.q")
    assert router.arrived(request, b) is not None
    assert router.from_local(request) is None
    assert router.from_local(Message.new_reply(request)) == (b,)
    mine = Message.new("svc.q")
    assert router.from_local(mine) == (b, c)
    assert router.from_local(mine) is None
    assert router.duplicates == 0
