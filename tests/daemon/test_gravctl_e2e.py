"""End-to-end tests of gravctl against real gravd processes on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import gravpy
from gravpy.cli import monitoring
from gravpy.cli.main import EXIT_CONNECT, EXIT_NO_RESPONDERS, EXIT_TIMEOUT
from gravpy.cli.output import format_peers
from gravpy.testing.gravd import GRAVCTL, Gravd, Process, gravctl, running_gravd


@asynccontextmanager
async def two_nodes(*args: str) -> AsyncIterator[tuple[Gravd, Gravd]]:
    """Two linked gravd: B lists A as its peer."""
    async with running_gravd(*args) as a, running_gravd("--peer", a.endpoint, *args) as b:
        await a.wait_peers(1)
        await b.wait_peers(1)
        yield a, b


@asynccontextmanager
async def background(*args: str) -> AsyncIterator[Process]:
    """A gravctl command left running (sub, reply), killed on exit if it has not ended."""
    process = await Process.start([*GRAVCTL, *args])
    try:
        yield process
    finally:
        await process.close()


async def test_pub_on_one_node_reaches_sub_on_the_other() -> None:
    """gravctl sub on node A prints, in order, the messages gravctl pub sends through node B."""
    async with two_nodes() as (a, b):
        sub_args = ("--url", a.endpoint, "sub", "demo.>", "--count", "3", "--json")
        async with background(*sub_args) as sub:
            await sub.wait_line(lambda line: line.startswith('Subscribing on "demo.>"'))
            await b.wait_interest("demo.hello")
            published = await gravctl("--url", b.endpoint, "pub", "demo.hello", "one")
            assert published.code == 0, published.stderr
            assert 'Published 1 message(s) to "demo.hello"' in published.stderr
            from_stdin = await gravctl(
                "--url", b.endpoint, "pub", "demo.hello", "-", "--count", "2", stdin=b"piped\n"
            )
            assert from_stdin.code == 0, from_stdin.stderr
            result = await sub.wait()
        assert result.code == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(m["type"], m["data"]) for m in lines] == [
            ("demo.hello", "one"),
            ("demo.hello", "piped\n"),
            ("demo.hello", "piped\n"),
        ]
        assert all(m["uuid"] and m["reply_to"] == "" and m["timestamp"] for m in lines)


async def test_sub_prints_like_nats_and_shows_binary_data_as_base64() -> None:
    """Without --json, sub prints '[#n] Received on "type"' and the data; --json base64s binary."""
    async with running_gravd() as node:
        async with background("--url", node.endpoint, "sub", "raw.*", "--count", "1") as text_sub:
            await text_sub.wait_line(lambda line: line.startswith("Subscribing"))
            args = ("--url", node.endpoint, "sub", "raw.*", "--count", "1", "--json")
            async with background(*args) as json_sub:
                await json_sub.wait_line(lambda line: line.startswith("Subscribing"))
                await node.wait_http(lambda doc: len(doc["leaves"]) == 2 and _all_want(doc))
                pub = await gravctl(
                    "--url", node.endpoint, "pub", "raw.bytes", "-", stdin=b"\xff\x00"
                )
                assert pub.code == 0, pub.stderr
                json_result = await json_sub.wait()
            text_result = await text_sub.wait()
        assert text_result.stdout.splitlines()[0] == '[#1] Received on "raw.bytes"'
        assert "not UTF-8" in text_result.stdout
        message = json.loads(json_result.stdout)
        assert message["data_base64"] == "/wA="
        assert "data" not in message


async def test_sub_replay_prints_the_buffered_messages_then_the_live_ones() -> None:
    """sub --replay first prints what the node buffered for the pattern, oldest first, then
    what is published afterwards: each once, in order."""
    async with running_gravd() as node, gravpy.connect(node.endpoint) as watcher:
        watcher.connect().on_type("log.*", lambda msg: None)  # so the messages reach the node
        await node.wait_interest("log.line")
        early = await gravctl(
            "--url", node.endpoint, "pub", "log.line", "-", "--count", "3", stdin=b"early"
        )
        assert early.code == 0, early.stderr
        await node.wait_http(lambda d: d["messages"]["buffered"] >= 3)
        args = ("--url", node.endpoint, "sub", "log.*", "--replay", "--count", "4", "--raw")
        async with background(*args) as sub:
            await sub.wait_line(lambda line: line.startswith('Subscribing on "log.*"'))
            late = await gravctl("--url", node.endpoint, "pub", "log.line", "late")
            assert late.code == 0, late.stderr
            result = await sub.wait()
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["early", "early", "early", "late"]


def _all_want(doc: dict[str, object]) -> bool:
    leaves = doc["leaves"]
    assert isinstance(leaves, list)
    return all("raw.*" in leaf["interests"] for leaf in leaves)


async def test_req_on_one_node_is_answered_by_reply_on_the_other() -> None:
    """gravctl req through node B prints the DATA that gravctl reply on node A answers with."""
    async with two_nodes() as (a, b):
        reply_args = ("--url", a.endpoint, "reply", "svc.*", "pong", "--count", "2")
        async with background(*reply_args) as replier:
            await replier.wait_line(lambda line: line.startswith('Listening on "svc.*"'))
            await b.wait_interest("svc.echo")
            first = await gravctl("--url", b.endpoint, "req", "svc.echo", "ping")
            second = await gravctl("--url", a.endpoint, "req", "svc.time", "-", stdin=b"what time")
            result = await replier.wait()
        assert (first.code, first.stdout) == (0, "pong"), first.stderr
        assert (second.code, second.stdout) == (0, "pong"), second.stderr
        assert result.code == 0
        assert result.stdout.splitlines()[:2] == ['[#1] Received on "svc.echo"', "ping"]
        assert '[#2] Received on "svc.time"' in result.stdout
        assert "what time" in result.stdout


async def test_req_with_no_responder_exits_3_at_once() -> None:
    """A request whose type no pod on the mesh wants fails with exit 3 and says so, not a timeout."""
    async with two_nodes() as (_, b):
        result = await gravctl("--url", b.endpoint, "req", "nobody.home", "x", "--timeout", "60")
    assert result.code == EXIT_NO_RESPONDERS
    assert 'no responders: no pod on the mesh wants "nobody.home"' in result.stderr


async def test_req_that_is_never_answered_times_out_with_exit_1() -> None:
    """A responder that keeps silent makes req exit 1 with a timeout message after --timeout."""
    async with running_gravd() as node, gravpy.connect(node.endpoint) as silent:
        silent.connect().on_type("mute.op", lambda msg: None)
        await node.wait_interest("mute.op")
        result = await gravctl("--url", node.endpoint, "req", "mute.op", "x", "--timeout", "0.3")
    assert result.code == EXIT_TIMEOUT
    assert 'timeout: no reply to "mute.op" within 0.3 s' in result.stderr


async def test_req_whose_responder_leaves_exits_1_not_as_a_lost_node() -> None:
    """The only responder's app leaves while req waits: req exits 1 at once, saying the link
    that could answer closed; gravctl's own link to gravd is fine, so not exit 4."""
    async with running_gravd() as node:
        asked = asyncio.Event()
        async with gravpy.connect(node.endpoint) as leaving:
            leaving.connect().on_type("gone.op", lambda msg: asked.set())
            await node.wait_interest("gone.op")
            args = ("--url", node.endpoint, "req", "gone.op", "x", "--timeout", "600")
            async with background(*args) as req:
                await asked.wait()
                await leaving.stop()
                result = await req.wait()
    assert result.code == EXIT_TIMEOUT, result.stderr
    assert 'no reply to "gone.op": the link that could answer closed' in result.stderr
    assert "the link to the node was lost" not in result.stderr


