"""Per-link monitoring: the app's name, bytes each way, drops by reason, exact totals by role."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import msgpack
import pytest

import gravpy
from gravpy import Grav, Message
from gravpy.errors import MessageDropped, UsageError
from gravpy.mesh import HubConfig
from gravpy.mesh.permissions import parse_authority
from gravpy.proto import ROLE_LEAF
from gravpy.proto.codec import decode_frame, encode_frame
from gravpy.proto.frames import Hello
from gravpy.proto.handshake import REASON_SHUTDOWN
from gravpy.testing import MemoryNetwork, MemoryTransport

from .conftest import FAST, NodeFactory, linked_to

_NONCE = bytes(16)


async def _leaf(stack: AsyncExitStack, net: MemoryNetwork, url: str, name: str = "") -> Grav:
    leaf = Grav(
        transport=MemoryTransport(net), role=ROLE_LEAF, attach_to=url, attach_timeout=5, name=name
    )
    return await stack.enter_async_context(leaf)


async def _loaded(stack: AsyncExitStack) -> tuple[Grav, Grav, asyncio.Queue[Message]]:
    """A node whose pod takes load.* into the queue returned, and a leaf that knows it."""
    net = MemoryNetwork()
    node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
    got: asyncio.Queue[Message] = asyncio.Queue()
    node.connect().on_type("load.*", got.put_nowait)
    leaf = await _leaf(stack, net, node.endpoints()[0])
    await leaf.wait_for(lambda links: any("load.*" in p.interests for p in links), 5)
    return node, leaf, got


def test_a_named_hello_keeps_the_first_ten_elements_of_an_unnamed_one() -> None:
    """The name is an 11th element only when set, so version-5 nodes that read ten still agree."""
    plain = Hello("n", "leaf", "*", "", _NONCE, False)
    named = Hello("n", "leaf", "*", "", _NONCE, False, name="billing")
    assert encode_frame(plain) == encode_frame(Hello("n", "leaf", "*", "", _NONCE, False))
    unpacked = msgpack.unpackb(encode_frame(named))
    assert unpacked[:10] == msgpack.unpackb(encode_frame(plain))
    assert unpacked[10] == "billing"
    assert decode_frame(encode_frame(named)) == named
    assert decode_frame(encode_frame(plain)).name == ""


def test_a_hello_with_a_bad_name_is_a_frame_error() -> None:
    """A name that is not a string, too long or not printable is refused when decoded."""
    base = msgpack.unpackb(encode_frame(Hello("n", "leaf", "*", "", _NONCE, False)))
    for bad in (7, "x" * 65, "a\nb"):
        with pytest.raises(gravpy.errors.FrameError, match="HELLO name"):
            decode_frame(msgpack.packb([*base, bad]))


def test_an_app_name_is_checked_where_it_is_given() -> None:
    """Grav(name=...) refuses an over-long or non-printable name with a clear UsageError."""
    with pytest.raises(UsageError, match="at most 64 characters"):
        Grav(name="b" * 65)
    with pytest.raises(UsageError, match="printable"):
        Grav(name="bill\x00ing")
    assert Grav(name="billing · eu").name == "billing · eu"


async def test_the_node_lists_a_leaf_under_its_app_name() -> None:
    """A leaf attached with name='billing' shows that name in the node's PeerInfo."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
        await _leaf(stack, net, node.endpoints()[0], name="billing")
        await _leaf(stack, net, node.endpoints()[0])
        assert sorted(p.name for p in node.peers()) == ["", "billing"]


async def test_drops_are_counted_by_reason() -> None:
    """Past queue_limit a message is queue_full, past queue_bytes queue_bytes, once the link is
    closing link_closed; dropped is their sum."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            Grav(
                transport=MemoryTransport(net),
                hub_config=HubConfig(queue_limit=16, queue_bytes=1000),
            )
        )
        await _leaf(stack, net, node.endpoints()[0])
        assert node.hub is not None
        (link,) = node.hub.peers.values()
        taken = [link.enqueue(Message.new("small", b"")) for _ in range(20)]
        assert taken.count(False) == 4
        link.drop_queue()
        assert link.enqueue(Message.new("big", b"x" * 600))
        assert not link.enqueue(Message.new("big", b"x" * 600))
        link.end(REASON_SHUTDOWN)
        assert not link.enqueue(Message.new("late", b""))
        drops = link.info().drops
        assert (drops.queue_full, drops.queue_bytes, drops.link_closed) == (4, 1, 1)
        assert link.info().dropped == 6


async def test_a_message_every_link_refused_is_dropped_not_unwanted() -> None:
    """A leaf wants load.*, but the link's queue is full: the sender's receipt says dropped (and
    its wait raises MessageDropped at once), not no_responders; the link counts queue_full."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            Grav(transport=MemoryTransport(net), hub_config=HubConfig(queue_limit=16))
        )
        leaf = await _leaf(stack, net, node.endpoints()[0])
        leaf.connect().on_type("load.*", lambda m: None)
        await node.wait_for(lambda links: any("load.*" in p.interests for p in links), 5)
        pod = node.connect()
        receipts = [pod.send(Message.new("load.x", b"")) for _ in range(40)]  # one loop turn
        assert [r.dropped for r in receipts] == [False] * 16 + [True] * 24
        assert not any(r.no_responders for r in receipts)
        with pytest.raises(MessageDropped, match="send queue of every link"):
            await receipts[-1].wait_until(5)
        (info,) = node.peers()
        assert info.drops.queue_full == 24
        assert node.statistics().undelivered == 0
        unwanted = pod.send(Message.new("nobody.wants", b""))
        assert (unwanted.no_responders, unwanted.dropped) == (True, False)


