"""End-to-end tests of what gravctl gained to match ``nats``, against real gravd processes."""

from __future__ import annotations

import argparse
import json
import signal
import socket
from pathlib import Path

import pytest

import gravpy
from gravpy.cli.main import EXIT_INTERRUPTED, EXIT_NO_RESPONDERS, EXIT_USAGE
from gravpy.cli.monitoring import WARNING, lost, verdict
from gravpy.cli.parser import WORDS, build_parser
from gravpy.testing.gravd import GRAVCTL, Process, gravctl, running_gravd


async def _background(*args: str) -> Process:
    return await Process.start([*GRAVCTL, *args])


async def test_oversized_data_is_one_line_and_exit_2() -> None:
    """Data over the mesh's message limit exits 2 with one line, no traceback."""
    async with running_gravd() as node:
        result = await gravctl("pub", "--url", node.endpoint, "a.b", "-", stdin=b"x" * 1_100_000)
    assert result.code == EXIT_USAGE
    assert result.stderr.splitlines() == [
        "gravctl: message data is 1100000 bytes, over the mesh limit of 1048576 bytes"
    ]


async def test_short_mesh_key_file_fails_at_once_with_exit_2(tmp_path: Path) -> None:
    """A mesh key file under 16 bytes is refused before dialling, in one line with exit 2."""
    key = tmp_path / "short.key"
    key.write_bytes(b"short\n")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # nothing listens: only the key check can answer
        url = f"ws://127.0.0.1:{unused.getsockname()[1]}/meta/message"
        result = await gravctl("--mesh-key-file", str(key), "--url", url, "pub", "a.b", "x")
    assert result.code == EXIT_USAGE
    assert result.stderr.splitlines() == [
        f"gravctl: the mesh key file {key} holds 5 bytes; a mesh key has at least 16 "
        "(the same file as gravd's --mesh-key-file)"
    ]


async def test_global_options_work_after_the_command() -> None:
    """--url after the command is the node's URL, not the message type."""
    async with running_gravd() as node:
        result = await gravctl("req", "--url", node.endpoint, "gravd.info", "")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["uuid"] == node.uuid


async def test_pub_to_a_type_nobody_wants_warns_and_exits_3() -> None:
    """pub to an unwanted type prints one warning, never "Published", and exits 3."""
    async with running_gravd() as node:
        result = await gravctl("--url", node.endpoint, "pub", "nobody.home", "x", "--count", "2")
    assert result.code == EXIT_NO_RESPONDERS
    assert result.stderr.splitlines() == [
        'gravctl: no pod on the mesh wants "nobody.home": 2 of 2 message(s) not delivered'
    ]


async def test_monitor_accepts_host_port_like_gravd() -> None:
    """peers --monitor HOST:PORT (gravd's own syntax, no scheme) reads the node."""
    async with running_gravd() as node:
        result = await gravctl("peers", "--monitor", node.listening["monitor"])
    assert result.code == 0, result.stderr
    assert node.uuid in result.stdout


async def test_subcommand_help_explains_words_and_exit_codes() -> None:
    """pub --help explains TYPE and DATA and lists its exit codes one per line; sub explains
    PATTERN and both wildcards."""
    pub = await gravctl("pub", "--help")
    sub = await gravctl("sub", "--help")
    assert pub.code == sub.code == 0
    assert f"TYPE     {WORDS['TYPE'][:40]}" in pub.stdout
    assert "DATA" in pub.stdout
    codes = [line.split()[0] for line in pub.stdout.split("exit codes:\n")[1].splitlines()[:5]]
    assert codes == ["0", "2", "3", "4", "130"]
    assert "'*' (exactly one token)" in sub.stdout.replace("\n", " ").replace("  ", " ")
    assert "'>'" in sub.stdout


def _command_help(command: str) -> str:
    """``gravctl COMMAND --help`` as argparse prints it (80 columns: COLUMNS is not read here)."""
    parser = build_parser([command])
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return str(commands.choices[command].format_help())


def test_peers_help_says_what_it_reads_prints_and_exits_with() -> None:
    """peers --help says it reads the monitor, not the node's --url, names the table's columns and
    the summary line, gives examples, and lists its exit codes without words it does not take."""
    text = _command_help("peers")
    assert "/v1/node" in text
    assert "--monitor" in text.split("options:")[0]  # (in the description, not only the option)
    for column in ("NODE", "ROLE", "NAME", "STATE", "ENDPOINT", "BYTES_IN", "DROPPED", "QUEUED"):
        assert f"\n  {column}" in text, column
    assert "examples:\n  gravctl peers" in text
    assert "gravctl peers --monitor 10.0.0.5:8222" in text
    codes = [line.split()[0] for line in text.split("exit codes:\n")[1].splitlines()[:4]]
    assert codes == ["0", "2", "4", "130"]
    assert "4   cannot read the monitor" in text
    assert "TYPE     " not in text  # (peers takes no TYPE, PATTERN or DATA)
    assert "PATTERN  " not in text