async def test_refused_connection_exits_4_with_a_clear_message() -> None:
    """Every command that attaches to a node exits 4, naming the URL, when nothing listens there."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        url = f"ws://127.0.0.1:{closed.getsockname()[1]}/meta/message"
        for command in (
            ["pub", "a.b", "x"],
            ["sub", "a.>"],
            ["req", "a.b", "x"],
            ["reply", "a.b", "x"],
        ):
            result = await gravctl("--url", url, *command)
            assert result.code == EXIT_CONNECT, (command, result)
            assert f"gravctl: cannot connect to {url}" in result.stderr
            assert "Refused" in result.stderr
            assert "Traceback" not in result.stderr
        peers = await gravctl("peers", "--monitor", f"http://127.0.0.1:{closed.getsockname()[1]}")
    assert peers.code == EXIT_CONNECT
    assert "gravctl: cannot read" in peers.stderr


async def test_keyed_node_accepts_gravctl_only_with_the_key(tmp_path: Path) -> None:
    """With --mesh-key-file on gravd, gravctl needs the same key file; without it, exit 4."""
    key = tmp_path / "mesh.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    async with running_gravd("--mesh-key-file", str(key)) as node:
        refused = await gravctl("--url", node.endpoint, "req", "gravd.info", "")
        assert refused.code == EXIT_CONNECT
        assert "the node refused the link: this node needs a mesh key" in refused.stderr
        other = tmp_path / "other.key"
        other.write_bytes(b"fedcba9876543210fedcba9876543210\n")
        wrong = await gravctl("--url", node.endpoint, "--mesh-key-file", str(other), "req", "x", "")
        assert wrong.code == EXIT_CONNECT
        assert "the mesh key proof is wrong" in wrong.stderr
        allowed = await gravctl(
            "--url", node.endpoint, "--mesh-key-file", str(key), "req", "gravd.info", ""
        )
    assert allowed.code == 0, allowed.stderr
    assert json.loads(allowed.stdout)["uuid"] == node.uuid


async def test_peers_prints_a_table_of_the_mesh() -> None:
    """gravctl peers shows this node, its peer and its leaves with their message counts."""
    async with two_nodes() as (a, b):
        result = await gravctl("peers", "--monitor", a.monitor)
    assert result.code == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == [
        "NODE",
        "ROLE",
        "NAME",
        "STATE",
        "ENDPOINT",
        "IN",
        "OUT",
        "BYTES_IN",
        "BYTES_OUT",
        "DROPPED",
        "QUEUED",
    ]
    assert rows[1][:6] == [a.uuid, "(this", "node)", "peer", "-", "serving"]
    stated = b.listening["endpoints"][-1]  # a node states its fastest endpoint: TCP (auto)
    assert stated.startswith("tcp://")
    assert rows[2][:5] == [b.uuid, "peer", "gravd", "open", stated]
    assert "1 peer(s), 0 leaf/leaves" in result.stdout


async def test_usage_errors_exit_2() -> None:
    """A bad message type or pattern is refused by argparse with exit 2 before connecting."""
    bad_type = await gravctl("pub", "no..type", "x")
    bad_pattern = await gravctl("sub", "a.>.b")
    assert (bad_type.code, bad_pattern.code) == (2, 2)
    assert "invalid message type" in bad_type.stderr
    assert "invalid type pattern" in bad_pattern.stderr


async def test_help_documents_the_exit_codes() -> None:
    """gravctl --help lists every exit code."""
    result = await gravctl("--help")
    assert result.code == 0
    for line in (
        "0   success",
        "1   no reply (req)",
        "2   bad usage",
        "3   no responders",
        "4   cannot connect",
        "130 interrupted by Ctrl-C",
    ):
        assert line in result.stdout


async def test_gravd_info_answers_with_the_node_document() -> None:
    """Every gravd answers gravd.info requests with its /v1/node document."""
    async with running_gravd() as node:
        result = await gravctl("--url", node.endpoint, "req", "gravd.info", "")
        assert result.code == 0, result.stderr
        info = json.loads(result.stdout)
    assert info["uuid"] == node.uuid
    assert info["listen"]["endpoints"][0] == node.endpoint  # WebSocket first, then TCP (auto)
    assert len(info["leaves"]) == 1  # gravctl itself


async def test_sub_exits_0_on_sigterm() -> None:
    """A sub without --count runs until SIGTERM, then detaches and exits 0."""
    async with running_gravd() as node, background("--url", node.endpoint, "sub", ">") as sub:
        await sub.wait_line(lambda line: line.startswith("Subscribing"))
        await node.wait_http(lambda doc: len(doc["leaves"]) == 1)
        sub.signal(signal.SIGTERM)
        result = await sub.wait()
        await node.wait_http(lambda doc: not doc["leaves"])
    assert result.code == 0, result.stderr


async def test_two_repliers_share_requests_in_the_default_group() -> None:
    """Two gravctl reply on different nodes (default group gravctl.reply): each request gets one
    reply, and both repliers answer some; a third with its own --group answers every request."""
    async with two_nodes() as (a, b):
        first_args = ("--url", a.endpoint, "reply", "svc.q", "from-a", "--count", "2")
        second_args = ("--url", b.endpoint, "reply", "svc.q", "from-b", "--count", "2")
        own_args = ("--url", b.endpoint, "reply", "svc.q", "own", "--group", "own", "--count", "4")
        async with (
            background(*first_args) as first,
            background(*second_args) as second,
            background(*own_args) as own,
        ):
            for process in (first, second, own):
                await process.wait_line(lambda line: line.startswith("Listening"))
            async with asyncio.timeout(10):  # a: its leaf and B's; B: its leaf and A's
                await a.wait_http(lambda doc: _group_members(doc, "gravctl.reply") == 2)
                await b.wait_http(lambda doc: _group_members(doc, "gravctl.reply") == 2)
                await a.wait_http(lambda doc: _group_members(doc, "own") == 1)
            for _ in range(4):
                result = await gravctl("--url", a.endpoint, "req", "svc.q", "x")
                assert result.code == 0, result.stderr
            results = [await p.wait() for p in (first, second, own)]
        assert [r.code for r in results] == [0, 0, 0]
        assert [r.stdout.count("Received on") for r in results] == [2, 2, 4]


def _group_members(doc: dict[str, object], group: str) -> int:
    links = [*doc["peers"], *doc["leaves"]]  # type: ignore[misc]
    return sum(
        entry[2]
        for link in links
        if link["state"] == "open"
        for entry in link.get("groups", ())
        if entry[0] == group
    )


async def test_peers_reads_every_page_of_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """gravd lists leaves a page at a time; gravctl peers joins the pages, so every app attached
    is shown and counted (pages of one leaf here, three apps: three pages)."""
    monkeypatch.setattr(monitoring, "LEAF_PAGE", 1)
    async with (
        running_gravd() as node,
        gravpy.connect(node.endpoint, name="app-1"),
        gravpy.connect(node.endpoint, name="app-2"),
        gravpy.connect(node.endpoint, name="app-3"),
    ):
        await node.wait_http(lambda doc: doc["leaves_page"]["total"] == 3)
        args = argparse.Namespace(monitor=node.monitor, connect_timeout=5.0)
        doc = await monitoring.node_with_every_leaf(args)
    assert sorted(leaf["name"] for leaf in doc["leaves"]) == ["app-1", "app-2", "app-3"]
    assert "0 peer(s), 3 leaf/leaves" in format_peers(doc)


async def test_peers_misses_no_app_that_stays_when_another_leaves_between_pages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An app that detaches between two page reads moves the later ones up a place; the pages
    overlap, so every app that stayed attached is still listed (pages of 2, overlapping by 1)."""
    monkeypatch.setattr(monitoring, "LEAF_PAGE", 2)
    monkeypatch.setattr(monitoring, "LEAF_OVERLAP", 1)
    async with running_gravd() as node, contextlib.AsyncExitStack() as apps:
        first = await apps.enter_async_context(gravpy.connect(node.endpoint, name="app-1"))
        for name in ("app-2", "app-3", "app-4"):
            await apps.enter_async_context(gravpy.connect(node.endpoint, name=name))
            await node.wait_http(lambda doc, n=int(name[-1]): doc["leaves_page"]["total"] == n)
        read_page = monitoring._node_page
        pages = 0

        async def leave_after_the_first_page(
            args: argparse.Namespace, offset: int
        ) -> dict[str, Any]:
            nonlocal pages
            page = await read_page(args, offset)
            pages += 1
            if pages == 1:
                await first.stop()
                await node.wait_http(lambda doc: doc["leaves_page"]["total"] == 3)
            return page

        monkeypatch.setattr(monitoring, "_node_page", leave_after_the_first_page)
        args = argparse.Namespace(monitor=node.monitor, connect_timeout=5.0)
        doc = await monitoring.node_with_every_leaf(args)
    assert sorted(leaf["name"] for leaf in doc["leaves"]) == ["app-1", "app-2", "app-3", "app-4"]
    assert pages == 3
