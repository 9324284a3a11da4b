"""An app whose link to its node dropped: what its sends and its waits on replies do while it is
detached, and after it reattaches (in memory: no sockets)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from gravpy import Grav, Message, MsgReceipt, Pod
from gravpy.backoff import BackoffPolicy
from gravpy.errors import LinkClosedError, NoResponders
from gravpy.mesh import HubConfig, PeerInfo
from gravpy.proto import ROLE_LEAF
from gravpy.testing import MemoryLink, MemoryNetwork, MemoryTransport

GUARD = 10.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing
# an app that stays detached once its link drops: its first redial is 30 to 60 s away
DETACHED = HubConfig(backoff=BackoffPolicy(initial=60.0, maximum=60.0))


class CuttableTransport(MemoryTransport):
    """A ``MemoryTransport`` whose dialled links the test can cut, as a network fault would."""

    def __init__(self, network: MemoryNetwork) -> None:
        super().__init__(network)
        self.dialled: list[MemoryLink] = []

    async def dial(self, url: str, *, timeout: float) -> MemoryLink:
        link = await super().dial(url, timeout=timeout)
        self.dialled.append(link)
        return link

    async def cut(self) -> None:
        for link in self.dialled:
            await link.close("cut by the test")


@dataclass
class Setup:
    node: Grav
    app: Grav
    transport: CuttableTransport
    asked: asyncio.Queue[Message]  # the requests the node's responder got (it answers on demand)
    responder: Pod


def _open(peers: list[PeerInfo]) -> bool:
    return any(p.state == "open" for p in peers)


def _serving(peers: list[PeerInfo]) -> bool:
    return any(p.state == "open" and "svc.slow" in p.interests for p in peers)


Factory = Callable[[HubConfig | None], Awaitable[Setup]]


@pytest.fixture
async def setup_factory() -> AsyncIterator[Factory]:
    """A node with a responder for ``svc.slow`` that answers only when the test says, and an app
    attached to it over a link the test can cut."""
    async with AsyncExitStack() as stack:

        async def make(config: HubConfig | None) -> Setup:
            net = MemoryNetwork()
            node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
            asked: asyncio.Queue[Message] = asyncio.Queue()
            responder = node.connect()
            responder.on_type("svc.slow", asked.put_nowait)
            transport = CuttableTransport(net)
            options = {} if config is None else {"hub_config": config}
            app = Grav(
                transport=transport, role=ROLE_LEAF, attach_to=node.endpoints()[0], **options
            )
            await stack.enter_async_context(app)
            await app.wait_for(_serving, GUARD)
            return Setup(node, app, transport, asked, responder)

        yield make


async def _asked(setup: Setup) -> tuple[MsgReceipt, Message]:
    """Send a request from the app; return its receipt once the node's responder has it."""
    receipt = setup.app.connect().send(Message.new("svc.slow", b"?"))
    assert not receipt.no_responders
    async with asyncio.timeout(GUARD):
        request = await setup.asked.get()
    return receipt, request


async def _wait(receipt: MsgReceipt, how: str) -> None:
    """Wait on ``receipt`` by ``how`` (2 s: a broken build's ``WaitTimeout``, or the end of the
    window of ``replies``, comes then; the failure expected comes before any timer)."""
    if how == "wait_until":
        await receipt.wait_until(2.0)
    else:
        async for _ in receipt.replies(timeout=2.0):
            pass


async def _drop(setup: Setup) -> None:
    await setup.transport.cut()
    await setup.app.wait_for(lambda peers: not _open(peers), GUARD)


@pytest.mark.parametrize("how", ["wait_until", "replies"])
async def test_a_wait_started_after_the_link_dropped_fails_at_once(
    setup_factory: Factory, how: str
) -> None:
    """A request sent while attached, whose wait starts once the app's link has dropped, fails
    at once with LinkClosedError, as a wait already running when it dropped does, rather than
    running out its timeout."""
    setup = await setup_factory(DETACHED)
    receipt, _ = await _asked(setup)
    await _drop(setup)
    with pytest.raises(LinkClosedError, match="no open link"):
        await _wait(receipt, how)


