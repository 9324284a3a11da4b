"""The ServiceBus: Grafana's bus test scenarios, in one process and across three real nodes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import msgspec
import pytest

from discovery.static import StaticDiscovery
from gravpy import Grav, Message
from gravpy.mesh import PeerInfo
from gravpy.service import (
    Context,
    HandlerFailed,
    HandlerNotFound,
    RemoteError,
    ServiceBus,
    UsageError,
    WaitTimeout,
)

from .conftest import NodeFactory, linked_to
from .test_routing import mesh_of_three


@dataclass
class UserCreated:
    user_id: str


@dataclass
class SendStickers:
    user_id: str
    count: int


@dataclass
class FindDashboard:
    id: str
    result: dict[str, str] | None = None


class Ping(msgspec.Struct):
    __grav_type__ = "custom.ping"
    n: int


@dataclass
class Sides:
    """Where the buses are: ``asker`` dispatches and publishes, ``far`` and ``far2`` handle
    (on other nodes in the mesh case; ``ready`` waits until the asker's node knows a type)."""

    asker: ServiceBus
    far: ServiceBus
    far2: ServiceBus
    asker_node: Grav

    async def ready(self, wire_type: str, members: int = 1) -> None:
        if self.asker_node.hub is None:
            return

        def known(peers: list[PeerInfo]) -> bool:
            grouped = sum(n for p in peers for g, _, n in p.groups if g == wire_type)
            plain = sum(wire_type in p.interests for p in peers)
            return grouped + plain >= members

        await self.asker_node.wait_for(known, timeout=5)


@pytest.fixture(params=["one process", "three nodes"])
async def sides(request: pytest.FixtureRequest, node: NodeFactory) -> AsyncIterator[Sides]:
    """Three ServiceBuses: on one Grav, or on nodes A (asker), B and C of a real mesh."""
    async with AsyncExitStack() as stack:
        if request.param == "one process":
            g = await stack.enter_async_context(Grav())
            grav = (g, g, g)
        else:
            grav = await mesh_of_three(node)
        buses = [await stack.enter_async_context(ServiceBus(n)) for n in grav]
        yield Sides(buses[0], buses[1], buses[2], grav[0])


# -- Grafana's scenarios ---------------------------------------------------------------------------


async def test_dispatch_runs_the_registered_handler(sides: Sides) -> None:
    """A dispatched command reaches its handler with the payload, and dispatch returns it."""
    got: list[SendStickers] = []
    sides.far.add_handler(_recorder(got))
    await sides.ready("command.SendStickers")
    cmd = SendStickers("taylor", 1)
    assert await sides.asker.dispatch(cmd, timeout=5.0) is cmd
    assert got == [SendStickers("taylor", 1)]


async def test_dispatch_without_a_handler_is_handler_not_found_at_once(sides: Sides) -> None:
    """No handler anywhere: HandlerNotFound at once, even with a long timeout."""
    with pytest.raises(HandlerNotFound) as caught:
        async with asyncio.timeout(2):
            await sides.asker.dispatch(SendStickers("taylor", 1), timeout=60)
    assert caught.value.msg_type == "command.SendStickers"


async def test_a_handler_error_comes_back_to_the_dispatcher(sides: Sides) -> None:
    """A handler that raises: HandlerFailed with the type name, message and node, chained."""

    def fail(cmd: SendStickers) -> None:
        raise ValueError(f"no stickers for {cmd.user_id}")

    sides.far.add_handler(fail)
    await sides.ready("command.SendStickers")
    with pytest.raises(HandlerFailed) as caught:
        await sides.asker.dispatch(SendStickers("taylor", 1))
    e = caught.value
    assert (e.error_type, e.message, e.node) == (
        "ValueError",
        "no stickers for taylor",
        sides.far.node,
    )
    assert isinstance(e.__cause__, RemoteError)
    assert e.__cause__.error_type == "ValueError"


async def test_a_query_comes_back_filled_in(sides: Sides) -> None:
    """The query handler sets result; dispatch returns the query with that result."""

    async def find(q: FindDashboard) -> None:
        q.result = {"id": q.id, "title": "hello from handler"}

    sides.far.add_handler(find)
    await sides.ready("query.FindDashboard")
    q = await sides.asker.dispatch(FindDashboard(id="foo"))
    assert q.result == {"id": "foo", "title": "hello from handler"}


async def test_every_event_listener_on_every_node_gets_each_event_once(sides: Sides) -> None:
    """Two listeners on one bus and one on another: each is called once per event, in order."""
    calls: list[tuple[str, str]] = []
    done = asyncio.Event()

    def listener(name: str) -> Callable[[UserCreated], None]:
        def on(event: UserCreated) -> None:
            calls.append((name, event.user_id))
            if len(calls) == 6:
                done.set()

        return on

    async def third(event: UserCreated, ctx: Context) -> None:
        listener("third")(event)
        assert ctx.headers == {"user": "admin"}

    sides.far.add_event_listener(listener("first"))
    sides.far.add_event_listener(listener("second"))
    sides.far2.add_event_listener(third)
    await sides.ready("event.UserCreated", 2 if sides.asker_node.hub is not None else 1)
    for user in ("taylor", "sam"):
        await sides.asker.publish(UserCreated(user), headers={"user": "admin"})
    async with asyncio.timeout(5):
        await done.wait()
    for name in ("first", "second", "third"):
        assert [u for n, u in calls if n == name] == ["taylor", "sam"]


async def test_publish_with_no_listener_is_fine(sides: Sides) -> None:
    """Publishing an event nobody listens to neither fails nor waits; it is counted unheard."""
    await sides.asker.publish(UserCreated("nobody"))
    assert sides.asker.statistics().unheard == 1


# -- beyond Grafana ----------------------------------------------------------------------------------


async def test_headers_reach_the_handler_in_its_context(sides: Sides) -> None:
    """dispatch(headers=...) arrives as ctx.headers, with the node the handler runs on."""
    seen: list[Context] = []

    def handle(cmd: SendStickers, ctx: Context) -> None:
        seen.append(ctx)

    sides.far.add_handler(handle)
    await sides.ready("command.SendStickers")
    await sides.asker.dispatch(SendStickers("t", 1), headers={"trace": "abc"})
    assert seen[0].headers == {"trace": "abc"}
    assert seen[0].node == sides.far.node
    assert seen[0].msg_type == "command.SendStickers"


async def test_handlers_in_two_places_share_commands_and_each_runs_once(sides: Sides) -> None:
    """Handlers on two buses form a group: 20 commands run 20 times in all, on both."""
    ran: list[str] = []
    for bus, name in ((sides.far, "far"), (sides.far2, "far2")):

        def handle(cmd: SendStickers, name: str = name) -> None:
            ran.append(name)

        bus.add_handler(handle)
    await sides.ready("command.SendStickers", 2 if sides.asker_node.hub is not None else 1)
    for i in range(20):
        await sides.asker.dispatch(SendStickers("u", i))
    assert len(ran) == 20
    assert set(ran) == {"far", "far2"}


async def test_a_struct_payload_with_its_own_wire_type(sides: Sides) -> None:
    """A msgspec.Struct that sets __grav_type__ travels under that type."""

    def handle(p: Ping) -> None:
        if p.n < 0:
            raise KeyError("negative")

    sides.far.add_handler(handle)
    await sides.ready("custom.ping")
    await sides.asker.dispatch(Ping(3))
    with pytest.raises(HandlerFailed, match="KeyError"):
        await sides.asker.dispatch(Ping(-1))


async def test_a_slow_handler_gives_wait_timeout(sides: Sides) -> None:
    """A handler that does not answer in time: WaitTimeout (also a TimeoutError)."""
    release = asyncio.Event()

    async def slow(cmd: SendStickers) -> None:
        await release.wait()

    sides.far.add_handler(slow)
    await sides.ready("command.SendStickers")
    with pytest.raises(WaitTimeout):
        await sides.asker.dispatch(SendStickers("t", 1), timeout=0.2)
    release.set()


async def test_a_foreign_message_on_a_command_type_gets_an_error_reply(sides: Sides) -> None:
    """Plain text sent to command.SendStickers is answered with a decode failure, not a crash."""
    sides.far.add_handler(_recorder([]))
    await sides.ready("command.SendStickers")
    pod = sides.asker_node.connect()
    reply = await pod.send(Message.new("command.SendStickers", "not msgpack")).wait_until(5)
    outcome = msgspec.msgpack.decode(reply.data)
    assert outcome[0] is False
    assert outcome[2] in ("ValidationError", "DecodeError")
    assert sides.far.statistics().refused == 1
    await sides.asker.dispatch(SendStickers("still", 1))  # the handler still works


async def test_a_payload_of_the_wrong_shape_is_handler_failed(sides: Sides) -> None:
    """A command whose fields do not validate against the handler's class: HandlerFailed."""

    @dataclass
    class Other:
        user_id: int

    Other.__name__ = "SendStickers"  # same wire type, different fields
    sides.far.add_handler(_recorder([]))
    await sides.ready("command.SendStickers")
    with pytest.raises(HandlerFailed) as caught:
        await sides.asker.dispatch(Other(5))
    assert caught.value.error_type == "ValidationError"
    assert "user_id" in caught.value.message or "count" in caught.value.message


async def test_an_answer_too_large_to_travel_is_handler_failed(node: NodeFactory) -> None:
    """A query filled in past the mesh's message limit: the handler runs once, is counted as
    failed, and the asker gets HandlerFailed saying why (not WaitTimeout)."""
    a = await node()
    b = await node(discovery=[StaticDiscovery(a.endpoints())])
    await a.wait_for(linked_to(b), timeout=5)
    async with ServiceBus(a) as asker, ServiceBus(b) as far:
        calls: list[str] = []

        def find(q: FindDashboard) -> None:
            calls.append(q.id)
            q.result = {"body": "x" * (2 << 20)}

        far.add_handler(find)
        await a.wait_for(lambda peers: any(p.groups for p in peers), timeout=5)
        with pytest.raises(HandlerFailed) as caught:
            await asker.dispatch(FindDashboard(id="big"), timeout=5.0)
        assert (caught.value.error_type, caught.value.node) == ("UsageError", far.node)
        assert "over the mesh limit" in caught.value.message
        assert calls == ["big"]
        assert (far.statistics().handled, far.statistics().handler_failures) == (0, 1)


async def test_an_answer_of_another_shape_is_handler_failed(sides: Sides) -> None:
    """The handler's class fills ``result`` with a type the asker's class does not accept."""

    @dataclass
    class Other:
        id: str
        result: int | None = None

    Other.__name__ = "FindDashboard"  # same wire type, another result type

    def find(q: FindDashboard) -> None:
        q.result = {"title": "not an int"}

    sides.far.add_handler(find)
    await sides.ready("query.FindDashboard")
    with pytest.raises(HandlerFailed) as caught:
        await sides.asker.dispatch(Other(id="x"))
    assert caught.value.error_type == "ValidationError"
    assert "does not decode as FindDashboard" in caught.value.message


def _recorder(into: list[SendStickers]) -> Callable[[SendStickers], None]:
    def handle(cmd: SendStickers) -> None:
        into.append(cmd)

    return handle


# -- registration ----------------------------------------------------------------------------------


async def test_a_second_handler_for_a_class_in_one_bus_is_refused() -> None:
    """add_handler twice for the same command class in one ServiceBus: UsageError."""
    async with Grav() as g, ServiceBus(g) as bus:
        bus.add_handler(_recorder([]))
        with pytest.raises(UsageError, match="already has a handler"):
            bus.add_handler(_recorder([]))


def _no_annotation(cmd) -> None:  # type: ignore[no-untyped-def]
    return None


def _not_a_payload(cmd: int) -> None:
    return None


def _three(cmd: SendStickers, ctx: Context, extra: int) -> None:
    return None


def _unresolved(cmd: NoSuchClass) -> None:  # type: ignore[name-defined]  # noqa: F821
    return None


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (_no_annotation, "no annotation"),
        (_not_a_payload, "not a dataclass"),
        (_three, "3 required positional"),
        (_unresolved, "cannot resolve"),
        ("not callable", "callable"),
    ],
)
async def test_bad_listeners_and_handlers_are_refused_at_registration(
    fn: object, match: str
) -> None:
    """A listener or handler whose payload class cannot be read is a UsageError saying why."""
    async with Grav() as g, ServiceBus(g) as bus:
        with pytest.raises(UsageError, match=match):
            bus.add_handler(fn)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match=match):
            bus.add_event_listener(fn)  # type: ignore[arg-type]
        assert g.bus.statistics().receivers == 0