def test_keygen_help_says_what_it_writes_prints_and_exits_with() -> None:
    """keygen --help says where the private and public keys go, that it never overwrites, what it
    prints and what the key is for, gives examples, and lists its exit codes."""
    text = _command_help("keygen")
    flat = " ".join(text.split())
    for fact in ("Ed25519", "mode 0600", "PATH.pub", "never overwrites", "ed25519:"):
        assert fact in flat, fact
    for use in ("--identity", "--auth-file", "public_key", "identity_file="):
        assert use in flat, use
    assert "examples:\n  gravctl keygen" in text
    codes = [line.split()[0] for line in text.split("exit codes:\n")[1].splitlines()[:2]]
    assert codes == ["0", "2"]
    assert "2   PATH or PATH.pub exists" in text


async def test_ctrl_c_exits_130_and_sigterm_0() -> None:
    """A sub interrupted by SIGINT exits 130; a reply stopped by SIGTERM exits 0."""
    async with running_gravd() as node:
        sub = await _background("--url", node.endpoint, "sub", "a.>")
        reply = await _background("--url", node.endpoint, "reply", "b.>", "ok")
        try:
            await sub.wait_line(lambda line: line.startswith("Subscribing"))
            await reply.wait_line(lambda line: line.startswith("Listening"))
            sub.signal(signal.SIGINT)
            reply.signal(signal.SIGTERM)
            sub_result, reply_result = await sub.wait(), await reply.wait()
        finally:
            await sub.close()
            await reply.close()
    assert sub_result.code == EXIT_INTERRUPTED
    assert reply_result.code == 0


async def test_headers_travel_from_pub_to_sub_and_raw_prints_data_only() -> None:
    """pub -H K:V arrives in sub --headers output; sub --raw prints only the data; --sleep paces."""
    async with running_gravd() as node:
        shown = await _background("--url", node.endpoint, "sub", "h.*", "--headers", "--count", "2")
        raw = await _background("--url", node.endpoint, "sub", "h.*", "--raw", "--count", "2")
        try:
            for process in (shown, raw):
                await process.wait_line(lambda line: line.startswith("Subscribing"))
            await node.wait_http(
                lambda doc: sum("h.*" in x["interests"] for x in doc["leaves"]) == 2
            )
            args = ("--url", node.endpoint, "pub", "h.x", "body", "-H", "trace: abc", "-H", "k:v")
            published = await gravctl(*args, "--count", "2", "--sleep", "0.01")
            shown_result, raw_result = await shown.wait(), await raw.wait()
        finally:
            await shown.close()
            await raw.close()
    assert published.code == 0, published.stderr
    assert shown_result.stdout.splitlines()[:5] == [
        '[#1] Received on "h.x"',
        "trace: abc",
        "k: v",
        "",
        "body",
    ]
    assert raw_result.stdout.splitlines() == ["body", "body"]


async def test_req_collects_several_replies() -> None:
    """req --replies-all prints the answer of every responder (each in its own group, as two
    `nats reply` with different queues); --replies 1 prints just one."""
    async with running_gravd() as node:
        responders = [
            await _background(
                "--url", node.endpoint, "reply", "svc.*", word, "-H", "who:" + word, "--group", word
            )
            for word in ("alpha", "beta")
        ]
        try:
            for process in responders:
                await process.wait_line(lambda line: line.startswith("Listening"))
            await node.wait_http(
                lambda doc: (
                    sum(
                        any(entry[1] == "svc.*" for entry in x.get("groups", ()))
                        for x in doc["leaves"]
                    )
                    == 2
                )
            )
            every = await gravctl(
                "--url", node.endpoint, "req", "svc.x", "q", "--replies-all", "--reply-timeout", "2"
            )
            one = await gravctl("--url", node.endpoint, "req", "svc.x", "q", "--replies", "1")
        finally:
            for process in responders:
                await process.close()
    assert every.code == 0, every.stderr
    assert sorted(every.stdout.splitlines()) == ["alpha", "beta"]
    assert one.code == 0, one.stderr
    assert one.stdout in ("alpha", "beta")


async def test_reply_command_answers_with_the_programs_output() -> None:
    """reply --command runs the program with {{N}} from the type and the request on stdin."""
    async with running_gravd() as node:
        responder = await _background(
            "--url", node.endpoint, "reply", "calc.>", "--command", "sh -c 'tr a-z A-Z; echo {{2}}'"
        )
        try:
            await responder.wait_line(lambda line: line.startswith("Listening"))
            await node.wait_interest("calc.upper")
            result = await gravctl("--url", node.endpoint, "req", "calc.upper", "shout\n")
        finally:
            await responder.close()
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["SHOUT", "upper"]


