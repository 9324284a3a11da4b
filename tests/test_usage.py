"""Wrong arguments to the core API are refused when they are given, with a UsageError saying what is
wrong, never an AttributeError or TypeError from deep inside (nor later, in a bus task)."""

from __future__ import annotations

import asyncio

import pytest

import gravpy
from gravpy import Grav, Message, Overflow
from gravpy.bus import Bus
from gravpy.errors import UsageError, WaitTimeout
from gravpy.sync import SyncGrav, _LoopThread
from gravpy.testing import MemoryNetwork, MemoryTransport

# -- replies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["request", "reply"])
async def test_reply_to_needs_two_messages(which: str) -> None:
    """pod.reply_to with a request or a reply that is not a Message is a UsageError naming it."""
    async with Grav() as g:
        pod = g.connect()
        request, reply = Message.new("test.ask"), Message.new("test.reply")
        args: list[object] = ["not a message", reply] if which == "request" else [request, "x"]
        with pytest.raises(UsageError, match=f"{which} must be a Message, got 'str'"):
            pod.reply_to(*args)  # type: ignore[arg-type]
        assert reply.reply_to == ""  # refused before anything was changed


def test_new_reply_needs_a_message_to_answer() -> None:
    """Message.new_reply answers a Message; anything else is a UsageError."""
    with pytest.raises(UsageError, match="answers a Message, got 'str'"):
        Message.new_reply("not a message")  # type: ignore[arg-type]


# -- overflow -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["bogus", 5, None])
async def test_an_unknown_overflow_policy_is_a_usage_error(bad: object) -> None:
    """Grav(overflow=...) and connect(overflow=...) take an Overflow or its name, nothing else."""
    with pytest.raises(UsageError, match="overflow must be"):
        Grav(overflow=bad)  # type: ignore[arg-type]
    async with Grav() as g:
        for connect in (g.connect, g.connect_with_replay):
            if bad is not None:  # connect(overflow=None) is the node's policy
                with pytest.raises(UsageError, match="overflow must be"):
                    connect(overflow=bad)  # type: ignore[arg-type]
        assert g.statistics().pods == 0


async def test_an_overflow_policy_may_be_named() -> None:
    """An overflow policy may be given by its value, as gravd's config does."""
    async with Grav(overflow="drop_oldest") as g:
        assert g.connect().overflow is Overflow.DROP_OLDEST
        assert g.connect(overflow="drop_newest").overflow is Overflow.DROP_NEWEST


# -- timeouts -------------------------------------------------------------------------------------

NOT_TIMEOUTS = ["1", True, b"1", [1]]


@pytest.mark.parametrize("bad", NOT_TIMEOUTS)
async def test_a_timeout_that_is_not_a_number_is_a_usage_error(bad: object) -> None:
    """Every wait takes a positive number of seconds or None; a str (or a bool) is a UsageError."""
    async with Grav() as g:
        pod, responder = g.connect(), g.connect()
        responder.on(lambda m: None)
        receipt = pod.send(Message.new("test.ask"))
        waits = [
            lambda: pod.wait_until(bad, lambda m: m),  # type: ignore[arg-type]
            lambda: receipt.wait_until(bad),  # type: ignore[arg-type]
            lambda: g.wait_for(lambda peers: True, bad),  # type: ignore[arg-type]
        ]
        for wait in waits:
            with pytest.raises(UsageError, match="timeout must be a positive number"):
                await wait()
        with pytest.raises(UsageError, match="timeout must be a positive number"):
            receipt.replies(bad, max=1)  # type: ignore[arg-type]
        assert not pod.receiving  # the refused wait never started


async def test_a_number_of_another_numeric_class_is_a_timeout() -> None:
    """A timeout may be any int or float, subclasses (such as numpy's float64) included."""

    class Seconds(float):
        pass

    async with Grav() as g:
        pod = g.connect()
        with pytest.raises(WaitTimeout):
            await pod.wait_until(Seconds(0.01), lambda m: m)


@pytest.mark.parametrize("bad", [-1, 0, "5", float("nan")])
def test_connect_refuses_a_bad_timeout_when_called(bad: object) -> None:
    """gravpy.connect(url, timeout=-1) is a UsageError at the call, not a WaitTimeout on entering."""
    with pytest.raises(UsageError, match="timeout must be a positive number"):
        gravpy.connect("ws://127.0.0.1:1/meta/message", timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="attach_timeout must be a positive number"):
        Grav(attach_timeout=bad)  # type: ignore[arg-type]


def test_sync_receive_times_out_with_wait_timeout() -> None:
    """SyncPod.receive(timeout) refuses a bad timeout and, when nothing comes, raises WaitTimeout."""
    runner = _LoopThread()

    async def start() -> Grav:
        grav = Grav()
        await grav.start()
        return grav

    with SyncGrav(runner.run(start()), runner) as g:
        pod = g.connect()
        with pytest.raises(UsageError, match="timeout must be a positive number"):
            pod.receive(-1)
        with pytest.raises(WaitTimeout, match=r"within 0\.05 s"):
            pod.receive(0.05)