# -- answers that must come back, and arguments checked first ---------------------------------------


async def test_a_failure_whose_text_utf8_cannot_carry_still_comes_back() -> None:
    """A handler that raises with a lone surrogate in its message (an undecodable file name):
    each dispatch gets HandlerFailed with it escaped, the handler runs once per command, and
    more such failures than the pod's failure limit leave the handler answering."""
    ran: list[int] = []

    def handle(cmd: SendStickers) -> None:
        ran.append(cmd.count)
        if cmd.count < 0:
            raise ValueError("cannot read /data/caf\udce9.csv")

    async with Grav(failure_limit=2) as g, ServiceBus(g) as bus:
        bus.add_handler(handle)
        for i in range(-3, 0):
            with pytest.raises(HandlerFailed) as caught:
                await bus.dispatch(SendStickers("t", i), timeout=5.0)
            assert (caught.value.error_type, caught.value.message) == (
                "ValueError",
                "cannot read /data/caf\\udce9.csv",
            )
        await bus.dispatch(SendStickers("t", 1), timeout=5.0)
        assert ran == [-3, -2, -1, 1]
        assert (bus.statistics().handler_failures, bus.statistics().handled) == (3, 1)


@pytest.mark.parametrize("timeout", [-1, 0, "10", float("nan"), True])
async def test_a_dispatch_with_a_bad_timeout_runs_nothing(timeout: object) -> None:
    """dispatch(timeout=<bad>) is a UsageError before the command is sent: the handler never
    sees it (the next good command is the first it runs)."""
    got: list[SendStickers] = []
    async with Grav() as g, ServiceBus(g) as bus:
        bus.add_handler(_recorder(got))
        with pytest.raises(UsageError, match="timeout"):
            await bus.dispatch(SendStickers("refused", 1), timeout=timeout)  # type: ignore[arg-type]
        await bus.dispatch(SendStickers("good", 2), timeout=5.0)
        assert got == [SendStickers("good", 2)]
        assert bus.statistics().dispatched == 1