@pytest.mark.parametrize(
    ("command", "why"),
    [("echo 'x", "No closing quotation"), ("/nonexistent/cmd", "no program"), ("", "empty")],
)
async def test_reply_refuses_a_command_that_could_never_run(command: str, why: str) -> None:
    """An unclosed quote or a missing program: exit 2 at start, not a timeout per request."""
    result = await gravctl("reply", "calc.>", "--command", command)
    assert result.code == EXIT_USAGE
    assert why in result.stderr


async def test_peers_pointed_at_a_port_that_is_not_the_monitor_says_so() -> None:
    """--monitor naming the WebSocket port: exit 4 with a hint, not a JSON parser's position."""
    async with running_gravd() as node:
        port = node.endpoint.split(":")[2].split("/")[0]
        result = await gravctl("--monitor", f"127.0.0.1:{port}", "peers")
    assert result.code == 4
    assert "not with gravd's JSON: is that the monitor's port?" in result.stderr


async def test_sub_reports_disconnect_and_reconnect_and_resubscribes() -> None:
    """When gravd goes away and comes back on its port, sub says so on stderr and still receives."""
    async with running_gravd() as first:
        endpoint, port = first.endpoint, first.endpoint.split(":")[2].split("/")[0]
        sub = await _background("--url", endpoint, "sub", "back.>", "--count", "1")
        try:
            await sub.wait_line(lambda line: line.startswith("Subscribing"))
            assert (await first.stop()).code == 0
            await sub.wait_line(lambda line: line.startswith("gravctl: disconnected from"))
            async with running_gravd("--listen", f"127.0.0.1:{port}") as second:
                await sub.wait_line(lambda line: line.startswith("gravctl: reconnected to"))
                await second.wait_interest("back.again")
                published = await gravctl("--url", endpoint, "pub", "back.again", "hi")
                result = await sub.wait()
        finally:
            await sub.close()
    assert published.code == 0, published.stderr
    assert result.code == 0
    assert result.stdout.splitlines()[:2] == ['[#1] Received on "back.again"', "hi"]


async def test_bench_reports_throughput_and_latency() -> None:
    """gravctl bench prints messages received of sent and req/reply p50 and p99."""
    async with running_gravd() as node:
        result = await gravctl("--url", node.endpoint, "bench", "--msgs", "500", "--requests", "50")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pub/sub: 500/500 messages of 128 B received, ")
    assert lines[1].startswith("req/reply: 50 requests, p50 ")
    assert " p99 " in lines[1]


async def test_bench_waits_for_its_own_subscriber_not_another_apps_interest() -> None:
    """Another app already wants want.>: bench must still wait until its own subscriber is
    reachable before publishing (it started at once and lost up to all of them, exit 0)."""
    async with running_gravd() as node, gravpy.connect(node.endpoint) as other:
        other.connect().on_type("want.>", lambda m: None)
        await node.wait_interest("want.x")
        for _ in range(3):
            result = await gravctl(
                "--url", node.endpoint, "bench", "want", "--msgs", "100", "--requests", "5"
            )
            assert result.code == 0, result.stderr
            assert result.stdout.startswith("pub/sub: 100/100 messages"), result.stdout


@pytest.mark.parametrize(
    ("args", "code", "word"),
    [
        ((), 0, "OK"),
        (("--warn-peers", "1"), 1, "WARNING"),
        (("--crit-peers", "2"), 2, "CRITICAL"),
        (("--crit-drops", "1"), 0, "OK"),  # 0 drops, under the threshold
        (("--warn-drops", "0"), 1, "WARNING"),  # "N or more": 0 reaches 0
    ],
)
async def test_check_follows_nagios_exit_codes(args: tuple[str, ...], code: int, word: str) -> None:
    """gravctl check exits 0/1/2 with OK/WARNING/CRITICAL by the peer and drop thresholds."""
    async with running_gravd() as node:
        result = await gravctl("check", "--monitor", node.monitor, *args)
    assert result.code == code, result
    assert result.stdout.startswith(f"GRAVD {word} - serving, 0 peer(s), 0 dropped | ")


def test_check_counts_what_the_bridges_lost_as_drops() -> None:
    """Drops are the node's (duplicates aside) plus its bridges' losses; a connected bridge
    adds nothing else to the verdict."""
    node = {
        "state": "serving",
        "messages": {"dropped": {"duplicate": 5, "link": 1}},
        "bridges": [{"state": "connected", "servers": ["nats://x:4222"], "lost": {"gap": 2}}],
    }
    args = argparse.Namespace(
        warn_peers=0, crit_peers=0, warn_drops=3, crit_drops=None, bridge_down="critical"
    )
    assert lost(node) == 3
    assert verdict(200, node, args) == (WARNING, "serving, 0 peer(s), 3 dropped")


async def test_check_is_unknown_when_the_monitor_is_down() -> None:
    """check exits 3 UNKNOWN when the monitor does not answer."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        result = await gravctl("check", "--monitor", f"127.0.0.1:{unused.getsockname()[1]}")
    assert result.code == 3
    assert result.stdout.startswith("GRAVD UNKNOWN - cannot read http://127.0.0.1:")