async def test_a_wait_running_when_the_link_drops_fails_at_once(
    setup_factory: Factory,
) -> None:
    """A wait on a request, running when the app's link drops, ends with LinkClosedError."""
    setup = await setup_factory(DETACHED)
    receipt, _ = await _asked(setup)
    waiting = asyncio.ensure_future(receipt.wait_until(GUARD))
    await setup.transport.cut()
    with pytest.raises(LinkClosedError):
        await waiting


async def test_a_detached_apps_request_raises_no_responders_at_once(
    setup_factory: Factory,
) -> None:
    """A request sent while the app is detached has a receipt that says no_responders (not
    dropped), and its wait raises NoResponders at once, saying the app is cut off from its node
    (not only that no pod admits the type): it never left the process."""
    setup = await setup_factory(DETACHED)
    await _drop(setup)
    receipt = setup.app.connect().send(Message.new("svc.slow", b"?"))
    assert (receipt.no_responders, receipt.dropped) == (True, False)
    with pytest.raises(NoResponders, match=r"'svc\.slow': this app has no open link to its node"):
        await receipt.wait_until(GUARD)
    with pytest.raises(NoResponders, match="no open link"):
        receipt.replies(timeout=GUARD)
    assert setup.asked.empty()


async def test_no_responders_says_what_was_so_when_the_request_was_sent(
    setup_factory: Factory,
) -> None:
    """A request nobody admitted while the app was attached raises a plain NoResponders, even
    when its wait comes after the link dropped: the app being cut off is not why."""
    setup = await setup_factory(DETACHED)
    receipt = setup.app.connect().send(Message.new("svc.nobody", b"?"))
    assert receipt.no_responders
    await _drop(setup)
    with pytest.raises(NoResponders) as caught:
        await receipt.wait_until(GUARD)
    assert str(caught.value) == str(NoResponders("svc.nobody"))
    assert "link" not in str(caught.value)


async def test_a_detached_apps_request_to_its_own_pod_is_answered(
    setup_factory: Factory,
) -> None:
    """While detached, a wait started on a request that a pod of the app itself admits waits
    for that pod's reply, which the link's absence does not prevent."""
    setup = await setup_factory(DETACHED)
    local: asyncio.Queue[Message] = asyncio.Queue()
    helper = setup.app.connect()
    helper.on_type("app.local", local.put_nowait)
    await _drop(setup)
    receipt = setup.app.connect().send(Message.new("app.local", b"?"))
    waiting = asyncio.ensure_future(receipt.wait_until(GUARD))
    async with asyncio.timeout(GUARD):
        request = await local.get()
    await asyncio.sleep(0)  # (the wait has started: it ran up to its first await)
    assert not waiting.done()
    helper.reply_to(request, Message.new("app.local.r", b"!"))
    assert (await waiting).data == b"!"


@pytest.mark.parametrize("order", ["reply-then-wait", "wait-then-reply"])
async def test_a_reply_that_comes_after_the_app_reattached_is_returned(
    setup_factory: Factory, order: str
) -> None:
    """A request the node's responder got before the app's link dropped is answered after the
    app reattached: the node routes the late reply by the asker's process, and a wait started
    once attached again returns it, whether it came before or after the wait started."""
    setup = await setup_factory(None)  # (redials at once)
    seen: asyncio.Queue[Message] = asyncio.Queue()
    setup.app.connect().on_type("svc.slow.r", seen.put_nowait)  # (a reply nobody waits for)
    receipt, request = await _asked(setup)
    await _drop(setup)
    await setup.app.wait_for(_serving, GUARD)
    reply = Message.new("svc.slow.r", b"late")
    if order == "reply-then-wait":
        setup.responder.reply_to(request, reply)
        async with asyncio.timeout(GUARD):
            await seen.get()
        assert setup.app.statistics().unclaimed_replies == 1
    waiting = asyncio.ensure_future(receipt.wait_until(GUARD))
    if order == "wait-then-reply":
        await asyncio.sleep(0)
        setup.responder.reply_to(request, reply)
    assert (await waiting).data == b"late"
