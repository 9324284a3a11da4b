"""Resume across a gravd restart: a killed receiver asks for what it missed, a restarted origin
keeps its uuid and numbering (real gravd processes, each with its own --data-dir)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gravpy
from gravpy import Grav, Message
from gravpy.backoff import BackoffPolicy
from gravpy.daemon.node_identity import UUID_FILE
from gravpy.daemon.positions import POSITIONS_FILE
from gravpy.mesh import HubConfig
from gravpy.mesh.resume import RESTART_GAP
from gravpy.testing.gravd import GRAVD, LOCAL, run, running_gravd
from transports.websocket import WebSocketTransport

GUARD = 60.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing
FAST_REDIAL = HubConfig(backoff=BackoffPolicy(initial=0.05, maximum=0.2))
TOTAL = 3000


class Stream:
    """A publisher app's stream of numbered messages: the first half flows freely (the receiver
    is killed in it), the next quarter waits for ``go_on[0]``, the last for ``go_on[1]``."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.some = asyncio.Event()
        self.done = asyncio.Event()
        self.go_on = [asyncio.Event(), asyncio.Event()]

    def keep(self, msg: Message) -> None:
        self.got.append(int.from_bytes(msg.data[:4], "big"))
        if len(self.got) == TOTAL // 6:
            self.some.set()
        if self.got[-1] == TOTAL - 1:
            self.done.set()

    async def publish(self, app: Grav, msg_type: str) -> None:
        sender = app.connect()
        pauses = {TOTAL // 2: self.go_on[0], TOTAL * 3 // 4: self.go_on[1]}
        for i in range(TOTAL):
            if i in pauses:
                await pauses[i].wait()
            await sender.publish(Message.new(msg_type, i.to_bytes(4, "big")))
            if i % 50 == 0:
                await asyncio.sleep(0.001)  # a steady stream, not one burst


async def _saved_position(data_dir: str, origin: str) -> None:
    """Wait until the gravd keeping ``data_dir`` saved a position for ``origin`` (a gravd killed
    before its first save restarts as on a first start, asking nothing)."""

    def saved() -> bool:
        try:
            with contextlib.closing(sqlite3.connect(Path(data_dir) / POSITIONS_FILE)) as conn:
                row = conn.execute("SELECT seq FROM position WHERE origin = ?", (origin,))
                return row.fetchone() is not None
        except sqlite3.Error:  # not created yet
            return False

    while True:
        if await asyncio.to_thread(saved):
            return
        await asyncio.sleep(0.05)  # the file has no event to wait on; re-read


@dataclass
class Restarted:
    """What ``_kill_receiver_mid_stream`` saw: the stream the app got, and the nodes' word."""

    stream: Stream
    origin: str  # A's uuid
    uuids: tuple[str, str]  # B's before and after its restart
    restored: dict[str, Any]  # B's positions_restored log event
    receiver: dict[str, Any]  # B's /v1/node at the end
    resent: int  # what A resent
    sub_links: int  # links the subscriber app opened


async def _kill_receiver_mid_stream(buffer_size: int) -> Restarted:
    """Publisher app on gravd A (replay buffer ``buffer_size``), subscriber app on gravd B; B
    is SIGKILLed in the first half of ``TOTAL`` messages, a quarter more is published while it
    is down, B restarts on the same --data-dir and, once it has linked to A again, the last
    quarter follows (while B may still be waiting for its app to come back)."""
    with (
        tempfile.TemporaryDirectory(prefix="gravd-a-") as da,
        tempfile.TemporaryDirectory(prefix="gravd-b-") as db,
    ):
        async with (
            running_gravd("--data-dir", da, "--buffer-size", str(buffer_size)) as a,
            running_gravd("--data-dir", db, "--peer", a.endpoint) as b,
        ):
            port = urlsplit(b.endpoint).port
            stream = Stream()
            async with (
                gravpy.connect(b.endpoint, hub_config=FAST_REDIAL) as sub,
                gravpy.connect(a.endpoint) as pub,
            ):
                sub.connect().on_type("restart.x", stream.keep)
                await pub.wait_for(lambda ps: any("restart.x" in p.interests for p in ps), GUARD)
                publishing = asyncio.create_task(stream.publish(pub, "restart.x"))
                try:
                    async with asyncio.timeout(GUARD):
                        await stream.some.wait()
                        await _saved_position(db, a.uuid)
                        await b.process.close()  # SIGKILL, mid-stream
                        stream.go_on[0].set()  # the second third while B is down
                        again = running_gravd(
                            "--data-dir", db, "--peer", a.endpoint, "--listen", f"127.0.0.1:{port}"
                        )
                        async with again as b2:
                            restored = await b2.process.wait_event("positions_restored")
                            await b2.wait_peers(1)
                            stream.go_on[1].set()  # the last third once B is back
                            await publishing
                            await stream.done.wait()
                            doc = await b2.node()
                            resent = (await a.node())["messages"]["resent"]
                finally:
                    publishing.cancel()
                    await asyncio.gather(publishing, return_exceptions=True)
            assert sub.hub is not None
            links = sub.hub.statistics().links_opened
    return Restarted(stream, a.uuid, (b.uuid, b2.uuid), restored, doc, resent, links)


async def test_a_receiving_gravd_killed_mid_stream_gets_what_it_missed_after_its_restart() -> None:
    """Publisher app on gravd A, subscriber app on gravd B; B is SIGKILLed in the first half of
    3,000 messages, a quarter more is published while it is down, B restarts on the same
    --data-dir and the last quarter follows: the reattached subscriber gets all 3,000 once, in
    order, and nothing is counted lost (B kept its uuid and its position, and asked A for the
    rest)."""
    run = await _kill_receiver_mid_stream(buffer_size=8192)
    assert run.uuids[0] == run.uuids[1]  # the same node to A
    assert run.restored["origins"] == 1
    assert run.restored["leaves"] == 1
    assert run.stream.got == list(range(TOTAL)), _gaps(run.stream.got)
    assert run.receiver["messages"]["lost_by_origin"] == {}
    assert run.resent >= TOTAL // 4  # at least the quarter published while B was down
    assert run.sub_links == 2


async def test_what_comes_live_while_a_restarted_gravd_waits_for_its_apps_keeps_its_order() -> None:
    """As above, but the origin's buffer (256) holds less than was published while B was down,
    and B asks only once its app is back, while the last quarter comes live: the app gets what
    the origin still had and everything after, once each and in order, and every message it
    did not get is counted lost (the resend, late, overlaps what B held meanwhile)."""
    run = await _kill_receiver_mid_stream(buffer_size=256)
    got = run.stream.got
    assert got == sorted(set(got)), _gaps(got)
    assert got[-TOTAL // 4 :] == list(range(TOTAL * 3 // 4, TOTAL))
    lost = run.receiver["messages"]["lost_by_origin"]
    assert lost.get(run.origin, 0) >= TOTAL - len(got), _gaps(got)


async def test_a_restarted_origin_keeps_its_uuid_and_numbers_on_without_counting_a_loss() -> None:
    """gravd stopped (SIGTERM) and then killed (SIGKILL), each time restarted on its data dir: its
    uuid is the one in node.uuid, a peer that got its messages relinks and asks, nothing is counted
    lost, and after the kill its numbers jump ahead (never reused) without the jump counting."""
    with tempfile.TemporaryDirectory(prefix="gravd-o-") as data:
        got: asyncio.Queue[Message] = asyncio.Queue(maxsize=1000)
        receiver = Grav(transport=WebSocketTransport("127.0.0.1", 0), hub_config=FAST_REDIAL)
        async with receiver:
            receiver.connect().on_type("origin.x", got.put_nowait)
            port = 0
            uuids: list[str] = []
            for end in ("term", "kill", "term"):
                listen = f"127.0.0.1:{port}"
                async with running_gravd("--data-dir", data, "--listen", listen) as origin:
                    port = urlsplit(origin.endpoint).port or 0
                    uuids.append(origin.uuid)
                    await _publish_ten(receiver, origin.endpoint, got)
                    if end == "term":
                        assert (await origin.stop()).code == 0
                async with asyncio.timeout(GUARD):  # killed on leaving: wait for the link to go
                    await receiver.wait_for(lambda peers: not peers)
            assert receiver.hub is not None
            stats = receiver.hub.statistics()
            last = receiver.hub.traffic.resumption.last[uuids[0]]
        assert uuids == [uuids[0]] * 3
        assert (await asyncio.to_thread((Path(data) / UUID_FILE).read_text)).strip() == uuids[0]
        assert stats.lost_by_origin == {}
        assert last > RESTART_GAP  # the kill made the numbering jump


async def _publish_ten(receiver: Grav, endpoint: str, got: asyncio.Queue[Message]) -> None:
    """Link ``receiver`` to the gravd at ``endpoint`` (if it is not already redialling it) and
    have an app on that gravd publish 10 messages the receiver gets."""
    async with asyncio.timeout(GUARD):
        if receiver.hub is not None and receiver.hub.statistics().links_opened == 0:
            await receiver.connect_endpoint(endpoint)
        await receiver.wait_for(bool)  # (it redials a restarted gravd by itself)
        async with gravpy.connect(endpoint) as app:
            await app.wait_for(lambda ps: any("origin.x" in p.interests for p in ps))
            sender = app.connect()
            for i in range(10):
                await sender.publish(Message.new("origin.x", bytes([i])))
            for _ in range(10):
                await got.get()


def _gaps(got: list[int]) -> str:
    missing = sorted(set(range(TOTAL)) - set(got))
    twice = len(got) - len(set(got))
    return f"{len(got)} got, {len(missing)} missing (first {missing[:10]}), {twice} twice"


async def test_a_second_gravd_on_a_data_dir_in_use_exits_1_and_says_why() -> None:
    """While one gravd runs on a data dir, another started on it exits 1 with start_failed naming
    the data dir, and the first keeps running."""
    with tempfile.TemporaryDirectory(prefix="gravd-d-") as data:
        async with running_gravd("--data-dir", data) as first:
            result = await run([*GRAVD, *LOCAL, "--data-dir", data])
            assert result.code == 1, result.stderr[-2000:]
            assert "in use by another gravd" in result.stderr
            assert first.process.proc.returncode is None
            assert (await first.node())["uuid"] == first.uuid


async def test_a_corrupt_node_uuid_is_set_aside_and_said_so() -> None:
    """A node.uuid that does not hold a uuid: gravd starts as a new node, moves the file aside
    (its bytes kept) and logs node_uuid_set_aside saying where."""
    with tempfile.TemporaryDirectory(prefix="gravd-d-") as data:
        bad = Path(data) / UUID_FILE
        bad.write_bytes(b"not a uuid\n")
        async with running_gravd("--data-dir", data) as node:
            said = [e for e in node.process.events() if e["event"] == "node_uuid_set_aside"]
            assert [(e["path"], e["node"]) for e in said] == [(str(bad), node.uuid)]
            moved = Path(said[0]["moved_to"])
            assert await asyncio.to_thread(moved.read_bytes) == b"not a uuid\n"
            assert (await asyncio.to_thread(bad.read_text)).strip() == node.uuid
