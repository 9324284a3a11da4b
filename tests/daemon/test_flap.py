"""No loss across a link flap: the receiver asks the origin (a real gravd) for what it missed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import gravpy
from gravpy import Grav, Message
from gravpy.backoff import BackoffPolicy
from gravpy.mesh import HubConfig
from gravpy.testing.gravd import Process, running_gravd
from transports.websocket import WebSocketTransport

GUARD = 60.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing
PROXY = (sys.executable, str(Path(__file__).with_name("tcp_proxy.py")))
FAST_REDIAL = HubConfig(backoff=BackoffPolicy(initial=0.05, maximum=0.2))
TOTAL = 6000


async def _proxy(listen_port: int, target_port: int) -> tuple[Process, int]:
    proc = await Process.start([*PROXY, str(listen_port), str(target_port)])
    line = await proc.wait_line(lambda s: s.startswith("listening"), stream="stdout")
    return proc, int(line.split()[1])


async def test_a_receiver_loses_nothing_when_its_link_to_the_origin_is_cut_mid_stream() -> None:
    """6,000 messages from an app on gravd to a peer whose link is cut (the forwarder it goes
    through is killed and restarted) mid-stream: all 6,000 arrive, in order, once."""
    async with running_gravd("--buffer-size", "8192") as origin:
        target = urlsplit(origin.endpoint)
        proxy, port = await _proxy(0, target.port or 0)
        try:
            got: list[int] = []
            halfway, done = asyncio.Event(), asyncio.Event()

            def keep(msg: Message) -> None:
                got.append(int.from_bytes(msg.data[:4], "big"))
                if len(got) == TOTAL // 3:
                    halfway.set()
                if got[-1] == TOTAL - 1:
                    done.set()

            receiver = Grav(transport=WebSocketTransport("127.0.0.1", 0), hub_config=FAST_REDIAL)
            async with receiver, gravpy.connect(origin.endpoint) as app:
                receiver.connect().on_type("flap.x", keep)
                await receiver.connect_endpoint(f"ws://127.0.0.1:{port}{target.path}")
                await app.wait_for(lambda ps: any("flap.x" in p.interests for p in ps), GUARD)
                sender = app.connect()

                async def stream() -> None:
                    for i in range(TOTAL):
                        await sender.publish(Message.new("flap.x", i.to_bytes(4, "big")))
                        if i % 50 == 0:
                            await asyncio.sleep(0.001)  # a steady stream, not one burst

                streaming = asyncio.create_task(stream())
                async with asyncio.timeout(GUARD):
                    await halfway.wait()
                    await proxy.close()  # the link is cut mid-stream
                    proxy, _ = await _proxy(port, target.port or 0)
                    await streaming
                    await done.wait()
                assert receiver.hub is not None
                stats = receiver.hub.statistics()
                assert stats.links_opened == 2  # it really relinked
                assert got == list(range(TOTAL)), _gaps(got)
                assert stats.lost_by_origin == {}
                node = await origin.node()
                assert node["messages"]["resent"] > 0  # the gap was filled by a resend
        finally:
            await proxy.close()


async def test_what_fell_out_of_the_origins_buffer_is_counted_lost_by_origin_on_the_receiver() -> (
    None
):
    """An origin with a 100-message buffer sends 1,000 while its link to gravd is cut: after the
    relink the app behind gravd gets the last 100, and gravd counts 900 lost for that origin in
    /v1/node and /metrics."""
    async with running_gravd() as node, gravpy.connect(node.endpoint) as app:
        target = urlsplit(node.endpoint)
        proxy, port = await _proxy(0, target.port or 0)
        try:
            got: list[int] = []
            arrived = asyncio.Condition()

            async def keep(msg: Message) -> None:
                async with arrived:
                    got.append(int.from_bytes(msg.data[:4], "big"))
                    arrived.notify_all()

            app.connect().on_type("lose.x", keep)
            await node.wait_interest("lose.x")
            origin = Grav(
                buffer_size=100,
                transport=WebSocketTransport("127.0.0.1", 0),
                hub_config=FAST_REDIAL,
            )
            async with origin:
                await origin.connect_endpoint(f"ws://127.0.0.1:{port}{target.path}")
                await origin.wait_for(lambda peers: any("lose.x" in p.interests for p in peers))
                sender = origin.connect()
                for i in range(200):
                    sender.send(Message.new("lose.x", i.to_bytes(4, "big")))
                async with asyncio.timeout(GUARD), arrived:
                    await arrived.wait_for(lambda: len(got) == 200)
                await proxy.close()  # cut
                async with asyncio.timeout(GUARD):
                    await origin.wait_for(lambda peers: not peers)
                for i in range(200, 1200):  # numbered and buffered, sent nowhere
                    sender.send(Message.new("lose.x", i.to_bytes(4, "big")))
                proxy, _ = await _proxy(port, target.port or 0)
                async with asyncio.timeout(GUARD), arrived:
                    await arrived.wait_for(lambda: len(got) == 300)
                assert got == [*range(200), *range(1100, 1200)]
                doc = await node.wait_http(lambda d: bool(d["messages"]["lost_by_origin"]))
                assert doc["messages"]["lost_by_origin"] == {origin.node_uuid: 900}
                _, metrics = await node.get("/metrics")
                assert f'gravd_messages_lost_total{{origin="{origin.node_uuid}"}} 900.0' in metrics
        finally:
            await proxy.close()


def _gaps(got: list[int]) -> str:
    missing = sorted(set(range(TOTAL)) - set(got))
    return f"{len(got)} got, {len(missing)} missing (first {missing[:10]}), {len(got) - len(set(got))} twice"
