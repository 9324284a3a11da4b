"""Holes in identity and gossip, closed: uuid impersonation, gossip from apps, unbounded gossip."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

import gravpy
from gravpy import Message
from gravpy.errors import HandshakeRejectedError
from gravpy.mesh import HubConfig
from gravpy.proto import (
    ROLE_LEAF,
    ROLE_PEER,
    Closed,
    LinkState,
    NodeInfo,
    PeerProtocol,
    encode_frame,
)
from gravpy.proto import events as ev
from gravpy.proto.frames import Msgs

from .conftest import FAST, NodeFactory, linked_to


class RawNode:
    """A hand-driven protocol endpoint over one WebSocket: says exactly what the test wants."""

    def __init__(self, ws: ClientConnection, proto: PeerProtocol) -> None:
        self.ws = ws
        self.proto = proto
        self.events: list[ev.Event] = []

    async def flush(self) -> None:
        for frame in self.proto.data_to_send():
            await self.ws.send(frame)

    async def pump(self, until: type[ev.Event]) -> ev.Event:
        """Read frames until an event of type ``until`` arrives (accepting at HELLO)."""
        loop = asyncio.get_running_loop()
        while True:
            for event in self.proto.receive_frame(await self.ws.recv(decode=False), loop.time()):
                self.events.append(event)
                if isinstance(event, ev.HelloReceived):
                    self.events.extend(self.proto.accept())
            await self.flush()
            for event in self.events:
                if isinstance(event, until):
                    return event


@asynccontextmanager
async def raw_node(endpoint: str, role: str, node_uuid: str = "") -> AsyncIterator[RawNode]:
    """A RawNode linked to ``endpoint`` as ``role``, handshake done."""
    loop = asyncio.get_running_loop()
    info = NodeInfo(node_uuid or str(uuid.uuid4()), role=role)
    proto = PeerProtocol(info, initiator=True, now=loop.time(), nonce=os.urandom(16))
    async with ws_connect(endpoint, compression=None) as ws:
        raw = RawNode(ws, proto)
        await raw.flush()
        async with asyncio.timeout(5):
            await raw.pump(ev.HandshakeComplete)
        yield raw


async def test_a_second_link_claiming_a_live_leafs_uuid_is_refused(node: NodeFactory) -> None:
    """An app claiming the uuid of an attached app is refused as a duplicate; the real one stays."""
    a = await node()
    endpoint = a.endpoints()[0]
    async with gravpy.connect(endpoint, hub_config=FAST) as leaf:
        got: asyncio.Queue[Message] = asyncio.Queue(4)
        leaf.connect().on_type("x.*", got.put_nowait)
        await a.wait_for(linked_to(leaf, interest="x.*"), timeout=5)
        impostor = gravpy.connect(endpoint, hub_config=FAST, node_uuid=leaf.node_uuid)
        with pytest.raises(HandshakeRejectedError) as caught:
            async with impostor:
                pass
        assert caught.value.reason == "duplicate"
        a.connect().send(Message.new("x.1", b"still here"))
        async with asyncio.timeout(5):
            assert (await got.get()).data == b"still here"
    assert a.hub is not None
    assert a.hub.statistics().handshakes_rejected.get("duplicate") == 1


async def test_a_second_link_claiming_a_live_peers_uuid_leaves_the_real_link_alone(
    node: NodeFactory,
) -> None:
    """A node claiming a linked peer's uuid is refused; the hub keeps the same open link."""
    a = await node()
    b = await node()
    await b.connect_endpoint(a.endpoints()[0])
    await a.wait_for(linked_to(b), timeout=5)
    assert a.hub is not None
    kept = a.hub.link_for(b.node_uuid)
    impostor = await node(node_uuid=b.node_uuid)
    with pytest.raises(HandshakeRejectedError) as caught:
        await impostor.connect_endpoint(a.endpoints()[0])
    assert caught.value.reason == "duplicate"
    assert a.hub.link_for(b.node_uuid) is kept
    assert kept is not None
    assert kept.is_open


async def test_a_leaf_sending_peers_is_a_protocol_violation(node: NodeFactory) -> None:
    """PEERS from an attached app closes its link, is counted, and nothing it named is dialled."""
    a = await node()
    async with raw_node(a.endpoints()[0], ROLE_LEAF) as app:
        pairs = [(str(uuid.uuid4()), f"ws://127.0.0.1:{9 + i}/") for i in range(20)]
        app.proto.send_peers(pairs)
        await app.flush()
        async with asyncio.timeout(5):
            await app.pump(Closed)
    closed = [e for e in app.events if isinstance(e, Closed)]
    assert closed
    assert closed[0].reason == "unexpected_frame"
    assert a.hub is not None
    assert a.hub.statistics().protocol_violations == {"unexpected_frame": 1}
    assert a.hub.dialers() == []


async def test_gossip_is_bounded_per_frame_and_in_dial_targets(node: NodeFactory) -> None:
    """A peer gossiping 20 endpoints gets 8 read and 4 dialled; the other 16 are counted."""
    a = await node(hub_config=HubConfig(protocol=FAST.protocol, gossip_pairs=8, gossip_targets=4))
    silent = asyncio.Event()

    async def never_answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await silent.wait()  # dials hang here, so the dial targets stay in place meanwhile
        w.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, raw_node(a.endpoints()[0], ROLE_PEER) as peer:
        pairs = [(str(uuid.uuid4()), f"ws://127.0.0.1:{port}/n{i}") for i in range(20)]
        peer.proto.send_peers(pairs)
        await peer.flush()
        assert a.hub is not None
        async with asyncio.timeout(5):
            while a.hub.statistics().gossip_ignored == 0:
                await a.hub.wait_changed()
        assert a.hub.statistics().gossip_ignored == 16
        assert sorted(a.hub.dialers()) == sorted(ep for _, ep in pairs[:4])
        assert peer.proto.state is LinkState.OPEN
        silent.set()


@asynccontextmanager
async def relay_to(target: str) -> AsyncIterator[tuple[str, list[ClientConnection]]]:
    """A WebSocket relay on 127.0.0.1 that forwards every frame to ``target`` and back; yields
    its URL and the relay's connections to ``target`` (to inject frames on)."""
    outward: list[ClientConnection] = []

    async def pipe(src: Any, dst: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in src:
                await dst.send(frame)

    async def handler(inward: ServerConnection) -> None:
        async with ws_connect(target, compression=None, max_size=None) as out:
            outward.append(out)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(pipe(inward, out))
                tasks.create_task(pipe(out, inward))

    async with ws_serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/meta/message", outward


async def test_a_relay_cannot_inject_frames_into_a_keyed_link(node: NodeFactory) -> None:
    """A node made to dial a relay links through it, but a frame the relay injects closes the
    link as bad_frame and is never delivered."""
    key = b"k" * 32
    a = await node(mesh_key=key)
    b = await node(mesh_key=key)
    got: asyncio.Queue[Message] = asyncio.Queue(4)
    b.connect().on_type("evil.*", got.put_nowait)
    async with relay_to(b.endpoints()[0]) as (url, outward):
        await a.connect_endpoint(url)
        await a.wait_for(linked_to(b), timeout=5)
        await outward[0].send(encode_frame(Msgs([Message.new("evil.x", b"injected")])))
        assert b.hub is not None
        async with asyncio.timeout(5):
            while b.hub.statistics().protocol_violations.get("bad_frame") != 1:
                await b.hub.wait_changed()
    assert got.empty()