async def test_bytes_each_way_count_the_encoded_frames() -> None:
    """A leaf's 10 messages of 1 KB grow the node's bytes_in on that link by at least 10 KB."""
    async with AsyncExitStack() as stack:
        node, leaf, got = await _loaded(stack)
        (before,) = node.peers()
        pod = leaf.connect()
        for _ in range(10):
            pod.send(Message.new("load.x", b"x" * 1024))
        async with asyncio.timeout(5):
            for _ in range(10):
                await got.get()
        (after,) = node.peers()
        (leaf_side,) = leaf.peers()
    assert after.bytes_in - before.bytes_in >= 10 * 1024
    assert leaf_side.bytes_out >= after.bytes_in - before.bytes_in
    assert before.bytes_out > 0  # the node's HELLO, ACCEPT and INTERESTS


async def test_a_disconnected_leaf_stays_in_the_role_totals() -> None:
    """A leaf sends 50 messages and leaves: the node's leaf totals still hold the 50 messages
    and their bytes, and no total went down."""
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
        assert node.hub is not None
        got: asyncio.Queue[Message] = asyncio.Queue()
        node.connect().on_type("count.*", got.put_nowait)
        async with Grav(
            transport=MemoryTransport(net), role=ROLE_LEAF, attach_to=node.endpoints()[0]
        ) as leaf:
            await leaf.wait_for(lambda links: any("count.*" in p.interests for p in links), 5)
            pod = leaf.connect()
            for i in range(50):
                pod.send(Message.new("count.x", str(i)))
            async with asyncio.timeout(5):
                for _ in range(50):
                    await got.get()
            live = node.hub.statistics().by_role["leaf"]
        await node.wait_for(lambda links: not links, 5)
        closed = node.hub.statistics().by_role["leaf"]
    assert live.messages_in == 50
    assert closed.messages_in == 50
    assert closed.bytes_in >= live.bytes_in > 0
    assert closed.bytes_out >= live.bytes_out > 0
    assert closed.messages_out >= live.messages_out


async def test_a_publish_the_identity_may_not_make_is_a_permission_drop(
    node: NodeFactory,
) -> None:
    """A message an app's identity may not publish, dropped at its node, is counted on its link
    as permission_denied (and not in dropped, which is what could not be sent)."""
    identity = {"name": "s", "token": "tok", "publish": {"allow": ["ok.*"], "deny": []}}
    a = await node(authority=parse_authority({"identities": [identity]}))
    got: asyncio.Queue[Message] = asyncio.Queue(8)
    a.connect().on(got.put_nowait)
    async with gravpy.connect(a.endpoints()[0], hub_config=FAST, token="tok", name="s") as app:
        await app.wait_for(linked_to(a), timeout=5)
        assert app.hub is not None
        app.hub.traffic.grant = None  # skip the app's own check, as a misbehaving app would
        pod = app.connect()
        pod.send(Message.new("no.x", b""))
        pod.send(Message.new("ok.x", b""))
        async with asyncio.timeout(5):
            assert (await got.get()).type == "ok.x"
        (link,) = a.peers()
    assert link.drops.permission_denied == 1
    assert link.dropped == 0
    assert link.name == "s"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uuid", ""),
        ("uuid", "x" * 65),
        ("type", "bad type here"),
        ("data", "a str, not bytes"),
        ("timestamp", "x"),
        ("parent_id", 5),
        ("headers", {"k": 5}),
        ("headers", ["not", "a", "dict"]),
    ],
)
async def test_a_field_set_wrong_after_new_is_refused_at_send_and_the_link_lives(
    field: str, value: object
) -> None:
    """A message whose field was set to what no receiver accepts raises UsageError at send;
    it used to close the app's link at its node, losing every message queued with it."""
    async with AsyncExitStack() as stack:
        _, leaf, got = await _loaded(stack)
        pod = leaf.connect()
        pod.send(Message.new("load.before", b""))
        bad = Message.new("load.bad", b"")
        setattr(bad, field, value)
        with pytest.raises(UsageError):
            pod.send(bad)
        pod.send(Message.new("load.after", b""))
        async with asyncio.timeout(5):
            assert [(await got.get()).type for _ in range(2)] == ["load.before", "load.after"]
        assert [p.state for p in leaf.peers()] == ["open"]
    with pytest.raises(UsageError, match="expected a Message, got str"):
        Grav().connect().send("load.x")  # type: ignore[arg-type]