@pytest.mark.parametrize("concurrency", [0, -5, "2", True, 2.5])
async def test_a_refused_add_handler_leaves_nothing_registered(concurrency: object) -> None:
    """add_handler with a bad concurrency is a UsageError that registers nothing and leaves no
    pod: a right add_handler for the same class then works."""
    got: list[SendStickers] = []

    async def handle(cmd: SendStickers) -> None:
        got.append(cmd)

    async with Grav() as g, ServiceBus(g) as bus:
        with pytest.raises(UsageError, match="concurrency"):
            bus.add_handler(handle, concurrency=concurrency)  # type: ignore[arg-type]
        assert g.statistics().pods == 0
        bus.add_handler(handle, concurrency=2)
        await bus.dispatch(SendStickers("t", 1), timeout=5.0)
        assert got == [SendStickers("t", 1)]


@dataclass
class Holder:
    value: object


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda g: ServiceBus("x"), "needs a Grav"),
        (lambda g: ServiceBus(None), "needs a Grav"),
        (lambda g: ServiceBus(g).dispatch(SendStickers("t", 2**70)), "cannot be encoded"),
        (lambda g: ServiceBus(g).publish(Holder(object())), "cannot be encoded"),
        (lambda g: ServiceBus(g).publish(UserCreated("\ud800")), "cannot be encoded"),
    ],
    ids=[
        "a str for the Grav",
        "None for the Grav",
        "an int past 64 bits",
        "an object",
        "a surrogate",
    ],
)
async def test_wrong_arguments_are_usage_errors(call: Callable[[Grav], object], match: str) -> None:
    """A wrong Grav or a payload msgspec cannot write is a UsageError saying so, never an
    AttributeError, TypeError or OverflowError from inside, and nothing is sent."""
    async with Grav() as g:
        with pytest.raises(UsageError, match=match):
            await _called(call, g)
        assert g.bus.statistics().sent == 0


async def _called(call: Callable[[Grav], object], g: Grav) -> None:
    """``call(g)``, awaited if it gives an awaitable."""
    result = call(g)
    if inspect.isawaitable(result):
        await result