# -- functions ------------------------------------------------------------------------------------


async def test_a_wait_function_that_cannot_be_called_is_refused_before_waiting() -> None:
    """pod.wait_until, receipt.wait_until/wait_on and on_reply refuse a non-callable at the call."""
    async with Grav() as g:
        pod, responder = g.connect(), g.connect()
        responder.on(lambda m: None)
        receipt = pod.send(Message.new("test.ask"))
        waits = [
            lambda: pod.wait_until(1, "not a function"),  # type: ignore[arg-type]
            lambda: pod.wait_on("not a function"),  # type: ignore[arg-type]
            lambda: receipt.wait_until(1, "not a function"),  # type: ignore[arg-type]
            lambda: receipt.wait_on("not a function"),  # type: ignore[arg-type]
        ]
        for wait in waits:
            with pytest.raises(UsageError, match="must be callable, got 'not a function'"):
                await wait()
            assert not pod.receiving
        tasks = len(asyncio.all_tasks())
        with pytest.raises(UsageError, match="must be callable, got 'not a function'"):
            receipt.on_reply("not a function")  # type: ignore[arg-type]
        assert len(asyncio.all_tasks()) == tasks  # no task started that would fail later


# -- flags and counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["no", 0, 1, None])
async def test_allow_is_true_or_false(bad: object) -> None:
    """filter_type and filter_uuid take allow=True or False; "no" (or 0) is not read as either."""
    async with Grav() as g:
        pod = g.connect()
        with pytest.raises(UsageError, match="allow must be True or False"):
            pod.filter_type("test.a", allow=bad)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="allow must be True or False"):
            pod.filter_uuid("0" * 32, allow=bad)  # type: ignore[arg-type]
        assert pod.allowed_patterns() is None
        assert pod.admits(Message.new("test.a"))


async def test_a_bool_is_not_a_count() -> None:
    """concurrency=True, replies(max=True), and True for a pod's or a bus's limits are
    refused, not taken as 1."""

    async def handler(msg: Message) -> None:
        pass

    async with Grav() as g:
        pod, responder = g.connect(), g.connect()
        with pytest.raises(UsageError, match="concurrency must be an int >= 1, got True"):
            pod.on(handler, concurrency=True)
        with pytest.raises(UsageError, match="concurrency must be an int >= 1, got True"):
            pod.on_type("test.a", handler, concurrency=True)
        assert not pod.receiving
        responder.on(lambda m: None)
        with pytest.raises(UsageError, match="max must be an int >= 1 or None, got True"):
            pod.send(Message.new("test.ask")).replies(max=True)
        with pytest.raises(UsageError, match="inbox_limit must be an int >= 1, got True"):
            g.connect(inbox_limit=True)
    for count in ("inbox_limit", "failure_limit", "max_attempts", "unclaimed_replies"):
        with pytest.raises(UsageError, match=f"{count} must be an int >= 1, got True"):
            Bus(**{count: True})  # type: ignore[arg-type]


# -- nothing changes when a call is refused -------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "handler", "options"),
    [
        ("test.a", "not a function", {}),
        ("test.a", print, {"concurrency": 0}),
        ("test.a", print, {"concurrency": 2}),  # a plain function
        ("test.a", print, {"group": "a b"}),
        ("a.>.b", print, {}),
        (123, print, {}),
    ],
    ids=["handler", "concurrency", "sync-concurrency", "group", "pattern", "pattern-type"],
)
async def test_a_refused_on_type_leaves_the_pod_as_it_was(
    pattern: object, handler: object, options: dict[str, object]
) -> None:
    """on_type checks every argument before it changes the pod's filter, handler or group."""
    async with Grav() as g:
        pod = g.connect()
        pod.filter_type("test.old")
        with pytest.raises(UsageError):
            pod.on_type(pattern, handler, **options)  # type: ignore[arg-type]
        assert pod.allowed_patterns() == ("test.old",)
        assert not pod.receiving
        assert pod.group is None


async def test_a_refused_on_keeps_the_group() -> None:
    """on(h, concurrency=0, group=...) is refused without joining the group."""
    async with Grav() as g:
        pod = g.connect()
        with pytest.raises(UsageError):
            pod.on(print, concurrency=0, group="workers")
        assert pod.group is None
        assert not pod.receiving


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"mesh_key": b"short"}, "mesh_key must be bytes, at least 16"),
        ({"mesh_key": "a str key of 16+ chars"}, "mesh_key must be bytes"),
        ({"hub_config": "x"}, "hub_config must be a HubConfig, got str"),
    ],
    ids=["short-key", "str-key", "config"],
)
def test_a_bad_mesh_key_or_hub_config_is_refused_when_the_node_is_made(
    options: dict[str, object], error: str
) -> None:
    """A mesh key under 16 bytes (or not bytes) and a hub_config that is not a HubConfig are
    UsageError at Grav(...), not at the first link (or an AttributeError)."""
    with pytest.raises(UsageError, match=error):
        Grav(transport=MemoryTransport(MemoryNetwork()), **options)  # type: ignore[arg-type]
